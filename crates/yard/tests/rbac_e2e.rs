//! RBAC end to end: one `yard apiserver` with a `--token-auth-file` of non-admin users, driven by
//! the real kubectl as those users and as the admin. Upstream's 403 texts for requests,
//! impersonation and escalation; roles and bindings granting (resourceNames, subresources);
//! aggregated ClusterRoles; `kubectl auth can-i` (with `--as` and `--list`), `auth whoami`,
//! `auth reconcile`; the bootstrap roles; garbage credentials get 401 and the server goes on.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use yard_test_support::eventually;

const TOKENS: &str = "alice-token,alice,1001,\"dev,qa\"\nbob-token,bob,1002\nsa-token,system:serviceaccount:default:default,1003,\"system:serviceaccounts,system:serviceaccounts:default\"\n";

struct Cluster {
    _dir: TempDir,
    api: ApiServer,
}

impl Cluster {
    fn start(name: &str) -> Self {
        yard_test_support::require_root("the yard binary's e2e tests run as root");
        let dir = TempDir::new(name);
        let tokens = dir.0.join("tokens.csv");
        std::fs::write(&tokens, TOKENS).unwrap();
        let api = ApiServer::start(&dir.0, &["--token-auth-file", tokens.to_str().unwrap()]);
        Cluster { _dir: dir, api }
    }

    /// kubectl as the holder of `token` (the kubeconfig's admin token replaced).
    fn as_token(&self, token: &str, args: &[&str]) -> Output {
        let mut all = vec!["--token", token];
        all.extend_from_slice(args);
        self.api.kubectl(&all)
    }

    fn ok_as(&self, token: &str, args: &[&str]) -> String {
        let o = self.as_token(token, args);
        assert!(o.status.success(), "kubectl {args:?} as {token}: {}{}", stderr(&o), stdout_of(&o));
        stdout_of(&o)
    }

    /// kubectl as `token` that must fail; its stderr.
    fn fail_as(&self, token: &str, args: &[&str]) -> String {
        let o = self.as_token(token, args);
        assert!(!o.status.success(), "kubectl {args:?} as {token} succeeded: {}", stdout_of(&o));
        stderr(&o)
    }

    /// Wait until kubectl as `token` succeeds (RBAC objects reach the authorizer by a watch).
    fn eventually_ok(&self, token: &str, args: &[&str]) -> String {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(10), || {
            let o = self.as_token(token, args);
            last = format!("{}{}", stderr(&o), stdout_of(&o));
            o.status.success()
        });
        assert!(ok.is_some(), "kubectl {args:?} as {token} never succeeded: {last}");
        last
    }

    fn apply(&self, yaml: &str) {
        let o = self.api.k_stdin(&["apply", "-f", "-"], yaml);
        assert!(o.status.success(), "apply: {}", stderr(&o));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn rbac_grants_denies_and_prevents_escalation() {
    let c = Cluster::start("rbac");

    // Upstream's exact 403s, before any grant.
    let e = c.fail_as("sa-token", &["get", "pods", "-n", "default"]);
    assert_eq!(
        e.trim(),
        r#"Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:default:default" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    let e = c.fail_as("alice-token", &["get", "pods", "-n", "default"]);
    assert!(
        e.contains(
            r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
        ),
        "{e}"
    );
    let e = c.fail_as("alice-token", &["get", "namespaces"]);
    assert!(e.contains(r#"namespaces is forbidden: User "alice" cannot list resource "namespaces" in API group "" at the cluster scope"#), "{e}");
    // Discovery and the review APIs are everyone's (system:discovery, system:basic-user).
    c.ok_as("alice-token", &["api-resources"]);

    // kubectl create role / rolebinding grant it.
    c.api.k(&["create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods", "-n", "default"]);
    c.api.k(&["create", "rolebinding", "alice-reads", "--role=pod-reader", "--user=alice", "-n", "default"]);
    c.api.k(&[
        "create",
        "rolebinding",
        "sa-reads",
        "--role=pod-reader",
        "--serviceaccount=default:default",
        "-n",
        "default",
    ]);
    c.eventually_ok("alice-token", &["get", "pods", "-n", "default"]);
    c.eventually_ok("sa-token", &["get", "pods", "-n", "default"]);
    // Only in that namespace, and only those verbs.
    let e = c.fail_as("alice-token", &["get", "pods", "-n", "kube-system"]);
    assert!(e.contains(r#"in the namespace "kube-system""#), "{e}");
    c.api.k(&["run", "p", "--image=busybox:1.28", "-n", "default"]);
    let e = c.fail_as("alice-token", &["delete", "pod", "p", "-n", "default", "--wait=false"]);
    assert!(e.contains(r#"pods "p" is forbidden: User "alice" cannot delete resource "pods" in API group "" in the namespace "default""#), "{e}");

    // resourceNames: one ConfigMap, not the other, and no list.
    c.api.k(&["create", "configmap", "one", "-n", "default"]);
    c.api.k(&["create", "configmap", "two", "-n", "default"]);
    c.api.k(&[
        "create",
        "role",
        "cm-one",
        "--verb=get",
        "--resource=configmaps",
        "--resource-name=one",
        "-n",
        "default",
    ]);
    c.api.k(&["create", "rolebinding", "alice-cm", "--role=cm-one", "--user=alice", "-n", "default"]);
    c.eventually_ok("alice-token", &["get", "configmap", "one", "-n", "default"]);
    let e = c.fail_as("alice-token", &["get", "configmap", "two", "-n", "default"]);
    assert!(e.contains(r#"configmaps "two" is forbidden: User "alice" cannot get resource "configmaps" in API group "" in the namespace "default""#), "{e}");
    c.fail_as("alice-token", &["get", "configmaps", "-n", "default"]);

    // Subresources: bob may read pods/status and nothing else of pods.
    c.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: status-reader, namespace: default}\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods/status\"]\n  verbs: [\"get\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-status, namespace: default}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: status-reader}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}\n",
    );
    c.eventually_ok("bob-token", &["get", "pod", "p", "-n", "default", "--subresource=status"]);
    let e = c.fail_as("bob-token", &["get", "pod", "p", "-n", "default"]);
    assert!(
        e.contains(
            r#"pods "p" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "default""#
        ),
        "{e}"
    );

    // Aggregation: a labelled ClusterRole's rules appear in the aggregating one, as stored.
    c.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: agg-parent}\naggregationRule:\n  clusterRoleSelectors:\n  - matchLabels: {yard.test/agg: \"true\"}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: agg-child\n  labels: {yard.test/agg: \"true\"}\nrules:\n- apiGroups: [\"\"]\n  resources: [\"secrets\"]\n  verbs: [\"list\"]\n",
    );
    let ok = eventually(Duration::from_secs(10), || {
        c.api.k(&["get", "clusterrole", "agg-parent", "-o", "jsonpath={.rules}"]).contains("secrets")
    });
    assert!(ok.is_some(), "agg-parent never aggregated agg-child's rules");
    c.api.k(&["create", "clusterrolebinding", "bob-agg", "--clusterrole=agg-parent", "--user=bob"]);
    c.eventually_ok("bob-token", &["get", "secrets", "-A"]);
    let view = c.api.k(&["get", "clusterrole", "view", "-o", "json"]);
    assert!(view.contains("\"pods\"") && view.contains("endpointslices"), "view not aggregated: {view}");
    let admin = c.api.k(&["get", "clusterrole", "admin", "-o", "json"]);
    assert!(admin.contains("rolebindings") && admin.contains("pods/exec"), "admin not aggregated: {admin}");

    // kubectl auth can-i, as the admin for others (impersonation) and as the user itself.
    assert_eq!(c.api.k(&["auth", "can-i", "list", "pods", "-n", "default", "--as=alice"]).trim(), "yes");
    let no = c.api.kubectl(&["auth", "can-i", "list", "pods", "-n", "default", "--as=bob"]);
    assert_eq!(stdout_of(&no).trim(), "no");
    assert!(!no.status.success());
    assert_eq!(c.ok_as("alice-token", &["auth", "can-i", "get", "configmap/one", "-n", "default"]).trim(), "yes");
    let list = c.ok_as("alice-token", &["auth", "can-i", "--list", "-n", "default"]);
    let has_line = |res: &str, names: &str, verbs: &str| {
        let want = format!("{res} [] {names} {verbs}");
        list.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want)
    };
    assert!(has_line("pods", "[]", "[get list watch]"), "{list}");
    assert!(has_line("configmaps", "[one]", "[get]"), "{list}");
    assert!(has_line("selfsubjectaccessreviews.authorization.k8s.io", "[]", "[create]"), "{list}");
    assert!(!list.contains("*.*"), "{list}");

    // whoami: the token's user, and the impersonated one.
    let who = c.ok_as("alice-token", &["auth", "whoami"]);
    for want in ["alice", "1001", "dev", "qa", "system:authenticated"] {
        assert!(who.contains(want), "{want}: {who}");
    }
    let who = c.api.k(&["auth", "whoami", "--as=bob", "--as-group=testers"]);
    assert!(who.contains("bob") && who.contains("testers") && !who.contains("kubernetes-admin"), "{who}");
    c.api.k(&["get", "pods", "-n", "default", "--as=alice"]);
    // Impersonation is itself authorized.
    let e = c.fail_as("alice-token", &["get", "pods", "-n", "default", "--as=bob"]);
    assert!(
        e.contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{e}"
    );

    // Escalation: alice may write roles and bindings in default, but not grant more than she holds.
    c.api.k(&[
        "create",
        "role",
        "rbac-writer",
        "--verb=create,get,update,patch",
        "--resource=roles,rolebindings",
        "-n",
        "default",
    ]);
    c.api.k(&["create", "rolebinding", "alice-rbac", "--role=rbac-writer", "--user=alice", "-n", "default"]);
    c.eventually_ok("alice-token", &["get", "role", "pod-reader", "-n", "default"]);
    let e = c.fail_as(
        "alice-token",
        &["create", "role", "evil", "--verb=delete,get", "--resource=secrets,pods", "-n", "default"],
    );
    assert!(
        e.trim().ends_with(
        "roles.rbac.authorization.k8s.io \"evil\" is forbidden: user \"alice\" (groups=[\"dev\" \"qa\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"delete\" \"get\"]}"),
        "{e}"
    );
    // What she holds she may grant.
    c.ok_as("alice-token", &["create", "role", "fine", "--verb=get,list", "--resource=pods", "-n", "default"]);
    c.ok_as("alice-token", &["create", "rolebinding", "bob-fine", "--role=fine", "--user=bob", "-n", "default"]);
    // Binding a role she does not hold is refused, naming the missing rules.
    let e = c.fail_as(
        "alice-token",
        &["create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob", "-n", "default"],
    );
    assert!(
        e.contains(r#"rolebindings.rbac.authorization.k8s.io "bob-admin" is forbidden: user "alice" (groups=["dev" "qa" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{e}"
    );
    // With `escalate` on roles she may write any role; with `bind` on a ClusterRole, bind it.
    c.api.k(&["create", "role", "escalator", "--verb=escalate,bind", "--resource=roles,clusterroles", "-n", "default"]);
    c.api.k(&["create", "rolebinding", "alice-escalate", "--role=escalator", "--user=alice", "-n", "default"]);
    c.eventually_ok(
        "alice-token",
        &["create", "role", "evil", "--verb=delete,get", "--resource=secrets,pods", "-n", "default"],
    );
    c.ok_as(
        "alice-token",
        &["create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob", "-n", "default"],
    );
}

#[test]
fn bootstrap_policy_reconcile_and_bad_credentials() {
    let c = Cluster::start("rbacboot");
    // Every bootstrap role and binding exists, with upstream's labels and annotation.
    let out = c.api.k(&[
        "get",
        "clusterrole",
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:aggregate-to-admin",
        "system:aggregate-to-edit",
        "system:aggregate-to-view",
    ]);
    assert!(out.starts_with("NAME") && out.contains("CREATED AT"), "{out}");
    assert_eq!(out.lines().count(), 11, "{out}");
    let ca = c.api.k(&["get", "clusterrole", "cluster-admin", "-o", "yaml"]);
    assert!(ca.contains("rbac.authorization.kubernetes.io/autoupdate: \"true\""), "{ca}");
    assert!(ca.contains("kubernetes.io/bootstrapping: rbac-defaults"), "{ca}");
    let b = c.api.k(&["get", "clusterrolebinding", "cluster-admin", "system:public-info-viewer", "-o", "wide"]);
    let header: Vec<&str> = b.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"], "{b}");
    assert!(
        b.lines().any(|l| l.starts_with("cluster-admin ")
            && l.contains("ClusterRole/cluster-admin")
            && l.contains("system:masters")),
        "{b}"
    );
    assert!(b.contains("system:authenticated, system:unauthenticated"), "{b}");

    // kubectl auth reconcile -f: creates, then finds nothing to do.
    let manifest = c._dir.0.join("rbac.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: reconciled, namespace: default}\nrules:\n- apiGroups: [\"\"]\n  resources: [\"services\"]\n  verbs: [\"get\", \"list\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: reconciled, namespace: default}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reconciled}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}\n",
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let out = c.api.k(&["auth", "reconcile", "-f", m]);
    assert!(out.contains("role.rbac.authorization.k8s.io/reconciled reconciled"), "{out}");
    assert!(out.contains("rolebinding.rbac.authorization.k8s.io/reconciled reconciled"), "{out}");
    let again = c.api.k(&["auth", "reconcile", "-f", m]);
    assert!(again.contains("reconciled"), "{again}");
    c.api.k(&["get", "role,rolebinding", "reconciled", "-n", "default"]);
    c.eventually_ok("bob-token", &["get", "services", "-n", "default"]);

    // A restart reconciles the bootstrap policy again: a removed rule comes back.
    c.api.k(&[
        "patch",
        "clusterrole",
        "system:basic-user",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/rules/1"}]"#,
    ]);
    let mut api = c.api;
    api.restart();
    let basic = api.k(&["get", "clusterrole", "system:basic-user", "-o", "json"]);
    assert!(basic.contains("selfsubjectreviews"), "{basic}");

    // Garbage credentials are 401 and the server keeps serving.
    let url = format!("https://127.0.0.1:{}/api/v1/namespaces", api.port);
    for h in ["Authorization: garbage", "Authorization: Bearer nope", "Authorization: Basic Zm9vOmJhcg=="] {
        let o = Command::new("curl")
            .args(["-sk", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H", h, &url])
            .output()
            .unwrap();
        assert_eq!(stdout_of(&o), "401", "{h}");
    }
    let o =
        Command::new("curl").args(["-sk", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", &url]).output().unwrap();
    assert_eq!(stdout_of(&o), "401", "no credentials");
    let o = Command::new("curl")
        .args(["-sk", "-m", "10", "-w", "\n%{http_code}", &format!("https://127.0.0.1:{}/version", api.port)])
        .output()
        .unwrap();
    assert!(stdout_of(&o).ends_with("\n200"), "anonymous /version: {}", stdout_of(&o));
    api.k(&["get", "namespaces"]);
}
