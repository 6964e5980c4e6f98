//! Issue 22 (items 12 and 13): paged lists read one snapshot (the first page's revision rides in
//! the continue token), remainingItemCount, resourceVersion/resourceVersionMatch on list and get,
//! and the codes, reasons and messages upstream answers with when a snapshot was compacted (410),
//! a token is malformed (400) or a revision is not reached in time (504), on the embedded store
//! (whose history does not survive a restart) and on real etcd (scheduled compaction).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use yard_store::local_etcd::LocalEtcd;

const INCONSISTENT: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    // The client's own retries of 504 would hide the answers under test.
    cfg.default_retry = false;
    kube::Client::try_from(cfg).unwrap()
}

struct Reply {
    code: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn get(c: &kube::Client, path: &str) -> Reply {
    let req = http::Request::get(path).body(kube::client::Body::from(Vec::new())).unwrap();
    let resp = c.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    Reply { code, retry_after, body }
}

fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

fn rv_of(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"t": "lc"}}, "data": {"v": v}})).unwrap()
}

fn assert_status(r: &Reply, code: u16, reason: &str, message: &str) {
    assert_eq!(
        (r.code, r.body["kind"].as_str(), r.body["reason"].as_str(), r.body["message"].as_str()),
        (code, Some("Status"), Some(reason), Some(message)),
        "{}",
        r.body
    );
    assert_eq!(r.body["code"], code);
}

/// Set up namespace `ns` with c0..c5; walk it in pages of two while it changes under the walk.
/// Returns a first-page continue token whose revision later writes have passed.
async fn snapshot_walk(c: &kube::Client, ns: &str) -> String {
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    for i in 0..6 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), "1")).await.unwrap();
    }
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let p1 = get(c, &format!("{base}?limit=2")).await;
    assert_eq!(p1.code, 200, "{}", p1.body);
    assert_eq!(names(&p1.body), ["c0", "c1"]);
    assert_eq!(p1.body["metadata"]["remainingItemCount"], 4, "{}", p1.body["metadata"]);
    let r1 = rv_of(&p1.body);
    let tok = p1.body["metadata"]["continue"].as_str().unwrap().to_string();

    // Mid-walk: c2 deleted, c3 edited, c2b and c9 created.
    cms.delete("c2", &DeleteParams::default()).await.unwrap();
    cms.patch("c3", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("c2b", "new")).await.unwrap();
    cms.create(&PostParams::default(), &cm("c9", "new")).await.unwrap();

    let p2 = get(c, &format!("{base}?limit=2&continue={tok}")).await;
    assert_eq!(p2.code, 200, "{}", p2.body);
    assert_eq!(names(&p2.body), ["c2", "c3"], "the first page's snapshot: c2 still there, c2b not yet");
    assert_eq!(p2.body["items"][1]["data"]["v"], "1", "c3 as it was");
    assert!(rv_of(&p2.body["items"][1]) <= r1);
    assert_eq!(rv_of(&p2.body), r1, "every page reports the first page's revision");
    assert_eq!(p2.body["metadata"]["remainingItemCount"], 2);
    let tok2 = p2.body["metadata"]["continue"].as_str().unwrap();
    let p3 = get(c, &format!("{base}?limit=2&continue={tok2}")).await;
    assert_eq!(names(&p3.body), ["c4", "c5"], "c9 is not in the snapshot");
    assert!(p3.body["metadata"].get("continue").is_none() && p3.body["metadata"].get("remainingItemCount").is_none());

    // With a selector the count of what follows is unknown: upstream omits it, the token stays.
    let sel = get(c, &format!("{base}?limit=2&labelSelector=t%3Dlc")).await;
    assert_eq!(names(&sel.body), ["c0", "c1"]);
    assert!(sel.body["metadata"]["continue"].is_string());
    assert!(sel.body["metadata"].get("remainingItemCount").is_none(), "{}", sel.body["metadata"]);

    // Exact: the whole list at r1; a revision with a limit and no match is exact too.
    let ex = get(c, &format!("{base}?resourceVersion={r1}&resourceVersionMatch=Exact")).await;
    assert_eq!(ex.code, 200, "{}", ex.body);
    assert_eq!(names(&ex.body), ["c0", "c1", "c2", "c3", "c4", "c5"]);
    assert_eq!(rv_of(&ex.body), r1);
    let legacy = get(c, &format!("{base}?resourceVersion={r1}&limit=3")).await;
    assert_eq!((names(&legacy.body), rv_of(&legacy.body)), (vec!["c0".into(), "c1".into(), "c2".into()], r1));
    // Not older than r1: the latest.
    let nol = get(c, &format!("{base}?resourceVersion={r1}&resourceVersionMatch=NotOlderThan")).await;
    assert_eq!(names(&nol.body), ["c0", "c1", "c2b", "c3", "c4", "c5", "c9"]);
    assert!(rv_of(&nol.body) > r1);

    // Malformed tokens: 400 with upstream's words.
    let bad = get(c, &format!("{base}?limit=2&continue=!!!")).await;
    assert_status(
        &bad,
        400,
        "BadRequest",
        "invalid continue token: continue key is not valid: illegal base64 data at input byte 0",
    );
    let wrong = "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6Mywic3RhcnQiOiIuLi9zZWNyZXRzIn0"; // start "../secrets"
    let esc = get(c, &format!("{base}?limit=2&continue={wrong}")).await;
    assert_status(&esc, 400, "BadRequest", "invalid continue token: continue key is not valid: ../secrets");
    let both = get(c, &format!("{base}?limit=2&continue={tok}&resourceVersion={r1}")).await;
    assert_status(&both, 400, "BadRequest", "specifying resource version is not allowed when using continue");
    tok
}

/// A revision above the store's: the read waits up to 3 s for it, then 504 as upstream.
async fn future_revisions(c: &kube::Client, ns: &str) {
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let now = rv_of(&get(c, &base).await.body);
    let want = now + 1000;
    let t0 = Instant::now();
    let r = get(c, &format!("{base}?resourceVersion={want}&resourceVersionMatch=NotOlderThan")).await;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(2900) && waited < Duration::from_secs(10), "waited {waited:?}");
    let cur = rv_of(&get(c, &base).await.body);
    assert_status(&r, 504, "Timeout", &format!("Timeout: Too large resource version: {want}, current: {cur}"));
    assert_eq!(
        r.body["details"],
        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})
    );
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    let g = get(c, &format!("{base}/c0?resourceVersion={want}")).await;
    assert_status(&g, 504, "Timeout", &format!("Timeout: Too large resource version: {want}, current: {cur}"));
    // A revision reached while the read waits is served.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cms.create(&PostParams::default(), &cm("late", "1")).await.unwrap();
        })
    };
    let r = get(c, &format!("{base}/c0?resourceVersion={}", cur + 1)).await;
    writer.await.unwrap();
    assert_eq!(r.code, 200, "{}", r.body);
    let l = get(c, &format!("{base}?resourceVersion={}", cur + 1)).await;
    assert_eq!(l.code, 200, "{}", l.body);
    assert!(names(&l.body).contains(&"late".to_string()));
}

/// The snapshot behind `tok` is gone: 410 with a token to go on inconsistently, which works.
async fn expired_continue(c: &kube::Client, ns: &str, tok: &str) -> Reply {
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let r = get(c, &format!("{base}?limit=2&continue={tok}")).await;
    if r.code != 410 {
        return r;
    }
    assert_status(&r, 410, "Expired", INCONSISTENT);
    let fresh = r.body["metadata"]["continue"].as_str().expect("a continue token in the 410").to_string();
    let next = get(c, &format!("{base}?limit=2&continue={fresh}")).await;
    assert_eq!(next.code, 200, "{}", next.body);
    assert_eq!(names(&next.body), ["c2b", "c3"], "after c1, at the latest revision");
    assert_eq!(next.body["items"][1]["data"]["v"], "2");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_snapshots_and_their_expiry() {
    let dir = TempDir::new("lc-embedded");
    let mut api = ApiServer::start(&dir.0, &[]);
    let c = client(&api.kubeconfig).await;
    let tok = snapshot_walk(&c, "lc").await;
    let r1 = {
        let raw = base64_decode(&tok);
        serde_json::from_slice::<Value>(&raw).unwrap()["rv"].as_i64().unwrap()
    };
    future_revisions(&c, "lc").await;
    // kubectl's chunked get walks every page.
    let out = api.k(&["get", "configmaps", "-n", "lc", "--chunk-size=2", "-o", "name"]);
    assert_eq!(out.lines().count(), 8, "{out}");
    // The embedded store's history does not survive a restart: the snapshot is gone.
    api.restart();
    let c = client(&api.kubeconfig).await;
    let r = expired_continue(&c, "lc", &tok).await;
    assert_eq!(r.code, 410, "{}", r.body);
    let ex =
        get(&c, &format!("/api/v1/namespaces/lc/configmaps?resourceVersion={r1}&resourceVersionMatch=Exact")).await;
    assert_status(&ex, 410, "Expired", "The resourceVersion for the provided list is too old.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_snapshots_and_compaction() {
    let etcd = LocalEtcd::start(1).expect("start etcd");
    let dir = TempDir::new("lc-etcd");
    let api = ApiServer::start(&dir.0, &["--store", &etcd.url(), "--etcd-compaction-interval", "1"]);
    let c = client(&api.kubeconfig).await;
    let tok = snapshot_walk(&c, "lc").await;
    future_revisions(&c, "lc").await;
    // Scheduled compaction (each tick compacts to the previous tick's revision) passes the token's.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "lc");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = expired_continue(&c, "lc", &tok).await;
        if r.code == 410 {
            break;
        }
        assert_eq!(r.code, 200, "{}", r.body);
        assert!(Instant::now() < deadline, "compaction never reached the token's revision");
        cms.patch("c4", &PatchParams::default(), &Patch::Merge(json!({"data": {"tick": "x"}}))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    // URL-safe, unpadded: what upstream's tokens use.
    let table = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not URL-safe base64: {s}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | table(c) as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
