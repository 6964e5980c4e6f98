//! Who wrote what: `yard up`'s components name themselves as upstream's binaries do, so an
//! object's managedFields say `kube-controller-manager` (ReplicaSets and Pods the workload
//! controllers create) and `kubelet` (Pod status), never `unknown`.

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
fn controllers_and_the_agent_write_under_upstreams_manager_names() {
    let dir = TempDir::new("fieldmgr");
    let mut up =
        Up::start("e2efm", &dir.0.join("data"), &["-f", examples_dir().join("hostnames.yaml").to_str().unwrap()]);
    let rs: Value = serde_json::from_str(&up.k(&["get", "rs", "-l", "app=hostnames", "-o", "json", "--show-managed-fields"])).unwrap();
    let rs = &rs["items"][0];
    let m = managers(rs);
    assert!(m.iter().any(|(n, op, _)| n == "kube-controller-manager" && op == "Update"), "ReplicaSet managers: {m:?}");

    let pod = eventually(Duration::from_secs(20), || {
        let pods: Value = serde_json::from_str(&up.k(&["get", "pods", "-l", "app=hostnames", "-o", "json", "--show-managed-fields"])).ok()?;
        let p = pods["items"][0].clone();
        managers(&p).iter().any(|(n, _, s)| n == "kubelet" && s == "status").then_some(p)
    })
    .unwrap_or_else(|| panic!("no pod with a kubelet status manager: {}", up.k(&["get", "pods", "-o", "yaml"])));
    let m = managers(&pod);
    assert!(m.iter().any(|(n, op, s)| n == "kube-controller-manager" && op == "Update" && s.is_empty()), "{m:?}");
    assert!(m.iter().all(|(n, _, _)| n != "unknown" && !n.is_empty()), "{m:?}");
    up.stop();
}
