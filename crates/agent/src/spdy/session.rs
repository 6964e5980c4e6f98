//! A server-side SPDY/3.1 session over one upgraded connection, with spdystream's semantics: the
//! client opens the streams (odd, increasing ids), the session answers each accepted SYN_STREAM
//! with a SYN_REPLY at once (client-go waits for it before it writes), delivers the stream's data
//! in order until the client's FIN or RST_STREAM, echoes the client's PINGs, and ignores SETTINGS
//! and WINDOW_UPDATE (spdystream neither sends nor honours flow control, so neither does this).
//! Handlers write through a cloneable [`Writer`]; one task owns the connection's write half and
//! the header compressor. A protocol error (malformed frame, bad zlib, hostile lengths) ends the
//! session with GOAWAY(PROTOCOL_ERROR) and a closed connection; it never panics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{self, Frame, FrameReader, FLAG_FIN};
use super::headers::{Deflater, Headers};

/// Most streams open at once in one session; more are refused (RST_STREAM REFUSED_STREAM).
pub const MAX_STREAMS: usize = 1024;
/// Buffered data pieces per stream before the session stops reading (spdystream's backpressure).
const STREAM_BUFFER: usize = 16;

/// A stream the client opened.
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    /// The stream's data in order; ends at the client's FIN, RST_STREAM or the end of the session.
    pub data: mpsc::Receiver<Vec<u8>>,
}

impl Incoming {
    /// The `streamType` header (client-go's names are lower-cased on the wire).
    pub fn stream_type(&self) -> &str {
        self.headers.get("streamtype").unwrap_or("")
    }
}

/// The session has gone away.
#[derive(Debug, thiserror::Error)]
#[error("SPDY session closed")]
pub struct Closed;

enum Out {
    Frame(Frame),
    /// GOAWAY with this status, then close the connection.
    Close(u32),
}

/// Writes frames to the session; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Out>,
}

impl Writer {
    async fn send(&self, f: Frame) -> Result<(), Closed> {
        self.tx.send(Out::Frame(f)).await.map_err(|_| Closed)
    }

    /// Data on a stream (split into frames of at most 32 KiB).
    pub async fn data(&self, stream_id: u32, data: &[u8]) -> Result<(), Closed> {
        for c in data.chunks(frame::MAX_DATA_WRITE) {
            self.send(Frame::Data { stream_id, flags: 0, data: c.to_vec() }).await?;
        }
        Ok(())
    }

    /// This side is done writing on the stream (an empty data frame with FIN, as spdystream's Close).
    pub async fn fin(&self, stream_id: u32) -> Result<(), Closed> {
        self.send(Frame::Data { stream_id, flags: FLAG_FIN, data: vec![] }).await
    }

    /// Reset a stream.
    pub async fn rst(&self, stream_id: u32, status: u32) -> Result<(), Closed> {
        self.send(Frame::RstStream { stream_id, status }).await
    }
}

/// One accepted session.
pub struct Session {
    pub writer: Writer,
    incoming: mpsc::Receiver<Incoming>,
    closed: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    write_task: Option<JoinHandle<()>>,
}

impl Session {
    /// Run a session over `io`. `accept` vets each new stream's headers; a refused stream is reset
    /// (RST_STREAM CANCEL, as spdystream's Reset) instead of answered.
    pub fn start<IO>(io: IO, accept: impl Fn(&Headers) -> bool + Send + 'static) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel::<Out>(256);
        let last_good = Arc::new(AtomicU32::new(0));
        let write_task = tokio::spawn(write_loop(w, rx, last_good.clone()));
        let writer = Writer { tx };
        let (in_tx, incoming) = mpsc::channel::<Incoming>(64);
        let (closed_tx, closed) = watch::channel(false);
        let reader_writer = writer.clone();
        let reader = tokio::spawn(async move {
            read_loop(FrameReader::new(r), reader_writer, in_tx, last_good, accept).await;
            let _ = closed_tx.send(true);
        });
        Session { writer, incoming, closed, reader, write_task: Some(write_task) }
    }

    /// The next stream the client opens; `None` once the session has ended.
    pub async fn next_stream(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Becomes `true` when the client side of the session has ended (EOF, error, GOAWAY'd).
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Say GOAWAY and close the connection once everything queued before is written.
    pub async fn close(mut self) {
        let _ = self.writer.tx.send(Out::Close(frame::GOAWAY_OK)).await;
        if let Some(t) = self.write_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.reader.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The writer task ends (flushing what is queued, then closing) once the last Writer is gone.
        self.reader.abort();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut fr: FrameReader<R>,
    w: Writer,
    in_tx: mpsc::Sender<Incoming>,
    last_good: Arc<AtomicU32>,
    accept: impl Fn(&Headers) -> bool,
) {
    let mut streams: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut last_id = 0u32;
    let mut gone_away = false;
    loop {
        let f = match fr.next().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("spdy session: {e}");
                if e.is_protocol() {
                    let _ = w.tx.send(Out::Close(frame::GOAWAY_PROTOCOL_ERROR)).await;
                }
                break;
            }
        };
        match f {
            Frame::SynStream { stream_id, flags, headers, .. } => {
                if gone_away {
                    continue;
                }
                if stream_id % 2 == 0 || stream_id <= last_id {
                    let status = if streams.contains_key(&stream_id) {
                        frame::RST_STREAM_IN_USE
                    } else {
                        frame::RST_PROTOCOL_ERROR
                    };
                    let _ = w.rst(stream_id, status).await;
                    continue;
                }
                last_id = stream_id;
                last_good.store(stream_id, Ordering::Relaxed);
                if streams.len() >= MAX_STREAMS {
                    let _ = w.rst(stream_id, frame::RST_REFUSED_STREAM).await;
                    continue;
                }
                if !accept(&headers) {
                    let _ = w.rst(stream_id, frame::RST_CANCEL).await;
                    continue;
                }
                if w.send(Frame::SynReply { stream_id, flags: 0, headers: Headers::default() }).await.is_err() {
                    break;
                }
                let (dtx, drx) = mpsc::channel(STREAM_BUFFER);
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, dtx);
                }
                if in_tx.send(Incoming { id: stream_id, headers, data: drx }).await.is_err() {
                    // Nobody takes new streams any more.
                    streams.remove(&stream_id);
                    let _ = w.rst(stream_id, frame::RST_REFUSED_STREAM).await;
                }
            }
            Frame::Data { stream_id, flags, data } => {
                let Some(tx) = streams.get(&stream_id) else { continue };
                if !data.is_empty() && tx.send(data).await.is_err() {
                    // The handler dropped the stream: discard what follows.
                    streams.remove(&stream_id);
                    continue;
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                // Client-initiated pings have odd ids; answer them unchanged.
                if id % 2 == 1 && w.send(Frame::Ping { id }).await.is_err() {
                    break;
                }
            }
            Frame::GoAway { .. } => {
                gone_away = true;
            }
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>, last_good: Arc<AtomicU32>) {
    let mut z = Deflater::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut closing = None;
    while let Some(o) = rx.recv().await {
        let mut next = Some(o);
        // Batch what is already queued into one write.
        while let Some(o) = next.take() {
            match o {
                Out::Frame(f) => frame::encode(&f, &mut z, &mut buf),
                Out::Close(status) => {
                    closing = Some(status);
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if let Some(status) = closing {
            frame::encode(&Frame::GoAway { last_good: last_good.load(Ordering::Relaxed), status }, &mut z, &mut buf);
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
        if closing.is_some() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spdy::headers::Deflater;

    fn hs(p: &[(&str, &str)]) -> Headers {
        Headers(p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
    }

    fn pair() -> (Session, tokio::io::WriteHalf<tokio::io::DuplexStream>, FrameReader<impl AsyncRead + Unpin>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let s = Session::start(a, |h| h.get("streamtype") != Some("bogus"));
        let (r, w) = tokio::io::split(b);
        (s, w, FrameReader::new(r))
    }

    async fn send(w: &mut (impl AsyncWrite + Unpin), z: &mut Deflater, f: Frame) {
        let mut b = vec![];
        frame::encode(&f, z, &mut b);
        w.write_all(&b).await.unwrap();
    }

    #[tokio::test]
    async fn streams_replies_data_and_close() {
        let (mut s, mut cw, mut cr) = pair();
        let mut z = Deflater::new();
        let syn = |id, t: &str| Frame::SynStream {
            stream_id: id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: hs(&[("streamtype", t)]),
        };
        send(&mut cw, &mut z, syn(1, "error")).await;
        send(&mut cw, &mut z, syn(3, "stdin")).await;
        send(&mut cw, &mut z, syn(5, "bogus")).await;
        send(&mut cw, &mut z, syn(3, "stdout")).await; // reused id
        send(&mut cw, &mut z, Frame::Ping { id: 1 }).await;
        send(&mut cw, &mut z, Frame::Data { stream_id: 3, flags: 0, data: b"abc".to_vec() }).await;
        send(&mut cw, &mut z, Frame::Data { stream_id: 3, flags: FLAG_FIN, data: b"def".to_vec() }).await;
        send(&mut cw, &mut z, Frame::WindowUpdate { stream_id: 3, delta: 100 }).await;
        let e = s.next_stream().await.unwrap();
        assert_eq!((e.id, e.stream_type()), (1, "error"));
        let mut i = s.next_stream().await.unwrap();
        assert_eq!((i.id, i.stream_type()), (3, "stdin"));
        assert_eq!(i.data.recv().await.unwrap(), b"abc");
        assert_eq!(i.data.recv().await.unwrap(), b"def");
        assert!(i.data.recv().await.is_none());
        s.writer.data(1, b"status").await.unwrap();
        s.writer.fin(1).await.unwrap();
        s.close().await;
        let mut got = vec![];
        while let Ok(Some(f)) = cr.next().await {
            got.push(f);
        }
        let empty = Headers::default();
        assert_eq!(
            got,
            vec![
                Frame::SynReply { stream_id: 1, flags: 0, headers: empty.clone() },
                Frame::SynReply { stream_id: 3, flags: 0, headers: empty },
                Frame::RstStream { stream_id: 5, status: frame::RST_CANCEL },
                Frame::RstStream { stream_id: 3, status: frame::RST_STREAM_IN_USE },
                Frame::Ping { id: 1 },
                Frame::Data { stream_id: 1, flags: 0, data: b"status".to_vec() },
                Frame::Data { stream_id: 1, flags: FLAG_FIN, data: vec![] },
                Frame::GoAway { last_good: 5, status: frame::GOAWAY_OK },
            ]
        );
    }

    #[tokio::test]
    async fn garbage_ends_the_session_with_goaway() {
        let (mut s, mut cw, mut cr) = pair();
        let closed = s.closed();
        // A SYN_STREAM whose header block is not zlib.
        let mut b = vec![0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(b"\xde\xad\xbe\xef");
        cw.write_all(&b).await.unwrap();
        assert!(s.next_stream().await.is_none());
        let mut closed = closed;
        let _ = closed.wait_for(|c| *c).await;
        assert_eq!(
            cr.next().await.unwrap(),
            Some(Frame::GoAway { last_good: 0, status: frame::GOAWAY_PROTOCOL_ERROR })
        );
        assert!(cr.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn huge_lengths_do_not_allocate_and_close() {
        let (mut s, mut cw, mut cr) = pair();
        cw.write_all(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(s.next_stream().await.is_none());
        assert!(matches!(cr.next().await.unwrap(), Some(Frame::GoAway { status: 1, .. })));
        // The connection is closed after the GOAWAY.
        assert!(cr.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn too_many_streams_are_refused() {
        let (mut s, mut cw, mut cr) = pair();
        let mut z = Deflater::new();
        let mut held = vec![];
        for k in 0..(MAX_STREAMS + 2) as u32 {
            let f = Frame::SynStream {
                stream_id: 2 * k + 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: hs(&[("streamtype", "data")]),
            };
            send(&mut cw, &mut z, f).await;
            if (k as usize) < MAX_STREAMS {
                held.push(s.next_stream().await.unwrap());
            }
        }
        let mut rst = vec![];
        for _ in 0..(MAX_STREAMS + 2) {
            match cr.next().await.unwrap().unwrap() {
                Frame::SynReply { .. } => {}
                Frame::RstStream { stream_id, status } => rst.push((stream_id, status)),
                f => panic!("{f:?}"),
            }
        }
        let n = MAX_STREAMS as u32;
        assert_eq!(rst, vec![(2 * n + 1, frame::RST_REFUSED_STREAM), (2 * n + 3, frame::RST_REFUSED_STREAM)]);
        // Closing streams frees their slots.
        send(&mut cw, &mut z, Frame::RstStream { stream_id: 1, status: frame::RST_CANCEL }).await;
        let f = Frame::SynStream {
            stream_id: 2 * n + 5,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: hs(&[("streamtype", "data")]),
        };
        send(&mut cw, &mut z, f).await;
        assert_eq!(s.next_stream().await.unwrap().id, 2 * n + 5);
        drop(held);
    }

    #[tokio::test]
    async fn a_dropped_stream_does_not_stall_the_others() {
        let (mut s, mut cw, _cr) = pair();
        let mut z = Deflater::new();
        let syn = |id| Frame::SynStream {
            stream_id: id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: hs(&[("streamtype", "data")]),
        };
        send(&mut cw, &mut z, syn(1)).await;
        drop(s.next_stream().await.unwrap());
        for _ in 0..(STREAM_BUFFER * 4) {
            send(&mut cw, &mut z, Frame::Data { stream_id: 1, flags: 0, data: vec![1; 100] }).await;
        }
        send(&mut cw, &mut z, syn(3)).await;
        send(&mut cw, &mut z, Frame::Data { stream_id: 3, flags: FLAG_FIN, data: b"live".to_vec() }).await;
        let mut three = tokio::time::timeout(Duration::from_secs(5), s.next_stream()).await.unwrap().unwrap();
        assert_eq!(three.id, 3);
        assert_eq!(three.data.recv().await.unwrap(), b"live");
        assert!(three.data.recv().await.is_none());
    }
}
