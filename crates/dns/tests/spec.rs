//! The cluster DNS specification end to end: `yard dns --listen 127.0.0.1:PORT ...` (the
//! command's `run`, flags parsed as the `yard` binary parses them) against yard's API server on
//! loopback, every object created through the API, answers checked with the real `dig` and a
//! hickory-proto client. Upstream resolvers are a fake resolver on 127.0.0.1 run by the test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

fn flags(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Items 1-7 and 9 of the specification: every record kind, negative answers, TTL, TCP, EDNS0
/// and truncation, for Services, EndpointSlices and Pods created through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_objects_created_through_the_api() {
    let dir = TempDir::new("spec-records");
    let (running, client) = api_server(&dir).await;
    let upstream = FakeUpstream::start().await;
    let dns = synced_dns(&running, &upstream, &["--udp-workers", "2"]).await;
    let s = dns.addr;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // ---- 1. ClusterIP: A/AAAA (dual-stack), SRV for named ports, PTR for the ClusterIPs.
    let web: Service = create(
        &services,
        json!({"metadata": {"name": "web"}, "spec": {
            "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                      {"name": "dns", "port": 53, "protocol": "UDP"},
                      {"name": "metrics", "port": 9090, "protocol": "TCP"}]}}),
    )
    .await;
    let ips = web.spec.unwrap().cluster_ips.unwrap();
    assert_eq!(ips.len(), 2, "dual-stack service: {ips:?}");
    let (ip4, ip6) = (ips[0].clone(), ips[1].clone());
    assert!(ip(&ip4).is_ipv4() && ip(&ip6).is_ipv6(), "{ips:?}");
    until_async(Duration::from_secs(5), "web", || async {
        ask(s, "web.default.svc.cluster.local.", RecordType::A).await.1 == vec![ip4.clone()]
    })
    .await;
    let d = dig(s, &["web.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert_eq!(d.answers(), vec![format!("A {ip4}")], "{}", d.raw);
    // 7. TTL 5 s by default.
    assert_eq!(d.answer_ttls(), vec![5], "{}", d.raw);
    let d = dig(s, &["web.default.svc.cluster.local", "AAAA"]).await;
    assert_eq!(d.answers(), vec![format!("AAAA {ip6}")], "{}", d.raw);
    assert_eq!(d.answer_ttls(), vec![5], "{}", d.raw);
    let d = dig(s, &["_http._tcp.web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(d.answers(), vec!["SRV 0 100 80 web.default.svc.cluster.local."], "{}", d.raw);
    assert_eq!(d.additionals(), vec![format!("A {ip4}"), format!("AAAA {ip6}")], "{}", d.raw);
    let d = dig(s, &["_dns._udp.web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(d.answers(), vec!["SRV 0 100 53 web.default.svc.cluster.local."], "{}", d.raw);
    // The protocol is part of the name.
    let d = dig(s, &["_dns._tcp.web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    for rev in [&ip4, &ip6] {
        let d = dig(s, &["-x", rev]).await;
        assert_eq!(d.status, "NOERROR", "{rev}: {}", d.raw);
        assert!(d.has_flag("aa"), "{}", d.raw);
        assert_eq!(d.answers(), vec!["PTR web.default.svc.cluster.local."], "{rev}: {}", d.raw);
    }

    // ---- 2. Headless: NXDOMAIN without ready endpoints, then records per ready endpoint.
    create(
        &services,
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None",
            "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    let d = dig(s, &["db.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "no endpoints yet: {}", d.raw);
    d.assert_soa("cluster.local");
    create(
        &slices,
        json!({"metadata": {"name": "db-v4", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"], "conditions": {"ready": true}},
                {"addresses": ["10.244.3.7"], "hostname": "db-2", "conditions": {"ready": false}}],
            "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}]}),
    )
    .await;
    create(
        &slices,
        json!({"metadata": {"name": "db-v6", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00:244::8"], "conditions": {"ready": true}}],
            "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}]}),
    )
    .await;
    until_async(Duration::from_secs(5), "db endpoints", || async {
        ask(s, "db.default.svc.cluster.local.", RecordType::AAAA).await.1 == vec!["fd00:244::8"]
    })
    .await;
    let d = dig(s, &["db.default.svc.cluster.local", "A"]).await;
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert_eq!(d.answers(), vec!["A 10.244.1.5", "A 10.244.2.6"], "ready endpoints only: {}", d.raw);
    for (name, t, want) in [
        ("db-0.db.default.svc.cluster.local", "A", "A 10.244.1.5"),
        ("10-244-2-6.db.default.svc.cluster.local", "A", "A 10.244.2.6"),
        ("fd00-244--8.db.default.svc.cluster.local", "AAAA", "AAAA fd00:244::8"),
    ] {
        let d = dig(s, &[name, t]).await;
        assert_eq!(d.answers(), vec![want], "{name}: {}", d.raw);
    }
    let d = dig(s, &["db-2.db.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "not-ready endpoint: {}", d.raw);
    let d = dig(s, &["_pg._tcp.db.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(
        d.answers(),
        vec![
            "SRV 0 33 5433 10-244-2-6.db.default.svc.cluster.local.",
            "SRV 0 33 5433 db-0.db.default.svc.cluster.local.",
            "SRV 0 33 5433 fd00-244--8.db.default.svc.cluster.local.",
        ],
        "{}",
        d.raw
    );
    assert_eq!(d.additionals(), vec!["A 10.244.1.5", "A 10.244.2.6", "AAAA fd00:244::8"], "{}", d.raw);
    for (rev, want) in [
        ("10.244.1.5", "PTR db-0.db.default.svc.cluster.local."),
        ("10.244.2.6", "PTR 10-244-2-6.db.default.svc.cluster.local."),
        ("fd00:244::8", "PTR fd00-244--8.db.default.svc.cluster.local."),
    ] {
        let d = dig(s, &["-x", rev]).await;
        assert_eq!(d.answers(), vec![want], "{rev}: {}", d.raw);
    }
    // No ready endpoint left: NXDOMAIN again, hostname and reverse records gone too.
    slices.delete("db-v6", &DeleteParams::default()).await.unwrap();
    let mut v4 = slices.get("db-v4").await.unwrap();
    for ep in v4.endpoints.iter_mut().flatten() {
        ep.conditions.get_or_insert_with(Default::default).ready = Some(false);
    }
    slices.replace("db-v4", &PostParams::default(), &v4).await.unwrap();
    until_async(Duration::from_secs(5), "db without ready endpoints", || async {
        ask(s, "db.default.svc.cluster.local.", RecordType::A).await.0 == ResponseCode::NXDomain
    })
    .await;
    for (name, t) in [
        ("db.default.svc.cluster.local", "AAAA"),
        ("db-0.db.default.svc.cluster.local", "A"),
        ("_pg._tcp.db.default.svc.cluster.local", "SRV"),
    ] {
        let d = dig(s, &[name, t]).await;
        assert_eq!(d.status, "NXDOMAIN", "{name}: {}", d.raw);
        d.assert_soa("cluster.local");
    }
    // (The reverse name is no longer ours: it goes to the upstream, which says NXDOMAIN.)
    let d = dig(s, &["-x", "10.244.1.5"]).await;
    assert!(d.answer.is_empty(), "{}", d.raw);
    assert!(!d.has_flag("aa"), "{}", d.raw);

    // ---- 3. ExternalName: CNAME; followed when the target is in the cluster.
    create(
        &services,
        json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName",
            "externalName": "www.example.test"}}),
    )
    .await;
    create(
        &services,
        json!({"metadata": {"name": "alias"}, "spec": {"type": "ExternalName",
            "externalName": "web.default.svc.cluster.local"}}),
    )
    .await;
    until_async(Duration::from_secs(5), "alias", || async {
        ask(s, "alias.default.svc.cluster.local.", RecordType::A).await.0 == ResponseCode::NoError
    })
    .await;
    let d = dig(s, &["ext.default.svc.cluster.local", "CNAME"]).await;
    assert_eq!(d.answers(), vec!["CNAME www.example.test."], "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    let d = dig(s, &["alias.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {ip4}"), "CNAME web.default.svc.cluster.local.".to_string()], "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert_eq!(upstream.asked("web.default.svc.cluster.local."), 0, "in-cluster targets are not forwarded");
    // Out-of-cluster target: CNAME plus the target's records from the upstream.
    let d = dig(s, &["ext.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {UPSTREAM_IP}"), "CNAME www.example.test.".to_string()], "{}", d.raw);

    // ---- 4. TXT dns-version; names are case-insensitive.
    let d = dig(s, &["dns-version.cluster.local", "TXT"]).await;
    assert_eq!(d.answers(), vec!["TXT \"1.1.0\""], "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    let d = dig(s, &["DNS-Version.CLUSTER.local", "TXT"]).await;
    assert_eq!(d.answers(), vec!["TXT \"1.1.0\""], "{}", d.raw);
    let d = dig(s, &["WEB.Default.SVC.Cluster.LOCAL", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {ip4}")], "{}", d.raw);
    let d = dig(s, &["_HTTP._Tcp.Web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(d.answers(), vec!["SRV 0 100 80 web.default.svc.cluster.local."], "{}", d.raw);

    // ---- 5. NXDOMAIN vs NODATA, authoritative, SOA in every negative answer.
    for (name, t) in [
        ("nope.default.svc.cluster.local", "A"),
        ("x.web.default.svc.cluster.local", "A"),
        ("nope.cluster.local", "A"),
        ("web.default.svc.cluster.local.default.svc.cluster.local", "A"),
        ("_nope._tcp.web.default.svc.cluster.local", "SRV"),
    ] {
        let d = dig(s, &[name, t]).await;
        assert_eq!(d.status, "NXDOMAIN", "{name}: {}", d.raw);
        assert!(d.has_flag("aa"), "{name}: {}", d.raw);
        assert!(d.answer.is_empty(), "{name}: {}", d.raw);
        let (ttl, min) = d.assert_soa("cluster.local");
        assert_eq!((ttl, min), (5, 5), "{name}: {}", d.raw);
    }
    for (name, t) in [
        ("web.default.svc.cluster.local", "TXT"),
        ("web.default.svc.cluster.local", "MX"),
        ("dns-version.cluster.local", "A"),
        ("_http._tcp.web.default.svc.cluster.local", "A"),
        // Namespace-only names.
        ("default.svc.cluster.local", "A"),
        ("kube-system.svc.cluster.local", "A"),
        ("svc.cluster.local", "A"),
        ("default.pod.cluster.local", "A"),
    ] {
        let d = dig(s, &[name, t]).await;
        assert_eq!(d.status, "NOERROR", "{name} {t}: {}", d.raw);
        assert!(d.has_flag("aa"), "{name}: {}", d.raw);
        assert!(d.answer.is_empty(), "{name} {t}: NODATA expected: {}", d.raw);
        d.assert_soa("cluster.local");
    }

    // ---- 6. Pod records, and a pod with hostname + subdomain.
    let d = dig(s, &["10-244-1-5.default.pod.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.244.1.5"], "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert_eq!(d.answer_ttls(), vec![5], "{}", d.raw);
    let d = dig(s, &["10-244-1-5.default.pod.cluster.local", "AAAA"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.answer.is_empty(), "{}", d.raw);
    let d = dig(s, &["fd00-244--8.default.pod.cluster.local", "AAAA"]).await;
    assert_eq!(d.answers(), vec!["AAAA fd00:244::8"], "{}", d.raw);
    let d = dig(s, &["10-244-1-500.default.pod.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    // `hostname: busybox-1, subdomain: sub` and a headless Service `sub`: the EndpointSlice
    // controller copies the hostname into the endpoint (controllers are not running here, so
    // the test writes the slice the way the controller does).
    create(
        &pods,
        json!({"metadata": {"name": "busybox-1", "labels": {"app": "sub"}},
            "spec": {"hostname": "busybox-1", "subdomain": "sub",
                     "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    create(
        &services,
        json!({"metadata": {"name": "sub"}, "spec": {"clusterIP": "None",
            "selector": {"app": "sub"}, "ports": [{"name": "x", "port": 1234}]}}),
    )
    .await;
    create(
        &slices,
        json!({"metadata": {"name": "sub-abc", "labels": {"kubernetes.io/service-name": "sub"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.20"], "hostname": "busybox-1",
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": "busybox-1", "namespace": "default"}}],
            "ports": [{"name": "x", "port": 1234, "protocol": "TCP"}]}),
    )
    .await;
    until_async(Duration::from_secs(5), "busybox-1.sub", || async {
        ask(s, "busybox-1.sub.default.svc.cluster.local.", RecordType::A).await.1 == vec!["10.244.1.20"]
    })
    .await;
    let d = dig(s, &["busybox-1.sub.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec!["A 10.244.1.20"], "{}", d.raw);
    let d = dig(s, &["-x", "10.244.1.20"]).await;
    assert_eq!(d.answers(), vec!["PTR busybox-1.sub.default.svc.cluster.local."], "{}", d.raw);

    // ---- 9. TCP, EDNS0, TC bit and TCP fallback for a headless Service of 300 endpoints.
    let d = dig(s, &["+tcp", "web.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {ip4}")], "{}", d.raw);
    assert!(d.raw.contains("(TCP)"), "{}", d.raw);
    let d = dig(s, &["+tcp", "nope.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    d.assert_soa("cluster.local");
    // EDNS0: dig sends OPT (1232); the reply carries an OPT of version 0, our size 1232.
    let d = dig(s, &["+bufsize=4096", "web.default.svc.cluster.local", "A"]).await;
    assert!(d.raw.contains("; EDNS: version: 0") && d.raw.contains("udp: 1232"), "{}", d.raw);
    let d = dig(s, &["+noedns", "web.default.svc.cluster.local", "A"]).await;
    assert!(!d.raw.contains("EDNS:"), "no OPT without one in the query: {}", d.raw);
    assert_eq!(d.answers(), vec![format!("A {ip4}")], "{}", d.raw);
    let d = dig(s, &["+edns=1", "+noednsneg", "web.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "BADVERS", "{}", d.raw);
    create(
        &services,
        json!({"metadata": {"name": "big"}, "spec": {"clusterIP": "None",
            "ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    let eps: Vec<serde_json::Value> = (0..300)
        .map(|k| {
            json!({"addresses": [format!("10.245.{}.{}", k / 200, k % 200 + 1)],
                "conditions": {"ready": true}})
        })
        .collect();
    create(
        &slices,
        json!({"metadata": {"name": "big-1", "labels": {"kubernetes.io/service-name": "big"}},
            "addressType": "IPv4", "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
    )
    .await;
    until_async(Duration::from_secs(5), "big", || async {
        dig(s, &["+tcp", "big.default.svc.cluster.local", "A"]).await.answer.len() == 300
    })
    .await;
    let d = dig(s, &["+noedns", "+ignore", "big.default.svc.cluster.local", "A"]).await;
    assert!(d.has_flag("tc"), "512-byte UDP: {}", d.raw);
    assert!(d.answer.is_empty(), "{}", d.raw);
    let d = dig(s, &["+ignore", "big.default.svc.cluster.local", "A"]).await;
    assert!(d.has_flag("tc"), "EDNS 1232: {}", d.raw);
    let d = dig(s, &["+bufsize=4096", "+ignore", "big.default.svc.cluster.local", "A"]).await;
    assert!(d.has_flag("tc"), "4800 bytes do not fit 4096: {}", d.raw);
    // dig retries over TCP after TC and gets all 300.
    let d = dig(s, &["big.default.svc.cluster.local", "A"]).await;
    assert!(!d.has_flag("tc"), "{}", d.raw);
    assert!(d.raw.contains("(TCP)"), "answered over TCP: {}", d.raw);
    assert_eq!(d.answer.len(), 300, "{}", d.raw);
    let d = dig(s, &["+tcp", "_http._tcp.big.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(d.answer.len(), 300, "{}", d.raw);
    assert_eq!(d.additional.len(), 300, "the 300 targets' addresses");

    drop(dns);
    running.shutdown().await;
}

/// Item 8 and the configurable TTL of item 7: SERVFAIL (and /ready 503) while the API server is
/// unreachable, answers once the first lists went in; `--ttl 30` for records and the SOA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_until_the_first_sync_then_answers() {
    let dir = TempDir::new("spec-sync");
    let (running, client) = api_server(&dir).await;
    // A gate in front of the API server: connections are accepted but held until it opens.
    let gate = GatedProxy::start(running.addr).await;
    let kubeconfig = dir.0.join("gated-kubeconfig");
    let text = std::fs::read_to_string(&running.kubeconfig).unwrap();
    let server_line = format!("server: https://127.0.0.1:{}", running.addr.port());
    assert!(text.contains(&server_line), "{text}");
    std::fs::write(&kubeconfig, text.replace(&server_line, &format!("server: https://127.0.0.1:{}", gate.addr.port())))
        .unwrap();
    let metrics_port = free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let upstream = FakeUpstream::start().await;
    let dns = yard_dns(&flags(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--ttl",
        "30",
        "--metrics-addr",
        &metrics.to_string(),
        "--upstream",
        &upstream.addr.to_string(),
    ]))
    .await;
    let s = dns.addr;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let early: Service =
        create(&services, json!({"metadata": {"name": "early"}, "spec": {"ports": [{"port": 80}]}})).await;
    let early_ip = early.spec.unwrap().cluster_ip.unwrap();

    // Not synced: every cluster name (and cluster reverse name) is SERVFAIL, on UDP and TCP.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for args in [
        &["early.default.svc.cluster.local", "A"][..],
        &["+tcp", "early.default.svc.cluster.local", "A"],
        &["nope.default.svc.cluster.local", "A"],
        &["dns-version.cluster.local", "TXT"],
        &["-x", &early_ip],
    ] {
        let d = dig(s, args).await;
        assert_eq!(d.status, "SERVFAIL", "{args:?}: {}", d.raw);
        assert!(d.answer.is_empty(), "{}", d.raw);
    }
    let (code, _) = curl(metrics, "/ready").await;
    assert_eq!(code, 503);
    let (code, body) = curl(metrics, "/health").await;
    assert_eq!((code, body.as_str()), (200, "OK"));
    let (_, page) = curl(metrics, "/metrics").await;
    assert!(page.lines().any(|l| l == "yard_dns_synced 0"), "{page}");
    assert!(metric(&page, "yard_dns_requests_total{type=\"A\",rcode=\"SERVFAIL\"}") >= 3, "{page}");

    gate.open();
    let t0 = Instant::now();
    until_async(Duration::from_secs(20), "answers after sync", || async {
        ask(s, "early.default.svc.cluster.local.", RecordType::A).await.0 == ResponseCode::NoError
    })
    .await;
    eprintln!("answers {:?} after the API server became reachable", t0.elapsed());
    let d = dig(s, &["early.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {early_ip}")], "{}", d.raw);
    assert_eq!(d.answer_ttls(), vec![30], "--ttl 30: {}", d.raw);
    let d = dig(s, &["-x", &early_ip]).await;
    assert_eq!(d.answers(), vec!["PTR early.default.svc.cluster.local."], "{}", d.raw);
    assert_eq!(d.answer_ttls(), vec![30], "{}", d.raw);
    let d = dig(s, &["nope.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert_eq!(d.assert_soa("cluster.local"), (30, 30), "{}", d.raw);
    let d = dig(s, &["cluster.local", "SOA"]).await;
    assert_eq!(d.answer_ttls(), vec![30], "{}", d.raw);
    let (code, _) = curl(metrics, "/ready").await;
    assert_eq!(code, 200);
    let (_, page) = curl(metrics, "/metrics").await;
    assert!(page.lines().any(|l| l == "yard_dns_synced 1"), "{page}");

    drop(dns);
    drop(gate);
    running.shutdown().await;
}

/// A TCP proxy that accepts connections at once but only connects them to `target` after
/// [`GatedProxy::open`].
struct GatedProxy {
    addr: SocketAddr,
    open: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl GatedProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = rx.clone();
                conns.spawn(async move {
                    if rx.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let Ok(mut out) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                });
            }
        });
        GatedProxy { addr, open: Arc::new(tx), task }
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for GatedProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts the connections.
        self.task.abort();
    }
}

/// Item 10 (forwarding with a cache to a fake upstream on 127.0.0.1), item 12 (bad input over
/// the wire, answering only on the listen addresses) and item 13 (/metrics, /health, /ready)
/// against one `yard dns` with two `--listen` addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_bad_input_listen_addresses_and_metrics() {
    let dir = TempDir::new("spec-fwd");
    let (running, client) = api_server(&dir).await;
    let upstream = FakeUpstream::start().await;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dns =
        synced_dns(&running, &upstream, &["--listen", "127.0.0.3:{port}", "--metrics-addr", &metrics.to_string()])
            .await;
    let s = dns.addr;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web: Service = create(&services, json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})).await;
    let web_ip = web.spec.unwrap().cluster_ip.unwrap();
    until_async(Duration::from_secs(5), "web", || async {
        ask(s, "web.default.svc.cluster.local.", RecordType::A).await.1 == vec![web_ip.clone()]
    })
    .await;

    // ---- 10. Forwarding with a cache.
    let d = dig(s, &["+rec", "www.example.test", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answers(), vec![format!("A {UPSTREAM_IP}")], "{}", d.raw);
    assert!(!d.has_flag("aa"), "forwarded answers are not authoritative");
    assert!(d.has_flag("ra"), "{}", d.raw);
    assert_eq!(upstream.asked("www.example.test."), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for args in [&["www.example.test", "A"][..], &["WWW.Example.TEST", "A"], &["+tcp", "www.example.test", "A"]] {
        let d = dig(s, args).await;
        assert_eq!(d.answers(), vec![format!("A {UPSTREAM_IP}")], "{args:?}: {}", d.raw);
        let ttl = d.answer_ttls()[0];
        assert!(ttl < 30, "cached TTL capped at 30 and counting down: {ttl}");
    }
    assert_eq!(upstream.asked("www.example.test."), 1, "answered from the cache");
    // Negative answers are forwarded (and cached by their SOA).
    for _ in 0..2 {
        let d = dig(s, &["nope.example.test", "A"]).await;
        assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
        assert!(!d.has_flag("aa"), "{}", d.raw);
    }
    assert_eq!(upstream.asked("nope.example.test."), 1);
    // Cluster names are never forwarded, not even unknown ones.
    for name in [
        "web.default.svc.cluster.local",
        "nope.default.svc.cluster.local",
        "web.default.svc.cluster.local.default.svc.cluster.local",
    ] {
        dig(s, &[name, "A"]).await;
    }
    let log = upstream.log.lock().unwrap().clone();
    assert!(log.iter().all(|l| !l.contains("cluster.local")), "cluster names went upstream: {log:?}");

    // ---- 12. Answers on every --listen address and nowhere else.
    let other: SocketAddr = format!("127.0.0.3:{}", s.port()).parse().unwrap();
    let d = dig(other, &["web.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {web_ip}")], "{}", d.raw);
    let d = dig(other, &["+tcp", "web.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {web_ip}")], "{}", d.raw);
    let not_told: SocketAddr = format!("127.0.0.2:{}", s.port()).parse().unwrap();
    let q = query_bytes(0x4242, "web.default.svc.cluster.local.", RecordType::A);
    assert!(
        exchange_bytes(not_told, &q, Duration::from_millis(500)).await.is_none(),
        "answered on {not_told}, which it was not told to listen on"
    );
    assert!(tokio::net::TcpStream::connect(not_told).await.is_err(), "TCP open on {not_told}");
    assert!(exchange_bytes(s, &q, Duration::from_secs(2)).await.is_some(), "no answer on {s}");

    // ---- 12. Malformed, truncated and oversized packets over the wire: FORMERR or dropped.
    let (_, before) = curl(metrics, "/metrics").await;
    // Shorter than a header: dropped.
    for bad in [&[][..], &[0x12][..], &[0x12, 0x34, 0x01, 0x00, 0, 1][..]] {
        assert!(exchange_bytes(s, bad, Duration::from_millis(300)).await.is_none(), "reply to {bad:?}");
    }
    // A header promising a question that is not there, and a cut-off question: FORMERR, same id.
    let header_only = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut cut = q.clone();
    cut.truncate(q.len() - 7);
    cut[..2].copy_from_slice(&[0xab, 0xce]);
    for bad in [&header_only[..], &cut[..]] {
        let r =
            exchange_bytes(s, bad, Duration::from_secs(2)).await.unwrap_or_else(|| panic!("no FORMERR for {bad:?}"));
        let m = hickory_proto::op::Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{bad:?}");
        assert_eq!(&r[..2], &bad[..2]);
        assert!(m.answers.is_empty());
    }
    // A response is never answered (no reflection loops).
    let mut resp = q.clone();
    resp[2] |= 0x80;
    assert!(exchange_bytes(s, &resp, Duration::from_millis(300)).await.is_none());
    // Oversized: a query padded past the 4096-byte receive buffer is dropped.
    let mut big = q.clone();
    big[..2].copy_from_slice(&[0x55, 0x66]);
    big.resize(6000, 0);
    assert!(exchange_bytes(s, &big, Duration::from_millis(500)).await.is_none());
    // Over TCP: a header without its question, and a 64 KiB frame whose question name is a
    // compression pointer to itself: FORMERR with the id; the server stays up.
    for len in [12usize, 65535] {
        let mut frame = vec![0u8; len];
        frame[..12].copy_from_slice(&header_only);
        if len > 14 {
            frame[12..14].copy_from_slice(&[0xc0, 0x0c]);
        }
        let r = tcp_exchange(s, &frame).await.unwrap_or_else(|| panic!("no FORMERR over TCP for {len} bytes"));
        let m = hickory_proto::op::Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{len}");
        assert_eq!(m.metadata.id, 0xabcd);
    }
    let r = tcp_exchange(s, &q).await.expect("TCP answer after bad input");
    let m = hickory_proto::op::Message::from_vec(&r).unwrap();
    assert_eq!(m.answers.len(), 1);
    let d = dig(s, &["web.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {web_ip}")], "still serving: {}", d.raw);

    // ---- 13. /metrics counts by type and rcode, with a latency histogram; /health; /ready.
    for _ in 0..3 {
        dig(s, &["_x._tcp.web.default.svc.cluster.local", "SRV"]).await;
    }
    dig(s, &["dns-version.cluster.local", "TXT"]).await;
    let (code, after) = curl(metrics, "/metrics").await;
    assert_eq!(code, 200);
    let delta = |sample: &str| metric(&after, sample) - metric(&before, sample);
    assert_eq!(delta("yard_dns_requests_total{type=\"SRV\",rcode=\"NXDOMAIN\"}"), 3, "{after}");
    assert_eq!(delta("yard_dns_requests_total{type=\"TXT\",rcode=\"NOERROR\"}"), 1, "{after}");
    assert!(delta("yard_dns_requests_total{type=\"other\",rcode=\"FORMERR\"}") >= 2, "{after}");
    assert!(delta("yard_dns_dropped_total") >= 4, "{after}");
    assert!(metric(&after, "yard_dns_requests_total{type=\"A\",rcode=\"NOERROR\"}") >= 5, "{after}");
    assert!(metric(&after, "yard_dns_cache_hits_total") >= 3, "{after}");
    assert!(metric(&after, "yard_dns_forward_requests_total") >= 2, "{after}");
    let count = metric(&after, "yard_dns_request_duration_seconds_count");
    assert!(delta("yard_dns_request_duration_seconds_count") >= 4, "{after}");
    assert_eq!(metric(&after, "yard_dns_request_duration_seconds_bucket{le=\"+Inf\"}"), count, "{after}");
    assert!(metric(&after, "yard_dns_request_duration_seconds_bucket{le=\"0.1\"}") > 0, "{after}");
    assert!(after.contains("# TYPE yard_dns_request_duration_seconds histogram"));
    assert_eq!(curl(metrics, "/health").await, (200, "OK".to_string()));
    assert_eq!(curl(metrics, "/ready").await, (200, "OK".to_string()));

    drop(dns);
    running.shutdown().await;
}

/// One DNS-over-TCP exchange; `None` when the server closes the connection instead.
async fn tcp_exchange(server: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(server).await.unwrap();
    let mut frame = (msg.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(msg);
    c.write_all(&frame).await.ok()?;
    tokio::time::timeout(Duration::from_secs(3), async {
        let len = c.read_u16().await.ok()? as usize;
        let mut buf = vec![0u8; len];
        c.read_exact(&mut buf).await.ok()?;
        Some(buf)
    })
    .await
    .expect("TCP reply or close within 3 s")
}

/// Item 10, autopath: `yard dns --autopath` with a Pod created through the API whose status
/// carries the client's address (a loopback address, 127.0.0.5): the first search expansion
/// `web.other.default.svc.cluster.local` is answered in one round trip with a CNAME to
/// `web.other.svc.cluster.local` and its address; for any other client it stays NXDOMAIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopath_for_a_pod_created_through_the_api() {
    let dir = TempDir::new("spec-autopath");
    let (running, client) = api_server(&dir).await;
    let upstream = FakeUpstream::start().await;
    let dns = synced_dns(&running, &upstream, &["--autopath"]).await;
    let s = dns.addr;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": "other"}})).await;
    let web: Service = create(
        &Api::namespaced(client.clone(), "other"),
        json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    let web_ip = web.spec.unwrap().cluster_ip.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(
        &pods,
        json!({"metadata": {"name": "client"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    pods.patch_status(
        "client",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.0.5",
            "podIPs": [{"ip": "127.0.0.5"}]}})),
    )
    .await
    .unwrap();
    let expansion = "web.other.default.svc.cluster.local";
    let from = |src: &'static str| async move { dig(s, &["-b", src, expansion, "A"]).await };
    until_async(Duration::from_secs(10), "autopath answer", || async { from("127.0.0.5").await.status == "NOERROR" })
        .await;
    let d = from("127.0.0.5").await;
    assert_eq!(d.answers(), vec![format!("A {web_ip}"), "CNAME web.other.svc.cluster.local.".to_string()], "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    // Another client (not a pod): the plain answer, the client walks its search list itself.
    let d = from("127.0.0.6").await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    d.assert_soa("cluster.local");
    // A name that exists nowhere: NXDOMAIN for the pod too.
    let d = dig(s, &["-b", "127.0.0.5", "nothing.here.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    // The pod deleted through the API: no more completion for its address.
    pods.delete("client", &DeleteParams::default().grace_period(0)).await.unwrap();
    until_async(Duration::from_secs(10), "pod gone", || async { from("127.0.0.5").await.status == "NXDOMAIN" }).await;

    drop(dns);
    running.shutdown().await;
}

/// Item 12, "not an open resolver": names outside the cluster are resolved only for clients in
/// `--allow-recursion-from` (default: loopback and private ranges); everyone else gets REFUSED
/// without `ra`, an ExternalName pointing outside is answered with its CNAME alone, and cluster
/// names are answered for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursion_only_for_allowed_clients() {
    let dir = TempDir::new("spec-acl");
    let (running, client) = api_server(&dir).await;
    let upstream = FakeUpstream::start().await;
    let dns =
        synced_dns(&running, &upstream, &["--listen", "127.0.0.3:{port}", "--allow-recursion-from", "127.0.0.7/32"])
            .await;
    let s = dns.addr;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "out"}, "spec": {"type": "ExternalName", "externalName": "www.example.test"}}),
    )
    .await;
    until_async(Duration::from_secs(5), "out", || async {
        dig(s, &["out.default.svc.cluster.local", "CNAME"]).await.status == "NOERROR"
    })
    .await;

    // From 127.0.0.1 (not allowed): REFUSED, no recursion offered, nothing sent upstream.
    let d = dig(s, &["-b", "127.0.0.1", "www.example.test", "A"]).await;
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    assert!(!d.has_flag("ra"), "{}", d.raw);
    let d = dig(s, &["-b", "127.0.0.1", "out.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answers(), vec!["CNAME www.example.test.".to_string()], "the CNAME alone: {}", d.raw);
    assert_eq!(upstream.asked("www.example.test."), 0);
    let d = dig(s, &["-b", "127.0.0.1", "kubernetes.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.status, "NOERROR", "cluster names for everyone: {}", d.raw);

    // From 127.0.0.7 (allowed): forwarded, and the ExternalName is chased.
    let d = dig(s, &["-b", "127.0.0.7", "www.example.test", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.has_flag("ra"), "{}", d.raw);
    assert_eq!(d.answers(), vec![format!("A {UPSTREAM_IP}")], "{}", d.raw);
    let d = dig(s, &["-b", "127.0.0.7", "out.default.svc.cluster.local", "A"]).await;
    assert_eq!(d.answers(), vec![format!("A {UPSTREAM_IP}"), "CNAME www.example.test.".to_string()], "{}", d.raw);
}
