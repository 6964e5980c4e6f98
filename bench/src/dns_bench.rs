//! Cluster DNS benchmark (issue 6): queries per second of `yard dns` against Knot DNS (`knotd`)
//! for the names of N Services (default 5,000), measured in one run on the same machine with the
//! same query file and the same `dnsperf` flags.
//!
//! `yard dns` gets its Services from a real API server: `yard apiserver` is started as a child,
//! the Services are created through the API (cluster IPs allocated by it), then listed back. From
//! that list the bench writes a zone file holding the same A and SRV records and a query file
//! (the A name of every Service); `knotd` serves the zone from its own configuration in a
//! temporary directory. Both servers listen on loopback ports, are pinned to the same CPU
//! (`taskset`, default CPU 1) with the same number of UDP worker threads (`--udp-workers` /
//! knot's `udp-workers`), while `dnsperf` runs pinned to the other CPU (default 0). Forwarding of
//! `yard dns` points at a closed loopback port, so nothing leaves the machine.
//!
//! Rounds alternate the order of the two servers; the median QPS of each and their ratio are
//! printed. A second, rate-limited `dnsperf -v` run per server gives per-query latencies
//! (p50/p99/p99.9). Every child is ended by PID when the bench exits, on failure too.
//!
//! Usage: dns-bench --yard target/release/yard [--services 5000] [--seconds 10] [--rounds 3]
//!        [--clients 8] [--outstanding 200] [--workers 1] [--server-cpu 1] [--client-cpu 0]
//!        [--latency-qps 50000] [--legacy-yard]

#[path = "dnsutil.rs"]
mod dnsutil;
#[path = "procstat.rs"]
mod procstat;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use dnsutil::{dig, free_port};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, PostParams};
use procstat::status_kib;
use serde_json::json;
use yard_test_support::TempDir;

/// A child process ended by PID (SIGKILL) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited early: {st}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Opts {
    yard: PathBuf,
    services: usize,
    seconds: u32,
    rounds: usize,
    clients: u32,
    outstanding: u32,
    workers: u32,
    server_cpu: String,
    client_cpu: String,
    latency_qps: u32,
    /// The yard binary predates `--udp-workers` (a before/after comparison): it binds its
    /// default number of UDP sockets (two).
    legacy_yard: bool,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        yard: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/yard")),
        services: 5000,
        seconds: 10,
        rounds: 3,
        clients: 8,
        outstanding: 200,
        workers: 1,
        server_cpu: "1".into(),
        client_cpu: "0".into(),
        latency_qps: 50_000,
        legacy_yard: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--legacy-yard" {
            o.legacy_yard = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--yard" => o.yard = PathBuf::from(v),
            "--services" => o.services = v.parse()?,
            "--seconds" => o.seconds = v.parse()?,
            "--rounds" => o.rounds = v.parse()?,
            "--clients" => o.clients = v.parse()?,
            "--outstanding" => o.outstanding = v.parse()?,
            "--workers" => o.workers = v.parse()?,
            "--server-cpu" => o.server_cpu = v.clone(),
            "--client-cpu" => o.client_cpu = v.clone(),
            "--latency-qps" => o.latency_qps = v.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    ensure!(o.services > 0 && o.rounds > 0 && o.workers > 0);
    Ok(o)
}

/// Waits until every sample name answers its expected address at `port`.
fn wait_answers(p: &mut Proc, port: u16, sample: &[(String, String)], limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        p.alive()?;
        let bad = sample.iter().find(|(name, ip)| dig(port, name) != vec![ip.clone()]);
        match bad {
            None => return Ok(()),
            Some((name, ip)) if start.elapsed() > limit => {
                bail!("{}: {name} does not answer {ip} after {limit:?} (got {:?})", p.name, dig(port, name))
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct PerfResult {
    qps: f64,
    sent: u64,
    lost: u64,
    avg_latency_ms: f64,
    noerror_pct: f64,
}

fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim_start().strip_prefix(label)).map(str::trim)
}

fn first_number(s: &str) -> Option<f64> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.')).find(|t| !t.is_empty()).and_then(|t| t.parse().ok())
}

fn dnsperf(o: &Opts, port: u16, queries: &Path, extra: &[String]) -> anyhow::Result<String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &o.client_cpu, "dnsperf", "-s", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-d")
        .arg(queries)
        .args(extra);
    let out = cmd.output().context("run dnsperf (apt-get install dnsperf)")?;
    ensure!(out.status.success(), "dnsperf failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn throughput_flags(o: &Opts, seconds: u32) -> Vec<String> {
    ["-c", &o.clients.to_string(), "-T", "1", "-q", &o.outstanding.to_string(), "-l", &seconds.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn throughput(o: &Opts, port: u16, queries: &Path, seconds: u32) -> anyhow::Result<PerfResult> {
    let text = dnsperf(o, port, queries, &throughput_flags(o, seconds))?;
    let get = |label: &str| {
        field(&text, label).and_then(first_number).with_context(|| format!("no {label:?} in dnsperf output:\n{text}"))
    };
    let noerror = field(&text, "Response codes:")
        .and_then(|s| s.split_once("NOERROR"))
        .and_then(|(_, rest)| rest.split_once('(').map(|(_, p)| p))
        .and_then(first_number)
        .unwrap_or(0.0);
    Ok(PerfResult {
        qps: get("Queries per second:")?,
        sent: get("Queries sent:")? as u64,
        lost: get("Queries lost:")? as u64,
        avg_latency_ms: get("Average Latency (s):")? * 1000.0,
        noerror_pct: noerror,
    })
}

/// Per-query latencies (ms) of a rate-limited verbose run: (p50, p99, p99.9, max, count, lost).
fn latency(o: &Opts, port: u16, queries: &Path) -> anyhow::Result<(f64, f64, f64, f64, usize, u64)> {
    let mut flags = throughput_flags(o, 5);
    flags.extend(["-Q".to_string(), o.latency_qps.to_string(), "-v".to_string()]);
    let text = dnsperf(o, port, queries, &flags)?;
    let mut lat: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("> "))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|t| t.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    ensure!(lat.len() > 1000, "only {} latencies in dnsperf -v output", lat.len());
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let lost = field(&text, "Queries lost:").and_then(first_number).unwrap_or(0.0) as u64;
    Ok((pct(0.5), pct(0.99), pct(0.999), lat[lat.len() - 1], lat.len(), lost))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = opts()?;
    ensure!(o.yard.exists(), "no yard binary at {} (--yard)", o.yard.display());
    let dir = TempDir::new("dns-bench");
    std::fs::create_dir_all(dir.0.join("api"))?;
    std::fs::create_dir_all(dir.0.join("knot"))?;

    // API server with N Services.
    let api_port = free_port()?;
    let kubeconfig = dir.0.join("api/kubeconfig");
    let mut api = Proc {
        name: "yard apiserver",
        child: Command::new(&o.yard)
            .args(["apiserver", "--data-dir"])
            .arg(dir.0.join("api"))
            .args(["--port", &api_port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("apiserver.log"))?)
            .spawn()?,
    };
    let start = Instant::now();
    while !kubeconfig.exists() {
        api.alive()?;
        ensure!(start.elapsed() < Duration::from_secs(30), "apiserver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let namespaces = 10;
    let nss: Api<Namespace> = Api::all(client.clone());
    for k in 0..namespaces {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": format!("bench-{k}")}}))?;
        nss.create(&PostParams::default(), &ns).await?;
    }
    let t = Instant::now();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..o.services)
        .map(|i| {
            let client = client.clone();
            async move {
                let ns = format!("bench-{}", i % namespaces);
                let svcs: Api<Service> = Api::namespaced(client, &ns);
                let s: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"selector": {"app": format!("a{i}")},
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}))?;
                svcs.create(&PostParams::default(), &s).await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in created {
        r?;
    }
    println!("created {} Services through the API in {:.1} s", o.services, t.elapsed().as_secs_f64());

    // The records both servers serve, from the API's list.
    let list = Api::<Service>::all(client.clone()).list(&ListParams::default()).await?;
    // (name.namespace.svc, cluster IP, [(port name, port)])
    type Record = (String, String, Vec<(String, i32)>);
    let mut records: Vec<Record> = Vec::new();
    for s in &list.items {
        let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) else {
            continue;
        };
        let spec = s.spec.clone().unwrap_or_default();
        let Some(ip) = spec.cluster_ip.filter(|ip| ip != "None" && !ip.is_empty()) else {
            continue;
        };
        let ports = spec.ports.unwrap_or_default().into_iter().filter_map(|p| Some((p.name?, p.port))).collect();
        records.push((format!("{name}.{ns}.svc"), ip, ports));
    }
    records.sort();
    ensure!(records.len() > o.services, "listed only {} Services", records.len());
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\ndns-version IN TXT \"1.1.0\"\n",
    );
    let mut queries = String::new();
    for (owner, ip, ports) in &records {
        zone.push_str(&format!("{owner} IN A {ip}\n"));
        for (pname, port) in ports {
            zone.push_str(&format!("_{pname}._tcp.{owner} IN SRV 0 100 {port} {owner}.cluster.local.\n"));
        }
        queries.push_str(&format!("{owner}.cluster.local A\n"));
    }
    let zone_file = dir.0.join("knot/cluster.local.zone");
    std::fs::write(&zone_file, zone)?;
    let query_file = dir.0.join("queries.txt");
    std::fs::write(&query_file, queries)?;
    let step = (records.len() / 20).max(1);
    let sample: Vec<(String, String)> = records
        .iter()
        .step_by(step)
        .chain(records.last())
        .map(|(owner, ip, _)| (format!("{owner}.cluster.local."), ip.clone()))
        .collect();

    // knotd with its own configuration on a loopback port.
    let knot_port = free_port()?;
    let kdir = dir.0.join("knot");
    let conf = format!(
        "server:\n    rundir: \"{d}\"\n    pidfile: \"{d}/knot.pid\"\n    listen: 127.0.0.1@{knot_port}\n    udp-workers: {w}\n    tcp-workers: 1\n    background-workers: 1\ndatabase:\n    storage: \"{d}\"\ncontrol:\n    listen: \"{d}/knot.sock\"\nlog:\n  - target: stderr\n    any: warning\nzone:\n  - domain: cluster.local.\n    file: \"{z}\"\n    journal-content: none\n    zonefile-sync: -1\n",
        d = kdir.display(),
        w = o.workers,
        z = zone_file.display()
    );
    let conf_file = kdir.join("knot.conf");
    std::fs::write(&conf_file, conf)?;
    let mut knot = Proc {
        name: "knotd",
        child: Command::new("taskset")
            .args(["-c", &o.server_cpu, "knotd", "-c"])
            .arg(&conf_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("knotd.log"))?)
            .spawn()
            .context("start knotd (apt-get install knot)")?,
    };
    wait_answers(&mut knot, knot_port, &sample, Duration::from_secs(30))?;

    // yard dns against the API server.
    let yard_port = free_port()?;
    let mut yard = Proc {
        name: "yard dns",
        child: Command::new("taskset")
            .args(["-c", &o.server_cpu])
            .arg(&o.yard)
            .arg("dns")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{yard_port}")])
            .args(if o.legacy_yard { vec![] } else { vec!["--udp-workers".to_string(), o.workers.to_string()] })
            // Nothing leaves the machine: forwarding goes to a closed loopback port.
            .args(["--upstream", "127.0.0.1:9"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("yard-dns.log"))?)
            .spawn()?,
    };
    let t = Instant::now();
    wait_answers(&mut yard, yard_port, &sample, Duration::from_secs(60))?;
    println!("yard dns synced {} Services and answers in {:.2} s", records.len(), t.elapsed().as_secs_f64());

    println!(
        "dnsperf flags (both): -d <{} A queries> {} (dnsperf on CPU {}, servers on CPU {}, {} UDP worker(s) each)",
        records.len(),
        throughput_flags(&o, o.seconds).join(" "),
        o.client_cpu,
        o.server_cpu,
        o.workers
    );
    // Warm-up (caches, page faults), not counted.
    for port in [knot_port, yard_port] {
        throughput(&o, port, &query_file, 2)?;
    }
    let mut results: HashMap<&str, Vec<PerfResult>> = HashMap::new();
    for round in 0..o.rounds {
        let order = if round % 2 == 0 {
            [("knotd", knot_port), ("yard dns", yard_port)]
        } else {
            [("yard dns", yard_port), ("knotd", knot_port)]
        };
        for (name, port) in order {
            knot.alive()?;
            yard.alive()?;
            let r = throughput(&o, port, &query_file, o.seconds)?;
            println!(
                "round {} {name:9}: {:>9.0} QPS, avg latency {:.3} ms, lost {}/{}, NOERROR {:.2}%",
                round + 1,
                r.qps,
                r.avg_latency_ms,
                r.lost,
                r.sent,
                r.noerror_pct
            );
            ensure!(r.noerror_pct > 99.9, "{name} did not answer NOERROR to every query");
            results.entry(name).or_default().push(r);
        }
    }
    let med = |name: &str| median(&results[name].iter().map(|r| r.qps).collect::<Vec<_>>());
    let (k, y) = (med("knotd"), med("yard dns"));
    println!("median QPS: knotd {k:.0}, yard dns {y:.0}; yard/knot = {:.2}x (target >= 1.0x)", y / k);

    for (name, port) in [("knotd", knot_port), ("yard dns", yard_port)] {
        let (p50, p99, p999, max, n, lost) = latency(&o, port, &query_file)?;
        println!(
            "latency {name:9} at {} QPS (-Q, -v, 5 s, {n} answers, {lost} lost): p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms",
            o.latency_qps
        );
    }
    println!(
        "resident memory: yard dns {:.1} MB, knotd {:.1} MB ({} Services)",
        status_kib(yard.pid(), "VmRSS:") as f64 / 1024.0,
        status_kib(knot.pid(), "VmRSS:") as f64 / 1024.0,
        records.len()
    );
    std::io::stdout().flush()?;
    drop(yard);
    drop(knot);
    drop(api);
    Ok(())
}
