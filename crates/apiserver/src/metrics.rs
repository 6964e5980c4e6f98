//! Prometheus metrics with upstream's names: `apiserver_request_total` and
//! `apiserver_request_duration_seconds` by verb and resource.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;

const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    n: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Hist>>,
}

impl Metrics {
    pub fn observe(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        *self.requests.lock().expect("metrics").entry((verb.to_string(), resource.to_string(), code)).or_default() += 1;
        if verb == "WATCH" || verb == "CONNECT" {
            return;
        }
        let mut l = self.latency.lock().expect("metrics");
        let h = l.entry((verb.to_string(), resource.to_string())).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += s;
        h.n += 1;
    }

    pub fn render(&self) -> Response {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, resource and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for ((verb, res, code), n) in self.requests.lock().expect("metrics").iter() {
            let _ = writeln!(out, "apiserver_request_total{{code=\"{code}\",resource=\"{res}\",verb=\"{verb}\"}} {n}");
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb and resource.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, res), h) in self.latency.lock().expect("metrics").iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{resource=\"{res}\",verb=\"{verb}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{resource=\"{res}\",verb=\"{verb}\",le=\"+Inf\"}} {}",
                h.n
            );
            let _ =
                writeln!(out, "apiserver_request_duration_seconds_sum{{resource=\"{res}\",verb=\"{verb}\"}} {}", h.sum);
            let _ =
                writeln!(out, "apiserver_request_duration_seconds_count{{resource=\"{res}\",verb=\"{verb}\"}} {}", h.n);
        }
        Response::builder()
            .status(200)
            .header("content-type", "text/plain; version=0.0.4")
            .body(Body::from(out))
            .expect("response")
    }
}
