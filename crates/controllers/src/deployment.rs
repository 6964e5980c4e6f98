//! Deployment controller: owns ReplicaSets named `<deployment>-<pod-template-hash>`, scales them for
//! RollingUpdate (maxSurge/maxUnavailable, readiness) and Recreate, keeps the revision annotations,
//! proportional scaling for mid-rollout resizes, history cleanup, and the status and conditions that
//! `kubectl get deploy` and `kubectl rollout status` read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use crate::claim;
use crate::events::Recorder;
use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;
use crate::util::{self, key, split_key};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// rand.SafeEncodeString: every byte mapped into an alphabet without vowels (no bad words) and
/// without look-alike characters.
pub fn safe_encode_string(s: &str) -> String {
    s.bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// Writes the deep-hash printing of a JSON value: maps with their keys sorted (spew's `SortKeys`),
/// lists in order, strings quoted, `null` as `<nil>`. Every value of the template is printed with
/// its field name, so two templates print the same iff they are equal field for field.
pub fn deep_hash_print(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Null => out.extend_from_slice(b"<nil>"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => out.extend_from_slice(serde_json::to_string(s).unwrap_or_default().as_bytes()),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                deep_hash_print(x, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(k.as_bytes());
                out.push(b':');
                deep_hash_print(&m[k], out);
            }
            out.push(b'}');
        }
    }
}

/// controller.ComputeHash: FNV-32a over the deep-hash printing of the pod template, then (when the
/// Deployment has a `collisionCount`, even 0) that count as a little-endian uint32 in 8 bytes, and
/// the sum rendered as decimal through SafeEncodeString (so 1 to 10 characters of
/// `4-9bcdf`, like upstream's).
///
/// The one deliberate difference from upstream is the printing that is hashed. Upstream prints the
/// Go struct `v1.PodTemplateSpec` with go-spew (`%#v`, sorted map keys, Go type and field names,
/// every zero-valued field, internal representations such as `resource.Quantity`'s and
/// `time.Time`'s), so its value depends on the exact Go type definitions of one Kubernetes release
/// (upstream's own hashes change between releases when fields are added) and cannot be reproduced
/// from the API's JSON without those Go definitions. We print the template's JSON instead, with
/// sorted keys and without absent fields, which keeps the properties the controller relies on:
/// the value is stable across restarts and library upgrades (no dependence on struct field order or
/// on fields the template does not set), it changes iff the template changes, and collisionCount
/// moves it. ReplicaSets are matched to their Deployment by template equality, never by recomputing
/// a name, so ReplicaSets written with an older hash keep being adopted.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = Vec::with_capacity(1024);
    deep_hash_print(&serde_json::to_value(template).unwrap_or_default(), &mut data);
    if let Some(c) = collision_count {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(c as u32).to_le_bytes());
        data.extend_from_slice(&b);
    }
    safe_encode_string(&fnv32a(&data).to_string())
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// intstr.GetScaledValueFromIntOrPercent.
pub fn scaled_value(v: Option<&IntOrString>, default_pct: i32, total: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let x = pct * i64::from(total);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
        None => {
            let x = i64::from(default_pct) * i64::from(total);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
    }
}

/// ResolveFenceposts: (maxSurge, maxUnavailable) in pods; both zero means one unavailable.
pub fn resolve_fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d.spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let desired = replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), 25, desired, true);
    let mut unavail = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), 25, desired, false);
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    (surge, unavail)
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) {
        0
    } else {
        resolve_fenceposts(d).0
    }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if is_recreate(d) || replicas(d) == 0 {
        return 0;
    }
    resolve_fenceposts(d).1.min(replicas(d))
}

/// NewRSNewReplicas: how big the new ReplicaSet may be right now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if is_recreate(d) {
        return replicas(d);
    }
    let current: i32 = all.iter().map(rs_replicas).sum();
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let up = (max_total - current).min(replicas(d) - rs_replicas(new_rs));
    rs_replicas(new_rs) + up
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// reconcileOldReplicaSets as a plan: new sizes for old ReplicaSets (cleanup of unhealthy replicas
/// first, then scale down while keeping `replicas - maxUnavailable` available).
pub fn plan_old_scale_down(d: &Deployment, old: &[ReplicaSet], new_rs: &ReplicaSet) -> Vec<(String, i32)> {
    let mut old: Vec<ReplicaSet> = old.iter().filter(|r| rs_replicas(r) > 0).cloned().collect();
    old.sort_by(by_creation);
    let old_count: i32 = old.iter().map(rs_replicas).sum();
    if old_count == 0 {
        return vec![];
    }
    let all_count = old_count + rs_replicas(new_rs);
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = rs_replicas(new_rs) - rs_available(new_rs);
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return vec![];
    }
    let mut out: BTreeMap<String, i32> = BTreeMap::new();
    // Unhealthy replicas first.
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let (r, a) = (rs_replicas(rs), rs_available(rs));
        if r == 0 || r == a {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(r - a);
        rs.spec.replicas = Some(r - n);
        out.insert(rs.metadata.name.clone().unwrap_or_default(), r - n);
        cleaned += n;
    }
    // Then healthy ones, keeping minAvailable.
    let available: i32 = old.iter().map(rs_available).sum::<i32>() + rs_available(new_rs);
    if available > min_available {
        let total = available - min_available;
        let mut done = 0;
        for rs in old.iter_mut() {
            if done >= total {
                break;
            }
            let r = rs_replicas(rs);
            if r == 0 {
                continue;
            }
            let n = r.min(total - done);
            rs.spec.replicas = Some(r - n);
            out.insert(rs.metadata.name.clone().unwrap_or_default(), r - n);
            done += n;
        }
    }
    out.into_iter().collect()
}

fn annotation_i32(rs: &ReplicaSet, k: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(k)?.parse().ok()
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The scale step of `sync` (deployment resized): returns new sizes for the ReplicaSets.
pub fn plan_scale(d: &Deployment, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Vec<(String, i32)> {
    let mut active: Vec<&ReplicaSet> = new_rs.into_iter().chain(old.iter()).filter(|r| rs_replicas(r) > 0).collect();
    let name = |r: &ReplicaSet| r.metadata.name.clone().unwrap_or_default();
    // One active (or none: the newest) takes the whole count.
    let single = if active.len() == 1 {
        Some(active[0])
    } else if active.is_empty() {
        new_rs.or_else(|| old.iter().max_by(|a, b| by_creation(a, b)))
    } else {
        None
    };
    if let Some(rs) = single {
        return if rs_replicas(rs) == replicas(d) { vec![] } else { vec![(name(rs), replicas(d))] };
    }
    // New RS saturated: old ones go to zero.
    if let Some(n) = new_rs {
        let saturated = rs_replicas(n) == replicas(d)
            && annotation_i32(n, DESIRED_REPLICAS) == Some(replicas(d))
            && rs_available(n) >= replicas(d);
        if saturated {
            return old.iter().filter(|r| rs_replicas(r) > 0).map(|r| (name(r), 0)).collect();
        }
    }
    if is_recreate(d) {
        return vec![];
    }
    let current: i32 = active.iter().map(|r| rs_replicas(r)).sum();
    let allowed = if replicas(d) > 0 { replicas(d) + max_surge(d) } else { 0 };
    let to_add = allowed - current;
    if to_add > 0 {
        // Largest first, newer first on ties.
        active.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(b, a)));
    } else if to_add < 0 {
        active.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(a, b)));
    }
    let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::new();
    for rs in &active {
        let r = rs_replicas(rs);
        let mut proportion = 0;
        if to_add != 0 && r != 0 && to_add != added {
            let fraction = if replicas(d) == 0 {
                -r
            } else {
                let annotated = annotation_i32(rs, MAX_REPLICAS).unwrap_or(status_replicas).max(1);
                let new_size = f64::from(r) * f64::from(replicas(d) + max_surge(d)) / f64::from(annotated);
                new_size.round() as i32 - r
            };
            let allowed_rest = to_add - added;
            proportion = if to_add > 0 { fraction.min(allowed_rest) } else { fraction.max(allowed_rest) };
        }
        sizes.push(r + proportion);
        added += proportion;
    }
    if let Some(first) = sizes.first_mut() {
        if to_add != 0 {
            *first = (*first + to_add - added).max(0);
        }
    }
    active
        .iter()
        .zip(sizes)
        .filter(|(rs, s)| rs_replicas(rs) != *s || annotation_i32(rs, DESIRED_REPLICAS) != Some(replicas(d)))
        .map(|(rs, s)| (name(rs), s))
        .collect()
}

fn template_without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    serde_json::to_value(t).unwrap_or_default()
}

pub fn templates_equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = util::now();
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn get_condition<'a>(st: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    st.conditions.iter().flatten().find(|c| c.type_.as_deref() == Some(type_))
}

/// SetDeploymentCondition: no-op when status and reason are unchanged; keeps lastTransitionTime
/// when only the reason changes.
fn set_condition(st: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get_condition(st, c.type_.as_deref().unwrap_or_default()) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    let conds = st.conditions.get_or_insert_with(Vec::new);
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

fn remove_condition(st: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = st.conditions.as_mut() {
        c.retain(|x| x.type_.as_deref() != Some(type_));
    }
}

/// calculateStatus.
pub fn calculate_status(d: &Deployment, all: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> DeploymentStatus {
    let st = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(rs_available).sum();
    let total: i32 = all.iter().map(rs_replicas).sum();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|r| st(r).replicas).sum()),
        updated_replicas: Some(new_rs.map(|r| st(r).replicas).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(|r| st(r).ready_replicas.unwrap_or(0)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        conditions: d.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut s,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut s,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    s
}

fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    s.updated_replicas == Some(r)
        && s.replicas == Some(r)
        && s.available_replicas == Some(r)
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

fn deployment_progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(s.replicas) - g(s.updated_replicas);
    g(s.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(s.ready_replicas) > g(old.ready_replicas)
        || g(s.available_replicas) > g(old.available_replicas)
}

fn deployment_timed_out(d: &Deployment, s: &DeploymentStatus) -> bool {
    let Some(deadline) = d.spec.progress_deadline_seconds else {
        return false;
    };
    let Some(c) = get_condition(s, "Progressing") else {
        return false;
    };
    if c.reason.as_deref() == Some("NewReplicaSetAvailable") || c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return false;
    }
    let Some(t) = c.last_update_time.as_ref() else {
        return false;
    };
    t.0.as_second() + i64::from(deadline) < jiff::Timestamp::now().as_second()
}

pub struct DeploymentController {
    client: Client,
    deployments: Arc<Cache<Deployment>>,
    rs: Arc<Cache<ReplicaSet>>,
    pods: Arc<Cache<Pod>>,
    pub queue: Arc<WorkQueue>,
    recorder: Recorder,
}

impl DeploymentController {
    pub fn new(
        client: Client,
        deployments: Arc<Cache<Deployment>>,
        rs: Arc<Cache<ReplicaSet>>,
        pods: Arc<Cache<Pod>>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "deployment-controller");
        Arc::new(DeploymentController { client, deployments, rs, pods, queue: WorkQueue::new(), recorder })
    }

    fn enqueue_owner(&self, rs: &ReplicaSet) {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        match util::controller_ref(&rs.metadata) {
            Some(r) if r.kind == "Deployment" => self.queue.add(key(ns, &r.name)),
            Some(_) => {}
            None => {
                for d in self.deployments.list_ns(ns) {
                    if !util::label_selector_is_empty(&d.spec.selector)
                        && util::label_selector_matches(&d.spec.selector, rs.metadata.labels.as_ref())
                    {
                        self.queue.add(key(ns, d.metadata.name.as_deref().unwrap_or_default()));
                    }
                }
            }
        }
    }

    pub fn attach(
        self: &Arc<Self>,
        deployments: &Informer<Deployment>,
        rs: &Informer<ReplicaSet>,
        pods: &Informer<Pod>,
    ) {
        let me = self.clone();
        deployments.add_handler(move |old, new| {
            if let Some(d) = new.or(old) {
                me.queue.add(key(
                    d.metadata.namespace.as_deref().unwrap_or_default(),
                    d.metadata.name.as_deref().unwrap_or_default(),
                ));
            }
        });
        let me = self.clone();
        rs.add_handler(move |old, new| {
            if let (Some(o), Some(n)) = (old, new) {
                if util::controller_ref(&o.metadata).map(|r| &r.uid)
                    != util::controller_ref(&n.metadata).map(|r| &r.uid)
                {
                    me.enqueue_owner(o);
                }
            }
            if let Some(r) = new.or(old) {
                me.enqueue_owner(r);
            }
        });
        // Recreate waits for old pods to be gone: pod deletions wake the owning deployment.
        let me = self.clone();
        pods.add_handler(move |old, new| {
            if new.is_some() {
                return;
            }
            let Some(p) = old else { return };
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            if let Some(r) = util::controller_ref(&p.metadata).filter(|r| r.kind == "ReplicaSet") {
                if let Some(rs) = me.rs.get(ns, &r.name) {
                    if let Some(dref) = util::controller_ref(&rs.metadata) {
                        if let Some(d) = me.deployments.get(ns, &dref.name) {
                            if is_recreate(&d) {
                                me.queue.add(key(ns, &dref.name));
                            }
                        }
                    }
                }
            }
        });
    }

    fn d_ref(d: &Deployment) -> k8s_openapi::api::core::v1::ObjectReference {
        util::object_ref(d)
    }

    /// getReplicaSetsForDeployment: owned ReplicaSets, adopting orphans and releasing non-matching.
    async fn claim_replica_sets(&self, d: &Deployment) -> Result<Vec<ReplicaSet>, crate::Error> {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let mut out = Vec::new();
        let deleting = d.metadata.deletion_timestamp.is_some();
        for rs in self.rs.list_ns(ns) {
            let matches = util::label_selector_matches(&d.spec.selector, rs.metadata.labels.as_ref());
            let owner_ref = || util::controller_owner_ref(d);
            if let Some(rs) = claim::claim(&api, &uid, deleting, owner_ref, rs.as_ref(), matches).await? {
                out.push(rs);
            }
        }
        Ok(out)
    }

    pub async fn sync(self: Arc<Self>, k: String) -> Result<(), crate::Error> {
        let (ns, name) = split_key(&k);
        let Some(d) = self.deployments.get(ns, name) else {
            return Ok(());
        };
        let mut d = (*d).clone();
        if util::label_selector_is_empty(&d.spec.selector) {
            self.recorder.warning(
                Self::d_ref(&d),
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            if d.status.as_ref().and_then(|s| s.observed_generation) != d.metadata.generation {
                let mut s = d.status.clone().unwrap_or_default();
                s.observed_generation = d.metadata.generation;
                d.status = Some(s);
                self.write_status(&mut d).await?;
            }
            return Ok(());
        }
        let mut rs_list = self.claim_replica_sets(&d).await?;
        rs_list.sort_by(by_creation);
        if d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = self.split_new_old(&d, &rs_list);
            return self.sync_status(&d, new_rs.as_ref(), &old, false).await;
        }
        let paused = d.spec.paused.unwrap_or(false);
        // checkPausedConditions.
        if d.spec.progress_deadline_seconds.is_some() {
            let mut st = d.status.clone().unwrap_or_default();
            let cur = get_condition(&st, "Progressing").and_then(|c| c.reason.clone());
            let update = if paused
                && cur.as_deref() != Some("ProgressDeadlineExceeded")
                && cur.as_deref() != Some("DeploymentPaused")
            {
                Some(new_condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into()))
            } else if !paused && cur.as_deref() == Some("DeploymentPaused") {
                Some(new_condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed".into()))
            } else {
                None
            };
            if let Some(c) = update {
                set_condition(&mut st, c);
                d.status = Some(st);
                self.write_status(&mut d).await?;
            }
        }
        let (new_rs, old) = self.split_new_old(&d, &rs_list);
        let scaling = new_rs
            .iter()
            .chain(old.iter())
            .filter(|r| rs_replicas(r) > 0)
            .any(|r| annotation_i32(r, DESIRED_REPLICAS).is_some_and(|v| v != replicas(&d)));
        if paused || scaling {
            let (new_rs, old) = self.sync_revision(&mut d, rs_list, false).await?;
            let plan = plan_scale(&d, new_rs.as_ref(), &old);
            let (new_rs, old) = self.apply_sizes(&d, new_rs, old, plan).await?;
            return self.sync_status(&d, new_rs.as_ref(), &old, false).await;
        }
        if is_recreate(&d) {
            self.rollout_recreate(&mut d, rs_list).await
        } else {
            self.rollout_rolling(&mut d, rs_list).await
        }
    }

    fn split_new_old(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let new_idx = rs_list
            .iter()
            .position(|r| r.spec.template.as_ref().is_some_and(|t| templates_equal_ignoring_hash(t, &d.spec.template)));
        let new_rs = new_idx.map(|i| rs_list[i].clone());
        let old = rs_list.iter().enumerate().filter(|(i, _)| Some(*i) != new_idx).map(|(_, r)| r.clone()).collect();
        (new_rs, old)
    }

    /// getAllReplicaSetsAndSyncRevision: find (or create) the new ReplicaSet and keep revisions.
    async fn sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), crate::Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let (new_rs, old) = self.split_new_old(d, &rs_list);
        let max_old = old.iter().map(revision).max().unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let new_rs = match new_rs {
            Some(mut rs) => {
                let mut changed = false;
                if revision(&rs) < max_old + 1 {
                    rs.metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .insert(REVISION.into(), new_revision.clone());
                    changed = true;
                }
                if rs.spec.min_ready_seconds != d.spec.min_ready_seconds {
                    rs.spec.min_ready_seconds = d.spec.min_ready_seconds;
                    changed = true;
                }
                if changed {
                    rs = rs_api
                        .replace(rs.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &rs)
                        .await?;
                }
                let rev = rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REVISION))
                    .cloned()
                    .unwrap_or(new_revision.clone());
                let mut d_changed = false;
                if d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) != Some(&rev) {
                    d.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(REVISION.into(), rev);
                    d_changed = true;
                }
                let mut st = d.status.clone().unwrap_or_default();
                if d.spec.progress_deadline_seconds.is_some() && get_condition(&st, "Progressing").is_none() {
                    set_condition(
                        &mut st,
                        new_condition(
                            "Progressing",
                            "True",
                            "FoundNewReplicaSet",
                            format!("Found new replica set \"{}\"", rs.metadata.name.as_deref().unwrap_or_default()),
                        ),
                    );
                    d.status = Some(st);
                    self.write_status(d).await?;
                }
                if d_changed {
                    self.write_deployment(d).await?;
                }
                Some(rs)
            }
            None if create => {
                let collision = d.status.as_ref().and_then(|s| s.collision_count);
                let hash = compute_hash(&d.spec.template, collision);
                let dname = d.metadata.name.clone().unwrap_or_default();
                let mut template = d.spec.template.clone();
                template
                    .metadata
                    .get_or_insert_with(Default::default)
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(HASH_LABEL.into(), hash.clone());
                let mut selector = d.spec.selector.clone();
                selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
                let all_count: i32 = old.iter().map(rs_replicas).sum();
                let mut rs = ReplicaSet {
                    metadata: ObjectMeta {
                        name: Some(format!("{dname}-{hash}")),
                        namespace: Some(ns.clone()),
                        labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                        annotations: Some(BTreeMap::from([
                            (REVISION.to_string(), new_revision.clone()),
                            (DESIRED_REPLICAS.to_string(), replicas(d).to_string()),
                            (MAX_REPLICAS.to_string(), (replicas(d) + max_surge(d)).to_string()),
                        ])),
                        owner_references: Some(vec![util::controller_owner_ref(d)]),
                        ..Default::default()
                    },
                    spec: ReplicaSetSpec {
                        replicas: Some(0),
                        min_ready_seconds: d.spec.min_ready_seconds,
                        selector,
                        template: Some(template),
                    },
                    status: None,
                };
                // Copy the deployment's annotations (except kubectl's last-applied and ours).
                for (k, v) in d.metadata.annotations.iter().flatten() {
                    if k != "kubectl.kubernetes.io/last-applied-configuration"
                        && k != REVISION
                        && k != DESIRED_REPLICAS
                        && k != MAX_REPLICAS
                        && k != "deployment.kubernetes.io/revision-history"
                    {
                        rs.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(k.clone(), v.clone());
                    }
                }
                let mut probe = rs.clone();
                probe.spec.replicas = Some(0);
                let all: Vec<ReplicaSet> = old.iter().cloned().chain(std::iter::once(probe.clone())).collect();
                rs.spec.replicas = Some(new_rs_new_replicas(d, &all, &probe));
                let _ = all_count;
                let created = match rs_api.create(&PostParams::default(), &rs).await {
                    Ok(c) => {
                        let n = c.spec.replicas.unwrap_or(0);
                        if n > 0 {
                            self.recorder.normal(
                                Self::d_ref(d),
                                "ScalingReplicaSet",
                                format!(
                                    "Scaled up replica set {} from 0 to {n}",
                                    c.metadata.name.as_deref().unwrap_or_default()
                                ),
                            );
                        }
                        let mut st = d.status.clone().unwrap_or_default();
                        if d.spec.progress_deadline_seconds.is_some() {
                            set_condition(
                                &mut st,
                                new_condition(
                                    "Progressing",
                                    "True",
                                    "NewReplicaSetCreated",
                                    format!(
                                        "Created new replica set \"{}\"",
                                        c.metadata.name.as_deref().unwrap_or_default()
                                    ),
                                ),
                            );
                            d.status = Some(st);
                            self.write_status(d).await?;
                        }
                        c
                    }
                    Err(e) if util::is_already_exists(&e) => {
                        let existing = rs_api.get(rs.metadata.name.as_deref().unwrap_or_default()).await?;
                        let ours = util::controller_ref(&existing.metadata)
                            .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                        let same = existing
                            .spec
                            .template
                            .as_ref()
                            .is_some_and(|t| templates_equal_ignoring_hash(t, &d.spec.template));
                        if ours && same {
                            existing
                        } else {
                            // Hash collision: bump collisionCount and retry with a new name.
                            let mut st = d.status.clone().unwrap_or_default();
                            st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                            d.status = Some(st);
                            self.write_status(d).await?;
                            return Err(crate::Error::Invalid(format!(
                                "hash collision for replica set {}",
                                rs.metadata.name.unwrap_or_default()
                            )));
                        }
                    }
                    Err(e) => return Err(e.into()),
                };
                let rev = created
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REVISION))
                    .cloned()
                    .unwrap_or(new_revision);
                if d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) != Some(&rev) {
                    d.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(REVISION.into(), rev);
                    self.write_deployment(d).await?;
                }
                Some(created)
            }
            None => None,
        };
        Ok((new_rs, old))
    }

    async fn write_deployment(&self, d: &mut Deployment) -> Result<(), crate::Error> {
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or_default());
        let status = d.status.clone();
        let mut written =
            api.replace(d.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), d).await?;
        written.status = status;
        *d = written;
        Ok(())
    }

    async fn write_status(&self, d: &mut Deployment) -> Result<(), crate::Error> {
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or_default());
        let written =
            api.replace_status(d.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), d).await?;
        d.metadata.resource_version = written.metadata.resource_version;
        Ok(())
    }

    /// scaleReplicaSetAndRecordEvent for each (name, size); also refreshes the replica annotations.
    async fn apply_sizes(
        &self,
        d: &Deployment,
        new_rs: Option<ReplicaSet>,
        old: Vec<ReplicaSet>,
        plan: Vec<(String, i32)>,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), crate::Error> {
        let mut new_rs = new_rs;
        let mut old = old;
        for (name, size) in plan {
            let target = if new_rs.as_ref().and_then(|r| r.metadata.name.as_ref()) == Some(&name) {
                new_rs.as_mut()
            } else {
                old.iter_mut().find(|r| r.metadata.name.as_ref() == Some(&name))
            };
            let Some(rs) = target else { continue };
            *rs = self.scale_rs(d, rs, size).await?;
        }
        Ok((new_rs, old))
    }

    async fn scale_rs(&self, d: &Deployment, rs: &ReplicaSet, size: i32) -> Result<ReplicaSet, crate::Error> {
        let from = rs_replicas(rs);
        let desired = replicas(d).to_string();
        let maxr = (replicas(d) + max_surge(d)).to_string();
        let ann = rs.metadata.annotations.clone().unwrap_or_default();
        if from == size && ann.get(DESIRED_REPLICAS) == Some(&desired) && ann.get(MAX_REPLICAS) == Some(&maxr) {
            return Ok(rs.clone());
        }
        let mut u = rs.clone();
        u.spec.replicas = Some(size);
        let a = u.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.insert(DESIRED_REPLICAS.into(), desired);
        a.insert(MAX_REPLICAS.into(), maxr);
        let api: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), rs.metadata.namespace.as_deref().unwrap_or_default());
        let written = api.replace(rs.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &u).await?;
        if from != size {
            let op = if size > from { "up" } else { "down" };
            self.recorder.normal(
                Self::d_ref(d),
                "ScalingReplicaSet",
                format!(
                    "Scaled {op} replica set {} from {from} to {size}",
                    rs.metadata.name.as_deref().unwrap_or_default()
                ),
            );
        }
        Ok(written)
    }

    async fn rollout_rolling(&self, d: &mut Deployment, rs_list: Vec<ReplicaSet>) -> Result<(), crate::Error> {
        let (new_rs, old) = self.sync_revision(d, rs_list, true).await?;
        let Some(mut new_rs) = new_rs else {
            return Ok(());
        };
        // Scale up the new ReplicaSet if we can.
        let all: Vec<ReplicaSet> = old.iter().cloned().chain(std::iter::once(new_rs.clone())).collect();
        let target =
            if rs_replicas(&new_rs) > replicas(d) { replicas(d) } else { new_rs_new_replicas(d, &all, &new_rs) };
        if target != rs_replicas(&new_rs) {
            new_rs = self.scale_rs(d, &new_rs, target).await?;
            return self.sync_status(d, Some(&new_rs), &old, true).await;
        }
        // Scale down old ReplicaSets if we can.
        let plan = plan_old_scale_down(d, &old, &new_rs);
        if !plan.is_empty() {
            let (new_rs, old) = self.apply_sizes(d, Some(new_rs), old, plan).await?;
            return self.sync_status(d, new_rs.as_ref(), &old, true).await;
        }
        let status = calculate_status(d, &all, Some(&new_rs));
        if deployment_complete(d, &status) {
            self.cleanup(d, &old).await?;
        }
        self.sync_status(d, Some(&new_rs), &old, true).await
    }

    async fn rollout_recreate(&self, d: &mut Deployment, rs_list: Vec<ReplicaSet>) -> Result<(), crate::Error> {
        let (new_rs, old) = self.sync_revision(d, rs_list.clone(), false).await?;
        let plan: Vec<(String, i32)> = old
            .iter()
            .filter(|r| rs_replicas(r) > 0)
            .map(|r| (r.metadata.name.clone().unwrap_or_default(), 0))
            .collect();
        if !plan.is_empty() {
            let (new_rs, old) = self.apply_sizes(d, new_rs, old, plan).await?;
            return self.sync_status(d, new_rs.as_ref(), &old, true).await;
        }
        // Wait until no pod of an old ReplicaSet is still running.
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let old_uids: Vec<String> = old.iter().filter_map(|r| r.metadata.uid.clone()).collect();
        let old_running = old.iter().any(|r| r.status.as_ref().is_some_and(|s| s.replicas > 0))
            || self.pods.list_ns(ns).iter().any(|p| {
                util::controller_ref(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                    && !util::is_pod_terminal(p)
            });
        if old_running {
            return self.sync_status(d, new_rs.as_ref(), &old, true).await;
        }
        let (new_rs, old) = if new_rs.is_none() { self.sync_revision(d, rs_list, true).await? } else { (new_rs, old) };
        let Some(mut new_rs) = new_rs else {
            return Ok(());
        };
        if rs_replicas(&new_rs) != replicas(d) {
            new_rs = self.scale_rs(d, &new_rs, replicas(d)).await?;
        }
        let all: Vec<ReplicaSet> = old.iter().cloned().chain(std::iter::once(new_rs.clone())).collect();
        if deployment_complete(d, &calculate_status(d, &all, Some(&new_rs))) {
            self.cleanup(d, &old).await?;
        }
        self.sync_status(d, Some(&new_rs), &old, true).await
    }

    /// cleanupDeployment: delete the oldest fully scaled-down ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), crate::Error> {
        let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .filter(|r| rs_replicas(r) == 0 && r.status.as_ref().is_none_or(|s| s.replicas == 0))
            .collect();
        if cleanable.len() <= limit {
            return Ok(());
        }
        cleanable.sort_by(|a, b| revision(a).cmp(&revision(b)).then_with(|| by_creation(a, b)));
        let n = cleanable.len() - limit;
        let api: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or_default());
        for rs in cleanable.into_iter().take(n) {
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid: rs.metadata.uid.clone(), resource_version: None }),
                ..Default::default()
            };
            match api.delete(rs.metadata.name.as_deref().unwrap_or_default(), &dp).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// syncRolloutStatus (with_progress) or syncDeploymentStatus.
    async fn sync_status(
        &self,
        d: &Deployment,
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
        with_progress: bool,
    ) -> Result<(), crate::Error> {
        let all: Vec<ReplicaSet> = old.iter().cloned().chain(new_rs.cloned()).collect();
        let mut s = calculate_status(d, &all, new_rs);
        if with_progress {
            if d.spec.progress_deadline_seconds.is_none() {
                remove_condition(&mut s, "Progressing");
            }
            let cur = d.status.as_ref().and_then(|st| get_condition(st, "Progressing")).cloned();
            let complete_already = s.replicas == s.updated_replicas
                && cur.as_ref().is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
            if d.spec.progress_deadline_seconds.is_some() && !complete_already {
                let rs_name = new_rs.and_then(|r| r.metadata.name.clone()).unwrap_or_default();
                if deployment_complete(d, &s) {
                    set_condition(
                        &mut s,
                        new_condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetAvailable",
                            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                        ),
                    );
                } else if deployment_progressing(d, &s) {
                    let msg = if new_rs.is_some() {
                        format!("ReplicaSet \"{rs_name}\" is progressing.")
                    } else {
                        format!("Deployment \"{}\" is progressing.", d.metadata.name.as_deref().unwrap_or_default())
                    };
                    let mut c = new_condition("Progressing", "True", "ReplicaSetUpdated", msg);
                    if let Some(cur) = &cur {
                        if cur.status.as_deref() == Some("True") {
                            c.last_transition_time = cur.last_transition_time.clone();
                        }
                        remove_condition(&mut s, "Progressing");
                    }
                    set_condition(&mut s, c);
                } else if deployment_timed_out(d, &s) {
                    set_condition(
                        &mut s,
                        new_condition(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                        ),
                    );
                }
            }
        }
        if d.status.as_ref() == Some(&s) {
            // Re-check the progress deadline later while a rollout is incomplete.
            if with_progress && !deployment_complete(d, &s) {
                if let Some(secs) = d.spec.progress_deadline_seconds {
                    self.queue.add_after(
                        key(
                            d.metadata.namespace.as_deref().unwrap_or_default(),
                            d.metadata.name.as_deref().unwrap_or_default(),
                        ),
                        Duration::from_secs(secs.max(1) as u64),
                    );
                }
            }
            return Ok(());
        }
        let mut u = d.clone();
        u.status = Some(s);
        self.write_status(&mut u).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    fn dep(replicas: i32, surge: IntOrString, unavail: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta { name: Some("hostnames".into()), generation: Some(2), ..Default::default() },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".to_string(), "hostnames".to_string())])),
                    ..Default::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavail),
                    }),
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".to_string(), "hostnames".to_string())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("img:1".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                progress_deadline_seconds: Some(600),
                ..Default::default()
            },
            status: None,
        }
    }

    fn rs(name: &str, replicas: i32, available: i32, created: i64) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: ReplicaSetSpec { replicas: Some(replicas), ..Default::default() },
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn safe_encode_and_fnv() {
        // FNV-1a reference vectors.
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9cf968);
        // Digits map to fixed letters of the alphabet: '0'=48 -> 48%27=21 -> '4'.
        assert_eq!(safe_encode_string("0123456789"), "456789bcdf");
        let d = dep(3, IntOrString::String("25%".into()), IntOrString::String("25%".into()));
        let h = compute_hash(&d.spec.template, None);
        assert!(h.len() <= 10 && h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
        assert_ne!(h, compute_hash(&d.spec.template, Some(1)));
        assert_eq!(h, compute_hash(&d.spec.template, None));
    }

    #[test]
    fn pod_template_hash_properties() {
        let t: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "hostnames", "tier": "web"}},
            "spec": {"containers": [{"name": "c", "image": "img:1", "args": ["-a", "-b"],
                      "ports": [{"containerPort": 9376, "protocol": "TCP"}]}]}
        }))
        .unwrap();
        // Pinned: the value must not drift between builds, restarts or library upgrades. The
        // expected values were computed outside Rust (FNV-32a + SafeEncodeString over this text).
        let mut printed = Vec::new();
        deep_hash_print(&serde_json::to_value(&t).unwrap(), &mut printed);
        assert_eq!(
            String::from_utf8(printed).unwrap(),
            r#"{metadata:{labels:{app:"hostnames" tier:"web"}} spec:{containers:[{args:["-a" "-b"] image:"img:1" name:"c" ports:[{containerPort:9376 protocol:"TCP"}]}]}}"#
        );
        let h = compute_hash(&t, None);
        assert_eq!(h, "6c556f7d88");
        assert_eq!(compute_hash(&t, Some(0)), "5d5fdddd8");
        // The same template written with other key orders hashes the same.
        let reordered: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"ports": [{"protocol": "TCP", "containerPort": 9376}],
                      "args": ["-a", "-b"], "image": "img:1", "name": "c"}]},
            "metadata": {"labels": {"tier": "web", "app": "hostnames"}}
        }))
        .unwrap();
        assert_eq!(compute_hash(&reordered, None), h);
        // Any change of the template changes it, including list order and empty vs absent.
        let mut changes: Vec<PodTemplateSpec> = Vec::new();
        let mut c = t.clone();
        c.spec.as_mut().unwrap().containers[0].image = Some("img:2".into());
        changes.push(c);
        let mut c = t.clone();
        c.spec.as_mut().unwrap().containers[0].args = Some(vec!["-b".into(), "-a".into()]);
        changes.push(c);
        let mut c = t.clone();
        c.spec.as_mut().unwrap().containers[0].command = Some(vec![]);
        changes.push(c);
        let mut c = t.clone();
        c.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert("x".into(), "".into());
        changes.push(c);
        let mut c = t.clone();
        c.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap()[0].container_port = 9377;
        changes.push(c);
        let mut seen = std::collections::HashSet::from([h.clone()]);
        for c in &changes {
            assert!(seen.insert(compute_hash(c, None)), "{c:?}");
        }
        // collisionCount moves it; the output uses SafeEncodeString's digits alphabet only.
        for n in 0..50 {
            let v = compute_hash(&t, Some(n));
            assert!(seen.insert(v.clone()), "collision count {n}");
            assert!(!v.is_empty() && v.len() <= 10);
            assert!(v.bytes().all(|b| b"456789bcdf".contains(&b)), "{v}");
        }
        let mut out = Vec::new();
        deep_hash_print(&serde_json::json!({"b": [1, null], "a": "x\"y"}), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{a:"x\"y" b:[1 <nil>]}"#);
    }

    #[test]
    fn fenceposts() {
        let d = dep(3, IntOrString::String("25%".into()), IntOrString::String("25%".into()));
        assert_eq!(resolve_fenceposts(&d), (1, 0));
        assert_eq!(max_unavailable(&d), 0);
        let d = dep(10, IntOrString::Int(0), IntOrString::Int(0));
        assert_eq!(resolve_fenceposts(&d), (0, 1));
        let d = dep(10, IntOrString::String("30%".into()), IntOrString::String("30%".into()));
        assert_eq!(resolve_fenceposts(&d), (3, 3));
    }

    #[test]
    fn rolling_update_steps() {
        // 3 replicas, surge 1, unavailable 0: new goes 0 -> 1, old stays until the new pod is available.
        let d = dep(3, IntOrString::Int(1), IntOrString::Int(0));
        let old = rs("old", 3, 3, 1);
        let new = rs("new", 0, 0, 2);
        assert_eq!(new_rs_new_replicas(&d, &[old.clone(), new.clone()], &new), 1);
        let new = rs("new", 1, 0, 2);
        assert_eq!(new_rs_new_replicas(&d, &[old.clone(), new.clone()], &new), 1, "at maxSurge");
        assert!(plan_old_scale_down(&d, std::slice::from_ref(&old), &new).is_empty(), "new pod not available yet");
        let new = rs("new", 1, 1, 2);
        assert_eq!(plan_old_scale_down(&d, std::slice::from_ref(&old), &new), vec![("old".to_string(), 2)]);
        // With maxUnavailable 1 and unhealthy old replicas: only one may go (4 - 3 available).
        let d = dep(4, IntOrString::Int(0), IntOrString::Int(1));
        let old = rs("old", 4, 2, 1);
        let new = rs("new", 0, 0, 2);
        assert_eq!(plan_old_scale_down(&d, &[old], &new), vec![("old".to_string(), 3)]);
        // Healthy old replicas with maxUnavailable 1: one goes.
        let old = rs("old", 4, 4, 1);
        assert_eq!(plan_old_scale_down(&d, &[old], &new), vec![("old".to_string(), 3)]);
    }

    #[test]
    fn proportional_scale() {
        let mut d = dep(10, IntOrString::Int(3), IntOrString::Int(2));
        d.status = Some(DeploymentStatus { replicas: Some(13), ..Default::default() });
        let mut old = rs("old", 8, 8, 1);
        let mut new = rs("new", 5, 5, 2);
        for r in [&mut old, &mut new] {
            r.metadata.annotations = Some(BTreeMap::from([
                (MAX_REPLICAS.to_string(), "13".to_string()),
                (DESIRED_REPLICAS.to_string(), "10".to_string()),
            ]));
        }
        // Scale 10 -> 20: allowed 23, add 10 proportionally.
        d.spec.replicas = Some(20);
        let plan = plan_scale(&d, Some(&new), &[old]);
        let total: i32 = plan.iter().map(|p| p.1).sum();
        assert_eq!(total, 23);
        // Single active RS takes the whole count.
        let only = rs("only", 3, 3, 1);
        assert_eq!(plan_scale(&d, Some(&only), &[]), vec![("only".to_string(), 20)]);
    }

    #[test]
    fn status_conditions() {
        let mut d = dep(3, IntOrString::Int(1), IntOrString::Int(0));
        let new = rs("new", 3, 3, 2);
        let s = calculate_status(&d, std::slice::from_ref(&new), Some(&new));
        assert_eq!(
            (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas, s.unavailable_replicas),
            (Some(3), Some(3), Some(3), Some(3), Some(0))
        );
        let a = get_condition(&s, "Available").unwrap();
        assert_eq!((a.status.as_deref(), a.reason.as_deref()), (Some("True"), Some("MinimumReplicasAvailable")));
        assert!(deployment_complete(&d, &s));
        d.spec.replicas = Some(5);
        let s = calculate_status(&d, std::slice::from_ref(&new), Some(&new));
        assert_eq!(get_condition(&s, "Available").unwrap().reason.as_deref(), Some("MinimumReplicasUnavailable"));
    }
}
