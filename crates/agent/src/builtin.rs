//! Built-in programs standing in for well-known test images: `serve_hostname` (the
//! k8s.gcr.io/serve_hostname server), `netexec` (agnhost's HTTP/UDP test server subset) and `pause`.
//! They are plain blocking programs: the `yard` binary exposes them as `yard builtin <name> [args]`
//! and the agent starts them as container processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

/// Names accepted by [`run_builtin`].
pub const BUILTINS: &[&str] = &["serve_hostname", "netexec", "pause", "wget", "nc", "relay"];

/// Run a built-in program; returns the process exit code.
pub fn run_builtin(name: &str, args: &[String]) -> i32 {
    match name {
        "serve_hostname" | "serve-hostname" => {
            exit_on_termination();
            serve_hostname(args)
        }
        "netexec" => {
            exit_on_termination();
            netexec(args)
        }
        "pause" => pause(),
        "relay" => crate::sandbox::pidns::relay_main(args),
        "wget" => crate::wget::main(args),
        "nc" => crate::nc::main(args),
        _ => {
            eprintln!("unknown builtin {name:?} (have {})", BUILTINS.join(", "));
            2
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Go-style flags: `-name`, `--name`, `-name=value`, `--name value` (for non-bool flags).
struct Flags {
    vals: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(args: &[String], value_flags: &[&str]) -> Flags {
        let mut vals = vec![];
        let mut i = 0;
        while i < args.len() {
            let a = args[i].trim_start_matches('-');
            if let Some((k, v)) = a.split_once('=') {
                vals.push((k.to_string(), Some(v.to_string())));
            } else if value_flags.contains(&a) && i + 1 < args.len() {
                vals.push((a.to_string(), Some(args[i + 1].clone())));
                i += 1;
            } else {
                vals.push((a.to_string(), None));
            }
            i += 1;
        }
        Flags { vals }
    }
    fn get(&self, k: &str) -> Option<Option<&str>> {
        self.vals.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_deref())
    }
    fn bool(&self, k: &str, default: bool) -> bool {
        match self.get(k) {
            None => default,
            Some(None) => true,
            Some(Some(v)) => matches!(v, "true" | "1" | "t" | "T" | "TRUE" | "True"),
        }
    }
    fn int(&self, k: &str, default: u16) -> u16 {
        self.get(k).flatten().and_then(|v| v.parse().ok()).unwrap_or(default)
    }
}

fn serve_hostname(args: &[String]) -> i32 {
    let f = Flags::parse(args, &["port"]);
    let tcp = f.bool("tcp", false);
    let udp = f.bool("udp", false);
    // -http defaults to true unless a raw mode is asked for without naming -http.
    let http = f.bool("http", !(tcp || udp));
    let close = f.bool("close", false);
    let port = f.int("port", 9376);
    if http && (tcp || udp) {
        eprintln!("Can't serve TCP/UDP mode and HTTP mode at the same time");
        return 1;
    }
    let host = hostname();
    eprintln!("Serving on port {port}.");
    let mut handles = vec![];
    if tcp {
        let Some(l) = listen_tcp(port) else { return 1 };
        let h = host.clone();
        handles.push(std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let _ = s.write_all(h.as_bytes());
            }
        }));
    }
    if udp {
        let Some(sock) = bind_udp(port) else { return 1 };
        let h = host.clone();
        handles.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(h.as_bytes(), from);
            }
        }));
    }
    if http {
        let Some(l) = listen_tcp(port) else { return 1 };
        let h = host.clone();
        handles.push(std::thread::spawn(move || {
            serve_http(l, close, move |_req| Response::ok(h.clone()));
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    0
}

fn listen_tcp(port: u16) -> Option<TcpListener> {
    // Dual-stack when IPv6 exists, else IPv4.
    TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .map_err(|e| eprintln!("listen tcp :{port}: {e}"))
        .ok()
}

fn bind_udp(port: u16) -> Option<UdpSocket> {
    UdpSocket::bind(("::", port))
        .or_else(|_| UdpSocket::bind(("0.0.0.0", port)))
        .map_err(|e| eprintln!("listen udp :{port}: {e}"))
        .ok()
}

/// One parsed HTTP request.
struct Request {
    path: String,
    query: Vec<(String, String)>,
    remote: SocketAddr,
}

impl Request {
    fn param(&self, k: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    body: String,
    content_type: &'static str,
}

impl Response {
    fn ok(body: String) -> Self {
        Response { status: 200, body, content_type: "text/plain; charset=utf-8" }
    }
}

fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        a => a,
    }
}

/// A URL path or userinfo with `%XX` decoded (a `+` stays a `+`).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The `(key, value)` pairs of a query string, `+` and `%XX` decoded.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn serve_http(l: TcpListener, close: bool, handler: impl Fn(&Request) -> Response + Send + Sync + 'static) {
    let handler = std::sync::Arc::new(handler);
    for s in l.incoming().flatten() {
        let handler = handler.clone();
        std::thread::spawn(move || {
            let _ = handle_conn(s, close, &*handler);
        });
    }
}

fn handle_conn(s: TcpStream, close: bool, handler: &dyn Fn(&Request) -> Response) -> std::io::Result<()> {
    let remote = unmap(s.peer_addr()?);
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let _method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("/").to_string();
        let version = parts.next().unwrap_or("HTTP/1.0").to_string();
        let mut content_length = 0usize;
        let mut conn_close = version == "HTTP/1.0";
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim();
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                } else if k == "connection" {
                    conn_close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        r.read_exact(&mut body)?;
        let (path, q) = target.split_once('?').unwrap_or((&target, ""));
        let req = Request { path: percent_decode(path), query: parse_query(q), remote };
        let resp = handler(&req);
        let reason = match resp.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            _ => "Error",
        };
        let close_now = close || conn_close;
        let date = jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nDate: {date}\r\nContent-Length: {}\r\n{}\r\n",
            resp.status,
            resp.content_type,
            resp.body.len(),
            if close_now { "Connection: close\r\n" } else { "" }
        );
        w.write_all(head.as_bytes())?;
        w.write_all(resp.body.as_bytes())?;
        w.flush()?;
        if close_now {
            return Ok(());
        }
    }
}

fn netexec(args: &[String]) -> i32 {
    let f = Flags::parse(args, &["http-port", "udp-port", "sctp-port", "delay-shutdown", "certfile", "privkeyfile"]);
    let http_port = f.int("http-port", 8080);
    let udp_port = f.int("udp-port", 8081);
    let host = hostname();
    let started = std::time::Instant::now();
    if udp_port != 0 {
        let Some(sock) = bind_udp(udp_port) else { return 1 };
        let h = host.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                let reply = if msg == "hostname" || msg == "hostName" {
                    h.clone()
                } else if let Some(m) = msg.strip_prefix("echo ") {
                    m.to_string()
                } else if msg == "clientip" {
                    unmap(from).to_string()
                } else {
                    String::new()
                };
                let _ = sock.send_to(reply.as_bytes(), from);
            }
        });
    }
    let Some(l) = listen_tcp(http_port) else { return 1 };
    eprintln!("Started HTTP server on port {http_port}");
    serve_http(l, false, move |req| match req.path.as_str() {
        "/" | "/hostname" | "/hostName" => Response::ok(host.clone()),
        "/echo" => Response::ok(req.param("msg").unwrap_or("").to_string()),
        "/clientip" => Response::ok(req.remote.to_string()),
        "/healthz" | "/readyz" => {
            let _ = started;
            Response::ok(String::new())
        }
        "/exit" => {
            let code: i32 = req.param("code").and_then(|c| c.parse().ok()).unwrap_or(0);
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                std::process::exit(code)
            });
            Response::ok(String::new())
        }
        "/shell" => {
            let cmd = req.param("shellCommand").or(req.param("cmd")).unwrap_or("");
            match std::process::Command::new("sh").args(["-c", cmd]).output() {
                Ok(o) => {
                    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
                    out.push_str(&String::from_utf8_lossy(&o.stderr));
                    let body = if o.status.success() {
                        serde_json::json!({ "output": out })
                    } else {
                        serde_json::json!({ "output": out, "error": o.status.to_string() })
                    };
                    Response { status: 200, body: body.to_string(), content_type: "application/json" }
                }
                Err(e) => Response { status: 500, body: e.to_string(), content_type: "text/plain" },
            }
        }
        _ => Response { status: 404, body: "404 page not found\n".into(), content_type: "text/plain; charset=utf-8" },
    });
    0
}

/// The servers stand in for Go programs, which end on SIGTERM, SIGINT and SIGHUP even as PID 1
/// (where a signal without a handler does nothing): a thread waits for them; the process then
/// dies of the signal, or, as PID 1 where that is ignored, exits with status 2 as Go's runtime
/// does. Called before any other thread exists, so every thread has them blocked.
fn exit_on_termination() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            // SAFETY: restoring the default action and raising it on our own process.
            unsafe {
                libc::signal(sig as i32, libc::SIG_DFL);
            }
            let mut one = SigSet::empty();
            one.add(sig);
            let _ = one.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::process::exit(2);
        }
    });
}

/// The pause program: sleeps until SIGTERM or SIGINT; as PID 1 of a pod's shared PID namespace
/// it also reaps the processes that end there without a parent.
fn pause() -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGCHLD);
    if set.thread_block().is_err() {
        return 1;
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if s == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => return 0,
            Err(_) => return 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("msg=hello%20world&x"),
            vec![("msg".into(), "hello world".into()), ("x".into(), String::new())]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn flags() {
        let f = Flags::parse(&["-udp".into(), "--port".into(), "53".into(), "-http=false".into()], &["port"]);
        assert!(f.bool("udp", false));
        assert!(!f.bool("http", true));
        assert_eq!(f.int("port", 1), 53);
    }
}
