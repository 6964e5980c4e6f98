//! The index kept current by kube-rs watchers against a real API server (yard's, on loopback),
//! and the full `serve` path answering `dig` once synced.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{until_async, TempDir};
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;
use yard_dns::{Config, Index};

fn a_records(index: &Index, name: &str) -> Option<Vec<String>> {
    let (nx, answers, _) = index.query(name, RecordType::A)?;
    if nx {
        return None;
    }
    let mut v: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    Some(v)
}

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn endpoint_slice(name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<serde_json::Value> =
        ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_keep_the_index_current() {
    let dir = TempDir::new("watch");
    let (running, client) = yard_test_support::apiserver::start_in(&dir.0).await;
    let index = Arc::new(Index::new("cluster.local", 5).unwrap());
    let watch = tokio::spawn(yard_dns::watch(client.clone(), index.clone()));
    until_async(Duration::from_secs(20), "first sync", || async { index.is_synced() }).await;
    // The bootstrap `kubernetes` Service is there after the initial list.
    assert!(a_records(&index, "kubernetes.default.svc.cluster.local.").is_some());

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let created = services
        .create(&PostParams::default(), &service("web", json!({"ports": [{"name": "http", "port": 80}]})))
        .await
        .unwrap();
    let ip = created.spec.unwrap().cluster_ip.unwrap();
    let t0 = Instant::now();
    until_async(Duration::from_secs(5), "new service", || async {
        a_records(&index, "web.default.svc.cluster.local.") == Some(vec![ip.clone()])
    })
    .await;
    eprintln!("new service visible after {:?}", t0.elapsed());
    // Its slice: the index drops the endpoints of a ClusterIP Service (they make no records).
    slices.create(&PostParams::default(), &endpoint_slice("web-1", "web", &["10.244.2.8"])).await.unwrap();

    // Headless service + slice; slice update; slice delete => NXDOMAIN.
    services
        .create(
            &PostParams::default(),
            &service("db", json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})),
        )
        .await
        .unwrap();
    slices.create(&PostParams::default(), &endpoint_slice("db-1", "db", &["10.244.1.5", "10.244.1.6"])).await.unwrap();
    until_async(Duration::from_secs(5), "headless records", || async {
        a_records(&index, "db.default.svc.cluster.local.")
            == Some(vec!["10.244.1.5".to_string(), "10.244.1.6".to_string()])
    })
    .await;
    let mut s = slices.get("db-1").await.unwrap();
    s.endpoints = endpoint_slice("x", "db", &["10.244.1.7"]).endpoints;
    slices.replace("db-1", &PostParams::default(), &s).await.unwrap();
    until_async(Duration::from_secs(5), "slice update", || async {
        a_records(&index, "db.default.svc.cluster.local.") == Some(vec!["10.244.1.7".to_string()])
    })
    .await;
    slices.delete("db-1", &DeleteParams::default()).await.unwrap();
    until_async(Duration::from_secs(5), "slice delete", || async {
        a_records(&index, "db.default.svc.cluster.local.").is_none()
    })
    .await;

    // Deleted service is gone as fast.
    services.delete("web", &DeleteParams::default()).await.unwrap();
    let t0 = Instant::now();
    until_async(Duration::from_secs(5), "service delete", || async {
        a_records(&index, "web.default.svc.cluster.local.").is_none()
    })
    .await;
    eprintln!("deleted service gone after {:?}", t0.elapsed());
    // The same name back as a headless Service: the slice's endpoints are read again.
    services
        .create(
            &PostParams::default(),
            &service("web", json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})),
        )
        .await
        .unwrap();
    until_async(Duration::from_secs(5), "endpoints of a Service turned headless", || async {
        a_records(&index, "web.default.svc.cluster.local.") == Some(vec!["10.244.2.8".to_string()])
    })
    .await;

    watch.abort();
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_dig_after_sync() {
    let dir = TempDir::new("serve");
    let (running, client) = yard_test_support::apiserver::start_in(&dir.0).await;
    let (udp, tcp, addr) = loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(addr) {
            break (udp, tcp, addr);
        }
    };
    let config = Config { upstreams: Some(vec![]), ..Config::default() };
    let server = tokio::spawn(yard_dns::serve(client.clone(), config, vec![udp], vec![tcp]));
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let created =
        services.create(&PostParams::default(), &service("hostnames", json!({"ports": [{"port": 80}]}))).await.unwrap();
    let ip = created.spec.unwrap().cluster_ip.unwrap();
    let dig = move |tcp: bool| {
        let mut c = Command::new("dig");
        c.args([&format!("@{}", addr.ip()), "-p", &addr.port().to_string(), "+short", "+time=2", "+tries=1"]);
        if tcp {
            c.arg("+tcp");
        }
        c.arg("hostnames.default.svc.cluster.local");
        String::from_utf8_lossy(&c.output().expect("dig").stdout).trim().to_string()
    };
    let start = Instant::now();
    loop {
        let out = tokio::task::spawn_blocking(move || dig(false)).await.unwrap();
        if out == ip {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no answer: {out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tokio::task::spawn_blocking(move || dig(true)).await.unwrap(), ip);
    server.abort();
    running.shutdown().await;
}
