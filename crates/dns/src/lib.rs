//! yard-dns owns cluster DNS: the Kubernetes DNS specification (schema 1.1.0, what CoreDNS's
//! `kubernetes` plugin serves) answered from an in-memory [`Index`] of Services and
//! EndpointSlices that kube-rs watchers keep current ([`watch`]), over UDP and TCP with
//! hickory-proto's wire format ([`serve`], [`serve_index`]). UDP is served by worker threads
//! that batch datagrams (`recvmmsg`/`sendmmsg`, [`udp`]) and answer repeated questions from a
//! per-worker wire-format cache that every index change invalidates ([`cache`]). Names outside the cluster zone are
//! forwarded to upstream resolvers with a small TTL-respecting cache; `/metrics`, `/health` and
//! `/ready` are served over HTTP when asked. [`Args`] and [`run`] are the `yard dns` command.

pub mod cache;
pub mod forward;
pub mod index;
pub mod metrics;
pub mod pods;
pub mod server;
pub mod udp;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

pub use forward::Forwarder;
pub use index::Index;
pub use metrics::Metrics;
pub use pods::PodIps;
pub use server::Handler;
pub use watch::watch;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Socket or file error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Kubernetes client error.
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// Bad configuration value.
    #[error("config: {0}")]
    Config(String),
    /// The cluster domain is not a DNS name.
    #[error("bad cluster domain {domain:?}: {source}")]
    ClusterDomain {
        domain: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// A task of the server (a listener, the watchers) panicked or was cancelled.
    #[error("{what} task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The watch streams ended.
    #[error("watch streams ended")]
    WatchEnded,
}

/// `yard dns` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address to answer on (UDP and TCP); repeat for several.
    #[arg(long = "listen", default_value = "0.0.0.0:53")]
    pub listen: Vec<SocketAddr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// TTL of cluster records, seconds.
    #[arg(long, default_value_t = 5)]
    pub ttl: u32,
    /// Serve /metrics, /health and /ready on this address.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Upstream resolver (IP or IP:PORT) for names outside the cluster; repeat for several
    /// (default: the nameservers of /etc/resolv.conf).
    #[arg(long = "upstream", value_parser = parse_upstream)]
    pub upstream: Vec<SocketAddr>,
    /// UDP worker threads per listen address, each on its own SO_REUSEPORT socket
    /// (default: the number of CPUs, between 2 and 8).
    #[arg(long)]
    pub udp_workers: Option<usize>,
    /// Server-side search-path completion (like CoreDNS's autopath): watch Pods and answer a
    /// pod's `X.<its namespace>.svc.<zone>` miss with a CNAME to the first existing
    /// `X.svc.<zone>` / `X.<zone>`, saving the client those round trips.
    #[arg(long)]
    pub autopath: bool,
    /// Networks whose clients may have names outside the cluster resolved (repeat for several);
    /// others get REFUSED for them, so the server is never an open resolver. Default: loopback
    /// and the private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fe80::/10).
    #[arg(long = "allow-recursion-from")]
    pub allow_recursion_from: Vec<ipnet::IpNet>,
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)).map_err(|e| format!("{s:?} is not an IP or IP:PORT: {e}"))
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cluster domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// TTL of cluster records, seconds.
    pub ttl: u32,
    /// Upstream resolvers; `None` = the nameservers of /etc/resolv.conf, `Some(vec![])` = no
    /// forwarding (REFUSED for names outside the cluster).
    pub upstreams: Option<Vec<SocketAddr>>,
    /// Where to serve /metrics, /health, /ready.
    pub metrics_addr: Option<SocketAddr>,
    /// Worker threads per UDP socket.
    pub udp_workers: usize,
    /// Longest time a forwarded answer stays cached, seconds.
    pub cache_max_ttl: u32,
    /// Watch Pods and complete search paths on the server (see [`Args::autopath`]).
    pub autopath: bool,
    /// Clients that may have names outside the cluster resolved (see
    /// [`Args::allow_recursion_from`]).
    pub recursion_from: Vec<ipnet::IpNet>,
}

/// Loopback and the private address ranges: where cluster clients live.
pub fn private_networks() -> Vec<ipnet::IpNet> {
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|n| n.parse().ok())
    .collect()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_domain: "cluster.local".into(),
            ttl: 5,
            upstreams: None,
            metrics_addr: None,
            udp_workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8),
            cache_max_ttl: 30,
            autopath: false,
            recursion_from: private_networks(),
        }
    }
}

/// Builds the query handler for `index` (forwarder and metrics included). The listen addresses
/// are only used to drop upstreams that would point back at us.
pub fn handler(index: Arc<Index>, config: &Config, listen: &[SocketAddr]) -> Handler {
    let upstreams = config.upstreams.clone().unwrap_or_else(forward::system_upstreams);
    let upstreams = forward::without_self(upstreams, listen);
    let forwarder = (!upstreams.is_empty()).then(|| Arc::new(Forwarder::new(upstreams, config.cache_max_ttl)));
    Handler::new(index, forwarder, Arc::new(Metrics::default())).with_recursion_from(config.recursion_from.clone())
}

/// Serves DNS from an index filled by the caller (no API server): UDP receive tasks on each
/// socket, TCP on each listener, HTTP metrics if configured. Returns when a listener fails.
pub async fn serve_index(
    index: Arc<Index>,
    config: Config,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
) -> Result<(), Error> {
    let mut listen = server::udp_addrs(&udp);
    listen.extend(tcp.iter().filter_map(|l| l.local_addr().ok()));
    let handler = Arc::new(handler(index.clone(), &config, &listen));
    serve_handler(handler, config, udp, tcp).await
}

/// Like [`serve_index`] with a handler the caller built (to read its metrics).
pub async fn serve_handler(
    handler: Arc<Handler>,
    config: Config,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
) -> Result<(), Error> {
    if udp.is_empty() && tcp.is_empty() {
        return Err(Error::Config("no listeners".into()));
    }
    let mut tasks: tokio::task::JoinSet<Result<(), Error>> = tokio::task::JoinSet::new();
    for sock in udp {
        let h = handler.clone();
        let workers = config.udp_workers;
        tasks.spawn(async move { Ok(udp::serve_udp(sock, h, workers).await?) });
    }
    for l in tcp {
        let h = handler.clone();
        tasks.spawn(async move { Ok(server::serve_tcp(l, h).await?) });
    }
    if let Some(addr) = config.metrics_addr {
        let m = handler.metrics().clone();
        let i = handler.index().clone();
        tasks.spawn(async move { metrics::serve_http(addr, m, i).await });
    }
    let result = match tasks.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(source)) => Err(Error::Task { what: "listener", source }),
        None => Ok(()),
    };
    tasks.abort_all();
    result
}

/// Watches the API server behind `client` and serves DNS on the given sockets (bound by the
/// caller, e.g. inside a node's network namespace). Answers SERVFAIL until the first sync.
pub async fn serve(
    client: kube::Client,
    config: Config,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
) -> Result<(), Error> {
    let index = Arc::new(Index::new(&config.cluster_domain, config.ttl)?);
    let mut listen = server::udp_addrs(&udp);
    listen.extend(tcp.iter().filter_map(|l| l.local_addr().ok()));
    let mut h = handler(index.clone(), &config, &listen);
    // The watch tasks end with this future (dropped or returned).
    let mut _pod_watch = None;
    if config.autopath {
        let pods = Arc::new(PodIps::default());
        _pod_watch = Some(AbortOnDrop(tokio::spawn(watch::watch_pods(client.clone(), pods.clone()))));
        h = h.with_autopath(pods);
    }
    let mut watcher = AbortOnDrop(tokio::spawn(watch(client, index.clone())));
    let result = tokio::select! {
        r = serve_handler(Arc::new(h), config, udp, tcp) => r,
        r = &mut watcher.0 => match r {
            Ok(r) => r,
            Err(source) => Err(Error::Task { what: "watch", source }),
        },
    };
    result
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds `count` UDP sockets on `addr` sharing the port (SO_REUSEPORT) so the kernel spreads
/// queries over them. With port 0 the first socket picks the port and the others join it.
pub fn bind_udp(addr: SocketAddr, count: usize) -> Result<Vec<std::net::UdpSocket>, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind_one = |addr: SocketAddr| -> Result<std::net::UdpSocket, Error> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        let _ = s.set_recv_buffer_size(4 << 20);
        s.bind(&addr.into())?;
        Ok(s.into())
    };
    let first = bind_one(addr)?;
    let addr = first.local_addr()?;
    let mut out = vec![first];
    while out.len() < count.max(1) {
        out.push(bind_one(addr)?);
    }
    Ok(out)
}

/// `yard dns`: connects to the API server, binds the listen addresses and serves until an error.
/// The binary builds `client` from `--kubeconfig`.
pub async fn run(client: kube::Client, args: Args) -> Result<(), Error> {
    let config = Config {
        cluster_domain: args.cluster_domain.clone(),
        ttl: args.ttl,
        upstreams: (!args.upstream.is_empty()).then(|| args.upstream.clone()),
        metrics_addr: args.metrics_addr,
        autopath: args.autopath,
        recursion_from: if args.allow_recursion_from.is_empty() {
            private_networks()
        } else {
            args.allow_recursion_from.clone()
        },
        ..Config::default()
    };
    let workers = args.udp_workers.unwrap_or(config.udp_workers).max(1);
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for addr in &args.listen {
        // One socket per worker with SO_REUSEPORT; each gets a single worker thread.
        let socks = bind_udp(*addr, workers)?;
        let port = socks[0].local_addr()?.port();
        udp.extend(socks);
        tcp.push(std::net::TcpListener::bind(SocketAddr::new(addr.ip(), port))?);
    }
    tracing::info!("dns listening on {:?}", args.listen);
    serve(client, Config { udp_workers: 1, ..config }, udp, tcp).await
}

#[cfg(test)]
mod tests;
