//! Scale smoke test (ignored by default; run with `--ignored --nocapture`): full and incremental
//! sync times at 10,000 Services x 10 endpoints in a private namespace.

mod common;

use std::sync::Arc;
use std::time::Instant;

use yard_proxy::model::{DesiredState, Endpoint, Family, Protocol, ServicePort, ServicePortName};
use yard_proxy::{Backend, Netns};

fn big(n: usize, eps: usize) -> DesiredState {
    let mut s = DesiredState::default();
    for i in 0..n {
        s.insert(ServicePort {
            name: ServicePortName { namespace: "default".into(), name: format!("svc-{i}"), port: "http".into() },
            family: Family::V4,
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ips: vec![format!("10.96.{}.{}", i / 250, i % 250 + 1).parse().unwrap()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            node_port: None,
            affinity_timeout: None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
            endpoints: (0..eps)
                .map(|j| Endpoint {
                    ip: format!(
                        "10.{}.{}.{}",
                        100 + (i * eps + j) / 65536,
                        ((i * eps + j) / 256) % 256,
                        (i * eps + j) % 256
                    )
                    .parse()
                    .unwrap(),
                    port: 8080,
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: None,
                    local: false,
                })
                .collect(),
        });
    }
    s
}

fn run(name: &str, n: usize, mut b: Box<dyn Backend>) {
    let n = std::env::var("SCALE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    let mut s = big(n, 10);
    let t = Instant::now();
    b.sync(&s).unwrap();
    println!("{name}: full sync {n} services / {} endpoints: {:?}", n * 10, t.elapsed());
    let k = s.services.keys().nth(n / 2).unwrap().clone();
    let mut sp = (**s.services.get(&k).unwrap()).clone();
    sp.endpoints.pop();
    s.services.insert(k, Arc::new(sp));
    let t = Instant::now();
    assert_eq!(b.sync(&s).unwrap(), 1);
    println!("{name}: incremental sync of one endpoint change: {:?}", t.elapsed());
    b.cleanup().unwrap();
}

#[test]
#[ignore]
fn scale_10k_nftables() {
    let ns = {
        yard_test_support::require_root("network namespaces, nftables");
        common::HeldNetns::new().unwrap()
    };
    run(
        "nftables",
        10_000,
        Box::new(yard_proxy::nft::NftBackend::new(
            Netns::new(Some(ns.path().to_path_buf())),
            vec!["10.244.0.0/16".parse().unwrap()],
        )),
    );
}

/// iptables-nft restores 100k chains very slowly (minutes); 1,000 Services show the trend.
#[test]
#[ignore]
fn scale_1k_iptables() {
    let ns = {
        yard_test_support::require_root("network namespaces, nftables");
        common::HeldNetns::new().unwrap()
    };
    run(
        "iptables",
        1_000,
        Box::new(yard_proxy::iptables::IptablesBackend::new(
            Netns::new(Some(ns.path().to_path_buf())),
            vec!["10.244.0.0/16".parse().unwrap()],
        )),
    );
}
