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

type LabelPair = (String, String);

/// All maps are per namespace. Services are indexed by one "anchor" pair of their selector and
/// pods by each of their labels, so a pod event only checks the Services whose anchor it carries
/// and a selector change only checks the pods carrying the selector's rarest pair.
#[derive(Default)]
struct State {
    selectors: HashMap<String, HashMap<String, BTreeMap<String, String>>>,
    svc_by_anchor: HashMap<String, HashMap<LabelPair, HashSet<String>>>,
    pods_by_label: HashMap<String, HashMap<LabelPair, HashSet<String>>>,
    members: HashMap<String, HashSet<String>>,
}

fn anchor(sel: &BTreeMap<String, String>) -> Option<LabelPair> {
    sel.iter().next().map(|(k, v)| (k.clone(), v.clone()))
}

impl State {
    fn remove_service(&mut self, ns: &str, name: &str) {
        let Some(m) = self.selectors.get_mut(ns) else {
            return;
        };
        let Some(old) = m.remove(name) else { return };
        if m.is_empty() {
            self.selectors.remove(ns);
        }
        if let (Some(a), Some(idx)) = (anchor(&old), self.svc_by_anchor.get_mut(ns)) {
            if let Some(s) = idx.get_mut(&a) {
                s.remove(name);
                if s.is_empty() {
                    idx.remove(&a);
                }
            }
            if idx.is_empty() {
                self.svc_by_anchor.remove(ns);
            }
        }
    }

    fn set_pod_labels(
        &mut self,
        ns: &str,
        pod: &str,
        old: Option<&BTreeMap<String, String>>,
        new: Option<&BTreeMap<String, String>>,
    ) {
        if old == new {
            return;
        }
        let idx = self.pods_by_label.entry(ns.to_string()).or_default();
        for (k, v) in old.into_iter().flatten() {
            let key = (k.clone(), v.clone());
            if let Some(s) = idx.get_mut(&key) {
                s.remove(pod);
                if s.is_empty() {
                    idx.remove(&key);
                }
            }
        }
        for (k, v) in new.into_iter().flatten() {
            idx.entry((k.clone(), v.clone())).or_default().insert(pod.to_string());
        }
        if idx.is_empty() {
            self.pods_by_label.remove(ns);
        }
    }

    /// Services of `ns` whose anchor pair is among `labels`.
    fn candidates(&self, ns: &str, labels: Option<&BTreeMap<String, String>>, out: &mut HashSet<String>) {
        let Some(idx) = self.svc_by_anchor.get(ns) else {
            return;
        };
        for (k, v) in labels.into_iter().flatten() {
            if let Some(s) = idx.get(&(k.clone(), v.clone())) {
                out.extend(s.iter().cloned());
            }
        }
    }
}

pub struct ServiceIndex {
    pods: Arc<Cache<Pod>>,
    state: RwLock<State>,
    consumers: Vec<Consumer>,
}

/// The selector the endpoint controllers act on: none for selector-less and ExternalName Services
/// (their endpoints are managed by someone else).
pub fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Did anything an endpoint is built from change between two versions of a pod?
pub fn pod_endpoint_changed(old: &Pod, new: &Pod) -> bool {
    let spec_ports =
        |p: &Pod| p.spec.as_ref().map(|s| s.containers.iter().map(|c| c.ports.clone()).collect::<Vec<_>>());
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
                        st.remove_service(&ns, &name);
                        // Pods carrying the selector's rarest pair, then the full selector check.
                        let empty = HashSet::new();
                        let by_label = st.pods_by_label.get(&ns);
                        let rarest = sel
                            .iter()
                            .map(|(k, v)| by_label.and_then(|m| m.get(&(k.clone(), v.clone()))).unwrap_or(&empty))
                            .min_by_key(|s| s.len())
                            .unwrap_or(&empty);
                        let members: HashSet<String> = rarest
                            .iter()
                            .filter(|p| {
                                self.pods.get(&ns, p).is_some_and(|p| map_selects(sel, p.metadata.labels.as_ref()))
                            })
                            .cloned()
                            .collect();
                        st.members.insert(k.clone(), members);
                        st.selectors.entry(ns.clone()).or_default().insert(name.clone(), sel.clone());
                        if let Some(a) = anchor(sel) {
                            st.svc_by_anchor.entry(ns.clone()).or_default().entry(a).or_default().insert(name.clone());
                        }
                    }
                }
                None => {
                    st.remove_service(&ns, &name);
                    st.members.remove(&k);
                }
            }
        }
        self.enqueue(&k, now);
    }

    fn on_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let Some(p) = new.or(old) else { return };
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let Some(pod_name) = p.metadata.name.clone() else {
            return;
        };
        let changed = match (old, new) {
            (Some(o), Some(n)) => pod_endpoint_changed(o, n),
            _ => true,
        };
        let now = jiff::Timestamp::now();
        let mut to_enqueue = Vec::new();
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            st.set_pod_labels(
                ns,
                &pod_name,
                old.and_then(|o| o.metadata.labels.as_ref()),
                new.and_then(|n| n.metadata.labels.as_ref()),
            );
            let mut cands = HashSet::new();
            st.candidates(ns, old.and_then(|o| o.metadata.labels.as_ref()), &mut cands);
            st.candidates(ns, new.and_then(|n| n.metadata.labels.as_ref()), &mut cands);
            let Some(svcs) = st.selectors.get(ns) else {
                return;
            };
            let mut updates = Vec::new();
            for (svc, sel) in cands.iter().filter_map(|c| svcs.get(c).map(|s| (c, s))) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn labels(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn pod(name: &str, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some("1".into()),
                labels: labels(&[("app", app), ("tier", "web")]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn svc(name: &str, sel: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec { selector: labels(sel), ..Default::default() }),
            status: None,
        }
    }

    /// Many Services and pods in one namespace: membership is right and a pod event only costs
    /// the Services that can select it.
    #[test]
    fn index_scales_and_routes_events() {
        let (n_svc, per) = (2000, 20);
        let cache = Arc::new(Cache::<Pod>::default());
        let q = WorkQueue::new();
        let idx = ServiceIndex::new(
            cache.clone(),
            vec![Consumer { queue: q.clone(), triggers: Arc::new(TriggerTimes::default()) }],
        );
        let t = std::time::Instant::now();
        for s in 0..n_svc {
            for i in 0..per {
                let p = pod(&format!("p-{s}-{i}"), &format!("app{s}"));
                cache.apply(p.clone());
                idx.on_pod(None, Some(&p));
            }
        }
        for s in 0..n_svc {
            idx.on_service(None, Some(&svc(&format!("s{s}"), &[("app", &format!("app{s}")), ("tier", "web")])));
        }
        let load = t.elapsed();
        assert_eq!(idx.members("default/s7").len(), per);
        assert_eq!(q.len(), n_svc);
        // A "tier=web" Service selects every pod (anchor "tier" is its only pair).
        idx.on_service(None, Some(&svc("all", &[("tier", "web")])));
        assert_eq!(idx.members("default/all").len(), n_svc * per);
        while !q.is_empty() {
            let k = futures::executor::block_on(q.get());
            q.done(&k);
        }
        // Relabel one pod from app5 to app6: both Services are enqueued; "all" keeps selecting it with
        // unchanged endpoint content, so it is not.
        let old = pod("p-5-0", "app5");
        let mut new = pod("p-5-0", "app6");
        new.metadata.resource_version = Some("2".into());
        let t = std::time::Instant::now();
        let n_events = 1000;
        for _ in 0..n_events {
            idx.on_pod(Some(&old), Some(&new));
            idx.on_pod(Some(&new), Some(&old));
        }
        let per_event = t.elapsed() / (2 * n_events);
        idx.on_pod(Some(&old), Some(&new));
        assert!(!idx.members("default/s5").contains(&"p-5-0".to_string()));
        assert!(idx.members("default/s6").contains(&"p-5-0".to_string()));
        let mut keys = Vec::new();
        while !q.is_empty() {
            let k = futures::executor::block_on(q.get());
            q.done(&k);
            keys.push(k);
        }
        keys.sort();
        assert_eq!(keys, vec!["default/s5", "default/s6"]);
        eprintln!("index: {n_svc} services x {per} pods loaded in {load:?}; {per_event:?} per pod event");
        assert!(per_event < std::time::Duration::from_millis(1), "{per_event:?} per pod event");
    }
}
