//! Userspace backend: an async L4 proxy for hosts whose kernel cannot be programmed. Every VIP
//! (cluster IPs, externalIPs, LB IPs) is added to the dummy interface `yard-vip0` in the node's
//! namespace and gets a TCP or UDP listener there (NodePorts listen on the wildcard address);
//! connections are spread round-robin over the endpoints, honouring ClientIP affinity, and copied
//! with `tokio::io::copy_bidirectional`. Service ports without endpoints have no listener, so the
//! kernel refuses connections to the VIP at once (RST / ICMP port unreachable).
//! (On kernels without the dummy driver, `yard-vip0` is a bridge without ports.)
//! Upstream sockets are created by a helper thread that lives in the node's namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
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

enum SockReq {
    Tcp(bool),
    Udp(bool),
}

/// Creates sockets inside the node's namespace from a long-lived thread that joined it.
#[derive(Clone)]
struct Factory {
    tx: std::sync::mpsc::Sender<(SockReq, tokio::sync::oneshot::Sender<io::Result<OwnedFd>>)>,
}

impl Factory {
    fn new(netns: &Netns) -> Result<Factory, Error> {
        let (tx, rx) = std::sync::mpsc::channel::<(SockReq, tokio::sync::oneshot::Sender<io::Result<OwnedFd>>)>();
        let serve = move || {
            while let Ok((req, reply)) = rx.recv() {
                let r = match req {
                    SockReq::Tcp(v6) => {
                        let af = if v6 { libc::AF_INET6 } else { libc::AF_INET };
                        // SAFETY: plain socket(2) call; the fd is owned right away.
                        let fd = unsafe { libc::socket(af, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
                        if fd < 0 {
                            Err(io::Error::last_os_error())
                        } else {
                            // SAFETY: fd is a fresh, valid descriptor we own.
                            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
                        }
                    }
                    SockReq::Udp(v6) => {
                        let bind: SocketAddr = if v6 {
                            (Ipv6Addr::UNSPECIFIED, 0).into()
                        } else {
                            (Ipv4Addr::UNSPECIFIED, 0).into()
                        };
                        std::net::UdpSocket::bind(bind).and_then(|s| {
                            s.set_nonblocking(true)?;
                            Ok(OwnedFd::from(s))
                        })
                    }
                };
                let _ = reply.send(r);
            }
        };
        match netns.path() {
            Some(p) => {
                // A thread spawned from a thread inside the namespace stays in it.
                yard_netns::run_in(p, move || {
                    std::thread::Builder::new().name("yard-proxy-sockets".into()).spawn(serve)
                })??;
            }
            None => {
                std::thread::Builder::new().name("yard-proxy-sockets".into()).spawn(serve)?;
            }
        }
        Ok(Factory { tx })
    }

    async fn get(&self, req: SockReq) -> io::Result<OwnedFd> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send((req, tx)).map_err(|_| io::Error::other("socket factory gone"))?;
        rx.await.map_err(|_| io::Error::other("socket factory gone"))?
    }

    async fn tcp_connect(&self, ep: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let fd = self.get(SockReq::Tcp(ep.is_ipv6())).await?;
        let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        let _ = sock.set_nodelay(true);
        tokio::time::timeout(Duration::from_secs(5), sock.connect(ep))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))?
    }

    async fn udp(&self, ep: SocketAddr) -> io::Result<UdpSocket> {
        let fd = self.get(SockReq::Udp(ep.is_ipv6())).await?;
        let s = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
        s.connect(ep).await?;
        Ok(s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ListenKey {
    addr: SocketAddr,
    protocol: Protocol,
}

struct Listener {
    balancer: Arc<Balancer>,
    task: JoinHandle<()>,
}

/// The userspace backend.
pub struct UserspaceBackend {
    netns: Netns,
    rt: tokio::runtime::Handle,
    factory: Factory,
    listeners: BTreeMap<ListenKey, Listener>,
    vips: Option<BTreeSet<IpAddr>>,
}

impl UserspaceBackend {
    /// Must be given a handle of the runtime the proxy tasks run on.
    pub fn new(netns: Netns, rt: tokio::runtime::Handle) -> Result<Self, Error> {
        let factory = Factory::new(&netns)?;
        Ok(UserspaceBackend { netns, rt, factory, listeners: BTreeMap::new(), vips: None })
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

    fn bind(&self, key: ListenKey, balancer: Arc<Balancer>) -> Result<JoinHandle<()>, Error> {
        let factory = self.factory.clone();
        let _guard = self.rt.enter();
        match key.protocol {
            Protocol::Tcp => {
                let std_l = match self.netns.path() {
                    Some(p) => yard_netns::tcp_listener_in(p, key.addr)?,
                    None => {
                        let l = std::net::TcpListener::bind(key.addr)?;
                        l.set_nonblocking(true)?;
                        l
                    }
                };
                let l = TcpListener::from_std(std_l)?;
                Ok(self.rt.spawn(tcp_loop(l, balancer, factory)))
            }
            Protocol::Udp => {
                let std_s = match self.netns.path() {
                    Some(p) => yard_netns::udp_socket_in(p, key.addr)?,
                    None => {
                        let s = std::net::UdpSocket::bind(key.addr)?;
                        s.set_nonblocking(true)?;
                        s
                    }
                };
                let s = UdpSocket::from_std(std_s)?;
                Ok(self.rt.spawn(udp_loop(Arc::new(s), balancer, factory)))
            }
            Protocol::Sctp => Err(Error::Other("userspace mode does not proxy SCTP".into())),
        }
    }
}

async fn tcp_loop(l: TcpListener, bal: Arc<Balancer>, factory: Factory) {
    loop {
        let (mut client, peer) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("userspace accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(ep) = bal.pick(peer.ip()) else { continue };
        let factory = factory.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            match factory.tcp_connect(ep).await {
                Ok(mut up) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
                Err(e) => tracing::debug!("userspace connect {ep}: {e}"),
            }
        });
    }
}

async fn udp_loop(sock: Arc<UdpSocket>, bal: Arc<Balancer>, factory: Factory) {
    struct Session {
        ep: SocketAddr,
        up: Arc<UdpSocket>,
        task: JoinHandle<()>,
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
            let up = match factory.udp(ep).await {
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
        let mut want: BTreeMap<ListenKey, (Vec<SocketAddr>, Option<Duration>)> = BTreeMap::new();
        let mut vips = BTreeSet::new();
        for sp in desired.services.values() {
            if sp.protocol == Protocol::Sctp {
                continue;
            }
            let aff = sp.affinity_timeout.map(|t| Duration::from_secs(t as u64));
            let cluster = eps(sp.cluster_endpoints());
            let external = if sp.has_external() { eps(sp.external_endpoints()) } else { Vec::new() };
            for ip in &sp.cluster_ips {
                vips.insert(*ip);
                if !cluster.is_empty() {
                    want.insert(ListenKey { addr: SocketAddr::new(*ip, sp.port), protocol: sp.protocol }, (cluster.clone(), aff));
                }
            }
            for ip in sp.external_ips.iter().chain(sp.load_balancer_ips.iter()) {
                vips.insert(*ip);
                if !external.is_empty() {
                    want.insert(ListenKey { addr: SocketAddr::new(*ip, sp.port), protocol: sp.protocol }, (external.clone(), aff));
                }
            }
            if let (Some(np), false) = (sp.node_port, external.is_empty()) {
                let any: IpAddr = match sp.family {
                    crate::model::Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
                    crate::model::Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
                };
                want.insert(ListenKey { addr: SocketAddr::new(any, np), protocol: sp.protocol }, (external.clone(), aff));
            }
        }
        self.sync_vips(&vips)?;
        let mut changed = 0;
        let gone: Vec<ListenKey> = self.listeners.keys().filter(|k| !want.contains_key(k)).copied().collect();
        for k in gone {
            if let Some(l) = self.listeners.remove(&k) {
                l.task.abort();
                changed += 1;
            }
        }
        let mut errors = Vec::new();
        for (k, (eps, aff)) in want {
            match self.listeners.get(&k) {
                Some(l) if !l.task.is_finished() => l.balancer.update(eps, aff),
                _ => {
                    let bal = Arc::new(Balancer::new(eps, aff));
                    match self.bind(k, bal.clone()) {
                        Ok(task) => {
                            self.listeners.insert(k, Listener { balancer: bal, task });
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
        Ok(ok)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        for (_, l) in std::mem::take(&mut self.listeners) {
            l.task.abort();
        }
        self.vips = None;
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
