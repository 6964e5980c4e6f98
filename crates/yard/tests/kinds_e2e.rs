//! Issue 23 acceptance: every kind in `yard_apiserver::registry::RESOURCES` is wired end to end.
//! One API server; per kind a minimal valid sample from the table below goes through create,
//! get, list, update (PUT with a label), watch from the list's resourceVersion, delete and a get
//! that is NotFound. A registered kind without a sample fails the test, so a kind added to the
//! table without being exercised here fails CI.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::TryStreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{json, Value};
use yard_apiserver::registry::{Resource, RESOURCES};

/// A minimal valid object per (apiVersion, kind), without apiVersion, kind and metadata (the
/// test adds them). A new kind needs one entry here.
fn sample(api_version: &str, kind: &str) -> Option<Value> {
    let containers = json!([{"name": "c", "image": "busybox:1.28"}]);
    Some(match (api_version, kind) {
        ("v1", "Namespace") => json!({}),
        ("v1", "Pod") => json!({"spec": {"containers": containers}}),
        ("v1", "Service") => json!({"spec": {"ports": [{"port": 80}]}}),
        ("v1", "Endpoints") => json!({"subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 80}]}]}),
        ("v1", "Event") => json!({
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Test", "message": "kinds_e2e", "type": "Normal",
        }),
        ("v1", "Node") => json!({}),
        ("v1", "PodTemplate") => json!({"template": {"spec": {"containers": containers}}}),
        ("v1", "ConfigMap") => json!({"data": {"k": "v"}}),
        ("v1", "Secret") => json!({"stringData": {"k": "v"}}),
        ("v1", "ServiceAccount") => json!({}),
        ("apps/v1", "Deployment" | "ReplicaSet") => json!({"spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "kinds"}},
            "template": {"metadata": {"labels": {"app": "kinds"}}, "spec": {"containers": containers}},
        }}),
        ("discovery.k8s.io/v1", "EndpointSlice") => json!({
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.2.3"]}],
            "ports": [{"port": 80, "protocol": "TCP"}],
        }),
        ("coordination.k8s.io/v1", "Lease") => json!({"spec": {"holderIdentity": "kinds"}}),
        ("events.k8s.io/v1", "Event") => json!({
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "yard.test/kinds", "reportingInstance": "kinds-1",
            "action": "Test", "reason": "Test", "note": "kinds_e2e", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
        }),
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => json!({
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        }),
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kinds"}],
        }),
        _ => return None,
    })
}

/// The kinds this test does not store: the review APIs (authorization.k8s.io,
/// authentication.k8s.io) are `create`-only; a create is answered from the authenticator and
/// authorizer and never stored, so there is nothing to get, list, update, watch or delete
/// (auth_reviews_e2e covers them).
fn exercised(r: &Resource) -> bool {
    !r.create_only()
}

/// A name per entry: the two Events (core and events.k8s.io) share one storage.
fn name_of(r: &Resource) -> String {
    let g = if r.group.is_empty() { "core" } else { r.group.split('.').next().unwrap_or(r.group) };
    format!("kinds-{}-{g}", r.singular)
}

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn is_not_found<T: std::fmt::Debug>(res: &Result<T, kube::Error>) -> bool {
    matches!(res, Err(kube::Error::Api(s)) if s.code == 404)
}

#[test]
fn every_registered_kind_has_a_sample() {
    let missing: Vec<String> = RESOURCES
        .iter()
        .filter(|r| exercised(r) && sample(&r.api_version(), r.kind).is_none())
        .map(|r| format!("{} {}", r.api_version(), r.kind))
        .collect();
    assert!(missing.is_empty(), "registered kinds without a sample in kinds_e2e.rs: {missing:?}");
}

async fn exercise(c: &kube::Client, r: &Resource) {
    let what = format!("{} {}", r.api_version(), r.kind);
    let ar = ApiResource {
        group: r.group.to_string(),
        version: r.version.to_string(),
        api_version: r.api_version(),
        kind: r.kind.to_string(),
        plural: r.plural.to_string(),
    };
    let api: Api<DynamicObject> =
        if r.namespaced { Api::namespaced_with(c.clone(), "default", &ar) } else { Api::all_with(c.clone(), &ar) };
    let name = name_of(r);
    let mut body = sample(&r.api_version(), r.kind).unwrap_or_else(|| panic!("{what}: no sample"));
    body["apiVersion"] = json!(r.api_version());
    body["kind"] = json!(r.kind);
    body["metadata"] = json!({"name": name});
    let obj: DynamicObject = serde_json::from_value(body).unwrap();

    // Create.
    let created = api.create(&PostParams::default(), &obj).await.unwrap_or_else(|e| panic!("{what}: create: {e}"));
    assert_eq!(created.metadata.name.as_deref(), Some(name.as_str()), "{what}");
    assert_eq!(
        created.metadata.namespace.is_some(),
        r.namespaced,
        "{what}: namespace {:?}",
        created.metadata.namespace
    );
    assert!(created.metadata.uid.is_some(), "{what}: no uid");

    // Get.
    let got = api.get(&name).await.unwrap_or_else(|e| panic!("{what}: get: {e}"));
    assert_eq!(got.metadata.uid, created.metadata.uid, "{what}");
    assert_eq!(got.types.as_ref().map(|t| t.kind.as_str()), Some(r.kind), "{what}");

    // List: the object is in it.
    let list = api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("{what}: list: {e}"));
    assert!(list.items.iter().any(|o| o.metadata.uid == created.metadata.uid), "{what}: not listed");
    let list_rv =
        list.metadata.resource_version.clone().unwrap_or_else(|| panic!("{what}: list has no resourceVersion"));

    // Update: PUT with a label added; the label round-trips.
    let mut changed = got.clone();
    changed.metadata.labels.get_or_insert_with(Default::default).insert("kinds-e2e".into(), "updated".into());
    let updated =
        api.replace(&name, &PostParams::default(), &changed).await.unwrap_or_else(|e| panic!("{what}: update: {e}"));
    let label = |o: &DynamicObject| o.metadata.labels.as_ref().and_then(|l| l.get("kinds-e2e")).cloned();
    assert_eq!(label(&updated).as_deref(), Some("updated"), "{what}: update");
    let again = api.get(&name).await.unwrap_or_else(|e| panic!("{what}: get after update: {e}"));
    assert_eq!(label(&again).as_deref(), Some("updated"), "{what}: label did not round-trip");

    // Watch from the list's resourceVersion: the update is seen (MODIFIED), then the delete.
    let mut watch = Box::pin(
        api.watch(&WatchParams::default().timeout(30), &list_rv).await.unwrap_or_else(|e| panic!("{what}: watch: {e}")),
    );
    let mut next_of_ours = async || loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.try_next())
            .await
            .unwrap_or_else(|_| panic!("{what}: no watch event"))
            .unwrap_or_else(|e| panic!("{what}: watch: {e}"))
            .unwrap_or_else(|| panic!("{what}: watch ended"));
        let o = match &ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("{what}: watch error {e:?}"),
        };
        if o.metadata.uid == created.metadata.uid {
            return ev;
        }
    };
    let ev = next_of_ours().await;
    assert!(
        matches!(&ev, WatchEvent::Modified(o) if label(o).as_deref() == Some("updated")),
        "{what}: first watch event {ev:?}"
    );

    // Delete; then get is NotFound. A kind with a `finalize` subresource (Namespace) waits for its
    // spec finalizers: `yard apiserver` runs no namespace controller, so the test finalizes it as
    // that controller would, through the subresource.
    api.delete(&name, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("{what}: delete: {e}"));
    if r.has_sub("finalize") {
        let mut terminating = api.get(&name).await.unwrap_or_else(|e| panic!("{what}: get terminating: {e}"));
        assert!(terminating.metadata.deletion_timestamp.is_some(), "{what}: not terminating");
        terminating.data["spec"]["finalizers"] = json!([]);
        let body = serde_json::to_vec(&terminating).unwrap();
        let req = http::Request::put(format!("/api/{}/namespaces/{name}/finalize", r.version))
            .header("Content-Type", "application/json")
            .body(body)
            .unwrap();
        c.request::<Value>(req).await.unwrap_or_else(|e| panic!("{what}: finalize: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = api.get(&name).await;
        if is_not_found(&res) {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: still there after delete: {res:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        if let WatchEvent::Deleted(_) = next_of_ours().await {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_kind_is_served() {
    let dir = TempDir::new("kinds");
    let api = ApiServer::start(&dir.0, &[]);
    let c = client(&api.kubeconfig).await;
    let mut done = Vec::new();
    for r in RESOURCES.iter().filter(|r| exercised(r)) {
        exercise(&c, r).await;
        done.push(format!("{} {}", r.api_version(), r.kind));
    }
    eprintln!("exercised: {done:?}");
    assert!(done.len() >= 15, "{done:?}");
}
