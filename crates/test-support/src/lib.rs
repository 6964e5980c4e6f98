//! What Yard's tests share, so that no crate keeps its own copy: a [`TempDir`] removed on drop
//! (also when the test panics), [`free_port`] for a server a test starts, [`until`] /
//! [`until_async`] / [`eventually`] to wait for a condition with a deadline, [`require_root`]
//! that fails a test loudly instead of skipping it, network namespaces that are removed on drop
//! ([`TempNetns`] named under `/run/netns`, [`HeldNetns`] anonymous), a child `yard apiserver`
//! ([`process`]) and, with the `apiserver` feature, Yard's API server in this process
//! (`apiserver::start`). This crate is a dev-dependency only; tests/README.md names the tiers.

#![forbid(unsafe_code)]

#[cfg(feature = "apiserver")]
pub mod apiserver;
#[cfg(feature = "client")]
pub mod client;
pub mod netns;
pub mod port;
pub mod process;
pub mod root;
pub mod tempdir;
pub mod wait;

pub use netns::{HeldNetns, TempNetns};
pub use port::{free_port, free_tcp_udp_port};
pub use root::require_root;
pub use tempdir::TempDir;
pub use wait::{eventually, until, until_async, Ready};
