//! The gRPC channel the etcd backend talks through: tonic's balanced channel over every member,
//! with one change. tonic sends a unary request's body as a stream, so hyper writes its HEADERS
//! frame, its one DATA frame and an empty DATA frame that ends the stream as three separate
//! socket writes (and etcd wakes three times to read them). Here the KV calls' bodies (one
//! encoded message each) are gathered first and handed on whole, so the request goes out as
//! HEADERS plus one DATA frame that ends the stream, usually in a single write. Streaming calls
//! (Watch, LeaseKeepAlive) and everything else pass through untouched.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use http_body_util::BodyExt;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tower::Service;

/// The unary KV methods whose requests are sent whole.
const WHOLE: [&str; 5] = ["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange", "/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Compact"];

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

/// Connection settings for each member.
pub(crate) struct Settings {
    pub tls: Option<ClientTlsConfig>,
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval and how long to wait for its answer (also while idle).
    pub keep_alive: (Duration, Duration),
}

/// The sender that feeds a balanced channel its members; the channel stops finding members once
/// it is dropped.
pub(crate) type Members = tokio::sync::mpsc::Sender<Change<http::Uri, Endpoint>>;

/// A balanced channel over `urls` (`http://` or `https://host:port`), and its member list, which
/// must be kept.
pub(crate) async fn balanced(urls: &[String], s: &Settings) -> Result<(etcd_client::Channel, Members), String> {
    let (channel, tx) = Channel::balance_channel(64);
    for url in urls {
        let uri: http::Uri = url.parse().map_err(|e| format!("etcd endpoint {url}: {e}"))?;
        let mut e = Endpoint::from(uri.clone())
            .connect_timeout(s.connect_timeout)
            .http2_keep_alive_interval(s.keep_alive.0)
            .keep_alive_timeout(s.keep_alive.1)
            .keep_alive_while_idle(true);
        if let Some(tls) = &s.tls {
            e = e.tls_config(tls.clone()).map_err(|e| format!("etcd endpoint {url}: {e}"))?;
        }
        tx.send(Change::Insert(uri, e)).await.map_err(|_| "etcd channel closed".to_string())?;
    }
    let svc = WholeUnary { inner: channel };
    Ok((etcd_client::Channel::Custom(tower::util::BoxCloneSyncService::new(svc)), tx))
}

#[derive(Clone)]
struct WholeUnary {
    inner: Channel,
}

impl Service<Request> for WholeUnary {
    type Response = Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The instance made ready is the one that must be called; a fresh clone stays behind.
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        if !WHOLE.contains(&req.uri().path()) {
            return async move { ready.call(req).await.map_err(Into::into) }.boxed();
        }
        async move {
            let (parts, body) = req.into_parts();
            // One encoded message, already there: this does not wait on anything.
            let bytes = body.collect().await.map_err(|e| -> tower::BoxError { Box::new(e) })?.to_bytes();
            let req = http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(bytes)));
            ready.call(req).await.map_err(Into::into)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// A body like tonic's: one chunk from a stream that only says it ended when polled again.
    fn streamed(data: &'static [u8]) -> tonic::body::Body {
        let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from_static(data)))]);
        tonic::body::Body::new(StreamBody::new(frames))
    }

    /// What an HTTP/2 server saw of each request: path, content-length header, body.
    async fn serve_one_connection(listener: tokio::net::TcpListener, seen: tokio::sync::mpsc::UnboundedSender<(String, Option<String>, Vec<u8>)>) {
        let (tcp, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let path = req.uri().path().to_string();
                let len = req.headers().get("content-length").map(|v| v.to_str().unwrap().to_string());
                let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                seen.send((path, len, body)).unwrap();
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
            }
        });
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new()).serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await.unwrap();
    }

    #[tokio::test]
    async fn kv_requests_go_whole_and_streams_stay_streams() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(serve_one_connection(listener, tx));
        let (channel, _members) = balanced(std::slice::from_ref(&url), &Settings { tls: None, connect_timeout: Duration::from_secs(2), keep_alive: (Duration::from_secs(5), Duration::from_secs(3)) }).await.unwrap();
        let etcd_client::Channel::Custom(mut svc) = channel else { panic!("not the custom channel") };
        for path in ["/etcdserverpb.KV/Txn", "/etcdserverpb.Watch/Watch"] {
            let req = http::Request::post(format!("{url}{path}")).body(streamed(b"hello etcd")).unwrap();
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(10), svc.call(req)).await.expect("answered").unwrap();
            assert_eq!(resp.status(), 200);
            let (p, len, body) = seen.recv().await.unwrap();
            assert_eq!((p.as_str(), body.as_slice()), (path, &b"hello etcd"[..]));
            // A whole body has a known length, which hyper sends; a streamed one does not.
            let want = if path.contains(".KV/") { Some("10".to_string()) } else { None };
            assert_eq!(len, want, "{path}");
        }
    }
}
