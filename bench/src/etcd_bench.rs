//! etcd backend benchmark (issue 8): create throughput and latency through Yard on a real local
//! etcd cluster versus a raw etcd v3 client doing puts of the same value sizes with the same
//! concurrency against the same cluster, in the same run, and versus the same client doing the
//! create-if-absent transactions that Yard's store issues (the same writes, with their condition),
//! both as etcd-client spreads them over every member and sent to the raft leader only (as etcd's
//! own `benchmark --target-leader` does; Yard's store sends its writes to the leader).
//!
//! For each kind (ConfigMaps: one stored key per create; Services: the object plus its ClusterIP
//! allocation key): N creates through `yard apiserver --store etcd://...` (kube-rs over HTTPS, C
//! in flight), N raw create-if-absent transactions over every member, N to the leader only, and N
//! raw puts whose values have the stored objects' mean size. Prints objects/s, p50/p99, CPU per
//! operation of etcd, the API server and the clients, and the Yard/raw throughput ratios (target
//! >= 0.8).
//!
//! Each kind runs in ROUNDS rounds of N/ROUNDS operations per side, the order flipped every
//! round; the per-round Yard/transaction ratios and their median are printed beside the totals.
//!
//! Usage: cargo run --release -p yard-bench --bin etcd-bench -- [N=6000] [members=3] [C=16]
//! [KINDS=configmaps,services] [ROUNDS=5] [PLACEMENT=shared]
//!
//! The API server is the `yard` binary next to this one (or `YARD_BIN`), run as its own process.
//! PLACEMENT `shared` lets everything compete for every core; `split` binds the etcd members to
//! the first core and the API server with the clients (this process) to the second; `stacked`
//! binds etcd and the API server to the first core and the clients to the second. The raw runs
//! use the same binding (their client is this process).

/// The allocator of the `yard` binary, so the in-process store client behaves as it does there.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "procstat.rs"]
mod procstat;

use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PostParams};
use procstat::cpu_seconds;
use serde_json::json;
use yard_store::local_etcd::LocalEtcd;
use yard_store::{Op, Store};
use yard_test_support::TempDir;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One timed batch of operations.
struct Run {
    n: usize,
    secs: f64,
    /// Latencies (ms).
    lat: Vec<f64>,
    /// CPU seconds spent by the etcd members, the API server and this process (the clients).
    cpu_etcd: f64,
    cpu_api: f64,
    cpu_self: f64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.n as f64 / self.secs
    }
}

/// The batches of one phase over all rounds: throughput over their summed time, percentiles
/// over every latency, CPU over every operation.
#[derive(Default)]
struct Phase(Vec<Run>);

impl Phase {
    fn per_sec(&self) -> f64 {
        self.0.iter().map(|r| r.n).sum::<usize>() as f64 / self.0.iter().map(|r| r.secs).sum::<f64>()
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.iter().map(|r| r.n).sum::<usize>() as f64;
        let mut lat: Vec<f64> = self.0.iter().flat_map(|r| r.lat.iter().copied()).collect();
        let per_op = |cpu: f64| cpu / n * 1e6;
        let (etcd, api, me) = (
            per_op(self.0.iter().map(|r| r.cpu_etcd).sum()),
            per_op(self.0.iter().map(|r| r.cpu_api).sum()),
            per_op(self.0.iter().map(|r| r.cpu_self).sum()),
        );
        write!(f, "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms; CPU per op: etcd {etcd:.0} µs, API server {api:.0} µs, clients {me:.0} µs", self.per_sec(), pct(&mut lat, 0.5), pct(&mut lat, 0.99))
    }
}

/// The etcd members' PIDs and the API server's, for CPU accounting.
static ETCD_PIDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
static API_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn cpu_now() -> (f64, f64, f64) {
    let etcd = ETCD_PIDS.get().map(|p| p.iter().map(cpu_seconds).sum()).unwrap_or(0.0);
    (etcd, API_PID.get().map(cpu_seconds).unwrap_or(0.0), cpu_seconds("self"))
}

/// `yard apiserver --store etcd://...` as its own process, as users run it; stopped by PID
/// (SIGINT, then SIGKILL after 5 s) when dropped.
struct ApiServer {
    child: std::process::Child,
    kubeconfig: std::path::PathBuf,
}

impl ApiServer {
    fn start(dir: &std::path::Path, store: &str) -> anyhow::Result<Self> {
        let bin = std::env::var_os("YARD_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or(std::env::current_exe()?.with_file_name("yard"));
        anyhow::ensure!(
            bin.exists(),
            "{} not found: build it with `cargo build --release -p yard` or set YARD_BIN",
            bin.display()
        );
        let port = yard_store::local_etcd::pick_port()?.to_string();
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("apiserver.log"))?;
        let data = dir.join("apiserver");
        let child = std::process::Command::new(&bin)
            .args(["apiserver", "--port", &port, "--store", store, "--etcd-compaction-interval", "0", "--data-dir"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut api = Self { child, kubeconfig: data.join("kubeconfig") };
        // The kubeconfig is written once the server listens and its bootstrap objects exist.
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while kube::config::Kubeconfig::read_from(&api.kubeconfig).is_err() {
            if let Some(st) = api.child.try_wait()? {
                anyhow::bail!(
                    "yard apiserver exited ({st}): {}",
                    std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default()
                );
            }
            anyhow::ensure!(Instant::now() < deadline, "yard apiserver did not start within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(api)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the PID is our own child's, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = cpu_now();
    let lat = lat.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(Run { n, secs, lat, cpu_etcd: cpu1.0 - cpu0.0, cpu_api: cpu1.1 - cpu0.1, cpu_self: cpu1.2 - cpu0.2 })
}

/// Mean size of the values stored under `prefix` (what Yard wrote for one kind).
async fn mean_value_size(etcd: &mut etcd_client::Client, prefix: &str) -> anyhow::Result<(usize, usize)> {
    // The mean over the first 1,000 (a whole large run would pass gRPC's message limit).
    let r = etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_limit(1000))).await?;
    let n = r.kvs().len().max(1);
    let count = etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await?.count();
    Ok((r.kvs().iter().map(|kv| kv.value().len()).sum::<usize>() / n, count as usize))
}

async fn raw_puts(
    etcd: &etcd_client::Client,
    tag: &str,
    from: usize,
    n: usize,
    c: usize,
    size: usize,
) -> anyhow::Result<Run> {
    let value = vec![b'x'; size];
    timed(n, c, |i| {
        let i = from + i;
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
async fn raw_create_txns(
    etcd: &etcd_client::Client,
    tag: &str,
    from: usize,
    n: usize,
    c: usize,
    size: usize,
    keys: usize,
) -> anyhow::Result<Run> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let value = vec![b'x'; size];
    timed(n, c, |i| {
        let i = from + i;
        let mut kv = etcd.kv_client();
        let value = value.clone();
        async move {
            let ks: Vec<String> = (0..keys).map(|k| format!("/bench/rawtxn/{tag}/{k}/{i:08}")).collect();
            let txn = Txn::new()
                .when(ks.iter().map(|k| Compare::create_revision(k.as_str(), CompareOp::Equal, 0)).collect::<Vec<_>>())
                .and_then(
                    ks.iter()
                        .enumerate()
                        .map(|(j, k)| {
                            TxnOp::put(k.as_str(), if j + 1 == keys { value.clone() } else { b"{}".to_vec() }, None)
                        })
                        .collect::<Vec<_>>(),
                );
            anyhow::ensure!(kv.txn(txn).await?.succeeded(), "key existed");
            Ok(())
        }
    })
    .await
}

/// Bind every thread of each process to `cpus` (threads made later inherit it).
fn pin(pids: &[u32], cpus: &str) -> anyhow::Result<()> {
    for pid in pids {
        let out = std::process::Command::new("taskset").args(["-a", "-cp", cpus, &pid.to_string()]).output()?;
        anyhow::ensure!(out.status.success(), "taskset {pid}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Creates of `objs[from..from + n]` through Yard (`api`), `c` in flight.
async fn yard_creates<K>(api: &Api<K>, objs: &[K], from: usize, n: usize, c: usize) -> anyhow::Result<Run>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::Serialize
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    timed(n, c, |i| {
        let (api, o) = (api.clone(), &objs[from + i]);
        async move {
            api.create(&PostParams::default(), o).await?;
            Ok(())
        }
    })
    .await
}

/// Per-round ratios as printed (in round order), and their median.
fn per_round_summary(ratios: &mut [f64]) -> (String, f64) {
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    (shown.join(", "), pct(ratios, 0.5))
}

/// One kind, in `rounds` rounds: each creates its share of `objs` through Yard and makes as many
/// raw create-if-absent transactions (`keys` keys each) and plain puts of the stored size. The
/// order flips every round (Yard first, then Yard last) so that drift in the machine's speed
/// falls on both sides. Returns the ratios Yard/put, Yard/transaction and Yard/transaction to the
/// leader over all rounds, the medians of the per-round Yard/transaction ratios (both kinds), and
/// the mean stored size.
#[allow(clippy::too_many_arguments)]
async fn compare_kind<K>(
    label: &str,
    tag: &str,
    api: &Api<K>,
    objs: &[K],
    stored: &str,
    keys: usize,
    raw: &mut etcd_client::Client,
    to_leader: &etcd_client::Client,
    rounds: usize,
    c: usize,
) -> anyhow::Result<([f64; 5], usize)>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::Serialize
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let per = objs.len() / rounds;
    let (mut yard, mut txn, mut put, mut led) =
        (Phase::default(), Phase::default(), Phase::default(), Phase::default());
    let mut size = 0;
    let (mut per_round, mut per_round_led) = (Vec::new(), Vec::new());
    let led_tag = format!("{tag}-leader");
    for r in 0..rounds {
        let from = r * per;
        if r % 2 == 0 {
            yard.0.push(yard_creates(api, objs, from, per, c).await?);
            // The raw values have the mean size of what Yard stored.
            if size == 0 {
                size = mean_value_size(raw, stored).await?.0;
            }
            txn.0.push(raw_create_txns(raw, tag, from, per, c, size, keys).await?);
            led.0.push(raw_create_txns(to_leader, &led_tag, from, per, c, size, keys).await?);
            put.0.push(raw_puts(raw, tag, from, per, c, size).await?);
        } else {
            put.0.push(raw_puts(raw, tag, from, per, c, size).await?);
            led.0.push(raw_create_txns(to_leader, &led_tag, from, per, c, size, keys).await?);
            txn.0.push(raw_create_txns(raw, tag, from, per, c, size, keys).await?);
            yard.0.push(yard_creates(api, objs, from, per, c).await?);
        }
        per_round.push(yard.0[r].per_sec() / txn.0[r].per_sec());
        per_round_led.push(yard.0[r].per_sec() / led.0[r].per_sec());
    }
    let count = mean_value_size(raw, stored).await?.1;
    anyhow::ensure!(count == per * rounds, "{count} {label} stored, want {}", per * rounds);
    let (vs_put, vs_txn, vs_led) =
        (yard.per_sec() / put.per_sec(), yard.per_sec() / txn.per_sec(), yard.per_sec() / led.per_sec());
    let (shown, median) = per_round_summary(&mut per_round);
    let (shown_led, median_led) = per_round_summary(&mut per_round_led);
    println!(
        "{label} ({size} B stored each{}), {} creates in {rounds} rounds, {c} in flight:",
        if keys > 1 { ", plus an allocation key" } else { "" },
        per * rounds
    );
    println!("  yard on etcd          : {yard}");
    println!("  raw etcd put          : {put}");
    println!("  raw etcd create txn   : {txn} ({keys} key{}, every member)", if keys > 1 { "s" } else { "" });
    println!("  raw create txn, leader: {led}");
    println!("  per-round ratio vs create txn: {shown} (median {median:.2}); vs create txn to the leader: {shown_led} (median {median_led:.2})");
    println!("  throughput ratio {vs_put:.2} vs put, {vs_txn:.2} vs create txn, {vs_led:.2} vs create txn to the leader (target >= 0.8)");
    Ok(([vs_put, vs_txn, median, vs_led, median_led], size))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // On a worker thread like every task it drives, rather than on the runtime's extra main
    // thread, for the raw client and kube-rs alike.
    tokio::spawn(run()).await?
}

async fn run() -> anyhow::Result<()> {
    let arg = |i: usize, d: usize| -> anyhow::Result<usize> {
        Ok(std::env::args().nth(i).map(|s| s.parse()).transpose()?.unwrap_or(d))
    };
    let (n, members, c) = (arg(1, 6000)?, arg(2, 3)?, arg(3, 16)?);
    let kinds = std::env::args().nth(4).unwrap_or_else(|| "configmaps,services".into());
    let rounds = arg(5, 5)?.max(1);
    let placement = std::env::args().nth(6).unwrap_or_else(|| "shared".into());
    let cluster = LocalEtcd::start(members)?;
    let _ = ETCD_PIDS.set(cluster.pids());
    println!("placement: {placement}");
    println!(
        "etcd: {members} member(s) of {} on loopback, data in {}",
        yard_store::local_etcd::etcd_binary().display(),
        cluster.dir().display()
    );
    let mut raw = etcd_client::Client::connect(
        cluster.endpoints().iter().map(|e| format!("http://{e}")).collect::<Vec<_>>(),
        None,
    )
    .await?;
    let first_leader = cluster.leader().ok_or_else(|| anyhow::anyhow!("no etcd member says it leads"))?;
    let to_leader =
        etcd_client::Client::connect([format!("http://{}", cluster.endpoints()[first_leader])], None).await?;

    // Removed when main returns, error or not (after the API server, which is dropped first).
    let scratch = TempDir::new("etcd-bench");
    let dir = scratch.0.clone();
    let api = ApiServer::start(&dir, &cluster.url())?;
    let _ = API_PID.set(api.child.id());
    match placement.as_str() {
        // Everything competes for every core.
        "shared" => {}
        // etcd on the first core; the API server and the clients (this process) on the second.
        "split" => {
            pin(&cluster.pids(), "0")?;
            pin(&[api.child.id(), std::process::id()], "1")?;
        }
        // etcd and the API server on the first core, as on a control-plane node that runs both;
        // the clients (this process: kube-rs, or the raw etcd client) on the second.
        "stacked" => {
            pin(&cluster.pids(), "0")?;
            pin(&[api.child.id()], "0")?;
            pin(&[std::process::id()], "1")?;
        }
        other => anyhow::bail!("placement {other:?}: want shared, split or stacked"),
    }
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;

    // Warm-up (connections, first-use allocations) on both paths.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    for i in 0..50 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("warm-{i}")}, "data": {"k": "v"}}))?;
        cms.create(&PostParams::default(), &cm).await?;
    }
    raw_puts(&raw, "warm", 0, 200, c, 300).await?;

    let mut ratios = Vec::new();
    if kinds.split(',').any(|k| k == "configmaps") {
        // ConfigMaps: one key per create. The objects are built before the clock starts, as
        // the raw runs' values are.
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let objs = (0..n).map(|i| serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}"), "labels": {"app": format!("a{i}")}}, "data": {"key": format!("value-{i}")}}))).collect::<Result<Vec<ConfigMap>, _>>()?;
        let (r, cm_size) = compare_kind(
            "ConfigMaps",
            "cm",
            &cms,
            &objs,
            "/registry/core/configmaps/default/",
            1,
            &mut raw,
            &to_leader,
            rounds,
            c,
        )
        .await?;
        ratios.push(("ConfigMaps", r));
        // Where the gap is: the store calls of a ConfigMap create (namespace read, then the create
        // transaction) straight on `EtcdStore`, without HTTP/TLS/JSON, same sizes and concurrency.
        let store = std::sync::Arc::new(
            yard_store::EtcdStore::connect(yard_store::EtcdConfig {
                endpoints: cluster.endpoints(),
                ..Default::default()
            })
            .await?,
        );
        let value = vec![b'x'; cm_size];
        for (label, read) in [("txn only", 0u8), ("linearizable ns get + txn", 1), ("stale ns get + txn", 2)] {
            let r = timed(n / rounds, c, |i| {
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
            println!("  EtcdStore, {label:<26}: {}", Phase(vec![r]));
        }
    }
    if kinds.split(',').any(|k| k == "services") {
        // Services: the object plus its ClusterIP allocation key (`default/kubernetes` is
        // stored beside them, hence the name prefix).
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        let objs = (0..n).map(|i| serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}}))).collect::<Result<Vec<Service>, _>>()?;
        ratios.push((
            "Services",
            compare_kind(
                "Services",
                "svc",
                &svcs,
                &objs,
                "/registry/core/services/default/svc-",
                2,
                &mut raw,
                &to_leader,
                rounds,
                c,
            )
            .await?
            .0,
        ));
    }

    // The leader-only baseline means what it says only if the leader stayed the same.
    anyhow::ensure!(
        cluster.leader() == Some(first_leader),
        "the etcd leader changed during the run: the leader-only figures are not"
    );
    drop(api);
    drop(cluster);
    for (kind, [vs_put, vs_txn, median, vs_led, median_led]) in ratios {
        println!("{kind}: ratio {vs_put:.2} vs put, {vs_txn:.2} vs create txn (per-round median {median:.2}), {vs_led:.2} vs create txn to the leader (median {median_led:.2})");
    }
    Ok(())
}
