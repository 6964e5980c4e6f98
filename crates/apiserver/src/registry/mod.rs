//! The registry of kinds this server serves: one `RESOURCES` table (the KINDS table) keyed by
//! plural, Kind and apiVersion from one entry, with names, scope, short names and subresources as
//! upstream declares them in discovery, and per kind a [`Strategy`] that decides what the generic
//! handlers must not.
//!
//! Adding a kind is one file here (its `Strategy`, e.g. `podtemplate.rs`, or `rbac.rs` for four kinds) plus one `RESOURCES`
//! entry. The `Strategy` hooks are: initial status and generation (`prepare_for_create`),
//! defaulting (`defaults`), validation (`validate`, `validate_status`), create-on-update,
//! address allocation, graceful deletion and deletion hooks, the server-side Table's columns and
//! cells (`table_columns`, `table_cells`) and the OpenAPI schema (`openapi_schema`). Each hook's
//! default is the plain kind's, or for defaulting, tables and schemas the per-plural functions in
//! `yard_api::defaults`, `yard_api::table` and `crate::openapi` that the older kinds still live in.

mod namespace;
mod node;
mod pod;
mod podtemplate;
pub mod rbac;
mod service;
mod simple;
mod workload;

pub(crate) use simple::PLAIN;

use serde_json::Value;
use yard_api::validation::FieldError;

/// What one kind decides on create, update and delete; upstream's `rest.RESTCreateStrategy`,
/// `RESTUpdateStrategy` and `RESTDeleteStrategy` rolled into one. Defaults are the plain kind
/// (ConfigMap, Secret ...): no spec, no status, validated as stored.
pub trait Strategy: Sync {
    /// Upstream's `PrepareForCreate` after the generic metadata reset: generation and the
    /// initial status.
    fn prepare_for_create(&self, _obj: &mut Value) {}
    /// Field validation of an object (and of its old version on update).
    fn validate(&self, r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        yard_api::validation::validate(r.plural, obj, old)
    }
    /// Validation of a write to the status subresource.
    fn validate_status(&self, r: &Resource, obj: &Value, old: &Value) -> Vec<FieldError> {
        self.validate(r, obj, Some(old))
    }
    /// Upstream's `AllowCreateOnUpdate`: a PUT of a missing object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }
    /// Whether writes of the main resource go through the address allocators (Services: cluster
    /// IPs and node ports are allocated before validation and released after delete).
    fn allocates(&self) -> bool {
        false
    }
    /// Whether something in the object itself (not metadata.finalizers) holds its deletion.
    fn holds_deletion(&self, _obj: &Value) -> bool {
        false
    }
    /// Upstream's `CheckGracefulDelete`: the grace period (seconds, > 0) a delete must wait,
    /// given the requested one; None deletes now.
    fn graceful_delete(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }
    /// Applied when a deletion starts but the object stays (finalizers, grace).
    fn on_deletion_started(&self, _obj: &mut Value) {}
    /// Upstream's defaulting of a written object, in place and idempotent; run on create and
    /// update before validation.
    fn defaults(&self, r: &Resource, obj: &mut Value) {
        yard_api::defaults::apply_defaults(r.plural, obj);
    }
    /// The server-side Table's `columnDefinitions` (upstream's printer columns); computed once
    /// per resource, the caller caches them.
    fn table_columns(&self, r: &Resource) -> Vec<Value> {
        yard_api::table::column_definitions(r.plural)
    }
    /// A Table row's `cells` for `obj`, one per [`Strategy::table_columns`] entry.
    fn table_cells(&self, r: &Resource, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        yard_api::table::row_cells(r.plural, obj, now)
    }
    /// Adds the kind's OpenAPI schema (and what it references) to `gen` and returns the
    /// definition name it was added under; None leaves it to `crate::openapi`'s per-kind table.
    fn openapi_schema(&self, _gen: &mut schemars::SchemaGenerator) -> Option<String> {
        None
    }
    /// The list-merge and field-ownership rules of strategic-merge and apply patches.
    fn patch_schema(&self, r: &Resource) -> yard_api::patch::PatchSchema {
        yard_api::patch::schema_for(&r.api_version(), r.kind)
    }
}

/// One served resource.
#[derive(Clone, Copy)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources: "status", "scale", "binding", "exec", "log", "finalize".
    pub subresources: &'static [&'static str],
    /// Whether writes to the main resource keep the stored status (status lives behind /status).
    pub status_subresource: bool,
    /// What this kind decides on create, update and delete (upstream's rest strategy).
    pub strategy: &'static dyn Strategy,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("plural", &self.plural)
            .finish()
    }
}

/// One entry per (group, version, plural): the table's identity.
impl PartialEq for Resource {
    fn eq(&self, o: &Self) -> bool {
        self.group == o.group && self.version == o.version && self.plural == o.plural
    }
}
impl Eq for Resource {}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn group_version(&self) -> String {
        self.api_version()
    }
    /// The storage key prefix of this resource (all namespaces).
    pub fn prefix(&self) -> String {
        self.ns_prefix(None)
    }
    /// The storage key prefix of one namespace (or of all objects if cluster-scoped).
    pub fn ns_prefix(&self, ns: Option<&str>) -> String {
        let mut p = String::with_capacity(64);
        self.push_ns_prefix(&mut p, ns);
        p
    }
    /// The storage key of one object: its namespace prefix and its name, in one allocation
    /// (every request builds one).
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        let mut k = String::with_capacity(64 + name.len());
        self.push_ns_prefix(&mut k, ns);
        k.push_str(name);
        k
    }
    /// `/registry/<group, core for the core group>/<plural>/`, then `<ns>/` if namespaced and
    /// given: the layout of every storage key.
    fn push_ns_prefix(&self, out: &mut String, ns: Option<&str>) {
        // events.k8s.io Events are the core Events, stored once.
        let g = if self.group.is_empty() || self.group == "events.k8s.io" { "core" } else { self.group };
        for part in ["/registry/", g, "/", self.plural, "/"] {
            out.push_str(part);
        }
        if let Some(ns) = ns.filter(|_| self.namespaced) {
            out.push_str(ns);
            out.push('/');
        }
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    /// A qualified name as upstream's error messages print it (`deployments.apps`, `services`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    pub fn has_sub(&self, s: &str) -> bool {
        self.subresources.contains(&s)
    }
    /// A review API (authorization.k8s.io, authentication.k8s.io): only `create`, answered
    /// from the authenticator and authorizer, never stored.
    pub fn create_only(&self) -> bool {
        matches!(self.group, "authorization.k8s.io" | "authentication.k8s.io")
    }
}

const ALL: &[&str] = &["all"];

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status", "finalize"],
        status_subresource: true,
        strategy: &namespace::NAMESPACE,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        subresources: &["status", "binding", "exec", "log", "attach", "portforward"],
        status_subresource: true,
        strategy: &pod::POD,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: &["status"],
        status_subresource: true,
        strategy: &service::SERVICE,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::CREATE_ON_UPDATE,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::CREATE_ON_UPDATE,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
        status_subresource: true,
        strategy: &node::NODE,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "PodTemplate",
        plural: "podtemplates",
        singular: "podtemplate",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &podtemplate::POD_TEMPLATE,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &["token"],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: &["status", "scale"],
        status_subresource: true,
        strategy: &workload::WORKLOAD,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: &["status", "scale"],
        status_subresource: true,
        strategy: &workload::WORKLOAD,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::CREATE_ON_UPDATE,
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::CREATE_ON_UPDATE,
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectRulesReview",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SubjectAccessReview",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "LocalSubjectAccessReview",
        plural: "localsubjectaccessreviews",
        singular: "localsubjectaccessreview",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "TokenReview",
        plural: "tokenreviews",
        singular: "tokenreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1beta1",
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &simple::PLAIN,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        singular: "role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &rbac::ROLE,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &rbac::CLUSTER_ROLE,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &rbac::ROLE_BINDING,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        status_subresource: false,
        strategy: &rbac::CLUSTER_ROLE_BINDING,
    },
];

/// Look up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Look up by apiVersion and kind.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The versions of `group` in discovery order, the preferred one first.
pub fn versions_of(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        if !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out
}

/// The groups (besides core) in discovery order, each with its preferred version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry is found again by each of its spellings (plural, apiVersion+kind), so no two
    /// entries shadow each other.
    #[test]
    fn every_entry_is_found_by_each_spelling() {
        for r in RESOURCES {
            let by_plural = find(r.group, r.version, r.plural).expect("by plural");
            assert!(std::ptr::eq(by_plural, r), "{} shadowed by plural", r.qualified());
            let by_kind = by_kind(&r.api_version(), r.kind).expect("by kind");
            assert!(std::ptr::eq(by_kind, r), "{} shadowed by kind", r.qualified());
        }
    }
}
