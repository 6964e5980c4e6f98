//! Cluster DNS memory benchmark (issue 6): resident memory of a real `yard dns` process serving
//! 10,000 Services (10% headless) with 100,000 endpoints and 100,000 pods, all created through a
//! real `yard apiserver` (a child process, embedded store in a temporary directory, loopback).
//!
//! Every Service gets one EndpointSlice of 10 ready endpoints, each referring to a pod that also
//! exists with that IP in its status. `yard dns` is started only after everything exists (its
//! first sync lists it all), once plain and once with `--autopath` (which also indexes every
//! pod's address); each time the bench waits until a sample of ClusterIP and headless names
//! answer through `dig`, lets the process settle, and reads VmRSS and VmHWM from /proc.
//!
//! Usage: dns-memory --yard target/release/yard [--services 10000] [--endpoints 10]

#[path = "dnsutil.rs"]
mod dnsutil;
#[path = "procstat.rs"]
mod procstat;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use dnsutil::{dig, free_port};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use procstat::status_kib;
use serde_json::json;
use yard_test_support::TempDir;

/// A child process ended by PID (SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address of pod `p` (10.(64+p/65536).x.y: inside no network of this machine; it is only
/// data in the API and in DNS answers).
fn pod_ip(p: usize) -> String {
    format!("10.{}.{}.{}", 64 + p / 65536, (p / 256) % 256, p % 256)
}

async fn run_all<F: std::future::Future<Output = anyhow::Result<()>>>(
    what: &str,
    n: usize,
    f: impl Fn(usize) -> F,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n).map(f).buffer_unordered(32).collect().await;
    for r in results {
        r?;
    }
    println!("{what}: {n} in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut yard = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/yard"));
    let (mut services, mut per) = (10_000usize, 10usize);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--yard" => yard = PathBuf::from(v),
            "--services" => services = v.parse()?,
            "--endpoints" => per = v.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    ensure!(yard.exists(), "no yard binary at {}", yard.display());
    let dir = TempDir::new("dns-memory");
    std::fs::create_dir_all(dir.0.join("api"))?;
    let kubeconfig = dir.0.join("api/kubeconfig");
    let mut api = Proc(
        Command::new(&yard)
            .args(["apiserver", "--data-dir"])
            .arg(dir.0.join("api"))
            .args(["--port", &free_port()?.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("apiserver.log"))?)
            .spawn()?,
    );
    let start = Instant::now();
    while !kubeconfig.exists() {
        ensure!(api.0.try_wait()?.is_none(), "apiserver exited");
        ensure!(start.elapsed() < Duration::from_secs(30), "apiserver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let namespaces = 10;
    for k in 0..namespaces {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": format!("bench-{k}")}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    }
    let ns_of = |i: usize| format!("bench-{}", i % namespaces);
    let headless = |i: usize| i.is_multiple_of(10);

    run_all("Services (10% headless)", services, |i| {
        let (client, ns) = (client.clone(), ns_of(i));
        async move {
            let mut spec = json!({"selector": {"app": format!("a{i}")}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]});
            if headless(i) {
                spec["clusterIP"] = json!("None");
            }
            let s: Service = serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")}, "spec": spec}))?;
            Api::<Service>::namespaced(client, &ns).create(&PostParams::default(), &s).await?;
            Ok(())
        }
    })
    .await?;
    run_all("Pods (create + status with podIP)", services * per, |p| {
        let (client, ns) = (client.clone(), ns_of(p / per));
        async move {
            let name = format!("svc-{}-{}", p / per, p % per);
            let pod: Pod =
                serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": format!("a{}", p / per)}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))?;
            let pods = Api::<Pod>::namespaced(client, &ns);
            pods.create(&PostParams::default(), &pod).await?;
            let ip = pod_ip(p);
            let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
            Ok(())
        }
    })
    .await?;
    run_all("EndpointSlices", services, |i| {
        let (client, ns) = (client.clone(), ns_of(i));
        async move {
            let eps: Vec<_> = (0..per)
                .map(|e| {
                    let p = i * per + e;
                    json!({"addresses": [pod_ip(p)], "conditions": {"ready": true, "serving": true, "terminating": false},
                           "hostname": format!("host-{e}"), "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("svc-{i}-{e}")}})
                })
                .collect();
            let s: EndpointSlice = serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i}-abcde"), "labels": {"kubernetes.io/service-name": format!("svc-{i}"), "endpointslice.kubernetes.io/managed-by": "bench"}},
                "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))?;
            Api::<EndpointSlice>::namespaced(client, &ns).create(&PostParams::default(), &s).await?;
            Ok(())
        }
    })
    .await?;

    // A sample of names and what they must answer.
    let svcs = Api::<Service>::all(client.clone()).list(&Default::default()).await?;
    let ip_of: std::collections::HashMap<String, String> = svcs
        .items
        .iter()
        .filter_map(|s| {
            Some((
                format!("{}.{}", s.metadata.name.clone()?, s.metadata.namespace.clone()?),
                s.spec.as_ref()?.cluster_ip.clone()?,
            ))
        })
        .collect();
    let mut sample = Vec::new();
    for i in (0..services).step_by((services / 20).max(1)).chain([services - 1]) {
        let key = format!("svc-{i}.{}", ns_of(i));
        let mut want: Vec<String> =
            if headless(i) { (0..per).map(|e| pod_ip(i * per + e)).collect() } else { vec![ip_of[&key].clone()] };
        want.sort();
        sample.push((format!("{key}.svc.cluster.local."), want));
    }

    let arena_env = std::env::var("DNS_MEMORY_ENV").ok();
    for extra in [&[][..], &["--autopath"][..]] {
        let port = free_port()?;
        let t = Instant::now();
        let mut dns = Proc(
            Command::new(&yard)
                .args(["dns", "--kubeconfig"])
                .arg(&kubeconfig)
                .args(["--listen", &format!("127.0.0.1:{port}"), "--upstream", "127.0.0.1:9"])
                .args(extra)
                .envs(arena_env.as_deref().and_then(|e| e.split_once('=')))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.0.join("dns.log"))?)
                .spawn()?,
        );
        loop {
            ensure!(
                dns.0.try_wait()?.is_none(),
                "yard dns exited: {}",
                std::fs::read_to_string(dir.0.join("dns.log"))?
            );
            let bad = sample.iter().find(|(name, want)| {
                let mut got = dig(port, name);
                got.sort();
                &got != want
            });
            match bad {
                None => break,
                Some((name, want)) if t.elapsed() > Duration::from_secs(120) => {
                    bail!("{name} does not answer {want:?}")
                }
                Some(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        let ready = t.elapsed();
        let pid = dns.0.id();
        // Read once after 3 s, and again after 30 s: freed list buffers go back to the system
        // on the allocator's decay schedule, and the steady state is what a cluster lives with.
        for settle in [3u64, 30] {
            std::thread::sleep(Duration::from_secs(if settle == 3 { 3 } else { settle - 3 }));
            println!(
                "yard dns {} after {settle} s: answering after {:.1} s; VmRSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}), VmHWM (peak) {:.1} MiB ({services} Services, {} endpoints, {} pods; target < 60 MB)",
                if extra.is_empty() { "(default)" } else { "--autopath (pod index)" },
                ready.as_secs_f64(),
                status_kib(pid, "VmRSS:") as f64 / 1024.0,
                status_kib(pid, "RssAnon:") as f64 / 1024.0,
                status_kib(pid, "RssFile:") as f64 / 1024.0,
                status_kib(pid, "VmHWM:") as f64 / 1024.0,
                services * per,
                services * per
            );
        }
    }
    Ok(())
}
