//! EndpointSlice controller: per Service with a selector, `discovery.k8s.io/v1` slices of at most 100
//! endpoints, grouped by address family and resolved port set, written with minimal churn (only slices
//! whose content changed are updated; endpoints stay in the slice that already holds them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;
use crate::slice_tracker::SliceTracker;
use crate::svcindex::{service_selector, ServiceIndex, TriggerTimes};
use crate::util::{self, key, split_key};

pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// podutil.FindPort: the container port a Service port targets on this pod (named targetPorts are
/// looked up among the pod's container ports with the same protocol).
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let spec = pod.spec.as_ref()?;
            let sidecars =
                spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers.iter().chain(sidecars).flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                (p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == proto)
                    .then_some(p.container_port)
            })
        }
    }
}

/// endpointsliceutil.ShouldPodBeInEndpoints.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if util::is_pod_terminal(pod) {
        return false;
    }
    if util::pod_ips(pod).is_empty() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    true
}

/// endpointutil.ShouldSetHostname.
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace
}

fn is_ipv6(ip: &str) -> bool {
    ip.contains(':')
}

/// Address types of a Service's families ("IPv4"/"IPv6").
pub fn service_address_types(svc: &Service) -> Vec<String> {
    let spec = svc.spec.as_ref();
    if let Some(f) = spec.and_then(|s| s.ip_families.as_ref()).filter(|f| !f.is_empty()) {
        return f.clone();
    }
    match spec.and_then(|s| s.cluster_ip.as_deref()) {
        Some(ip) if ip != "None" && !ip.is_empty() => {
            vec![if is_ipv6(ip) { "IPv6" } else { "IPv4" }.to_string()]
        }
        _ => vec!["IPv4".to_string()],
    }
}

pub fn pod_ip_for_family(pod: &Pod, address_type: &str) -> Option<String> {
    let v6 = address_type == "IPv6";
    util::pod_ips(pod).into_iter().find(|ip| is_ipv6(ip) == v6)
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn pod_to_endpoint(pod: &Pod, svc: &Service, ip: String, zone: Option<String>) -> Endpoint {
    let pnra = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let pod_ready = util::is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = pnra || (pod_ready && !terminating);
    let serving = pnra || pod_ready;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        node_name: node,
        zone,
        hostname: should_set_hostname(pod, svc).then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone())).flatten(),
        ..Default::default()
    }
}

fn endpoint_key(ep: &Endpoint) -> String {
    match ep.target_ref.as_ref().and_then(|r| r.uid.as_deref()) {
        Some(uid) => format!("{uid}/{}", ep.addresses.first().map(String::as_str).unwrap_or("")),
        None => ep.addresses.join(","),
    }
}

fn ports_key(ports: &[EndpointPort]) -> String {
    serde_json::to_string(ports).unwrap_or_default()
}

/// One group of endpoints sharing an address type and a resolved port list.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointGroup {
    pub address_type: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// The endpoints a Service should have, grouped by (address type, ports), pods in name order.
pub fn desired_endpoint_groups(
    svc: &Service,
    pods: &[Arc<Pod>],
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<EndpointGroup> {
    let mut pods: Vec<&Arc<Pod>> = pods.iter().collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let address_types = service_address_types(svc);
    let svc_ports: &[ServicePort] = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
    let mut groups: BTreeMap<(String, String), EndpointGroup> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|sp| {
                find_port(pod, sp).map(|n| EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(n),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let zone = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).and_then(zone_of);
        for at in &address_types {
            let Some(ip) = pod_ip_for_family(pod, at) else {
                continue;
            };
            let g = groups.entry((at.clone(), ports_key(&ports))).or_insert_with(|| EndpointGroup {
                address_type: at.clone(),
                ports: ports.clone(),
                endpoints: vec![],
            });
            g.endpoints.push(pod_to_endpoint(pod, svc, ip, zone.clone()));
        }
    }
    groups.into_values().collect()
}

pub fn desired_slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !matches!(k.as_str(), LABEL_SERVICE_NAME | LABEL_MANAGED_BY | LABEL_HEADLESS))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(LABEL_SERVICE_NAME.into(), svc.metadata.name.clone().unwrap_or_default());
    l.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    if is_headless(svc) {
        l.insert(LABEL_HEADLESS.into(), String::new());
    }
    l
}

/// Writes needed to bring a Service's slices to the desired state.
#[derive(Debug, Default, Clone)]
pub struct SlicePlan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

impl SlicePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

fn new_slice(
    svc: &Service,
    labels: &BTreeMap<String, String>,
    at: &str,
    ports: Vec<EndpointPort>,
    eps: Vec<Endpoint>,
    trigger: Option<&str>,
) -> EndpointSlice {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let prefix: String = name.chars().take(57).collect();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            annotations: trigger.map(|t| BTreeMap::from([(ANNOTATION_TRIGGER_TIME.to_string(), t.to_string())])),
            owner_references: Some(vec![util::controller_owner_ref(svc)]),
            ..Default::default()
        },
        address_type: at.to_string(),
        endpoints: Some(eps),
        ports: Some(ports),
    }
}

/// The reconciler: compares desired endpoint groups with the existing (managed) slices of a Service.
pub fn plan_slices(
    svc: &Service,
    groups: &[EndpointGroup],
    existing: &[Arc<EndpointSlice>],
    max_per_slice: usize,
    trigger: Option<&str>,
) -> SlicePlan {
    let labels = desired_slice_labels(svc);
    let owner = util::controller_owner_ref(svc);
    let mut plan = SlicePlan::default();
    // Desired endpoints per group key, by endpoint key.
    let mut want: HashMap<(String, String), (usize, HashMap<String, Endpoint>)> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        let m = g.endpoints.iter().map(|e| (endpoint_key(e), e.clone())).collect();
        want.insert((g.address_type.clone(), ports_key(&g.ports)), (i, m));
    }
    let total: usize = groups.iter().map(|g| g.endpoints.len()).sum();
    let mut existing: Vec<&Arc<EndpointSlice>> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    if total == 0 {
        // Exactly one placeholder slice (no ports, no endpoints) of the primary family.
        let at = service_address_types(svc).into_iter().next().unwrap_or_else(|| "IPv4".into());
        let mut kept = false;
        for s in existing {
            let is_placeholder = !kept
                && s.address_type == at
                && s.endpoints.as_ref().is_none_or(|e| e.is_empty())
                && s.ports.as_ref().is_none_or(|p| p.is_empty());
            if is_placeholder {
                kept = true;
                if s.metadata.labels.as_ref() != Some(&labels) || !has_owner(s, &owner) {
                    let mut u = (**s).clone();
                    fix_meta(&mut u, &labels, &owner, trigger);
                    plan.update.push(u);
                }
            } else {
                plan.delete.push((**s).clone());
            }
        }
        if !kept {
            plan.create.push(new_slice(svc, &labels, &at, vec![], vec![], trigger));
        }
        return plan;
    }

    // Pass 1: keep endpoints where they are, refresh their content, drop the unwanted.
    struct Work {
        slice: EndpointSlice,
        group: Option<(String, String)>,
        changed: bool,
    }
    let mut work: Vec<Work> = Vec::new();
    let mut placed: HashSet<((String, String), String)> = HashSet::new();
    for s in existing {
        let ports = s.ports.clone().unwrap_or_default();
        let gk = (s.address_type.clone(), ports_key(&ports));
        let Some((_, wanted)) = want.get(&gk) else {
            plan.delete.push((**s).clone());
            continue;
        };
        let mut slice = (**s).clone();
        let mut changed = false;
        let mut eps = Vec::new();
        for ep in slice.endpoints.take().unwrap_or_default() {
            let k = endpoint_key(&ep);
            match wanted.get(&k) {
                Some(w) if !placed.contains(&(gk.clone(), k.clone())) => {
                    if *w != ep {
                        changed = true;
                    }
                    placed.insert((gk.clone(), k));
                    eps.push(w.clone());
                }
                _ => changed = true,
            }
        }
        slice.endpoints = Some(eps);
        if slice.metadata.labels.as_ref() != Some(&labels) || !has_owner(&slice, &owner) {
            changed = true;
        }
        work.push(Work { slice, group: Some(gk), changed });
    }
    // Pass 2: place new endpoints, first into slices already being changed, then others with room.
    for g in groups {
        let gk = (g.address_type.clone(), ports_key(&g.ports));
        let mut pending: Vec<Endpoint> =
            g.endpoints.iter().filter(|e| !placed.contains(&(gk.clone(), endpoint_key(e)))).cloned().collect();
        if pending.is_empty() {
            continue;
        }
        pending.reverse();
        for pass in 0..2 {
            for w in work.iter_mut().filter(|w| w.group.as_ref() == Some(&gk)) {
                if pass == 0 && !w.changed {
                    continue;
                }
                let eps = w.slice.endpoints.get_or_insert_with(Vec::new);
                while eps.len() < max_per_slice {
                    let Some(e) = pending.pop() else { break };
                    eps.push(e);
                    w.changed = true;
                }
            }
        }
        while !pending.is_empty() {
            let n = pending.len().min(max_per_slice);
            let chunk: Vec<Endpoint> = (0..n).filter_map(|_| pending.pop()).collect();
            plan.create.push(new_slice(svc, &labels, &g.address_type, g.ports.clone(), chunk, trigger));
        }
    }
    for mut w in work {
        if w.slice.endpoints.as_ref().is_none_or(|e| e.is_empty()) {
            plan.delete.push(w.slice);
        } else if w.changed {
            fix_meta(&mut w.slice, &labels, &owner, trigger);
            plan.update.push(w.slice);
        }
    }
    plan
}

fn has_owner(s: &EndpointSlice, owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> bool {
    s.metadata.owner_references.iter().flatten().any(|o| o.uid == owner.uid && o.controller == Some(true))
}

fn fix_meta(
    s: &mut EndpointSlice,
    labels: &BTreeMap<String, String>,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    trigger: Option<&str>,
) {
    s.metadata.labels = Some(labels.clone());
    if !has_owner(s, owner) {
        let refs = s.metadata.owner_references.get_or_insert_with(Vec::new);
        refs.retain(|o| o.controller != Some(true));
        refs.push(owner.clone());
    }
    if let Some(t) = trigger {
        s.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(ANNOTATION_TRIGGER_TIME.into(), t.into());
    }
}

fn slice_service_key(s: &EndpointSlice) -> Option<String> {
    let l = s.metadata.labels.as_ref()?;
    if l.get(LABEL_MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    let svc = l.get(LABEL_SERVICE_NAME)?;
    Some(key(s.metadata.namespace.as_deref().unwrap_or_default(), svc))
}

pub struct EndpointSliceController {
    client: Client,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<k8s_openapi::api::core::v1::Node>>,
    index: Arc<ServiceIndex>,
    /// The slices each Service manages.
    slices: SliceTracker,
    pub queue: Arc<WorkQueue>,
    pub triggers: Arc<TriggerTimes>,
}

impl EndpointSliceController {
    pub fn new(
        client: Client,
        services: Arc<Cache<Service>>,
        pods: Arc<Cache<Pod>>,
        nodes: Arc<Cache<k8s_openapi::api::core::v1::Node>>,
        index: Arc<ServiceIndex>,
        queue: Arc<WorkQueue>,
        triggers: Arc<TriggerTimes>,
    ) -> Arc<Self> {
        Arc::new(EndpointSliceController {
            client,
            services,
            pods,
            nodes,
            index,
            slices: SliceTracker::new(slice_service_key),
            queue,
            triggers,
        })
    }

    pub fn attach(self: &Arc<Self>, slices: &Informer<EndpointSlice>) {
        let me = self.clone();
        slices.add_handler(move |old, new| me.on_slice(old, new));
    }

    fn on_slice(&self, old: Option<&Arc<EndpointSlice>>, new: Option<&Arc<EndpointSlice>>) {
        for k in self.slices.observe(old, new) {
            self.queue.add(k);
        }
    }

    fn zone_of(&self, node: &str) -> Option<String> {
        self.nodes.get("", node)?.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned()
    }

    pub async fn sync(self: Arc<Self>, svc_key: String) -> Result<(), crate::Error> {
        let started = std::time::Instant::now();
        let (ns, name) = split_key(&svc_key);
        let trigger = self.triggers.take(&svc_key).map(util::rfc3339);
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let existing = self.slices.existing(&svc_key);
        let plan = match self.services.get(ns, name) {
            None => SlicePlan { delete: existing.iter().map(|s| (**s).clone()).collect(), ..Default::default() },
            Some(svc) => {
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
                let groups = desired_endpoint_groups(&svc, &pods, &|n| self.zone_of(n));
                plan_slices(&svc, &groups, &existing, MAX_ENDPOINTS_PER_SLICE, trigger.as_deref())
            }
        };
        if plan.is_empty() {
            return Ok(());
        }
        let computed = started.elapsed();
        let pp = PostParams { field_manager: Some("endpointslice-controller".into()), ..Default::default() };
        let mut errors = Vec::new();
        let creates = join_all(plan.create.iter().map(|s| api.create(&pp, s)));
        let updates =
            join_all(plan.update.iter().map(|s| api.replace(s.metadata.name.as_deref().unwrap_or_default(), &pp, s)));
        let (created, updated) = futures::join!(creates, updates);
        for r in created.into_iter().chain(updated) {
            match r {
                Ok(s) => self.slices.remember(&svc_key, s),
                Err(e) => errors.push(e),
            }
        }
        let deletes = join_all(plan.delete.iter().map(|s| {
            let api = api.clone();
            async move {
                let r = api.delete(s.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await;
                (s, r)
            }
        }))
        .await;
        for (s, r) in deletes {
            match r {
                Ok(_) => self.slices.forget(&svc_key, s),
                Err(e) if util::is_not_found(&e) => self.slices.forget(&svc_key, s),
                Err(e) => errors.push(e),
            }
        }
        tracing::debug!(
            service = %svc_key, creates = plan.create.len(), updates = plan.update.len(), deletes = plan.delete.len(),
            compute_us = computed.as_micros() as u64, total_us = started.elapsed().as_micros() as u64, "endpointslices synced"
        );
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => {
                if trigger.is_some() {
                    if let Some(t) = trigger.as_deref().and_then(|t| t.parse().ok()) {
                        self.triggers.record(&svc_key, t);
                    }
                }
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
