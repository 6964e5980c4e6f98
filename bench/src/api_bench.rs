//! API server benchmark (issue 2): create N Services through the API (kube-rs client, 16 in
//! flight) and report throughput and p50/p99 latency; time `kubectl get svc -A` for all of them;
//! and measure p99 delivery latency of one change to 100 concurrent watchers. The API server runs
//! in this process on loopback with its embedded store in a temporary directory.
//!
//! Usage: cargo run --release -p yard-bench --bin api-bench -- [N] (default 10000)

/// The allocator of the `yard` binary, so in-process components behave as they do there.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use yard_test_support::TempDir;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    // Removed when main returns, error or not (after the API server, which is dropped first).
    let scratch = TempDir::new("api-bench");
    let dir = scratch.0.clone();
    let (api, client) = yard_test_support::apiserver::start_in(&dir).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");

    // Creates.
    let started = Instant::now();
    let lat: Vec<f64> = futures::stream::iter(0..n)
        .map(|i| {
            let svcs = svcs.clone();
            async move {
                let s: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")}, "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}})).unwrap();
                let t = Instant::now();
                svcs.create(&PostParams::default(), &s).await.expect("create");
                t.elapsed().as_secs_f64() * 1000.0
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let total = started.elapsed().as_secs_f64();
    let mut l = lat.clone();
    println!(
        "create {n} Services: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms (target p99 < 5 ms)",
        n as f64 / total,
        pct(&mut l, 0.5),
        pct(&mut l, 0.99)
    );

    // kubectl get svc -A.
    let kubectl = std::env::var("KUBECTL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/kubectl").to_string());
    // stdout to a file (as `kubectl get svc -A > out`), then to a pipe this process drains (as
    // `kubectl get svc -A | grep x`): kubectl writes its table a line at a time, so a pipe adds
    // ~10,000 writes that each wake the reader.
    let out_path = dir.join("kubectl-get.out");
    // One `kubectl get svc -A`, its stdout into `file` (None: a pipe read here); milliseconds.
    let get_all = |file: Option<&std::path::Path>| -> anyhow::Result<f64> {
        let mut cmd = std::process::Command::new(&kubectl);
        cmd.env("KUBECONFIG", &api.kubeconfig).args(["get", "svc", "-A"]);
        if let Some(f) = file {
            cmd.stdout(std::fs::File::create(f)?);
        }
        let t = Instant::now();
        let out = cmd.output()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(out.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
        let printed = match file {
            Some(f) => std::fs::read(f)?,
            None => out.stdout,
        };
        let lines = printed.iter().filter(|b| **b == b'\n').count();
        anyhow::ensure!(lines > n, "kubectl printed {lines} lines");
        Ok(ms)
    };
    let mut times = (0..5).map(|_| get_all(Some(&out_path))).collect::<anyhow::Result<Vec<f64>>>()?;
    let mut piped = (0..3).map(|_| get_all(None)).collect::<anyhow::Result<Vec<f64>>>()?;
    println!(
        "kubectl get svc -A ({} Services) > file: best {:.0} ms, median {:.0} ms (target < 300 ms); into a pipe: median {:.0} ms",
        n + 1,
        times.iter().cloned().fold(f64::MAX, f64::min),
        pct(&mut times, 0.5),
        pct(&mut piped, 0.5)
    );
    let mut tt = Vec::new();
    for _ in 0..3 {
        let req = http::Request::get("/api/v1/services")
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())?;
        let t = Instant::now();
        let body = client.request_text(req).await?;
        tt.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(body.len() > 1000);
    }
    println!(
        "server Table response for all Services (bytes received, not decoded): median {:.0} ms",
        pct(&mut tt, 0.5)
    );
    let t = Instant::now();
    let list = svcs.list(&Default::default()).await?;
    println!(
        "API list of {} Services (kube-rs, JSON decode included): {:.0} ms",
        list.items.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );

    // Watch fan-out: 100 watchers on ConfigMaps, then one write at a time, 50 times.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms.list(&Default::default()).await?.metadata.resource_version.unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    for _ in 0..100 {
        let (cms, tx, rv) = (cms.clone(), tx.clone(), rv.clone());
        tokio::spawn(async move {
            let mut s = cms.watch(&WatchParams::default().timeout(290), &rv).await.expect("watch").boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let WatchEvent::Added(cm) = ev {
                    let _ = tx.send((cm.metadata.name.unwrap_or_default(), Instant::now()));
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut delivery = Vec::new();
    for i in 0..50 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("w{i}")}}),
        )?;
        let t = Instant::now();
        cms.create(&PostParams::default(), &cm).await?;
        let mut got = 0;
        while got < 100 {
            let (name, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?.expect("watchers");
            if name == format!("w{i}") {
                delivery.push((at - t).as_secs_f64() * 1000.0);
                got += 1;
            }
        }
    }
    println!("watch fan-out to 100 watchers, 50 changes: p50 {:.2} ms, p99 {:.2} ms (target p99 < 10 ms; includes the write)", pct(&mut delivery, 0.5), pct(&mut delivery, 0.99));
    api.shutdown().await;
    Ok(())
}
