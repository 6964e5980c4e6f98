//! Issue 22 acceptance: client libraries other than kubectl and the official Python client against one
//! shared `yard up` cluster. Each library's check script (tests/compat: kr8s, kubernetes_asyncio,
//! lightkube, @kubernetes/client-node) and the in-process kube-rs check print one `PASS`/`FAIL`/`SKIP`
//! line per check; a test passes when every expected check is PASS or SKIP (a SKIP is only allowed
//! where the library has no API for the thing). The cluster keeps its objects in a local etcd so that
//! the driver can compact history: `YARD_COMPAT_OLD_RV` is a resourceVersion older than the compaction,
//! and a watch from it must end in 410 Expired.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use common::*;
use yard_store::local_etcd::LocalEtcd;

/// Checks every library's run must report (as PASS, or SKIP for a true library limitation).
const CHECKS: &[&str] = &[
    "crud",
    "list_limit_continue",
    "watch",
    "watch_410_relist",
    "server_side_apply",
    "patch_json_merge_strategic",
    "wait_deployment_available",
    "exec",
    "logs",
    "port_forward",
    "cleanup",
];

/// One `yard up` cluster on a local etcd, shared by the tests of this file while any of them runs.
struct Cluster {
    up: Up,
    /// Kept running for the cluster's lifetime (dropped after `up`).
    _etcd: LocalEtcd,
    old_rv: String,
    _dir: TempDir,
}

static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// A test's hold on the shared cluster; the last one released stops it, under the lock, so that a
/// test starting meanwhile never races a cluster of the same name that is still shutting down.
struct Lease(Option<Arc<Cluster>>);

impl std::ops::Deref for Lease {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        self.0.as_ref().unwrap()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        self.0.take();
    }
}

fn cluster() -> Lease {
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = g.upgrade() {
        return Lease(Some(c));
    }
    let c = Arc::new(start_cluster());
    *g = Arc::downgrade(&c);
    Lease(Some(c))
}

fn etcd_revision(etcd: &LocalEtcd) -> i64 {
    let out = Command::new("etcdctl")
        .arg(format!("--endpoints={}", etcd.endpoints()[0]))
        .args(["endpoint", "status", "-w", "json"])
        .output()
        .expect("etcdctl endpoint status");
    assert!(out.status.success(), "etcdctl endpoint status: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
    v[0]["Status"]["header"]["revision"].as_i64().expect("revision in etcdctl output")
}

fn etcdctl(etcd: &LocalEtcd, args: &[&str]) {
    let out = Command::new("etcdctl")
        .arg(format!("--endpoints={}", etcd.endpoints()[0]))
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn start_cluster() -> Cluster {
    let etcd = LocalEtcd::start(1).expect("start etcd");
    // Revisions older than both the API server's watch window (it starts at the revision the server
    // found when it started, as kube-apiserver's watch cache does) and etcd's compaction: a few
    // writes before the cluster starts, then compaction of that history. A watch from one of those
    // revisions must end in 410 Expired, on every client.
    let first = etcd_revision(&etcd) + 1;
    for i in 0..3 {
        etcdctl(&etcd, &["put", "/compat-e2e/history", &i.to_string()]);
    }
    let rev = etcd_revision(&etcd);
    assert!(first < rev, "revisions {first} {rev}");
    etcdctl(&etcd, &["compact", &rev.to_string()]);
    let dir = TempDir::new("compat");
    let data = dir.0.join("data");
    let name = format!("cmp{}", std::process::id() % 100_000);
    let up = Up::start(&name, &data, &["--store", &etcd.url()]);
    Cluster { up, _etcd: etcd, old_rv: first.to_string(), _dir: dir }
}

fn compat_dir() -> PathBuf {
    repo_root().join("tests/compat")
}

/// Run a check program with the cluster's kubeconfig; returns (success, combined output).
fn run_check(c: &Cluster, program: &Path, args: &[&Path]) -> (bool, String) {
    let log = TempDir::new("compat-out");
    let out_path = log.0.join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(compat_dir())
        .env("KUBECONFIG", &c.up.kubeconfig)
        .env("YARD_COMPAT_OLD_RV", &c.old_rv)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let deadline = Instant::now() + Duration::from_secs(400);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(st) => (st.success(), text),
        None => (false, format!("{text}\n(killed after 400 s)")),
    }
}

/// Every expected check reported PASS or SKIP, none FAIL, and the program agreed (exit status).
fn assert_report(library: &str, ok: bool, output: &str) {
    println!("--- {library} ---\n{output}");
    let lines: Vec<&str> =
        output.lines().filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("SKIP ")).collect();
    let failed: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("FAIL ")).collect();
    let missing: Vec<&str> = CHECKS
        .iter()
        .copied()
        .filter(|c| {
            !lines.iter().any(|l| {
                let rest = &l[5..];
                (l.starts_with("PASS ") && rest == *c) || (l.starts_with("SKIP ") && rest.starts_with(&format!("{c}:")))
            })
        })
        .collect();
    assert!(
        failed.is_empty() && missing.is_empty() && ok,
        "{library}: failed {failed:#?}; not reported as PASS/SKIP {missing:?}; exit ok {ok} (full output above)"
    );
}

fn python_check(script: &str) {
    let c = cluster();
    let (ok, out) = run_check(&c, &python_bin(), &[&compat_dir().join(script)]);
    assert_report(script, ok, &out);
}

#[test]
fn kr8s() {
    python_check("kr8s_check.py");
}

#[test]
fn kubernetes_asyncio() {
    python_check("asyncio_check.py");
}

#[test]
fn lightkube() {
    python_check("lightkube_check.py");
}

#[test]
fn client_node() {
    let c = cluster();
    let script = compat_dir().join("js/client_node_check.mjs");
    assert!(
        compat_dir().join("js/node_modules/@kubernetes/client-node").exists(),
        "tests/compat/js/node_modules missing: run scripts/install-deps.sh (npm ci)"
    );
    let (ok, out) = run_check(&c, Path::new("node"), &[&script]);
    assert_report("client-node", ok, &out);
}

#[test]
fn kube_rs() {
    let c = cluster();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let lines = rt.block_on(kube_check::run(c.up.kubeconfig.clone(), c.old_rv.clone()));
    let failed = lines.iter().any(|l| l.starts_with("FAIL "));
    assert_report("kube-rs", !failed, &lines.join("\n"));
}

/// The kube-rs check, in process: kube 5 (the workspace's own client) with its typed calls.
/// kube's JSON patch (`Patch::Json`) sits behind its `jsonpatch` cargo feature, which the
/// workspace does not enable; that one patch is sent with kube's `Client::request` instead.
mod kube_check {
    use std::future::Future;
    use std::path::PathBuf;
    use std::time::Duration;

    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
    use kube::api::{
        Api, AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
    };
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use kube::{Client, Config};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const NS: &str = "compat-kube-rs";

    type R = anyhow::Result<()>;

    async fn check<F: Future<Output = R>>(out: &mut Vec<String>, name: &str, secs: u64, f: F) -> bool {
        let line = match tokio::time::timeout(Duration::from_secs(secs), f).await {
            Ok(Ok(())) => format!("PASS {name}"),
            Ok(Err(e)) => format!("FAIL {name}: {}", format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ")),
            Err(_) => format!("FAIL {name}: timed out after {secs}s"),
        };
        let ok = line.starts_with("PASS");
        out.push(line);
        ok
    }

    fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": NS}, "data": data})).unwrap()
    }

    fn ensure(cond: bool, why: impl FnOnce() -> String) -> R {
        if cond {
            Ok(())
        } else {
            Err(anyhow::anyhow!(why()))
        }
    }

    pub async fn run(kubeconfig: PathBuf, old_rv: String) -> Vec<String> {
        let mut out = Vec::new();
        let kc = match Kubeconfig::read_from(&kubeconfig) {
            Ok(k) => k,
            Err(e) => return vec![format!("FAIL connect: {e}")],
        };
        let client = match Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.map(Client::try_from)
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return vec![format!("FAIL connect: {e}")],
            Err(e) => return vec![format!("FAIL connect: {e}")],
        };
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
        let nss: Api<Namespace> = Api::all(client.clone());
        let pp = PostParams::default();

        let setup = async {
            nss.create(&pp, &serde_json::from_value(json!({"metadata": {"name": NS}}))?).await?;
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": "echo", "labels": {"app": "echo"}},
                "spec": {"containers": [{"name": "main", "image": "busybox:1.36",
                    "command": ["sh", "-c", "echo compat-log-line; exec sleep 3600"]}]}
            }))?;
            pods.create(&pp, &pod).await?;
            let dep: Deployment = serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2", "ports": [{"containerPort": 80}]}]}}}
            }))?;
            deps.create(&pp, &dep).await?;
            Ok(())
        };
        if !check(&mut out, "setup", 30, setup).await {
            return out;
        }

        check(&mut out, "crud", 30, async {
            cms.create(&pp, &cm("crud", json!({"a": "1"}))).await?;
            let mut got = cms.get("crud").await?;
            ensure(got.data.as_ref().and_then(|d| d.get("a")).map(String::as_str) == Some("1"), || {
                format!("get: {:?}", got.data)
            })?;
            let l = cms.list(&ListParams::default()).await?;
            ensure(l.items.iter().any(|i| i.metadata.name.as_deref() == Some("crud")), || "list lacks crud".into())?;
            got.data = Some([("a".to_string(), "2".to_string())].into());
            let upd = cms.replace("crud", &pp, &got).await?;
            ensure(upd.data == got.data, || format!("update: {:?}", upd.data))?;
            cms.delete("crud", &DeleteParams::default()).await?;
            ensure(cms.get_opt("crud").await?.is_none(), || "still exists after delete".into())
        })
        .await;

        check(&mut out, "list_limit_continue", 30, async {
            for i in 0..5 {
                cms.create(&pp, &cm(&format!("page-{i}"), json!({"i": i.to_string()}))).await?;
            }
            let (mut seen, mut token, mut pages) = (Vec::new(), None::<String>, 0);
            loop {
                let mut lp = ListParams::default().limit(2);
                if let Some(t) = &token {
                    lp = lp.continue_token(t);
                }
                let page = cms.list(&lp).await?;
                pages += 1;
                ensure(page.items.len() <= 2, || format!("page of {} with limit=2", page.items.len()))?;
                seen.extend(page.items.iter().filter_map(|i| i.metadata.name.clone()));
                token = page.metadata.continue_.filter(|t| !t.is_empty());
                if token.is_none() {
                    break;
                }
                ensure(pages < 20, || "more than 20 pages".into())?;
            }
            let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
            ensure((0..5).all(|i| unique.contains(&format!("page-{i}"))), || format!("paged names {seen:?}"))?;
            ensure(unique.len() == seen.len(), || format!("duplicates across pages: {seen:?}"))?;
            ensure(pages >= 3, || format!("only {pages} pages"))
        })
        .await;

        let watch_added = |since: String, name: &'static str| {
            let cms = cms.clone();
            async move {
                let mut stream = cms.watch(&WatchParams::default().timeout(20), &since).await?.boxed();
                cms.create(&PostParams::default(), &cm(name, json!({"w": "1"}))).await?;
                while let Some(ev) = stream.try_next().await? {
                    match ev {
                        WatchEvent::Added(o) if o.metadata.name.as_deref() == Some(name) => return Ok(()),
                        WatchEvent::Error(e) => anyhow::bail!("watch error {e:?}"),
                        _ => {}
                    }
                }
                anyhow::bail!("watch ended without ADDED {name}")
            }
        };

        check(&mut out, "watch", 30, async {
            let rv = cms.list(&ListParams::default()).await?.metadata.resource_version.unwrap_or_default();
            watch_added(rv, "watched").await
        })
        .await;

        check(&mut out, "watch_410_relist", 30, async {
            let mut stream = cms.watch(&WatchParams::default().timeout(5), &old_rv).await?.boxed();
            match stream.try_next().await? {
                Some(WatchEvent::Error(e)) => {
                    ensure(e.code == 410 && e.reason == "Expired", || format!("status {e:?}"))?;
                }
                other => anyhow::bail!("watch from a compacted resourceVersion: {other:?}"),
            }
            let rv = cms.list(&ListParams::default()).await?.metadata.resource_version.unwrap_or_default();
            watch_added(rv, "after-410").await
        })
        .await;

        check(&mut out, "server_side_apply", 30, async {
            let mut last = None;
            for v in ["v1", "v2"] {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": NS}, "data": {"k": v}});
                let o = cms.patch("ssa", &PatchParams::apply("kube-rs-compat").force(), &Patch::Apply(body)).await?;
                ensure(o.data.as_ref().and_then(|d| d.get("k")).map(String::as_str) == Some(v), || format!("apply {v}: {:?}", o.data))?;
                last = Some(o);
            }
            let managers: Vec<String> =
                last.unwrap().metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
            ensure(managers.iter().any(|m| m == "kube-rs-compat"), || format!("managers {managers:?}"))
        })
        .await;

        check(&mut out, "patch_json_merge_strategic", 30, async {
            cms.create(&pp, &cm("patched", json!({"a": "1"}))).await?;
            let req = http::Request::patch(format!("/api/v1/namespaces/{NS}/configmaps/patched"))
                .header("Content-Type", "application/json-patch+json")
                .body(serde_json::to_vec(&json!([{"op": "add", "path": "/data/b", "value": "2"}]))?)?;
            let o: ConfigMap = client.request(req).await?;
            let want: std::collections::BTreeMap<String, String> = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
            ensure(o.data.as_ref() == Some(&want), || format!("json patch: {:?}", o.data))?;
            let o = cms.patch("patched", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": null, "c": "3"}}))).await?;
            let want: std::collections::BTreeMap<String, String> = [("b".into(), "2".into()), ("c".into(), "3".into())].into();
            ensure(o.data.as_ref() == Some(&want), || format!("merge patch: {:?}", o.data))?;
            let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "env": [{"name": "X", "value": "1"}]}]}}}});
            let d = deps.patch("web", &PatchParams::default(), &Patch::Strategic(smp)).await?;
            let cs = d.spec.template.spec.unwrap_or_default().containers;
            ensure(cs.len() == 1 && cs[0].image.as_deref() == Some("nginx:1.14.2"), || format!("strategic containers: {cs:?}"))?;
            let env: Vec<_> = cs[0].env.clone().unwrap_or_default().into_iter().map(|e| (e.name, e.value)).collect();
            ensure(env == vec![("X".to_string(), Some("1".to_string()))], || format!("strategic env: {env:?}"))
        })
        .await;

        check(&mut out, "wait_deployment_available", 90, async {
            let available = |d: Option<&Deployment>| {
                d.and_then(|d| d.status.as_ref()).and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"))
                })
            };
            kube::runtime::wait::await_condition(deps.clone(), "web", available).await?;
            Ok(())
        })
        .await;

        let running = |name: Option<&'static str>| {
            let pods = pods.clone();
            async move {
                for _ in 0..600 {
                    let list = match name {
                        Some(n) => vec![pods.get(n).await?],
                        None => pods.list(&ListParams::default().labels("app=web")).await?.items,
                    };
                    if let Some(p) =
                        list.into_iter().find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                    {
                        return Ok::<_, anyhow::Error>(p.metadata.name.unwrap_or_default());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                anyhow::bail!("no running pod {name:?}")
            }
        };

        check(&mut out, "exec", 30, async {
            let pod = running(Some("echo")).await?;
            let ap = AttachParams::default().stdout(true).stderr(true).stdin(false);
            let mut proc = pods.exec(&pod, ["echo", "hello-from-exec"], &ap).await?;
            let mut stdout = proc.stdout().unwrap();
            let status = proc.take_status().unwrap();
            let mut text = String::new();
            stdout.read_to_string(&mut text).await?;
            let st = status.await;
            proc.join().await?;
            ensure(text.trim() == "hello-from-exec", || format!("stdout {text:?}"))?;
            ensure(st.as_ref().and_then(|s| s.status.as_deref()) == Some("Success"), || format!("status {st:?}"))
        })
        .await;

        check(&mut out, "logs", 30, async {
            let pod = running(Some("echo")).await?;
            let text = pods.logs(&pod, &LogParams::default()).await?;
            ensure(text.contains("compat-log-line"), || format!("logs {text:?}"))
        })
        .await;

        check(&mut out, "port_forward", 20, async {
            let pod = running(None).await?;
            let mut pf = pods.portforward(&pod, &[80]).await?;
            let mut s = pf.take_stream(80).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            drop(s);
            pf.abort();
            let text = String::from_utf8_lossy(&buf);
            let first = text.split("\r\n").next().unwrap_or("");
            ensure(first.starts_with("HTTP/1.") && first.contains(" 200"), || {
                format!("not an HTTP 200 response: {first:?}")
            })
        })
        .await;

        check(&mut out, "cleanup", 30, async {
            nss.delete(NS, &DeleteParams::default()).await?;
            Ok(())
        })
        .await;
        out
    }
}
