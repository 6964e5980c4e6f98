//! yard-agent: the node agent (a kubelet without a container engine). It registers the Node and
//! renews its Lease, runs each Pod as processes in a sandbox of namespaces it creates (a network
//! namespace with a veth into the node bridge `cni0`, IPAM from the node's podCIDR; per container
//! a PID namespace, UTS and mount namespaces with a `pivot_root` filesystem view, capabilities,
//! seccomp and a cgroup: [`sandbox`], [`cgroup`], [`security`]), sets up the pod's volumes
//! ([`volume`]), maps well-known images to built-in or host programs ([`image`]), runs probes,
//! writes Pod status, and serves `pods/log` and `pods/exec` (WebSocket
//! `v5.channel.k8s.io`/`v4.channel.k8s.io`, or SPDY/3.1 v4..v1) and `pods/portforward` (SPDY/3.1
//! `portforward.k8s.io`) on a loopback HTTP server.

pub mod attach;
pub mod builtin;
pub mod cgroup;
pub mod dns;
pub mod env;
pub mod image;
pub mod nc;
pub mod net;
mod node;
pub mod pod;
pub mod portforward;
pub mod proc;
pub mod sandbox;
pub mod security;
pub mod server;
pub mod spdy;
pub mod spdy_exec;
pub mod spdy_portforward;
pub mod volume;
pub mod wget;
pub mod ws_tunnel;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub use builtin::run_builtin;
pub use node::{Agent, AgentConfig};
pub use pod::{PodHandle, Runtime, RuntimeConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("server: {0}")]
    Server(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// Flags of `yard agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Kubeconfig of the API server (default: the usual kubeconfig lookup).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the Node this agent runs.
    #[arg(long)]
    pub node_name: String,
    /// Network namespace of the node (a path such as /run/netns/NAME); absent = the current one.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Directory for IPAM, pod state and logs.
    #[arg(long, default_value = "/var/lib/yard/agent")]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// ClusterIP of kube-dns written into pods' resolv.conf.
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: Ipv4Addr,
    /// The node's InternalIP (default: first global IPv4 address in the node namespace).
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// Address of the exec/log server.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Extra image table: lines of `<image prefix> <argv...>`.
    #[arg(long)]
    pub image_table: Option<PathBuf>,
    /// Prefix of pod network namespace names (default `yard-<node name>`).
    #[arg(long)]
    pub netns_prefix: Option<String>,
    /// Executable providing `builtin <name>` (default: this executable).
    #[arg(long, hide = true)]
    pub builtin_exe: Option<PathBuf>,
}

/// `yard agent`: run the agent with `client` (the binary builds it from `--kubeconfig`) until Ctrl-C.
pub async fn run(client: kube::Client, args: Args) -> Result<(), Error> {
    let cfg = AgentConfig::from_args(&args)?;
    let agent = Agent::new(client, cfg);
    agent
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
