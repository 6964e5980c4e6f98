//! `pods/exec` over SPDY/3.1, as kubelet's streaming server serves it to client-go before the
//! WebSocket protocol (kubectl 1.27–1.29, and 1.30+ when WebSockets are off or fail): negotiate
//! `X-Stream-Protocol-Version` (v4/v3/v2/channel.k8s.io; v5 is v4 over SPDY), upgrade, wait for
//! the client's error/stdin/stdout/stderr/resize streams, run the command (with a pty for `tty`),
//! and report the result on the error stream: a JSON metav1.Status in v4 (exit code as
//! `NonZeroExitCode` with an `ExitCode` cause), the plain error text in v1–v3.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pod::Runtime;
use crate::proc;
use crate::server::{exit_status_json, find, pick_container, status, ExecOpts};
use crate::spdy::session::{Incoming, Session, Writer};
use crate::spdy::{self};

/// Protocols served, in the server's order (kubelet's list).
pub const EXEC_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];

/// How long the client has to open its streams (kubelet's default stream creation timeout).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a TTY exec waits for the client's first terminal size before starting the command.
const INITIAL_SIZE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Version {
    V1,
    V2,
    V3,
    V4,
}

fn version(p: Option<&str>) -> Version {
    match p {
        Some("v5.channel.k8s.io") | Some("v4.channel.k8s.io") => Version::V4,
        Some("v3.channel.k8s.io") => Version::V3,
        Some("v2.channel.k8s.io") => Version::V2,
        _ => Version::V1,
    }
}

/// The options of a SPDY request: with a TTY stderr is merged into stdout and no stderr stream
/// is expected (kubelet).
fn spdy_opts(query: Option<&str>) -> ExecOpts {
    let mut opts = ExecOpts::from_query(query);
    opts.stderr &= !opts.tty;
    opts
}

/// Serve a SPDY exec request (the caller checked the upgrade headers).
pub async fn exec(rt: Arc<Runtime>, ns: String, name: String, query: Option<String>, req: Request) -> Response {
    let target = |h: &crate::pod::PodHandle, c: &str| h.exec_target(c);
    upgrade(rt, (ns, name), query, req, true, target, run).await
}

/// Check an exec or attach request, find its target in the pod, and run `serve` on the
/// upgraded SPDY session.
async fn upgrade<T, F, Fut>(
    rt: Arc<Runtime>,
    (ns, name): (String, String),
    query: Option<String>,
    mut req: Request,
    exec: bool,
    target: F,
    serve: fn(Session, T, ExecOpts, Version) -> Fut,
) -> Response
where
    T: Send + 'static,
    F: FnOnce(&crate::pod::PodHandle, &str) -> Result<T, String>,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let opts = spdy_opts(query.as_deref());
    if let Err(r) = opts.check(exec) {
        return r;
    }
    let h = match find(&rt, &ns, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let container = match pick_container(&h, opts.container.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let target = match target(&h, &container) {
        Ok(t) => t,
        Err(msg) => return status(400, "BadRequest", msg),
    };
    let proto = match spdy::negotiate(req.headers(), EXEC_PROTOCOLS) {
        Ok(p) => p,
        Err(msg) => return spdy::negotiation_failed(msg, EXEC_PROTOCOLS),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let v = version(proto.as_deref());
    tokio::spawn(async move {
        let Ok(io) = on_upgrade.await else { return };
        let session = Session::start(TokioIo::new(io), |_| true);
        serve(session, target, opts, v).await;
    });
    spdy::switching_protocols(proto.as_deref())
}

#[derive(Default)]
struct Streams {
    error: Option<Incoming>,
    stdin: Option<Incoming>,
    stdout: Option<Incoming>,
    stderr: Option<Incoming>,
    resize: Option<Incoming>,
}

/// Wait for the expected number of streams (error + one per requested stream + resize with a TTY
/// in v3+), as upstream counts them.
async fn wait_for_streams(s: &mut Session, opts: &ExecOpts, v: Version) -> Option<Streams> {
    let mut expected = 1 + opts.stdin as usize + opts.stdout as usize + opts.stderr as usize;
    if opts.tty && matches!(v, Version::V3 | Version::V4) {
        expected += 1;
    }
    let mut got = Streams::default();
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while n < expected {
        let st = match tokio::time::timeout_at(deadline, s.next_stream()).await {
            Ok(Some(st)) => st,
            Ok(None) => return None,
            Err(_) => {
                tracing::debug!("spdy exec: timed out waiting for client to create streams");
                return None;
            }
        };
        let slot = match st.stream_type() {
            "error" => &mut got.error,
            "stdin" => &mut got.stdin,
            "stdout" => &mut got.stdout,
            "stderr" => &mut got.stderr,
            "resize" if v != Version::V1 && v != Version::V2 => &mut got.resize,
            other => {
                tracing::debug!("spdy exec: unexpected stream type {other:?}");
                continue;
            }
        };
        *slot = Some(st);
        n += 1;
    }
    Some(got)
}

async fn pump_out<R: tokio::io::AsyncRead + Unpin>(mut r: R, w: Writer, id: u32) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if w.data(id, &buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = w.fin(id).await;
}

/// Parse client-go's resize stream: JSON objects `{"Width":..,"Height":..}` one after another.
fn resize_events(buf: &mut Vec<u8>, mut apply: impl FnMut(u16, u16)) {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(v)) => {
                used = it.byte_offset();
                let w = v.get("Width").and_then(|x| x.as_u64()).unwrap_or(0).min(u16::MAX as u64) as u16;
                let h = v.get("Height").and_then(|x| x.as_u64()).unwrap_or(0).min(u16::MAX as u64) as u16;
                apply(w, h);
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                // Garbage: drop what we have (upstream stops reading resizes).
                used = buf.len();
                break;
            }
            None => {
                used = buf.len();
                break;
            }
        }
    }
    buf.drain(..used);
}

async fn run(mut session: Session, target: proc::ExecTarget, opts: ExecOpts, v: Version) {
    let Some(mut st) = wait_for_streams(&mut session, &opts, v).await else {
        session.close().await;
        return;
    };
    let w = session.writer.clone();
    // Streams only this side writes: swallow anything a client sends on them, so it cannot stall
    // the session's reader.
    for s in [st.error.as_mut(), st.stdout.as_mut(), st.stderr.as_mut()].into_iter().flatten() {
        let mut rx = std::mem::replace(&mut s.data, tokio::sync::mpsc::channel(1).1);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
    }
    // The client sends the terminal's size first thing on the resize stream; apply it before the
    // command starts, so `stty size` or a full-screen program sees it from the start.
    let mut resize_rx = st.resize.as_mut().map(|s| std::mem::replace(&mut s.data, tokio::sync::mpsc::channel(1).1));
    let mut resize_buf = vec![];
    let mut initial: Option<(u16, u16)> = None;
    if let (true, Some(rx)) = (opts.tty, resize_rx.as_mut()) {
        let deadline = tokio::time::Instant::now() + INITIAL_SIZE_WAIT;
        while initial.is_none() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(d)) => {
                    resize_buf.extend_from_slice(&d);
                    if resize_buf.len() > 64 * 1024 {
                        resize_buf.clear();
                    }
                    resize_events(&mut resize_buf, |c, r| initial = Some((c, r)));
                }
                _ => break,
            }
        }
    }
    let mut pty_master: Option<Arc<OwnedFd>> = None;
    let spawned = (|| -> std::io::Result<tokio::process::Child> {
        let mut cmd = proc::exec_command(&target, &opts.command, opts.tty)?;
        if opts.tty {
            let (master, slave) = proc::openpty()?;
            if let Some((cols, rows)) = initial {
                proc::set_winsize(master.as_raw_fd(), cols, rows);
            }
            let s = |fd: &OwnedFd| -> std::io::Result<Stdio> { Ok(Stdio::from(proc::dup_file(fd.as_raw_fd())?)) };
            cmd.stdin(s(&slave)?).stdout(s(&slave)?).stderr(s(&slave)?);
            let child = cmd.spawn()?;
            drop(slave);
            pty_master = Some(Arc::new(master));
            Ok(child)
        } else {
            cmd.stdin(if st.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
            cmd.stdout(if st.stdout.is_some() { Stdio::piped() } else { Stdio::null() });
            cmd.stderr(if st.stderr.is_some() { Stdio::piped() } else { Stdio::null() });
            cmd.spawn()
        }
    })();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let msg = exit_status_json(None, &opts.command, Some(e.to_string()));
            finish(&w, &st, v, &msg).await;
            session.close().await;
            return;
        }
    };
    let mut pumps = vec![];
    let mut stdin_w: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> = None;
    if let Some(m) = &pty_master {
        if let (Some(out), Ok(r)) = (&st.stdout, proc::dup_file(m.as_raw_fd())) {
            pumps.push(tokio::spawn(pump_out(tokio::fs::File::from_std(r), w.clone(), out.id)));
        }
        if st.stdin.is_some() {
            if let Ok(wf) = proc::dup_file(m.as_raw_fd()) {
                stdin_w = Some(Box::new(tokio::fs::File::from_std(wf)));
            }
        }
    } else {
        if let (Some(o), Some(s)) = (child.stdout.take(), &st.stdout) {
            pumps.push(tokio::spawn(pump_out(o, w.clone(), s.id)));
        }
        if let (Some(e), Some(s)) = (child.stderr.take(), &st.stderr) {
            pumps.push(tokio::spawn(pump_out(e, w.clone(), s.id)));
        }
        if let Some(i) = child.stdin.take() {
            stdin_w = Some(Box::new(i));
        }
    }
    // Client -> process stdin; the client's FIN closes the process's stdin.
    let stdin_task = st.stdin.as_mut().map(|s| std::mem::replace(&mut s.data, tokio::sync::mpsc::channel(1).1));
    let stdin_task = tokio::spawn(async move {
        let (Some(mut rx), Some(mut wr)) = (stdin_task, stdin_w) else { return };
        while let Some(d) = rx.recv().await {
            if wr.write_all(&d).await.is_err() {
                // The process closed its stdin: keep draining so the session is not held up.
                while rx.recv().await.is_some() {}
                return;
            }
            let _ = wr.flush().await;
        }
        let _ = wr.shutdown().await;
    });
    let master_for_resize = pty_master.clone();
    let resize_task = tokio::spawn(async move {
        let Some(mut rx) = resize_rx else { return };
        let mut buf = resize_buf;
        while let Some(d) = rx.recv().await {
            buf.extend_from_slice(&d);
            if buf.len() > 64 * 1024 {
                buf.clear();
            }
            resize_events(&mut buf, |cols, rows| {
                if let Some(m) = &master_for_resize {
                    proc::set_winsize(m.as_raw_fd(), cols, rows);
                }
            });
        }
    });
    let mut closed = session.closed();
    let code = proc::wait_or_hang_up(&mut child, async {
        let _ = closed.wait_for(|c| *c).await;
    })
    .await;
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
    }
    drop(pty_master);
    let msg = exit_status_json(code, &opts.command, None);
    finish(&w, &st, v, &msg).await;
    stdin_task.abort();
    resize_task.abort();
    drop(w);
    session.close().await;
}

/// Serve a SPDY attach request (`pods/attach`, kubectl 1.29 and older): the same streams as
/// exec, joined to the running container's attach hub instead of a new process.
pub async fn attach(rt: Arc<Runtime>, ns: String, name: String, query: Option<String>, req: Request) -> Response {
    let target = |h: &crate::pod::PodHandle, c: &str| h.attach_target(c);
    upgrade(rt, (ns, name), query, req, false, target, run_attach).await
}

async fn run_attach(mut session: Session, hub: Arc<crate::attach::Hub>, opts: ExecOpts, v: Version) {
    use crate::attach::Stream;
    let Some(mut st) = wait_for_streams(&mut session, &opts, v).await else {
        session.close().await;
        return;
    };
    let w = session.writer.clone();
    for s in [st.error.as_mut(), st.stdout.as_mut(), st.stderr.as_mut()].into_iter().flatten() {
        let mut rx = std::mem::replace(&mut s.data, tokio::sync::mpsc::channel(1).1);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
    }
    let take = |s: Option<&mut Incoming>| s.map(|s| std::mem::replace(&mut s.data, tokio::sync::mpsc::channel(1).1));
    let mut stdin_rx = take(st.stdin.as_mut());
    let mut resize_rx = take(st.resize.as_mut());
    let mut resize_buf = vec![];
    let mut att = hub.attach(opts.stdin);
    let tty = opts.tty && att.tty();
    let (out_id, err_id) = (st.stdout.as_ref().map(|s| s.id), st.stderr.as_ref().map(|s| s.id));
    let mut closed = session.closed();
    loop {
        tokio::select! {
            out = att.next_output() => match out {
                Some((s, data)) => {
                    let id = match s {
                        Stream::Stdout => out_id,
                        // With a TTY there is one stream; without one, stderr goes to stderr.
                        Stream::Stderr if tty => out_id,
                        Stream::Stderr => err_id,
                    };
                    if let Some(id) = id {
                        if w.data(id, &data).await.is_err() {
                            break;
                        }
                    }
                }
                None => break,
            },
            d = async { match stdin_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match d {
                Some(d) => att.write_stdin(&d).await,
                None => {
                    att.close_stdin();
                    stdin_rx = None;
                }
            },
            d = async { match resize_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match d {
                Some(d) => {
                    resize_buf.extend_from_slice(&d);
                    if resize_buf.len() > 64 * 1024 {
                        resize_buf.clear();
                    }
                    resize_events(&mut resize_buf, |cols, rows| att.resize(cols, rows));
                }
                None => resize_rx = None,
            },
            _ = async { let _ = closed.wait_for(|c| *c).await; } => break,
        }
    }
    drop(att);
    for id in [out_id, err_id].into_iter().flatten() {
        let _ = w.fin(id).await;
    }
    finish(&w, &st, v, &exit_status_json(Some(0), &[], None)).await;
    drop(w);
    session.close().await;
}

/// Report the result on the error stream: v4 sends the Status JSON (success too); v1–v3 send the
/// failure's message only. Then FIN every stream this side writes.
async fn finish(w: &Writer, st: &Streams, v: Version, status_json: &str) {
    if let Some(e) = &st.error {
        let s: serde_json::Value = serde_json::from_str(status_json).unwrap_or_default();
        if v == Version::V4 {
            let _ = w.data(e.id, status_json.as_bytes()).await;
        } else if s["status"] != "Success" {
            let _ = w.data(e.id, s["message"].as_str().unwrap_or("").as_bytes()).await;
        }
        let _ = w.fin(e.id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_stream_parsing() {
        let mut got = vec![];
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        resize_events(&mut buf, |w, h| got.push((w, h)));
        assert_eq!(got, vec![(80, 24)]);
        buf.extend_from_slice(b"20,\"Height\":50}\n");
        resize_events(&mut buf, |w, h| got.push((w, h)));
        assert_eq!(got, vec![(80, 24), (120, 50)]);
        assert!(buf.iter().all(|b| b.is_ascii_whitespace()));
        let mut bad = b"not json".to_vec();
        resize_events(&mut bad, |w, h| got.push((w, h)));
        assert!(bad.is_empty());
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn versions() {
        assert_eq!(version(Some("v5.channel.k8s.io")), Version::V4);
        assert_eq!(version(Some("v3.channel.k8s.io")), Version::V3);
        assert_eq!(version(None), Version::V1);
    }

    #[test]
    fn tty_merges_stderr() {
        let o = spdy_opts(Some("command=sh&stdout=1&stderr=1&tty=1"));
        assert!(o.stdout && !o.stderr && o.tty);
        let o = spdy_opts(Some("command=sh&stderr=1"));
        assert!(o.stderr && !o.tty);
    }
}
