//! Item 11 of the specification, end to end: a Service created through the API resolves through
//! `yard dns` within 100 ms of its creation, and a deleted one is gone as fast: no stale
//! negative or positive answer inside the cluster zone (the UDP workers' answer caches are
//! warmed with the old answer first). Its own test binary, so that no other test of this crate
//! shares the two cores while it measures.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::Service;
use kube::api::DeleteParams;
use kube::Api;
use serde_json::json;

const LIMIT: Duration = Duration::from_millis(100);

/// Asks over UDP with the same query bytes every time (so a worker's answer cache would serve
/// a stale reply if it had one), every millisecond, until `done` holds; the time it took.
async fn poll(s: SocketAddr, name: &str, t: RecordType, done: impl Fn(&Message) -> bool) -> Duration {
    let req = Message::from_vec(&query_bytes(0x7777, name, t)).unwrap();
    let start = Instant::now();
    loop {
        if let Some(m) = exchange(s, &req, Duration::from_millis(200)).await {
            if done(&m) {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{name} {t}: no fresh answer after 5 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_deleted_services_are_visible_within_100ms() {
    let dir = TempDir::new("fresh");
    let (running, client) = api_server(&dir).await;
    let upstream = FakeUpstream::start().await;
    let dns = synced_dns(&running, &upstream, &[]).await;
    let s = dns.addr;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for k in 0..5 {
        let name = format!("fresh-{k}");
        let fqdn = format!("{name}.default.svc.cluster.local.");
        let srv = format!("_http._tcp.{fqdn}");
        // Negative answers first, several times over (every UDP worker sees them).
        for _ in 0..8 {
            assert_eq!(ask(s, &fqdn, RecordType::A).await.0, ResponseCode::NXDomain);
            assert_eq!(ask(s, &srv, RecordType::SRV).await.0, ResponseCode::NXDomain);
        }
        let created: Service =
            create(&services, json!({"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 80}]}}))
                .await;
        let ip = created.spec.unwrap().cluster_ip.unwrap();
        let took = poll(s, &fqdn, RecordType::A, |m| {
            m.metadata.response_code == ResponseCode::NoError
                && m.answers.len() == 1
                && m.answers[0].data.to_string() == ip
        })
        .await;
        let (_, srv_answer) = ask(s, &srv, RecordType::SRV).await;
        assert_eq!(srv_answer, vec![format!("0 100 80 {fqdn}")]);
        // Positive answers cached everywhere, then the Service deleted.
        for _ in 0..8 {
            assert_eq!(ask(s, &fqdn, RecordType::A).await.1, vec![ip.clone()]);
        }
        services.delete(&name, &DeleteParams::default()).await.unwrap();
        let gone = poll(s, &fqdn, RecordType::A, |m| {
            m.metadata.response_code == ResponseCode::NXDomain && m.answers.is_empty()
        })
        .await;
        assert_eq!(ask(s, &srv, RecordType::SRV).await.0, ResponseCode::NXDomain);
        eprintln!("{name}: resolvable {took:?} after create returned, gone {gone:?} after delete returned");
        worst = (worst.0.max(took), worst.1.max(gone));
    }
    assert!(worst.0 < LIMIT, "a new service took {:?} to resolve", worst.0);
    assert!(worst.1 < LIMIT, "a deleted service took {:?} to go", worst.1);
    // Nothing of the cluster zone went upstream.
    assert!(upstream.log.lock().unwrap().is_empty());
    drop(dns);
    running.shutdown().await;
}
