//! Controllers as clients see them, against one `yard up` cluster:
//! - who wrote what: the components name themselves as upstream's binaries do, so an object's
//!   managedFields say `kube-controller-manager` (ReplicaSets and Pods the workload controllers
//!   create) and `kubelet` (Pod status), never `unknown`;
//! - a namespace stuck in Terminating says why, in upstream's deletion conditions.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["manager"].as_str().unwrap_or("").to_string(),
                        m["operation"].as_str().unwrap_or("").to_string(),
                        m["subresource"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn field_managers_and_namespace_deletion_conditions() {
    let dir = TempDir::new("ctlcompat");
    let mut up =
        Up::start("e2ecc", &dir.0.join("data"), &["-f", examples_dir().join("hostnames.yaml").to_str().unwrap()]);
    field_managers(&up);
    namespace_conditions(&up);
    up.stop();
}

fn field_managers(up: &Up) {
    let rs: Value =
        serde_json::from_str(&up.k(&["get", "rs", "-l", "app=hostnames", "-o", "json", "--show-managed-fields"]))
            .unwrap();
    let rs = &rs["items"][0];
    let m = managers(rs);
    assert!(m.iter().any(|(n, op, _)| n == "kube-controller-manager" && op == "Update"), "ReplicaSet managers: {m:?}");

    let pod = eventually(Duration::from_secs(20), || {
        let pods: Value =
            serde_json::from_str(&up.k(&["get", "pods", "-l", "app=hostnames", "-o", "json", "--show-managed-fields"]))
                .ok()?;
        let p = pods["items"][0].clone();
        managers(&p).iter().any(|(n, _, s)| n == "kubelet" && s == "status").then_some(p)
    })
    .unwrap_or_else(|| panic!("no pod with a kubelet status manager: {}", up.k(&["get", "pods", "-o", "yaml"])));
    let m = managers(&pod);
    assert!(m.iter().any(|(n, op, s)| n == "kube-controller-manager" && op == "Update" && s.is_empty()), "{m:?}");
    assert!(m.iter().all(|(n, _, _)| n != "unknown" && !n.is_empty()), "{m:?}");
}

fn condition(ns: &Value, ty: &str) -> (String, String, String) {
    let c = ns["status"]["conditions"].as_array().and_then(|a| a.iter().find(|c| c["type"] == ty)).cloned();
    let c = c.unwrap_or_else(|| panic!("no {ty} condition: {ns}"));
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    (s("status"), s("reason"), s("message"))
}

fn namespace_conditions(up: &Up) {
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","namespace":"stuck","finalizers":["example.com/hold"]}}"#;
    up.k(&["create", "namespace", "stuck"]);
    let out = kubectl_in(up.netns.as_deref(), &up.kubeconfig, &["apply", "-f", "-"], Some(cm));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    up.k(&["delete", "namespace", "stuck", "--wait=false"]);
    let ns = eventually(Duration::from_secs(20), || {
        let ns: Value = serde_json::from_str(&up.k(&["get", "ns", "stuck", "-o", "json"])).ok()?;
        let has = ns["status"]["conditions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["type"] == "NamespaceContentRemaining" && c["status"] == "True"));
        has.then_some(ns)
    })
    .expect("NamespaceContentRemaining never became True");
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining"),
        (
            "True".into(),
            "SomeResourcesRemain".into(),
            "Some resources are remaining: configmaps. has 1 resource instances".into()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining"),
        (
            "True".into(),
            "SomeFinalizersRemain".into(),
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances".into()
        )
    );
    assert_eq!(condition(&ns, "NamespaceDeletionDiscoveryFailure").0, "False");
    let d = up.k(&["describe", "ns", "stuck"]);
    assert!(
        d.contains("Terminating") && d.contains("NamespaceContentRemaining") && d.contains("SomeResourcesRemain"),
        "{d}"
    );
    // Let go of the object: the namespace finishes.
    up.k(&["patch", "configmap", "held", "-n", "stuck", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let gone = eventually(Duration::from_secs(20), || {
        let o = up.kubectl(&["get", "ns", "stuck"]);
        (!o.status.success()).then_some(())
    });
    assert!(gone.is_some(), "namespace stuck was not removed: {}", up.k(&["get", "ns", "stuck", "-o", "yaml"]));
}
