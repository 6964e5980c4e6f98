//! Userspace backend: an async L4 proxy for hosts whose kernel cannot be programmed. Every VIP
//! (cluster IPs, externalIPs, LB IPs) is added to the dummy interface `yard-vip0` in the node's
//! namespace and gets a TCP or UDP listener there (NodePorts listen on the wildcard address);
//! connections are spread round-robin over the endpoints, honouring ClientIP affinity, and copied
//! with `tokio::io::copy_bidirectional`. Service ports without endpoints have no listener, so the
//! kernel refuses connections to the VIP at once (RST / ICMP port unreachable).
//! (On kernels without the dummy driver, `yard-vip0` is a bridge without ports.)
//! Sockets are served by the backend's own worker threads (one per core, at most 4): each joined
//! the node's namespace once, so listeners and upstream sockets are created where they belong, and
//! each drives a single-threaded runtime, so both sockets of a connection stay on one thread. The
//! first worker accepts and hands each connection to the worker serving the fewest (the kernel's
//! `SO_REUSEPORT` hashing spreads a few dozen connections too unevenly); a UDP port is served by
//! the first worker.
//!
//! externalTrafficPolicy Local keeps the client's address, as the kernel backends do: the upstream
//! connection of an external client (not from the cluster's pod networks) is made from the
//! client's own address with `IP_TRANSPARENT`, and the pod's replies come back to that socket
//! through a policy route (`fwmark 0x4000 -> table 4000: local default`) and one nftables rule
//! that marks packets belonging to a transparent socket (table `inet yard-userspace`). Both are
//! set up on first need and removed by `cleanup`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinHandle;

use crate::exec::Netns;
use crate::model::{DesiredState, Endpoint, Protocol};
use crate::Error;

/// The dummy interface holding the VIPs.
pub const DUMMY_IF: &str = "yard-vip0";
/// nftables table, packet mark and routing table of transparent (client-address) connections.
pub const DIVERT_TABLE: &str = "yard-userspace";
const DIVERT_MARK: u32 = 0x4000;
const DIVERT_ROUTE_TABLE: u32 = 4000;
const UDP_IDLE: Duration = Duration::from_secs(60);

/// Spreads connections over endpoints: round-robin, with optional ClientIP affinity.
pub struct Balancer {
    endpoints: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
    affinity: RwLock<Option<Duration>>,
    sticky: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Balancer {
    pub fn new(endpoints: Vec<SocketAddr>, affinity: Option<Duration>) -> Self {
        Balancer {
            endpoints: RwLock::new(endpoints),
            next: AtomicUsize::new(0),
            affinity: RwLock::new(affinity),
            sticky: Mutex::new(HashMap::new()),
        }
    }
    pub fn update(&self, endpoints: Vec<SocketAddr>, affinity: Option<Duration>) {
        *self.endpoints.write().unwrap() = endpoints;
        *self.affinity.write().unwrap() = affinity;
        if affinity.is_none() {
            self.sticky.lock().unwrap().clear();
        }
    }
    pub fn contains(&self, ep: &SocketAddr) -> bool {
        self.endpoints.read().unwrap().contains(ep)
    }
    /// The endpoint for a new connection from `client`.
    pub fn pick(&self, client: IpAddr) -> Option<SocketAddr> {
        let eps = self.endpoints.read().unwrap();
        if eps.is_empty() {
            return None;
        }
        let affinity = *self.affinity.read().unwrap();
        if let Some(timeout) = affinity {
            let mut sticky = self.sticky.lock().unwrap();
            if let Some((ep, at)) = sticky.get(&client) {
                if at.elapsed() < timeout && eps.contains(ep) {
                    let ep = *ep;
                    sticky.insert(client, (ep, Instant::now()));
                    return Some(ep);
                }
            }
            let ep = eps[self.next.fetch_add(1, Ordering::Relaxed) % eps.len()];
            if sticky.len() > 65536 {
                sticky.retain(|_, (_, at)| at.elapsed() < timeout);
            }
            sticky.insert(client, (ep, Instant::now()));
            return Some(ep);
        }
        Some(eps[self.next.fetch_add(1, Ordering::Relaxed) % eps.len()])
    }
}

/// The threads that serve the proxy's sockets (see the module documentation).
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    /// Connections each worker is serving.
    load: Arc<Vec<AtomicUsize>>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(netns: &Netns) -> Result<Workers, Error> {
        let n = std::thread::available_parallelism().map(|n| n.get().min(4)).unwrap_or(1);
        let load = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
        let mut w = Workers { handles: Vec::new(), load, stop: Vec::new(), threads: Vec::new() };
        for i in 0..n {
            let (htx, hrx) = std::sync::mpsc::channel();
            let (stx, srx) = tokio::sync::oneshot::channel::<()>();
            let main = move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = htx.send(Err(e));
                        return;
                    }
                };
                let _ = htx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = srx.await;
                });
            };
            let spawn = move || std::thread::Builder::new().name(format!("yard-proxy-{i}")).spawn(main);
            let thread = match netns.path() {
                // A thread spawned from a thread inside the namespace stays in it.
                Some(p) => yard_netns::run_in(p, spawn)??,
                None => spawn()?,
            };
            w.threads.push(thread);
            w.stop.push(stx);
            let handle = hrx.recv().map_err(|_| Error::Other("userspace worker did not start".into()))??;
            w.handles.push(handle);
        }
        Ok(w)
    }

    /// Start `task(socket)` on the first worker; `open` runs there, inside the namespace, and
    /// its error is returned here.
    fn spawn_listener<S, Fut>(
        &self,
        open: fn(SocketAddr) -> io::Result<S>,
        addr: SocketAddr,
        task: impl FnOnce(S) -> Fut + Send + 'static,
    ) -> Result<JoinHandle<()>, Error>
    where
        S: Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = self.handles[0].spawn(async move {
            // A listener just stopped on this address closes its sockets when this worker gets
            // to drop its tasks; give it that moment.
            let mut opened = open(addr);
            for _ in 0..100 {
                match &opened {
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        opened = open(addr);
                    }
                    _ => break,
                }
            }
            match opened {
                Ok(sock) => {
                    let _ = tx.send(Ok(()));
                    task(sock).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        match rx.recv().unwrap_or_else(|_| Err(io::Error::other("userspace worker gone"))) {
            Ok(()) => Ok(handle),
            Err(e) => {
                handle.abort();
                Err(e.into())
            }
        }
    }

    fn pool(&self, transparent_except: Option<Arc<Vec<ipnet::IpNet>>>) -> Pool {
        Pool { handles: self.handles.clone(), load: self.load.clone(), transparent_except }
    }
}

/// Where accepted connections go: the worker serving the fewest.
#[derive(Clone)]
struct Pool {
    handles: Vec<tokio::runtime::Handle>,
    load: Arc<Vec<AtomicUsize>>,
    /// Some: connect upstream from the client's address, unless it is in one of these networks.
    transparent_except: Option<Arc<Vec<ipnet::IpNet>>>,
}

impl Pool {
    /// Serve `client` (accepted on the first worker) from the least loaded worker.
    fn proxy(&self, client: tokio::net::TcpStream, peer: SocketAddr, ep: SocketAddr) {
        let from = match &self.transparent_except {
            Some(nets) if !peer.ip().is_loopback() && !nets.iter().any(|n| n.contains(&peer.ip())) => Some(peer.ip()),
            _ => None,
        };
        let i = (0..self.handles.len()).min_by_key(|i| self.load[*i].load(Ordering::Relaxed)).unwrap_or(0);
        self.load[i].fetch_add(1, Ordering::Relaxed);
        let load = self.load.clone();
        if i == 0 {
            tokio::spawn(serve_conn(client, from, ep, load, i));
            return;
        }
        // Another worker's runtime: the socket is re-registered with that runtime's reactor.
        match client.into_std() {
            Ok(std) => {
                self.handles[i].spawn(async move {
                    match tokio::net::TcpStream::from_std(std) {
                        Ok(c) => serve_conn(c, from, ep, load, i).await,
                        Err(_) => {
                            load[i].fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            Err(_) => {
                self.load[i].fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

async fn serve_conn(
    mut client: tokio::net::TcpStream,
    from: Option<IpAddr>,
    ep: SocketAddr,
    load: Arc<Vec<AtomicUsize>>,
    worker: usize,
) {
    let _ = client.set_nodelay(true);
    match tcp_connect(from, ep).await {
        Ok(mut up) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        }
        Err(e) => tracing::debug!("userspace connect {ep}: {e}"),
    }
    load[worker].fetch_sub(1, Ordering::Relaxed);
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Ending a worker's runtime drops its tasks, which closes every socket they hold.
        for s in self.stop.drain(..) {
            let _ = s.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// A connection to `ep`; with `from`, made from that (foreign) address with `IP_TRANSPARENT`.
async fn tcp_connect(from: Option<IpAddr>, ep: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let sock = if ep.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    let _ = sock.set_nodelay(true);
    if let Some(ip) = from.filter(|ip| ip.is_ipv4() == ep.is_ipv4()) {
        use std::os::fd::AsRawFd;
        let (level, opt) =
            if ip.is_ipv4() { (libc::SOL_IP, libc::IP_TRANSPARENT) } else { (libc::SOL_IPV6, libc::IPV6_TRANSPARENT) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    tokio::time::timeout(Duration::from_secs(5), sock.connect(ep))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))?
}

async fn udp_upstream(ep: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr =
        if ep.is_ipv6() { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
    let s = bind_udp(any)?;
    s.connect(ep).await?;
    Ok(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ListenKey {
    addr: SocketAddr,
    protocol: Protocol,
}

struct Listener {
    balancer: Arc<Balancer>,
    transparent: bool,
    tasks: Vec<JoinHandle<()>>,
}

impl Listener {
    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The userspace backend.
pub struct UserspaceBackend {
    netns: Netns,
    workers: Workers,
    /// Clients from these networks (pods) are never made transparent: a pod's reply to another
    /// pod on the bridge would bypass the node and never reach the proxy.
    cluster_cidrs: Arc<Vec<ipnet::IpNet>>,
    /// Whether the divert rule and policy route for transparent connections are in place.
    diverting: bool,
    listeners: BTreeMap<ListenKey, Listener>,
    vips: Option<BTreeSet<IpAddr>>,
}

impl UserspaceBackend {
    /// Starts the worker threads in `netns`; they end when the backend is dropped.
    pub fn new(netns: Netns, cluster_cidrs: Vec<ipnet::IpNet>) -> Result<Self, Error> {
        let workers = Workers::start(&netns)?;
        Ok(UserspaceBackend {
            netns,
            workers,
            cluster_cidrs: Arc::new(cluster_cidrs),
            diverting: false,
            listeners: BTreeMap::new(),
            vips: None,
        })
    }

    /// The divert rule and policy route that bring replies to transparent sockets home.
    fn ensure_divert(&mut self) -> Result<(), Error> {
        if self.diverting {
            return Ok(());
        }
        let rules = format!(
            "table inet {DIVERT_TABLE} {{\n  chain divert {{\n    type filter hook prerouting priority mangle; policy accept;\n    \
             meta l4proto tcp socket transparent 1 meta mark set meta mark | {DIVERT_MARK:#x} accept\n  }}\n}}\n"
        );
        self.netns
            .run("nft", &["-f", "-"], Some(&format!("destroy table inet {DIVERT_TABLE}\n{rules}")))
            .or_else(|_| self.netns.run("nft", &["-f", "-"], Some(&rules)))?;
        for fam in ["-4", "-6"] {
            let mark = format!("{DIVERT_MARK:#x}/{DIVERT_MARK:#x}");
            let table = DIVERT_ROUTE_TABLE.to_string();
            let _ = self.netns.run_raw("ip", &[fam, "rule", "del", "fwmark", &mark, "lookup", &table], None);
            self.netns.run("ip", &[fam, "rule", "add", "fwmark", &mark, "lookup", &table, "priority", &table], None)?;
            let any = if fam == "-4" { "0.0.0.0/0" } else { "::/0" };
            self.netns.run("ip", &[fam, "route", "replace", "local", any, "dev", "lo", "table", &table], None)?;
        }
        self.diverting = true;
        Ok(())
    }

    fn remove_divert(&mut self) {
        let _ = self.netns.run_raw("nft", &["delete", "table", "inet", DIVERT_TABLE], None);
        let (mark, table) = (format!("{DIVERT_MARK:#x}/{DIVERT_MARK:#x}"), DIVERT_ROUTE_TABLE.to_string());
        for fam in ["-4", "-6"] {
            let _ = self.netns.run_raw("ip", &[fam, "rule", "del", "fwmark", &mark, "lookup", &table], None);
            let _ = self.netns.run_raw("ip", &[fam, "route", "flush", "table", &table], None);
        }
        self.diverting = false;
    }

    fn sync_vips(&mut self, want: &BTreeSet<IpAddr>) -> Result<(), Error> {
        let mut script = String::new();
        let have = match &self.vips {
            Some(v) => v.clone(),
            None => {
                let out = self.netns.run_raw("ip", &["link", "add", DUMMY_IF, "type", "dummy"], None)?;
                if String::from_utf8_lossy(&out.stderr).contains("Unknown device type") {
                    // Kernels without the dummy driver: a bridge without ports holds addresses
                    // just as well.
                    let _ = self.netns.run_raw("ip", &["link", "add", DUMMY_IF, "type", "bridge"], None)?;
                }
                self.netns.run("ip", &["link", "set", DUMMY_IF, "up"], None)?;
                self.netns.run("ip", &["addr", "flush", "dev", DUMMY_IF], None)?;
                BTreeSet::new()
            }
        };
        for ip in want.difference(&have) {
            match ip {
                IpAddr::V4(a) => script.push_str(&format!("addr add {a}/32 dev {DUMMY_IF}\n")),
                IpAddr::V6(a) => script.push_str(&format!("addr add {a}/128 dev {DUMMY_IF} nodad\n")),
            }
        }
        for ip in have.difference(want) {
            let plen = if ip.is_ipv4() { 32 } else { 128 };
            script.push_str(&format!("addr del {ip}/{plen} dev {DUMMY_IF}\n"));
        }
        if !script.is_empty() {
            self.netns.run("ip", &["-force", "-batch", "-"], Some(&script))?;
        }
        self.vips = Some(want.clone());
        Ok(())
    }

    fn bind(&self, key: ListenKey, balancer: Arc<Balancer>, transparent: bool) -> Result<Vec<JoinHandle<()>>, Error> {
        match key.protocol {
            Protocol::Tcp => {
                let pool = self.workers.pool(transparent.then(|| self.cluster_cidrs.clone()));
                Ok(vec![self.workers.spawn_listener(listen_tcp, key.addr, move |l| tcp_loop(l, balancer, pool))?])
            }
            Protocol::Udp => {
                Ok(vec![self.workers.spawn_listener(bind_udp, key.addr, move |s| udp_loop(Arc::new(s), balancer))?])
            }
            Protocol::Sctp => Err(Error::Other("userspace mode does not proxy SCTP".into())),
        }
    }
}

async fn tcp_loop(l: TcpListener, bal: Arc<Balancer>, pool: Pool) {
    loop {
        let (client, peer) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("userspace accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(ep) = bal.pick(peer.ip()) else { continue };
        pool.proxy(client, peer, ep);
    }
}

async fn udp_loop(sock: Arc<UdpSocket>, bal: Arc<Balancer>) {
    struct Session {
        ep: SocketAddr,
        up: Arc<UdpSocket>,
        task: JoinHandle<()>,
    }
    // The reply tasks hold the listening socket: they end with the loop (when it is stopped), so
    // the address is free again at once.
    impl Drop for Session {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("userspace udp recv: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // A session whose endpoint went away (or that idled out) is replaced at once.
        let stale = sessions.get(&client).is_some_and(|s| s.task.is_finished() || !bal.contains(&s.ep));
        if stale {
            if let Some(s) = sessions.remove(&client) {
                s.task.abort();
            }
        }
        if !sessions.contains_key(&client) {
            let Some(ep) = bal.pick(client.ip()) else { continue };
            let up = match udp_upstream(ep).await {
                Ok(u) => Arc::new(u),
                Err(e) => {
                    tracing::debug!("userspace udp upstream {ep}: {e}");
                    continue;
                }
            };
            let (up2, sock2) = (up.clone(), sock.clone());
            let task = tokio::spawn(async move {
                let mut b = vec![0u8; 65536];
                while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, up2.recv(&mut b)).await {
                    if sock2.send_to(&b[..n], client).await.is_err() {
                        break;
                    }
                }
            });
            if sessions.len() > 16384 {
                sessions.retain(|_, s| !s.task.is_finished());
            }
            sessions.insert(client, Session { ep, up, task });
        }
        if let Some(s) = sessions.get(&client) {
            let _ = s.up.send(&buf[..n]).await;
        }
    }
}

fn eps(list: Vec<&Endpoint>) -> Vec<SocketAddr> {
    list.into_iter().map(|e| e.socket_addr()).collect()
}

impl crate::Backend for UserspaceBackend {
    fn sync(&mut self, desired: &DesiredState) -> Result<usize, Error> {
        let mut want: BTreeMap<ListenKey, (Vec<SocketAddr>, Option<Duration>, bool)> = BTreeMap::new();
        let mut vips = BTreeSet::new();
        for sp in desired.services.values() {
            if sp.protocol == Protocol::Sctp {
                continue;
            }
            let aff = sp.affinity_timeout.map(|t| Duration::from_secs(t as u64));
            let cluster = eps(sp.cluster_endpoints());
            let external = if sp.has_external() { eps(sp.external_endpoints()) } else { Vec::new() };
            let local = sp.external_policy_local && sp.protocol == Protocol::Tcp;
            for ip in &sp.cluster_ips {
                vips.insert(*ip);
                if !cluster.is_empty() {
                    want.insert(
                        ListenKey { addr: SocketAddr::new(*ip, sp.port), protocol: sp.protocol },
                        (cluster.clone(), aff, false),
                    );
                }
            }
            for ip in sp.external_ips.iter().chain(sp.load_balancer_ips.iter()) {
                vips.insert(*ip);
                if !external.is_empty() {
                    want.insert(
                        ListenKey { addr: SocketAddr::new(*ip, sp.port), protocol: sp.protocol },
                        (external.clone(), aff, local),
                    );
                }
            }
            if let (Some(np), false) = (sp.node_port, external.is_empty()) {
                let any: IpAddr = match sp.family {
                    crate::model::Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
                    crate::model::Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
                };
                want.insert(
                    ListenKey { addr: SocketAddr::new(any, np), protocol: sp.protocol },
                    (external.clone(), aff, local),
                );
            }
        }
        self.sync_vips(&vips)?;
        if want.values().any(|(_, _, t)| *t) {
            self.ensure_divert()?;
        }
        let mut changed = 0;
        let gone: Vec<ListenKey> = self.listeners.keys().filter(|k| !want.contains_key(k)).copied().collect();
        for k in gone {
            if let Some(l) = self.listeners.remove(&k) {
                l.stop();
                changed += 1;
            }
        }
        let mut errors = Vec::new();
        for (k, (eps, aff, transparent)) in want {
            match self.listeners.get(&k) {
                Some(l) if l.transparent == transparent && !l.tasks.iter().any(|t| t.is_finished()) => {
                    l.balancer.update(eps, aff)
                }
                _ => {
                    if let Some(old) = self.listeners.remove(&k) {
                        old.stop();
                    }
                    let bal = Arc::new(Balancer::new(eps, aff));
                    match self.bind(k, bal.clone(), transparent) {
                        Ok(tasks) => {
                            self.listeners.insert(k, Listener { balancer: bal, transparent, tasks });
                            changed += 1;
                        }
                        Err(e) => errors.push(format!("{}/{}: {e}", k.addr, k.protocol.lower())),
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(Error::Other(format!("userspace listeners: {}", errors.join("; "))));
        }
        Ok(changed)
    }

    fn check(&mut self) -> Result<bool, Error> {
        let ok = self.vips.is_none()
            || self.netns.run_raw("ip", &["link", "show", DUMMY_IF], None).map(|o| o.status.success()).unwrap_or(false);
        if !ok {
            self.vips = None;
        }
        let divert_ok = !self.diverting
            || self
                .netns
                .run_raw("nft", &["list", "table", "inet", DIVERT_TABLE], None)
                .map(|o| o.status.success())
                .unwrap_or(false);
        if !divert_ok {
            self.diverting = false;
        }
        Ok(ok && divert_ok)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        for (_, l) in std::mem::take(&mut self.listeners) {
            l.stop();
        }
        self.vips = None;
        self.remove_divert();
        let out = self.netns.run_raw("ip", &["link", "del", DUMMY_IF], None)?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("Cannot find device") {
                return Err(Error::Command { command: "ip link del".into(), message: err.trim().into() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_and_affinity() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let bal = Balancer::new(vec![a, b], None);
        let c: IpAddr = "10.1.0.1".parse().unwrap();
        let picks: Vec<_> = (0..4).map(|_| bal.pick(c).unwrap()).collect();
        assert_eq!(picks, vec![a, b, a, b]);
        bal.update(vec![a, b], Some(Duration::from_secs(60)));
        let first = bal.pick(c).unwrap();
        assert!((0..10).all(|_| bal.pick(c) == Some(first)));
        // The pinned endpoint disappears: the client moves.
        let other = if first == a { b } else { a };
        bal.update(vec![other], Some(Duration::from_secs(60)));
        assert_eq!(bal.pick(c), Some(other));
        bal.update(vec![], None);
        assert_eq!(bal.pick(c), None);
    }
}
