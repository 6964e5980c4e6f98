//! Query counters and a latency histogram, rendered as Prometheus text, plus the HTTP endpoints
//! `/metrics`, `/health` and `/ready`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::index::Index;
use crate::Error;

const QTYPES: [(&str, Option<RecordType>); 11] = [
    ("A", Some(RecordType::A)),
    ("AAAA", Some(RecordType::AAAA)),
    ("SRV", Some(RecordType::SRV)),
    ("PTR", Some(RecordType::PTR)),
    ("CNAME", Some(RecordType::CNAME)),
    ("TXT", Some(RecordType::TXT)),
    ("SOA", Some(RecordType::SOA)),
    ("NS", Some(RecordType::NS)),
    ("ANY", Some(RecordType::ANY)),
    ("MX", Some(RecordType::MX)),
    ("other", None),
];

const RCODES: [(&str, Option<ResponseCode>); 7] = [
    ("NOERROR", Some(ResponseCode::NoError)),
    ("FORMERR", Some(ResponseCode::FormErr)),
    ("SERVFAIL", Some(ResponseCode::ServFail)),
    ("NXDOMAIN", Some(ResponseCode::NXDomain)),
    ("NOTIMP", Some(ResponseCode::NotImp)),
    ("REFUSED", Some(ResponseCode::Refused)),
    ("other", None),
];

/// Histogram bucket upper bounds, seconds.
const BUCKETS: [f64; 14] =
    [0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0];

/// Process-wide DNS counters (lock-free).
#[derive(Debug)]
pub struct Metrics {
    by_type_rcode: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// Queries sent upstream.
    pub forwarded: AtomicU64,
    /// Forwarded queries answered from the cache.
    pub cache_hits: AtomicU64,
    /// Replies with the TC bit.
    pub truncated: AtomicU64,
    /// Packets dropped without reply.
    pub dropped: AtomicU64,
    /// Search-path queries answered with the first existing expansion (autopath).
    pub autopath: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            by_type_rcode: (0..QTYPES.len() * RCODES.len()).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_ns: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            autopath: AtomicU64::new(0),
        }
    }
}

fn qtype_index(t: RecordType) -> usize {
    QTYPES.iter().position(|(_, q)| *q == Some(t)).unwrap_or(QTYPES.len() - 1)
}

fn rcode_index(r: ResponseCode) -> usize {
    RCODES.iter().position(|(_, c)| *c == Some(r)).unwrap_or(RCODES.len() - 1)
}

/// The slot of (query type, response code) in the counters.
pub(crate) fn slot(qtype: RecordType, rcode: ResponseCode) -> usize {
    qtype_index(qtype) * RCODES.len() + rcode_index(rcode)
}

fn bucket(elapsed: Duration) -> Option<usize> {
    let secs = elapsed.as_secs_f64();
    BUCKETS.iter().position(|bound| secs <= *bound)
}

/// Counters of one worker thread, added to the shared [`Metrics`] once per batch of packets
/// (shared atomics written by every query of every thread would bounce between cores).
#[derive(Debug)]
pub(crate) struct LocalStats {
    by_type_rcode: Vec<u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_ns: u64,
    truncated: u64,
}

impl Default for LocalStats {
    fn default() -> Self {
        LocalStats {
            by_type_rcode: vec![0; QTYPES.len() * RCODES.len()],
            buckets: [0; BUCKETS.len()],
            count: 0,
            sum_ns: 0,
            truncated: 0,
        }
    }
}

impl LocalStats {
    /// Counts one answered query (see [`slot`]).
    pub(crate) fn record(&mut self, slot: usize, truncated: bool, elapsed: Duration) {
        self.by_type_rcode[slot] += 1;
        if let Some(b) = bucket(elapsed) {
            self.buckets[b] += 1;
        }
        self.count += 1;
        self.sum_ns += elapsed.as_nanos() as u64;
        self.truncated += u64::from(truncated);
    }
}

impl Metrics {
    /// Counts one answered query.
    pub fn record(&self, qtype: RecordType, rcode: ResponseCode, elapsed: Duration) {
        self.record_slot(slot(qtype, rcode), elapsed);
    }

    /// Counts one answered query by its [`slot`].
    pub(crate) fn record_slot(&self, slot: usize, elapsed: Duration) {
        self.by_type_rcode[slot].fetch_add(1, Ordering::Relaxed);
        if let Some(b) = bucket(elapsed) {
            self.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Adds a worker's counters and resets them.
    pub(crate) fn flush(&self, l: &mut LocalStats) {
        if l.count == 0 {
            return;
        }
        for (shared, v) in self.by_type_rcode.iter().zip(l.by_type_rcode.iter_mut()) {
            if *v > 0 {
                shared.fetch_add(std::mem::take(v), Ordering::Relaxed);
            }
        }
        for (shared, v) in self.buckets.iter().zip(l.buckets.iter_mut()) {
            if *v > 0 {
                shared.fetch_add(std::mem::take(v), Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(std::mem::take(&mut l.count), Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(std::mem::take(&mut l.sum_ns), Ordering::Relaxed);
        let t = std::mem::take(&mut l.truncated);
        if t > 0 {
            self.truncated.fetch_add(t, Ordering::Relaxed);
        }
    }

    /// Count of queries of `qtype` answered with `rcode`.
    pub fn count(&self, qtype: RecordType, rcode: ResponseCode) -> u64 {
        self.by_type_rcode[qtype_index(qtype) * RCODES.len() + rcode_index(rcode)].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn render(&self, index: Option<&Index>) -> String {
        let mut s = String::with_capacity(4096);
        s.push_str("# HELP yard_dns_requests_total DNS queries answered, by query type and response code.\n");
        s.push_str("# TYPE yard_dns_requests_total counter\n");
        for (ti, (tname, _)) in QTYPES.iter().enumerate() {
            for (ri, (rname, _)) in RCODES.iter().enumerate() {
                let v = self.by_type_rcode[ti * RCODES.len() + ri].load(Ordering::Relaxed);
                if v > 0 {
                    let _ = writeln!(s, "yard_dns_requests_total{{type=\"{tname}\",rcode=\"{rname}\"}} {v}");
                }
            }
        }
        s.push_str("# HELP yard_dns_request_duration_seconds Time from receiving a query to having its reply.\n");
        s.push_str("# TYPE yard_dns_request_duration_seconds histogram\n");
        let mut cum = 0;
        for (b, bound) in self.buckets.iter().zip(BUCKETS.iter()) {
            cum += b.load(Ordering::Relaxed);
            let _ = writeln!(s, "yard_dns_request_duration_seconds_bucket{{le=\"{bound}\"}} {cum}");
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(s, "yard_dns_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(s, "yard_dns_request_duration_seconds_sum {sum}");
        let _ = writeln!(s, "yard_dns_request_duration_seconds_count {count}");
        for (name, help, v) in [
            ("yard_dns_forward_requests_total", "Queries forwarded upstream.", &self.forwarded),
            ("yard_dns_cache_hits_total", "Forwarded queries answered from the cache.", &self.cache_hits),
            ("yard_dns_truncated_responses_total", "Replies sent with the TC bit.", &self.truncated),
            ("yard_dns_dropped_total", "Packets dropped without a reply.", &self.dropped),
            (
                "yard_dns_autopath_total",
                "Search-path queries answered with the first existing expansion.",
                &self.autopath,
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        if let Some(index) = index {
            let _ = writeln!(
                s,
                "# HELP yard_dns_index_names Names held by the index.\n# TYPE yard_dns_index_names gauge\nyard_dns_index_names {}",
                index.name_count()
            );
            let _ = writeln!(
                s,
                "# HELP yard_dns_synced Whether the initial lists went in.\n# TYPE yard_dns_synced gauge\nyard_dns_synced {}",
                u8::from(index.is_synced())
            );
        }
        s
    }
}

/// Serves `/metrics`, `/health` and `/ready` on `addr` until the task is dropped.
pub async fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>, index: Arc<Index>) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_http_on(listener, metrics, index).await
}

/// Same as [`serve_http`] on an already bound listener.
pub async fn serve_http_on(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    index: Arc<Index>,
) -> Result<(), Error> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let m = metrics.clone();
    let i1 = index.clone();
    let i2 = index.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                let i = i1.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render(Some(&i))) }
            }),
        )
        .route("/health", get(|| async { "OK" }))
        .route(
            "/ready",
            get(move || {
                let i = i2.clone();
                async move {
                    if i.is_synced() {
                        (StatusCode::OK, "OK")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not synced")
                    }
                }
            }),
        );
    axum::serve(listener, app).await?;
    Ok(())
}
