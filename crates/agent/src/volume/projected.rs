//! `projected` volumes: configMap, secret and downwardAPI sources merged into one directory. The
//! sources Yard cannot provide (serviceAccountToken, clusterTrustBundle, podCertificate) fail the
//! mount.

use k8s_openapi::api::core::v1::Volume;

use super::config_map::config_map_files;
use super::downward_api::downward_files;
use super::secret::secret_files;
use super::{atomic, Ctx, VolumeError, VolumePlugin};

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
            } else if src.service_account_token.is_some() {
                Err("serviceAccountToken projection is not available: this cluster issues no service account tokens"
                    .into())
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
