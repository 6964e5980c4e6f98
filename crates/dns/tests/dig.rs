//! End-to-end: the server on 127.0.0.1:<random port>, answered from a filled index, checked
//! with the real `dig` (UDP, TCP, EDNS, TC + TCP fallback, forwarding to an upstream that is a
//! second instance of the server).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::dig;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use yard_dns::{Config, Index};

fn svc(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})).unwrap()
}

fn slice(
    ns: &str,
    name: &str,
    service: &str,
    eps: &[(String, Option<&str>)],
    ports: serde_json::Value,
) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = eps
        .iter()
        .map(|(ip, host)| {
            let mut e = json!({"addresses": [ip], "conditions": {"ready": true}});
            if let Some(h) = host {
                e["hostname"] = json!(h);
            }
            e
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": ports,
    }))
    .unwrap()
}

/// Binds UDP and TCP on the same free loopback port.
fn bind_pair() -> (std::net::UdpSocket, std::net::TcpListener, SocketAddr) {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(addr) {
            return (udp, tcp, addr);
        }
    }
    panic!("no free port pair");
}

struct Server {
    addr: SocketAddr,
    handler: Arc<yard_dns::Handler>,
    task: tokio::task::JoinHandle<Result<(), yard_dns::Error>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(index: Arc<Index>, upstreams: Vec<SocketAddr>) -> Server {
    let (udp, tcp, addr) = bind_pair();
    let config = Config { upstreams: Some(upstreams), udp_workers: 2, ..Config::default() };
    let handler = Arc::new(yard_dns::handler(index, &config, &[addr]));
    let task = tokio::spawn(yard_dns::serve_handler(handler.clone(), config, vec![udp], vec![tcp]));
    Server { addr, handler, task }
}

fn fill(index: &Index) {
    index.upsert_service(&svc(
        "default",
        "hostnames",
        json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
    ));
    index.upsert_service(&svc(
        "example",
        "backend-service",
        json!({"clusterIP": "10.96.0.21", "clusterIPs": ["10.96.0.21"], "ports": [{"port": 80}]}),
    ));
    index.upsert_service(&svc(
        "default",
        "nginx",
        json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "web", "port": 80}]}),
    ));
    index.upsert_endpoint_slice(&slice(
        "default",
        "nginx-1",
        "nginx",
        &[("10.244.1.10".into(), Some("web-0")), ("10.244.2.11".into(), None)],
        json!([{"name": "web", "port": 8080, "protocol": "TCP"}]),
    ));
    index.upsert_service(&svc("default", "ext", json!({"type": "ExternalName", "externalName": "www.example.com"})));
    index.upsert_service(&svc(
        "default",
        "alias",
        json!({"type": "ExternalName", "externalName": "hostnames.default.svc.cluster.local"}),
    ));
    index.upsert_service(&svc("default", "big", json!({"clusterIP": "None"})));
    let eps: Vec<(String, Option<&str>)> =
        (0..300).map(|k| (format!("10.245.{}.{}", k / 200, k % 200 + 1), None)).collect();
    index.upsert_endpoint_slice(&slice("default", "big-1", "big", &eps, json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_checks_every_record_kind() {
    let index = Arc::new(Index::new("cluster.local", 5).unwrap());
    fill(&index);
    let server = start(index.clone(), vec![]);
    let s = server.addr;

    // Not synced yet: SERVFAIL.
    let d = dig(s, &["hostnames.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    index.set_synced(true);

    // A for a ClusterIP service, authoritative, TTL 5.
    let d = dig(s, &["hostnames.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NOERROR");
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert_eq!(d.answers(), vec!["A 10.96.0.20"]);
    assert_eq!(d.answer[0].split_whitespace().nth(1), Some("5"));
    // Case-insensitive, over TCP too.
    let d = dig(s, &["+tcp", "HOSTNAMES.Default.SVC.cluster.LOCAL", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.96.0.20"]);
    let d = dig(s, &["backend-service.example.svc.cluster.local"]).await;
    assert_eq!(d.answers(), vec!["A 10.96.0.21"]);

    // SRV (ClusterIP) with the address in the additional section.
    let d = dig(s, &["_http._tcp.hostnames.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(d.answers(), vec!["SRV 0 100 80 hostnames.default.svc.cluster.local."]);
    assert!(d.additional.iter().any(|l| l.contains("10.96.0.20")), "{}", d.raw);

    // Headless: one A per ready endpoint, hostname records, SRV per endpoint, PTR per endpoint.
    let d = dig(s, &["nginx.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.244.1.10", "A 10.244.2.11"]);
    let d = dig(s, &["web-0.nginx.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.244.1.10"]);
    let d = dig(s, &["10-244-2-11.nginx.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.244.2.11"]);
    let d = dig(s, &["_web._tcp.nginx.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(
        d.answers(),
        vec![
            "SRV 0 50 8080 10-244-2-11.nginx.default.svc.cluster.local.",
            "SRV 0 50 8080 web-0.nginx.default.svc.cluster.local."
        ]
    );
    let d = dig(s, &["-x", "10.244.1.10"]).await;
    assert_eq!(d.answers(), vec!["PTR web-0.nginx.default.svc.cluster.local."]);
    assert!(d.has_flag("aa"));
    let d = dig(s, &["-x", "10.96.0.20"]).await;
    assert_eq!(d.answers(), vec!["PTR hostnames.default.svc.cluster.local."]);

    // ExternalName: CNAME; in-cluster target followed.
    let d = dig(s, &["ext.default.svc.cluster.local", "CNAME"]).await;
    assert_eq!(d.answers(), vec!["CNAME www.example.com."]);
    let d = dig(s, &["alias.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.96.0.20", "CNAME hostnames.default.svc.cluster.local."]);

    // TXT schema version.
    let d = dig(s, &["dns-version.cluster.local", "TXT"]).await;
    assert_eq!(d.answers(), vec!["TXT \"1.1.0\""]);

    // Pod records.
    let d = dig(s, &["10-244-1-10.default.pod.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.244.1.10"]);

    // NXDOMAIN vs NODATA, SOA in the authority section.
    let d = dig(s, &["nope.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN");
    assert!(d.has_flag("aa"));
    assert!(d.answer.is_empty());
    assert!(
        d.authority.iter().any(|l| l.contains("SOA") && l.contains("ns.dns.cluster.local. hostmaster.cluster.local.")),
        "{}",
        d.raw
    );
    let d = dig(s, &["hostnames.default.svc.cluster.local", "AAAA"]).await;
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty());
    assert!(d.authority.iter().any(|l| l.contains("SOA")), "{}", d.raw);
    for name in ["default.svc.cluster.local", "svc.cluster.local"] {
        let d = dig(s, &[name, "A"]).await;
        assert_eq!(d.status, "NOERROR", "{name}: {}", d.raw);
        assert!(d.answer.is_empty());
    }
    let d = dig(s, &["hostnames.default.svc.cluster.local.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN");

    // Not an open resolver: no upstreams => REFUSED outside the zone.
    let d = dig(s, &["example.com", "A"]).await;
    assert_eq!(d.status, "REFUSED");

    // TC bit on plain UDP for 300 endpoints, complete answer over TCP.
    let d = dig(s, &["+noedns", "+ignore", "big.default.svc.cluster.local", "A"]).await;
    assert!(d.has_flag("tc"), "{}", d.raw);
    let d = dig(s, &["+ignore", "big.default.svc.cluster.local", "A"]).await;
    assert!(d.has_flag("tc"), "EDNS 1232 is still too small: {}", d.raw);
    let d = dig(s, &["big.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answer.len(), 300, "dig falls back to TCP after TC");
    let d = dig(s, &["+tcp", "big.default.svc.cluster.local", "A"]).await;
    assert!(!d.has_flag("tc"));
    assert_eq!(d.answer.len(), 300);
    // A larger EDNS buffer is respected (300 * 16 bytes + header < 8 KiB is capped to 4096).
    let d = dig(s, &["+bufsize=4096", "+ignore", "big.default.svc.cluster.local", "A"]).await;
    assert!(d.has_flag("tc"));

    // Changes are visible immediately (no cache inside the zone).
    index.delete_service_named("default", "hostnames");
    let d = dig(s, &["hostnames.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN");

    let m = server.handler.metrics().render(Some(&index));
    assert!(m.contains("yard_dns_requests_total{type=\"A\",rcode=\"NOERROR\"}"), "{m}");
    assert!(m.contains("yard_dns_requests_total{type=\"A\",rcode=\"NXDOMAIN\"}"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_outside_the_zone_with_cache() {
    // The upstream is a second server, authoritative for `example.test` and for its own
    // `cluster.local` (which must never be asked for our cluster names).
    let up_index = Arc::new(Index::new("example.test", 60).unwrap());
    up_index.upsert_service(&svc("ns", "far", json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"]})));
    up_index.set_synced(true);
    let upstream = start(up_index, vec![]);

    let index = Arc::new(Index::new("cluster.local", 5).unwrap());
    index.set_synced(true);
    let server = start(index.clone(), vec![upstream.addr]);
    let s = server.addr;

    // ExternalName to a name outside the cluster: CNAME plus the target resolved upstream.
    index.upsert_service(&svc(
        "default",
        "ext",
        json!({"type": "ExternalName", "externalName": "far.ns.svc.example.test"}),
    ));
    let d = dig(s, &["ext.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answers(), vec!["A 10.0.0.1", "CNAME far.ns.svc.example.test."], "{}", d.raw);
    assert!(d.has_flag("aa"));
    let d = dig(s, &["ext.default.svc.cluster.local", "CNAME"]).await;
    assert_eq!(d.answers(), vec!["CNAME far.ns.svc.example.test."]);
    // (That A lookup of far.ns.svc.example.test is now cached.)
    let d = dig(s, &["+rec", "far.ns.svc.example.test", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.0.0.1"]);
    assert_eq!(server.handler.metrics().cache_hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let d = dig(s, &["+rec", "far.ns.svc.example.test", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answers(), vec!["A 10.0.0.1"]);
    assert!(!d.has_flag("aa"), "forwarded answers are not authoritative");
    assert!(d.has_flag("ra"));
    assert_eq!(
        upstream.handler.metrics().count(hickory_proto::rr::RecordType::A, hickory_proto::op::ResponseCode::NoError),
        1
    );
    // Second time from the cache: the upstream is not asked again, TTL counts down.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let d = dig(s, &["far.ns.svc.example.test", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.0.0.1"]);
    let ttl: u32 = d.answer[0].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(ttl < 30, "cached TTL capped at 30 and decreasing: {ttl}");
    assert_eq!(
        upstream.handler.metrics().count(hickory_proto::rr::RecordType::A, hickory_proto::op::ResponseCode::NoError),
        1
    );
    assert_eq!(server.handler.metrics().cache_hits.load(std::sync::atomic::Ordering::Relaxed), 3);
    // Negative answers are forwarded with their rcode.
    let d = dig(s, &["nope.ns.svc.example.test", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN");
    // Over TCP as well.
    let d = dig(s, &["+tcp", "far.ns.svc.example.test", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.0.0.1"]);
    // Cluster names are never forwarded.
    let before = upstream.handler.metrics().render(None);
    let d = dig(s, &["x.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN");
    assert!(d.has_flag("aa"));
    assert_eq!(before, upstream.handler.metrics().render(None));
    // Unknown reverse names go upstream (which refuses them: REFUSED is passed through as
    // SERVFAIL since no upstream could answer).
    let d = dig(s, &["-x", "192.0.2.1"]).await;
    assert_eq!(d.status, "SERVFAIL");
    // A dead upstream gives SERVFAIL, not a hang.
    drop(upstream);
    // Its UDP worker threads look at their stop flag every 200 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let d = dig(s, &["+time=5", "other.ns.svc.example.test", "A"]).await;
    assert_eq!(d.status, "SERVFAIL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints() {
    let index = Arc::new(Index::new("cluster.local", 5).unwrap());
    let server = start(index.clone(), vec![]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http =
        tokio::spawn(yard_dns::metrics::serve_http_on(listener, server.handler.metrics().clone(), index.clone()));
    let curl = |path: &'static str| async move {
        let out = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["-s", "-o", "-", "-w", "\n%{http_code}", &format!("http://{addr}{path}")])
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(curl("/health").await.ends_with("200"));
    assert!(curl("/ready").await.ends_with("503"));
    index.set_synced(true);
    assert!(curl("/ready").await.ends_with("200"));
    dig(server.addr, &["dns-version.cluster.local", "TXT"]).await;
    let m = curl("/metrics").await;
    assert!(m.contains("yard_dns_requests_total{type=\"TXT\",rcode=\"NOERROR\"} 1"), "{m}");
    assert!(m.contains("yard_dns_request_duration_seconds_count 1"), "{m}");
    http.abort();
}
