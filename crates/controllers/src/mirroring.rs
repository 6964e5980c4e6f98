//! EndpointSlice mirroring controller (upstream's `endpointslicemirroring`): for Services without a
//! selector whose Endpoints are written by someone else (an external database's IP put into an
//! `Endpoints` by hand), it keeps EndpointSlices labelled `managed-by:
//! endpointslicemirroring-controller.k8s.io` in step with those Endpoints, so consumers that only read
//! EndpointSlices (the proxy, DNS) see the addresses.
//!
//! Upstream's rules, reproduced here: an Endpoints is mirrored unless it carries
//! `endpointslice.kubernetes.io/skip-mirror: "true"` or the leader-election annotation, unless its
//! Service is missing, or unless the Service has a selector (then the EndpointSlice controller owns
//! the slices). Every subset is mirrored with at most 1000 addresses (ready ones first, then not
//! ready ones); subsets with the same port set and address family share one slice; a slice holds at
//! most 1000 endpoints, so one (family, port set) group maps to exactly one slice. Slices copy the
//! Endpoints' labels and annotations (minus the trigger-time and last-applied annotations), are
//! owned by the Endpoints, and are created, updated or deleted as the Endpoints change. Slices that
//! carry another `managed-by` value are never touched.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use crate::endpointslice::{SlicePlan, ANNOTATION_TRIGGER_TIME, LABEL_MANAGED_BY, LABEL_SERVICE_NAME};
use crate::events::Recorder;
use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;
use crate::slice_tracker::SliceTracker;
use crate::util::{self, key, split_key};

pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// resourcelock.LeaderElectionRecordAnnotationKey: Endpoints used as leader-election locks.
pub const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Upstream's `--mirroring-max-endpoints-per-subset` default.
pub const MAX_ENDPOINTS_PER_SUBSET: usize = 1000;

/// shouldMirror: not labelled skip-mirror and not a leader-election lock.
pub fn should_mirror(ep: &Endpoints) -> bool {
    let skip = ep.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SKIP_MIRROR)).is_some_and(|v| v == "true");
    let leader = ep.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ANNOTATION_LEADER));
    !skip && !leader
}

/// Upstream mirrors only when `spec.selector` is nil. An empty selector (`{}`) is treated as none
/// here too: Yard's EndpointSlice controller ignores empty selectors, so without this such a
/// Service would get slices from nobody.
pub fn service_has_selector(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty())
}

/// netutils.ParseIPSloppy + IP.String(): IPv4 parts may carry leading zeros; IPv4-mapped IPv6
/// addresses count as IPv4. Returns the canonical text and the address type.
pub fn parse_ip_sloppy(s: &str) -> Option<(String, &'static str)> {
    let ip = match s.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            let parts: Vec<&str> = s.split('.').collect();
            if parts.len() != 4
                || parts.iter().any(|p| p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            let mut o = [0u8; 4];
            for (i, p) in parts.iter().enumerate() {
                o[i] = p.parse().ok()?;
            }
            IpAddr::from(o)
        }
    };
    match ip {
        IpAddr::V4(v4) => Some((v4.to_string(), "IPv4")),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some((v4.to_string(), "IPv4")),
            None => Some((v6.to_string(), "IPv6")),
        },
    }
}

fn address_to_endpoint(a: &EndpointAddress, ready: bool) -> Option<(Endpoint, &'static str)> {
    let (ip, at) = parse_ip_sloppy(&a.ip)?;
    Some((
        Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
            target_ref: a.target_ref.clone(),
            node_name: a.node_name.clone(),
            hostname: a.hostname.clone().filter(|h| !h.is_empty()),
            ..Default::default()
        },
        at,
    ))
}

/// endpointsliceutil's endpoint identity: addresses, hostname and target name/namespace; the rest
/// (conditions, node) is content compared separately.
fn endpoint_identity(e: &Endpoint) -> (Vec<String>, String, String, String) {
    let mut a = e.addresses.clone();
    a.sort();
    let r = e.target_ref.as_ref();
    (
        a,
        e.hostname.clone().unwrap_or_default(),
        r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
    )
}

fn ports_of(p: &[k8s_openapi::api::core::v1::EndpointPort]) -> Vec<EndpointPort> {
    p.iter()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

/// addrTypePortMapKey: the address type plus the port set, independent of port order.
fn group_key(address_type: &str, ports: &[EndpointPort]) -> String {
    let mut ps: Vec<String> = ports.iter().map(|p| serde_json::to_string(p).unwrap_or_default()).collect();
    ps.sort();
    format!("{address_type}-{}", ps.join(","))
}

/// The endpoints of one (address type, port set) group, in the order the Endpoints lists them.
#[derive(Debug, Clone, Default)]
pub struct MirrorGroup {
    pub address_type: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
    index: HashMap<(Vec<String>, String, String, String), usize>,
}

impl MirrorGroup {
    fn insert(&mut self, e: Endpoint) {
        let id = endpoint_identity(&e);
        match self.index.get(&id) {
            // Later duplicates replace earlier ones, as upstream's set insert does.
            Some(&i) => self.endpoints[i] = e,
            None => {
                self.index.insert(id, self.endpoints.len());
                self.endpoints.push(e);
            }
        }
    }
}

/// Desired state computed from an Endpoints object.
#[derive(Debug, Default)]
pub struct Desired {
    /// Groups by key, in first-seen order.
    pub groups: Vec<(String, MirrorGroup)>,
    pub invalid: usize,
    /// Addresses left out: invalid ones plus those past the per-subset limit.
    pub skipped: usize,
}

pub fn desired_groups(ep: &Endpoints, max_per_subset: usize) -> Desired {
    let mut d = Desired::default();
    let mut pos: HashMap<String, usize> = HashMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports = ports_of(subset.ports.as_deref().unwrap_or(&[]));
        let total =
            subset.addresses.as_ref().map_or(0, Vec::len) + subset.not_ready_addresses.as_ref().map_or(0, Vec::len);
        let mut added = 0;
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| (a, false));
        for (a, ready) in ready.chain(not_ready) {
            if added >= max_per_subset {
                break;
            }
            let Some((e, at)) = address_to_endpoint(a, ready) else {
                d.invalid += 1;
                continue;
            };
            let k = group_key(at, &ports);
            let i = *pos.entry(k.clone()).or_insert_with(|| {
                d.groups.push((
                    k,
                    MirrorGroup { address_type: at.to_string(), ports: ports.clone(), ..Default::default() },
                ));
                d.groups.len() - 1
            });
            d.groups[i].1.insert(e);
            added += 1;
        }
        d.skipped += total - added;
    }
    d
}

fn without(m: Option<&BTreeMap<String, String>>, keys: &[&str]) -> BTreeMap<String, String> {
    m.into_iter().flatten().filter(|(k, _)| !keys.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn slice_labels(ep: &Endpoints) -> BTreeMap<String, String> {
    let mut l = ep.metadata.labels.clone().unwrap_or_default();
    l.insert(LABEL_SERVICE_NAME.into(), ep.metadata.name.clone().unwrap_or_default());
    l.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    l
}

fn slice_annotations(ep: &Endpoints) -> BTreeMap<String, String> {
    without(ep.metadata.annotations.as_ref(), &[ANNOTATION_TRIGGER_TIME, ANNOTATION_LAST_APPLIED])
}

fn new_slice(ep: &Endpoints, g: &MirrorGroup, name: Option<String>, max: usize) -> EndpointSlice {
    let svc = ep.metadata.name.clone().unwrap_or_default();
    // getEndpointSlicePrefix: "<name>-" unless that is no valid generateName prefix.
    let generate_name = name.is_none().then(|| if svc.len() < 253 { format!("{svc}-") } else { svc.clone() });
    EndpointSlice {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: ep.metadata.namespace.clone(),
            labels: Some(slice_labels(ep)),
            annotations: Some(slice_annotations(ep)),
            owner_references: Some(vec![util::controller_owner_ref(ep)]),
            ..Default::default()
        },
        address_type: g.address_type.clone(),
        endpoints: Some(g.endpoints.iter().take(max).cloned().collect()),
        ports: Some(g.ports.clone()),
    }
}

/// Does `s` already hold exactly the group's endpoints, labels and annotations?
fn slice_matches(ep: &Endpoints, g: &MirrorGroup, s: &EndpointSlice, max: usize) -> bool {
    let want = g.endpoints.len().min(max);
    let have = s.endpoints.as_deref().unwrap_or(&[]);
    if have.len() != want {
        return false;
    }
    let wanted: HashMap<_, &Endpoint> = g.endpoints.iter().take(max).map(|e| (endpoint_identity(e), e)).collect();
    let content_ok = have.iter().all(|e| wanted.get(&endpoint_identity(e)).is_some_and(|w| *w == e));
    let labels_ok = without(s.metadata.labels.as_ref(), &[LABEL_MANAGED_BY, LABEL_SERVICE_NAME])
        == ep.metadata.labels.clone().unwrap_or_default();
    let ann_ok = s.metadata.annotations.clone().unwrap_or_default() == slice_annotations(ep);
    content_ok && labels_ok && ann_ok && s.ports.as_deref().unwrap_or(&[]) == g.ports.as_slice()
}

/// The reconciler: per group keep the first existing slice (by name) and rewrite it when it
/// differs, delete the others, create a slice for a group that has none, delete slices of groups
/// no longer wanted; creates then reuse slices being deleted of the same address type.
pub fn plan_mirror(ep: &Endpoints, desired: &Desired, existing: &[Arc<EndpointSlice>], max: usize) -> SlicePlan {
    let mut by_key: HashMap<String, Vec<&EndpointSlice>> = HashMap::new();
    let mut sorted: Vec<&Arc<EndpointSlice>> = existing.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for s in sorted {
        let k = group_key(&s.address_type, s.ports.as_deref().unwrap_or(&[]));
        by_key.entry(k).or_default().push(s);
    }
    let mut plan = SlicePlan::default();
    for (k, g) in &desired.groups {
        let slices = by_key.remove(k).unwrap_or_default();
        let mut it = slices.into_iter();
        match it.next() {
            None => plan.create.push(new_slice(ep, g, None, max)),
            Some(first) => {
                if !slice_matches(ep, g, first, max) {
                    let mut s = new_slice(ep, g, first.metadata.name.clone(), max);
                    s.metadata.resource_version = first.metadata.resource_version.clone();
                    plan.update.push(s);
                }
            }
        }
        plan.delete.extend(it.cloned());
    }
    let mut rest: Vec<(String, Vec<&EndpointSlice>)> = by_key.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, slices) in rest {
        plan.delete.extend(slices.into_iter().cloned());
    }
    // recycleSlices: turn a create plus a delete of the same address type into one update.
    let mut creates = std::mem::take(&mut plan.create);
    let mut kept = Vec::new();
    for mut c in creates.drain(..) {
        match plan.delete.iter().position(|d| d.address_type == c.address_type) {
            Some(i) => {
                let d = plan.delete.remove(i);
                c.metadata.name = d.metadata.name.clone();
                c.metadata.generate_name = None;
                c.metadata.resource_version = d.metadata.resource_version.clone();
                plan.update.push(c);
            }
            None => kept.push(c),
        }
    }
    plan.create = kept;
    // Don't create slices for an Endpoints that is being deleted.
    if ep.metadata.deletion_timestamp.is_some() {
        plan.create.clear();
    }
    plan
}

fn slice_owner_key(s: &EndpointSlice) -> Option<String> {
    let l = s.metadata.labels.as_ref()?;
    if l.get(LABEL_MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    let svc = l.get(LABEL_SERVICE_NAME).filter(|s| !s.is_empty())?;
    Some(key(s.metadata.namespace.as_deref().unwrap_or_default(), svc))
}

pub struct MirroringController {
    client: Client,
    endpoints: Arc<Cache<Endpoints>>,
    services: Arc<Cache<Service>>,
    /// The mirrored slices per Endpoints key.
    tracker: SliceTracker,
    recorder: Recorder,
    pub queue: Arc<WorkQueue>,
    pub max_per_subset: usize,
}

fn obj_key<K: kube::Resource>(o: &K) -> String {
    key(o.meta().namespace.as_deref().unwrap_or_default(), o.meta().name.as_deref().unwrap_or_default())
}

impl MirroringController {
    pub fn new(client: Client, endpoints: Arc<Cache<Endpoints>>, services: Arc<Cache<Service>>) -> Arc<Self> {
        Arc::new(MirroringController {
            recorder: Recorder::new(client.clone(), "endpointslicemirroring-controller"),
            client,
            endpoints,
            services,
            tracker: SliceTracker::new(slice_owner_key),
            queue: WorkQueue::new(),
            max_per_subset: MAX_ENDPOINTS_PER_SUBSET,
        })
    }

    pub fn attach(
        self: &Arc<Self>,
        endpoints: &Informer<Endpoints>,
        services: &Informer<Service>,
        slices: &Informer<EndpointSlice>,
    ) {
        let me = self.clone();
        endpoints.add_handler(move |old, new| {
            let mirror = |e: Option<&Arc<Endpoints>>| e.is_some_and(|e| should_mirror(e));
            if mirror(old) || mirror(new) {
                if let Some(e) = new.or(old) {
                    me.queue.add(obj_key(e.as_ref()));
                }
            }
        });
        let me = self.clone();
        services.add_handler(move |old, new| {
            let sel = |s: Option<&Arc<Service>>| s.map(|s| service_has_selector(s));
            let enqueue = match (sel(old), sel(new)) {
                (Some(o), Some(n)) => o != n,
                (None, Some(n)) => !n,
                (Some(o), None) => !o,
                (None, None) => false,
            };
            if enqueue {
                if let Some(s) = new.or(old) {
                    me.queue.add(obj_key(s.as_ref()));
                }
            }
        });
        let me = self.clone();
        slices.add_handler(move |old, new| me.on_slice(old, new));
    }

    fn on_slice(&self, old: Option<&Arc<EndpointSlice>>, new: Option<&Arc<EndpointSlice>>) {
        for k in self.tracker.observe(old, new) {
            self.queue.add(k);
        }
    }

    pub async fn sync(self: Arc<Self>, k: String) -> Result<(), crate::Error> {
        let (ns, name) = split_key(&k);
        let existing = self.tracker.existing(&k);
        let ep = self.endpoints.get(ns, name);
        let mirror = ep.as_ref().is_some_and(|e| should_mirror(e))
            && self.services.get(ns, name).is_some_and(|s| !service_has_selector(&s));
        let plan = match (&ep, mirror) {
            (Some(ep), true) => {
                let d = desired_groups(ep, self.max_per_subset);
                if d.invalid > 0 {
                    self.recorder.warning(
                        util::object_ref(ep.as_ref()),
                        "InvalidIPAddress",
                        format!("Skipped {} invalid IP addresses when mirroring to EndpointSlices", d.invalid),
                    );
                }
                if d.skipped > d.invalid {
                    self.recorder.warning(
                        util::object_ref(ep.as_ref()),
                        "TooManyAddressesToMirror",
                        format!(
                            "A max of {} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
                            self.max_per_subset, d.skipped
                        ),
                    );
                }
                plan_mirror(ep, &d, &existing, self.max_per_subset)
            }
            _ => SlicePlan { delete: existing.iter().map(|s| (**s).clone()).collect(), ..Default::default() },
        };
        if plan.is_empty() {
            return Ok(());
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let pp = PostParams { field_manager: Some("endpointslicemirroring-controller".into()), ..Default::default() };
        let mut first_err: Option<kube::Error> = None;
        for s in &plan.create {
            match api.create(&pp, s).await {
                Ok(s) => self.tracker.remember(&k, s),
                // A terminating namespace refuses creates; nothing to do then.
                Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("terminat") => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for s in &plan.update {
            let n = s.metadata.name.as_deref().unwrap_or_default();
            match api.replace(n, &pp, s).await {
                Ok(s) => self.tracker.remember(&k, s),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for s in &plan.delete {
            let n = s.metadata.name.as_deref().unwrap_or_default();
            match api.delete(n, &DeleteParams::default()).await {
                Ok(_) => self.tracker.forget(&k, s),
                Err(e) if util::is_not_found(&e) => self.tracker.forget(&k, s),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        tracing::debug!(endpoints = %k, creates = plan.create.len(), updates = plan.update.len(), deletes = plan.delete.len(), "mirrored endpointslices synced");
        match first_err {
            None => Ok(()),
            Some(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointSubset, ObjectReference};

    fn addr(ip: &str) -> EndpointAddress {
        EndpointAddress { ip: ip.into(), ..Default::default() }
    }

    fn port(name: &str, p: i32) -> k8s_openapi::api::core::v1::EndpointPort {
        k8s_openapi::api::core::v1::EndpointPort {
            name: Some(name.into()),
            port: p,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }
    }

    fn eps(subsets: Vec<EndpointSubset>) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("default".into()),
                uid: Some("uid-db".into()),
                labels: Some(BTreeMap::from([("app".into(), "db".into())])),
                annotations: Some(BTreeMap::from([
                    ("note".into(), "x".into()),
                    (ANNOTATION_TRIGGER_TIME.into(), "2020-01-01T00:00:00Z".into()),
                ])),
                ..Default::default()
            },
            subsets: Some(subsets),
        }
    }

    fn subset(ready: &[&str], not_ready: &[&str], ports: Vec<(&str, i32)>) -> EndpointSubset {
        EndpointSubset {
            addresses: Some(ready.iter().map(|i| addr(i)).collect()),
            not_ready_addresses: Some(not_ready.iter().map(|i| addr(i)).collect()),
            ports: Some(ports.into_iter().map(|(n, p)| port(n, p)).collect()),
        }
    }

    /// Apply a plan to an in-memory set of slices (names for creates are made up).
    fn apply(existing: &mut Vec<Arc<EndpointSlice>>, plan: SlicePlan, n: &mut usize) {
        for d in &plan.delete {
            existing.retain(|s| s.metadata.name != d.metadata.name);
        }
        for u in plan.update {
            existing.retain(|s| s.metadata.name != u.metadata.name);
            existing.push(Arc::new(u));
        }
        for mut c in plan.create {
            *n += 1;
            c.metadata.name = Some(format!("db-{n}"));
            existing.push(Arc::new(c));
        }
    }

    #[test]
    fn skip_rules() {
        let mut e = eps(vec![]);
        assert!(should_mirror(&e));
        e.metadata.labels = Some(BTreeMap::from([(LABEL_SKIP_MIRROR.into(), "true".into())]));
        assert!(!should_mirror(&e));
        e.metadata.labels = Some(BTreeMap::from([(LABEL_SKIP_MIRROR.into(), "false".into())]));
        assert!(should_mirror(&e));
        e.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_LEADER.into(), "{}".into())]));
        assert!(!should_mirror(&e));
        assert_eq!(parse_ip_sloppy("010.001.002.003").unwrap().0, "10.1.2.3");
        assert_eq!(parse_ip_sloppy("::ffff:1.2.3.4").unwrap(), ("1.2.3.4".into(), "IPv4"));
        assert_eq!(parse_ip_sloppy("fd00::0001").unwrap(), ("fd00::1".into(), "IPv6"));
        assert!(parse_ip_sloppy("db.example.com").is_none());
    }

    #[test]
    fn mirrors_ready_not_ready_ports_and_metadata() {
        let mut e = eps(vec![subset(&["192.0.2.10", "192.0.2.11"], &["192.0.2.12"], vec![("mysql", 3306)])]);
        e.subsets.as_mut().unwrap()[0].addresses.as_mut().unwrap()[0].target_ref =
            Some(ObjectReference { kind: Some("Pod".into()), name: Some("ext".into()), ..Default::default() });
        let d = desired_groups(&e, MAX_ENDPOINTS_PER_SUBSET);
        let plan = plan_mirror(&e, &d, &[], MAX_ENDPOINTS_PER_SUBSET);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (1, 0, 0));
        let s = &plan.create[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("db-"));
        let l = s.metadata.labels.as_ref().unwrap();
        assert_eq!(l[LABEL_MANAGED_BY], CONTROLLER_NAME);
        assert_eq!(l[LABEL_SERVICE_NAME], "db");
        assert_eq!(l["app"], "db");
        let a = s.metadata.annotations.as_ref().unwrap();
        assert_eq!(a.get("note").map(String::as_str), Some("x"));
        assert!(!a.contains_key(ANNOTATION_TRIGGER_TIME));
        let o = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.name.as_str(), o.controller), ("Endpoints", "db", Some(true)));
        let p = &s.ports.as_ref().unwrap()[0];
        assert_eq!((p.name.as_deref(), p.port, p.protocol.as_deref()), (Some("mysql"), Some(3306), Some("TCP")));
        let got: Vec<(String, Option<bool>)> = s
            .endpoints
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().unwrap().ready))
            .collect();
        assert_eq!(
            got,
            vec![
                ("192.0.2.10".into(), Some(true)),
                ("192.0.2.11".into(), Some(true)),
                ("192.0.2.12".into(), Some(false))
            ]
        );
        assert_eq!(s.endpoints.as_ref().unwrap()[0].target_ref.as_ref().unwrap().name.as_deref(), Some("ext"));
        // Applying it converges: no further writes.
        let mut existing = Vec::new();
        let mut n = 0;
        apply(&mut existing, plan, &mut n);
        assert!(plan_mirror(&e, &d, &existing, MAX_ENDPOINTS_PER_SUBSET).is_empty());
        // A label change on the Endpoints rewrites the slice in place.
        e.metadata.labels.as_mut().unwrap().insert("tier".into(), "data".into());
        let plan = plan_mirror(&e, &d, &existing, MAX_ENDPOINTS_PER_SUBSET);
        assert_eq!((plan.create.len(), plan.update.len()), (0, 1));
        assert_eq!(plan.update[0].metadata.name.as_deref(), Some("db-1"));
    }

    #[test]
    fn families_port_sets_limits_and_deletes() {
        // Two subsets with the same ports share a slice; an IPv6 address gets its own slice; a
        // different port set gets another one; an invalid address is skipped.
        let e = eps(vec![
            subset(&["10.0.0.1", "fd00::1", "not-an-ip"], &[], vec![("a", 80)]),
            subset(&["10.0.0.2"], &[], vec![("a", 80)]),
            subset(&["10.0.0.3"], &[], vec![("b", 81), ("a", 80)]),
        ]);
        let d = desired_groups(&e, MAX_ENDPOINTS_PER_SUBSET);
        assert_eq!(d.invalid, 1);
        assert_eq!(d.skipped, 1);
        let plan = plan_mirror(&e, &d, &[], MAX_ENDPOINTS_PER_SUBSET);
        assert_eq!(plan.create.len(), 3);
        let sizes: Vec<(String, usize)> =
            plan.create.iter().map(|s| (s.address_type.clone(), s.endpoints.as_ref().unwrap().len())).collect();
        assert_eq!(sizes, vec![("IPv4".into(), 2), ("IPv6".into(), 1), ("IPv4".into(), 1)]);
        let mut existing = Vec::new();
        let mut n = 0;
        apply(&mut existing, plan, &mut n);
        // Drop the IPv6 address and the second port set: their slices go; the port set change of
        // an IPv4 group recycles a slice that would be deleted instead of creating one.
        let e2 = eps(vec![subset(&["10.0.0.1", "10.0.0.2"], &[], vec![("a", 8080)])]);
        let d2 = desired_groups(&e2, MAX_ENDPOINTS_PER_SUBSET);
        let plan = plan_mirror(&e2, &d2, &existing, MAX_ENDPOINTS_PER_SUBSET);
        assert_eq!(plan.create.len(), 0, "{plan:?}");
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.delete.len(), 2);
        apply(&mut existing, plan, &mut n);
        assert_eq!(existing.len(), 1);
        assert!(plan_mirror(&e2, &d2, &existing, MAX_ENDPOINTS_PER_SUBSET).is_empty());
        // No subsets: every mirrored slice is deleted, none created.
        let e3 = eps(vec![]);
        let plan = plan_mirror(&e3, &desired_groups(&e3, 1000), &existing, 1000);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (0, 0, 1));
        // At most 1000 addresses per subset (ready first), one slice per group.
        let many: Vec<String> = (0..1200).map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1)).collect();
        let ready: Vec<&str> = many[..900].iter().map(String::as_str).collect();
        let not_ready: Vec<&str> = many[900..].iter().map(String::as_str).collect();
        let big = eps(vec![subset(&ready, &not_ready, vec![("a", 80)])]);
        let d = desired_groups(&big, MAX_ENDPOINTS_PER_SUBSET);
        assert_eq!(d.skipped, 200);
        let plan = plan_mirror(&big, &d, &[], MAX_ENDPOINTS_PER_SUBSET);
        assert_eq!(plan.create.len(), 1);
        let eps = plan.create[0].endpoints.as_ref().unwrap();
        assert_eq!(eps.len(), 1000);
        assert_eq!(eps.iter().filter(|e| e.conditions.as_ref().unwrap().ready == Some(false)).count(), 100);
    }

    #[test]
    fn duplicate_slices_for_a_group_are_collapsed() {
        let e = eps(vec![subset(&["10.0.0.1"], &[], vec![("a", 80)])]);
        let d = desired_groups(&e, 1000);
        let mut existing = Vec::new();
        let mut n = 0;
        apply(&mut existing, plan_mirror(&e, &d, &[], 1000), &mut n);
        apply(&mut existing, plan_mirror(&e, &d, &[], 1000), &mut n);
        assert_eq!(existing.len(), 2);
        let plan = plan_mirror(&e, &d, &existing, 1000);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (0, 0, 1));
        assert_eq!(plan.delete[0].metadata.name.as_deref(), Some("db-2"));
    }
}
