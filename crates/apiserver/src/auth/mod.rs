//! Who is asking and what they may do: the [`Authenticator`]s that turn a request's credentials
//! into a [`UserInfo`] (the admin token, then `--token-auth-file`'s [`tokenfile`], in a
//! [`Chain`]), [`impersonate`] for the `Impersonate-*` headers, the [`Authorizer`] that decides on
//! a request's [`Attributes`] (the API server's is [`rbac::RbacAuthorizer`]; [`AdminPolicy`], the
//! admins-only policy, stays for tests), and upstream's 403 text for a denied request. The review
//! APIs in [`reviews`] answer from the same parts.

pub mod impersonate;
pub mod rbac;
pub mod reviews;
pub mod serviceaccount;
pub mod token_request;
pub mod tokenfile;

use std::collections::BTreeMap;

use http::Method;

use crate::status::ApiError;

/// The user `kubeadm` writes into admin.conf, which Yard's admin token stands for.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The groups of that user: kubeadm's administrators' group, the group that upstream's
/// authorizers let do anything, and the group of every authenticated user.
pub const ADMIN_GROUPS: &[&str] = &["kubeadm:cluster-admins", "system:masters", "system:authenticated"];

/// An authenticated user, as upstream's `user.Info` carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// Yard's administrator.
    pub fn admin() -> Self {
        UserInfo {
            username: ADMIN_USER.into(),
            groups: ADMIN_GROUPS.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }
    /// The authentication.k8s.io `UserInfo` object (empty members left out, as upstream does).
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        if !self.username.is_empty() {
            o.insert("username".into(), self.username.clone().into());
        }
        if !self.uid.is_empty() {
            o.insert("uid".into(), self.uid.clone().into());
        }
        if !self.groups.is_empty() {
            o.insert("groups".into(), self.groups.clone().into());
        }
        if !self.extra.is_empty() {
            o.insert("extra".into(), serde_json::to_value(&self.extra).unwrap_or_default());
        }
        serde_json::Value::Object(o)
    }
}

/// Turns a bearer token into the user it belongs to.
pub trait Authenticator: Send + Sync {
    /// `None`: the token is not one this authenticator knows.
    fn authenticate_token(&self, token: &str) -> Option<UserInfo>;
}

/// The API server's static tokens, each the administrator's.
pub struct TokenAuthenticator {
    tokens: Vec<String>,
}

impl TokenAuthenticator {
    pub fn new(tokens: Vec<String>) -> Self {
        Self { tokens }
    }
}

impl Authenticator for TokenAuthenticator {
    fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        let token = token.trim();
        self.tokens.iter().any(|t| constant_time_eq(t.as_bytes(), token.as_bytes())).then(UserInfo::admin)
    }
}

/// Authenticators asked in order, the first that knows a token deciding; every user found is a
/// member of `system:authenticated`, as upstream's authenticated-group adder makes it.
pub struct Chain {
    pub authenticators: Vec<Box<dyn Authenticator>>,
}

impl Authenticator for Chain {
    fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        let mut u = self.authenticators.iter().find_map(|a| a.authenticate_token(token))?;
        if !u.groups.iter().any(|g| g == "system:authenticated") {
            u.groups.push("system:authenticated".into());
        }
        Some(u)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, tok) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim()).filter(|t| !t.is_empty())
}

/// What a request asks to do, as upstream's `authorizer.Attributes` describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// get, list, watch, create, update, patch, delete, deletecollection (or the lowercase HTTP
    /// method of a non-resource request); `*` in a review means every verb.
    pub verb: String,
    /// Whether this is a request for a resource (else for the non-resource `path`).
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path of a non-resource request.
    pub path: String,
}

/// The outcome of one authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    NoOpinion,
}

/// A decision and the reason an authorizer gives for it (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    pub decision: Decision,
    pub reason: String,
}

/// One rule of a SelfSubjectRulesReview answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonResourceRule {
    pub verbs: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

/// What a user may do in one namespace, as far as an authorizer can list it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub resource_rules: Vec<ResourceRule>,
    pub non_resource_rules: Vec<NonResourceRule>,
    /// The list may be missing rules (e.g. an authorizer that cannot enumerate them).
    pub incomplete: bool,
    pub evaluation_error: String,
}

/// Decides whether a request may proceed; the request path and the review APIs consult it.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, a: &Attributes) -> Authorized;
    /// The rules `user` has in `namespace`, for SelfSubjectRulesReview.
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> Rules;
    /// The RBAC rules `user` holds in `namespace` and the errors met resolving them, for the
    /// escalation check of role and binding writes; None: this authorizer has no RBAC policy
    /// (writes are then not checked for escalation).
    fn escalation_rules(&self, _user: &UserInfo, _namespace: &str) -> Option<(Vec<rbac::PolicyRule>, Vec<String>)> {
        None
    }
    /// The store revision up to which the authorizer's policy has every RBAC object (None: it
    /// keeps no policy from the store).
    fn applied_revision(&self) -> Option<i64> {
        None
    }
    /// The rules of the role a binding in `namespace` references (kind Role or ClusterRole).
    fn role_ref_rules(
        &self,
        _kind: &str,
        _name: &str,
        _namespace: &str,
    ) -> Option<Result<std::sync::Arc<Vec<rbac::PolicyRule>>, String>> {
        None
    }
}

tokio::task_local! {
    /// The user a request is served for (after impersonation), for checks deep in the write path.
    pub static REQUEST_USER: UserInfo;
}

/// The user of the request being served, if any (the API server's own writes have none).
pub fn request_user() -> Option<UserInfo> {
    REQUEST_USER.try_with(|u| u.clone()).ok()
}

/// Today's policy: a member of `system:masters` or `kubeadm:cluster-admins` may do everything;
/// anyone else gets no opinion (which the request path treats as a denial).
pub struct AdminPolicy;

impl AdminPolicy {
    fn is_admin(user: &UserInfo) -> bool {
        user.groups.iter().any(|g| g == "system:masters" || g == "kubeadm:cluster-admins")
    }
}

impl Authorizer for AdminPolicy {
    fn authorize(&self, a: &Attributes) -> Authorized {
        if Self::is_admin(&a.user) {
            Authorized { decision: Decision::Allow, reason: String::new() }
        } else {
            Authorized { decision: Decision::NoOpinion, reason: String::new() }
        }
    }
    fn rules_for(&self, user: &UserInfo, _namespace: &str) -> Rules {
        let star = || vec!["*".to_string()];
        if !Self::is_admin(user) {
            return Rules::default();
        }
        Rules {
            resource_rules: vec![ResourceRule {
                verbs: star(),
                api_groups: star(),
                resources: star(),
                resource_names: vec![],
            }],
            non_resource_rules: vec![NonResourceRule { verbs: star(), non_resource_urls: star() }],
            incomplete: false,
            evaluation_error: String::new(),
        }
    }
}

/// The authorization verb of a resource request (upstream's RequestInfo rules).
pub fn resource_verb(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if has_name => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
}

/// Upstream's 403 for a request `a` was not allowed to make, with the authorizer's `reason`.
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let user = &a.user.username;
    let mut msg = if !a.resource_request {
        format!("User {} cannot {} path {}", go_q(user), a.verb, go_q(&a.path))
    } else {
        let mut res = a.resource.clone();
        if !a.subresource.is_empty() {
            res = format!("{res}/{}", a.subresource);
        }
        if a.namespace.is_empty() {
            format!(
                "User {} cannot {} resource {} in API group {} at the cluster scope",
                go_q(user),
                a.verb,
                go_q(&res),
                go_q(&a.api_group)
            )
        } else {
            format!(
                "User {} cannot {} resource {} in API group {} in the namespace {}",
                go_q(user),
                a.verb,
                go_q(&res),
                go_q(&a.api_group),
                go_q(&a.namespace)
            )
        }
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    forbidden_for(&a.resource, &a.api_group, &a.name, &msg)
}

/// Upstream's `NewForbidden(groupResource, name, err)`.
pub fn forbidden_for(resource: &str, group: &str, name: &str, err: &str) -> ApiError {
    let gr = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
    let message = if gr.is_empty() {
        format!("forbidden: {err}")
    } else if name.is_empty() {
        format!("{gr} is forbidden: {err}")
    } else {
        format!("{gr} {} is forbidden: {err}", go_q(name))
    };
    let mut details = serde_json::Map::new();
    if !name.is_empty() {
        details.insert("name".into(), name.into());
    }
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    if !resource.is_empty() {
        details.insert("kind".into(), resource.into());
    }
    ApiError::forbidden(message).with_details(serde_json::Value::Object(details))
}

fn go_q(s: &str) -> String {
    yard_api::validation::go_quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(user: UserInfo) -> Attributes {
        Attributes {
            user,
            verb: "delete".into(),
            resource_request: true,
            api_group: "apps".into(),
            api_version: "v1".into(),
            resource: "deployments".into(),
            namespace: "team".into(),
            name: "web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_admin_token_is_the_kubeadm_admin_and_others_are_nobody() {
        let a = TokenAuthenticator::new(vec!["secret".into()]);
        let u = a.authenticate_token("secret").expect("admin");
        assert_eq!(u.username, "kubernetes-admin");
        assert!(u.groups.iter().any(|g| g == "system:authenticated"));
        assert_eq!(a.authenticate_token("secreT"), None);
        assert_eq!(a.authenticate_token(""), None);
        assert_eq!(bearer_token("Bearer abc "), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn admin_policy_allows_admins_and_has_no_opinion_on_others() {
        assert_eq!(AdminPolicy.authorize(&attrs(UserInfo::admin())).decision, Decision::Allow);
        let bob =
            UserInfo { username: "bob".into(), groups: vec!["system:authenticated".into()], ..Default::default() };
        assert_eq!(AdminPolicy.authorize(&attrs(bob.clone())).decision, Decision::NoOpinion);
        assert!(AdminPolicy.rules_for(&bob, "default").resource_rules.is_empty());
        assert_eq!(AdminPolicy.rules_for(&UserInfo::admin(), "default").resource_rules[0].verbs, vec!["*"]);
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let bob = UserInfo { username: "bob".into(), ..Default::default() };
        let e = forbidden(&attrs(bob.clone()), "");
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            r#"deployments.apps "web" is forbidden: User "bob" cannot delete resource "deployments" in API group "apps" in the namespace "team""#
        );
        let mut a = attrs(bob.clone());
        a.api_group.clear();
        a.resource = "nodes".into();
        a.subresource = "status".into();
        a.namespace.clear();
        a.name.clear();
        a.verb = "list".into();
        assert_eq!(
            forbidden(&a, "no RBAC policy matched").message,
            r#"nodes is forbidden: User "bob" cannot list resource "nodes/status" in API group "" at the cluster scope: no RBAC policy matched"#
        );
        let n = Attributes { user: bob, verb: "get".into(), path: "/metrics".into(), ..Default::default() };
        assert_eq!(forbidden(&n, "").message, r#"forbidden: User "bob" cannot get path "/metrics""#);
    }
}
