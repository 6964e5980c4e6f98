//! The ServiceAccount controllers of kube-controller-manager: `serviceaccount` keeps a `default`
//! ServiceAccount in every active namespace (created again when deleted), and
//! `root-ca-certificate-publisher` keeps the `kube-root-ca.crt` ConfigMap (key `ca.crt`: the CA
//! the API server's certificate chains to) in every active namespace, put back when deleted or
//! changed. Pods' projected `kube-api-access-*` volumes read both.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Upstream's description annotation on the published ConfigMap.
pub const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

/// Queue every active namespace that is added or changed.
fn queue_namespaces(ns: &Informer<Namespace>, queue: Arc<WorkQueue>) {
    ns.add_handler(move |_old, new| {
        if let Some(n) = new.filter(|n| active(n)) {
            queue.add(n.metadata.name.clone().unwrap_or_default());
        }
    });
}

/// `serviceaccount`: the `default` ServiceAccount of every namespace.
pub struct ServiceAccountsController {
    client: Client,
    namespaces: Arc<Cache<Namespace>>,
    accounts: Arc<Cache<ServiceAccount>>,
    pub queue: Arc<WorkQueue>,
}

impl ServiceAccountsController {
    pub fn new(client: Client, namespaces: Arc<Cache<Namespace>>, accounts: Arc<Cache<ServiceAccount>>) -> Arc<Self> {
        Arc::new(Self { client, namespaces, accounts, queue: WorkQueue::new() })
    }

    pub fn attach(self: &Arc<Self>, ns: &Informer<Namespace>, sa: &Informer<ServiceAccount>) {
        queue_namespaces(ns, self.queue.clone());
        let q = self.queue.clone();
        sa.add_handler(move |old, new| {
            if let (Some(o), None) = (old, new) {
                if o.metadata.name.as_deref() == Some(DEFAULT_SERVICE_ACCOUNT) {
                    q.add(o.metadata.namespace.clone().unwrap_or_default());
                }
            }
        });
    }

    pub async fn sync(self: Arc<Self>, ns: String) -> Result<(), crate::Error> {
        if !self.namespaces.get("", &ns).is_some_and(|n| active(&n)) {
            return Ok(());
        }
        if self.accounts.get(&ns, DEFAULT_SERVICE_ACCOUNT).is_some() {
            return Ok(());
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta { name: Some(DEFAULT_SERVICE_ACCOUNT.into()), ..Default::default() },
            ..Default::default()
        };
        match Api::<ServiceAccount>::namespaced(self.client.clone(), &ns).create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(e) if crate::util::is_already_exists(&e) => Ok(()),
            // The namespace went away or is terminating meanwhile.
            Err(e) if crate::util::is_not_found(&e) || is_forbidden(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

/// `root-ca-certificate-publisher`: `kube-root-ca.crt` in every namespace.
pub struct RootCaPublisher {
    client: Client,
    namespaces: Arc<Cache<Namespace>>,
    config_maps: Arc<Cache<ConfigMap>>,
    ca: String,
    pub queue: Arc<WorkQueue>,
}

impl RootCaPublisher {
    pub fn new(
        client: Client,
        namespaces: Arc<Cache<Namespace>>,
        config_maps: Arc<Cache<ConfigMap>>,
        ca: String,
    ) -> Arc<Self> {
        Arc::new(Self { client, namespaces, config_maps, ca, queue: WorkQueue::new() })
    }

    pub fn attach(self: &Arc<Self>, ns: &Informer<Namespace>, cms: &Informer<ConfigMap>) {
        queue_namespaces(ns, self.queue.clone());
        let q = self.queue.clone();
        cms.add_handler(move |old, new| {
            if let Some(c) = new.or(old) {
                if c.metadata.name.as_deref() == Some(ROOT_CA_CONFIG_MAP) {
                    q.add(c.metadata.namespace.clone().unwrap_or_default());
                }
            }
        });
    }

    fn data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("ca.crt".to_string(), self.ca.clone())])
    }

    pub async fn sync(self: Arc<Self>, ns: String) -> Result<(), crate::Error> {
        if !self.namespaces.get("", &ns).is_some_and(|n| active(&n)) {
            return Ok(());
        }
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), &ns);
        let res = match self.config_maps.get(&ns, ROOT_CA_CONFIG_MAP) {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIG_MAP.into()),
                        annotations: Some(BTreeMap::from([(
                            "kubernetes.io/description".to_string(),
                            ROOT_CA_DESCRIPTION.to_string(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(self.data()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &cm).await.map(|_| ())
            }
            Some(cur) if cur.data.as_ref() == Some(&self.data()) && cur.binary_data.is_none() => Ok(()),
            Some(cur) => {
                // Upstream keeps the object and its other metadata, and sets the data.
                let mut cm = (*cur).clone();
                cm.data = Some(self.data());
                cm.binary_data = None;
                cm.metadata.managed_fields = None;
                api.replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &cm).await.map(|_| ())
            }
        };
        match res {
            Ok(()) => Ok(()),
            Err(e) if crate::util::is_already_exists(&e) || crate::util::is_not_found(&e) || is_forbidden(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
