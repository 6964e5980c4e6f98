//! `projected` volumes: configMap, secret, downwardAPI and serviceAccountToken sources merged into
//! one directory (the token is the one the caller requested for the pod, see [`token_sources`]).
//! The sources Yard cannot provide (clusterTrustBundle, podCertificate) fail the mount.

use k8s_openapi::api::core::v1::{Pod, Volume};

use super::config_map::config_map_files;
use super::downward_api::downward_files;
use super::files::mode_of;
use super::secret::secret_files;
use super::{atomic, Ctx, VolumeError, VolumePlugin};

/// The key of a token for `audience` (empty: the API server's) lasting `expiration_seconds`.
pub fn token_key(audience: &str, expiration_seconds: i64) -> String {
    format!("{audience}|{expiration_seconds}")
}

/// The (audience, expirationSeconds) of every serviceAccountToken source of the pod's volumes.
pub fn token_sources(pod: &Pod) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = super::volumes(pod)
        .iter()
        .flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| (t.audience.clone().unwrap_or_default(), t.expiration_seconds.unwrap_or(3600)))
        .collect();
    out.sort();
    out.dedup();
    out
}

pub(super) struct Projected;

impl VolumePlugin for Projected {
    fn name(&self) -> &'static str {
        "projected"
    }

    fn is_of(&self, v: &Volume) -> bool {
        v.projected.is_some()
    }

    fn references(&self, v: &Volume, config_maps: &mut Vec<String>, secrets: &mut Vec<String>) {
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                config_maps.push(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.push(s.name.clone());
            }
        }
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn files(&self, ctx: &Ctx, v: &Volume) -> Option<Result<atomic::Payload, VolumeError>> {
        let p = v.projected.as_ref()?;
        let (objs, pod, capacity) = (ctx.objects, ctx.pod, ctx.capacity);
        let mut out = atomic::Payload::new();
        let mut r = Ok(());
        for src in p.sources.iter().flatten() {
            r = if let Some(c) = &src.config_map {
                config_map_files(objs, &c.name, c.items.as_ref(), c.optional, p.default_mode, &mut out)
            } else if let Some(s) = &src.secret {
                secret_files(objs, &s.name, s.items.as_ref(), s.optional, p.default_mode, &mut out)
            } else if let Some(d) = &src.downward_api {
                downward_files(pod, d.items.as_deref().unwrap_or(&[]), p.default_mode, capacity, &mut out)
            } else if let Some(t) = &src.service_account_token {
                let key = token_key(t.audience.as_deref().unwrap_or(""), t.expiration_seconds.unwrap_or(3600));
                match objs.tokens.get(&key) {
                    Some(tok) => {
                        let f = atomic::File { content: tok.clone().into_bytes(), mode: mode_of(None, p.default_mode) };
                        out.insert(t.path.clone(), f);
                        Ok(())
                    }
                    None => {
                        Err("serviceAccountToken projection is not available: no token was issued for the pod"
                            .to_string())
                    }
                }
            } else if src.cluster_trust_bundle.is_some() {
                Err("clusterTrustBundle projection is not supported".into())
            } else if src.pod_certificate.is_some() {
                Err("podCertificate projection is not supported".into())
            } else {
                Ok(())
            };
            if r.is_err() {
                break;
            }
        }
        Some(r.map(|()| out).map_err(VolumeError))
    }
}
