//! Per-kind patch metadata: which lists merge by key, which are sets, which are atomic.
//!
//! Paths are dotted field names from the object root; list items are transparent, so
//! `spec.containers.ports` is the `ports` list inside every item of `spec.containers`.
//! The table mirrors the Go struct tags of the upstream types (`patchStrategy`,
//! `patchMergeKey`, `+listType`, `+listMapKey`, `+mapType`, `+structType`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// How strategic merge patch treats a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmpList {
    /// No `patchStrategy`: the patch list replaces the live list.
    Replace,
    /// `patchStrategy:"merge"` with `patchMergeKey`: items are merged by that key.
    MergeByKey(String),
    /// `patchStrategy:"merge"` on a list of scalars: union of both lists.
    MergePrimitive,
}

/// How server-side apply (structured-merge-diff) treats a list or a map.
#[derive(Clone, Debug, PartialEq)]
pub enum SsaType {
    /// `+listType=map` with `+listMapKey`s; `defaults` are key values used when an item omits
    /// the key (upstream `+default`, e.g. `protocol: TCP`).
    ListMap { keys: Vec<String>, defaults: Vec<(String, Value)> },
    /// `+listType=set`: items are identified by their value.
    ListSet,
    /// `+listType=atomic`, `+mapType=atomic` or `+structType=atomic`: owned as one leaf.
    Atomic,
    /// Default: maps are granular (field by field), lists are atomic.
    Default,
}

/// Patch metadata of one field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldRule {
    /// Strategic merge patch behaviour (lists only).
    pub smp: SmpList,
    /// Whether `patchStrategy` also carries `retainKeys` (informational for patch generation).
    pub retain_keys: bool,
    /// Server-side apply behaviour.
    pub ssa: SsaType,
}

impl FieldRule {
    /// A list merged by `key` in both strategic merge patch and server-side apply.
    pub fn keyed(key: &str) -> Self {
        FieldRule {
            smp: SmpList::MergeByKey(key.to_string()),
            retain_keys: false,
            ssa: SsaType::ListMap { keys: vec![key.to_string()], defaults: Vec::new() },
        }
    }

    /// A list of scalars merged as a set.
    pub fn set() -> Self {
        FieldRule { smp: SmpList::MergePrimitive, retain_keys: false, ssa: SsaType::ListSet }
    }

    /// An atomic list or map (replaced whole by both patch kinds).
    pub fn atomic() -> Self {
        FieldRule { smp: SmpList::Replace, retain_keys: false, ssa: SsaType::Atomic }
    }
}

#[derive(Debug, Default)]
struct SchemaInner {
    known: bool,
    rules: BTreeMap<String, FieldRule>,
    status_subresource: bool,
    /// The zero object (see [`PatchSchema::zero_object`]), built on first use.
    zero_object: std::sync::OnceLock<Value>,
    zero_values: Vec<(String, Value)>,
}

/// Patch metadata for one kind. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PatchSchema {
    inner: Arc<SchemaInner>,
}

impl Default for PatchSchema {
    fn default() -> Self {
        PatchSchema::unknown()
    }
}

impl PatchSchema {
    /// The schema of a kind we know nothing about: strategic merge patch falls back to JSON
    /// merge patch, apply treats maps as granular and lists as atomic.
    pub fn unknown() -> Self {
        PatchSchema { inner: Arc::new(SchemaInner::default()) }
    }

    /// A known kind with the given field rules (paths as described in the module docs).
    pub fn new<I, S>(rules: I) -> Self
    where
        I: IntoIterator<Item = (S, FieldRule)>,
        S: Into<String>,
    {
        PatchSchema {
            inner: Arc::new(SchemaInner {
                known: true,
                rules: rules.into_iter().map(|(p, r)| (p.into(), r)).collect(),
                status_subresource: false,
                zero_object: Default::default(),
                zero_values: Vec::new(),
            }),
        }
    }

    /// Whether the kind is one of ours (strategic merge patch supported).
    pub fn is_known(&self) -> bool {
        self.inner.known
    }

    /// Whether the kind has a `status` subresource, so that writes to the main resource do
    /// not own `status` (upstream reset fields).
    pub fn has_status_subresource(&self) -> bool {
        self.inner.status_subresource
    }

    /// The rule of a field path, if any.
    pub fn rule(&self, path: &str) -> Option<&FieldRule> {
        self.inner.rules.get(path)
    }

    /// Every declared rule, by path.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &FieldRule)> {
        self.inner.rules.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The fields present in a freshly allocated typed object of this kind (non-pointer Go
    /// structs and nil slices); server-side apply compares creates against this.
    pub(crate) fn zero_values(&self) -> &[(String, Value)] {
        &self.inner.zero_values
    }

    /// [`PatchSchema::zero_values`] as one object (without `apiVersion` and `kind`), built once
    /// per schema: every create is compared against it.
    pub(crate) fn zero_object(&self) -> &Value {
        self.inner.zero_object.get_or_init(|| {
            let mut obj = Value::Object(serde_json::Map::new());
            for (p, v) in self.zero_values() {
                let mut cur = &mut obj;
                let parts: Vec<&str> = p.split('.').collect();
                for (i, part) in parts.iter().enumerate() {
                    let Value::Object(m) = cur else { break };
                    if i + 1 == parts.len() {
                        m.entry(part.to_string()).or_insert_with(|| v.clone());
                        break;
                    }
                    cur = m.entry(part.to_string()).or_insert_with(|| Value::Object(serde_json::Map::new()));
                }
            }
            obj
        })
    }
}

/// Join a parent path and a field name.
pub(crate) fn child_path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        let mut s = String::with_capacity(parent.len() + 1 + field.len());
        s.push_str(parent);
        s.push('.');
        s.push_str(field);
        s
    }
}

fn keyed_multi(merge_key: &str, keys: &[&str], defaults: &[(&str, &str)]) -> FieldRule {
    FieldRule {
        smp: SmpList::MergeByKey(merge_key.to_string()),
        retain_keys: false,
        ssa: SsaType::ListMap {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            defaults: defaults.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect(),
        },
    }
}

fn retain(mut r: FieldRule) -> FieldRule {
    r.retain_keys = true;
    r
}

/// Rules of `ObjectMeta` under `prefix` (e.g. `metadata`).
fn object_meta(rules: &mut Vec<(String, FieldRule)>, prefix: &str) {
    rules.push((child_path(prefix, "finalizers"), FieldRule::set()));
    rules.push((child_path(prefix, "ownerReferences"), FieldRule::keyed("uid")));
}

/// Rules of one container type (`Container`, `EphemeralContainer`) under `c`.
fn container(rules: &mut Vec<(String, FieldRule)>, c: &str) {
    rules.push((
        child_path(c, "ports"),
        keyed_multi("containerPort", &["containerPort", "protocol"], &[("protocol", "TCP")]),
    ));
    rules.push((child_path(c, "env"), FieldRule::keyed("name")));
    rules.push((child_path(c, "volumeMounts"), FieldRule::keyed("mountPath")));
    rules.push((child_path(c, "volumeDevices"), FieldRule::keyed("devicePath")));
    rules.push((child_path(c, "volumeMounts.bindMountOptions"), FieldRule::set()));
    rules.push((
        child_path(c, "resources.claims"),
        FieldRule {
            smp: SmpList::Replace,
            retain_keys: false,
            ssa: SsaType::ListMap { keys: vec!["name".into()], defaults: Vec::new() },
        },
    ));
}

/// Rules of `PodSpec` under `p` (e.g. `spec` or `spec.template.spec`).
fn pod_spec(rules: &mut Vec<(String, FieldRule)>, p: &str) {
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let c = child_path(p, list);
        rules.push((c.clone(), FieldRule::keyed("name")));
        container(rules, &c);
    }
    rules.push((child_path(p, "volumes"), retain(FieldRule::keyed("name"))));
    rules.push((child_path(p, "imagePullSecrets"), FieldRule::keyed("name")));
    rules.push((child_path(p, "hostAliases"), FieldRule::keyed("ip")));
    rules.push((
        child_path(p, "topologySpreadConstraints"),
        keyed_multi("topologyKey", &["topologyKey", "whenUnsatisfiable"], &[]),
    ));
    rules.push((child_path(p, "topologySpreadConstraints.labelSelector"), FieldRule::atomic()));
    rules.push((child_path(p, "resourceClaims"), retain(FieldRule::keyed("name"))));
    rules.push((child_path(p, "schedulingGates"), FieldRule::keyed("name")));
    rules.push((child_path(p, "evictionResponders"), FieldRule::keyed("name")));
    rules.push((child_path(p, "tolerations"), FieldRule::atomic()));
    rules.push((child_path(p, "readinessGates"), FieldRule::atomic()));
    rules.push((child_path(p, "nodeSelector"), FieldRule::atomic()));
}

fn pod_template(rules: &mut Vec<(String, FieldRule)>, t: &str) {
    object_meta(rules, &child_path(t, "metadata"));
    pod_spec(rules, &child_path(t, "spec"));
}

fn conditions(rules: &mut Vec<(String, FieldRule)>, status: &str) {
    rules.push((child_path(status, "conditions"), FieldRule::keyed("type")));
}

fn build(api_version: &str, kind: &str) -> SchemaInner {
    let mut rules: Vec<(String, FieldRule)> = Vec::new();
    let mut status_subresource = false;
    let mut zero: Vec<(&str, Value)> = vec![("metadata", Value::Object(Default::default()))];
    let empty = || Value::Object(Default::default());
    match (api_version, kind) {
        ("v1", "Pod") => {
            pod_spec(&mut rules, "spec");
            conditions(&mut rules, "status");
            rules.push(("status.podIPs".into(), FieldRule::keyed("ip")));
            rules.push((
                "status.hostIPs".into(),
                FieldRule { smp: SmpList::MergeByKey("ip".into()), retain_keys: false, ssa: SsaType::Atomic },
            ));
            rules.push(("status.resourceClaimStatuses".into(), retain(FieldRule::keyed("name"))));
            rules.push(("status.volumeHealth".into(), FieldRule::keyed("name")));
            rules.push(("status.nodeAllocatableResourceClaimStatuses".into(), FieldRule::keyed("resourceClaimName")));
            for s in ["containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"] {
                rules.push((format!("status.{s}"), FieldRule::atomic()));
            }
            status_subresource = true;
            zero.extend([("spec", empty()), ("spec.containers", Value::Null), ("status", empty())]);
        }
        ("apps/v1", "Deployment")
        | ("apps/v1", "ReplicaSet")
        | ("apps/v1", "StatefulSet")
        | ("apps/v1", "DaemonSet") => {
            pod_template(&mut rules, "spec.template");
            rules.push(("spec.selector".into(), FieldRule::atomic()));
            conditions(&mut rules, "status");
            status_subresource = true;
            zero.extend([
                ("spec", empty()),
                ("spec.template", empty()),
                ("spec.template.metadata", empty()),
                ("spec.template.spec", empty()),
                ("spec.template.spec.containers", Value::Null),
                ("status", empty()),
            ]);
            if kind == "Deployment" {
                zero.push(("spec.strategy", empty()));
            }
        }
        ("v1", "Service") => {
            rules.push(("spec.ports".into(), keyed_multi("port", &["port", "protocol"], &[("protocol", "TCP")])));
            rules.push(("spec.selector".into(), FieldRule::atomic()));
            for l in ["clusterIPs", "externalIPs", "loadBalancerSourceRanges", "ipFamilies"] {
                rules.push((format!("spec.{l}"), FieldRule::atomic()));
            }
            conditions(&mut rules, "status");
            rules.push(("status.loadBalancer.ingress".into(), FieldRule::atomic()));
            status_subresource = true;
            zero.extend([("spec", empty()), ("status", empty())]);
        }
        ("v1", "Node") => {
            rules.push((
                "spec.podCIDRs".into(),
                FieldRule { smp: SmpList::MergePrimitive, retain_keys: false, ssa: SsaType::ListSet },
            ));
            rules.push(("spec.taints".into(), FieldRule::atomic()));
            conditions(&mut rules, "status");
            // Declared mergeable by `type` although types repeat (upstream warns to replace
            // the whole list instead); no listType, so apply keys it by `type` too.
            rules.push(("status.addresses".into(), FieldRule::keyed("type")));
            for l in ["images", "volumesInUse", "volumesAttached"] {
                rules.push((format!("status.{l}"), FieldRule::atomic()));
            }
            status_subresource = true;
            zero.extend([("spec", empty()), ("status", empty())]);
        }
        ("v1", "Namespace") => {
            rules.push(("spec.finalizers".into(), FieldRule::atomic()));
            conditions(&mut rules, "status");
            status_subresource = true;
            zero.extend([("spec", empty()), ("status", empty())]);
        }
        ("v1", "Endpoints") => {
            rules.push(("subsets".into(), FieldRule::atomic()));
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            rules.push(("endpoints".into(), FieldRule::atomic()));
            rules.push(("ports".into(), FieldRule::atomic()));
        }
        ("v1", "ConfigMap") | ("v1", "Secret") | ("coordination.k8s.io/v1", "Lease") => {
            if kind == "Lease" {
                zero.push(("spec", empty()));
            }
        }
        ("v1", "Event") | ("events.k8s.io/v1", "Event") => {
            if api_version == "v1" {
                zero.extend([("involvedObject", empty()), ("source", empty())]);
            }
        }
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding") => {
            // No patch strategy on any list: rules, subjects and selectors are replaced whole.
            for l in ["rules", "subjects", "aggregationRule.clusterRoleSelectors"] {
                rules.push((l.into(), FieldRule::atomic()));
            }
        }
        ("autoscaling/v1", "Scale") => {
            zero.extend([("spec", empty()), ("status", empty())]);
        }
        _ => {
            return SchemaInner::default();
        }
    }
    object_meta(&mut rules, "metadata");
    SchemaInner {
        known: true,
        rules: rules.into_iter().collect(),
        status_subresource,
        zero_object: Default::default(),
        zero_values: zero.into_iter().map(|(p, v)| (p.to_string(), v)).collect(),
    }
}

/// The schema of a kind whose body is one pod template at `path` (PodTemplate's `template`):
/// the template's list rules, the object's metadata rules, and empty objects as zero values.
pub fn pod_template_at(path: &str) -> PatchSchema {
    let mut rules: Vec<(String, FieldRule)> = Vec::new();
    pod_template(&mut rules, path);
    object_meta(&mut rules, "metadata");
    let zero = ["metadata".to_string(), path.to_string(), child_path(path, "metadata"), child_path(path, "spec")];
    PatchSchema {
        inner: Arc::new(SchemaInner {
            known: true,
            rules: rules.into_iter().collect(),
            status_subresource: false,
            zero_object: Default::default(),
            zero_values: zero.into_iter().map(|p| (p, Value::Object(Default::default()))).collect(),
        }),
    }
}

/// The built-in patch schema of a served kind; unknown kinds get [`PatchSchema::unknown`].
pub fn schema_for(api_version: &str, kind: &str) -> PatchSchema {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    // apiVersion -> kind -> schema, so that a lookup borrows its key.
    type Cache = HashMap<String, HashMap<String, PatchSchema>>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock() {
        if let Some(s) = map.get(api_version).and_then(|k| k.get(kind)) {
            return s.clone();
        }
    }
    let schema = PatchSchema { inner: Arc::new(build(api_version, kind)) };
    if schema.is_known() {
        if let Ok(mut map) = cache.lock() {
            map.entry(api_version.to_string()).or_default().insert(kind.to_string(), schema.clone());
        }
    }
    schema
}
