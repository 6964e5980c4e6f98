//! yard-proxy owns Service traffic on a node, kube-proxy's job: a pure desired-state model of
//! Services and EndpointSlices ([`model`]), and the backends that program it into the node's
//! kernel: nftables (default, [`nft`]), iptables in kube-proxy's layout ([`iptables`]) and a
//! userspace L4 proxy ([`userspace`]); plus the watch loop that feeds them from any Kubernetes API
//! server, conntrack hygiene for UDP, healthCheckNodePort servers and `/healthz` + `/metrics`.

pub mod conntrack;
pub mod exec;
pub mod iptables;
pub mod model;
pub mod nft;
pub mod nl;

pub use exec::Netns;
pub use model::{DesiredState, ServicePort};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    #[error("netns: {0}")]
    Netns(#[from] yard_netns::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("{flag}: {source}")]
    BadAddress {
        flag: &'static str,
        #[source]
        source: std::net::AddrParseError,
    },
    /// A task of the proxy (sync, cleanup) panicked or was cancelled.
    #[error("{what} task: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("{0}")]
    Other(String),
}

/// A way of programming a node. `sync` brings the node to `desired` (diffing against what it
/// programmed last; the first call, and any after `check` found drift, is a full sync) and returns
/// the number of service ports it touched.
pub trait Backend: Send {
    fn sync(&mut self, desired: &DesiredState) -> Result<usize, Error>;
    /// Cheap consistency check; `false` means the kernel state was lost and the next sync is full.
    fn check(&mut self) -> Result<bool, Error>;
    /// Remove everything this backend programmed.
    fn cleanup(&mut self) -> Result<(), Error>;
}

pub mod health;
pub mod userspace;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;

/// Which backend programs the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Nftables,
    Iptables,
    Userspace,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Nftables => "nftables",
            Mode::Iptables => "iptables",
            Mode::Userspace => "userspace",
        }
    }
}

/// `yard proxy` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// kubeconfig file; without it the configuration is inferred (KUBECONFIG, ~/.kube/config,
    /// in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (endpoints on it are "local").
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    #[arg(long, value_enum, default_value_t = Mode::Nftables)]
    pub mode: Mode,
    /// Program the network namespace at this path instead of the current one.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Pod CIDR(s) of the cluster, comma-separated; traffic from elsewhere to cluster IPs is
    /// masqueraded.
    #[arg(long, value_delimiter = ',', default_value = "10.244.0.0/16")]
    pub cluster_cidr: Vec<IpNet>,
    /// Address for `/healthz` and `/metrics` (empty disables).
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: String,
    /// Minimum interval between two syncs (e.g. "10ms", "1s").
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub min_sync_period: Duration,
}

/// Parse "250ms", "2s", "1m" or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("invalid duration {s:?}"))?;
    if v.is_nan() || v < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

/// Configuration of one proxy instance (one node).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    pub mode: Mode,
    /// Namespace to program; `None` = the current one.
    pub netns: Option<PathBuf>,
    pub cluster_cidrs: Vec<IpNet>,
    /// `/healthz` + `/metrics` listener (in the current namespace); `None` disables it.
    pub healthz_bind_address: Option<SocketAddr>,
    pub min_sync_period: Duration,
    /// How often the programmed state is checked for outside interference.
    pub check_period: Duration,
}

impl ProxyConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        ProxyConfig {
            node_name: node_name.into(),
            mode: Mode::Nftables,
            netns: None,
            cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
            healthz_bind_address: None,
            min_sync_period: Duration::from_millis(10),
            check_period: Duration::from_secs(30),
        }
    }
}

/// Build the backend of `mode` for `netns` (call inside a tokio runtime: the userspace backend
/// spawns its tasks on it).
pub fn backend(mode: Mode, netns: Netns, cluster_cidrs: Vec<IpNet>) -> Result<Box<dyn Backend>, Error> {
    Ok(match mode {
        Mode::Nftables => Box::new(nft::NftBackend::new(netns, cluster_cidrs)),
        Mode::Iptables => Box::new(iptables::IptablesBackend::new(netns, cluster_cidrs)),
        Mode::Userspace => Box::new(userspace::UserspaceBackend::new(netns, cluster_cidrs)?),
    })
}

/// One node's proxy: watches the API and programs the node until shut down.
pub struct Proxy {
    client: kube::Client,
    config: ProxyConfig,
    metrics: Arc<Metrics>,
}

pub use health::Metrics;

impl Proxy {
    pub fn new(client: kube::Client, config: ProxyConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        *metrics.mode.lock().unwrap() = config.mode.as_str().to_string();
        Proxy { client, config, metrics }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Run until `shutdown` resolves, then remove everything programmed (rules/table/chains,
    /// dummy interface, listeners).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let cfg = self.config;
        let netns = Netns::new(cfg.netns.clone());
        let backend = backend(cfg.mode, netns.clone(), cfg.cluster_cidrs.clone())?;
        let health = health::HealthChecks::new(netns);
        let healthz = match cfg.healthz_bind_address {
            Some(a) => Some(health::serve(a, self.metrics.clone()).await?),
            None => None,
        };
        let (tx, rx) = tokio::sync::watch::channel(None);
        let triggers = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let watcher = tokio::spawn(watch::watch_loop(
            self.client,
            cfg.node_name.clone(),
            tx,
            triggers.clone(),
            stop(stop_rx.clone()),
        ));
        let syncer = watch::sync_loop(
            backend,
            rx,
            triggers,
            health,
            self.metrics.clone(),
            cfg.min_sync_period,
            cfg.check_period,
            stop(stop_rx),
        );
        tokio::pin!(syncer);
        tokio::pin!(shutdown);
        let res = tokio::select! {
            r = &mut syncer => r,
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                syncer.await
            }
        };
        let _ = stop_tx.send(true);
        let _ = watcher.await;
        if let Some(h) = healthz {
            h.abort();
        }
        res
    }
}

/// `yard proxy`: run until SIGTERM/SIGINT, then remove everything programmed.
/// The binary builds `client` from `--kubeconfig`.
pub async fn run(client: kube::Client, args: Args) -> Result<(), Error> {
    let healthz_bind_address = if args.healthz_bind_address.trim().is_empty() {
        None
    } else {
        Some(
            args.healthz_bind_address
                .parse()
                .map_err(|source| Error::BadAddress { flag: "--healthz-bind-address", source })?,
        )
    };
    let cfg = ProxyConfig {
        node_name: args.node_name,
        mode: args.mode,
        netns: args.netns,
        cluster_cidrs: args.cluster_cidr,
        healthz_bind_address,
        min_sync_period: args.min_sync_period,
        check_period: Duration::from_secs(30),
    };
    Proxy::new(client, cfg).run(shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
