//! The etcd v3 backend: etcd's revision is the store revision (and so `resourceVersion`); every
//! write is one etcd Txn whose compares are the ops' preconditions on create/mod revisions. An
//! update or delete carries an else branch that reads the keys back, so a failed CAS reports which
//! key lost and its state; creates only carry none (they fail only on an existing key) and read
//! the keys after a failure. KV calls go through `etcd_unary` (h2 straight, one write per
//! request). Watches are etcd watches (with previous values, except for followers that need only
//! keys and new values) fed into a `Watcher`; they resume on another member from the last
//! delivered revision when a member goes away, and end when etcd reports the start revision
//! compacted. An optional background task compacts history on a schedule, as kube-apiserver does
//! (each tick compacts to the revision seen on the previous tick).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbRangeRequest, PbRangeResponse, PbTxnRequest, PbTxnResponse,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, PutOptions, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::etcd_unary::{CallError, UnaryKv};
use crate::memwatch::WatchFeed;
use crate::{Event, EventKind, KeyValue, ListPage, Op, Result, Store, StoreError, WatchStream};

/// How to reach etcd: `--store etcd://host:port[,host:port...]` plus TLS files and a key prefix.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// CA bundle to verify the members (enables TLS).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Prepended to every key (the API server's keys already start with `/registry/`).
    pub prefix: String,
    /// Compact history older than this (None: never compact automatically).
    pub compaction_interval: Option<Duration>,
}

impl EtcdConfig {
    /// Parse `etcd://host:port[,host:port...]` (also `etcds://` for TLS with the system roots).
    pub fn from_url(url: &str) -> Result<Self> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("etcd://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("etcds://") {
            (true, r)
        } else {
            return Err(StoreError::Backend(format!("not an etcd URL: {url} (want etcd://host:port[,host:port...])")));
        };
        let endpoints: Vec<String> =
            rest.trim_end_matches('/').split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if endpoints.is_empty() {
            return Err(StoreError::Backend(format!("no etcd endpoints in {url}")));
        }
        let mut cfg = EtcdConfig { endpoints, ..Default::default() };
        if tls {
            cfg.ca_file = Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
        }
        Ok(cfg)
    }
}

/// A store kept in an etcd v3 cluster; several API servers may share it.
pub struct EtcdStore {
    /// Range, Txn and Compact.
    kv: Arc<UnaryKv>,
    /// Watches.
    client: Client,
    prefix: String,
    compactor: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(t) = self.compactor.take() {
            t.abort();
        }
    }
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// Largest response accepted (a full listing of a big resource).
const MAX_MESSAGE: usize = 1 << 30;
/// Reads are retried on member failure for this long.
const READ_RETRY: Duration = Duration::from_secs(10);

/// A rustls client configuration trusting the certificates in `ca` (PEM; required) and
/// presenting `identity` (certificate and key PEM) when given.
fn client_tls(
    ca: Option<&[u8]>,
    identity: Option<&(Vec<u8>, Vec<u8>)>,
) -> std::result::Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pemfile::certs(&mut ca.ok_or("TLS to etcd needs a CA file")?)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("CA file: {e}"))?;
    // A system bundle (`etcds://`) may hold certificates rustls cannot use; those are skipped.
    let (added, _skipped) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("CA file holds no usable certificate".into());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = rustls_pemfile::certs(&mut cert.as_slice())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = rustls_pemfile::private_key(&mut key.as_slice())
                .map_err(|e| format!("client key: {e}"))?
                .ok_or("client key file holds no key")?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    // gRPC over TLS is HTTP/2, agreed by ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The first key after every key starting with `p` (etcd's range end for a prefix).
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether a KV call failed because a member or connection is gone, so another may answer.
fn transient(e: &CallError) -> bool {
    match e {
        CallError::Status(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
            ) && !s.message().contains("compacted")
                && !s.message().contains("future revision")
        }
        CallError::NotSent(..) | CallError::Lost(..) => true,
    }
}

/// Whether the request certainly never reached a member's raft log (safe to resend a write).
fn not_sent(e: &CallError) -> bool {
    match e {
        CallError::NotSent(..) => true,
        // Refused up front by a member without a leader (the `hasleader` header).
        CallError::Status(s) => s.message().contains("no leader"),
        CallError::Lost(..) => false,
    }
}

fn is_compacted(e: &CallError) -> bool {
    matches!(e, CallError::Status(s) if s.message().contains("required revision has been compacted"))
}

/// A range request over `[key, range_end)` (just `key` when `range_end` is empty).
fn range_request(key: Vec<u8>, range_end: Vec<u8>) -> PbRangeRequest {
    PbRangeRequest { key, range_end, ..Default::default() }
}

impl EtcdStore {
    /// Connect to the members named by `cfg` and check that the cluster answers.
    pub async fn connect(cfg: EtcdConfig) -> Result<Self> {
        let tls = cfg.ca_file.is_some() || cfg.cert_file.is_some();
        let scheme = if tls { "https" } else { "http" };
        let endpoints: Vec<String> = cfg.endpoints.iter().map(|e| format!("{scheme}://{e}")).collect();
        let (connect_timeout, keep_alive) = (Duration::from_secs(2), (Duration::from_secs(5), Duration::from_secs(3)));
        let mut opts = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(connect_timeout)
            .with_keep_alive(keep_alive.0, keep_alive.1)
            .with_keep_alive_while_idle(true);
        let mut rustls_config = None;
        if tls {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| backend(format!("reading {}: {e}", p.display())));
            let ca = cfg.ca_file.as_ref().map(read).transpose()?;
            let identity = match (&cfg.cert_file, &cfg.key_file) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                (None, None) => None,
                _ => return Err(backend("--etcd-certfile and --etcd-keyfile go together")),
            };
            let mut t = etcd_client::TlsOptions::new();
            if let Some(pem) = &ca {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(pem.clone()));
            }
            if let Some((cert, key)) = &identity {
                t = t.identity(etcd_client::Identity::from_pem(cert.clone(), key.clone()));
            }
            opts = opts.with_tls(t);
            rustls_config = Some(Arc::new(client_tls(ca.as_deref(), identity.as_ref()).map_err(backend)?));
        }
        let kv = UnaryKv::new(
            &cfg.endpoints,
            crate::etcd_unary::Settings { tls: rustls_config, connect_timeout, keep_alive, max_message: MAX_MESSAGE },
        )
        .map_err(backend)?;
        let client = Client::connect(&endpoints, Some(opts)).await.map_err(backend)?;
        let mut store = Self { kv: Arc::new(kv), client, prefix: cfg.prefix.clone(), compactor: None };
        // Fail fast when no member answers.
        store.revision().await?;
        // Writes go to the leader from the first one.
        store.kv.look_up_leader().await;
        if let Some(every) = cfg.compaction_interval {
            store.compactor = Some(tokio::spawn(compact_loop(store.clone_handle(), every)));
        }
        Ok(store)
    }

    /// The `host:port` of the member that writes are sent to: the raft leader as last looked up
    /// (`None` while none is known; writes then go round-robin).
    pub fn leader(&self) -> Option<String> {
        self.kv.leader_addr().map(String::from)
    }

    fn clone_handle(&self) -> Self {
        Self { kv: self.kv.clone(), client: self.client.clone(), prefix: self.prefix.clone(), compactor: None }
    }

    fn full(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    fn local(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        let key = kv.key().strip_prefix(self.prefix.as_bytes()).unwrap_or(kv.key());
        KeyValue {
            key: String::from_utf8_lossy(key).into_owned(),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }

    /// A read (`method` is Range, or Txn with reads only), retried on other members while they fail.
    async fn read<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: &'static str,
        req: &Req,
    ) -> Result<Resp> {
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.kv.call(method, req).await {
                Ok(r) => return Ok(r),
                Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) if is_compacted(&e) => return Err(StoreError::Expired { requested: 0, oldest: 0 }),
                Err(e) => return Err(backend(e)),
            }
        }
    }

    /// A range read, retried as `read` is.
    async fn range(&self, req: PbRangeRequest) -> Result<etcd_client::GetResponse> {
        Ok(etcd_client::GetResponse(self.read::<_, PbRangeResponse>("/etcdserverpb.KV/Range", &req).await?))
    }

    async fn do_txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        crate::check_distinct(&ops)?;
        let mut compares = Vec::with_capacity(ops.len());
        let mut then = Vec::with_capacity(ops.len());
        let mut otherwise = Vec::with_capacity(ops.len());
        for op in &ops {
            let k = self.full(op.key());
            compares.push(match op {
                Op::Create { .. } => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
                Op::Update { expect: Some(e), .. } | Op::Delete { expect: Some(e), .. } => {
                    Compare::mod_revision(k.clone(), CompareOp::Equal, *e)
                }
                Op::Update { expect: None, .. } | Op::Delete { expect: None, .. } => {
                    Compare::mod_revision(k.clone(), CompareOp::Greater, 0)
                }
            });
            then.push(match op {
                // A create has no previous value to read back; an update needs its create revision.
                Op::Create { value, .. } => TxnOp::put(k.clone(), value.to_vec(), None),
                Op::Update { value, .. } => {
                    TxnOp::put(k.clone(), value.to_vec(), Some(PutOptions::new().with_prev_key()))
                }
                Op::Delete { .. } => TxnOp::delete(k.clone(), Some(DeleteOptions::new().with_prev_key())),
            });
            otherwise.push(TxnOp::get(k, None));
        }
        // Creates only (the common case) fail only when a key exists; as kube-apiserver does, such
        // a transaction carries no reads for that case (every member would store and decode them
        // with each entry), and the keys are read after a failure instead.
        let creates_only = ops.iter().all(|o| matches!(o, Op::Create { .. }));
        let mut txn = etcd_client::Txn::new().when(compares).and_then(then);
        let mut reads_after_failure = Vec::new();
        if creates_only {
            reads_after_failure = otherwise;
        } else {
            txn = txn.or_else(otherwise);
        }
        let txn = PbTxnRequest::from(txn);
        let mut pause = Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        // Set when a member failed while the request was in flight: it may have been applied.
        let mut uncertain: Option<CallError> = None;
        let resp = loop {
            match self.kv.call_write::<_, PbTxnResponse>("/etcdserverpb.KV/Txn", &txn).await {
                Ok(r) => {
                    self.kv.saw_term(r.header.as_ref().map_or(0, |h| h.raft_term));
                    break etcd_client::TxnResponse(r);
                }
                Err(e) if (not_sent(&e) || transient(&e)) && tokio::time::Instant::now() < deadline => {
                    if !not_sent(&e) && uncertain.is_none() {
                        uncertain = Some(e);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(backend(uncertain.unwrap_or(e))),
            }
        };
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut responses = resp.op_responses();
        if resp.succeeded() {
            let mut out = Vec::with_capacity(ops.len());
            for (op, r) in ops.into_iter().zip(responses) {
                out.push(match (op, r) {
                    (Op::Create { key, value }, _) => KeyValue { key, value, create_revision: rev, mod_revision: rev },
                    (Op::Update { key, value, .. }, TxnOpResponse::Put(p)) => {
                        let create = p.prev_key().map(|k| k.create_revision()).unwrap_or(rev);
                        KeyValue { key, value, create_revision: create, mod_revision: rev }
                    }
                    (Op::Delete { key, .. }, TxnOpResponse::Delete(d)) => {
                        let prev = d.prev_kvs().first().map(|k| self.local(k));
                        match prev {
                            Some(p) => KeyValue { mod_revision: rev, ..p },
                            None => KeyValue { key, value: Bytes::new(), create_revision: 0, mod_revision: rev },
                        }
                    }
                    (op, r) => return Err(backend(format!("unexpected txn response {r:?} for {op:?}"))),
                });
            }
            return Ok(out);
        }
        if creates_only {
            // The keys' state now (a later revision than the failed compare's): reads only,
            // with no compares, always take the success branch.
            let read = PbTxnRequest::from(etcd_client::Txn::new().and_then(reads_after_failure));
            let r: PbTxnResponse = self.read("/etcdserverpb.KV/Txn", &read).await?;
            responses = etcd_client::TxnResponse(r).op_responses();
        }
        if let Some(first) = uncertain {
            // The resend lost its compares: if every key holds exactly what this transaction
            // wrote, at one revision, it was the first attempt that applied.
            return self.applied_earlier(&ops, &responses).ok_or_else(|| backend(first));
        }
        // Report the first op whose precondition failed, with the key's state at that revision.
        for (op, r) in ops.iter().zip(responses) {
            let TxnOpResponse::Get(g) = r else { continue };
            let cur = g.kvs().first().map(|k| self.local(k));
            let key = op.key().to_string();
            match (op, cur) {
                (Op::Create { .. }, Some(_)) => return Err(StoreError::AlreadyExists(key)),
                (Op::Create { .. }, None) => {}
                (_, None) => return Err(StoreError::NotFound(key)),
                (Op::Update { expect: Some(e), .. } | Op::Delete { expect: Some(e), .. }, Some(c))
                    if *e != c.mod_revision =>
                {
                    return Err(StoreError::Conflict { key, current: Some(Box::new(c)) })
                }
                _ => {}
            }
        }
        if creates_only {
            // The key that was there has gone again since: try again.
            return Box::pin(self.do_txn(ops)).await;
        }
        Err(backend("transaction failed without a failing compare"))
    }

    /// After a resent transaction failed its compares: the results of the first attempt, if
    /// the keys show it applied (deletes cannot be told apart from someone else's, so a
    /// transaction with a delete is never taken as applied).
    fn applied_earlier(&self, ops: &[Op], responses: &[TxnOpResponse]) -> Option<Vec<KeyValue>> {
        let mut out = Vec::with_capacity(ops.len());
        for (op, r) in ops.iter().zip(responses) {
            let TxnOpResponse::Get(g) = r else { return None };
            let cur = g.kvs().first().map(|k| self.local(k))?;
            match op {
                Op::Create { value, .. } | Op::Update { value, .. } if *value == cur.value => out.push(cur),
                _ => return None,
            }
        }
        let rev = out.first()?.mod_revision;
        out.iter().all(|k| k.mod_revision == rev).then_some(out)
    }

    /// A watch from `after`; `prev`: whether events carry the previous value.
    async fn do_watch(&self, prefix: &str, after: i64, prev: bool) -> Result<WatchStream> {
        // A watch from a compacted revision would be cancelled by etcd shortly after creation;
        // reading at the first wanted revision tells synchronously (a future revision is fine).
        let start = after + 1;
        let key = self.full(prefix);
        let end = prefix_end(&key);
        let probe = PbRangeRequest { count_only: true, revision: start, ..range_request(key, end) };
        match self.kv.call::<_, PbRangeResponse>("/etcdserverpb.KV/Range", &probe).await {
            Ok(_) => {}
            Err(e) if is_compacted(&e) => {
                return Err(StoreError::Expired {
                    requested: after,
                    oldest: self.compacted_revision().await.unwrap_or(start),
                })
            }
            Err(e) if e.to_string().contains("future revision") => {}
            Err(e) if transient(&e) => {}
            Err(e) => return Err(backend(e)),
        }
        let (feed, watcher) = WatchFeed::new();
        tokio::spawn(watch_task(self.clone_handle(), self.full(prefix), start, prev, feed));
        Ok(watcher)
    }

    async fn list_then_watch(&self, prefix: String, prev: bool) -> Result<(ListPage, WatchStream)> {
        let page = self.list(&prefix, None, None).await?;
        let w = self.do_watch(&prefix, page.revision, prev).await?;
        Ok((page, w))
    }

    /// A page of `prefix` after `start_after` at `revision` (0: the latest). etcd's Range counts
    /// every key in the range, so `remaining` is exact.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        revision: i64,
    ) -> Result<ListPage> {
        let full_prefix = self.full(prefix);
        let end = prefix_end(&full_prefix);
        let from = match start_after {
            Some(s) => {
                let mut k = self.full(s);
                k.push(0);
                k
            }
            None => full_prefix,
        };
        let limit_plus_one = limit.map_or(0, |l| l as i64 + 1);
        let r = self.range(PbRangeRequest { limit: limit_plus_one, revision, ..range_request(from, end) }).await?;
        let revision = if revision > 0 { revision } else { r.header().map(|h| h.revision()).unwrap_or(0) };
        let mut items: Vec<KeyValue> = r.kvs().iter().map(|kv| self.local(kv)).collect();
        let mut more = None;
        let mut remaining = 0;
        if let Some(l) = limit {
            if items.len() > l {
                items.truncate(l);
                more = items.last().map(|kv| kv.key.clone());
                remaining = r.count() - l as i64;
            }
        }
        Ok(ListPage { items, revision, more, remaining })
    }

    /// The revision etcd has compacted to, learned from a watch it refuses.
    async fn compacted_revision(&self) -> Option<i64> {
        let mut wc = self.client.watch_client();
        let mut s = wc.watch(self.full("\u{0}"), Some(WatchOptions::new().with_start_revision(1))).await.ok()?;
        tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(m)) = s.message().await {
                if m.compact_revision() > 0 {
                    return Some(m.compact_revision());
                }
                if m.canceled() {
                    return None;
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    fn event(&self, ev: &etcd_client::Event) -> Option<Event> {
        let kv = ev.kv()?;
        let prev = ev.prev_kv().map(|p| self.local(p));
        match ev.event_type() {
            etcd_client::EventType::Put => {
                let new = self.local(kv);
                let prev = if kv.version() == 1 { None } else { prev };
                Some(Event { kind: EventKind::Put, kv: new, prev })
            }
            etcd_client::EventType::Delete => {
                let gone = match &prev {
                    Some(p) => KeyValue { mod_revision: kv.mod_revision(), ..p.clone() },
                    None => KeyValue { mod_revision: kv.mod_revision(), ..self.local(kv) },
                };
                Some(Event { kind: EventKind::Delete, kv: gone, prev })
            }
        }
    }
}

/// Feed `feed` from etcd watches on `key`'s prefix, from `start` on, re-watching from the next
/// revision when a stream breaks (member failure); ends on compaction or when the watcher is dropped.
async fn watch_task(store: EtcdStore, key: Vec<u8>, mut start: i64, prev: bool, feed: WatchFeed) {
    let give_up_after = Duration::from_secs(30);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        if failing_since.is_some_and(|t| t.elapsed() > give_up_after) {
            tracing::warn!("etcd watch on {} ends: no member answers", String::from_utf8_lossy(&key));
            return;
        }
        let mut opts = WatchOptions::new().with_prefix().with_start_revision(start).with_progress_notify();
        if prev {
            opts = opts.with_prev_key();
        }
        let mut wc = store.client.watch_client();
        let mut stream = tokio::select! {
            _ = feed.closed() => return,
            r = wc.watch(key.clone(), Some(opts)) => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("etcd watch: {e}");
                    failing_since.get_or_insert_with(tokio::time::Instant::now);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        loop {
            let msg = tokio::select! {
                _ = feed.closed() => return,
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        // History the watcher still needed is gone: end it (the client re-lists).
                        tracing::debug!("etcd watch from {start} compacted at {}", resp.compact_revision());
                        return;
                    }
                    if resp.canceled() {
                        tracing::debug!("etcd watch cancelled: {}", resp.cancel_reason());
                        break;
                    }
                    failing_since = None;
                    if !resp.created() && resp.events().is_empty() {
                        // A progress notification: everything up to its revision was delivered,
                        // so a re-watch need not reach back before it (it may be compacted).
                        if let Some(h) = resp.header() {
                            start = start.max(h.revision() + 1);
                        }
                    }
                    for ev in resp.events() {
                        if let Some(e) = store.event(ev) {
                            start = e.revision() + 1;
                            if !feed.send(e) {
                                return;
                            }
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        failing_since.get_or_insert_with(tokio::time::Instant::now);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every `every`, compact to the revision seen one tick earlier, so watchers keep at least one
/// interval of history. Several API servers may do this at once: compacting twice is harmless.
async fn compact_loop(store: EtcdStore, every: Duration) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(every).await;
        if let Some(rev) = previous {
            if let Err(e) = store.compact(rev).await {
                tracing::warn!("etcd compaction to {rev}: {e}");
            }
        }
        previous = store.revision().await.ok();
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let k = self.full(key);
        async move {
            let r = self.range(range_request(k, Vec::new())).await?;
            Ok(r.kvs().first().map(|kv| self.local(kv)))
        }
        .boxed()
    }

    fn get_stale(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let k = self.full(key);
        async move {
            let r = self.range(PbRangeRequest { serializable: true, ..range_request(k, Vec::new()) }).await?;
            Ok(r.kvs().first().map(|kv| self.local(kv)))
        }
        .boxed()
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> BoxFuture<'_, Result<ListPage>> {
        let (prefix, start_after) = (prefix.to_string(), start_after.map(str::to_string));
        async move { self.list_page(&prefix, start_after.as_deref(), limit, 0).await }.boxed()
    }

    fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        revision: i64,
    ) -> BoxFuture<'_, Result<ListPage>> {
        let (prefix, start_after) = (prefix.to_string(), start_after.map(str::to_string));
        async move {
            if revision <= 0 {
                return Err(backend(format!("invalid revision {revision}")));
            }
            match self.list_page(&prefix, start_after.as_deref(), limit, revision).await {
                Err(StoreError::Expired { .. }) => Err(StoreError::Expired {
                    requested: revision,
                    oldest: self.compacted_revision().await.unwrap_or(revision),
                }),
                Err(StoreError::Backend(m)) if m.contains("future revision") => {
                    Err(StoreError::FutureRevision { requested: revision, current: self.revision().await? })
                }
                other => other,
            }
        }
        .boxed()
    }

    fn count(&self, prefix: &str) -> BoxFuture<'_, Result<i64>> {
        let k = self.full(prefix);
        let end = prefix_end(&k);
        async move { Ok(self.range(PbRangeRequest { count_only: true, ..range_request(k, end) }).await?.count()) }
            .boxed()
    }

    fn write(&self, op: Op) -> BoxFuture<'_, Result<KeyValue>> {
        async move {
            let mut v = self.do_txn(vec![op]).await?;
            v.pop().ok_or_else(|| backend("empty transaction response"))
        }
        .boxed()
    }

    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<Vec<KeyValue>>> {
        self.do_txn(ops).boxed()
    }

    fn watch(&self, prefix: &str, after: i64) -> BoxFuture<'_, Result<WatchStream>> {
        let prefix = prefix.to_string();
        async move { self.do_watch(&prefix, after, true).await }.boxed()
    }

    fn list_and_watch(&self, prefix: &str) -> BoxFuture<'_, Result<(ListPage, WatchStream)>> {
        self.list_then_watch(prefix.to_string(), true).boxed()
    }

    fn list_and_follow(&self, prefix: &str) -> BoxFuture<'_, Result<(ListPage, WatchStream)>> {
        self.list_then_watch(prefix.to_string(), false).boxed()
    }

    fn revision(&self) -> BoxFuture<'_, Result<i64>> {
        // A count-only read of one key gives the cluster's current revision in its header.
        let k = self.full("\u{0}");
        async move {
            let r = self.range(PbRangeRequest { count_only: true, ..range_request(k, Vec::new()) }).await?;
            Ok(r.header().map(|h| h.revision()).unwrap_or(0))
        }
        .boxed()
    }

    fn compact(&self, revision: i64) -> BoxFuture<'_, Result<()>> {
        async move {
            match self
                .kv
                .call_write::<_, PbCompactionResponse>(
                    "/etcdserverpb.KV/Compact",
                    &PbCompactionRequest { revision, physical: false },
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_compacted(&e) => Ok(()),
                Err(e) => Err(backend(e)),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_with_unusable_certificates_still_gives_its_usable_ones() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["etcd".to_string()]).unwrap().self_signed(&key).unwrap();
        // A PEM block whose contents are not a certificate, as system bundles may hold.
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let bundle = format!("{junk}{}", ca.pem());
        let cfg = client_tls(Some(bundle.as_bytes()), None).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(client_tls(Some(junk.as_bytes()), None).is_err());
        assert!(client_tls(None, None).is_err());
    }
}
