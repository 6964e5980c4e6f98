//! Role-based access control as upstream's RBAC authorizer (`plugin/pkg/auth/authorizer/rbac`
//! and `pkg/registry/rbac/validation`): members of `system:masters` may do everything (upstream's
//! privileged-groups authorizer, asked first); anyone else is allowed what a rule of a role bound
//! to them allows: ClusterRoleBindings first, then the RoleBindings of the request's namespace,
//! each matched against the user's name, groups and service-account name.
//!
//! The policy is an in-memory [`Policy`] snapshot that `index` rebuilds from a watch of the RBAC
//! objects in the store (never a store read per request), and that also aggregates ClusterRoles
//! with an `aggregationRule` back into the store as upstream's aggregation controller does.
//! `escalation` refuses role and binding writes that grant more than the writer holds;
//! `bootstrap` holds upstream's default roles and bindings, reconciled at startup.

pub mod bootstrap;
pub mod escalation;
mod index;

pub use index::PREFIX;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use super::{Attributes, Authorized, Authorizer, Decision, NonResourceRule, ResourceRule, Rules, UserInfo};

/// The group whose members may do anything, checked before any policy.
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

impl PolicyRule {
    pub fn from_json(v: &Value) -> Self {
        PolicyRule {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    /// The rule as stored (empty lists left out).
    pub fn to_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        for (k, v) in [
            ("verbs", &self.verbs),
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() || k == "verbs" {
                o.insert(k.into(), json!(v));
            }
        }
        Value::Object(o)
    }

    /// upstream's RuleAllows.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verb_matches(&a.verb) {
            return false;
        }
        if a.resource_request {
            self.group_matches(&a.api_group)
                && self.resource_matches(&a.resource, &a.subresource)
                && self.name_matches(&a.name)
        } else {
            self.url_matches(&a.path)
        }
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }
    fn group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }
    /// `*`, the resource (with its subresource as `resource/sub`), or `*/sub`; compared without
    /// building `resource/sub`.
    fn resource_matches(&self, resource: &str, sub: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if sub.is_empty() {
                return r == resource;
            }
            let combined =
                r.strip_prefix(resource).and_then(|rest| rest.strip_prefix('/')).is_some_and(|rest| rest == sub);
            combined || r.strip_prefix("*/").is_some_and(|rest| rest == sub)
        })
    }
    fn name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || has(&self.resource_names, name)
    }
    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls
            .iter()
            .any(|u| u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*'))))
    }

    /// upstream's CompactString, for escalation messages.
    pub fn compact_string(&self) -> String {
        let q = |v: &[String]| {
            let parts: Vec<String> = v.iter().map(|s| yard_api::validation::go_quote(s)).collect();
            format!("[{}]", parts.join(" "))
        };
        let mut parts = Vec::new();
        for (name, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{name}:{}", q(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// One subject of a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

impl Subject {
    /// upstream's appliesToUser (`namespace`: the binding's, "" for a ClusterRoleBinding).
    fn applies_to(&self, user: &UserInfo, namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.username == self.name,
            "Group" => has(&user.groups, &self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() { namespace } else { &self.namespace };
                if ns.is_empty() {
                    return false;
                }
                // system:serviceaccount:<ns>:<name>, compared without building it.
                user.username
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.strip_prefix(ns))
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(|n| n == self.name)
            }
            _ => false,
        }
    }

    /// upstream's describeSubject.
    fn describe(&self, binding_ns: &str) -> String {
        let q = yard_api::validation::go_quote;
        if self.kind == "ServiceAccount" {
            let ns = if self.namespace.is_empty() { binding_ns } else { &self.namespace };
            format!("{} {}", self.kind, q(&format!("{}/{}", self.name, ns)))
        } else {
            format!("{} {}", self.kind, q(&self.name))
        }
    }
}

/// A RoleBinding (namespace set) or ClusterRoleBinding (namespace empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    pub namespace: String,
    pub role_kind: String,
    pub role_name: String,
    pub subjects: Vec<Subject>,
}

impl Binding {
    pub fn from_json(v: &Value) -> Self {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        let subjects = v
            .get("subjects")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| Subject {
                        kind: x.get("kind").and_then(Value::as_str).unwrap_or("").into(),
                        name: x.get("name").and_then(Value::as_str).unwrap_or("").into(),
                        namespace: x.get("namespace").and_then(Value::as_str).unwrap_or("").into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Binding {
            name: s("/metadata/name"),
            namespace: s("/metadata/namespace"),
            role_kind: s("/roleRef/kind"),
            role_name: s("/roleRef/name"),
            subjects,
        }
    }

    /// upstream's clusterRoleBindingDescriber / roleBindingDescriber.
    fn describe(&self, subject: &Subject) -> String {
        let q = yard_api::validation::go_quote;
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {} of {} {} to {}",
                q(&self.name),
                self.role_kind,
                q(&self.role_name),
                subject.describe("")
            )
        } else {
            format!(
                "RoleBinding {} of {} {} to {}",
                q(&format!("{}/{}", self.name, self.namespace)),
                self.role_kind,
                q(&self.role_name),
                subject.describe(&self.namespace)
            )
        }
    }
}

/// A snapshot of every role and binding, as the authorizer consults it.
#[derive(Debug, Default)]
pub struct Policy {
    pub cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    /// Roles by (namespace, name).
    pub roles: HashMap<(String, String), Arc<Vec<PolicyRule>>>,
    pub cluster_role_bindings: Vec<Binding>,
    pub role_bindings: HashMap<String, Vec<Binding>>,
    /// Which bindings name which subject ([`Policy::indexed`]); without it every binding is tried.
    index: Option<Subjects>,
}

/// Positions of the bindings that name a subject, per binding list (the ClusterRoleBindings
/// under "", the RoleBindings under their namespace): a decision looks up the user's name,
/// groups and service account instead of trying every binding.
#[derive(Debug, Default)]
struct Subjects {
    users: HashMap<String, HashMap<String, Vec<usize>>>,
    groups: HashMap<String, HashMap<String, Vec<usize>>>,
    /// Service accounts by `namespace:name`, the tail of their user name.
    service_accounts: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl Subjects {
    fn build(policy: &Policy) -> Self {
        let mut s = Subjects::default();
        let lists = std::iter::once(("", &policy.cluster_role_bindings))
            .chain(policy.role_bindings.iter().map(|(ns, l)| (ns.as_str(), l)));
        for (list, bindings) in lists {
            for (i, b) in bindings.iter().enumerate() {
                for sub in &b.subjects {
                    let (map, key) = match sub.kind.as_str() {
                        "User" => (&mut s.users, sub.name.clone()),
                        "Group" => (&mut s.groups, sub.name.clone()),
                        "ServiceAccount" => {
                            let ns = if sub.namespace.is_empty() { &b.namespace } else { &sub.namespace };
                            if ns.is_empty() {
                                continue;
                            }
                            (&mut s.service_accounts, format!("{ns}:{}", sub.name))
                        }
                        _ => continue,
                    };
                    let at = map.entry(list.to_string()).or_default().entry(key).or_default();
                    if at.last() != Some(&i) {
                        at.push(i);
                    }
                }
            }
        }
        s
    }

    /// The positions, in order, of the bindings of `list` that may apply to `user`.
    fn candidates(&self, list: &str, user: &UserInfo) -> Vec<usize> {
        let mut out = Vec::new();
        let mut add = |m: &HashMap<String, HashMap<String, Vec<usize>>>, key: &str| {
            if let Some(v) = m.get(list).and_then(|m| m.get(key)) {
                out.extend_from_slice(v);
            }
        };
        add(&self.users, &user.username);
        for g in &user.groups {
            add(&self.groups, g);
        }
        if let Some(sa) = user.username.strip_prefix("system:serviceaccount:") {
            add(&self.service_accounts, sa);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What `visit` reports: a rule (with the binding and subject that grant it) or an error.
pub enum Visit<'a> {
    Rule(&'a Binding, &'a Subject, &'a PolicyRule),
    Error(String),
}

impl Policy {
    /// The policy with its subject index built (what the authorizer serves from).
    pub fn indexed(mut self) -> Self {
        self.index = Some(Subjects::build(&self));
        self
    }

    /// upstream's GetRoleReferenceRules.
    pub fn role_ref_rules(&self, kind: &str, name: &str, namespace: &str) -> Result<Arc<Vec<PolicyRule>>, String> {
        let q = yard_api::validation::go_quote;
        match kind {
            "Role" => self
                .roles
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io {} not found", q(name))),
            "ClusterRole" => self
                .cluster_roles
                .get(name)
                .cloned()
                .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io {} not found", q(name))),
            other => Err(format!("unsupported role reference kind: {}", q(other))),
        }
    }

    /// upstream's VisitRulesFor: every rule that applies to `user` in `namespace` ("" for the
    /// cluster scope), ClusterRoleBindings first; `f` returns false to stop.
    pub fn visit(&self, user: &UserInfo, namespace: &str, mut f: impl FnMut(Visit<'_>) -> bool) {
        let empty = Vec::new();
        let rbs = if namespace.is_empty() { &empty } else { self.role_bindings.get(namespace).unwrap_or(&empty) };
        let pick = |list: &str, bindings: &'_ Vec<Binding>| -> Vec<usize> {
            match &self.index {
                Some(ix) => ix.candidates(list, user),
                None => (0..bindings.len()).collect(),
            }
        };
        let crbs = pick("", &self.cluster_role_bindings).into_iter().map(|i| &self.cluster_role_bindings[i]);
        let rbs = pick(namespace, rbs).into_iter().filter_map(|i| rbs.get(i));
        for b in crbs.chain(rbs) {
            let Some(subject) = b.subjects.iter().find(|s| s.applies_to(user, &b.namespace)) else { continue };
            match self.role_ref_rules(&b.role_kind, &b.role_name, &b.namespace) {
                Ok(rules) => {
                    for r in rules.iter() {
                        if !f(Visit::Rule(b, subject, r)) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !f(Visit::Error(e)) {
                        return;
                    }
                }
            }
        }
    }

    /// upstream's RulesFor: the rules and the resolution errors.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let (mut rules, mut errs) = (Vec::new(), Vec::new());
        self.visit(user, namespace, |v| {
            match v {
                Visit::Rule(_, _, r) => rules.push(r.clone()),
                Visit::Error(e) => errs.push(e),
            }
            true
        });
        (rules, errs)
    }

    /// The RBAC authorizer's decision (no privileged-group short circuit).
    pub fn authorize(&self, a: &Attributes) -> Authorized {
        let mut reason = None;
        let mut errs = Vec::new();
        self.visit(&a.user, &a.namespace, |v| match v {
            Visit::Rule(b, s, r) if r.allows(a) => {
                reason = Some(format!("RBAC: allowed by {}", b.describe(s)));
                false
            }
            Visit::Rule(..) => true,
            Visit::Error(e) => {
                errs.push(e);
                true
            }
        });
        match reason {
            Some(reason) => Authorized { decision: Decision::Allow, reason },
            None => Authorized {
                decision: Decision::NoOpinion,
                reason: if errs.is_empty() { String::new() } else { format!("RBAC: {}", aggregate(&errs)) },
            },
        }
    }
}

/// utilerrors.NewAggregate(errs).Error().
pub fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The API server's authorizer: the privileged group, then RBAC over the watched policy.
pub struct RbacAuthorizer {
    policy: Arc<RwLock<Arc<Policy>>>,
    synced: Arc<std::sync::atomic::AtomicBool>,
    applied: Arc<std::sync::atomic::AtomicI64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RbacAuthorizer {
    /// Follow the RBAC objects in `store` (and keep aggregated ClusterRoles aggregated). Must be
    /// called inside a Tokio runtime.
    pub fn start(store: yard_store::DynStore) -> Self {
        let policy = Arc::new(RwLock::new(Arc::new(Policy::default())));
        let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let applied = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let task = tokio::spawn(index::follow(store, policy.clone(), synced.clone(), applied.clone()));
        RbacAuthorizer { policy, synced, applied, task: Some(task) }
    }

    /// An authorizer over a fixed policy (tests).
    pub fn fixed(policy: Policy) -> Self {
        RbacAuthorizer {
            policy: Arc::new(RwLock::new(Arc::new(policy.indexed()))),
            synced: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            applied: Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX)),
            task: None,
        }
    }

    /// The current snapshot.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the first listing of the RBAC objects has been indexed.
    pub fn synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for RbacAuthorizer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn privileged(user: &UserInfo) -> bool {
    has(&user.groups, PRIVILEGED_GROUP)
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, a: &Attributes) -> Authorized {
        if privileged(&a.user) {
            return Authorized { decision: Decision::Allow, reason: String::new() };
        }
        self.policy().authorize(a)
    }

    fn rules_for(&self, user: &UserInfo, namespace: &str) -> Rules {
        let (rules, errs) = self.policy().rules_for(user, namespace);
        let mut out = Rules::default();
        for r in rules {
            if !r.resources.is_empty() {
                out.resource_rules.push(ResourceRule {
                    verbs: r.verbs.clone(),
                    api_groups: r.api_groups.clone(),
                    resources: r.resources.clone(),
                    resource_names: r.resource_names.clone(),
                });
            }
            if !r.non_resource_urls.is_empty() {
                out.non_resource_rules
                    .push(NonResourceRule { verbs: r.verbs.clone(), non_resource_urls: r.non_resource_urls.clone() });
            }
        }
        if !errs.is_empty() {
            out.incomplete = true;
            out.evaluation_error = aggregate(&errs);
        }
        out
    }

    fn escalation_rules(&self, user: &UserInfo, namespace: &str) -> Option<(Vec<PolicyRule>, Vec<String>)> {
        Some(self.policy().rules_for(user, namespace))
    }

    fn applied_revision(&self) -> Option<i64> {
        Some(self.applied.load(std::sync::atomic::Ordering::Acquire))
    }

    fn role_ref_rules(&self, kind: &str, name: &str, namespace: &str) -> Option<Result<Arc<Vec<PolicyRule>>, String>> {
        Some(self.policy().role_ref_rules(kind, name, namespace))
    }
}

#[cfg(test)]
mod tests;
