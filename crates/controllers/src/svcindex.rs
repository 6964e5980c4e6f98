//! Service -> member pods index shared by the Endpoints and EndpointSlice controllers. Pod events are
//! mapped to the Services whose selector matches the old or new labels, and only those Services are
//! enqueued, so a Ready change costs one selector check per Service of the namespace and a sync only
//! looks at member pods.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::{Pod, Service};

use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;
use crate::util::{self, key, map_selects};

/// Latest change time per key, consumed by the sync that handles it.
#[derive(Default)]
pub struct TriggerTimes {
    map: Mutex<HashMap<String, jiff::Timestamp>>,
}

impl TriggerTimes {
    pub fn record(&self, key: &str, t: jiff::Timestamp) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(key.to_string()).or_insert(t);
        if *e < t {
            *e = t;
        }
    }
    pub fn take(&self, key: &str) -> Option<jiff::Timestamp> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }
}

pub struct Consumer {
    pub queue: Arc<WorkQueue>,
    pub triggers: Arc<TriggerTimes>,
}

#[derive(Default)]
struct State {
    selectors: HashMap<String, HashMap<String, BTreeMap<String, String>>>,
    members: HashMap<String, HashSet<String>>,
}

pub struct ServiceIndex {
    pods: Arc<Cache<Pod>>,
    state: RwLock<State>,
    consumers: Vec<Consumer>,
}

pub fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

/// Did anything an endpoint is built from change between two versions of a pod?
pub fn pod_endpoint_changed(old: &Pod, new: &Pod) -> bool {
    let spec_ports = |p: &Pod| {
        p.spec.as_ref().map(|s| s.containers.iter().map(|c| c.ports.clone()).collect::<Vec<_>>())
    };
    let f = |p: &Pod| {
        let s = p.spec.as_ref();
        (
            util::pod_ips(p),
            util::is_pod_ready(p),
            p.metadata.deletion_timestamp.is_some(),
            util::is_pod_terminal(p),
            s.and_then(|s| s.node_name.clone()),
            s.and_then(|s| s.hostname.clone()),
            s.and_then(|s| s.subdomain.clone()),
        )
    };
    f(old) != f(new) || spec_ports(old) != spec_ports(new)
}

impl ServiceIndex {
    pub fn new(pods: Arc<Cache<Pod>>, consumers: Vec<Consumer>) -> Arc<Self> {
        Arc::new(ServiceIndex { pods, state: RwLock::new(State::default()), consumers })
    }

    fn enqueue(&self, k: &str, t: jiff::Timestamp) {
        for c in &self.consumers {
            c.triggers.record(k, t);
            c.queue.add(k);
        }
    }

    /// Names of pods currently selected by the Service `ns/name`.
    pub fn members(&self, svc_key: &str) -> Vec<String> {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        st.members.get(svc_key).map(|m| m.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn attach(self: &Arc<Self>, services: &Informer<Service>, pods: &Informer<Pod>) {
        let me = self.clone();
        services.add_handler(move |old, new| me.on_service(old.map(|a| a.as_ref()), new.map(|a| a.as_ref())));
        let me = self.clone();
        pods.add_handler(move |old, new| me.on_pod(old.map(|a| a.as_ref()), new.map(|a| a.as_ref())));
    }

    fn on_service(&self, old: Option<&Service>, new: Option<&Service>) {
        let Some(svc) = new.or(old) else { return };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let k = key(&ns, &name);
        let now = jiff::Timestamp::now();
        if let (Some(o), Some(n)) = (old, new) {
            if o.metadata.resource_version.is_some() && o.metadata.resource_version == n.metadata.resource_version {
                return;
            }
        }
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            match new.and_then(service_selector) {
                Some(sel) => {
                    let prev = st.selectors.get(&ns).and_then(|m| m.get(&name));
                    if prev != Some(sel) {
                        let members: HashSet<String> = self
                            .pods
                            .list_ns(&ns)
                            .iter()
                            .filter(|p| map_selects(sel, p.metadata.labels.as_ref()))
                            .filter_map(|p| p.metadata.name.clone())
                            .collect();
                        st.members.insert(k.clone(), members);
                        st.selectors.entry(ns.clone()).or_default().insert(name.clone(), sel.clone());
                    }
                }
                None => {
                    if let Some(m) = st.selectors.get_mut(&ns) {
                        m.remove(&name);
                        if m.is_empty() {
                            st.selectors.remove(&ns);
                        }
                    }
                    st.members.remove(&k);
                }
            }
        }
        self.enqueue(&k, now);
    }

    fn on_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let Some(p) = new.or(old) else { return };
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let Some(pod_name) = p.metadata.name.clone() else { return };
        let changed = match (old, new) {
            (Some(o), Some(n)) => pod_endpoint_changed(o, n),
            _ => true,
        };
        let now = jiff::Timestamp::now();
        let mut to_enqueue = Vec::new();
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            let Some(svcs) = st.selectors.get(ns) else { return };
            let mut updates = Vec::new();
            for (svc, sel) in svcs {
                let mo = old.is_some_and(|o| map_selects(sel, o.metadata.labels.as_ref()));
                let mn = new.is_some_and(|n| map_selects(sel, n.metadata.labels.as_ref()));
                if !mo && !mn {
                    continue;
                }
                updates.push((key(ns, svc), mn));
                if mo != mn || changed {
                    to_enqueue.push(key(ns, svc));
                }
            }
            for (k, member) in updates {
                let m = st.members.entry(k).or_default();
                if member {
                    m.insert(pod_name.clone());
                } else {
                    m.remove(&pod_name);
                }
            }
        }
        for k in to_enqueue {
            self.enqueue(&k, now);
        }
    }
}
