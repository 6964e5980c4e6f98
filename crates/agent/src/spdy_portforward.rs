//! `pods/portforward` over SPDY/3.1 (`portforward.k8s.io`), as kubelet's streaming server serves
//! it: every forwarded connection is a pair of client-opened streams (`streamType` error and data,
//! with `port` and `requestID` headers). A complete pair is joined to a TCP connection to
//! `localhost:<port>` made inside the pod's network namespace; a failure (nothing listening, say)
//! is reported on that pair's error stream in upstream's JSON form and the session keeps serving
//! the other pairs. Pairs missing a half after the stream creation timeout are dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pod::Runtime;
use crate::server::{find, status};
use crate::spdy;
use crate::spdy::headers::Headers;
use crate::spdy::session::{Incoming, Session, Writer};
use crate::spdy_exec::STREAM_CREATION_TIMEOUT;

pub const PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// Upstream's checks on a new stream: a `port` in 1..=65535 and a `streamType` of error or data.
fn valid_stream(h: &Headers) -> bool {
    let port_ok = h.get("port").and_then(|p| p.parse::<u16>().ok()).is_some_and(|p| p > 0);
    port_ok && matches!(h.get("streamtype"), Some("error") | Some("data"))
}

/// The pair key: the `requestID` header, or for old clients that send none, upstream's guess
/// from the stream id (error stream id; data stream id - 2).
fn request_id(s: &Incoming) -> String {
    if let Some(r) = s.headers.get("requestid").filter(|r| !r.is_empty()) {
        return r.to_string();
    }
    match s.stream_type() {
        "data" => (s.id as i64 - 2).to_string(),
        _ => s.id.to_string(),
    }
}

/// Serve a SPDY port-forward request (the caller checked the upgrade headers).
pub async fn portforward(rt: Arc<Runtime>, ns: String, name: String, mut req: Request) -> Response {
    let h = match find(&rt, &ns, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let Some(sb) = h.sandbox() else {
        return status(400, "BadRequest", format!("pod {name} has no network sandbox yet"));
    };
    let netns = sb.host_netns.clone().unwrap_or_else(|| sb.netns_path());
    let proto = match spdy::negotiate(req.headers(), PORTFORWARD_PROTOCOLS) {
        Ok(p) => p,
        Err(msg) => return spdy::negotiation_failed(msg, PORTFORWARD_PROTOCOLS),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let pod_label = h.uid().to_string();
    tokio::spawn(async move {
        let Ok(io) = on_upgrade.await else { return };
        let session = Session::start(TokioIo::new(io), valid_stream);
        run(session, netns, pod_label).await;
    });
    spdy::switching_protocols(proto.as_deref())
}

#[derive(Default)]
struct Pair {
    error: Option<Incoming>,
    data: Option<Incoming>,
}

async fn run(mut session: Session, netns: PathBuf, pod: String) {
    let mut pairs: HashMap<String, (Pair, tokio::time::Instant)> = HashMap::new();
    let w = session.writer.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let st = tokio::select! {
            s = session.next_stream() => match s { Some(s) => s, None => break },
            _ = tick.tick() => {
                // Pairs still missing a half after the creation timeout: tell the client, drop them.
                let now = tokio::time::Instant::now();
                let expired: Vec<String> = pairs
                    .iter()
                    .filter(|(_, (_, t))| now.duration_since(*t) >= STREAM_CREATION_TIMEOUT)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in expired {
                    if let Some((p, _)) = pairs.remove(&k) {
                        if let Some(e) = p.error {
                            let _ = w.data(e.id, format!("(conn=spdy, request={k}) timed out waiting for streams").as_bytes()).await;
                            let _ = w.fin(e.id).await;
                        }
                    }
                }
                continue;
            }
        };
        let id = request_id(&st);
        let (p, _) = pairs.entry(id.clone()).or_insert_with(|| (Pair::default(), tokio::time::Instant::now()));
        let dup = match st.stream_type() {
            "error" if p.error.is_none() => {
                p.error = Some(st);
                None
            }
            "data" if p.data.is_none() => {
                p.data = Some(st);
                None
            }
            t => Some((st.id, format!("{t} stream already assigned"))),
        };
        if let Some((sid, why)) = dup {
            let msg = format!("error processing stream for request {id}: {why}");
            if let Some(e) = &p.error {
                let _ = w.data(e.id, msg.as_bytes()).await;
            }
            let _ = w.rst(sid, spdy::frame::RST_PROTOCOL_ERROR).await;
            continue;
        }
        if p.error.is_some() && p.data.is_some() {
            let (p, _) = pairs.remove(&id).expect("pair");
            let (Some(e), Some(d)) = (p.error, p.data) else { continue };
            tokio::spawn(forward(w.clone(), netns.clone(), pod.clone(), e, d));
        }
    }
    drop(pairs);
    drop(w);
    session.close().await;
}

async fn forward(w: Writer, netns: PathBuf, pod: String, error: Incoming, data: Incoming) {
    let port: u16 = data.headers.get("port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut rx = data.data;
    match dial(&netns, port).await {
        Err(e) => {
            // kubelet's wording around the runtime's error; the client prints it and goes on
            // (or, as newer clients do on closeConnection, stops).
            let msg = format!("error forwarding port {port} to pod {pod}, uid : {e}");
            let body = serde_json::json!({"closeConnection": true, "message": msg});
            let mut text = body.to_string();
            text.push('\n');
            let _ = w.data(error.id, text.as_bytes()).await;
            // Swallow whatever the client sends on the data stream.
            let _ = w.fin(data.id).await;
            let _ = w.fin(error.id).await;
            drop(rx);
        }
        Ok(sock) => {
            let (mut r, mut wr) = sock.into_split();
            let up = async {
                while let Some(d) = rx.recv().await {
                    if wr.write_all(&d).await.is_err() {
                        while rx.recv().await.is_some() {}
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if w.data(data.id, &buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = w.fin(data.id).await;
            };
            tokio::join!(up, down);
            let _ = w.fin(error.id).await;
        }
    }
}

/// Connect to localhost:port inside the pod's network namespace (IPv4, then IPv6), with the
/// runtime's error text when both fail.
async fn dial(netns: &std::path::Path, port: u16) -> Result<tokio::net::TcpStream, String> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let t = std::time::Duration::from_secs(5);
    let e4 = match tokio::time::timeout(t, crate::pod::connect_in(netns.to_path_buf(), v4)).await {
        Ok(Ok(s)) => return Ok(s),
        Ok(Err(e)) => format!("dial tcp4 {v4}: connect: {}", go_errno(&e)),
        Err(_) => format!("dial tcp4 {v4}: i/o timeout"),
    };
    let e6 = match tokio::time::timeout(t, crate::pod::connect_in(netns.to_path_buf(), v6)).await {
        Ok(Ok(s)) => return Ok(s),
        Ok(Err(e)) => format!("dial tcp6 {v6}: connect: {}", go_errno(&e)),
        Err(_) => format!("dial tcp6 {v6}: i/o timeout"),
    };
    Err(format!(
        "failed to execute portforward in network namespace {:?}: failed to connect to localhost:{port} inside \
         namespace {:?}, IPv4: {e4} IPv6 {e6} ",
        netns.display().to_string(),
        netns.display().to_string()
    ))
}

/// Go's lower-case errno text ("connection refused"), which Rust prints with a suffix.
fn go_errno(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_lowercase(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_validation() {
        let h = |p: &[(&str, &str)]| Headers(p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect());
        assert!(valid_stream(&h(&[("port", "80"), ("streamtype", "data")])));
        assert!(valid_stream(&h(&[("port", "65535"), ("streamtype", "error")])));
        assert!(!valid_stream(&h(&[("port", "0"), ("streamtype", "data")])));
        assert!(!valid_stream(&h(&[("port", "70000"), ("streamtype", "data")])));
        assert!(!valid_stream(&h(&[("port", "80"), ("streamtype", "stdin")])));
        assert!(!valid_stream(&h(&[("streamtype", "data")])));
    }

    #[test]
    fn errno_text() {
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(go_errno(&e), "connection refused");
    }
}
