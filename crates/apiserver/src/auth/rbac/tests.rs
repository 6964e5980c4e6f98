use serde_json::json;

use super::escalation::{compact, confirm_no_escalation, uncovered};
use super::*;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo { username: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), ..Default::default() }
}

fn res(u: &UserInfo, verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        user: u.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn rule(v: serde_json::Value) -> PolicyRule {
    PolicyRule::from_json(&v)
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.cluster_roles.insert(
        "cluster-admin".into(),
        Arc::new(vec![
            rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})),
            rule(json!({"nonResourceURLs": ["*"], "verbs": ["*"]})),
        ]),
    );
    p.cluster_roles.insert(
        "discovery".into(),
        Arc::new(vec![rule(json!({"nonResourceURLs": ["/api", "/api/*", "/healthz"], "verbs": ["get"]}))]),
    );
    p.cluster_roles.insert(
        "logs".into(),
        Arc::new(vec![rule(json!({"apiGroups": [""], "resources": ["*/log", "pods/status"], "verbs": ["get"]}))]),
    );
    p.roles.insert(
        ("team".into(), "pod-reader".into()),
        Arc::new(vec![
            rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]})),
            rule(json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get"]})),
        ]),
    );
    p.cluster_role_bindings.push(Binding::from_json(&json!({
        "metadata": {"name": "discovery"}, "roleRef": {"kind": "ClusterRole", "name": "discovery"},
        "subjects": [{"kind": "Group", "name": "system:authenticated"}]})));
    p.cluster_role_bindings.push(Binding::from_json(&json!({
        "metadata": {"name": "broken"}, "roleRef": {"kind": "ClusterRole", "name": "missing"},
        "subjects": [{"kind": "User", "name": "carol"}]})));
    p.role_bindings.entry("team".into()).or_default().push(Binding::from_json(&json!({
        "metadata": {"name": "readers", "namespace": "team"}, "roleRef": {"kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "bot"}]})));
    p.role_bindings.entry("team".into()).or_default().push(Binding::from_json(&json!({
        "metadata": {"name": "logs", "namespace": "team"}, "roleRef": {"kind": "ClusterRole", "name": "logs"},
        "subjects": [{"kind": "User", "name": "alice"}]})));
    p
}

#[test]
fn privileged_group_first_then_bindings_with_upstreams_reasons() {
    let a = RbacAuthorizer::fixed(policy());
    let admin = UserInfo::admin();
    let d = a.authorize(&res(&admin, "delete", "apps", "deployments", "", "x", "y"));
    assert_eq!((d.decision, d.reason.as_str()), (Decision::Allow, ""));
    let alice = user("alice", &["system:authenticated"]);
    let d = a.authorize(&res(&alice, "list", "", "pods", "", "team", ""));
    assert_eq!(d.decision, Decision::Allow);
    assert_eq!(d.reason, r#"RBAC: allowed by RoleBinding "readers/team" of Role "pod-reader" to User "alice""#);
    assert_eq!(a.authorize(&res(&alice, "list", "", "pods", "", "other", "")).decision, Decision::NoOpinion);
    assert_eq!(a.authorize(&res(&alice, "list", "", "pods", "", "", "")).decision, Decision::NoOpinion);
    assert_eq!(a.authorize(&res(&alice, "delete", "", "pods", "", "team", "p")).decision, Decision::NoOpinion);
    // resourceNames
    assert_eq!(a.authorize(&res(&alice, "get", "", "configmaps", "", "team", "cfg")).decision, Decision::Allow);
    assert_eq!(a.authorize(&res(&alice, "get", "", "configmaps", "", "team", "other")).decision, Decision::NoOpinion);
    assert_eq!(a.authorize(&res(&alice, "list", "", "configmaps", "", "team", "")).decision, Decision::NoOpinion);
    // subresources: "*/log" and "pods/status"; "pods" does not grant "pods/exec"
    assert_eq!(a.authorize(&res(&alice, "get", "", "pods", "log", "team", "p")).decision, Decision::Allow);
    assert_eq!(a.authorize(&res(&alice, "get", "", "pods", "status", "team", "p")).decision, Decision::Allow);
    assert_eq!(a.authorize(&res(&alice, "get", "", "pods", "exec", "team", "p")).decision, Decision::NoOpinion);
    // service accounts of the binding's namespace
    let bot = user("system:serviceaccount:team:bot", &[]);
    assert_eq!(a.authorize(&res(&bot, "get", "", "pods", "", "team", "p")).decision, Decision::Allow);
    let other_bot = user("system:serviceaccount:other:bot", &[]);
    assert_eq!(a.authorize(&res(&other_bot, "get", "", "pods", "", "team", "p")).decision, Decision::NoOpinion);
    // non-resource URLs with a trailing *
    let url = |p: &str| Attributes { user: alice.clone(), verb: "get".into(), path: p.into(), ..Default::default() };
    assert_eq!(a.authorize(&url("/api/v1")).decision, Decision::Allow);
    assert_eq!(a.authorize(&url("/healthz")).decision, Decision::Allow);
    assert_eq!(a.authorize(&url("/healthz/etcd")).decision, Decision::NoOpinion);
    assert_eq!(a.authorize(&url("/metrics")).decision, Decision::NoOpinion);
    // a binding to a missing role is a resolution error in the reason
    let carol = user("carol", &[]);
    let d = a.authorize(&res(&carol, "get", "", "pods", "", "team", "p"));
    assert_eq!(d.decision, Decision::NoOpinion);
    assert_eq!(d.reason, r#"RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found"#);
    let rules = a.rules_for(&carol, "team");
    assert!(rules.incomplete);
    assert_eq!(rules.evaluation_error, r#"clusterrole.rbac.authorization.k8s.io "missing" not found"#);
}

#[test]
fn rules_for_lists_cluster_then_namespace_rules() {
    let a = RbacAuthorizer::fixed(policy());
    let alice = user("alice", &["system:authenticated"]);
    let r = a.rules_for(&alice, "team");
    assert_eq!(r.non_resource_rules.len(), 1);
    assert_eq!(r.resource_rules.len(), 3);
    assert_eq!(r.resource_rules[0].resources, ["pods"]);
    assert!(!r.incomplete);
    assert!(a.rules_for(&alice, "other").resource_rules.is_empty());
}

#[test]
fn escalation_is_upstreams_covers_with_its_message() {
    let owner = vec![
        rule(json!({"apiGroups": [""], "resources": ["pods", "*/status"], "verbs": ["get", "list"]})),
        rule(json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]})),
        rule(json!({"nonResourceURLs": ["/api/*"], "verbs": ["get"]})),
    ];
    let ok = vec![
        rule(json!({"apiGroups": [""], "resources": ["pods", "services/status"], "verbs": ["get"]})),
        rule(json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]})),
        rule(json!({"nonResourceURLs": ["/api/v1"], "verbs": ["get"]})),
    ];
    assert!(uncovered(&owner, &ok).is_empty());
    let bad = vec![
        rule(json!({"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "delete"]})),
        rule(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]})),
    ];
    let missing = uncovered(&owner, &bad);
    assert_eq!(missing.len(), 4);
    assert_eq!(compact(missing).len(), 3);
    let u = user("bob", &["dev", "system:authenticated"]);
    let msg = confirm_no_escalation(&u, &owner, &[], &bad).unwrap_err();
    assert_eq!(
        msg,
        "user \"bob\" (groups=[\"dev\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
         {APIGroups:[\"\"], Resources:[\"configmaps\"], Verbs:[\"get\"]}\n\
         {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}\n\
         {APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"delete\"]}"
    );
}

/// Cost of one decision with the bootstrap policy plus 1,000 RoleBindings: the privileged
/// short circuit (the admin's path) and a RoleBinding match (a token-file user). Prints ns per
/// decision; run by name with `--ignored --nocapture` (timings are not asserted).
#[test]
#[ignore = "a measurement, not a check; run by name"]
fn authorize_cost() {
    let mut p = Policy::default();
    for r in bootstrap::cluster_roles() {
        p.cluster_roles.insert(
            r["metadata"]["name"].as_str().unwrap().into(),
            Arc::new(r["rules"].as_array().unwrap().iter().map(PolicyRule::from_json).collect()),
        );
    }
    p.cluster_role_bindings = bootstrap::cluster_role_bindings().iter().map(Binding::from_json).collect();
    for i in 0..1000 {
        p.role_bindings.entry("team".into()).or_default().push(Binding::from_json(&json!({
            "metadata": {"name": format!("rb{i}"), "namespace": "team"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": format!("user{i}")}]})));
    }
    p.cluster_roles.insert(
        "view".into(),
        Arc::new(vec![rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}))]),
    );
    let a = RbacAuthorizer::fixed(p);
    for (who, u) in [("admin", UserInfo::admin()), ("user999", user("user999", &["system:authenticated"]))] {
        let attrs = res(&u, "list", "", "pods", "", "team", "");
        assert_eq!(a.authorize(&attrs).decision, Decision::Allow);
        let n = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(a.authorize(std::hint::black_box(&attrs)));
        }
        println!("{who}: {:.0} ns per decision", t.elapsed().as_nanos() as f64 / n as f64);
    }
}
