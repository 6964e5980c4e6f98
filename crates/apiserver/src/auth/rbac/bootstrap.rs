//! Upstream's bootstrap policy (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`): the
//! default ClusterRoles (cluster-admin; admin, edit and view aggregated from the
//! `system:aggregate-to-*` roles; the discovery, basic-user, public-info, monitoring,
//! auth-delegator and issuer-discovery roles) and their ClusterRoleBindings, each labelled
//! `kubernetes.io/bootstrapping: rbac-defaults` and annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`. At startup each is created if missing;
//! one that exists and still carries the autoupdate annotation gets the rules (or subjects) it
//! lacks added, as upstream's reconciliation does; one whose annotation was set to anything else
//! is left alone.

use std::sync::Arc;

use serde_json::{json, Value};

use super::PolicyRule;
use crate::{Error, State};

pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const GROUP: &str = crate::registry::rbac::GROUP;

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn meta(name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in extra_labels {
        labels.insert((*k).into(), json!(v));
    }
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRole", "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: &[(&str, &str)], to: &str) -> Value {
    let mut r = cluster_role(name, labels, vec![]);
    r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]});
    r
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let to_admin = ("rbac.authorization.k8s.io/aggregate-to-admin", "true");
    let to_edit = ("rbac.authorization.k8s.io/aggregate-to-edit", "true");
    let to_view = ("rbac.authorization.k8s.io/aggregate-to-view", "true");
    vec![
        cluster_role("cluster-admin", &[], vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])]),
        aggregated("admin", &[], "admin"),
        aggregated("edit", &[to_admin], "edit"),
        aggregated("view", &[to_edit], "view"),
        cluster_role(
            "system:aggregate-to-admin",
            &[to_admin],
            vec![
                rule(&["authorization.k8s.io"], &["localsubjectaccessreviews"], &["create"]),
                rule(&[GROUP], &["rolebindings", "roles"], ALL),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[to_edit],
            vec![
                rule(
                    &[""],
                    &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"],
                    READ,
                ),
                rule(&[""], &["serviceaccounts"], &["impersonate"]),
                rule(&[""], &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], WRITE),
                rule(&[""], &["pods/eviction"], &["create"]),
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                    WRITE,
                ),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                rule(
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                    WRITE,
                ),
                rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
                rule(&["batch"], &["cronjobs", "jobs"], WRITE),
                rule(
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "ingresses",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                    ],
                    WRITE,
                ),
                rule(&["policy"], &["poddisruptionbudgets"], WRITE),
                rule(&["networking.k8s.io"], &["ingresses", "networkpolicies"], WRITE),
                rule(&["coordination.k8s.io"], &["leases"], ALL),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[to_view],
            vec![
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                    READ,
                ),
                rule(
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                    READ,
                ),
                rule(&[""], &["namespaces"], READ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                    READ,
                ),
                rule(&["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"], READ),
                rule(&["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"], READ),
                rule(
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                    ],
                    READ,
                ),
                rule(&["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"], READ),
                rule(&["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"], READ),
            ],
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(&["authorization.k8s.io"], &["subjectaccessreviews"], &["create"]),
            ],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(&["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"], &["create"]),
                rule(&["authentication.k8s.io"], &["selfsubjectreviews"], &["create"]),
            ],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![urls(
                &["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz", "/readyz/*"],
                &["get"],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(&["/healthz", "/livez", "/readyz", "/version", "/version/"], &["get"])],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![urls(&["/.well-known/openid-configuration", "/openid/v1/jwks"], &["get"])],
        ),
    ]
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups.iter().map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g})).collect();
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRoleBinding", "metadata": meta(name, &[]),
           "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects})
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding("system:basic-user", "system:basic-user", &["system:authenticated"]),
        binding("system:discovery", "system:discovery", &["system:authenticated"]),
        binding("system:monitoring", "system:monitoring", &["system:monitoring"]),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &["system:serviceaccounts"],
        ),
    ]
}

/// What an existing object lacks of its bootstrap version, if it should be updated.
pub fn reconciled(existing: &Value, want: &Value) -> Option<Value> {
    let auto = existing.pointer(&format!("/metadata/annotations/{}", AUTOUPDATE.replace('/', "~1")));
    if auto.and_then(Value::as_str) != Some("true") {
        return None;
    }
    let mut out = existing.clone();
    let mut changed = false;
    for part in ["labels", "annotations"] {
        if let Some(m) = want["metadata"][part].as_object() {
            for (k, v) in m {
                if out["metadata"][part].get(k) != Some(v) {
                    if !out["metadata"][part].is_object() {
                        out["metadata"][part] = json!({});
                    }
                    out["metadata"][part][k] = v.clone();
                    changed = true;
                }
            }
        }
    }
    if want.get("aggregationRule").is_some() {
        if out.get("aggregationRule") != want.get("aggregationRule") {
            // Selectors are only added (upstream unions them).
            let mut sels = out
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for s in want["aggregationRule"]["clusterRoleSelectors"].as_array().into_iter().flatten() {
                if !sels.contains(s) {
                    sels.push(s.clone());
                    changed = true;
                }
            }
            out["aggregationRule"] = json!({"clusterRoleSelectors": sels});
        }
    } else if let Some(want_rules) = want.get("rules").and_then(Value::as_array) {
        let have: Vec<PolicyRule> =
            out.get("rules").and_then(Value::as_array).into_iter().flatten().map(PolicyRule::from_json).collect();
        let missing: Vec<&Value> = want_rules
            .iter()
            .filter(|r| !super::escalation::uncovered(&have, &[PolicyRule::from_json(r)]).is_empty())
            .collect();
        if !missing.is_empty() {
            let mut rules = out.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
            rules.extend(missing.into_iter().cloned());
            out["rules"] = Value::Array(rules);
            changed = true;
        }
    }
    if let Some(want_subjects) = want.get("subjects").and_then(Value::as_array) {
        let mut subjects = out.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default();
        for s in want_subjects {
            if !subjects.iter().any(|x| x["kind"] == s["kind"] && x["name"] == s["name"]) {
                subjects.push(s.clone());
                changed = true;
            }
        }
        out["subjects"] = Value::Array(subjects);
    }
    changed.then_some(out)
}

/// Create or reconcile every bootstrap role and binding.
pub async fn reconcile(state: &Arc<State>) -> Result<(), Error> {
    for (plural, objs) in [("clusterroles", cluster_roles()), ("clusterrolebindings", cluster_role_bindings())] {
        let r = crate::registry::find(GROUP, "v1", plural).expect("rbac resource");
        for obj in objs {
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = r.key(None, &name);
            match state.store.get(&key).await? {
                None => crate::ensure(state, &r.api_version(), r.kind, None, obj).await?,
                Some(kv) => {
                    let Ok(existing) = serde_json::from_slice::<Value>(&kv.value) else { continue };
                    if let Some(updated) = reconciled(&existing, &obj) {
                        tracing::info!(%name, kind = r.kind, "reconciling bootstrap rbac object");
                        let op = yard_store::Op::Update {
                            key,
                            value: serde_json::to_vec(&updated).unwrap_or_default().into(),
                            expect: Some(kv.mod_revision),
                        };
                        if let Err(e) = state.store.write(op).await {
                            tracing::warn!(%name, error = %e, "reconciling bootstrap rbac object");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_adds_what_is_missing_only_when_autoupdate_is_true() {
        let want = cluster_roles().into_iter().find(|r| r["metadata"]["name"] == "system:basic-user").unwrap();
        assert!(reconciled(&want, &want).is_none(), "up to date");
        let mut trimmed = want.clone();
        trimmed["rules"] = json!([want["rules"][0].clone()]);
        let fixed = reconciled(&trimmed, &want).expect("a rule is missing");
        assert_eq!(fixed["rules"].as_array().unwrap().len(), 2);
        trimmed["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert!(reconciled(&trimmed, &want).is_none(), "opted out");
        let b =
            cluster_role_bindings().into_iter().find(|b| b["metadata"]["name"] == "system:public-info-viewer").unwrap();
        let mut one = b.clone();
        one["subjects"] = json!([b["subjects"][0].clone()]);
        assert_eq!(reconciled(&one, &b).unwrap()["subjects"], b["subjects"]);
    }
}
