//! The query path (bytes in, bytes out) and the UDP/TCP listeners.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{
    emit_message_parts, Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::cache::AnswerCache;
use crate::forward::Forwarder;
use crate::index::{key_labels, name_key_fast, Index, InnerGuard, Lookup, Rec};
use crate::metrics::{self, LocalStats, Metrics};
use crate::pods::PodIps;

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
    /// Pods by address, when search-path completion (autopath) is on.
    pods: Option<Arc<PodIps>>,
    /// Clients allowed recursion (None: everyone, for handlers built without a config).
    recursion_from: Option<Vec<ipnet::IpNet>>,
}

/// Per-worker scratch buffers, reused across queries; a UDP worker's also holds its answer
/// cache and its metric counters.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The encoded reply.
    pub out: Vec<u8>,
    key: Vec<u8>,
    pub(crate) cache: Option<Box<AnswerCache>>,
    stats: Option<LocalStats>,
}

impl Scratch {
    /// Scratch of a UDP worker: with a wire-format answer cache (see [`crate::cache`]) and
    /// counters that reach the shared metrics on [`Handler::flush_stats`].
    pub fn with_cache() -> Self {
        Scratch {
            out: Vec::with_capacity(4096),
            key: Vec::with_capacity(256),
            cache: Some(Box::default()),
            stats: Some(LocalStats::default()),
        }
    }
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
    let first = emit(out, meta, query, answers, authorities, additionals, edns, max);
    match first {
        Ok(h) if !h.metadata.truncation => return false,
        Ok(h) if h.counts.answers as usize == answers.len() && h.counts.authorities as usize == authorities.len() => {
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
    pub fn new(index: Arc<Index>, forwarder: Option<Arc<Forwarder>>, metrics: Arc<Metrics>) -> Self {
        Handler {
            index,
            forwarder,
            metrics,
            forwards: Arc::new(Semaphore::new(MAX_INFLIGHT_FORWARDS)),
            pods: None,
            recursion_from: None,
        }
    }

    /// Forward only for clients in `nets`; others get REFUSED for names outside the cluster.
    pub fn with_recursion_from(mut self, nets: Vec<ipnet::IpNet>) -> Self {
        self.recursion_from = Some(nets);
        self
    }

    fn may_recurse(&self, peer: Option<IpAddr>) -> bool {
        match (&self.recursion_from, peer) {
            (Some(nets), Some(ip)) => {
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                    v4 => v4,
                };
                nets.iter().any(|n| n.contains(&ip))
            }
            _ => true,
        }
    }

    /// Turns on search-path completion for the pods in `pods` (see [`Handler::autopath`]).
    pub fn with_autopath(mut self, pods: Arc<PodIps>) -> Self {
        self.pods = Some(pods);
        self
    }

    /// The index answered from.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The metrics updated by this handler.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn finish(&self, s: &mut Scratch, qtype: RecordType, rcode: ResponseCode, truncated: bool, start: Instant) {
        self.finish_slot(s, metrics::slot(qtype, rcode), truncated, start);
    }

    fn finish_slot(&self, s: &mut Scratch, slot: usize, truncated: bool, start: Instant) {
        match &mut s.stats {
            Some(l) => l.record(slot, truncated, start.elapsed()),
            None => {
                if truncated {
                    self.metrics.truncated.fetch_add(1, Ordering::Relaxed);
                }
                self.metrics.record_slot(slot, start.elapsed());
            }
        }
    }

    /// Adds the counters a worker's scratch gathered to the shared metrics.
    pub fn flush_stats(&self, s: &mut Scratch) {
        if let Some(l) = &mut s.stats {
            self.metrics.flush(l);
        }
    }

    /// Handles one DNS message. Never panics on any input.
    pub fn handle(&self, req: &[u8], tcp: bool, s: &mut Scratch) -> Action {
        self.handle_from(req, tcp, None, s)
    }

    /// Handles one DNS message from `peer` (the source address matters for autopath only).
    pub fn handle_from(&self, req: &[u8], tcp: bool, peer: Option<IpAddr>, s: &mut Scratch) -> Action {
        let start = Instant::now();
        // Fast path: the same query bytes were answered from the same index generation.
        if !tcp {
            if let Some(cache) = &mut s.cache {
                if let Some(hit) = cache.get(req, self.index.generation()) {
                    s.out.clear();
                    s.out.extend_from_slice(hit.reply);
                    s.out[..2].copy_from_slice(&req[..2]);
                    let (slot, tc) = (hit.metric, hit.truncated);
                    self.finish_slot(s, slot, tc, start);
                    return Action::Reply;
                }
            }
        }
        let mut dec = BinDecoder::new(req);
        let Ok(header) = Header::read(&mut dec) else {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            return Action::Drop;
        };
        if header.metadata.message_type != MessageType::Query {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            return Action::Drop;
        }
        let ra = self.forwarder.is_some() && self.may_recurse(peer);
        let msg = match Message::from_vec(req) {
            Ok(m) => m,
            Err(_) => {
                let mut m = response_meta(&header.metadata, ra);
                m.response_code = ResponseCode::FormErr;
                encode(&mut s.out, &m, None, &[], &[], &[], None, 512);
                self.finish(s, RecordType::Unknown(0), ResponseCode::FormErr, false, start);
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
        let qtype = query.map(|q| q.query_type()).unwrap_or(RecordType::Unknown(0));
        let fail = |s: &mut Scratch, meta: &mut Metadata, rcode: ResponseCode, with_q: bool| {
            meta.response_code = rcode;
            let q = if with_q { query } else { None };
            encode(&mut s.out, meta, q, &[], &[], &[], edns.as_ref(), max_size);
            self.finish(s, qtype, rcode, false, start);
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
            // Read under the guard: the answer below belongs to this generation.
            let generation = self.index.generation();
            match self.index.lookup(&guard, qname, &s.key, qtype) {
                Lookup::Authoritative { nxdomain, answers, additionals } => {
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
                        self.forwarder.as_ref().filter(|_| self.may_recurse(peer)),
                        answers.last().and_then(Rec::cname_target),
                    ) {
                        let mut tkey = Vec::new();
                        name_key_fast(&target, &mut tkey);
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
                                self.finish(s, qtype, rcode, tc, start);
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
                    if nxdomain {
                        if let Some((answers, additionals)) = self.autopath(&guard, qname, &s.key, qtype, peer) {
                            // Never cached: the answer depends on who asks.
                            meta.response_code = ResponseCode::NoError;
                            let tc = encode(
                                &mut s.out,
                                &meta,
                                Some(query),
                                &answers,
                                &[],
                                &additionals,
                                edns.as_ref(),
                                max_size,
                            );
                            self.metrics.autopath.fetch_add(1, Ordering::Relaxed);
                            self.finish(s, qtype, ResponseCode::NoError, tc, start);
                            return Action::Reply;
                        }
                    }
                    meta.response_code = if nxdomain { ResponseCode::NXDomain } else { ResponseCode::NoError };
                    let soa = [Rec::B(self.index.soa())];
                    let auth: &[Rec<'_>] = if answers.is_empty() { &soa } else { &[] };
                    let tc =
                        encode(&mut s.out, &meta, Some(query), &answers, auth, &additionals, edns.as_ref(), max_size);
                    drop(answers);
                    drop(additionals);
                    drop(guard);
                    let rcode = meta.response_code;
                    self.finish(s, qtype, rcode, tc, start);
                    // A negative answer for a name a search list may produce is not cached:
                    // with autopath its answer depends on the source address.
                    let searched = nxdomain && self.index.search_shaped(&s.key);
                    let cacheable = !tcp && !searched;
                    if cacheable {
                        if let Some(cache) = &mut s.cache {
                            let slot = metrics::slot(qtype, rcode);
                            cache.put(req, generation, &s.out, slot, tc);
                        }
                    }
                    return Action::Reply;
                }
                Lookup::NotOurs => {}
            }
        }
        // Reverse names of cluster addresses are only known after the first sync.
        if !self.index.is_synced() && s.key.starts_with(b"\x04arpa") {
            return fail(s, &mut meta, ResponseCode::ServFail, true);
        }
        let Some(fwd) = self.forwarder.as_ref().filter(|_| self.may_recurse(peer)) else {
            return fail(s, &mut meta, ResponseCode::Refused, true);
        };
        if let Some(cached) = fwd.cache_get(&s.key, query) {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            let rcode = cached.metadata.response_code;
            let tc = self.reply_from_upstream(s, &meta, query, &[], &cached, edns.as_ref(), max_size);
            self.finish(s, qtype, rcode, tc, start);
            return Action::Reply;
        }
        Action::Forward(Box::new(Pending { meta, query: query.clone(), edns, max_size, start, chase: None }))
    }

    /// Server-side search-path completion for a query that is NXDOMAIN. A pod whose resolv.conf
    /// search list starts with `<ns>.svc.<zone> svc.<zone> <zone>` asks for `X` as
    /// `X.<ns>.svc.<zone>` first; when that name does not exist, this walks the rest of the
    /// cluster part of the list (`X.svc.<zone>`, then `X.<zone>`) and answers with the first
    /// name that exists: a CNAME from the asked name to it, then its records for the type
    /// (none for NODATA, as the name itself would answer). Each expansion's existence does not
    /// depend on the type, so A and AAAA of one lookup pick the same name, and a client that
    /// stops (musl) or goes on (glibc) at NODATA does the same as it would have after asking
    /// the expansions itself. Only when the source address is a pod of that namespace (the
    /// search list is then known), for A, AAAA and SRV, and only inside the cluster zone: past
    /// `<zone>` the list holds host domains this server does not know, so the plain NXDOMAIN
    /// is returned and the client goes on searching. Returns (answers, additionals).
    fn autopath<'a>(
        &self,
        guard: &'a InnerGuard<'_>,
        qname: &Name,
        key: &[u8],
        qtype: RecordType,
        peer: Option<IpAddr>,
    ) -> Option<(Vec<Rec<'a>>, Vec<Rec<'a>>)> {
        let pods = self.pods.as_ref()?;
        if !matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::SRV) {
            return None;
        }
        if !self.index.search_shaped(key) {
            return None;
        }
        let labels = key_labels(&key[self.index.zone_key().len()..])?;
        let ns = pods.namespace_of(peer?)?;
        if labels[1] != ns.as_bytes() {
            return None;
        }
        // X: the labels left of `<ns>.svc.<zone>`, as asked (letter case kept).
        let x = Name::from_labels(qname.iter().take(labels.len() - 2)).ok()?;
        let zone = self.index.zone();
        let svc_zone = Name::from_ascii("svc").ok()?.append_domain(zone).ok()?;
        let mut tkey = Vec::new();
        for suffix in [&svc_zone, zone] {
            let target = x.clone().append_domain(suffix).ok()?;
            name_key_fast(&target, &mut tkey);
            match self.index.lookup(guard, &target, &tkey, qtype) {
                Lookup::Authoritative { nxdomain: true, .. } => continue,
                Lookup::Authoritative { nxdomain: false, answers, additionals } => {
                    // A CNAME leaving the zone would need an upstream: leave it to the client.
                    let leaves = answers.iter().filter_map(Rec::cname_target).any(|t| {
                        name_key_fast(&t, &mut tkey);
                        !tkey.starts_with(self.index.zone_key())
                    });
                    if leaves {
                        return None;
                    }
                    let cname = Record::from_rdata(qname.clone(), self.index.ttl(), RData::CNAME(CNAME(target)));
                    let mut all = vec![Rec::O(Box::new(cname))];
                    all.extend(answers);
                    return Some((all, additionals));
                }
                Lookup::NotOurs => return None,
            }
        }
        None
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
        encode(&mut s.out, &m, Some(query), &answers, &conv(&up.authorities), &conv(&up.additionals), edns, max_size)
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
                fwd.resolve(p.chase.as_ref().map(|(_, q)| q).unwrap_or(&p.query)).await
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
                self.finish(s, qtype, rcode, tc, p.start);
            }
            None => {
                let mut m = p.meta;
                m.response_code = ResponseCode::ServFail;
                encode(&mut s.out, &m, Some(&p.query), &[], &[], &[], p.edns.as_ref(), p.max_size);
                self.finish(s, qtype, ResponseCode::ServFail, false, p.start);
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

/// Accepts TCP connections (2-byte length framing) until an unrecoverable error.
pub(crate) async fn serve_tcp(listener: std::net::TcpListener, handler: Arc<Handler>) -> std::io::Result<()> {
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
            if let Err(e) = tcp_conn(stream, peer.ip(), &handler).await {
                tracing::debug!("tcp {peer}: {e}");
            }
        });
    }
}

async fn tcp_conn(mut stream: tokio::net::TcpStream, peer: IpAddr, handler: &Handler) -> std::io::Result<()> {
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
        match handler.handle_from(&buf, true, Some(peer), &mut s) {
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
