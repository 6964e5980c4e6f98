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
                    ip: format!("10.{}.{}.{}", 100 + (i * eps + j) / 65536, ((i * eps + j) / 256) % 256, (i * eps + j) % 256).parse().unwrap(),
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

fn run(name: &str, mut b: Box<dyn Backend>) {
    let mut s = big(10_000, 10);
    let t = Instant::now();
    b.sync(&s).unwrap();
    println!("{name}: full sync 10k services / 100k endpoints: {:?}", t.elapsed());
    let k = s.services.keys().nth(5000).unwrap().clone();
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
fn scale_10k() {
    let ns = common::TempNetns::new("scale").unwrap();
    let p = || Netns::new(Some(ns.path().to_path_buf()));
    run("nftables", Box::new(yard_proxy::nft::NftBackend::new(p(), vec!["10.244.0.0/16".parse().unwrap()])));
    run("iptables", Box::new(yard_proxy::iptables::IptablesBackend::new(p(), vec!["10.244.0.0/16".parse().unwrap()])));
}
