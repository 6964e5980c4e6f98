//! `yard`: one binary for Kubernetes Service networking. Thin: each subcommand parses its flags
//! and hands them to the crate that owns the component.

mod client;
mod up;

/// jemalloc rather than glibc malloc: with the large, long-lived heaps of an API server or
/// controller at scale (100,000 objects), glibc spent a fifth of the CPU in `_int_malloc` and
/// `malloc_consolidate` (perf on controllers-bench), and its arenas keep freed pages resident.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};

/// Gives every jemalloc arena's unused dirty pages back to the system now, instead of on the
/// decay schedule (cluster DNS calls it after its first list, a burst of short-lived objects).
fn jemalloc_release() {
    // MALLCTL_ARENAS_ALL (4096) addresses every arena.
    let name = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated control name; purge reads and writes nothing through the pointers.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

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
    /// Serve the Kubernetes API over the embedded store or etcd (optionally with the controllers).
    Apiserver(ApiserverCmd),
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

/// `yard apiserver` flags: the API server's own, plus in-process controllers.
#[derive(clap::Args)]
struct ApiserverCmd {
    #[command(flatten)]
    api: yard_apiserver::Args,
    /// Also run the controllers in this process, through this server's API. They are leader-elected
    /// through the kube-system/yard-controller-manager Lease, so several API servers may each run them.
    #[arg(long)]
    controllers: bool,
    /// CIDR from which node pod CIDRs are allocated (with --controllers).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Lease duration, renew deadline and retry period of the controllers' leader election (seconds).
    #[arg(long, default_value_t = 15.0)]
    leader_elect_lease_duration: f64,
    #[arg(long, default_value_t = 10.0)]
    leader_elect_renew_deadline: f64,
    #[arg(long, default_value_t = 2.0)]
    leader_elect_retry_period: f64,
}

async fn apiserver(a: ApiserverCmd) -> anyhow::Result<()> {
    let running = yard_apiserver::start(a.api).await?;
    eprintln!("yard apiserver serving on https://{} (kubeconfig: {})", running.addr, running.kubeconfig.display());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = if a.controllers {
        let client = client::client_for(Some(&running.kubeconfig), client::Component::ControllerManager).await?;
        let ccfg = yard_controllers::Config {
            cluster_cidr: a.cluster_cidr.parse().map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?,
            leader_elect: true,
            lease_duration: std::time::Duration::from_secs_f64(a.leader_elect_lease_duration.max(0.001)),
            renew_deadline: std::time::Duration::from_secs_f64(a.leader_elect_renew_deadline.max(0.001)),
            retry_period: std::time::Duration::from_secs_f64(a.leader_elect_retry_period.max(0.001)),
            root_ca: Some(running.identity.ca_pem.clone()),
            ..Default::default()
        };
        Some(tokio::spawn(yard_controllers::run_with_client(client, ccfg, async move {
            let _ = stop_rx.await;
        })))
    } else {
        None
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    // Controllers first (they release their Lease through this server), then the server.
    let _ = stop_tx.send(());
    if let Some(c) = controllers {
        if let Ok(Err(e)) = c.await {
            eprintln!("controllers: {e}");
        }
    }
    running.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Builtin { name, args } = &cli.cmd {
        std::process::exit(yard_agent::run_builtin(name, args));
    }
    yard_dns::watch::set_heap_release(jemalloc_release);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("YARD_LOG")
                .unwrap_or_else(|_| "warn,yard_controllers::queue=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Up(a) => up::up(a).await,
            Cmd::Shell(a) => up::shell(a),
            Cmd::Apiserver(a) => apiserver(a).await,
            Cmd::Controllers(a) => {
                let c = client::client_for(a.kubeconfig.as_deref(), client::Component::ControllerManager).await?;
                yard_controllers::run(c, a).await.map_err(anyhow::Error::from)
            }
            Cmd::Agent(a) => {
                let c = client::client_for(a.kubeconfig.as_deref(), client::Component::Kubelet).await?;
                yard_agent::run(c, a).await.map_err(anyhow::Error::from)
            }
            Cmd::Proxy(a) => {
                let c = client::client_for(a.kubeconfig.as_deref(), client::Component::Proxy).await?;
                yard_proxy::run(c, a).await.map_err(anyhow::Error::from)
            }
            Cmd::Dns(a) => {
                let c = client::client_for(a.kubeconfig.as_deref(), client::Component::Dns).await?;
                yard_dns::run(c, a).await.map_err(anyhow::Error::from)
            }
            Cmd::Builtin { .. } => unreachable!("handled before the runtime starts"),
        }
    })
}
