//! Pod start benchmark (issue 4): a single-node `yard up` cluster, then N pods of the
//! serve_hostname image without probes, first one at a time and then all N at once. For each pod
//! the latency is from just before its create request to the watch event that shows it Ready
//! (the same span upstream's pod startup SLI measures, minus image pulls). Also reports the
//! memory the `yard up` process (API server, controllers, agent, proxy, DNS) gains per pod and
//! the resident memory of each pod's own process.
//!
//! Needs root (network namespaces); the cluster lives in namespaces `yard up` creates and removes.
//! Usage: target/release/pod-bench [path/to/yard] [N]   (defaults: target/release/yard, 100)

#[path = "procstat.rs"]
mod procstat;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use procstat::status_kib;
use serde_json::json;

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The processes running inside the pods' network namespaces (`/run/netns/<prefix>*`): the pods'
/// own processes, wherever the agent parented them.
fn pod_processes(netns_prefix: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(netns_prefix))
        .filter_map(|e| std::fs::metadata(e.path()).ok().map(|m| m.ino()))
        .collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| inodes.contains(&m.ino())))
        .collect()
}

fn host_state() -> String {
    let run = |c: &str, a: &[&str]| {
        String::from_utf8_lossy(&Command::new(c).args(a).output().map(|o| o.stdout).unwrap_or_default()).into_owned()
    };
    format!(
        "{}{}{}",
        run("ip", &["netns", "list"]),
        run("ip", &["-o", "link", "show"]),
        run("nft", &["list", "ruleset"])
    )
}

/// The `yard up` child, stopped with SIGINT (as Ctrl-C) when dropped.
struct Cluster {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's PID has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "pod-bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/serve_hostname"}], "terminationGracePeriodSeconds": 1}}))
    .expect("pod")
}

type ReadyAt = Arc<Mutex<HashMap<String, Instant>>>;

async fn wait_ready(ready: &ReadyAt, name: &str, limit: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = ready.lock().unwrap().get(name) {
            return Ok(*t);
        }
        anyhow::ensure!(Instant::now() < deadline, "pod {name} not Ready within {limit:?}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let yard = std::env::args().nth(1).unwrap_or_else(|| "target/release/yard".into());
    let n: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(100);
    anyhow::ensure!(unsafe { libc::geteuid() } == 0, "pod-bench needs root (yard up creates network namespaces)");
    let before = host_state();
    let dir = std::env::temp_dir().join(format!("yard-pod-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cluster_name = format!("pb{}", std::process::id() % 10000);
    let mut child = Command::new(&yard)
        .args(["up", "--name", &cluster_name, "--api-port", "0", "--data-dir"])
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr.log"))?)
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout");
    let cluster = Cluster { child, dir: dir.clone() };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("is up;") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).map_err(|_| anyhow::anyhow!("yard up did not come up"))?;
    let kc = kube::config::Kubeconfig::read_from(dir.join("data/kubeconfig"))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // A watch records when each pod is first seen Ready.
    let ready: ReadyAt = Default::default();
    let r2 = ready.clone();
    let w = watcher(pods.clone(), watcher::Config::default().labels("app=pod-bench"));
    let watch_task = tokio::spawn(async move {
        let mut s = std::pin::pin!(w.applied_objects());
        while let Ok(Some(p)) = s.try_next().await {
            let is_ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if is_ready {
                let name = p.metadata.name.clone().unwrap_or_default();
                r2.lock().unwrap().entry(name).or_insert_with(Instant::now);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_rss = status_kib(cluster.child.id(), "VmRSS:");

    // One at a time.
    let mut seq = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("seq-{i}");
        let t0 = Instant::now();
        pods.create(&PostParams::default(), &pod(&name)).await?;
        let t = wait_ready(&ready, &name, Duration::from_secs(30)).await?;
        seq.push((t - t0).as_secs_f64() * 1000.0);
    }
    println!(
        "{n} pods one at a time, create -> Ready: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 100 ms)",
        pct(&seq, 0.5),
        pct(&seq, 0.99),
        pct(&seq, 1.0)
    );

    // All at once.
    let started = Instant::now();
    let starts: Vec<(String, Instant)> = futures::stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let name = format!("burst-{i}");
                let t0 = Instant::now();
                pods.create(&PostParams::default(), &pod(&name)).await.expect("create");
                (name, t0)
            }
        })
        .buffer_unordered(n)
        .collect()
        .await;
    let mut burst = Vec::with_capacity(n);
    for (name, t0) in &starts {
        let t = wait_ready(&ready, name, Duration::from_secs(60)).await?;
        burst.push((t - *t0).as_secs_f64() * 1000.0);
    }
    println!(
        "{n} pods at once, create -> Ready: p50 {:.1} ms, p99 {:.1} ms, all Ready after {:.2} s",
        pct(&burst, 0.5),
        pct(&burst, 0.99),
        started.elapsed().as_secs_f64()
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = status_kib(cluster.child.id(), "VmRSS:");
    let pod_pids: Vec<u32> = pod_processes(&format!("yard-{cluster_name}-node-1-p"));
    let pod_rss: Vec<u64> = pod_pids.iter().map(|p| status_kib(*p, "VmRSS:")).filter(|r| *r > 0).collect();
    let per_pod = (rss.saturating_sub(base_rss)) as f64 / (2 * n) as f64;
    println!(
        "memory: yard up process {:.1} MiB -> {:.1} MiB with {} pods = {:.0} KiB per pod; each pod's own process: {:.0} KiB RSS on average ({} processes)",
        base_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        2 * n,
        per_pod,
        pod_rss.iter().sum::<u64>() as f64 / pod_rss.len().max(1) as f64,
        pod_rss.len()
    );
    watch_task.abort();
    drop(cluster);
    let after = host_state();
    anyhow::ensure!(before == after, "the host changed: namespaces, links or rules were left behind");
    println!("host unchanged after the run");
    Ok(())
}
