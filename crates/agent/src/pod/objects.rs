//! What a pod's containers and volumes are made from: the ConfigMaps, Secrets and Services its
//! environment and its configMap/secret/projected volumes name, from the fixed objects of an
//! [`ObjectSource::Static`] runtime or read through the API.

use super::*;

impl Runtime {
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
