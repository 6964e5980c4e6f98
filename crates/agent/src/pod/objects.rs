//! What a pod's containers and volumes are made from: the ConfigMaps, Secrets and Services its
//! environment and its configMap/secret/projected volumes name, from the fixed objects of an
//! [`ObjectSource::Static`] runtime or read through the API.

use super::*;

/// A token the API server issued for a pod's projected volume.
#[derive(Clone, Debug)]
pub(super) struct IssuedToken {
    pub token: String,
    /// The TokenRequest's `status.expirationTimestamp` (Unix seconds).
    pub expires: i64,
    /// The lifetime asked for.
    pub expiration_seconds: i64,
}

/// How long a token is kept at most before it is replaced, whatever its lifetime (the kubelet's).
const MAX_TOKEN_TTL: i64 = 24 * 3600;

/// The kubelet's token manager rule: replace a token once 80% of its lifetime has passed, or
/// once it is 24 hours old.
pub(super) fn token_needs_refresh(t: &IssuedToken, now: i64) -> bool {
    let issued = t.expires - t.expiration_seconds;
    now >= issued + MAX_TOKEN_TTL || now >= t.expires - t.expiration_seconds * 20 / 100
}

impl Runtime {
    /// The tokens of the pod's serviceAccountToken sources: kept ones while fresh, else a new
    /// TokenRequest bound to the pod.
    async fn pod_tokens(&self, client: &kube::Client, pod: &Pod) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        let sources = crate::volume::token_sources(pod);
        if sources.is_empty() {
            return Ok(out);
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now().as_second();
        for (aud, exp) in sources {
            let vol_key = crate::volume::token_key(&aud, exp);
            let key = format!("{uid}|{vol_key}");
            let kept = self.tokens.lock().expect("tokens").get(&key).cloned();
            if let Some(t) = kept.filter(|t| !token_needs_refresh(t, now)) {
                out.insert(vol_key, t.token);
                continue;
            }
            use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
            let req = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: (!aud.is_empty()).then(|| vec![aud.clone()]),
                    expiration_seconds: Some(exp),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(name.clone()),
                        uid: Some(uid.clone()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
            let tr = api
                .create_token_request(&sa, &kube::api::PostParams::default(), &req)
                .await
                .map_err(|e| format!("failed to fetch token: {e}"))?;
            let st = tr.status.ok_or("failed to fetch token: no status in the TokenRequest")?;
            let token =
                st.token.filter(|t| !t.is_empty()).ok_or("failed to fetch token: the TokenRequest has no token")?;
            let expires = st.expiration_timestamp.map(|t| t.0.as_second()).unwrap_or(now + exp);
            let t = IssuedToken { token, expires, expiration_seconds: exp };
            let mut all = self.tokens.lock().expect("tokens");
            all.retain(|_, t| t.expires > now);
            all.insert(key, t.clone());
            out.insert(vol_key, t.token);
        }
        Ok(out)
    }

    /// The ConfigMaps and Secrets the pod's volumes name (`None`: not found).
    pub(super) async fn fetch_volume_objects(&self, pod: &Pod) -> Result<crate::volume::Objects, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let (cms, secs) = crate::volume::referenced(pod);
        let mut out = crate::volume::Objects::default();
        match &self.objects {
            ObjectSource::Static(o) => {
                for n in cms {
                    let d = o
                        .config_maps
                        .get(&n)
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect());
                    out.config_maps.insert(n, d);
                }
                for n in secs {
                    let d =
                        o.secrets.get(&n).map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect());
                    out.secrets.insert(n, d);
                }
            }
            ObjectSource::Api(client) => {
                let cm_api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                    kube::Api::namespaced(client.clone(), ns);
                for n in cms {
                    let cm = cm_api.get_opt(&n).await.map_err(|e| format!("failed to get configmap {n:?}: {e}"))?;
                    let d = cm.map(|cm| {
                        let mut m: BTreeMap<String, Vec<u8>> =
                            cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                        m.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                        m
                    });
                    out.config_maps.insert(n, d);
                }
                let s_api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), ns);
                for n in secs {
                    let s = s_api.get_opt(&n).await.map_err(|e| format!("failed to get secret {n:?}: {e}"))?;
                    let d = s.map(|s| {
                        let mut m: BTreeMap<String, Vec<u8>> =
                            s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                        m.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                        m
                    });
                    out.secrets.insert(n, d);
                }
                out.tokens = self.pod_tokens(client, pod).await?;
            }
        }
        Ok(out)
    }

    /// What `c`'s environment is made from. The Services are read from the API at start (a
    /// consistent list), not from a watch-fed copy: a Service created before the pod must be in
    /// its environment even when the Service's watch event reaches the node after the pod's.
    pub(super) async fn fetch_objects(&self, pod: &Pod, c: &Container) -> Result<env::Objects, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        match &self.objects {
            ObjectSource::Static(o) => Ok(o.clone()),
            ObjectSource::Api(client) => {
                let (cms, secs) = env::referenced(c);
                let mut out = env::Objects::default();
                let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
                if links {
                    let svc_api: kube::Api<Service> = kube::Api::namespaced(client.clone(), ns);
                    let list =
                        svc_api.list(&Default::default()).await.map_err(|e| format!("failed to list services: {e}"))?;
                    out.services = list.items;
                }
                if !links || ns != "default" {
                    let def: kube::Api<Service> = kube::Api::namespaced(client.clone(), "default");
                    let master = def
                        .get_opt("kubernetes")
                        .await
                        .map_err(|e| format!("failed to get service default/kubernetes: {e}"))?;
                    out.services.extend(master);
                }
                let cm_api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                    kube::Api::namespaced(client.clone(), ns);
                for n in cms {
                    if let Ok(Some(cm)) = cm_api.get_opt(&n).await {
                        let mut m: BTreeMap<String, String> = cm.data.unwrap_or_default();
                        for (k, v) in cm.binary_data.unwrap_or_default() {
                            m.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                        }
                        out.config_maps.insert(n, m);
                    }
                }
                let s_api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), ns);
                for n in secs {
                    if let Ok(Some(s)) = s_api.get_opt(&n).await {
                        let mut m: BTreeMap<String, String> = BTreeMap::new();
                        for (k, v) in s.data.unwrap_or_default() {
                            m.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                        }
                        for (k, v) in s.string_data.unwrap_or_default() {
                            m.insert(k, v);
                        }
                        out.secrets.insert(n, m);
                    }
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_replaced_after_80_percent_of_their_life_or_a_day() {
        let t = |expires, expiration_seconds| IssuedToken { token: String::new(), expires, expiration_seconds };
        // A 3607 s token issued at 0: kept until 80% (2885.6 s), then replaced.
        assert!(!token_needs_refresh(&t(3607, 3607), 2800));
        assert!(token_needs_refresh(&t(3607, 3607), 2886));
        // A week-long token: replaced after 24 h, not at 80%.
        let week = 7 * 24 * 3600;
        assert!(!token_needs_refresh(&t(week, week), 24 * 3600 - 1));
        assert!(token_needs_refresh(&t(week, week), 24 * 3600));
    }
}
