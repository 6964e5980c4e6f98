//! ReplicaSet controller: keeps `spec.replicas` pods from the template (generateName `<rs>-`),
//! adopts matching orphans and releases pods that stop matching, scales down in upstream's order, and
//! reports status. Expectations keep it from creating or deleting twice while its own writes are in
//! flight and not yet seen by the informer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use crate::claim;
use crate::events::Recorder;
use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;
use crate::util::{self, key, split_key};

const BURST_REPLICAS: i32 = 500;
const EXPECTATION_TTL: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Exp {
    add: i64,
    del: i64,
    del_names: HashSet<String>,
    at: Instant,
}

/// client-go ControllerExpectations (creations counted, deletions tracked by pod name).
#[derive(Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Exp>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Exp>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.add <= 0 && e.del <= 0) || e.at.elapsed() > EXPECTATION_TTL,
        }
    }
    pub fn expect_creations(&self, key: &str, n: i64) {
        self.lock().insert(key.into(), Exp { add: n, del: 0, del_names: HashSet::new(), at: Instant::now() });
    }
    pub fn expect_deletions(&self, key: &str, names: &[String]) {
        self.lock().insert(
            key.into(),
            Exp { add: 0, del: names.len() as i64, del_names: names.iter().cloned().collect(), at: Instant::now() },
        );
    }
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.add -= 1;
        }
    }
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            if e.del_names.remove(pod) {
                e.del -= 1;
            }
        }
    }
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }
}

fn phase_ordinal(p: &Pod) -> u8 {
    match util::pod_phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn max_restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn deletion_cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// logarithmicRankDiff: compare ages in powers of two (of nanoseconds) so pods of similar age tie.
fn log_rank(t: jiff::Timestamp, now: jiff::Timestamp) -> i64 {
    let d = now.as_nanosecond() - t.as_nanosecond();
    if d > 0 {
        (d as f64).log2() as i64
    } else {
        -1
    }
}

/// Compare two timestamps so the more recent (or missing) one sorts first, with the logarithmic
/// buckets of LogarithmicScaleDown; ties broken by UID.
fn newer_first(
    a: Option<jiff::Timestamp>,
    b: Option<jiff::Timestamp>,
    ua: &str,
    ub: &str,
    now: jiff::Timestamp,
) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering::*;
    if a == b {
        return None;
    }
    match (a, b) {
        (None, _) => Some(Less),
        (_, None) => Some(Greater),
        (Some(x), Some(y)) => {
            let d = log_rank(x, now) - log_rank(y, now);
            if d == 0 {
                Some(ua.cmp(ub))
            } else {
                Some(d.cmp(&0))
            }
        }
    }
}

/// Upstream's ActivePodsWithRanks ordering: the first pods are the first to delete. `rank` counts
/// related pods on the same node (doubled-up pods go first).
pub fn rank_pods_for_deletion(pods: &[Arc<Pod>], related: &[Arc<Pod>], now: jiff::Timestamp) -> Vec<Arc<Pod>> {
    use std::cmp::Ordering::*;
    let mut per_node: HashMap<&str, i32> = HashMap::new();
    for p in related {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty()) {
            if util::is_pod_active(p) {
                *per_node.entry(n).or_default() += 1;
            }
        }
    }
    let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let rank = |p: &Pod| per_node.get(node(p).as_str()).copied().unwrap_or(0);
    let mut v: Vec<Arc<Pod>> = pods.to_vec();
    v.sort_by(|a, b| {
        let (na, nb) = (node(a), node(b));
        if na != nb && (na.is_empty() || nb.is_empty()) {
            return if na.is_empty() { Less } else { Greater };
        }
        let (pa, pb) = (phase_ordinal(a), phase_ordinal(b));
        if pa != pb {
            return pa.cmp(&pb);
        }
        let (ra, rb) = (util::is_pod_ready(a), util::is_pod_ready(b));
        if ra != rb {
            return if !ra { Less } else { Greater };
        }
        let (ca, cb) = (deletion_cost(a), deletion_cost(b));
        if ca != cb {
            return ca.cmp(&cb);
        }
        let (ka, kb) = (rank(a), rank(b));
        if ka != kb {
            return kb.cmp(&ka);
        }
        let ua = a.metadata.uid.as_deref().unwrap_or("");
        let ub = b.metadata.uid.as_deref().unwrap_or("");
        if ra && rb {
            if let Some(o) = newer_first(util::pod_ready_time(a), util::pod_ready_time(b), ua, ub, now) {
                return o;
            }
        }
        let (xa, xb) = (max_restarts(a), max_restarts(b));
        if xa != xb {
            return xb.cmp(&xa);
        }
        let ct = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        newer_first(ct(a), ct(b), ua, ub, now).unwrap_or(Equal)
    });
    v
}

/// Status computed from the pods a ReplicaSet owns.
pub fn calculate_status(rs: &ReplicaSet, pods: &[Arc<Pod>], now: jiff::Timestamp) -> ReplicaSetStatus {
    let spec = Some(&rs.spec);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let mut st = ReplicaSetStatus {
        replicas: pods.len() as i32,
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let mut fully = 0;
    let mut ready = 0;
    let mut avail = 0;
    for p in pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            fully += 1;
        }
        if util::is_pod_ready(p) {
            ready += 1;
            if util::is_pod_available(p, min_ready, now) {
                avail += 1;
            }
        }
    }
    st.fully_labeled_replicas = Some(fully);
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(avail);
    st
}

pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let tpl = Some(&rs.spec).and_then(|s| s.template.clone()).unwrap_or_default();
    let tm = tpl.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or("pod"))),
            namespace: rs.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![util::controller_owner_ref(rs)]),
            ..Default::default()
        },
        spec: tpl.spec,
        status: None,
    }
}

/// Pods by controller uid, and pods without a controller by namespace, so a sync only looks at the
/// pods it owns or could adopt.
#[derive(Default)]
struct PodIndex {
    by_owner: HashMap<String, HashSet<String>>,
    orphans: HashMap<String, HashSet<String>>,
}

impl PodIndex {
    fn slot(p: &Pod) -> (bool, String) {
        match util::controller_ref(&p.metadata) {
            Some(r) => (true, r.uid.clone()),
            None => (false, p.metadata.namespace.clone().unwrap_or_default()),
        }
    }
    fn update(&mut self, old: Option<&Pod>, new: Option<&Pod>) {
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        if let Some(o) = old {
            let (owned, k) = Self::slot(o);
            let m = if owned { &mut self.by_owner } else { &mut self.orphans };
            if let Some(s) = m.get_mut(&k) {
                s.remove(&name(o));
                if s.is_empty() {
                    m.remove(&k);
                }
            }
        }
        if let Some(n) = new {
            let (owned, k) = Self::slot(n);
            let m = if owned { &mut self.by_owner } else { &mut self.orphans };
            m.entry(k).or_default().insert(name(n));
        }
    }
}

pub struct ReplicaSetController {
    index: std::sync::RwLock<PodIndex>,
    client: Client,
    rs: Arc<Cache<ReplicaSet>>,
    pods: Arc<Cache<Pod>>,
    pub queue: Arc<WorkQueue>,
    exp: Expectations,
    recorder: Recorder,
}

fn rs_selector_matches(rs: &ReplicaSet, pod: &Pod) -> bool {
    match Some(&rs.spec).map(|s| &s.selector) {
        Some(sel) if !util::label_selector_is_empty(sel) => {
            util::label_selector_matches(sel, pod.metadata.labels.as_ref())
        }
        _ => false,
    }
}

impl ReplicaSetController {
    pub fn new(client: Client, rs: Arc<Cache<ReplicaSet>>, pods: Arc<Cache<Pod>>) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "replicaset-controller");
        Arc::new(ReplicaSetController {
            index: Default::default(),
            client,
            rs,
            pods,
            queue: WorkQueue::new(),
            exp: Expectations::default(),
            recorder,
        })
    }

    fn rs_key_for_ref(&self, pod: &Pod) -> Option<String> {
        let r = util::controller_ref(&pod.metadata)?;
        if r.kind != "ReplicaSet" {
            return None;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let rs = self.rs.get(ns, &r.name)?;
        (rs.metadata.uid.as_deref() == Some(r.uid.as_str())).then(|| key(ns, &r.name))
    }

    fn enqueue_matching_orphan(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        for rs in self.rs.list_ns(ns) {
            if rs_selector_matches(&rs, pod) {
                self.queue.add(key(ns, rs.metadata.name.as_deref().unwrap_or_default()));
            }
        }
    }

    pub fn attach(self: &Arc<Self>, rs: &Informer<ReplicaSet>, pods: &Informer<Pod>) {
        let me = self.clone();
        rs.add_handler(move |old, new| {
            if let Some(o) = new.or(old) {
                let k = key(
                    o.metadata.namespace.as_deref().unwrap_or_default(),
                    o.metadata.name.as_deref().unwrap_or_default(),
                );
                if new.is_none() {
                    me.exp.delete(&k);
                }
                me.queue.add(k);
            }
        });
        let me = self.clone();
        pods.add_handler(move |old, new| me.on_pod(old.map(|a| a.as_ref()), new.map(|a| a.as_ref())));
    }

    fn on_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        self.index.write().unwrap_or_else(|e| e.into_inner()).update(old, new);
        let name = new.or(old).and_then(|p| p.metadata.name.clone()).unwrap_or_default();
        match (old, new) {
            (None, Some(p)) => match self.rs_key_for_ref(p) {
                Some(k) => {
                    if p.metadata.deletion_timestamp.is_some() {
                        self.exp.deletion_observed(&k, &name);
                    } else {
                        self.exp.creation_observed(&k);
                    }
                    self.queue.add(k);
                }
                None if util::controller_ref(&p.metadata).is_none() => self.enqueue_matching_orphan(p),
                None => {}
            },
            (Some(o), Some(n)) => {
                let ok = self.rs_key_for_ref(o);
                let nk = self.rs_key_for_ref(n);
                if n.metadata.deletion_timestamp.is_some() && o.metadata.deletion_timestamp.is_none() {
                    if let Some(k) = &nk {
                        self.exp.deletion_observed(k, &name);
                    }
                }
                if let Some(k) = ok.as_ref().filter(|k| Some(*k) != nk.as_ref()) {
                    self.queue.add(k.clone());
                }
                match nk {
                    Some(k) => {
                        // A pod that just became ready becomes available after minReadySeconds.
                        if !util::is_pod_ready(o) && util::is_pod_ready(n) {
                            let (ns, rsn) = split_key(&k);
                            let mrs = self
                                .rs
                                .get(ns, rsn)
                                .and_then(|r| Some(&r.spec).and_then(|s| s.min_ready_seconds))
                                .unwrap_or(0);
                            if mrs > 0 {
                                self.queue.add_after(k.clone(), Duration::from_secs(mrs as u64 + 1));
                            }
                        }
                        self.queue.add(k);
                    }
                    None => {
                        if util::controller_ref(&n.metadata).is_none()
                            && (o.metadata.labels != n.metadata.labels || util::controller_ref(&o.metadata).is_some())
                        {
                            self.enqueue_matching_orphan(n);
                        }
                    }
                }
            }
            (Some(p), None) => {
                if let Some(k) = self.rs_key_for_ref(p) {
                    self.exp.deletion_observed(&k, &name);
                    self.queue.add(k);
                }
            }
            (None, None) => {}
        }
    }

    pub async fn sync(self: Arc<Self>, k: String) -> Result<(), crate::Error> {
        let (ns, name) = split_key(&k);
        let Some(rs) = self.rs.get(ns, name) else {
            self.exp.delete(&k);
            return Ok(());
        };
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        // Owned pods and orphans (adoption candidates) only.
        let all: Vec<Arc<Pod>> = {
            let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
            idx.by_owner
                .get(&uid)
                .into_iter()
                .flatten()
                .chain(idx.orphans.get(ns).into_iter().flatten())
                .filter_map(|n| self.pods.get(ns, n))
                .collect()
        };
        let satisfied = self.exp.satisfied(&k);
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        for p in all.iter().filter(|p| util::is_pod_active(p)) {
            let owner_ref = || util::controller_owner_ref(rs.as_ref());
            let matches = rs_selector_matches(&rs, p);
            match claim::decide(&uid, deleting, &p.metadata, matches) {
                claim::Claim::Keep => owned.push(p.clone()),
                claim::Claim::Ignore => {}
                _ => {
                    if let Some(adopted) =
                        claim::claim(&pod_api, &uid, deleting, owner_ref, p.as_ref(), matches).await?
                    {
                        owned.push(Arc::new(adopted));
                    }
                }
            }
        }
        let mut manage_err = None;
        if satisfied && rs.metadata.deletion_timestamp.is_none() {
            if let Err(e) = self.manage_replicas(&k, &rs, &owned).await {
                manage_err = Some(e);
            }
        }
        let now = jiff::Timestamp::now();
        let status = calculate_status(&rs, &owned, now);
        if rs.status.as_ref() != Some(&status) {
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
            let mut updated = (*rs).clone();
            updated.status = Some(status.clone());
            match api.replace_status(name, &PostParams::default(), &updated).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let min_ready = Some(&rs.spec).and_then(|s| s.min_ready_seconds).unwrap_or(0);
        if min_ready > 0 && status.ready_replicas != status.available_replicas {
            self.queue.add_after(k.clone(), Duration::from_secs(min_ready as u64));
        }
        match manage_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn manage_replicas(&self, k: &str, rs: &Arc<ReplicaSet>, owned: &[Arc<Pod>]) -> Result<(), crate::Error> {
        let (ns, _) = split_key(k);
        let want = Some(&rs.spec).and_then(|s| s.replicas).unwrap_or(1);
        let diff = owned.len() as i32 - want;
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let rs_ref = util::object_ref(rs.as_ref());
        if diff < 0 {
            let total = (-diff).min(BURST_REPLICAS);
            self.exp.expect_creations(k, total as i64);
            let template = pod_from_template(rs);
            let mut remaining = total;
            let mut batch = 1;
            let mut first_err = None;
            let pp = PostParams::default();
            while remaining > 0 {
                let n = batch.min(remaining);
                let results = futures::future::join_all((0..n).map(|_| pod_api.create(&pp, &template))).await;
                let mut failed = 0;
                for r in results {
                    match r {
                        Ok(p) => self.recorder.normal(
                            rs_ref.clone(),
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                        ),
                        Err(e) => {
                            failed += 1;
                            self.exp.creation_observed(k);
                            self.recorder.warning(rs_ref.clone(), "FailedCreate", format!("Error creating: {e}"));
                            first_err.get_or_insert(e);
                        }
                    }
                }
                remaining -= n;
                if failed > 0 {
                    // Skip the rest of the slow-start batches; account them as observed.
                    for _ in 0..remaining {
                        self.exp.creation_observed(k);
                    }
                    break;
                }
                batch *= 2;
            }
            if let Some(e) = first_err {
                return Err(e.into());
            }
        } else if diff > 0 {
            let n = diff.min(BURST_REPLICAS) as usize;
            let related = self.related_pods(rs);
            let ranked = rank_pods_for_deletion(owned, &related, jiff::Timestamp::now());
            let victims: Vec<Arc<Pod>> = ranked.into_iter().take(n).collect();
            let names: Vec<String> = victims.iter().filter_map(|p| p.metadata.name.clone()).collect();
            self.exp.expect_deletions(k, &names);
            let results = futures::future::join_all(victims.iter().map(|p| {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }),
                    ..Default::default()
                };
                let api = pod_api.clone();
                async move { api.delete(p.metadata.name.as_deref().unwrap_or_default(), &dp).await }
            }))
            .await;
            let mut first_err = None;
            for (name, r) in names.iter().zip(results) {
                match r {
                    Ok(_) => self.recorder.normal(rs_ref.clone(), "SuccessfulDelete", format!("Deleted pod: {name}")),
                    Err(e) if util::is_not_found(&e) => self.exp.deletion_observed(k, name),
                    Err(e) => {
                        self.exp.deletion_observed(k, name);
                        self.recorder.warning(rs_ref.clone(), "FailedDelete", format!("Error deleting: {e}"));
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Pods of this ReplicaSet and of its siblings (same controlling owner), for the node rank.
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let mut uids: HashSet<String> = rs.metadata.uid.iter().cloned().collect();
        if let Some(owner) = util::controller_ref(&rs.metadata) {
            for sib in self.rs.list_ns(ns) {
                if util::controller_ref(&sib.metadata).is_some_and(|o| o.uid == owner.uid) {
                    uids.extend(sib.metadata.uid.clone());
                }
            }
        }
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        uids.iter()
            .flat_map(|u| idx.by_owner.get(u).into_iter().flatten())
            .filter_map(|n| self.pods.get(ns, n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn p(name: &str, node: &str, phase: &str, ready: Option<i64>, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: (!node.is_empty()).then(|| node.to_string()), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready.is_some() { "True" } else { "False" }.into(),
                    last_transition_time: ready.map(|s| Time(jiff::Timestamp::from_second(s).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn scale_down_order() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let pods = vec![
            p("running-ready-old", "n2", "Running", Some(1000), 900),
            p("unscheduled", "", "Pending", None, 999_000),
            p("pending", "n1", "Pending", None, 999_000),
            p("running-notready", "n1", "Running", None, 1000),
            p("running-ready-new", "n2", "Running", Some(999_990), 999_980),
        ];
        let order: Vec<String> =
            rank_pods_for_deletion(&pods, &pods, now).iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(order, vec!["unscheduled", "pending", "running-notready", "running-ready-new", "running-ready-old"]);
    }

    #[test]
    fn doubled_up_first() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let a = p("a", "n1", "Running", Some(1000), 900);
        let b = p("b", "n1", "Running", Some(1000), 900);
        let c = p("c", "n2", "Running", Some(1000), 900);
        let order: Vec<String> = rank_pods_for_deletion(&[c.clone(), a.clone(), b.clone()], &[a, b, c], now)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(order[2], "c");
    }

    #[test]
    fn expectations() {
        let e = Expectations::default();
        assert!(e.satisfied("a"));
        e.expect_creations("a", 2);
        assert!(!e.satisfied("a"));
        e.creation_observed("a");
        assert!(!e.satisfied("a"));
        e.creation_observed("a");
        assert!(e.satisfied("a"));
        e.expect_deletions("a", &["x".into()]);
        e.deletion_observed("a", "y");
        assert!(!e.satisfied("a"));
        e.deletion_observed("a", "x");
        assert!(e.satisfied("a"));
    }
}
