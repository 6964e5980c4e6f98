//! Probes of a running container (startup, readiness, liveness; exec, HTTP GET, TCP, gRPC
//! handlers as the kubelet runs them), and the exec and HTTP calls lifecycle hooks share.

use super::*;

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Kind {
    Startup,
    Readiness,
    Liveness,
}

struct ProbeState {
    probe: Probe,
    kind: Kind,
    last: Option<bool>,
    run: i32,
    next: tokio::time::Instant,
}

pub(super) async fn probe_loop(
    p: Arc<PodInner>,
    idx: usize,
    c: Container,
    pid: i32,
    kill_tx: mpsc::Sender<String>,
    started_at: jiff::Timestamp,
) {
    let elapsed = now().duration_since(started_at).unsigned_abs();
    let t0 = tokio::time::Instant::now().checked_sub(elapsed).unwrap_or_else(tokio::time::Instant::now);
    let mk = |pr: &Option<Probe>, kind| {
        pr.clone().map(|probe| {
            let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
            ProbeState { probe, kind, last: None, run: 0, next: t0 + delay }
        })
    };
    let field_path = Some(format!("spec.containers{{{}}}", c.name));
    let mut startup = mk(&c.startup_probe, Kind::Startup);
    let mut readiness = mk(&c.readiness_probe, Kind::Readiness);
    let mut liveness = mk(&c.liveness_probe, Kind::Liveness);
    let init = p.with(|st| st.ctrs[idx].init);
    if init {
        return;
    }
    if startup.is_none() {
        p.with(|st| st.ctrs[idx].started = true);
        if readiness.is_none() {
            p.with(|st| st.ctrs[idx].ready = true);
        }
        publish(&p);
    }
    let started_now = tokio::time::Instant::now();
    loop {
        // Which probe is due next.
        let active: Vec<&mut ProbeState> = if startup.is_some() {
            startup.iter_mut().collect()
        } else {
            readiness.iter_mut().chain(liveness.iter_mut()).collect()
        };
        let Some(ps) = active.into_iter().min_by_key(|s| s.next) else { return };
        tokio::time::sleep_until(ps.next).await;
        let period = Duration::from_secs(ps.probe.period_seconds.unwrap_or(10).max(1) as u64);
        let timeout = Duration::from_secs(ps.probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let success_t = ps.probe.success_threshold.unwrap_or(1).max(1);
        let failure_t = ps.probe.failure_threshold.unwrap_or(3).max(1);
        let (ok, detail) = run_probe(&p, &c, &ps.probe, pid, timeout).await;
        ps.next = tokio::time::Instant::now() + period;
        if ps.last == Some(ok) {
            ps.run += 1;
        } else {
            ps.last = Some(ok);
            ps.run = 1;
        }
        let kind = ps.kind;
        if !ok {
            let k = match kind {
                Kind::Startup => "Startup",
                Kind::Readiness => "Readiness",
                Kind::Liveness => "Liveness",
            };
            p.rt.event(&p, true, "Unhealthy", format!("{k} probe failed: {detail}"), field_path.clone());
        }
        match kind {
            Kind::Startup => {
                if ok {
                    startup = None;
                    p.with(|st| {
                        st.ctrs[idx].started = true;
                        if readiness.is_none() {
                            st.ctrs[idx].ready = true;
                        }
                    });
                    // Readiness and liveness start now.
                    let now_i = tokio::time::Instant::now();
                    for s in readiness.iter_mut().chain(liveness.iter_mut()) {
                        s.next = s.next.max(now_i);
                    }
                    publish(&p);
                } else if !ok && ps.run >= failure_t {
                    let _ = kill_tx.send("startup".into()).await;
                    return;
                }
            }
            Kind::Readiness => {
                let ready = p.with(|st| st.ctrs[idx].ready);
                if ok && !ready && ps.run >= success_t {
                    p.with(|st| st.ctrs[idx].ready = true);
                    publish(&p);
                } else if !ok && ready && ps.run >= failure_t {
                    p.with(|st| st.ctrs[idx].ready = false);
                    publish(&p);
                }
            }
            Kind::Liveness => {
                if !ok && ps.run >= failure_t {
                    let _ = kill_tx.send("liveness".into()).await;
                    return;
                }
            }
        }
        let _ = started_now;
    }
}

pub(super) fn resolve_port(
    c: &Container,
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> Option<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(i) => u16::try_from(*i).ok(),
        IntOrString::String(s) => s.parse().ok().or_else(|| {
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(s.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
        }),
    }
}

pub(super) async fn run_probe(
    p: &Arc<PodInner>,
    c: &Container,
    pr: &Probe,
    pid: i32,
    timeout: Duration,
) -> (bool, String) {
    let ip = p.with(|st| st.sandbox.as_ref().map(|s| s.ip)).unwrap_or(Ipv4Addr::LOCALHOST);
    if let Some(e) = &pr.exec {
        let argv = e.command.clone().unwrap_or_default();
        return match exec_probe(p, pid, &argv, timeout).await {
            Ok((0, _)) => (true, String::new()),
            Ok((code, out)) => (false, format!("command {argv:?} exited with {code}: {out}")),
            Err(e) => (false, e),
        };
    }
    if let Some(g) = &pr.http_get {
        return match http_probe(p, c, g, ip, timeout).await {
            Ok(code) if (200..400).contains(&code) => (true, String::new()),
            Ok(code) => (false, format!("HTTP probe failed with statuscode: {code}")),
            Err(e) => (false, e),
        };
    }
    if let Some(t) = &pr.tcp_socket {
        let host = t.host.as_ref().and_then(|h| h.parse().ok()).unwrap_or(ip);
        let Some(port) = resolve_port(c, &t.port) else { return (false, "invalid port".into()) };
        let addr = SocketAddr::new(host.into(), port);
        return match tokio::time::timeout(timeout, connect_in(p.rt.net.netns.clone(), addr)).await {
            Ok(Ok(_)) => (true, String::new()),
            Ok(Err(e)) => (false, format!("dial tcp {addr}: connect: {e}")),
            Err(_) => (false, format!("dial tcp {addr}: i/o timeout")),
        };
    }
    if pr.grpc.is_some() {
        return (false, "grpc probes are not supported".into());
    }
    (true, String::new())
}

/// Connect a TCP socket created inside the namespace `ns`.
pub async fn connect_in(ns: PathBuf, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let std_sock = tokio::task::spawn_blocking(move || {
        yard_netns::run_in(&ns, move || {
            let s = nix::sys::socket::socket(
                if addr.is_ipv4() {
                    nix::sys::socket::AddressFamily::Inet
                } else {
                    nix::sys::socket::AddressFamily::Inet6
                },
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            );
            s.map(std::net::TcpStream::from).map_err(std::io::Error::from)
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?
    })
    .await
    .map_err(std::io::Error::other)??;
    let sock = tokio::net::TcpSocket::from_std_stream(std_sock);
    sock.connect(addr).await
}

pub(super) async fn http_probe(
    p: &Arc<PodInner>,
    c: &Container,
    g: &k8s_openapi::api::core::v1::HTTPGetAction,
    ip: Ipv4Addr,
    timeout: Duration,
) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host: Ipv4Addr = g.host.as_ref().and_then(|h| h.parse().ok()).unwrap_or(ip);
    let port = resolve_port(c, &g.port).ok_or("invalid port")?;
    let addr = SocketAddr::new(host.into(), port);
    let path = g.path.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    let ns = p.rt.net.netns.clone();
    let mut headers = String::new();
    let mut have_host = false;
    for h in g.http_headers.iter().flatten() {
        if h.name.eq_ignore_ascii_case("host") {
            have_host = true;
        }
        headers.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    if !have_host {
        headers.push_str(&format!("Host: {addr}\r\n"));
    }
    let fut = async move {
        let mut s = connect_in(ns, addr)
            .await
            .map_err(|e| format!("Get \"http://{addr}{path}\": dial tcp {addr}: connect: {e}"))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\n{headers}User-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1024];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut buf[got..]).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = String::from_utf8_lossy(&buf[..got]).to_string();
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("malformed HTTP response {line:?}"))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "Get \"http://{addr}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// Run a command in a container's namespaces; (exit code, combined output).
pub(super) async fn exec_probe(
    p: &Arc<PodInner>,
    pid: i32,
    argv: &[String],
    timeout: Duration,
) -> Result<(i32, String), String> {
    let exe = &p.rt.cfg.images.exe;
    let t = p.with(|st| st.ctrs.iter().find(|c| c.pid == Some(pid)).map(|c| c.exec_target(pid, exe))).unwrap_or_else(
        || proc::ExecTarget {
            pid,
            env: vec![],
            cwd: None,
            cgroup: None,
            identity: Default::default(),
            relay_exe: exe.clone(),
        },
    );
    let mut cmd = proc::exec_command(&t, argv, false).map_err(|e| e.to_string())?;
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => {
            let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&o.stderr));
            use std::os::unix::process::ExitStatusExt;
            Ok((o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)), out))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("command {argv:?} timed out")),
    }
}
