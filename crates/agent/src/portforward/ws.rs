//! kubelet's WebSocket port-forward protocol (subprotocols `v4.channel.k8s.io`,
//! `v4.base64.channel.k8s.io`, or none = binary): the `port` query parameters name the ports; port
//! *i* gets data channel 2*i* and error channel 2*i*+1, and the server first writes the port number
//! (2 bytes, little-endian) on both. Each binary message is `[channel][bytes]`; in base64 each text
//! message is `'0'+channel` followed by base64. One connection to each port per WebSocket; a port
//! that cannot be reached gets kubelet's error text on its error channel while the others keep
//! forwarding. The session ends when every port's connection has ended or the client goes away.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::Target;

pub const V4_BINARY: &str = "v4.channel.k8s.io";
pub const V4_BASE64: &str = "v4.base64.channel.k8s.io";

/// Largest payload read from a pod connection into one message.
const CHUNK: usize = 32 * 1024;

/// Encode one message on `channel`.
pub fn encode(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        s.push(char::from(b'0' + channel));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::Text(s.into())
    } else {
        let mut v = Vec::with_capacity(data.len() + 1);
        v.push(channel);
        v.extend_from_slice(data);
        Message::Binary(v.into())
    }
}

/// Decode a client message into (channel, payload); Err for a malformed one.
pub fn decode(base64: bool, m: &Message) -> Result<Option<(u8, Vec<u8>)>, String> {
    match (m, base64) {
        (Message::Binary(b), false) => match b.split_first() {
            Some((&ch, rest)) => Ok(Some((ch, rest.to_vec()))),
            None => Ok(None),
        },
        (Message::Text(t), true) => {
            let t = t.as_bytes();
            let Some((&c, rest)) = t.split_first() else { return Ok(None) };
            if !c.is_ascii_digit() {
                return Err(format!("invalid channel {:?}", c as char));
            }
            let data = base64::engine::general_purpose::STANDARD.decode(rest).map_err(|e| e.to_string())?;
            Ok(Some((c - b'0', data)))
        }
        (Message::Binary(_), true) | (Message::Text(_), false) => Err("unexpected message type".into()),
        _ => Ok(None),
    }
}

/// Serve one port-forward WebSocket.
pub async fn serve(socket: WebSocket, target: Target, ports: Vec<u16>, base64: bool) {
    let (tx, mut stream, writer) = crate::server::ws_queue(socket);
    let mut to_pod: Vec<mpsc::Sender<Option<Bytes>>> = vec![];
    let mut tasks = vec![];
    for (i, &port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let pb = port.to_le_bytes();
        let _ = tx.send(encode(base64, data_ch, &pb)).await;
        let _ = tx.send(encode(base64, err_ch, &pb)).await;
        let (in_tx, mut in_rx) = mpsc::channel::<Option<Bytes>>(64);
        to_pod.push(in_tx);
        let tx = tx.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let conn = match super::connect(&target, port).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("{e}");
                    let _ = tx.send(encode(base64, err_ch, e.to_string().as_bytes())).await;
                    return;
                }
            };
            let (mut r, mut w) = conn.into_split();
            let up = async {
                while let Some(Some(d)) = in_rx.recv().await {
                    if w.write_all(&d).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(encode(base64, data_ch, &buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            // The pod closing its side ends this port's forward (as kubelet's copy does).
            tokio::select! {
                _ = down => {}
                _ = async { up.await; std::future::pending::<()>().await } => {}
            }
        }));
    }
    let all_done = futures::future::join_all(tasks);
    tokio::pin!(all_done);
    loop {
        tokio::select! {
            _ = &mut all_done => break,
            m = stream.next() => {
                let m = match m {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(m)) => m,
                };
                match decode(base64, &m) {
                    Ok(Some((ch, data))) => {
                        let i = usize::from(ch / 2);
                        if ch % 2 == 0 && i < to_pod.len() && !data.is_empty() {
                            let _ = to_pod[i].send(Some(Bytes::from(data))).await;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!("port-forward: {e}");
                        break;
                    }
                }
            }
        }
    }
    drop(to_pod);
    let _ = tx.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trip() {
        for b64 in [false, true] {
            let m = encode(b64, 3, b"\x50\x00hello");
            assert_eq!(decode(b64, &m).unwrap(), Some((3, b"\x50\x00hello".to_vec())));
        }
        assert_eq!(encode(true, 1, &80u16.to_le_bytes()), Message::Text("1UAA=".into()));
        assert_eq!(encode(false, 0, &8080u16.to_le_bytes()), Message::Binary(vec![0, 0x90, 0x1f].into()));
    }

    #[test]
    fn hostile_messages() {
        assert!(decode(true, &Message::Text("x!!".into())).is_err());
        assert!(decode(true, &Message::Text("0***".into())).is_err());
        assert!(decode(false, &Message::Text("0AA==".into())).is_err());
        assert!(decode(true, &Message::Binary(vec![0, 1].into())).is_err());
        assert_eq!(decode(false, &Message::Binary(vec![].into())).unwrap(), None);
        assert_eq!(decode(true, &Message::Text("".into())).unwrap(), None);
    }
}
