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
    // The peer's close ends our reading side (the user of the stream sees EOF); the tunnel closes
    // once the user has finished writing (its end of the pipe is dropped or shut down).
    tokio::join!(inbound, outbound);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::WebSocketUpgrade;
    use axum::routing::get;
    use tokio_tungstenite::tungstenite::Message as TMsg;

    /// A server that echoes the tunnelled byte stream back, upper-cased.
    async fn server() -> std::net::SocketAddr {
        let app = axum::Router::new().route(
            "/t",
            get(|ws: WebSocketUpgrade| async move {
                ws.protocols(["SPDY/3.1+portforward.k8s.io"]).on_upgrade(|s| async move {
                    let mut io = tunnel(s);
                    let mut buf = vec![0u8; 1024];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                buf[..n].make_ascii_uppercase();
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                })
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        a
    }

    async fn connect(
        a: std::net::SocketAddr,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{a}/t").into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "SPDY/3.1+portforward.k8s.io".parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "SPDY/3.1+portforward.k8s.io");
        ws
    }

    #[tokio::test]
    async fn bytes_cross_message_boundaries_and_close_ends_the_stream() {
        let a = server().await;
        let mut ws = connect(a).await;
        ws.send(TMsg::Binary(b"ab".to_vec().into())).await.unwrap();
        ws.send(TMsg::Binary(b"cd".to_vec().into())).await.unwrap();
        ws.send(TMsg::Binary(Vec::new().into())).await.unwrap();
        let mut got = vec![];
        while got.len() < 4 {
            match ws.next().await.unwrap().unwrap() {
                TMsg::Binary(b) => got.extend_from_slice(&b),
                m => panic!("unexpected {m:?}"),
            }
        }
        assert_eq!(got, b"ABCD");
        ws.send(TMsg::Close(None)).await.unwrap();
        // The server's side ends: a normal close comes back.
        let mut closed = false;
        while let Some(Ok(m)) = ws.next().await {
            if let TMsg::Close(f) = m {
                closed = f.map(|f| u16::from(f.code) == 1000).unwrap_or(true);
                break;
            }
        }
        assert!(closed);
    }

    #[tokio::test]
    async fn text_message_is_a_protocol_error() {
        let a = server().await;
        let mut ws = connect(a).await;
        ws.send(TMsg::Text("nope".into())).await.unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, TMsg::Close(_)) {
                    return;
                }
            }
        })
        .await;
        assert!(r.is_ok(), "the tunnel closes on a text message");
    }
}
