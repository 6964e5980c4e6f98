//! `yard up` and `yard shell`.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Data directory (store, certificates, kubeconfig, node state).
    #[arg(long, default_value = ".yard")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    #[arg(long, default_value = ".yard")]
    pub data_dir: PathBuf,
}

pub async fn up(_a: UpArgs) -> anyhow::Result<()> {
    anyhow::bail!("yard up: not built yet")
}

pub async fn shell(_a: ShellArgs) -> anyhow::Result<()> {
    anyhow::bail!("yard shell: not built yet")
}
