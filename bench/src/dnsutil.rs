//! Helpers shared by the DNS benchmarks (`dns-bench`, `dns-memory`).

use std::process::Command;

use anyhow::bail;

/// A port free for both UDP and TCP on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = u.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
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
