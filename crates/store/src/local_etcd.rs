//! A real etcd cluster of local processes (Debian's `/usr/bin/etcd`) for tests and benchmarks:
//! members listen on free loopback ports, keep their data in a private temporary directory, and
//! are killed by PID when the cluster is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary (override with `YARD_ETCD`).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("YARD_ETCD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP `/health` listener (the client port may be TLS).
    metrics_port: u16,
    child: Option<Child>,
}

/// Serve clients over TLS, requiring client certificates signed by `ca`.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running local etcd cluster.
pub struct LocalEtcd {
    dir: PathBuf,
    members: Vec<Member>,
    tls: Option<ServerTls>,
}

/// A free loopback TCP port for a test server to listen on. A port the kernel hands out for
/// `bind(0)` comes from the ephemeral range, where any outgoing connection may take it before the
/// server binds it (seen: etcd failing with "address already in use" while tests ran in
/// parallel). This picks below that range instead, never the same port twice in one process (the
/// tests of one binary run in parallel, binaries one after another), and only a port free now.
pub fn pick_port() -> std::io::Result<u16> {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ephemeral_lo: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(32768);
    let hi = ephemeral_lo.max(11001);
    let lo = hi - 10000;
    let seed = RandomState::new();
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for attempt in 0u64..10_000 {
        let port = lo + (seed.hash_one(attempt) % u64::from(hi - lo)) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::other(format!("no free port in {lo}..{hi}")))
}

impl LocalEtcd {
    /// Start `n` members and wait until every one reports healthy.
    pub fn start(n: usize) -> std::io::Result<Self> {
        Self::start_with(n, None)
    }

    /// Start `n` members, with TLS (and client-certificate authentication) for clients if given.
    pub fn start_with(n: usize, tls: Option<ServerTls>) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "yard-etcd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client_port: pick_port()?,
                peer_port: pick_port()?,
                metrics_port: pick_port()?,
                child: None,
            });
        }
        let mut cluster = LocalEtcd { dir, members, tls };
        for i in 0..n {
            cluster.spawn(i, true)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, new: bool) -> std::io::Result<()> {
        let initial = self.initial_cluster();
        let token = self.dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(t) = &self.tls {
            for (flag, path) in [("--cert-file", &t.cert), ("--key-file", &t.key), ("--trusted-ca-file", &t.ca)] {
                tls_args.push(flag.into());
                tls_args.push(path.into());
            }
            tls_args.push("--client-cert-auth".into());
        }
        let m = &mut self.members[i];
        let data = self.dir.join(&m.name);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{}.log", m.name)))?;
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg(format!("--listen-client-urls={scheme}://127.0.0.1:{}", m.client_port))
            .arg(format!("--advertise-client-urls={scheme}://127.0.0.1:{}", m.client_port))
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{}", m.metrics_port))
            .args(&tls_args)
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", m.peer_port))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", m.peer_port))
            .arg(format!("--initial-cluster={initial}"))
            .arg(format!("--initial-cluster-state={}", if new { "new" } else { "existing" }))
            .arg(format!("--initial-cluster-token={token}"))
            // Loopback members: quick elections so failover tests stay short.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("starting {}: {e}", etcd_binary().display())))?;
        m.child = Some(child);
        Ok(())
    }

    /// Member `i`'s Prometheus metrics (`GET /metrics` on its plain-HTTP metrics listener).
    pub fn metrics(&self, i: usize) -> std::io::Result<String> {
        get(self.members[i].metrics_port, "/metrics", Duration::from_secs(2), Duration::from_secs(5))
    }

    /// How many calls of gRPC method `method` (`"Txn"`, `"Range"`...) member `i` has handled.
    pub fn handled(&self, i: usize, method: &str) -> std::io::Result<u64> {
        let want = format!("grpc_method=\"{method}\"");
        Ok(self
            .metrics(i)?
            .lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains(&want))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// The running member that etcd's own metrics call leader (`etcd_server_is_leader 1`).
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .find(|&i| self.metrics(i).is_ok_and(|m| m.lines().any(|l| l == "etcd_server_is_leader 1")))
    }

    fn healthy(port: u16) -> bool {
        get(port, "/health", Duration::from_millis(300), Duration::from_secs(2))
            .is_ok_and(|body| body.contains("\"health\":\"true\""))
    }

    /// Wait until every running member reports healthy (it has a leader).
    pub fn wait_healthy(&mut self, within: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut all = true;
            for m in &mut self.members {
                let Some(c) = m.child.as_mut() else { continue };
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(self.dir.join(format!("{}.log", m.name))).unwrap_or_default();
                    return Err(std::io::Error::other(format!(
                        "etcd member {} exited: {status}; its log ends:\n{}",
                        m.name,
                        log_tail(&log)
                    )));
                }
                all &= Self::healthy(m.metrics_port);
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!("etcd cluster in {} not healthy", self.dir.display())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `host:port` of every member's client listener.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect()
    }

    /// `--store` value: `etcd://a,b,c` (with TLS, pass the CA and a client certificate too).
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// PIDs of the running members.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.child.as_ref().map(Child::id)).collect()
    }

    /// Kill member `i` (SIGKILL, by PID).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restart a killed member on its old data.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.kill(i);
        self.spawn(i, false)
    }

    /// The data directory (member logs are `<name>.log` in it).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// `GET path` over HTTP/1.0 from a loopback listener on `port`: the whole answer, headers included.
fn get(port: u16, path: &str, connect: Duration, read: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), connect)?;
    s.set_read_timeout(Some(read))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The lines of an etcd log that say why it stopped: the last error-level entries and the panic, if any.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let panic_at = lines.iter().position(|l| l.starts_with("panic:")).unwrap_or(lines.len());
    let mut out: Vec<&str> = lines[..panic_at]
        .iter()
        .rev()
        .filter(|l| {
            l.contains("\"level\":\"error\"") || l.contains("\"level\":\"panic\"") || l.contains("\"level\":\"fatal\"")
        })
        .take(3)
        .copied()
        .collect();
    out.reverse();
    if out.is_empty() {
        out = lines[panic_at.saturating_sub(5)..panic_at].to_vec();
    }
    out.extend(lines[panic_at..].iter().take(1));
    // An entry's stack trace is long; its message and error come first.
    out.iter().map(|l| l.chars().take(300).collect::<String>()).collect::<Vec<_>>().join("\n")
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn picked_ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| super::pick_port().unwrap()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        let lo: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ports.iter().all(|p| *p < lo), "{ports:?}");
    }

    #[test]
    fn log_tail_names_the_reason_etcd_stopped() {
        let log = concat!(
            "{\"level\":\"info\",\"msg\":\"starting\"}\n",
            "{\"level\":\"panic\",\"msg\":\"failed to create WAL\",\"error\":\"no space left on device\",\"stacktrace\":\"x\"}\n",
            "panic: failed to create WAL\n",
            "\n",
            "goroutine 1 [running]:\n",
        );
        let tail = super::log_tail(log);
        assert!(tail.contains("no space left on device"), "{tail}");
        assert!(tail.ends_with("panic: failed to create WAL"), "{tail}");
        assert!(!tail.contains("goroutine") && !tail.contains("starting"), "{tail}");
        // No error entries: the last lines are what there is.
        assert_eq!(super::log_tail("a\nb\n"), "a\nb");
    }
}
