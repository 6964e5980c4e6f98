//! A WebSocket as a byte stream, for protocols tunnelled in WebSocket binary messages (client-go's
//! `SPDY/3.1+portforward.k8s.io`: each write is one binary message; reading concatenates binary
//! messages; a normal close is the end of the stream; a text message is a protocol error).
//! [`tunnel`] returns one end of an in-memory duplex pipe and a task moves bytes between its other
//! end and the WebSocket.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// How much either direction buffers before it waits for the other side.
const BUFFER: usize = 64 * 1024;

/// The subprotocol prefix client-go puts before a tunnelled protocol's name.
pub const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";

/// Turn a WebSocket into a byte stream.
pub fn tunnel(socket: WebSocket) -> DuplexStream {
    let (mine, theirs) = tokio::io::duplex(BUFFER);
    tokio::spawn(pump(socket, theirs));
    mine
}

async fn pump(socket: WebSocket, pipe: DuplexStream) {
    let (mut sink, mut stream) = socket.split();
    let (mut pr, mut pw) = tokio::io::split(pipe);
    let inbound = async move {
        while let Some(m) = stream.next().await {
            match m {
                Ok(Message::Binary(b)) => {
                    if pw.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(Message::Text(_)) => {
                    tracing::debug!("tunnel: text message on a binary tunnel");
                    break;
                }
                Ok(_) => {}
            }
        }
        let _ = pw.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match pr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
        let _ = sink.close().await;
    };
    // Either direction ending ends the tunnel: the peer's close means no more bytes either way.
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}
