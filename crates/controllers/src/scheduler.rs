//! Scheduler: binds pods with no `spec.nodeName` (schedulerName `default-scheduler`) to a node through
//! the `pods/binding` subresource. Filters: Ready, schedulable, nodeSelector, required node affinity,
//! NoSchedule/NoExecute taints; score: fewest pods. With no fit the pod gets PodScheduled=False
//! (reason Unschedulable) with upstream's "0/N nodes are available: ..." message and a
//! FailedScheduling event; it is retried when nodes change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Node, NodeSelectorRequirement, ObjectReference, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::events::Recorder;
use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;
use crate::util::{self, key, split_key};

pub const SCHEDULER_NAME: &str = "default-scheduler";

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tolerates(tols: &[Toleration], t: &Taint) -> bool {
    tols.iter().any(|tol| {
        let effect_ok = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == t.effect);
        let key_ok = tol.key.as_deref().is_none_or(|k| k.is_empty()) && tol.operator.as_deref() == Some("Exists")
            || tol.key.as_deref() == Some(t.key.as_str());
        let value_ok = match tol.operator.as_deref() {
            Some("Exists") => true,
            _ => tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or(""),
        };
        effect_ok && key_ok && value_ok
    })
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let v = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(w)) =
                (v.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|w| w.parse::<i64>().ok()))
            else {
                return false;
            };
            if r.operator == "Gt" {
                v > w
            } else {
                v < w
            }
        }
        _ => false,
    }
}

/// Why a node does not fit a pod (upstream's per-plugin reason strings), or None when it fits.
pub fn node_misfit(pod: &Pod, node: &Node) -> Option<String> {
    let spec = pod.spec.as_ref();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        let tolerated = spec.and_then(|s| s.tolerations.as_deref()).is_some_and(|t| {
            tolerates(
                t,
                &Taint {
                    key: "node.kubernetes.io/unschedulable".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                },
            )
        });
        if !tolerated {
            return Some("node(s) were unschedulable".into());
        }
    }
    // Plugin order of the default profile: NodeUnschedulable, TaintToleration, NodeAffinity.
    let tols: &[Toleration] = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    let mut taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    // Not-ready nodes carry the not-ready taint upstream (node lifecycle controller).
    if !node_ready(node) && !taints.iter().any(|t| t.key == "node.kubernetes.io/not-ready") {
        taints.push(Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    for t in taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute") {
        if !tolerates(tols, t) {
            return Some(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or("")));
        }
    }
    let sel_ok =
        spec.and_then(|s| s.node_selector.as_ref()).is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let aff_ok = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .is_none_or(|ns| {
            ns.node_selector_terms.iter().any(|t| {
                let exprs_ok = t.match_expressions.iter().flatten().all(|r| requirement_matches(r, &labels));
                let name = node.metadata.name.clone().unwrap_or_default();
                let fields = BTreeMap::from([("metadata.name".to_string(), name)]);
                let fields_ok = t.match_fields.iter().flatten().all(|r| requirement_matches(r, &fields));
                (t.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
                    || t.match_fields.as_ref().is_some_and(|e| !e.is_empty()))
                    && exprs_ok
                    && fields_ok
            })
        });
    if !sel_ok || !aff_ok {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    None
}

/// Picks the fitting node with the fewest pods (ties by name), or returns upstream's FitError message.
pub fn choose_node(pod: &Pod, nodes: &[Arc<Node>], pod_counts: &HashMap<String, usize>) -> Result<String, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(usize, String)> = None;
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        match node_misfit(pod, n) {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None => {
                let c = pod_counts.get(&name).copied().unwrap_or(0);
                if best.as_ref().is_none_or(|(bc, bn)| c < *bc || (c == *bc && name < *bn)) {
                    best = Some((c, name));
                }
            }
        }
    }
    match best {
        Some((_, n)) => Ok(n),
        None => {
            let total = nodes.len();
            let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            Err(format!(
                "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
                parts.join(", ")
            ))
        }
    }
}

fn wants_scheduling(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()).is_none_or(|n| n.is_empty())
        && spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME)
        && p.metadata.deletion_timestamp.is_none()
        && !util::is_pod_terminal(p)
}

pub struct Scheduler {
    client: Client,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
    pub queue: Arc<WorkQueue>,
    /// Bindings made but not yet seen in the pod cache: pod key -> node.
    assumed: Mutex<HashMap<String, String>>,
    /// Node of every bound, non-terminal pod (pod key -> node) and the per-node counts derived from it.
    bound: Mutex<(HashMap<String, String>, HashMap<String, usize>)>,
    /// Pods that did not fit, retried on node changes.
    unschedulable: Mutex<HashMap<String, ()>>,
    recorder: Recorder,
}

impl Scheduler {
    pub fn new(client: Client, pods: Arc<Cache<Pod>>, nodes: Arc<Cache<Node>>) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), SCHEDULER_NAME);
        Arc::new(Scheduler {
            client,
            pods,
            nodes,
            queue: WorkQueue::new(),
            assumed: Mutex::new(HashMap::new()),
            bound: Mutex::new((HashMap::new(), HashMap::new())),
            unschedulable: Mutex::new(HashMap::new()),
            recorder,
        })
    }

    pub fn attach(self: &Arc<Self>, pods: &Informer<Pod>, nodes: &Informer<Node>) {
        let me = self.clone();
        pods.add_handler(move |old, new| {
            let Some(any) = new.or(old) else { return };
            let k = key(
                any.metadata.namespace.as_deref().unwrap_or_default(),
                any.metadata.name.as_deref().unwrap_or_default(),
            );
            {
                let node = new
                    .filter(|p| !util::is_pod_terminal(p))
                    .and_then(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                    .filter(|n| !n.is_empty());
                let mut b = me.bound.lock().unwrap_or_else(|e| e.into_inner());
                let (by_pod, counts) = &mut *b;
                let prev = match &node {
                    Some(n) => by_pod.insert(k.clone(), n.clone()),
                    None => by_pod.remove(&k),
                };
                if prev != node {
                    if let Some(p) = prev {
                        if let Some(c) = counts.get_mut(&p) {
                            *c = c.saturating_sub(1);
                        }
                    }
                    if let Some(n) = node {
                        *counts.entry(n).or_default() += 1;
                    }
                }
            }
            let Some(p) = new else {
                me.assumed.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                return;
            };
            if wants_scheduling(p) {
                me.queue.add(k);
            } else {
                me.assumed.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
            }
        });
        let me = self.clone();
        nodes.add_handler(move |_old, _new| {
            let keys: Vec<String> =
                me.unschedulable.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(k, _)| k).collect();
            for k in keys {
                me.queue.add(k);
            }
        });
    }

    fn pod_counts(&self) -> HashMap<String, usize> {
        let mut m: HashMap<String, usize> = self.bound.lock().unwrap_or_else(|e| e.into_inner()).1.clone();
        for n in self.assumed.lock().unwrap_or_else(|e| e.into_inner()).values() {
            *m.entry(n.clone()).or_default() += 1;
        }
        m
    }

    pub async fn sync(self: Arc<Self>, k: String) -> Result<(), crate::Error> {
        let (ns, name) = split_key(&k);
        let Some(pod) = self.pods.get(ns, name) else {
            return Ok(());
        };
        if !wants_scheduling(&pod) || self.assumed.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&k) {
            return Ok(());
        }
        let nodes = self.nodes.list();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match choose_node(&pod, &nodes, &self.pod_counts()) {
            Ok(node) => {
                let binding = Binding {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(ns.into()),
                        uid: pod.metadata.uid.clone(),
                        ..Default::default()
                    },
                    target: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Node".into()),
                        name: Some(node.clone()),
                        ..Default::default()
                    },
                };
                self.assumed.lock().unwrap_or_else(|e| e.into_inner()).insert(k.clone(), node.clone());
                let r: Result<serde_json::Value, kube::Error> =
                    api.create_subresource("binding", name, &PostParams::default(), &binding).await;
                match r {
                    Ok(_) => {
                        self.recorder.normal(
                            util::object_ref(pod.as_ref()),
                            "Scheduled",
                            format!("Successfully assigned {ns}/{name} to {node}"),
                        );
                        // Forget the assumption if the informer never reports it.
                        let me = self.clone();
                        let kk = k.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            me.assumed.lock().unwrap_or_else(|e| e.into_inner()).remove(&kk);
                        });
                        Ok(())
                    }
                    Err(e) => {
                        self.assumed.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                        if util::is_not_found(&e) {
                            return Ok(());
                        }
                        if util::is_conflict(&e) {
                            return Ok(()); // already bound by someone else
                        }
                        self.recorder.warning(
                            util::object_ref(pod.as_ref()),
                            "FailedScheduling",
                            format!("Binding rejected: {e}"),
                        );
                        Err(e.into())
                    }
                }
            }
            Err(msg) => {
                self.unschedulable.lock().unwrap_or_else(|e| e.into_inner()).insert(k.clone(), ());
                let cur = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
                let same = cur.is_some_and(|c| {
                    c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                        && c.message.as_deref() == Some(msg.as_str())
                });
                if !same {
                    self.recorder.warning(util::object_ref(pod.as_ref()), "FailedScheduling", msg.clone());
                    let patch = serde_json::json!({"status": {"conditions": [{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
                        "lastProbeTime": null, "lastTransitionTime": util::now()
                    }]}});
                    // An unbound pod has no agent writing its conditions: a merge patch of the whole
                    // list (other conditions kept) with resourceVersion as precondition.
                    let pp = PatchParams::default();
                    {
                        let mut conds: Vec<serde_json::Value> = pod
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .map(|c| {
                                c.iter()
                                    .filter(|c| c.type_ != "PodScheduled")
                                    .filter_map(|c| serde_json::to_value(c).ok())
                                    .collect()
                            })
                            .unwrap_or_default();
                        conds.push(patch["status"]["conditions"][0].clone());
                        let mp = serde_json::json!({"metadata": {"resourceVersion": pod.metadata.resource_version}, "status": {"conditions": conds}});
                        match api.patch_status(name, &pp, &Patch::Merge(&mp)).await {
                            Ok(_) => {}
                            Err(e) if util::is_not_found(&e) => {}
                            Err(e) if util::is_conflict(&e) => {
                                self.queue.add_after(k, Duration::from_millis(50));
                                return Ok(());
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                // Periodic retry as well (upstream flushes unschedulable pods every few minutes).
                self.queue.add_after(k, Duration::from_secs(60));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec};

    fn node(name: &str, ready: bool, labels: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn spreads_and_filters() {
        let pod = Pod { spec: Some(PodSpec::default()), ..Default::default() };
        let nodes = vec![node("a", true, &[]), node("b", true, &[]), node("c", false, &[])];
        let counts = HashMap::from([("a".to_string(), 2usize), ("b".to_string(), 1)]);
        assert_eq!(choose_node(&pod, &nodes, &counts), Ok("b".into()));
        let mut sel = pod.clone();
        sel.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())]));
        let err = choose_node(&sel, &nodes, &counts).unwrap_err();
        assert_eq!(
            err,
            "0/3 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        let nodes2 = vec![node("a", true, &[("disk", "ssd")])];
        assert_eq!(choose_node(&sel, &nodes2, &counts), Ok("a".into()));
        let mut cordoned = (*node("x", true, &[])).clone();
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        assert_eq!(
            choose_node(&pod, &[Arc::new(cordoned)], &counts).unwrap_err().split('.').next().unwrap(),
            "0/1 nodes are available: 1 node(s) were unschedulable"
        );
        assert_eq!(choose_node(&pod, &[], &counts), Err("no nodes available to schedule pods".into()));
    }
}
