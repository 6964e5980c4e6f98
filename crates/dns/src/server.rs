//! The query path (bytes in, bytes out) and the UDP/TCP listeners.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{
    emit_message_parts, Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::forward::Forwarder;
use crate::index::{name_key_fast, Index, Lookup, Rec};
use crate::metrics::Metrics;

/// Our advertised EDNS UDP payload size.
const OUR_PAYLOAD: u16 = 1232;
/// Largest UDP reply we ever send.
const MAX_UDP: u16 = 4096;
/// Idle time after which a TCP connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Forwarded queries in flight at once.
const MAX_INFLIGHT_FORWARDS: usize = 1024;
/// Open TCP connections at once.
const MAX_TCP_CONNS: usize = 1024;

/// What to do after handling a packet.
#[derive(Debug)]
pub enum Action {
    /// The reply is in the output buffer.
    Reply,
    /// Send nothing.
    Drop,
    /// Ask upstream, then reply.
    Forward(Box<Pending>),
}

/// A query waiting for an upstream answer.
#[derive(Debug)]
pub struct Pending {
    meta: Metadata,
    query: Query,
    edns: Option<Edns>,
    max_size: u16,
    start: Instant,
    /// For an ExternalName pointing outside the cluster: the CNAME records answered so far and
    /// the query for their target, which goes upstream instead of `query`.
    chase: Option<(Vec<Record>, Query)>,
}

/// The query handler shared by all listeners.
#[derive(Debug)]
pub struct Handler {
    index: Arc<Index>,
    forwarder: Option<Arc<Forwarder>>,
    metrics: Arc<Metrics>,
    forwards: Arc<Semaphore>,
}

/// Per-worker scratch buffers, reused across queries.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The encoded reply.
    pub out: Vec<u8>,
    key: Vec<u8>,
}

fn response_meta(req: &Metadata, recursion_available: bool) -> Metadata {
    let mut m = Metadata::new(req.id, MessageType::Response, req.op_code);
    m.recursion_desired = req.recursion_desired;
    m.recursion_available = recursion_available;
    m.checking_disabled = req.checking_disabled;
    m
}

#[allow(clippy::too_many_arguments)]
fn emit(
    out: &mut Vec<u8>,
    meta: &Metadata,
    query: Option<&Query>,
    answers: &[Rec<'_>],
    authorities: &[Rec<'_>],
    additionals: &[Rec<'_>],
    edns: Option<&Edns>,
    max: u16,
) -> Result<Header, hickory_proto::ProtoError> {
    out.clear();
    let mut enc = BinEncoder::new(out);
    enc.set_max_size(max);
    emit_message_parts(
        meta,
        &mut query.into_iter(),
        &mut answers.iter(),
        &mut authorities.iter(),
        &mut additionals.iter(),
        edns,
        None,
        &mut enc,
    )
}

/// Encodes a reply into `out`, within `max` bytes: drops the additional section first, then sets
/// TC and keeps only the question (and OPT). Returns true when TC was set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    out: &mut Vec<u8>,
    meta: &Metadata,
    query: Option<&Query>,
    answers: &[Rec<'_>],
    authorities: &[Rec<'_>],
    additionals: &[Rec<'_>],
    edns: Option<&Edns>,
    max: u16,
) -> bool {
    let first = emit(
        out,
        meta,
        query,
        answers,
        authorities,
        additionals,
        edns,
        max,
    );
    match first {
        Ok(h) if !h.metadata.truncation => return false,
        Ok(h)
            if h.counts.answers as usize == answers.len()
                && h.counts.authorities as usize == authorities.len() =>
        {
            if let Ok(h) = emit(out, meta, query, answers, authorities, &[], edns, max) {
                if !h.metadata.truncation {
                    return false;
                }
            }
        }
        _ => {}
    }
    let mut m = *meta;
    m.truncation = true;
    if emit(out, &m, query, &[], &[], &[], edns, max).is_ok() {
        return true;
    }
    let mut m = *meta;
    m.response_code = ResponseCode::ServFail;
    let _ = emit(out, &m, None, &[], &[], &[], None, max);
    false
}

impl Handler {
    /// A handler answering from `index`, forwarding other names through `forwarder`.
    pub fn new(
        index: Arc<Index>,
        forwarder: Option<Arc<Forwarder>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Handler {
            index,
            forwarder,
            metrics,
            forwards: Arc::new(Semaphore::new(MAX_INFLIGHT_FORWARDS)),
        }
    }

    /// The index answered from.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The metrics updated by this handler.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn finish(&self, qtype: RecordType, rcode: ResponseCode, truncated: bool, start: Instant) {
        if truncated {
            self.metrics.truncated.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.record(qtype, rcode, start.elapsed());
    }

    /// Handles one DNS message. Never panics on any input.
    pub fn handle(&self, req: &[u8], tcp: bool, s: &mut Scratch) -> Action {
        let start = Instant::now();
        let mut dec = BinDecoder::new(req);
        let Ok(header) = Header::read(&mut dec) else {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            return Action::Drop;
        };
        if header.metadata.message_type != MessageType::Query {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            return Action::Drop;
        }
        let ra = self.forwarder.is_some();
        let msg = match Message::from_vec(req) {
            Ok(m) => m,
            Err(_) => {
                let mut m = response_meta(&header.metadata, ra);
                m.response_code = ResponseCode::FormErr;
                encode(&mut s.out, &m, None, &[], &[], &[], None, 512);
                self.finish(RecordType::Unknown(0), ResponseCode::FormErr, false, start);
                return Action::Reply;
            }
        };
        let mut meta = response_meta(&msg.metadata, ra);
        let edns = msg.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(OUR_PAYLOAD);
            e.set_version(0);
            e
        });
        let max_size = if tcp {
            u16::MAX
        } else {
            match &msg.edns {
                Some(e) => e.max_payload().clamp(512, MAX_UDP),
                None => 512,
            }
        };
        let query = msg.queries.first();
        let qtype = query
            .map(|q| q.query_type())
            .unwrap_or(RecordType::Unknown(0));
        let fail = |s: &mut Scratch, meta: &mut Metadata, rcode: ResponseCode, with_q: bool| {
            meta.response_code = rcode;
            let q = if with_q { query } else { None };
            encode(&mut s.out, meta, q, &[], &[], &[], edns.as_ref(), max_size);
            self.finish(qtype, rcode, false, start);
            Action::Reply
        };
        if msg.metadata.op_code != OpCode::Query {
            return fail(s, &mut meta, ResponseCode::NotImp, msg.queries.len() == 1);
        }
        if let Some(e) = &msg.edns {
            if e.version() > 0 {
                return fail(s, &mut meta, ResponseCode::BADVERS, msg.queries.len() == 1);
            }
        }
        if msg.queries.len() != 1 || !msg.answers.is_empty() || !msg.authorities.is_empty() {
            return fail(s, &mut meta, ResponseCode::FormErr, false);
        }
        let query = &msg.queries[0];
        let qname = query.name();
        name_key_fast(qname, &mut s.key);
        let class_ok = matches!(query.query_class(), DNSClass::IN | DNSClass::ANY);
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT) {
            return fail(s, &mut meta, ResponseCode::Refused, true);
        }
        {
            let guard = self.index.guard();
            match self.index.lookup(&guard, qname, &s.key, qtype) {
                Lookup::Authoritative {
                    nxdomain,
                    answers,
                    additionals,
                } => {
                    if !self.index.is_synced() {
                        drop(guard);
                        return fail(s, &mut meta, ResponseCode::ServFail, true);
                    }
                    if !class_ok {
                        drop(guard);
                        return fail(s, &mut meta, ResponseCode::Refused, true);
                    }
                    meta.authoritative = true;
                    // ExternalName to a name outside the cluster: resolve the target upstream
                    // and answer CNAME + its records, as CoreDNS does.
                    if let (false, Some(fwd), Some(target)) = (
                        nxdomain || matches!(qtype, RecordType::CNAME | RecordType::ANY),
                        &self.forwarder,
                        answers.last().and_then(Rec::cname_target),
                    ) {
                        let mut tkey = Vec::new();
                        name_key_fast(target, &mut tkey);
                        if !tkey.starts_with(self.index.zone_key()) {
                            let mut tq = Query::query(target.clone(), qtype);
                            tq.set_query_class(DNSClass::IN);
                            let prefix: Vec<Record> = answers.iter().map(Rec::to_record).collect();
                            drop(answers);
                            drop(guard);
                            if let Some(cached) = fwd.cache_get(&tkey, &tq) {
                                self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                                let rcode = cached.metadata.response_code;
                                let tc = self.reply_from_upstream(
                                    s,
                                    &meta,
                                    query,
                                    &prefix,
                                    &cached,
                                    edns.as_ref(),
                                    max_size,
                                );
                                self.finish(qtype, rcode, tc, start);
                                return Action::Reply;
                            }
                            return Action::Forward(Box::new(Pending {
                                meta,
                                query: query.clone(),
                                edns,
                                max_size,
                                start,
                                chase: Some((prefix, tq)),
                            }));
                        }
                    }
                    meta.response_code = if nxdomain {
                        ResponseCode::NXDomain
                    } else {
                        ResponseCode::NoError
                    };
                    let soa = [Rec::B(self.index.soa())];
                    let auth: &[Rec<'_>] = if answers.is_empty() { &soa } else { &[] };
                    let tc = encode(
                        &mut s.out,
                        &meta,
                        Some(query),
                        &answers,
                        auth,
                        &additionals,
                        edns.as_ref(),
                        max_size,
                    );
                    self.finish(qtype, meta.response_code, tc, start);
                    return Action::Reply;
                }
                Lookup::NotOurs => {}
            }
        }
        // Reverse names of cluster addresses are only known after the first sync.
        if !self.index.is_synced() && s.key.starts_with(b"\x04arpa") {
            return fail(s, &mut meta, ResponseCode::ServFail, true);
        }
        let Some(fwd) = &self.forwarder else {
            return fail(s, &mut meta, ResponseCode::Refused, true);
        };
        if let Some(cached) = fwd.cache_get(&s.key, query) {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            let rcode = cached.metadata.response_code;
            let tc =
                self.reply_from_upstream(s, &meta, query, &[], &cached, edns.as_ref(), max_size);
            self.finish(qtype, rcode, tc, start);
            return Action::Reply;
        }
        Action::Forward(Box::new(Pending {
            meta,
            query: query.clone(),
            edns,
            max_size,
            start,
            chase: None,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn reply_from_upstream(
        &self,
        s: &mut Scratch,
        meta: &Metadata,
        query: &Query,
        prefix: &[Record],
        up: &Message,
        edns: Option<&Edns>,
        max_size: u16,
    ) -> bool {
        let mut m = *meta;
        m.response_code = up.metadata.response_code;
        m.authentic_data = false;
        fn conv(v: &[Record]) -> Vec<Rec<'_>> {
            v.iter().map(Rec::B).collect()
        }
        let mut answers = conv(prefix);
        answers.extend(up.answers.iter().map(Rec::B));
        encode(
            &mut s.out,
            &m,
            Some(query),
            &answers,
            &conv(&up.authorities),
            &conv(&up.additionals),
            edns,
            max_size,
        )
    }

    /// Resolves a forwarded query and writes the reply into `s.out`.
    pub async fn forward(&self, p: Pending, s: &mut Scratch) {
        let Some(fwd) = self.forwarder.clone() else {
            return;
        };
        let permit = self.forwards.clone().try_acquire_owned();
        let qtype = p.query.query_type();
        let result = match permit {
            Ok(_permit) => {
                self.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
                fwd.resolve(p.chase.as_ref().map(|(_, q)| q).unwrap_or(&p.query))
                    .await
            }
            Err(_) => None,
        };
        match result {
            Some(up) => {
                let rcode = up.metadata.response_code;
                let tc = self.reply_from_upstream(
                    s,
                    &p.meta,
                    &p.query,
                    p.chase.as_ref().map(|(v, _)| v.as_slice()).unwrap_or(&[]),
                    &up,
                    p.edns.as_ref(),
                    p.max_size,
                );
                self.finish(qtype, rcode, tc, p.start);
            }
            None => {
                let mut m = p.meta;
                m.response_code = ResponseCode::ServFail;
                encode(
                    &mut s.out,
                    &m,
                    Some(&p.query),
                    &[],
                    &[],
                    &[],
                    p.edns.as_ref(),
                    p.max_size,
                );
                self.finish(qtype, ResponseCode::ServFail, false, p.start);
            }
        }
    }

    /// Handles a message completely (forwarding included); `None` when it is dropped.
    pub async fn handle_full(&self, req: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let mut s = Scratch::default();
        match self.handle(req, tcp, &mut s) {
            Action::Reply => Some(s.out),
            Action::Drop => None,
            Action::Forward(p) => {
                self.forward(*p, &mut s).await;
                Some(s.out)
            }
        }
    }
}

/// Runs `workers` receive loops on one UDP socket until an unrecoverable error.
pub(crate) async fn serve_udp(
    sock: std::net::UdpSocket,
    handler: Arc<Handler>,
    workers: usize,
) -> std::io::Result<()> {
    sock.set_nonblocking(true)?;
    let sock = Arc::new(tokio::net::UdpSocket::from_std(sock)?);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let sock = sock.clone();
        let handler = handler.clone();
        tasks.spawn(async move { udp_worker(sock, handler).await });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            tasks.abort_all();
            return Err(e);
        }
    }
    Ok(())
}

async fn udp_worker(
    sock: Arc<tokio::net::UdpSocket>,
    handler: Arc<Handler>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65536];
    let mut s = Scratch {
        out: Vec::with_capacity(4096),
        key: Vec::with_capacity(256),
    };
    let mut errors = 0u32;
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => {
                errors = 0;
                x
            }
            Err(e) => {
                // ICMP-induced errors (ECONNREFUSED etc.) are per-packet; keep going.
                errors += 1;
                if errors > 1000 {
                    return Err(e);
                }
                tracing::debug!("udp recv: {e}");
                continue;
            }
        };
        match handler.handle(&buf[..n], false, &mut s) {
            Action::Reply => {
                if let Err(e) = sock.send_to(&s.out, peer).await {
                    tracing::debug!("udp send to {peer}: {e}");
                }
            }
            Action::Drop => {}
            Action::Forward(p) => {
                let sock = sock.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    let mut s = Scratch::default();
                    handler.forward(*p, &mut s).await;
                    if !s.out.is_empty() {
                        let _ = sock.send_to(&s.out, peer).await;
                    }
                });
            }
        }
    }
}

/// Accepts TCP connections (2-byte length framing) until an unrecoverable error.
pub(crate) async fn serve_tcp(
    listener: std::net::TcpListener,
    handler: Arc<Handler>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let conns = Arc::new(Semaphore::new(MAX_TCP_CONNS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_conn(stream, &handler).await {
                tracing::debug!("tcp {peer}: {e}");
            }
        });
    }
}

async fn tcp_conn(mut stream: tokio::net::TcpStream, handler: &Handler) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut s = Scratch::default();
    let mut buf = Vec::new();
    let mut frame = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        if len == 0 {
            return Ok(());
        }
        buf.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        match handler.handle(&buf, true, &mut s) {
            Action::Reply => {}
            Action::Drop => continue,
            Action::Forward(p) => handler.forward(*p, &mut s).await,
        }
        let Ok(n) = u16::try_from(s.out.len()) else {
            return Ok(());
        };
        frame.clear();
        frame.extend_from_slice(&n.to_be_bytes());
        frame.extend_from_slice(&s.out);
        stream.write_all(&frame).await?;
    }
}

/// The local address of each socket (for logs and tests).
pub(crate) fn udp_addrs(socks: &[std::net::UdpSocket]) -> Vec<SocketAddr> {
    socks.iter().filter_map(|s| s.local_addr().ok()).collect()
}
