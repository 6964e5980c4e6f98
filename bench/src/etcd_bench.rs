//! etcd backend benchmark (issue 8): create throughput and latency through Yard on a real local
//! etcd cluster versus a raw etcd v3 client doing puts of the same value sizes with the same
//! concurrency against the same cluster, in the same run, and versus the same client doing the
//! create-if-absent transactions that Yard's store issues (the same writes, with their condition).
//!
//! For each kind (ConfigMaps: one stored key per create; Services: the object plus its ClusterIP
//! allocation key): N creates through an in-process `yard apiserver --store etcd://...` (kube-rs
//! over HTTPS, C in flight), then N raw puts whose values have the stored objects' mean size.
//! Prints objects/s, p50/p99 and the Yard/raw throughput ratio (target >= 0.8).
//!
//! Usage: cargo run --release -p yard-bench --bin etcd-bench -- [N=3000] [members=3] [C=16]

/// The allocator of the `yard` binary, so in-process components behave as they do there.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "tempdir.rs"]
mod tempdir;
#[path = "procstat.rs"]
mod procstat;

use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PostParams};
use procstat::cpu_seconds;
use serde_json::json;
use tempdir::TempDir;
use yard_store::local_etcd::LocalEtcd;
use yard_store::{Op, Store};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Run {
    per_sec: f64,
    p50: f64,
    p99: f64,
    /// CPU time per operation: the etcd members', this process's (µs).
    cpu_etcd: f64,
    cpu_self: f64,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms; CPU per op: etcd {:.0} µs, this process {:.0} µs", self.per_sec, self.p50, self.p99, self.cpu_etcd, self.cpu_self)
    }
}

/// The etcd members' PIDs, for CPU accounting.
static ETCD_PIDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

fn cpu_now() -> (f64, f64) {
    let etcd = ETCD_PIDS.get().map(|p| p.iter().map(cpu_seconds).sum()).unwrap_or(0.0);
    (etcd, cpu_seconds("self"))
}

async fn timed<F, Fut>(n: usize, c: usize, f: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cpu0 = cpu_now();
    let started = Instant::now();
    let lat: Vec<anyhow::Result<f64>> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move {
                let t = Instant::now();
                fut.await?;
                Ok(t.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(c)
        .collect()
        .await;
    let total = started.elapsed().as_secs_f64();
    let cpu1 = cpu_now();
    let mut l = lat.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
    let per_op = |a: f64, b: f64| (b - a) / n as f64 * 1e6;
    Ok(Run { per_sec: n as f64 / total, p50: pct(&mut l, 0.5), p99: pct(&mut l, 0.99), cpu_etcd: per_op(cpu0.0, cpu1.0), cpu_self: per_op(cpu0.1, cpu1.1) })
}

/// Mean size of the values stored under `prefix` (what Yard wrote for one kind).
async fn mean_value_size(etcd: &mut etcd_client::Client, prefix: &str) -> anyhow::Result<(usize, usize)> {
    // The mean over the first 1,000 (a whole large run would pass gRPC's message limit).
    let r = etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_limit(1000))).await?;
    let n = r.kvs().len().max(1);
    let count = etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await?.count();
    Ok((r.kvs().iter().map(|kv| kv.value().len()).sum::<usize>() / n, count as usize))
}

async fn raw_puts(etcd: &etcd_client::Client, tag: &str, n: usize, c: usize, size: usize) -> anyhow::Result<Run> {
    let value = vec![b'x'; size];
    timed(n, c, |i| {
        let mut kv = etcd.kv_client();
        let value = value.clone();
        let key = format!("/bench/raw/{tag}/{i:08}");
        async move {
            kv.put(key, value, None).await?;
            Ok(())
        }
    })
    .await
}

/// Raw create-if-absent transactions, the writes Yard's store makes for one create: `keys` keys
/// (the object, plus an allocation key for a Service), each put only if absent (create revision 0).
async fn raw_create_txns(etcd: &etcd_client::Client, tag: &str, n: usize, c: usize, size: usize, keys: usize) -> anyhow::Result<Run> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let value = vec![b'x'; size];
    timed(n, c, |i| {
        let mut kv = etcd.kv_client();
        let value = value.clone();
        async move {
            let ks: Vec<String> = (0..keys).map(|k| format!("/bench/rawtxn/{tag}/{k}/{i:08}")).collect();
            let txn = Txn::new()
                .when(ks.iter().map(|k| Compare::create_revision(k.as_str(), CompareOp::Equal, 0)).collect::<Vec<_>>())
                .and_then(ks.iter().enumerate().map(|(j, k)| TxnOp::put(k.as_str(), if j + 1 == keys { value.clone() } else { b"{}".to_vec() }, None)).collect::<Vec<_>>());
            anyhow::ensure!(kv.txn(txn).await?.succeeded(), "key existed");
            Ok(())
        }
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = |i: usize, d: usize| -> anyhow::Result<usize> { Ok(std::env::args().nth(i).map(|s| s.parse()).transpose()?.unwrap_or(d)) };
    let (n, members, c) = (arg(1, 3000)?, arg(2, 3)?, arg(3, 16)?);
    let cluster = LocalEtcd::start(members)?;
    let _ = ETCD_PIDS.set(cluster.pids());
    println!("etcd: {members} member(s) of {} on loopback, data in {}", yard_store::local_etcd::etcd_binary().display(), cluster.dir().display());
    let mut raw = etcd_client::Client::connect(cluster.endpoints().iter().map(|e| format!("http://{e}")).collect::<Vec<_>>(), None).await?;

    // Removed when main returns, error or not (after the API server, which is dropped first).
    let scratch = TempDir::new("yard-etcd-bench");
    let dir = scratch.0.clone();
    let args = yard_apiserver::Args { data_dir: dir.clone(), port: 0, store: Some(cluster.url()), etcd_compaction_interval: 0, ..Default::default() };
    let api = yard_apiserver::start(args).await?;
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;

    // Warm-up (connections, first-use allocations) on both paths.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    for i in 0..50 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("warm-{i}")}, "data": {"k": "v"}}))?;
        cms.create(&PostParams::default(), &cm).await?;
    }
    raw_puts(&raw, "warm", 200, c, 300).await?;

    let mut ratios = Vec::new();
    // ConfigMaps: one key per create.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // The objects are built before the clock starts, as the raw runs' values are.
    let objs = (0..n).map(|i| serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}"), "labels": {"app": format!("a{i}")}}, "data": {"key": format!("value-{i}")}}))).collect::<Result<Vec<ConfigMap>, _>>()?;
    let yard_cm = timed(n, c, |i| {
        let (cms, cm) = (cms.clone(), &objs[i]);
        async move {
            cms.create(&PostParams::default(), cm).await?;
            Ok(())
        }
    })
    .await?;
    let (cm_size, stored) = mean_value_size(&mut raw, "/registry/core/configmaps/default/").await?;
    anyhow::ensure!(stored == n, "{stored} ConfigMaps stored, want {n}");
    let raw_cm = raw_puts(&raw, "cm", n, c, cm_size).await?;
    let raw_cm_txn = raw_create_txns(&raw, "cm", n, c, cm_size, 1).await?;
    println!("ConfigMaps ({cm_size} B stored each), {n} creates, {c} in flight:");
    println!("  yard on etcd          : {yard_cm}");
    println!("  raw etcd put          : {raw_cm}");
    println!("  raw etcd create txn   : {raw_cm_txn}");
    println!("  throughput ratio {:.2} vs put, {:.2} vs create txn (target >= 0.8)", yard_cm.per_sec / raw_cm.per_sec, yard_cm.per_sec / raw_cm_txn.per_sec);
    ratios.push(yard_cm.per_sec / raw_cm.per_sec);
    ratios.push(yard_cm.per_sec / raw_cm_txn.per_sec);
    // Where the gap is: the store calls of a ConfigMap create (namespace read, then the create
    // transaction) straight on `EtcdStore`, without HTTP/TLS/JSON, same sizes and concurrency.
    let store = std::sync::Arc::new(yard_store::EtcdStore::connect(yard_store::EtcdConfig { endpoints: cluster.endpoints(), ..Default::default() }).await?);
    let value = vec![b'x'; cm_size];
    for (label, read) in [("txn only", 0u8), ("linearizable ns get + txn", 1), ("stale ns get + txn", 2)] {
        let r = timed(n, c, |i| {
            let (store, value) = (store.clone(), value.clone());
            async move {
                let ns = "/registry/core/namespaces/default";
                match read {
                    1 => anyhow::ensure!(store.get(ns).await?.is_some()),
                    2 => anyhow::ensure!(store.get_stale(ns).await?.is_some()),
                    _ => {}
                }
                store.write(Op::Create { key: format!("/bench/store/{read}/{i:08}"), value: value.into() }).await?;
                Ok(())
            }
        })
        .await?;
        println!("  EtcdStore, {label:<26}: {r}");
    }

    // Services: the object plus its ClusterIP allocation key.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let objs = (0..n).map(|i| serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}}))).collect::<Result<Vec<Service>, _>>()?;
    let yard_svc = timed(n, c, |i| {
        let (svcs, s) = (svcs.clone(), &objs[i]);
        async move {
            svcs.create(&PostParams::default(), s).await?;
            Ok(())
        }
    })
    .await?;
    // (`default/kubernetes` lives there too.)
    let (svc_size, stored) = mean_value_size(&mut raw, "/registry/core/services/default/svc-").await?;
    anyhow::ensure!(stored == n, "{stored} Services stored, want {n}");
    let raw_svc = raw_puts(&raw, "svc", n, c, svc_size).await?;
    let raw_svc_txn = raw_create_txns(&raw, "svc", n, c, svc_size, 2).await?;
    println!("Services ({svc_size} B stored each, plus an allocation key), {n} creates, {c} in flight:");
    println!("  yard on etcd          : {yard_svc}");
    println!("  raw etcd put          : {raw_svc}");
    println!("  raw etcd create txn   : {raw_svc_txn} (2 keys)");
    println!("  throughput ratio {:.2} vs put, {:.2} vs create txn (target >= 0.8)", yard_svc.per_sec / raw_svc.per_sec, yard_svc.per_sec / raw_svc_txn.per_sec);
    ratios.push(yard_svc.per_sec / raw_svc.per_sec);
    ratios.push(yard_svc.per_sec / raw_svc_txn.per_sec);

    api.shutdown().await;
    drop(cluster);
    println!("ratios (ConfigMaps vs put, vs txn; Services vs put, vs txn): {}", ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "));
    Ok(())
}
