//! `pods/attach` over the Kubernetes WebSocket remotecommand protocol (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`): channel 0 stdin, 1 stdout, 2 stderr, 3 error (a metav1.Status when the
//! attach ends), 4 resize (JSON `{"Width":..,"Height":..}`), and in v5 255 close (`[255, 0]` = the
//! client's stdin ended).

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::StreamExt;

use super::{Hub, Stream};
use crate::server::{frame, CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT};

/// What the client asked for.
#[derive(Clone, Copy, Debug)]
pub struct AttachOpts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The metav1.Status kubelet sends on the error channel when an attach ends normally.
fn success() -> String {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}).to_string()
}

/// Parse a resize message (`{"Width":80,"Height":24}`); None when malformed.
pub fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let w = u16::try_from(v.get("Width")?.as_u64()?).ok()?;
    let h = u16::try_from(v.get("Height")?.as_u64()?).ok()?;
    Some((w, h))
}

/// Run one attach session until the container's output ends or the client goes away.
pub async fn serve(socket: WebSocket, hub: Arc<Hub>, opts: AttachOpts, v5: bool) {
    let (tx, mut stream, writer) = crate::server::ws_queue(socket);
    let _ = tx.send(frame(crate::server::first_channel(opts.stdout, opts.stderr), &[])).await;
    let mut att = hub.attach(opts.stdin);
    let tty = opts.tty && att.tty();
    loop {
        tokio::select! {
            out = att.next_output() => match out {
                Some((s, data)) => {
                    let ch = match s {
                        Stream::Stdout if opts.stdout => STDOUT,
                        // With a TTY there is one stream; without one, stderr goes to stderr.
                        Stream::Stderr if opts.stderr && !tty => STDERR,
                        Stream::Stderr if opts.stdout && tty => STDOUT,
                        _ => continue,
                    };
                    if tx.send(frame(ch, &data)).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = tx.send(frame(ERROR, success().as_bytes())).await;
                    let _ = tx.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
                    break;
                }
            },
            m = stream.next() => {
                let data: Vec<u8> = match m {
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Some((&ch, rest)) = data.split_first() else { continue };
                match ch {
                    STDIN => att.write_stdin(rest).await,
                    RESIZE => {
                        if let Some((w, h)) = parse_resize(rest) {
                            att.resize(w, h);
                        }
                    }
                    CLOSE if v5 && rest.first() == Some(&STDIN) => att.close_stdin(),
                    _ => {}
                }
            }
        }
    }
    drop(att);
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages() {
        assert_eq!(parse_resize(br#"{"Width":120,"Height":40}"#), Some((120, 40)));
        assert_eq!(parse_resize(br#"{"Width":70000,"Height":40}"#), None);
        assert_eq!(parse_resize(b"{"), None);
        assert_eq!(parse_resize(br#"{"Width":-1,"Height":40}"#), None);
    }
}
