//! Yard's API server running inside the test process (`yard_apiserver::start`) on a free loopback
//! port, with a `kube::Client` for it: the fixture of crates that test a component against the
//! real API without starting the binary.

use std::path::Path;

pub use crate::client::client_for;

/// Starts the API server with `args` (its data dir is created; port 0 picks a free one) and a
/// client from the kubeconfig it writes.
pub async fn start(args: yard_apiserver::Args) -> (yard_apiserver::Running, kube::Client) {
    std::fs::create_dir_all(&args.data_dir).unwrap_or_else(|e| panic!("{}: {e}", args.data_dir.display()));
    let running = yard_apiserver::start(args).await.expect("start api server");
    let client = client_for(&running.kubeconfig).await;
    (running, client)
}

/// [`start`] with the defaults and `data_dir`, on a port the kernel picks.
pub async fn start_in(data_dir: &Path) -> (yard_apiserver::Running, kube::Client) {
    start(yard_apiserver::Args { data_dir: data_dir.to_path_buf(), port: 0, ..Default::default() }).await
}
