//! Controllers benchmark (issue 3). The API server runs in this process (loopback, embedded store in
//! a temporary directory); the controller manager (`yard controllers`, all controllers, no leader
//! election) runs as a child process, this same binary re-executed, so its RSS is its own.
//!
//! Load: S Services (selector app=svc-i, 10 namespaces) with P pods each, created through the API
//! (already bound to one of 100 fake Nodes), each pod's status (IP, Ready) then written through
//! `pods/status` as a node agent would. After every Service's EndpointSlices show all its pods
//! ready, K single Ready flips are made one after another: the latency is the time from the status
//! write's acknowledgement to a watcher of EndpointSlices seeing that endpoint's `ready` change.
//! The peer measured in the same run is the floor every controller pays: the same flip seen by a
//! watcher of the Pods themselves. A burst phase then flips B pods of B different Services at once.
//!
//! Usage: cargo run --release -p yard-bench --bin controllers-bench -- [S] [P] [K] [B]
//! (defaults 10000 10 1000 100)

/// The allocator of the `yard` binary, so in-process components behave as they do there.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "procstat.rs"]
mod procstat;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use procstat::{cpu_seconds, status_kib};
use serde_json::json;
use yard_test_support::TempDir;

const NAMESPACES: usize = 10;
const NODES: usize = 100;
const IN_FLIGHT: usize = 32;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn pod_ip(idx: usize) -> String {
    format!("10.{}.{}.{}", 100 + idx / 65536, (idx / 256) % 256, idx % 256)
}

/// Readiness seen by a watcher, by key, with the instant it last changed.
#[derive(Default)]
struct Seen {
    map: Mutex<HashMap<String, (bool, Instant)>>,
    notify: tokio::sync::Notify,
}

impl Seen {
    fn set(&self, k: &str, ready: bool, now: Instant) {
        let mut m = self.map.lock().unwrap();
        match m.get_mut(k) {
            Some(e) if e.0 == ready => {}
            Some(e) => *e = (ready, now),
            None => {
                m.insert(k.to_string(), (ready, now));
            }
        }
    }
    fn ready_count(&self) -> usize {
        self.map.lock().unwrap().values().filter(|v| v.0).count()
    }
    /// Waits until `k` has readiness `want`; returns when that change was seen.
    async fn wait(&self, k: &str, want: bool, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.notify.notified();
            if let Some((r, t)) = self.map.lock().unwrap().get(k).copied() {
                if r == want {
                    return Some(t);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = tokio::time::timeout(left, n).await;
        }
    }
}

fn spawn_watch<K, F>(api: Api<K>, seen: Arc<Seen>, f: F)
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(&K, &Seen, Instant) + Send + 'static,
{
    tokio::spawn(async move {
        let s = watcher::watcher(api, watcher::Config::default());
        futures::pin_mut!(s);
        while let Some(ev) = s.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => f(&o, &seen, now),
                Ok(_) => {}
                Err(e) => eprintln!("watch error: {e}"),
            }
            seen.notify.notify_waiters();
        }
    });
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn set_ready(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) -> anyhow::Result<()> {
    let st = if ready { "True" } else { "False" };
    let now = "2026-01-01T00:00:00Z";
    let patch = json!({"status": {
    "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "172.18.0.2",
    "conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": st, "lastTransitionTime": now},
        {"type": "Ready", "status": st, "lastTransitionTime": now}
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn child(kubeconfig: String) -> anyhow::Result<()> {
    let args = yard_controllers::Args {
        kubeconfig: Some(kubeconfig.into()),
        cluster_cidr: "10.244.0.0/16".parse()?,
        leader_elect: false,
        controllers: vec!["*".into()],
        leader_elect_lease_duration: 15.0,
        leader_elect_renew_deadline: 10.0,
        leader_elect_retry_period: 2.0,
        leader_elect_identity: None,
        root_ca_file: None,
    };
    let kc = kube::config::Kubeconfig::read_from(args.kubeconfig.as_deref().expect("kubeconfig"))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    yard_controllers::run(kube::Client::try_from(cfg)?, args).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--controllers-child") {
        return child(argv[2].clone()).await;
    }
    let arg =
        |i: usize, d: usize| -> anyhow::Result<usize> { Ok(argv.get(i).map(|s| s.parse()).transpose()?.unwrap_or(d)) };
    let (n_svc, per, samples, burst) = (arg(1, 10_000)?, arg(2, 10)?, arg(3, 1000)?, arg(4, 100)?);
    let n_pods = n_svc * per;
    let scratch = TempDir::new("controllers-bench");
    let dir = scratch.0.clone();
    let (api, client) = yard_test_support::apiserver::start_in(&dir).await;

    let ctl = ChildGuard(
        Command::new(std::env::current_exe()?)
            .args(["--controllers-child", api.kubeconfig.to_str().unwrap()])
            .stdin(Stdio::null())
            .spawn()?,
    );
    let ctl_pid = ctl.0.id();

    // Watchers: EndpointSlices everywhere (ready by endpoint IP), Pods of the sampled namespace.
    let slice_seen = Arc::new(Seen::default());
    spawn_watch(Api::<EndpointSlice>::all(client.clone()), slice_seen.clone(), |s: &EndpointSlice, seen, now| {
        for e in s.endpoints.iter().flatten() {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for a in &e.addresses {
                seen.set(a, ready, now);
            }
        }
    });
    let pod_seen = Arc::new(Seen::default());
    spawn_watch(Api::<Pod>::namespaced(client.clone(), "bench-0"), pod_seen.clone(), |p: &Pod, seen, now| {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        seen.set(p.metadata.name.as_deref().unwrap_or(""), ready, now);
    });

    // Namespaces, nodes, Services.
    let t = Instant::now();
    let nss: Api<Namespace> = Api::all(client.clone());
    for i in 0..NAMESPACES {
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("bench-{i}")}}))?,
        )
        .await?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..NODES {
        let n: Node = serde_json::from_value(
            json!({"metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}"), "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}}}),
        )?;
        nodes.create(&PostParams::default(), &n).await?;
    }
    futures::stream::iter(0..n_svc)
        .map(|i| {
            let svcs: Api<Service> = Api::namespaced(client.clone(), &format!("bench-{}", i % NAMESPACES));
            async move {
                let s: Service = serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"selector": {"app": format!("svc-{i}")}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?;
                svcs.create(&PostParams::default(), &s).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "created {n_svc} Services in {NAMESPACES} namespaces and {NODES} Nodes in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Pods: create (bound), then status through pods/status.
    let t = Instant::now();
    futures::stream::iter(0..n_pods)
        .map(|idx| {
            let (svc, j) = (idx / per, idx % per);
            let pods: Api<Pod> = Api::namespaced(client.clone(), &format!("bench-{}", svc % NAMESPACES));
            async move {
                let name = format!("svc-{svc}-{j}");
                let p: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": format!("svc-{svc}")}},
                    "spec": {"nodeName": format!("node-{}", idx % NODES), "containers": [{"name": "c", "image": "bench", "ports": [{"name": "http", "containerPort": 8080}]}]}}))?;
                pods.create(&PostParams::default(), &p).await?;
                set_ready(&pods, &name, &pod_ip(idx), true).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    let created = t.elapsed().as_secs_f64();
    println!(
        "created {n_pods} Pods and wrote their status in {created:.1} s ({:.0} pods/s, 2 writes each)",
        n_pods as f64 / created
    );
    let t2 = Instant::now();
    while slice_seen.ready_count() < n_pods {
        anyhow::ensure!(
            t2.elapsed() < Duration::from_secs(900),
            "EndpointSlices not converged: {} of {n_pods} ready",
            slice_seen.ready_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "all {n_pods} endpoints ready in EndpointSlices {:.1} s after the last status write ({:.1} s after the first pod)",
        t2.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = status_kib(ctl_pid, "VmRSS:");
    let hwm = status_kib(ctl_pid, "VmHWM:");
    println!(
        "controller process: RSS {:.0} MiB, peak RSS {:.0} MiB, CPU {:.1} s so far",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        cpu_seconds(ctl_pid)
    );

    // Single flips, one at a time, in the watched namespace (bench-0 holds Services 0, 10, 20, ...).
    let pods0: Api<Pod> = Api::namespaced(client.clone(), "bench-0");
    let mut state: HashMap<usize, bool> = HashMap::new();
    let mut rng: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut lat, mut peer, mut write) = (Vec::new(), Vec::new(), Vec::new());
    let limit = Duration::from_secs(10);
    for _ in 0..samples {
        let svc = (next() as usize % (n_svc / NAMESPACES)) * NAMESPACES;
        let j = next() as usize % per;
        let idx = svc * per + j;
        let want = !state.get(&idx).copied().unwrap_or(true);
        state.insert(idx, want);
        let name = format!("svc-{svc}-{j}");
        let ip = pod_ip(idx);
        let sent = Instant::now();
        set_ready(&pods0, &name, &ip, want).await?;
        let acked = Instant::now();
        write.push(acked.duration_since(sent).as_secs_f64() * 1000.0);
        let seen = slice_seen
            .wait(&ip, want, limit)
            .await
            .ok_or_else(|| anyhow::anyhow!("slice for {name} not updated within {limit:?}"))?;
        let pseen =
            pod_seen.wait(&name, want, limit).await.ok_or_else(|| anyhow::anyhow!("pod event for {name} not seen"))?;
        lat.push(seen.saturating_duration_since(acked).as_secs_f64() * 1000.0);
        peer.push(pseen.saturating_duration_since(acked).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    let (q50, q99) = (pct(&mut peer, 0.5), pct(&mut peer, 0.99));
    println!(
        "single Ready flip -> EndpointSlice seen by a watcher ({samples} samples): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (target p99 < 10 ms)"
    );
    println!(
        "peer, same flips -> Pod event seen by a watcher: p50 {q50:.2} ms, p99 {q99:.2} ms; ratio slice/pod p50 {:.1}x, p99 {:.1}x",
        p50 / q50.max(0.001),
        p99 / q99.max(0.001)
    );
    // The controller's own EndpointSlice write costs about what this status write costs.
    println!(
        "the status write itself (PATCH round trip, durable): p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut write, 0.5),
        pct(&mut write, 0.99)
    );

    // Burst: B pods of B different Services flipped at once.
    if burst > 0 {
        let mut lat = Vec::new();
        for round in 0..5 {
            let picks: Vec<(usize, usize)> =
                (0..burst.min(n_svc / NAMESPACES)).map(|k| (k * NAMESPACES, (round + k) % per)).collect();
            let done = futures::stream::iter(picks)
                .map(|(svc, j)| {
                    let pods0 = pods0.clone();
                    let idx = svc * per + j;
                    let want = !state.get(&idx).copied().unwrap_or(true);
                    let slice_seen = slice_seen.clone();
                    async move {
                        set_ready(&pods0, &format!("svc-{svc}-{j}"), &pod_ip(idx), want).await?;
                        let acked = Instant::now();
                        let seen = slice_seen
                            .wait(&pod_ip(idx), want, limit)
                            .await
                            .ok_or_else(|| anyhow::anyhow!("burst: slice not updated"))?;
                        anyhow::Ok((idx, want, seen.saturating_duration_since(acked).as_secs_f64() * 1000.0))
                    }
                })
                .buffer_unordered(burst)
                .try_collect::<Vec<_>>()
                .await?;
            for (idx, want, l) in done {
                state.insert(idx, want);
                lat.push(l);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "burst of {burst} flips of different Services at once (5 rounds): p50 {:.2} ms, p99 {:.2} ms",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
    }
    let rss = status_kib(ctl_pid, "VmRSS:");
    println!(
        "controller process after the flips: RSS {:.0} MiB, CPU {:.1} s total",
        rss as f64 / 1024.0,
        cpu_seconds(ctl_pid)
    );
    drop(ctl);
    Ok(())
}
