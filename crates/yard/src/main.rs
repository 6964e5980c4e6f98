//! `yard`: one binary for Kubernetes Service networking. Thin: each subcommand parses its flags
//! and hands them to the crate that owns the component.

mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "yard", version, about = "Kubernetes Service networking, whole and real, in one binary")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole cluster on this host: API server, controllers, DNS, and per node an agent and a proxy.
    Up(up::UpArgs),
    /// Run a shell or a command inside a node of a `yard up` cluster.
    Shell(up::ShellArgs),
    /// Serve the Kubernetes API over the embedded store.
    Apiserver(yard_apiserver::Args),
    /// Run the controllers (endpoints, endpointslices, deployments, replicasets, scheduler, GC, node IPAM).
    Controllers(yard_controllers::Args),
    /// Run the node agent.
    Agent(yard_agent::Args),
    /// Run the Service proxy (a kube-proxy replacement) against any Kubernetes API server.
    Proxy(yard_proxy::Args),
    /// Run cluster DNS (a CoreDNS `kubernetes` plugin replacement) against any Kubernetes API server.
    Dns(yard_dns::Args),
    /// Built-in container programs (serve_hostname, netexec, pause), run by the agent.
    #[command(hide = true)]
    Builtin {
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Builtin { name, args } = &cli.cmd {
        std::process::exit(yard_agent::run_builtin(name, args));
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("YARD_LOG").unwrap_or_else(|_| "warn,yard_controllers::queue=error".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Up(a) => up::up(a).await,
            Cmd::Shell(a) => up::shell(a),
            Cmd::Apiserver(a) => yard_apiserver::run(a).await.map_err(anyhow::Error::from),
            Cmd::Controllers(a) => yard_controllers::run(a).await.map_err(anyhow::Error::from),
            Cmd::Agent(a) => yard_agent::run(a).await.map_err(anyhow::Error::from),
            Cmd::Proxy(a) => yard_proxy::run(a).await.map_err(anyhow::Error::from),
            Cmd::Dns(a) => yard_dns::run(a).await.map_err(anyhow::Error::from),
            Cmd::Builtin { .. } => unreachable!("handled before the runtime starts"),
        }
    })
}
