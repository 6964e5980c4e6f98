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
    /// Serve the Kubernetes API over the embedded store.
    Apiserver(yard_apiserver::Args),
    /// Run a whole cluster on this host: API server, controllers, DNS, and per node an agent and a proxy.
    Up(up::UpArgs),
    /// Run a shell or command inside a node of a `yard up` cluster.
    Shell(up::ShellArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("YARD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Apiserver(a) => yard_apiserver::run(a).await.map_err(anyhow::Error::from),
            Cmd::Up(a) => up::up(a).await,
            Cmd::Shell(a) => up::shell(a).await,
        }
    })
}
