//! HTTP endpoints: per-Service healthCheckNodePort servers (inside the node's namespace, answering
//! the local endpoint count as kube-proxy does) and the proxy's own `/healthz` + `/metrics`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

use crate::exec::Netns;
use crate::model::DesiredState;
use crate::Error;

/// The JSON body kube-proxy's service health server answers.
pub fn health_body(namespace: &str, name: &str, local_endpoints: usize) -> String {
    serde_json::json!({
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": true,
    })
    .to_string()
}

struct HcState {
    namespace: String,
    name: String,
    count: AtomicUsize,
}

async fn hc_handler(State(s): State<Arc<HcState>>) -> impl IntoResponse {
    let n = s.count.load(Ordering::Relaxed);
    let code = if n > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-content-type-options"), "nosniff"),
        ],
        health_body(&s.namespace, &s.name, n),
    )
}

struct HcServer {
    state: Arc<HcState>,
    task: JoinHandle<()>,
}

/// The healthCheckNodePort servers of this node.
pub struct HealthChecks {
    netns: Netns,
    servers: BTreeMap<u16, HcServer>,
}

impl HealthChecks {
    pub fn new(netns: Netns) -> Self {
        HealthChecks { netns, servers: BTreeMap::new() }
    }

    /// Start, update and stop servers to match `desired` (call inside the runtime).
    pub fn update(&mut self, desired: &DesiredState) {
        let mut want: BTreeMap<u16, (String, String, usize)> = BTreeMap::new();
        for sp in desired.services.values() {
            if let Some(p) = sp.health_check_node_port {
                let e = want.entry(p).or_insert_with(|| (sp.name.namespace.clone(), sp.name.name.clone(), 0));
                e.2 = e.2.max(sp.local_ready_count());
            }
        }
        self.servers.retain(|p, s| {
            let keep = want.get(p).is_some_and(|(ns, n, _)| *ns == s.state.namespace && *n == s.state.name)
                && !s.task.is_finished();
            if !keep {
                s.task.abort();
            }
            keep
        });
        for (port, (ns, name, count)) in want {
            if let Some(s) = self.servers.get(&port) {
                s.state.count.store(count, Ordering::Relaxed);
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let std_l = match self.netns.path() {
                Some(p) => yard_netns::tcp_listener_in(p, addr).map_err(Error::from),
                None => std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|_| l))
                    .map_err(Error::from),
            };
            let l = match std_l.and_then(|l| tokio::net::TcpListener::from_std(l).map_err(Error::from)) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("healthCheckNodePort {port} for {ns}/{name}: {e}");
                    continue;
                }
            };
            let state = Arc::new(HcState { namespace: ns, name, count: AtomicUsize::new(count) });
            let app = Router::new().fallback(get(hc_handler)).with_state(state.clone());
            let task = tokio::spawn(async move {
                let _ = axum::serve(l, app).await;
            });
            self.servers.insert(port, HcServer { state, task });
        }
    }

    pub fn stop(&mut self) {
        for (_, s) in std::mem::take(&mut self.servers) {
            s.task.abort();
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Prometheus histogram with kube-proxy's exponential buckets (1 ms doubling, 15 buckets).
#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

const BUCKETS: [f64; 15] =
    [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
    fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", self.counts.get(i).copied().unwrap_or(0));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// The proxy's metrics, with kube-proxy's names.
#[derive(Default)]
pub struct Metrics {
    sync: Mutex<Histogram>,
    programming: Mutex<Histogram>,
    failures: AtomicU64,
    last_sync: AtomicU64,
    /// "iptables" | "nftables" | "userspace": picks the failure counter's name.
    pub mode: Mutex<String>,
}

impl Metrics {
    pub fn observe_sync(&self, d: Duration) {
        self.sync.lock().unwrap().observe(d.as_secs_f64());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        self.last_sync.store(now, Ordering::Relaxed);
    }
    pub fn observe_programming(&self, d: Duration) {
        self.programming.lock().unwrap().observe(d.as_secs_f64());
    }
    pub fn sync_failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
    pub fn last_sync_unix(&self) -> u64 {
        self.last_sync.load(Ordering::Relaxed)
    }
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.sync.lock().unwrap().render(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            &mut out,
        );
        self.programming.lock().unwrap().render(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            &mut out,
        );
        let mode = self.mode.lock().unwrap().clone();
        let fail = match mode.as_str() {
            "iptables" => "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "nftables" => "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            _ => "kubeproxy_sync_proxy_rules_failures_total",
        };
        out.push_str(&format!(
            "# HELP {fail} Cumulative proxy rules sync failures\n# TYPE {fail} counter\n{fail} {}\n",
            self.failures.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced\n# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\nkubeproxy_sync_proxy_rules_last_timestamp_seconds {}\n",
            self.last_sync_unix()
        ));
        out
    }
}

async fn healthz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let last = m.last_sync_unix();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let ok = last > 0;
    let body = serde_json::json!({
        "lastUpdated": jiff::Timestamp::from_second(last as i64).map(|t| t.to_string()).unwrap_or_default(),
        "currentTime": jiff::Timestamp::from_second(now as i64).map(|t| t.to_string()).unwrap_or_default(),
    })
    .to_string();
    (
        if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE },
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render())
}

/// Serve `/healthz` and `/metrics` on `addr` (in the current namespace) until aborted.
pub async fn serve(addr: SocketAddr, m: Arc<Metrics>) -> Result<JoinHandle<()>, Error> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(m);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_and_metrics() {
        let b: serde_json::Value = serde_json::from_str(&health_body("default", "lb", 2)).unwrap();
        assert_eq!(b["localEndpoints"], 2);
        assert_eq!(b["service"]["name"], "lb");
        let m = Metrics::default();
        *m.mode.lock().unwrap() = "nftables".into();
        m.observe_sync(Duration::from_millis(3));
        m.sync_failed();
        let t = m.render();
        assert!(t.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1"), "{t}");
        assert!(t.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 0"), "{t}");
        assert!(t.contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 1"), "{t}");
    }
}
