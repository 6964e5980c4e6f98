//! The etcd backend's unary KV calls (Range, Txn, Compact), made straight over one HTTP/2
//! connection per member with `h2`. Through tonic, every call went from the caller's task to a
//! buffer task, through the balancer to hyper's dispatch task, then to the connection task, and
//! its answer back the same way; here the caller queues its stream on the connection itself (one
//! write of HEADERS plus the whole message) and the connection task wakes it with the answer.
//! Reads go round-robin over the members; writes go to the raft leader when it is known (raft
//! commits every write through the leader, and a follower would forward it there: one more hop and
//! copy). The leader is looked up with the Maintenance Status call, again when a write's answer
//! shows a new raft term, when a write to it fails, and every 30 s. A member whose connection
//! cannot be made is passed over for a second. Errors say whether the request can have reached
//! etcd, which decides whether a write may be sent again. Watches stay on etcd-client's streams.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use etcd_client::proto::{PbStatusRequest, PbStatusResponse};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The request never left: no connection could be made. Safe to send again.
    #[error("etcd member {0}: not sent: {1}")]
    NotSent(String, String),
    /// The connection failed while the request was out: etcd may have applied it.
    #[error("etcd member {0}: connection lost: {1}")]
    Lost(String, String),
    /// etcd answered with a gRPC error.
    #[error("{}", .0.message())]
    Status(tonic::Status),
}

/// Connection settings for each member.
pub(crate) struct Settings {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval and how long to wait for its answer (also while idle).
    pub keep_alive: (Duration, Duration),
    /// Largest answer accepted.
    pub max_message: usize,
}

/// An open connection to one member.
#[derive(Clone)]
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    /// Cleared when the connection's task ends (closed, failed, or a ping went unanswered).
    alive: Arc<AtomicBool>,
}

struct Member {
    /// `host:port`.
    addr: String,
    /// The authority of every request's URI.
    authority: http::uri::Authority,
    conn: Mutex<Option<Conn>>,
    /// Held while connecting, so that concurrent callers wait for one attempt.
    connecting: tokio::sync::Mutex<()>,
    /// Until when a failed member is passed over.
    down_until: Mutex<Option<Instant>>,
}

/// The raft leader as last looked up.
#[derive(Default)]
struct Leader {
    /// The leading member's index, if one was found.
    index: Option<usize>,
    /// The highest raft term seen (in a lookup or a write's answer).
    term: u64,
    /// When the last lookup ended; `None` asks for one at the next write.
    checked: Option<Instant>,
}

/// Unary KV calls over every member.
pub(crate) struct UnaryKv {
    members: Vec<Member>,
    /// The scheme of every request's URI (https when `settings.tls` is set).
    scheme: http::uri::Scheme,
    next: AtomicUsize,
    settings: Settings,
    leader: Mutex<Leader>,
    /// Set while a leader lookup runs (one at a time).
    looking: AtomicBool,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a member that could not be reached is passed over.
const PASS_OVER: Duration = Duration::from_secs(1);
/// How often a known leader is looked up again (a change of leader also shows as a new term in
/// a write's answer, which asks for a lookup at once).
const LEADER_RECHECK: Duration = Duration::from_secs(30);
/// How soon a lookup that found no leader is tried again.
const LEADER_RETRY: Duration = Duration::from_secs(1);
/// How long a lookup waits for each member's status.
const STATUS_WAIT: Duration = Duration::from_secs(2);

impl UnaryKv {
    /// Calls to `endpoints` (`host:port` each); connections are made on first use.
    pub(crate) fn new(endpoints: &[String], settings: Settings) -> Result<Self, String> {
        let scheme = if settings.tls.is_some() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
        let mut members = Vec::with_capacity(endpoints.len());
        for a in endpoints {
            let authority = a.parse().map_err(|e| format!("etcd endpoint {a}: {e}"))?;
            members.push(Member {
                addr: a.clone(),
                authority,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                down_until: Mutex::new(None),
            });
        }
        if members.is_empty() {
            return Err("no etcd endpoints".into());
        }
        Ok(Self {
            members,
            scheme,
            next: AtomicUsize::new(0),
            settings,
            leader: Mutex::default(),
            looking: AtomicBool::new(false),
        })
    }

    /// The next member in turn that is not being passed over (the next in turn if all are).
    fn pick(&self) -> &Member {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let n = self.members.len();
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|m| lock(&m.down_until).is_none_or(|t| t <= now))
            .unwrap_or(&self.members[start % n])
    }

    /// Call `method` (e.g. `/etcdserverpb.KV/Range`) with `req` on the next member.
    pub(crate) async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &'static str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        self.call_on(self.pick(), method, req).await
    }

    /// Call a write (`method` a Txn that writes, or Compact) on the leader, or on the next member
    /// while no reachable leader is known. A failure that can mean the leader is gone or has
    /// changed (no connection, or etcd answering Unavailable: "no leader", "leader changed")
    /// forgets it, so the next write looks it up again.
    pub(crate) async fn call_write<Req: Message, Resp: Message + Default>(
        self: &Arc<Self>,
        method: &'static str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        let leader = self.leader_for_write();
        let r = self.call_on(leader.map_or_else(|| self.pick(), |i| &self.members[i]), method, req).await;
        let gone = match &r {
            Ok(_) => false,
            Err(CallError::Status(s)) => s.code() == tonic::Code::Unavailable,
            Err(CallError::NotSent(..) | CallError::Lost(..)) => true,
        };
        if gone && leader.is_some() {
            let mut l = lock(&self.leader);
            if l.index == leader {
                l.index = None;
                l.checked = None;
            }
        }
        r
    }

    /// Note the raft term in an answer's header: a term above any seen means a new election, so
    /// the next write looks the leader up again.
    pub(crate) fn saw_term(&self, term: u64) {
        let mut l = lock(&self.leader);
        if term > l.term {
            l.term = term;
            l.checked = None;
        }
    }

    /// The leader's `host:port`, as last looked up.
    pub(crate) fn leader_addr(&self) -> Option<&str> {
        lock(&self.leader).index.map(|i| self.members[i].addr.as_str())
    }

    /// The leader to send a write to, if known and not passed over; starts a lookup in the
    /// background when one is due.
    fn leader_for_write(self: &Arc<Self>) -> Option<usize> {
        let now = Instant::now();
        let (index, due) = {
            let l = lock(&self.leader);
            let every = if l.index.is_some() { LEADER_RECHECK } else { LEADER_RETRY };
            (l.index, l.checked.is_none_or(|t| now.duration_since(t) >= every))
        };
        if due && !self.looking.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            tokio::spawn(async move {
                this.look_up_leader().await;
                this.looking.store(false, Ordering::Release);
            });
        }
        index.filter(|&i| lock(&self.members[i].down_until).is_none_or(|t| t <= now))
    }

    /// Ask every member for its status; the leader is the member that names itself, in the
    /// highest term if (across a partition) more than one does.
    pub(crate) async fn look_up_leader(&self) {
        let asks = self.members.iter().enumerate().map(|(i, m)| async move {
            let status = tokio::time::timeout(
                STATUS_WAIT,
                self.call_on::<_, PbStatusResponse>(m, "/etcdserverpb.Maintenance/Status", &PbStatusRequest {}),
            )
            .await;
            let s = status.ok()?.ok()?;
            let me = s.header.as_ref().map_or(0, |h| h.member_id);
            (s.leader != 0 && s.leader == me).then_some((i, s.raft_term))
        });
        let found = futures::future::join_all(asks).await.into_iter().flatten().max_by_key(|&(_, term)| term);
        let mut l = lock(&self.leader);
        // A leader of an older term than one already seen has been deposed (it has not heard yet).
        let found = found.filter(|&(_, term)| term >= l.term);
        if let Some((i, term)) = found {
            tracing::debug!("etcd leader: {} (term {term})", self.members[i].addr);
            l.term = term;
        }
        l.index = found.map(|(i, _)| i);
        l.checked = Some(Instant::now());
    }

    /// Call `method` with `req` on member `m`.
    async fn call_on<Req: Message, Resp: Message + Default>(
        &self,
        m: &Member,
        method: &'static str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        let conn = self.conn(m).await?;
        let not_sent = |e: h2::Error| CallError::NotSent(m.addr.clone(), e.to_string());
        let lost = |e: h2::Error| {
            // A stream refused before processing (RFC 9113 8.7): etcd did not act on it. Any
            // other failure after sending, a GOAWAY included, is taken as possibly applied.
            if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                CallError::NotSent(m.addr.clone(), e.to_string())
            } else {
                CallError::Lost(m.addr.clone(), e.to_string())
            }
        };
        let mut send = conn.send.ready().await.map_err(|e| {
            conn.alive.store(false, Ordering::Relaxed);
            not_sent(e)
        })?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(m.authority.clone());
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static(method));
        let uri = http::Uri::from_parts(uri).map_err(|e| CallError::NotSent(m.addr.clone(), e.to_string()))?;
        let mut request =
            http::Request::post(uri).body(()).map_err(|e| CallError::NotSent(m.addr.clone(), e.to_string()))?;
        let h = request.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        h.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        // Refused by a member that has lost its leader instead of waiting for one.
        h.insert("hasleader", http::HeaderValue::from_static("true"));
        let (answer, mut stream) = send.send_request(request, false).map_err(not_sent)?;
        stream.send_data(frame(req), true).map_err(lost)?;
        let (parts, mut body) = answer.await.map_err(lost)?.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(CallError::Status(tonic::Status::unknown(format!(
                "etcd member {}: HTTP status {}",
                m.addr, parts.status
            ))));
        }
        // A trailers-only answer carries its status in the headers.
        if let Some(s) = failed(&parts.headers) {
            return Err(CallError::Status(s));
        }
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(lost)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            match &first {
                None => first = Some(chunk),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&chunk);
                    if rest.len() > self.settings.max_message + 5 {
                        return Err(CallError::Status(tonic::Status::out_of_range(format!(
                            "etcd answer larger than {} bytes",
                            self.settings.max_message
                        ))));
                    }
                }
            }
        }
        let trailers = body.trailers().await.map_err(lost)?.unwrap_or_default();
        if let Some(s) = failed(&trailers) {
            return Err(CallError::Status(s));
        }
        if trailers.get("grpc-status").is_none() && parts.headers.get("grpc-status").is_none() {
            return Err(CallError::Lost(m.addr.clone(), "answer ended without a gRPC status".into()));
        }
        let mut whole = if rest.is_empty() { first.unwrap_or_default() } else { rest.freeze() };
        unframe(&mut whole)
            .and_then(|msg| Resp::decode(msg).map_err(|e| e.to_string()))
            .map_err(|e| CallError::Status(tonic::Status::internal(format!("etcd member {}: {e}", m.addr))))
    }

    /// The member's open connection, or a new one.
    async fn conn(&self, m: &Member) -> Result<Conn, CallError> {
        let open = |m: &Member| lock(&m.conn).as_ref().filter(|c| c.alive.load(Ordering::Relaxed)).cloned();
        if let Some(c) = open(m) {
            return Ok(c);
        }
        let _one = m.connecting.lock().await;
        if let Some(c) = open(m) {
            return Ok(c);
        }
        // The attempt this caller waited for failed (or one did lately): callers queued behind
        // it do not each try again (an unanswered connect takes the whole timeout).
        if lock(&m.down_until).is_some_and(|t| t > Instant::now()) {
            return Err(CallError::NotSent(m.addr.clone(), "passed over: its last connection attempt failed".into()));
        }
        match self.connect(m).await {
            Ok(c) => {
                *lock(&m.conn) = Some(c.clone());
                *lock(&m.down_until) = None;
                Ok(c)
            }
            Err(e) => {
                *lock(&m.down_until) = Some(Instant::now() + PASS_OVER);
                Err(CallError::NotSent(m.addr.clone(), e))
            }
        }
    }

    async fn connect(&self, m: &Member) -> Result<Conn, String> {
        let s = &self.settings;
        let tcp = tokio::time::timeout(s.connect_timeout, tokio::net::TcpStream::connect(&m.addr))
            .await
            .map_err(|_| "tcp connect error: timed out".to_string())?
            .map_err(|e| format!("tcp connect error: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("tcp connect error: {e}"))?;
        let io: Box<dyn Io> = match &s.tls {
            None => Box::new(tcp),
            Some(cfg) => {
                let host =
                    m.addr.rsplit_once(':').map_or(m.addr.as_str(), |(h, _)| h).trim_matches(|c| c == '[' || c == ']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| format!("server name {host}: {e}"))?;
                let tls = tokio::time::timeout(
                    s.connect_timeout,
                    tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
                )
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake: {e}"))?;
                Box::new(tls)
            }
        };
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(2 << 20)
            .initial_connection_window_size(5 << 20)
            .max_frame_size(1 << 20)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let ping = connection.ping_pong().ok_or("HTTP/2 ping handle already taken")?;
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let (every, wait) = s.keep_alive;
        let addr = m.addr.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = connection => if let Err(e) = r { tracing::debug!("etcd connection to {addr}: {e}") },
                () = keep_alive(ping, every, wait) => tracing::debug!("etcd member {addr} stopped answering pings"),
            }
            flag.store(false, Ordering::Relaxed);
        });
        Ok(Conn { send, alive })
    }
}

/// Returns when a ping goes unanswered for `wait`.
async fn keep_alive(mut ping: h2::PingPong, every: Duration, wait: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(wait, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A gRPC status other than OK in `headers`.
fn failed(headers: &http::HeaderMap) -> Option<tonic::Status> {
    let code = headers.get("grpc-status")?;
    (code.as_bytes() != b"0").then(|| tonic::Status::from_header_map(headers)).flatten()
}

/// A message in gRPC's framing: uncompressed flag, big-endian length, the message.
fn frame<M: Message>(m: &M) -> Bytes {
    let len = m.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    m.encode(&mut b).expect("capacity reserved");
    b.freeze()
}

/// The one message in a framed answer.
fn unframe(b: &mut Bytes) -> Result<Bytes, String> {
    if b.len() < 5 {
        return Err(format!("answer of {} bytes has no gRPC frame", b.len()));
    }
    if b.get_u8() != 0 {
        return Err("compressed answer (none was offered)".into());
    }
    let len = b.get_u32() as usize;
    if b.len() != len {
        return Err(format!("gRPC frame says {len} bytes, {} came", b.len()));
    }
    Ok(std::mem::take(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbCompactionRequest, PbCompactionResponse};

    fn settings() -> Settings {
        Settings {
            tls: None,
            connect_timeout: Duration::from_secs(2),
            keep_alive: (Duration::from_secs(5), Duration::from_secs(3)),
            max_message: 1 << 20,
        }
    }

    /// A test server's answer: its headers, body and trailers.
    type Reply = (Vec<(&'static str, &'static str)>, Bytes, Vec<(&'static str, &'static str)>);

    /// How a test server answers a request (path, body).
    type Answer = fn(&str, &[u8]) -> Reply;

    /// An HTTP/2 server that answers every request with `answer`.
    async fn serve(listener: tokio::net::TcpListener, answer: Answer) {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let path = req.uri().path().to_string();
                        assert_eq!(req.headers().get("hasleader").map(|v| v.as_bytes()), Some(&b"true"[..]));
                        let mut body = req.into_body();
                        let mut got = Vec::new();
                        while let Some(c) = body.data().await {
                            got.extend_from_slice(&c.unwrap());
                        }
                        let (headers, data, trailers) = answer(&path, &got);
                        let mut resp = http::Response::builder().status(200);
                        for (k, v) in headers {
                            resp = resp.header(k, v);
                        }
                        let only_headers = data.is_empty() && trailers.is_empty();
                        let mut send = respond.send_response(resp.body(()).unwrap(), only_headers).unwrap();
                        if !only_headers {
                            send.send_data(data, false).unwrap();
                            let mut t = http::HeaderMap::new();
                            for (k, v) in trailers {
                                t.insert(k, v.parse().unwrap());
                            }
                            send.send_trailers(t).unwrap();
                        }
                    });
                }
            });
        }
    }

    async fn client(answer: Answer) -> UnaryKv {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener, answer));
        UnaryKv::new(&[addr], settings()).unwrap()
    }

    #[tokio::test]
    async fn messages_round_trip_in_grpc_framing() {
        let kv = client(|path, body| {
            assert_eq!(path, "/etcdserverpb.KV/Compact");
            let mut b = Bytes::copy_from_slice(body);
            let req = PbCompactionRequest::decode(unframe(&mut b).unwrap()).unwrap();
            assert_eq!(req.revision, 42);
            let resp = PbCompactionResponse {
                header: Some(etcd_client::proto::PbResponseHeader { revision: 43, ..Default::default() }),
            };
            (vec![("content-type", "application/grpc")], frame(&resp), vec![("grpc-status", "0")])
        })
        .await;
        for _ in 0..3 {
            let r: PbCompactionResponse = kv
                .call("/etcdserverpb.KV/Compact", &PbCompactionRequest { revision: 42, physical: false })
                .await
                .unwrap();
            assert_eq!(r.header.unwrap().revision, 43);
        }
    }

    #[tokio::test]
    async fn grpc_errors_keep_their_code_and_message() {
        // In the trailers, and trailers-only (in the headers).
        for answer in [
            (|_: &str, _: &[u8]| {
                (
                    vec![],
                    Bytes::from_static(b""),
                    vec![
                        ("grpc-status", "11"),
                        ("grpc-message", "etcdserver: mvcc: required revision has been compacted"),
                    ],
                )
            }) as Answer,
            |_, _| (vec![("grpc-status", "14"), ("grpc-message", "etcdserver: no leader")], Bytes::new(), vec![]),
        ] {
            let kv = client(answer).await;
            match kv.call::<_, PbCompactionResponse>("/etcdserverpb.KV/Compact", &PbCompactionRequest::default()).await
            {
                Err(CallError::Status(s)) => assert!(
                    matches!(s.code(), tonic::Code::OutOfRange | tonic::Code::Unavailable)
                        && s.message().starts_with("etcdserver: "),
                    "{s:?}"
                ),
                other => panic!("want a gRPC status, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_unreachable_member_is_not_sent_to_and_passed_over() {
        // A port that was just free: nothing listens there.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap().to_string();
        tokio::spawn(serve(live, |_, _| (vec![], frame(&PbCompactionResponse::default()), vec![("grpc-status", "0")])));
        let kv = UnaryKv::new(&[dead.clone(), live_addr], settings()).unwrap();
        let first =
            kv.call::<_, PbCompactionResponse>("/etcdserverpb.KV/Compact", &PbCompactionRequest::default()).await;
        assert!(
            matches!(&first, Err(CallError::NotSent(a, e)) if *a == dead && e.contains("tcp connect error")),
            "{first:?}"
        );
        // While it is passed over, every call goes to the live member.
        for _ in 0..4 {
            kv.call::<_, PbCompactionResponse>("/etcdserverpb.KV/Compact", &PbCompactionRequest::default())
                .await
                .unwrap();
        }
    }

    /// A fake member `id` that answers Status naming `leader` in raft term `term`, and any other
    /// call with its own ID in the answer's header.
    fn member(id: u64, leader: u64, term: u64, path: &str) -> Reply {
        let header =
            Some(etcd_client::proto::PbResponseHeader { member_id: id, raft_term: term, ..Default::default() });
        let body = if path.ends_with("/Status") {
            frame(&PbStatusResponse { header, leader, raft_term: term, ..Default::default() })
        } else {
            frame(&PbCompactionResponse { header })
        };
        (vec![("content-type", "application/grpc")], body, vec![("grpc-status", "0")])
    }

    #[tokio::test]
    async fn writes_go_to_the_member_that_leads_in_the_highest_term() {
        let answers: [Answer; 3] = [
            // Deposed: still names itself, in an older term.
            |p, _| member(1, 1, 3, p),
            |p, _| member(2, 2, 4, p),
            |p, _| member(3, 2, 4, p),
        ];
        let mut addrs = Vec::new();
        for answer in answers {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
            tokio::spawn(serve(l, answer));
        }
        let kv = Arc::new(UnaryKv::new(&addrs, settings()).unwrap());
        let req = PbCompactionRequest::default();
        kv.look_up_leader().await;
        assert_eq!(kv.leader_addr(), Some(addrs[1].as_str()));
        for _ in 0..6 {
            let r: PbCompactionResponse = kv.call_write("/etcdserverpb.KV/Compact", &req).await.unwrap();
            assert_eq!(r.header.unwrap().member_id, 2);
        }
        // Reads still go round-robin.
        let mut read_from = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let r: PbCompactionResponse = kv.call("/etcdserverpb.KV/Compact", &req).await.unwrap();
            read_from.insert(r.header.unwrap().member_id);
        }
        assert_eq!(read_from.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        // An answer from a later term asks for a lookup at the next write; one that finds only
        // leaders of older terms knows no leader, and writes go round-robin meanwhile.
        kv.saw_term(5);
        assert!(lock(&kv.leader).checked.is_none());
        kv.look_up_leader().await;
        assert_eq!(kv.leader_addr(), None);
        let mut written_to = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let r: PbCompactionResponse = kv.call_write("/etcdserverpb.KV/Compact", &req).await.unwrap();
            written_to.insert(r.header.unwrap().member_id);
        }
        assert_eq!(written_to.len(), 3);
    }

    #[tokio::test]
    async fn only_errors_that_can_mean_a_lost_leader_forget_it() {
        // One member that leads; Compact at revision 1 fails as already compacted (routine), at
        // revision 2 with "no leader".
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(serve(l, |path, body| {
            if path.ends_with("/Status") {
                return member(1, 1, 1, path);
            }
            let mut b = Bytes::copy_from_slice(body);
            match PbCompactionRequest::decode(unframe(&mut b).unwrap()).unwrap().revision {
                1 => (
                    vec![
                        ("grpc-status", "11"),
                        ("grpc-message", "etcdserver: mvcc: required revision has been compacted"),
                    ],
                    Bytes::new(),
                    vec![],
                ),
                _ => (vec![("grpc-status", "14"), ("grpc-message", "etcdserver: no leader")], Bytes::new(), vec![]),
            }
        }));
        let kv = Arc::new(UnaryKv::new(std::slice::from_ref(&addr), settings()).unwrap());
        kv.look_up_leader().await;
        assert_eq!(kv.leader_addr(), Some(addr.as_str()));
        let compact = |revision| PbCompactionRequest { revision, physical: false };
        assert!(kv.call_write::<_, PbCompactionResponse>("/etcdserverpb.KV/Compact", &compact(1)).await.is_err());
        assert_eq!(kv.leader_addr(), Some(addr.as_str()), "kept after a compacted error");
        assert!(kv.call_write::<_, PbCompactionResponse>("/etcdserverpb.KV/Compact", &compact(2)).await.is_err());
        assert_eq!(kv.leader_addr(), None, "forgotten after no leader");
    }

    #[tokio::test]
    async fn callers_queued_behind_a_failed_connect_do_not_each_try_again() {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let kv = UnaryKv::new(std::slice::from_ref(&dead), settings()).unwrap();
        let req = PbCompactionRequest::default();
        let calls = (0..8).map(|_| kv.call::<_, PbCompactionResponse>("/etcdserverpb.KV/Compact", &req));
        let errs: Vec<String> =
            futures::future::join_all(calls).await.into_iter().map(|r| r.unwrap_err().to_string()).collect();
        assert_eq!(errs.iter().filter(|e| e.contains("tcp connect error")).count(), 1, "{errs:?}");
        assert!(errs.iter().all(|e| e.contains("not sent")), "{errs:?}");
    }
}
