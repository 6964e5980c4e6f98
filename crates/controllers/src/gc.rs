//! Garbage collector (ownerReferences).
//!
//! GC keeps a uid graph of the namespaced objects we serve. An object whose owners are all gone is
//! deleted (with the propagation its own finalizers ask for); dangling references next to live owners
//! are removed. An owner being deleted with `foregroundDeletion` waits until no dependent with
//! `blockOwnerDeletion` is left, then loses the finalizer; an owner with the `orphan` finalizer has
//! its references removed from all dependents, then loses the finalizer. Owner absence is confirmed
//! with a live GET (uid compared), so an incomplete cache never deletes anything by mistake.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::{Api, Client};

use crate::informer::Informer;
use crate::queue::WorkQueue;

#[derive(Clone, Copy)]
pub struct KindInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Watched by the GC (dependents can be of this kind).
    pub gc_watch: bool,
    /// Emptied by the namespace controller.
    pub ns_content: bool,
}

const fn k(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    gc_watch: bool,
    ns_content: bool,
) -> KindInfo {
    KindInfo { group, version, kind, plural, namespaced, gc_watch, ns_content }
}

pub const KINDS: &[KindInfo] = &[
    k("", "v1", "Pod", "pods", true, true, true),
    k("", "v1", "Service", "services", true, true, true),
    k("", "v1", "Endpoints", "endpoints", true, true, true),
    k("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, true, true),
    k("", "v1", "ConfigMap", "configmaps", true, true, true),
    k("", "v1", "Secret", "secrets", true, true, true),
    k("apps", "v1", "Deployment", "deployments", true, true, true),
    k("apps", "v1", "ReplicaSet", "replicasets", true, true, true),
    k("coordination.k8s.io", "v1", "Lease", "leases", true, true, true),
    k("", "v1", "Event", "events", true, false, true),
    k("", "v1", "Node", "nodes", false, false, false),
    k("", "v1", "Namespace", "namespaces", false, false, false),
];

impl KindInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(self.group, self.version, self.kind), self.plural)
    }
    pub fn api(&self, client: &Client, ns: &str) -> Api<DynamicObject> {
        if self.namespaced {
            Api::namespaced_with(client.clone(), ns, &self.resource())
        } else {
            Api::all_with(client.clone(), &self.resource())
        }
    }
}

fn kind_of(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind && k.api_version() == api_version)
}

#[derive(Clone, Debug)]
struct Node {
    kind: usize,
    ns: String,
    name: String,
    rv: Option<String>,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

impl Node {
    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

pub struct GarbageCollector {
    client: Client,
    graph: RwLock<Graph>,
    pub delete_queue: Arc<WorkQueue>,
    pub orphan_queue: Arc<WorkQueue>,
}

enum OwnerState {
    Solid,
    Dangling,
    Waiting,
}

impl GarbageCollector {
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(GarbageCollector {
            client,
            graph: RwLock::new(Graph::default()),
            delete_queue: WorkQueue::new(),
            orphan_queue: WorkQueue::new(),
        })
    }

    /// One informer per watched kind, with handlers attached.
    pub fn informers(self: &Arc<Self>) -> Vec<Arc<Informer<DynamicObject>>> {
        KINDS
            .iter()
            .enumerate()
            .filter(|(_, k)| k.gc_watch)
            .map(|(i, k)| {
                let inf = Informer::new(
                    Api::<DynamicObject>::all_with(self.client.clone(), &k.resource()),
                    format!("gc-{}", k.plural),
                );
                // The graph is built from metadata alone; keep nothing else of each object.
                inf.set_transform(|o: &mut DynamicObject| {
                    o.data = serde_json::Value::Null;
                    o.metadata.managed_fields = None;
                    o.metadata.labels = None;
                    o.metadata.annotations = None;
                });
                let me = self.clone();
                inf.add_handler(move |old, new| me.on_event(i, old.map(|a| a.as_ref()), new.map(|a| a.as_ref())));
                inf
            })
            .collect()
    }

    fn on_event(&self, kind: usize, old: Option<&DynamicObject>, new: Option<&DynamicObject>) {
        let mut g = self.graph.write().unwrap_or_else(|e| e.into_inner());
        match new {
            Some(n) => {
                let Some(uid) = n.metadata.uid.clone() else {
                    return;
                };
                let owners = n.metadata.owner_references.clone().unwrap_or_default();
                let node = Node {
                    kind,
                    ns: n.metadata.namespace.clone().unwrap_or_default(),
                    name: n.metadata.name.clone().unwrap_or_default(),
                    rv: n.metadata.resource_version.clone(),
                    owners: owners.clone(),
                    deleting: n.metadata.deletion_timestamp.is_some(),
                    finalizers: n.metadata.finalizers.clone().unwrap_or_default(),
                };
                let prev = g.nodes.insert(uid.clone(), node.clone());
                let prev_owners: Vec<OwnerReference> = prev.as_ref().map(|p| p.owners.clone()).unwrap_or_default();
                for o in &prev_owners {
                    if let Some(s) = g.dependents.get_mut(&o.uid) {
                        s.remove(&uid);
                        if s.is_empty() {
                            g.dependents.remove(&o.uid);
                        }
                    }
                }
                for o in &owners {
                    g.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
                }
                let owners_changed = old.is_none() || prev.is_none() || prev_owners != owners;
                if !owners.is_empty() && owners_changed {
                    self.delete_queue.add(uid.clone());
                }
                if node.deleting && node.has_finalizer(ORPHAN) {
                    self.orphan_queue.add(uid.clone());
                }
                if node.deleting && node.has_finalizer(FOREGROUND) {
                    self.delete_queue.add(uid.clone());
                    for d in g.dependents.get(&uid).into_iter().flatten() {
                        self.delete_queue.add(d.clone());
                    }
                }
                // A dependent that lost its blocking reference may unblock a foreground owner.
                for o in prev_owners.iter().chain(owners.iter()) {
                    if g.nodes.get(&o.uid).is_some_and(|on| on.deleting && on.has_finalizer(FOREGROUND)) {
                        self.delete_queue.add(o.uid.clone());
                    }
                }
            }
            None => {
                let Some(o) = old else { return };
                let Some(uid) = o.metadata.uid.clone() else {
                    return;
                };
                let removed = g.nodes.remove(&uid);
                for d in g.dependents.get(&uid).into_iter().flatten() {
                    self.delete_queue.add(d.clone());
                }
                if let Some(r) = removed {
                    for ow in &r.owners {
                        if let Some(s) = g.dependents.get_mut(&ow.uid) {
                            s.remove(&uid);
                            if s.is_empty() {
                                g.dependents.remove(&ow.uid);
                            }
                        }
                        if g.nodes.get(&ow.uid).is_some_and(|on| on.deleting && on.has_finalizer(FOREGROUND)) {
                            self.delete_queue.add(ow.uid.clone());
                        }
                    }
                }
            }
        }
    }

    fn node(&self, uid: &str) -> Option<Node> {
        self.graph.read().unwrap_or_else(|e| e.into_inner()).nodes.get(uid).cloned()
    }

    fn dependents(&self, uid: &str) -> Vec<(String, Node)> {
        let g = self.graph.read().unwrap_or_else(|e| e.into_inner());
        g.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| g.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }

    fn api_for(&self, n: &Node) -> Api<DynamicObject> {
        KINDS[n.kind].api(&self.client, &n.ns)
    }

    async fn owner_state(&self, dep: &Node, r: &OwnerReference) -> Result<OwnerState, crate::Error> {
        if let Some(o) = self.node(&r.uid) {
            return Ok(if o.deleting && o.has_finalizer(FOREGROUND) { OwnerState::Waiting } else { OwnerState::Solid });
        }
        let Some(kind) = kind_of(&r.api_version, &r.kind) else {
            return Ok(OwnerState::Solid);
        };
        match kind.api(&self.client, &dep.ns).get_opt(&r.name).await? {
            None => Ok(OwnerState::Dangling),
            Some(o) if o.metadata.uid.as_deref() != Some(r.uid.as_str()) => Ok(OwnerState::Dangling),
            Some(o) => {
                let fg = o.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND);
                Ok(if o.metadata.deletion_timestamp.is_some() && fg { OwnerState::Waiting } else { OwnerState::Solid })
            }
        }
    }

    async fn patch_meta(&self, n: &Node, meta: serde_json::Value) -> Result<(), crate::Error> {
        let mut m = meta;
        m["resourceVersion"] = serde_json::json!(n.rv);
        match self
            .api_for(n)
            .patch(&n.name, &PatchParams::default(), &Patch::Merge(&serde_json::json!({"metadata": m})))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if crate::util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, uid: &str, n: &Node, policy: PropagationPolicy) -> Result<(), crate::Error> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        };
        match self.api_for(n).delete(&n.name, &dp).await {
            Ok(_) => {
                tracing::info!(kind = KINDS[n.kind].kind, namespace = %n.ns, name = %n.name, "garbage collected");
                Ok(())
            }
            Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn attempt_to_delete(self: Arc<Self>, uid: String) -> Result<(), crate::Error> {
        let Some(n) = self.node(&uid) else {
            return Ok(());
        };
        if n.deleting {
            if !n.has_finalizer(FOREGROUND) {
                return Ok(());
            }
            let deps = self.dependents(&uid);
            let blocking: Vec<&(String, Node)> = deps
                .iter()
                .filter(|(_, d)| d.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true)))
                .collect();
            if blocking.is_empty() {
                let rest: Vec<&String> = n.finalizers.iter().filter(|f| *f != FOREGROUND).collect();
                return self.patch_meta(&n, serde_json::json!({"finalizers": rest})).await;
            }
            for (d, dn) in &deps {
                if !dn.deleting {
                    self.delete_queue.add(d.clone());
                }
            }
            return Ok(());
        }
        if n.owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for r in &n.owners {
            match self.owner_state(&n, r).await? {
                OwnerState::Solid => solid.push(r.clone()),
                OwnerState::Dangling => dangling.push(r.clone()),
                OwnerState::Waiting => waiting.push(r.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            let gone: HashSet<&str> = dangling.iter().chain(waiting.iter()).map(|r| r.uid.as_str()).collect();
            let keep: Vec<&OwnerReference> = n.owners.iter().filter(|r| !gone.contains(r.uid.as_str())).collect();
            return self.patch_meta(&n, serde_json::json!({"ownerReferences": keep})).await;
        }
        if !waiting.is_empty() && !self.dependents(&uid).is_empty() {
            // Unblock the waiting owners, then delete in the foreground so our own dependents go first.
            let w: HashSet<&str> = waiting.iter().map(|r| r.uid.as_str()).collect();
            let refs: Vec<OwnerReference> = n
                .owners
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if w.contains(r.uid.as_str()) {
                        r.block_owner_deletion = Some(false);
                    }
                    r
                })
                .collect();
            if refs != n.owners {
                self.patch_meta(&n, serde_json::json!({"ownerReferences": refs})).await?;
            }
            return self.delete(&uid, &n, PropagationPolicy::Foreground).await;
        }
        let policy = if n.has_finalizer(ORPHAN) {
            PropagationPolicy::Orphan
        } else if n.has_finalizer(FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        self.delete(&uid, &n, policy).await
    }

    pub async fn attempt_to_orphan(self: Arc<Self>, uid: String) -> Result<(), crate::Error> {
        let Some(n) = self.node(&uid) else {
            return Ok(());
        };
        if !(n.deleting && n.has_finalizer(ORPHAN)) {
            return Ok(());
        }
        for (_, d) in self.dependents(&uid) {
            let keep: Vec<&OwnerReference> = d.owners.iter().filter(|r| r.uid != uid).collect();
            self.patch_meta(&d, serde_json::json!({"ownerReferences": keep})).await?;
        }
        let rest: Vec<&String> = n.finalizers.iter().filter(|f| *f != ORPHAN).collect();
        self.patch_meta(&n, serde_json::json!({"finalizers": rest})).await
    }
}
