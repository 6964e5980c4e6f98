//! Endpoints controller (legacy core/v1 Endpoints, what `kubectl get ep` and `describe svc` show):
//! one object named like the Service, subsets repacked as upstream (addresses grouped by port set,
//! Ready pods in `addresses`, the others in `notReadyAddresses`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use crate::endpointslice::{
    find_port, is_headless, pod_ip_for_family, service_address_types, should_pod_be_in_endpoints, should_set_hostname,
    ANNOTATION_TRIGGER_TIME, LABEL_HEADLESS,
};
use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;
use crate::svcindex::{service_selector, ServiceIndex, TriggerTimes};
use crate::util::{self, split_key};

pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpoint-controller";

fn pod_address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let family = service_address_types(svc).into_iter().next().unwrap_or_else(|| "IPv4".into());
    // Headless Services without families take the pod's primary family.
    let ip = pod_ip_for_family(pod, &family).or_else(|| {
        let fam_set = svc.spec.as_ref().and_then(|s| s.ip_families.as_ref()).is_some_and(|f| !f.is_empty());
        if is_headless(svc) && !fam_set {
            util::pod_ips(pod).into_iter().next()
        } else {
            None
        }
    })?;
    Some(EndpointAddress {
        ip,
        hostname: should_set_hostname(pod, svc).then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone())).flatten(),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
    })
}

fn addr_key(a: &EndpointAddress) -> (String, String) {
    (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default())
}

/// The subsets upstream's endpoints controller would write for these pods.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.as_ref();
    let pnra = spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let svc_ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
    // (address, ready, port or None) triples, then repacked.
    let mut entries: Vec<(EndpointAddress, bool, Option<EndpointPort>)> = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, pnra) {
            continue;
        }
        let Some(addr) = pod_address(svc, pod) else {
            continue;
        };
        let ready = pnra || util::is_pod_ready(pod);
        if svc_ports.is_empty() {
            if is_headless(svc) {
                entries.push((addr, ready, None));
            }
            continue;
        }
        for sp in svc_ports {
            let Some(n) = find_port(pod, sp) else {
                continue;
            };
            let port = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port: n,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            };
            entries.push((addr.clone(), ready, Some(port)));
        }
    }
    repack(entries)
}

fn port_sort_key(p: &Option<EndpointPort>) -> (String, i32, String) {
    match p {
        Some(p) => (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_default()),
        None => (String::new(), -1, String::new()),
    }
}

type AddrKey = (String, String);
type PortKey = (String, i32, String);

/// endpoints.RepackSubsets: map each port to the addresses offering it (ready wins over not ready),
/// then group ports by identical address sets; addresses sorted by IP then UID.
fn repack(entries: Vec<(EndpointAddress, bool, Option<EndpointPort>)>) -> Vec<EndpointSubset> {
    let mut addrs: HashMap<(String, String), EndpointAddress> = HashMap::new();
    let mut by_port: BTreeMap<PortKey, (Option<EndpointPort>, BTreeMap<AddrKey, bool>)> = BTreeMap::new();
    for (a, ready, port) in entries {
        let k = addr_key(&a);
        addrs.entry(k.clone()).or_insert(a);
        let e = by_port.entry(port_sort_key(&port)).or_insert_with(|| (port.clone(), BTreeMap::new()));
        let r = e.1.entry(k).or_insert(ready);
        *r = *r || ready;
    }
    let mut by_addrs: BTreeMap<Vec<(AddrKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (_, (port, set)) in by_port {
        let key: Vec<(AddrKey, bool)> = set.into_iter().collect();
        let e = by_addrs.entry(key).or_default();
        if let Some(p) = port {
            e.push(p);
        }
    }
    let mut out = Vec::new();
    for (set, ports) in by_addrs {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for (k, r) in set {
            let a = addrs[&k].clone();
            if r {
                ready.push(a);
            } else {
                not_ready.push(a);
            }
        }
        out.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    out.sort_by(|a, b| {
        let first =
            |s: &EndpointSubset| s.addresses.iter().chain(s.not_ready_addresses.iter()).flatten().map(addr_key).min();
        first(a).cmp(&first(b))
    });
    out
}

pub const MAX_CAPACITY: usize = 1000;
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// truncateEndpoints: past 1000 addresses keep Ready ones first, shared out over the subsets in
/// proportion (rounded up). Returns whether anything was cut.
pub fn truncate_subsets(subsets: &mut [EndpointSubset]) -> bool {
    let len = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| len(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| len(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total) = if truncate_ready { (MAX_CAPACITY, ready) } else { (MAX_CAPACITY - ready, not_ready) };
    let mut room = max;
    for s in subsets.iter_mut() {
        let n = if truncate_ready { len(&s.addresses) } else { len(&s.not_ready_addresses) };
        let take = ((n as f64 / total as f64) * max as f64).ceil() as usize;
        let take = take.min(room);
        if truncate_ready {
            if let Some(a) = s.addresses.as_mut() {
                a.truncate(take);
            }
            s.not_ready_addresses = None;
            room -= len(&s.addresses);
        } else {
            if let Some(a) = s.not_ready_addresses.as_mut() {
                a.truncate(take);
            }
            room -= len(&s.not_ready_addresses);
        }
    }
    true
}

pub fn desired_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    l.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    if is_headless(svc) {
        l.insert(LABEL_HEADLESS.into(), String::new());
    } else {
        l.remove(LABEL_HEADLESS);
    }
    l
}

pub struct EndpointsController {
    client: Client,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    index: Arc<ServiceIndex>,
    /// Latest known Endpoints per key (informer or own write, whichever is newer).
    current: RwLock<HashMap<String, Arc<Endpoints>>>,
    deleted: RwLock<HashSet<String>>,
    pub queue: Arc<WorkQueue>,
    pub triggers: Arc<TriggerTimes>,
}

impl EndpointsController {
    pub fn new(
        client: Client,
        services: Arc<Cache<Service>>,
        pods: Arc<Cache<Pod>>,
        index: Arc<ServiceIndex>,
        queue: Arc<WorkQueue>,
        triggers: Arc<TriggerTimes>,
    ) -> Arc<Self> {
        Arc::new(EndpointsController {
            client,
            services,
            pods,
            index,
            current: RwLock::new(HashMap::new()),
            deleted: RwLock::new(HashSet::new()),
            queue,
            triggers,
        })
    }

    pub fn attach(self: &Arc<Self>, endpoints: &Informer<Endpoints>) {
        let me = self.clone();
        endpoints.add_handler(move |old, new| {
            let Some(o) = new.or(old) else { return };
            let k = util::key(
                o.metadata.namespace.as_deref().unwrap_or_default(),
                o.metadata.name.as_deref().unwrap_or_default(),
            );
            let mut cur = me.current.write().unwrap_or_else(|e| e.into_inner());
            match new {
                Some(n) => {
                    if me.deleted.read().unwrap_or_else(|e| e.into_inner()).contains(&k) {
                        return;
                    }
                    let c = cur.get(&k);
                    let ours = c.is_some_and(|c| c.metadata.resource_version == n.metadata.resource_version);
                    let stale = c.is_some_and(|c| {
                        util::rv_older(n.metadata.resource_version.as_ref(), c.metadata.resource_version.as_ref())
                    });
                    if !stale {
                        cur.insert(k.clone(), n.clone());
                    }
                    drop(cur);
                    if !ours && !stale {
                        me.queue.add(k);
                    }
                }
                None => {
                    cur.remove(&k);
                    drop(cur);
                    let ours = me.deleted.write().unwrap_or_else(|e| e.into_inner()).remove(&k);
                    if !ours {
                        me.queue.add(k);
                    }
                }
            }
        });
    }

    pub async fn sync(self: Arc<Self>, svc_key: String) -> Result<(), crate::Error> {
        let started = std::time::Instant::now();
        let (ns, name) = split_key(&svc_key);
        let trigger = self.triggers.take(&svc_key);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let current = self.current.read().unwrap_or_else(|e| e.into_inner()).get(&svc_key).cloned();
        let Some(svc) = self.services.get(ns, name) else {
            // Service gone: delete its Endpoints (only the ones this controller manages).
            if let Some(cur) = current {
                let managed = cur.metadata.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str)
                    == Some(CONTROLLER_NAME);
                if managed {
                    match api.delete(name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(e) if util::is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.current.write().unwrap_or_else(|e| e.into_inner()).remove(&svc_key);
                    self.deleted.write().unwrap_or_else(|e| e.into_inner()).insert(svc_key.clone());
                }
            }
            return Ok(());
        };
        let Some(sel) = service_selector(&svc) else {
            return Ok(());
        };
        let pods: Vec<Arc<Pod>> = self
            .index
            .members(&svc_key)
            .iter()
            .filter_map(|p| self.pods.get(ns, p))
            .filter(|p| util::map_selects(sel, p.metadata.labels.as_ref()))
            .collect();
        let mut subsets = desired_subsets(&svc, &pods);
        let truncated = truncate_subsets(&mut subsets);
        let labels = desired_labels(&svc);
        if let Some(cur) = &current {
            let cur_subsets = cur.subsets.clone().unwrap_or_default();
            let cur_truncated =
                cur.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ANNOTATION_OVER_CAPACITY));
            if cur_subsets == subsets && cur.metadata.labels.as_ref() == Some(&labels) && cur_truncated == truncated {
                return Ok(());
            }
        }
        let mut ep = match &current {
            Some(c) => (**c).clone(),
            None => Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(ns.to_string()),
                    ..Default::default()
                },
                subsets: None,
            },
        };
        ep.metadata.labels = Some(labels);
        ep.subsets = (!subsets.is_empty()).then_some(subsets);
        let t = trigger.unwrap_or_else(jiff::Timestamp::now);
        let ann = ep.metadata.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert(ANNOTATION_TRIGGER_TIME.into(), util::rfc3339(t));
        if truncated {
            ann.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
        } else {
            ann.remove(ANNOTATION_OVER_CAPACITY);
        }
        let pp = PostParams { field_manager: Some("endpoint-controller".into()), ..Default::default() };
        let computed = started.elapsed();
        let res = if current.is_some() { api.replace(name, &pp, &ep).await } else { api.create(&pp, &ep).await };
        tracing::debug!(service = %svc_key, compute_us = computed.as_micros() as u64, total_us = started.elapsed().as_micros() as u64, "endpoints synced");
        match res {
            Ok(written) => {
                self.deleted.write().unwrap_or_else(|e| e.into_inner()).remove(&svc_key);
                let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
                let stale = cur.get(&svc_key).is_some_and(|c| {
                    util::rv_older(written.metadata.resource_version.as_ref(), c.metadata.resource_version.as_ref())
                });
                if !stale {
                    cur.insert(svc_key.clone(), Arc::new(written));
                }
                Ok(())
            }
            Err(e) => {
                if util::is_already_exists(&e) {
                    // Our view is stale; fetch so the retry updates instead of creating.
                    if let Ok(Some(got)) = api.get_opt(name).await {
                        self.current.write().unwrap_or_else(|e| e.into_inner()).insert(svc_key.clone(), Arc::new(got));
                    }
                }
                self.triggers.record(&svc_key, t);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpointslice::tests::{pod, sport, svc};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ips(a: &Option<Vec<EndpointAddress>>) -> Vec<String> {
        a.iter().flatten().map(|a| a.ip.clone()).collect()
    }

    #[test]
    fn ready_and_not_ready() {
        let s = svc("hostnames", &[("app", "web")], vec![sport("", 80, IntOrString::Int(9376))]);
        let pods = vec![
            pod("p2", Some("10.244.1.3"), true, "node-1"),
            pod("p1", Some("10.244.1.2"), true, "node-1"),
            pod("p3", Some("10.244.1.4"), false, "node-2"),
            pod("p4", None, true, "node-1"),
        ];
        let subsets = desired_subsets(&s, &pods);
        assert_eq!(subsets.len(), 1);
        let ss = &subsets[0];
        assert_eq!(ips(&ss.addresses), vec!["10.244.1.2", "10.244.1.3"]);
        assert_eq!(ips(&ss.not_ready_addresses), vec!["10.244.1.4"]);
        assert_eq!(
            ss.ports.as_ref().unwrap(),
            &vec![EndpointPort { name: None, port: 9376, protocol: Some("TCP".into()), app_protocol: None }]
        );
        let a = &ss.addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("p1"));
        let l = desired_labels(&s);
        assert_eq!(l.get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        // Terminating pods are left out unless publishNotReadyAddresses.
        let mut t = (*pod("p5", Some("10.244.1.9"), true, "node-1")).clone();
        t.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let subsets = desired_subsets(&s, &[Arc::new(t)]);
        assert!(subsets.is_empty());
    }

    #[test]
    fn over_capacity_truncated_ready_first() {
        let s = svc("big", &[("app", "web")], vec![sport("", 80, IntOrString::Int(80))]);
        let pods: Vec<Arc<Pod>> = (0..1200)
            .map(|i| pod(&format!("p{i:04}"), Some(&format!("10.244.{}.{}", i / 200, i % 200 + 2)), i < 900, "n"))
            .collect();
        let mut subsets = desired_subsets(&s, &pods);
        assert!(truncate_subsets(&mut subsets));
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 900);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 100);
        let mut small = desired_subsets(&s, &pods[..10]);
        assert!(!truncate_subsets(&mut small));
    }

    #[test]
    fn repacked_by_port_set() {
        // Two ports; p2 lacks the named one: p1 offers both, p2 only the numeric port.
        let s = svc(
            "web",
            &[("app", "web")],
            vec![sport("http", 80, IntOrString::String("http".into())), sport("metrics", 9100, IntOrString::Int(9100))],
        );
        let mut p2 = (*pod("p2", Some("10.244.1.3"), false, "node-1")).clone();
        p2.spec.as_mut().unwrap().containers[0].ports = None;
        let subsets = desired_subsets(&s, &[pod("p1", Some("10.244.1.2"), true, "node-1"), Arc::new(p2)]);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let both = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap().len() == 1 && s.ports.as_ref().unwrap()[0].port == 9376)
            .unwrap();
        assert_eq!(ips(&both.addresses), vec!["10.244.1.2"]);
        let metrics = subsets.iter().find(|s| s.ports.as_ref().unwrap()[0].port == 9100).unwrap();
        assert_eq!(ips(&metrics.addresses), vec!["10.244.1.2"]);
        assert_eq!(ips(&metrics.not_ready_addresses), vec!["10.244.1.3"]);
    }
}
