//! Escalation prevention (upstream's `pkg/registry/rbac/{role,clusterrole,rolebinding,
//! clusterrolebinding}/policybased` and `validation.ConfirmNoEscalation`): a Role or ClusterRole
//! may only be written with rules its writer already holds (in the role's namespace, or at the
//! cluster scope), unless the writer may `escalate` it; a binding only to a role whose rules the
//! writer holds in the binding's namespace, unless it may `bind` that role. Members of
//! `system:masters`, and writes without a user (the API server's own bootstrap), are not checked.

use serde_json::Value;

use super::{PolicyRule, PRIVILEGED_GROUP};
use crate::auth::{self, Attributes, Decision, UserInfo};
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};
use crate::State;

/// upstream's BreakdownRule: one verb, resource and name (or URL) per rule.
pub fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for g in &rule.api_groups {
        for r in &rule.resources {
            for v in &rule.verbs {
                let one = |names: Vec<String>| PolicyRule {
                    verbs: vec![v.clone()],
                    api_groups: vec![g.clone()],
                    resources: vec![r.clone()],
                    resource_names: names,
                    non_resource_urls: vec![],
                };
                if rule.resource_names.is_empty() {
                    out.push(one(vec![]));
                } else {
                    for n in &rule.resource_names {
                        out.push(one(vec![n.clone()]));
                    }
                }
            }
        }
    }
    for u in &rule.non_resource_urls {
        for v in &rule.verbs {
            out.push(PolicyRule { verbs: vec![v.clone()], non_resource_urls: vec![u.clone()], ..Default::default() });
        }
    }
    out
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(set, w))
}

fn resources_cover(owner: &[String], want: &[String]) -> bool {
    if has(owner, "*") || has_all(owner, want) {
        return true;
    }
    want.iter()
        .all(|path| has(owner, path) || path.split_once('/').is_some_and(|(_, sub)| has(owner, &format!("*/{sub}"))))
}

fn urls_cover(owner: &[String], want: &[String]) -> bool {
    want.iter().all(|p| owner.iter().any(|o| o == p || (o.ends_with('*') && p.starts_with(o.trim_end_matches('*')))))
}

/// upstream's ruleCovers (`sub` is one broken-down rule).
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs
        && groups
        && resources_cover(&owner.resources, &sub.resources)
        && names
        && urls_cover(&owner.non_resource_urls, &sub.non_resource_urls)
}

/// upstream's Covers: the broken-down rules of `servant` that no rule of `owner` covers.
pub fn uncovered(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    servant.iter().flat_map(breakdown).filter(|sub| !owner.iter().any(|o| rule_covers(o, sub))).collect()
}

/// upstream's CompactRules: rules of one group and one resource (nothing else) that differ only
/// by verb become one.
pub fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for r in rules {
        let is_simple = r.resource_names.is_empty()
            && r.non_resource_urls.is_empty()
            && r.api_groups.len() == 1
            && r.resources.len() == 1;
        if !is_simple {
            out.push(r);
            continue;
        }
        match simple.iter_mut().find(|s| s.api_groups == r.api_groups && s.resources == r.resources) {
            Some(s) => s.verbs.extend(r.verbs),
            None => simple.push(r),
        }
    }
    out.extend(simple);
    out
}

/// Go's `%q` of a `[]string`.
fn go_list(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| yard_api::validation::go_quote(s)).collect();
    format!("[{}]", q.join(" "))
}

/// upstream's ConfirmNoEscalation: Err(message) when `user`, holding `owner` (resolved with
/// `errors`), lacks some of `rules`.
pub fn confirm_no_escalation(
    user: &UserInfo,
    owner: &[PolicyRule],
    errors: &[String],
    rules: &[PolicyRule],
) -> Result<(), String> {
    let missing = uncovered(owner, rules);
    if missing.is_empty() {
        return Ok(());
    }
    let mut lines: Vec<String> = compact(missing).iter().map(PolicyRule::compact_string).collect();
    lines.sort();
    lines.dedup();
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        yard_api::validation::go_quote(&user.username),
        go_list(&user.groups),
        lines.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(msg)
}

fn rules_of(v: &Value) -> Vec<PolicyRule> {
    v.get("rules").and_then(Value::as_array).map(|a| a.iter().map(PolicyRule::from_json).collect()).unwrap_or_default()
}

fn allowed(state: &State, user: &UserInfo, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
    let a = Attributes {
        user: user.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: crate::registry::rbac::GROUP.into(),
        api_version: "*".into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    };
    state.authz.authorize(&a).decision == Decision::Allow
}

/// Check a create (`old` None) or update of an RBAC object `obj` of `r` in `ns`, named `name`
/// in the request's path (empty on a create), by the request's user.
pub fn check(state: &State, r: &Resource, ns: Option<&str>, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let Some(user) = auth::request_user() else { return Ok(()) };
    if has(&user.groups, PRIVILEGED_GROUP) {
        return Ok(());
    }
    let ns = ns.unwrap_or("");
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let path_name = if old.is_some() { name } else { "" };
    let forbidden = |msg: &str| auth::forbidden_for(r.plural, r.group, name, msg);
    match r.plural {
        "roles" | "clusterroles" => {
            if old.is_some_and(|o| {
                o.get("rules") == obj.get("rules") && o.get("aggregationRule") == obj.get("aggregationRule")
            }) {
                return Ok(());
            }
            if allowed(state, &user, "escalate", r.plural, ns, path_name) {
                return Ok(());
            }
            let Some((owner, errs)) = state.authz.escalation_rules(&user, ns) else { return Ok(()) };
            confirm_no_escalation(&user, &owner, &errs, &rules_of(obj)).map_err(|m| forbidden(&m))?;
            if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                let full = [
                    PolicyRule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        ..Default::default()
                    },
                    PolicyRule { verbs: vec!["*".into()], non_resource_urls: vec!["*".into()], ..Default::default() },
                ];
                if confirm_no_escalation(&user, &owner, &errs, &full).is_err() {
                    return Err(forbidden("must have cluster-admin privileges to use the aggregationRule"));
                }
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or("");
            let role = obj.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or("");
            if old.is_some_and(|o| o.get("roleRef") == obj.get("roleRef") && o.get("subjects") == obj.get("subjects")) {
                return Ok(());
            }
            let role_resource = if kind == "Role" { "roles" } else { "clusterroles" };
            if matches!(kind, "Role" | "ClusterRole") && allowed(state, &user, "bind", role_resource, ns, role) {
                return Ok(());
            }
            let Some(rules) = state.authz.role_ref_rules(kind, role, ns) else { return Ok(()) };
            let rules = match rules {
                Ok(r) => r,
                Err(_) => {
                    let rr = crate::registry::find(crate::registry::rbac::GROUP, "v1", role_resource)
                        .expect("rbac resource");
                    return Err(ApiError::not_found(rr, role));
                }
            };
            let Some((owner, errs)) = state.authz.escalation_rules(&user, ns) else { return Ok(()) };
            confirm_no_escalation(&user, &owner, &errs, &rules).map_err(|m| forbidden(&m))
        }
        _ => Ok(()),
    }
}
