//! The agent's HTTP server on loopback: `pods/log` and `pods/exec` under the API server's paths, so
//! the API server can forward kubectl's requests verbatim. Exec speaks the Kubernetes WebSocket
//! remotecommand protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`); a POST asking for
//! `Upgrade: SPDY/3.1` goes to `spdy_exec` / `spdy_portforward`.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::builtin::parse_query;
use crate::pod::{PodHandle, Runtime};
use crate::proc;

/// Serve until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, rt: Arc<Runtime>) -> std::io::Result<()> {
    axum::serve(listener, router(rt)).await
}

/// The routes (also usable in tests).
pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(logs))
        .route("/api/v1/namespaces/{ns}/pods/{name}/exec", get(exec).post(exec_post))
        .route("/api/v1/namespaces/{ns}/pods/{name}/attach", get(attach).post(attach_post))
        .route("/api/v1/namespaces/{ns}/pods/{name}/portforward", get(portforward).post(portforward_post))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(rt)
}

pub(crate) fn status(code: u16, reason: &str, message: String) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[allow(clippy::result_large_err)]
pub(crate) fn find(rt: &Runtime, ns: &str, name: &str) -> Result<PodHandle, Response> {
    rt.find(ns, name).ok_or_else(|| status(404, "NotFound", format!("pods \"{name}\" not found")))
}

#[allow(clippy::result_large_err)]
pub(crate) fn pick_container(h: &PodHandle, c: Option<&str>) -> Result<String, Response> {
    if let Some(c) = c.filter(|c| !c.is_empty()) {
        if h.containers().iter().any(|x| x == c) {
            return Ok(c.to_string());
        }
        return Err(status(400, "BadRequest", format!("container {c} is not valid for pod {}", h.name())));
    }
    let apps = h.app_containers();
    if apps.len() == 1 {
        return Ok(apps[0].clone());
    }
    Err(status(
        400,
        "BadRequest",
        format!("a container name must be specified for pod {}, choose one of: [{}]", h.name(), apps.join(" ")),
    ))
}

pub(crate) fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true") | Some("1") | Some("True") | Some(""))
}

/// The options of an exec or attach request, WebSocket or SPDY, from its query: every `command`
/// in order; the last `stdin`, `stdout`, `stderr`, `tty` and `container`.
#[derive(Debug, Clone)]
pub(crate) struct ExecOpts {
    pub(crate) command: Vec<String>,
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
    pub(crate) container: Option<String>,
}

impl ExecOpts {
    pub(crate) fn from_query(query: Option<&str>) -> ExecOpts {
        let q = parse_query(query.unwrap_or(""));
        let get = |k: &str| q.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        ExecOpts {
            command: q.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect(),
            stdin: truthy(get("stdin")),
            stdout: truthy(get("stdout")),
            stderr: truthy(get("stderr")),
            tty: truthy(get("tty")),
            container: get("container").map(str::to_string),
        }
    }

    /// The kubelet's refusals of a request without a command (`exec`: when one is needed) or
    /// without any stream.
    #[allow(clippy::result_large_err)]
    pub(crate) fn check(&self, exec: bool) -> Result<(), Response> {
        if exec && self.command.is_empty() {
            return Err(status(400, "BadRequest", "you must specify at least 1 command".into()));
        }
        if !self.stdin && !self.stdout && !self.stderr {
            return Err(status(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr".into()));
        }
        Ok(())
    }
}

/// Render one log line for output.
fn render(line: &[u8], timestamps: bool) -> Option<Vec<u8>> {
    let l = proc::parse_log_line(line)?;
    let mut out = vec![];
    if timestamps {
        out.extend_from_slice(l.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(l.content);
    if !l.partial {
        out.push(b'\n');
    }
    Some(out)
}

async fn logs(
    State(rt): State<Arc<Runtime>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = parse_query(q.as_deref().unwrap_or(""));
    let get = |k: &str| q.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let h = match find(&rt, &ns, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let container = match pick_container(&h, get("container")) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let previous = truthy(get("previous"));
    let follow = truthy(get("follow"));
    let timestamps = truthy(get("timestamps"));
    let tail: Option<usize> = get("tailLines").and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0) as usize);
    let limit: Option<usize> = get("limitBytes").and_then(|v| v.parse().ok());
    let since_secs: Option<i64> = get("sinceSeconds").and_then(|v| v.parse().ok());
    let since_time: Option<jiff::Timestamp> = get("sinceTime").and_then(|v| v.parse().ok());
    let (path, _running) = match h.log_file(&container, previous) {
        Ok(x) => x,
        Err(msg) => return status(400, "BadRequest", msg),
    };
    let since = since_time.or_else(|| since_secs.map(|s| jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)));
    // Existing content.
    let data = std::fs::read(&path).unwrap_or_default();
    let complete_len = data.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
    let mut lines: Vec<&[u8]> = data[..complete_len].split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    if let Some(since) = since {
        lines.retain(|l| {
            proc::parse_log_line(l)
                .and_then(|p| p.time.parse::<jiff::Timestamp>().ok())
                .map(|t| t >= since)
                .unwrap_or(true)
        });
    }
    if let Some(t) = tail {
        let skip = lines.len().saturating_sub(t);
        lines.drain(..skip);
    }
    let mut first: Vec<u8> = vec![];
    for l in &lines {
        if let Some(r) = render(l, timestamps) {
            first.extend_from_slice(&r);
        }
    }
    if let Some(lim) = limit {
        first.truncate(lim);
    }
    if !follow {
        return ([("content-type", "text/plain")], first).into_response();
    }
    let offset = complete_len as u64;
    let state = (Some(first), offset, h, container, path, Vec::<u8>::new());
    let stream =
        futures::stream::unfold(state, move |(first, mut offset, h, container, path, mut partial)| async move {
            if let Some(f) = first {
                return Some((Ok::<_, std::io::Error>(f), (None, offset, h, container, path, partial)));
            }
            loop {
                let mut chunk = vec![];
                if let Ok(mut f) = std::fs::File::open(&path) {
                    if f.seek(SeekFrom::Start(offset)).is_ok() {
                        let _ = f.read_to_end(&mut chunk);
                    }
                }
                offset += chunk.len() as u64;
                partial.extend_from_slice(&chunk);
                let mut out = vec![];
                while let Some(i) = partial.iter().position(|b| *b == b'\n') {
                    if let Some(r) = render(&partial[..i], timestamps) {
                        out.extend_from_slice(&r);
                    }
                    partial.drain(..=i);
                }
                if !out.is_empty() {
                    return Some((Ok(out), (None, offset, h, container, path, partial)));
                }
                if !h.run_is_live(&container, &path) {
                    // Drain what the pumps wrote last, then stop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if len <= offset {
                        return None;
                    }
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    ([("content-type", "text/plain"), ("transfer-encoding", "chunked")], Body::from_stream(stream)).into_response()
}

async fn exec_post(
    State(rt): State<Arc<Runtime>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    req: axum::extract::Request,
) -> Response {
    if crate::spdy::is_spdy_upgrade(req.headers()) {
        return crate::spdy_exec::exec(rt, ns, name, q, req).await;
    }
    status(
        400,
        "BadRequest",
        "unable to upgrade: missing upgrade headers in request (want Upgrade: SPDY/3.1 or a WebSocket GET)".into(),
    )
}

/// Attach over SPDY (kubectl 1.29 and older; WebSocket attach is `attach`).
async fn attach_post(
    State(rt): State<Arc<Runtime>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    req: axum::extract::Request,
) -> Response {
    if crate::spdy::is_spdy_upgrade(req.headers()) {
        return crate::spdy_exec::attach(rt, ns, name, q, req).await;
    }
    status(
        400,
        "BadRequest",
        "unable to upgrade: missing upgrade headers in request (want Upgrade: SPDY/3.1 or a WebSocket GET)".into(),
    )
}

async fn portforward_post(
    State(rt): State<Arc<Runtime>>,
    Path((ns, name)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    if crate::spdy::is_spdy_upgrade(req.headers()) {
        return crate::spdy_portforward::portforward(rt, ns, name, req).await;
    }
    status(400, "BadRequest", "unable to upgrade: missing upgrade headers in request (want Upgrade: SPDY/3.1)".into())
}

async fn exec(
    State(rt): State<Arc<Runtime>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let opts = ExecOpts::from_query(q.as_deref());
    if let Err(r) = opts.check(true) {
        return r;
    }
    if opts.tty && opts.stderr {
        // kubelet: with a TTY stderr is merged into stdout.
    }
    let h = match find(&rt, &ns, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let container = match pick_container(&h, opts.container.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let target = match h.exec_target(&container) {
        Ok(t) => t,
        Err(msg) => return status(400, "BadRequest", msg),
    };
    let ws = ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"]);
    let proto = ws.selected_protocol().and_then(|p| p.to_str().ok()).map(str::to_string);
    let Some(proto) = proto else {
        return status(
            400,
            "BadRequest",
            "no supported WebSocket subprotocol requested (want v5.channel.k8s.io or v4.channel.k8s.io)".into(),
        );
    };
    let v5 = proto == "v5.channel.k8s.io";
    ws.on_upgrade(move |socket| async move {
        run_exec(socket, target, opts, v5).await;
    })
}

async fn attach(
    State(rt): State<Arc<Runtime>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let parsed = ExecOpts::from_query(q.as_deref());
    if let Err(r) = parsed.check(false) {
        return r;
    }
    let opts = crate::attach::ws::AttachOpts {
        stdin: parsed.stdin,
        stdout: parsed.stdout,
        stderr: parsed.stderr,
        tty: parsed.tty,
    };
    let h = match find(&rt, &ns, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let container = match pick_container(&h, parsed.container.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let hub = match h.attach_target(&container) {
        Ok(t) => t,
        Err(msg) => return status(400, "BadRequest", msg),
    };
    let ws = ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"]);
    let Some(proto) = ws.selected_protocol().and_then(|p| p.to_str().ok()).map(str::to_string) else {
        return status(
            400,
            "BadRequest",
            "no supported WebSocket subprotocol requested (want v5.channel.k8s.io or v4.channel.k8s.io)".into(),
        );
    };
    let v5 = proto == "v5.channel.k8s.io";
    ws.on_upgrade(move |socket| crate::attach::ws::serve(socket, hub, opts, v5))
}

async fn portforward(
    State(rt): State<Arc<Runtime>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    use crate::portforward::ws::{V4_BASE64, V4_BINARY};
    let q = parse_query(q.as_deref().unwrap_or(""));
    let values: Vec<&str> = q.iter().filter(|(k, _)| k == "port" || k == "ports").map(|(_, v)| v.as_str()).collect();
    let h = match find(&rt, &ns, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let Some(sb) = h.sandbox() else {
        return status(400, "BadRequest", format!("pod {name} does not have a network namespace yet"));
    };
    let target = crate::portforward::Target { sandbox: sb.netns.clone(), netns: sb.netns_path() };
    let offered: Vec<String> =
        ws.requested_protocols().filter_map(|p| p.to_str().ok().map(|s| s.trim().to_string())).collect();
    // client-go 1.31+ offers only SPDY tunnelled in WebSocket (SPDY/3.1+portforward.k8s.io); refusing
    // the upgrade makes it fall back to a plain SPDY upgrade.
    if !offered.is_empty() && !offered.iter().any(|p| p == V4_BINARY || p == V4_BASE64) {
        return status(
            400,
            "BadRequest",
            format!(
                "unsupported port-forward WebSocket subprotocols [{}] (this node agent speaks {V4_BINARY} and {V4_BASE64})",
                offered.join(", ")
            ),
        );
    }
    let ports = match crate::portforward::parse_ports(&values) {
        Ok(p) => p,
        Err(msg) => return status(400, "BadRequest", msg),
    };
    let ws = ws.protocols([V4_BINARY, V4_BASE64]);
    let base64 = ws.selected_protocol().and_then(|p| p.to_str().ok()) == Some(V4_BASE64);
    ws.on_upgrade(move |socket| crate::portforward::ws::serve(socket, target, ports, base64))
}

pub(crate) const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;
pub(crate) const ERROR: u8 = 3;
pub(crate) const RESIZE: u8 = 4;
pub(crate) const CLOSE: u8 = 255;

/// A WebSocket as a queue of outgoing messages, drained by a writer task that closes the socket
/// after a Close (or a failed send), and the incoming half.
pub(crate) fn ws_queue(
    socket: WebSocket,
) -> (mpsc::Sender<Message>, futures::stream::SplitStream<WebSocket>, tokio::task::JoinHandle<()>) {
    let (mut sink, stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (tx, stream, writer)
}

/// The channel of the empty frame that tells a client its streams are up: the lowest writable.
pub(crate) fn first_channel(stdout: bool, stderr: bool) -> u8 {
    if stdout {
        STDOUT
    } else if stderr {
        STDERR
    } else {
        ERROR
    }
}

pub(crate) fn frame(ch: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(ch);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

pub(crate) fn exit_status_json(code: Option<i32>, argv: &[String], err: Option<String>) -> String {
    match (code, err) {
        (_, Some(e)) => serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("Internal error occurred: error executing command in container: {e}"),
            "reason": "InternalError", "code": 500,
            "details": {"causes": [{"message": format!("error executing command in container: {e}")}]},
        })
        .to_string(),
        (Some(0), None) => {
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}).to_string()
        }
        (c, None) => {
            let c = c.unwrap_or(255);
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {c}", argv.join(" ")),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]},
            })
            .to_string()
        }
    }
}

async fn pump_out<R: tokio::io::AsyncRead + Unpin>(mut r: R, ch: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(frame(ch, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn run_exec(socket: WebSocket, target: proc::ExecTarget, opts: ExecOpts, v5: bool) {
    let (tx, mut stream, writer) = ws_queue(socket);
    // Tell the client the streams are up: an empty frame on the lowest writable channel.
    let _ = tx.send(frame(first_channel(opts.stdout, opts.stderr), &[])).await;

    let mut pumps = vec![];
    let mut stdin_w: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> = None;
    let mut pty_master: Option<Arc<OwnedFd>> = None;
    let spawned = (|| -> std::io::Result<tokio::process::Child> {
        let mut cmd = proc::exec_command(&target, &opts.command, opts.tty)?;
        if opts.tty {
            let (master, slave) = proc::openpty()?;
            let s = |fd: &OwnedFd| -> std::io::Result<Stdio> { Ok(Stdio::from(proc::dup_file(fd.as_raw_fd())?)) };
            cmd.stdin(s(&slave)?).stdout(s(&slave)?).stderr(s(&slave)?);
            let child = cmd.spawn()?;
            drop(slave);
            pty_master = Some(Arc::new(master));
            Ok(child)
        } else {
            cmd.stdin(if opts.stdin { Stdio::piped() } else { Stdio::null() });
            cmd.stdout(if opts.stdout { Stdio::piped() } else { Stdio::null() });
            cmd.stderr(if opts.stderr { Stdio::piped() } else { Stdio::null() });
            cmd.spawn()
        }
    })();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(frame(ERROR, exit_status_json(None, &opts.command, Some(e.to_string())).as_bytes())).await;
            let _ = tx.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    if let Some(m) = &pty_master {
        let rfd = proc::dup_file(m.as_raw_fd()).ok();
        let wfd = proc::dup_file(m.as_raw_fd()).ok();
        if let Some(r) = rfd {
            let r = tokio::fs::File::from_std(r);
            pumps.push(tokio::spawn(pump_out(r, STDOUT, tx.clone())));
        }
        if opts.stdin {
            if let Some(w) = wfd {
                stdin_w = Some(Box::new(tokio::fs::File::from_std(w)));
            }
        }
    } else {
        if let Some(o) = child.stdout.take() {
            pumps.push(tokio::spawn(pump_out(o, STDOUT, tx.clone())));
        }
        if let Some(e) = child.stderr.take() {
            pumps.push(tokio::spawn(pump_out(e, STDERR, tx.clone())));
        }
        if let Some(i) = child.stdin.take() {
            stdin_w = Some(Box::new(i));
        }
    }
    // Client -> process.
    let master_for_resize = pty_master.clone();
    let reader = tokio::spawn(async move {
        let mut stdin_w = stdin_w;
        while let Some(Ok(m)) = stream.next().await {
            let data: Vec<u8> = match m {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = data.split_first() else { continue };
            match ch {
                STDIN => {
                    if let Some(w) = stdin_w.as_mut() {
                        if w.write_all(rest).await.is_err() {
                            stdin_w = None;
                        } else {
                            let _ = w.flush().await;
                        }
                    }
                }
                RESIZE => {
                    if let (Some(m), Ok(v)) = (&master_for_resize, serde_json::from_slice::<serde_json::Value>(rest)) {
                        let w = v.get("Width").and_then(|x| x.as_u64()).unwrap_or(80) as u16;
                        let hgt = v.get("Height").and_then(|x| x.as_u64()).unwrap_or(24) as u16;
                        proc::set_winsize(m.as_raw_fd(), w, hgt);
                    }
                }
                CLOSE if v5 && rest.first() == Some(&STDIN) => {
                    if let Some(mut w) = stdin_w.take() {
                        let _ = w.shutdown().await;
                    }
                }
                _ => {}
            }
        }
    });
    let mut reader = reader;
    let code = proc::wait_or_hang_up(&mut child, async {
        let _ = (&mut reader).await;
    })
    .await;
    // With a TTY the master read ends with EIO once the slave side is gone; give pumps a moment.
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
    }
    drop(pty_master);
    let _ = tx.send(frame(ERROR, exit_status_json(code, &opts.command, None).as_bytes())).await;
    let _ = tx.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
    drop(tx);
    let _ = writer.await;
    // The closing handshake (RFC 6455 section 7.1.1): wait for the client's own Close before the
    // socket goes, so frames it still sends (a resize, its stdin close) do not meet a closed socket,
    // whose reset could overtake the status and the Close frame on their way through the API
    // server's proxy.
    if tokio::time::timeout(Duration::from_secs(2), &mut reader).await.is_err() {
        reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_format() {
        let s: serde_json::Value =
            serde_json::from_str(&exit_status_json(Some(3), &["sh".into(), "-c".into(), "exit 3".into()], None))
                .unwrap();
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value = serde_json::from_str(&exit_status_json(Some(0), &[], None)).unwrap();
        assert_eq!(ok["status"], "Success");
    }

    #[test]
    fn exec_options() {
        let o = ExecOpts::from_query(Some(
            "command=sh&command=-c&command=echo%20hi&stdout=true&stderr=1&tty=false&container=a&container=b",
        ));
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(!o.stdin && o.stdout && o.stderr && !o.tty);
        assert_eq!(o.container.as_deref(), Some("b"));
        assert!(o.check(true).is_ok());
        let none = ExecOpts::from_query(None);
        assert!(none.command.is_empty() && none.container.is_none());
        assert_eq!(none.check(true).unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert!(ExecOpts::from_query(Some("stdin")).check(false).is_ok());
        assert!(ExecOpts::from_query(Some("command=ls&tty=true")).check(true).is_err());
    }
}
