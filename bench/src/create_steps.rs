//! Where the API server's CPU goes in a create, step by step, on one thread: the JSON steps of
//! the create path (decoding the body, the typed round trip that drops unknown fields, the
//! unknown-field walk, create-time metadata, defaults, validation, managedFields, encoding the
//! stored bytes, freeing the trees), timed over N creates of the body kube-rs sends for a Service
//! and for a ConfigMap. The ClusterIP is set by hand (the allocator needs a store).
//!
//! No peer and no target: this splits the per-create API server CPU that `etcd-bench` measures,
//! to size what a create path without `serde_json::Value` could save. Per step it prints the mean
//! in µs over all N and the share of the steps' sum.
//!
//! Usage: cargo run --release -p yard-bench --bin create-steps -- [N=20000]

/// The allocator of the `yard` binary.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use serde_json::{json, Value};
use yard_apiserver::objects;
use yard_apiserver::registry;

const STEPS: [&str; 10] = [
    "decode body",
    "typed round trip",
    "unknown fields",
    "create metadata",
    "defaults",
    "(ClusterIP)",
    "validate",
    "managedFields",
    "encode",
    "free",
];

fn run(plural: &str, n: usize, body: impl Fn(usize) -> Vec<u8>) {
    let r = registry::find("", "v1", plural).expect("resource");
    let mut spent = [Duration::ZERO; STEPS.len()];
    let bodies: Vec<Vec<u8>> = (0..n).map(&body).collect();
    for (i, b) in bodies.iter().enumerate() {
        let mut t = Instant::now();
        let mut lap = |k: usize| {
            let now = Instant::now();
            spent[k] += now - t;
            t = now;
        };
        let (input, _dups) = objects::decode_body(b, "application/json").expect("decode");
        lap(0);
        let mut obj = objects::normalize(r, &input).expect("normalize");
        lap(1);
        assert!(objects::unknown_fields(&input, &obj).is_empty());
        lap(2);
        let now = objects::now_rfc3339();
        {
            let m = objects::meta_mut(&mut obj);
            m.insert("namespace".into(), json!("default"));
            m.insert("uid".into(), json!(objects::new_uid()));
            m.insert("creationTimestamp".into(), json!(now));
        }
        if plural == "services" {
            obj["status"] = json!({"loadBalancer": {}});
        }
        lap(3);
        yard_api::defaults::apply_defaults(plural, &mut obj);
        lap(4);
        if plural == "services" {
            let ip = format!("10.96.{}.{}", 1 + i / 250 % 250, 1 + i % 250);
            obj["spec"]["clusterIP"] = json!(ip);
            obj["spec"]["clusterIPs"] = json!([ip]);
        }
        lap(5);
        let errs = yard_api::validation::validate(plural, &obj, None);
        assert!(errs.is_empty(), "{errs:?}");
        lap(6);
        yard_api::patch::track_update(None, &mut obj, "bench", "Update", None, &now);
        lap(7);
        let bytes = serde_json::to_vec(&obj).expect("encode");
        lap(8);
        drop((input, obj, bytes));
        lap(9);
    }
    let total: Duration = spent.iter().sum();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!("{plural}: {n} creates, steps' sum {:.1} µs per create", us(total));
    for (name, d) in STEPS.iter().zip(spent) {
        if d > Duration::ZERO {
            println!("  {name:<18} {:>6.2} µs  {:>5.1}%", us(d), 100.0 * d.as_secs_f64() / total.as_secs_f64());
        }
    }
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    // The bodies kube-rs sends in `etcd-bench`: the typed objects, serialized.
    run("services", n, |i| {
        let s: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")}, "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}})).expect("service");
        with_type(serde_json::to_value(s).expect("json"), "Service")
    });
    run("configmaps", n, |i| {
        let c: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}"), "labels": {"app": format!("a{i}")}}, "data": {"key": format!("value-{i}")}})).expect("configmap");
        with_type(serde_json::to_value(c).expect("json"), "ConfigMap")
    });
    Ok(())
}

/// kube-rs sets `apiVersion` and `kind` on what it sends.
fn with_type(mut v: Value, kind: &str) -> Vec<u8> {
    v["apiVersion"] = json!("v1");
    v["kind"] = json!(kind);
    serde_json::to_vec(&v).expect("encode")
}
