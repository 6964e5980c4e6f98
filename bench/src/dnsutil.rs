//! Helpers shared by the DNS benchmarks (`dns-bench`, `dns-memory`).

use std::process::Command;

/// A port free for both UDP and TCP on loopback (below the ephemeral range).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(yard_test_support::free_tcp_udp_port())
}

/// `dig` one name at a loopback server; the addresses answered.
pub fn dig(port: u16, name: &str) -> Vec<String> {
    Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), name, "A", "+short", "+time=1", "+tries=1"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
        .unwrap_or_default()
}
