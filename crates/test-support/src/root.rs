//! Tests that need root (network namespaces, nftables, mounts) fail when not run as root: a
//! skipped kernel test reads as a passing one.

/// Panics with a clear message unless this process runs as root (euid 0). Call it first in every
/// test that needs the kernel; `what` says what it needs root for.
pub fn require_root(what: &str) {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root ({what}) and FAILS rather than skipping: run it as root \
             (tests/README.md, \"Tiers\"); euid is {}",
            nix::unistd::geteuid()
        );
    }
}
