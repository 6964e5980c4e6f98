//! proxy-bench: the proxy's performance targets, each measured beside its peer in the same run,
//! all inside network namespaces this program creates (nothing touches the host's namespace):
//!
//! - `sync [SERVICES] [ENDPOINTS]`: full sync of SERVICES x ENDPOINTS into nftables (from model
//!   objects, fresh table each round) against the 1 s target, then once over an existing table
//!   (a proxy restart); iptables (kube-proxy's layout) at a tenth of the size beside it.
//! - `latency [SERVICES] [ROUNDS]`: network programming latency with SERVICES x 10 endpoints
//!   installed: a new Service (10 endpoints) goes into the model, the backend syncs, and a client
//!   pod connects through the new cluster IP until one connection is answered; p50/p99 over
//!   ROUNDS, nftables (and iptables at up to 1,000 Services).
//! - `connrate [SERVICES] [SECONDS] [ROUNDS]`: new TCP connections per second from a client pod
//!   through a ClusterIP with SERVICES installed, against the same server's pod IP directly
//!   (ROUNDS back-to-back pairs, alternating which goes first), for nftables and iptables; the
//!   figure is the median of the per-round ratios.
//! - `userspace [SECONDS] [ROUNDS]`: HTTP requests/s (wrk, keep-alive) through the userspace
//!   backend's cluster IP against HAProxy (mode tcp, same backends) in the same node namespace,
//!   paired the same way.
//!
//! Topology: a node namespace (bridge cni0 10.244.1.1/24, forwarding on, br_netfilter on, a
//! default route into an empty bridge so unprogrammed VIPs go nowhere), server pods 10.244.1.10+
//! and a client pod 10.244.1.100 on veths into cni0. Every namespace is deleted on exit, failure
//! included; child processes (haproxy, wrk) are ended by PID.

/// The allocator of the `yard` binary, so in-process components behave as they do there.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use yard_proxy::model::{DesiredState, Endpoint, Family, Protocol, ServicePort, ServicePortName};
use yard_proxy::{Backend, Netns};
use yard_test_support::TempNetns;

const NODE: &str = "node-a";
const CONN_PORT: u16 = 9376;
const HTTP_PORT: u16 = 8080;
/// Ports the first server pod also listens on, so one Service can have 10 live endpoints.
const LATENCY_PORTS: std::ops::Range<u16> = 9400..9410;

struct Pod {
    ns: TempNetns,
    ip: String,
}

struct Topo {
    children: Vec<KillOnDrop>,
    stop: Arc<AtomicBool>,
    pods: Vec<Pod>,
    client: Pod,
    node: TempNetns,
}

/// A child process ended (by its PID) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.children.clear();
    }
}

fn sh(ns: &TempNetns, script: &str) -> Result<String> {
    ns.sh(script).with_context(|| format!("in {}: {script}", ns.name()))
}

impl Topo {
    fn new(servers: usize) -> Result<Topo> {
        let node = TempNetns::new("ypb-node")?;
        sh(
            &node,
            "ip link set lo up && ip link add cni0 type bridge && ip addr add 10.244.1.1/24 dev cni0 && ip link set cni0 up && \
             sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.bridge.bridge-nf-call-iptables=1 && \
             ip link add dflt0 type bridge && ip link set dflt0 up && ip route add default dev dflt0",
        )?;
        let mk = |i: usize, ip: String| -> Result<Pod> {
            let ns = TempNetns::new("ypb-pod")?;
            sh(
                &node,
                &format!(
                    "ip link add vp{i} type veth peer name eth0 netns {} && ip link set vp{i} master cni0 up",
                    ns.name()
                ),
            )?;
            sh(&ns, &format!("ip link set lo up && ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via 10.244.1.1"))?;
            Ok(Pod { ns, ip })
        };
        let mut pods = Vec::new();
        for i in 0..servers {
            pods.push(mk(i, format!("10.244.1.{}", 10 + i))?);
        }
        let client = mk(99, "10.244.1.100".into())?;
        // Short conntrack TIME_WAIT in the node so bounded connection loops do not fill the table.
        sh(&node, "sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=2 2>/dev/null || true")?;
        sh(&client.ns, "sysctl -qw net.ipv4.ip_local_port_range='10000 65000'; sysctl -qw net.ipv4.tcp_tw_reuse=1")?;
        let topo = Topo { children: Vec::new(), stop: Arc::new(AtomicBool::new(false)), pods, client, node };
        for (i, p) in topo.pods.iter().enumerate() {
            serve(p.ns.path(), CONN_PORT, false, topo.stop.clone())?;
            serve(p.ns.path(), HTTP_PORT, true, topo.stop.clone())?;
            if i == 0 {
                for port in LATENCY_PORTS {
                    serve(p.ns.path(), port, false, topo.stop.clone())?;
                }
            }
        }
        Ok(topo)
    }
    fn node_netns(&self) -> Netns {
        Netns::new(Some(self.node.path().to_path_buf()))
    }
}

/// A server inside the namespace at `path`: `http` answers keep-alive HTTP/1.1 requests,
/// otherwise every connection gets one line and is closed by the server.
fn serve(path: &Path, port: u16, http: bool, stop: Arc<AtomicBool>) -> Result<()> {
    let l = yard_netns::tcp_listener_in(path, format!("0.0.0.0:{port}").parse()?)?;
    l.set_nonblocking(false)?;
    let l = Arc::new(l);
    for _ in 0..2 {
        let l = l.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else { continue };
                if http {
                    std::thread::spawn(move || http_conn(&mut s));
                } else {
                    // The client closes first, so TIME_WAIT stays on its side, where
                    // tcp_tw_reuse recycles ports safely; a server-side TIME_WAIT would make a
                    // reused client port's SYN wait for a retransmit (1 s) and stall the loop.
                    let _ = s.write_all(b"ok\n");
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut b = [0u8; 64];
                    while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                }
            }
        });
    }
    Ok(())
}

fn http_conn(s: &mut TcpStream) {
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n";
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut have = Vec::new();
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have.extend_from_slice(&buf[..n]);
        while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
            have.drain(..end + 4);
            if s.write_all(RESP).is_err() {
                return;
            }
        }
    }
}

fn port(name: &str, i: usize, vip: IpAddr, eps: Vec<(IpAddr, u16)>) -> ServicePort {
    ServicePort {
        name: ServicePortName { namespace: "bench".into(), name: format!("{name}-{i}"), port: "http".into() },
        family: Family::V4,
        protocol: Protocol::Tcp,
        port: 80,
        cluster_ips: vec![vip],
        external_ips: vec![],
        load_balancer_ips: vec![],
        node_port: None,
        affinity_timeout: None,
        external_policy_local: false,
        internal_policy_local: false,
        health_check_node_port: None,
        endpoints: eps
            .into_iter()
            .map(|(ip, port)| {
                let local = ip.to_string().starts_with("10.244.1.");
                Endpoint {
                    ip,
                    port,
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: Some(if local { NODE.to_string() } else { "node-b".to_string() }),
                    local,
                }
            })
            .collect(),
    }
}

/// `n` Services x `eps` endpoints on other nodes (10.100.0.0/14, never answered): cluster IPs
/// 10.96.0.0/16 from .1.
fn background(n: usize, eps: usize) -> DesiredState {
    let mut s = DesiredState::default();
    for i in 0..n {
        let vip: IpAddr = format!("10.96.{}.{}", (i + 1) / 256, (i + 1) % 256).parse().unwrap();
        let e = (0..eps)
            .map(|j| {
                let k = i * eps + j;
                (format!("10.{}.{}.{}", 100 + k / 65536, (k / 256) % 256, k % 256).parse().unwrap(), 8080)
            })
            .collect();
        s.insert(port("bg", i, vip, e));
    }
    s
}

fn nft_backend(t: &Topo) -> Box<dyn Backend> {
    Box::new(yard_proxy::nft::NftBackend::new(t.node_netns(), vec!["10.244.0.0/16".parse().unwrap()]))
}
fn ipt_backend(t: &Topo) -> Box<dyn Backend> {
    Box::new(yard_proxy::iptables::IptablesBackend::new(t.node_netns(), vec!["10.244.0.0/16".parse().unwrap()]))
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU time (user + system) of this process's finished children, seconds.
fn children_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of this process so far (its own threads), seconds.
fn self_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn cmd_sync(n: usize, eps: usize) -> Result<()> {
    let t = Topo::new(0)?;
    println!("full sync, nftables, {n} Services x {eps} endpoints (fresh table each round):");
    let state = background(n, eps);
    let mut times = Vec::new();
    for round in 0..3 {
        let mut b = nft_backend(&t);
        let (cpu0, own0) = (children_cpu(), self_cpu());
        let t0 = Instant::now();
        b.sync(&state)?;
        let d = t0.elapsed();
        println!(
            "  round {round}: {} (CPU: nft {:.2} s, this process incl. kernel netlink commit {:.2} s)",
            secs(d),
            children_cpu() - cpu0,
            self_cpu() - own0
        );
        times.push(d);
        b.cleanup()?;
    }
    let best = *times.iter().min().unwrap();
    println!(
        "nftables full sync {n}x{eps}: best {} median {}; target 1 s: ratio {:.2}",
        secs(best),
        secs(pct(&mut times, 0.5)),
        best.as_secs_f64()
    );
    // A proxy restart: a new backend over the table a previous one left (one atomic nft batch).
    let mut b = nft_backend(&t);
    b.sync(&state)?;
    let mut b2 = nft_backend(&t);
    let (cpu0, own0) = (children_cpu(), self_cpu());
    let t0 = Instant::now();
    b2.sync(&state)?;
    println!(
        "nftables full sync {n}x{eps} over an existing table (restart, one atomic nft batch): {} (CPU: nft {:.2} s, this process {:.2} s)",
        secs(t0.elapsed()),
        children_cpu() - cpu0,
        self_cpu() - own0
    );
    b2.cleanup()?;
    drop(b);
    let m = (n / 10).max(1);
    let small = background(m, eps);
    let mut b = ipt_backend(&t);
    let t0 = Instant::now();
    b.sync(&small)?;
    let d = t0.elapsed();
    b.cleanup()?;
    let mut b = nft_backend(&t);
    let t0 = Instant::now();
    b.sync(&small)?;
    let dn = t0.elapsed();
    b.cleanup()?;
    println!(
        "at {m}x{eps}: iptables {} vs nftables {} (nftables/iptables {:.3})",
        secs(d),
        secs(dn),
        dn.as_secs_f64() / d.as_secs_f64()
    );
    Ok(())
}

/// Connect to `addr` from inside `ns` until one connection is answered (or `limit` passes).
fn probe(ns: &Path, addr: SocketAddr, limit: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    yard_netns::run_in(ns, move || -> Result<Duration> {
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
                let mut b = [0u8; 3];
                if s.read_exact(&mut b).is_ok() {
                    return Ok(t0.elapsed());
                }
            }
            if t0.elapsed() > limit {
                bail!("{addr} not answering after {limit:?}");
            }
        }
    })?
}

/// Like `probe`, for servers that wait for a request: one HTTP request must get a 200.
fn probe_http(ns: &Path, addr: SocketAddr, limit: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    yard_netns::run_in(ns, move || -> Result<Duration> {
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut b = [0u8; 12];
                if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_ok()
                    && s.read_exact(&mut b).is_ok()
                    && &b == b"HTTP/1.1 200"
                {
                    return Ok(t0.elapsed());
                }
            }
            if t0.elapsed() > limit {
                bail!("{addr} not answering HTTP after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })?
}

fn latency(t: &Topo, mut b: Box<dyn Backend>, name: &str, n: usize, rounds: usize) -> Result<()> {
    let mut state = background(n, 10);
    let t0 = Instant::now();
    b.sync(&state)?;
    println!("{name}: {n} Services x 10 endpoints installed in {}", secs(t0.elapsed()));
    let server: IpAddr = t.pods[0].ip.parse()?;
    let mut total = Vec::new();
    let mut apply = Vec::new();
    for r in 0..rounds {
        let vip: IpAddr = format!("10.97.{}.{}", r / 250, r % 250 + 1).parse()?;
        let sp = port("new", r, vip, LATENCY_PORTS.map(|p| (server, p)).collect());
        let t0 = Instant::now();
        state.insert(sp);
        b.sync(&state)?;
        let a = t0.elapsed();
        probe(t.client.ns.path(), SocketAddr::new(vip, 80), Duration::from_secs(5))?;
        total.push(t0.elapsed());
        apply.push(a);
    }
    println!(
        "{name} {n} Services: model change -> first answered connection p50 {} p99 {} max {} (sync alone p50 {} p99 {})",
        ms(pct(&mut total, 0.5)),
        ms(pct(&mut total, 0.99)),
        ms(*total.iter().max().unwrap()),
        ms(pct(&mut apply, 0.5)),
        ms(pct(&mut apply, 0.99)),
    );
    let p99 = pct(&mut total, 0.99);
    println!("{name} {n} Services: p99 / 50 ms target = {:.2}", p99.as_secs_f64() / 0.050);
    b.cleanup()?;
    Ok(())
}

fn cmd_latency(n: usize, rounds: usize) -> Result<()> {
    let t = Topo::new(1)?;
    latency(&t, nft_backend(&t), "nftables", n, rounds)?;
    let m = n.min(1000);
    latency(&t, ipt_backend(&t), "iptables", m, rounds.min(50))?;
    Ok(())
}

/// New connections per second to `addr` from `threads` loops inside `ns` for `dur`.
fn conn_rate(ns: &Path, addr: SocketAddr, threads: usize, dur: Duration) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..threads {
        let (done, errors, ns) = (done.clone(), errors.clone(), ns.to_path_buf());
        hs.push(std::thread::spawn(move || {
            yard_netns::run_in(&ns, move || {
                let mut b = [0u8; 8];
                while start.elapsed() < dur {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        Ok(mut s) => {
                            let mut got = 0;
                            while got < 3 {
                                match s.read(&mut b[got..]) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => got += n,
                                }
                            }
                            if got == 3 {
                                done.fetch_add(1, Ordering::Relaxed);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        }));
    }
    for h in hs {
        let _ = h.join();
    }
    let el = start.elapsed().as_secs_f64();
    let e = errors.load(Ordering::Relaxed);
    let d = done.load(Ordering::Relaxed);
    if e > d / 100 {
        bail!("{addr}: {e} failed connections of {}", d + e);
    }
    Ok(d as f64 / el)
}

/// The median of each round's own ratio `a[i] / b[i]`: the two measurements of a round ran back
/// to back, so a drift of the machine's speed between rounds cancels out of their ratio.
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&mut r)
}

fn connrate(t: &Topo, mut b: Box<dyn Backend>, name: &str, n: usize, secs_each: u64, rounds: usize) -> Result<f64> {
    let mut state = background(n.saturating_sub(1), 10);
    let vip: IpAddr = "10.97.0.1".parse()?;
    let server: IpAddr = t.pods[0].ip.parse()?;
    state.insert(port("target", 0, vip, vec![(server, CONN_PORT)]));
    let t0 = Instant::now();
    b.sync(&state)?;
    println!("{name}: {n} Services installed in {}", secs(t0.elapsed()));
    let dur = Duration::from_secs(secs_each);
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    let (d_addr, v_addr) = (SocketAddr::new(server, CONN_PORT), SocketAddr::new(vip, 80));
    // One untimed round of each first (caches, conntrack and socket tables warm up), then
    // rounds alternating which goes first, so a drift over time favours neither.
    conn_rate(t.client.ns.path(), d_addr, 4, dur)?;
    conn_rate(t.client.ns.path(), v_addr, 4, dur)?;
    for round in 0..rounds {
        if round % 2 == 0 {
            direct.push(conn_rate(t.client.ns.path(), d_addr, 4, dur)?);
            via.push(conn_rate(t.client.ns.path(), v_addr, 4, dur)?);
        } else {
            via.push(conn_rate(t.client.ns.path(), v_addr, 4, dur)?);
            direct.push(conn_rate(t.client.ns.path(), d_addr, 4, dur)?);
        }
    }
    let paired = paired_ratio(&via, &direct);
    let (d, v) = (median(&mut direct.clone()), median(&mut via.clone()));
    println!("{name} {n} Services: new connections/s via ClusterIP {v:.0}, to the pod IP directly {d:.0} (rounds: via {via:.0?}, direct {direct:.0?}); ratio of medians {:.3}, median of per-round ratios {paired:.3}", v / d);
    b.cleanup()?;
    Ok(paired)
}

fn cmd_connrate(n: usize, secs_each: u64, rounds: usize) -> Result<()> {
    let t = Topo::new(1)?;
    let rn = connrate(&t, nft_backend(&t), "nftables", n, secs_each, rounds)?;
    let m = n.min(1000);
    let ri = connrate(&t, ipt_backend(&t), "iptables", m, secs_each, rounds)?;
    println!("ClusterIP/direct connection-rate ratio (median of {rounds} per-round ratios): nftables ({n} Services) {rn:.3}, iptables ({m} Services) {ri:.3}; target >= 0.9 (nftables)");
    Ok(())
}

/// `wrk` from inside `ns`; requests/s.
fn wrk(ns: &Path, url: &str, secs_each: u64) -> Result<f64> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["--", "wrk", "-t2", "-c32", &format!("-d{secs_each}s"), "--timeout", "2s", url])
        .stdin(Stdio::null())
        .output()
        .context("wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk {url}: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    if let Some(l) = text.lines().find(|l| l.contains("Non-2xx") || l.contains("Socket errors")) {
        bail!("wrk {url}: {l}\n{text}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    Ok(rps)
}

fn cmd_userspace(secs_each: u64, rounds: usize) -> Result<()> {
    let mut t = Topo::new(2)?;
    let mut b: Box<dyn Backend> =
        Box::new(yard_proxy::userspace::UserspaceBackend::new(t.node_netns(), vec!["10.244.0.0/16".parse()?])?);
    let vip: IpAddr = "10.96.0.80".parse()?;
    let eps: Vec<(IpAddr, u16)> = t.pods.iter().map(|p| (p.ip.parse().unwrap(), HTTP_PORT)).collect();
    let mut state = DesiredState::default();
    state.insert(port("web", 0, vip, eps.clone()));
    b.sync(&state)?;
    // HAProxy in the same node namespace, L4 (mode tcp) like the userspace proxy, round-robin
    // over the same endpoints, listening on the node's bridge address.
    let dir = yard_test_support::TempDir::new("proxy-bench");
    let cfg = dir.join("haproxy.cfg");
    let mut c = String::from(
        "global\n  maxconn 4096\n  nbthread 2\n\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\n\
         frontend fe\n  bind 10.244.1.1:18080\n  default_backend be\n\nbackend be\n  balance roundrobin\n",
    );
    for (i, (ip, p)) in eps.iter().enumerate() {
        c.push_str(&format!("  server s{i} {ip}:{p}\n"));
    }
    std::fs::write(&cfg, c)?;
    let child = Command::new("nsenter")
        .arg(format!("--net={}", t.node.path().display()))
        .args(["--", "haproxy", "-db", "-f"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("haproxy (apt-get install haproxy)")?;
    t.children.push(KillOnDrop(child));
    probe_http(t.client.ns.path(), "10.244.1.1:18080".parse()?, Duration::from_secs(5)).context("haproxy up")?;
    probe_http(t.client.ns.path(), SocketAddr::new(vip, 80), Duration::from_secs(5)).context("userspace proxy up")?;
    let (mut hp, mut us) = (Vec::new(), Vec::new());
    let (h_url, u_url) = ("http://10.244.1.1:18080/".to_string(), format!("http://{vip}/"));
    // One untimed round of each, then rounds alternating which goes first (as in connrate).
    wrk(t.client.ns.path(), &h_url, 1)?;
    wrk(t.client.ns.path(), &u_url, 1)?;
    for round in 0..rounds {
        if round % 2 == 0 {
            hp.push(wrk(t.client.ns.path(), &h_url, secs_each)?);
            us.push(wrk(t.client.ns.path(), &u_url, secs_each)?);
        } else {
            us.push(wrk(t.client.ns.path(), &u_url, secs_each)?);
            hp.push(wrk(t.client.ns.path(), &h_url, secs_each)?);
        }
    }
    let paired = paired_ratio(&us, &hp);
    let (h, u) = (median(&mut hp.clone()), median(&mut us.clone()));
    println!("userspace ClusterIP {u:.0} req/s, HAProxy {h:.0} req/s (rounds: userspace {us:.0?}, haproxy {hp:.0?}); ratio of medians {:.3}, median of {rounds} per-round ratios {paired:.3} (target >= 1.0)", u / h);
    b.cleanup()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| -> Result<usize> {
        args.get(i).map(|s| s.parse::<usize>().context("number")).unwrap_or(Ok(d))
    };
    match args.first().map(String::as_str) {
        Some("sync") => cmd_sync(num(1, 10_000)?, num(2, 10)?),
        Some("latency") => cmd_latency(num(1, 1000)?, num(2, 100)?),
        Some("connrate") => cmd_connrate(num(1, 10_000)?, num(2, 3)? as u64, num(3, 5)?),
        Some("userspace") => cmd_userspace(num(1, 5)? as u64, num(2, 5)?),
        _ => bail!("usage: proxy-bench sync [SERVICES] [ENDPOINTS] | latency [SERVICES] [ROUNDS] | connrate [SERVICES] [SECONDS] [ROUNDS] | userspace [SECONDS] [ROUNDS]"),
    }
}
