//! Fuzz-style robustness test of the query path: random, mutated and truncated packets for a
//! bounded time with a fixed seed. Every reply must decode, echo the id and fit the transport.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use yard_dns::server::{Action, Scratch};
use yard_dns::{Config, Index};

fn seeds() -> Vec<Vec<u8>> {
    let names = [
        "web.default.svc.cluster.local.",
        "_http._tcp.web.default.svc.cluster.local.",
        "big.default.svc.cluster.local.",
        "10-244-1-1.default.pod.cluster.local.",
        "default.svc.cluster.local.",
        "dns-version.cluster.local.",
        "1.0.96.10.in-addr.arpa.",
        "cluster.local.",
        "example.com.",
    ];
    let types = [RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::PTR, RecordType::TXT, RecordType::ANY];
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            let mut m = Message::new((i * 16 + j) as u16, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(n).unwrap(), *t));
            if j % 2 == 0 {
                let mut e = Edns::new();
                e.set_max_payload(if j % 4 == 0 { 512 } else { 4096 });
                m.set_edns(e);
            }
            out.push(m.to_vec().unwrap());
        }
    }
    out
}

#[test]
fn random_and_mutated_packets_never_panic() {
    let index = Arc::new(Index::new("cluster.local", 5).unwrap());
    index.upsert_service(
        &serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "ports": [{"name": "http", "port": 80}]}}))
        .unwrap(),
    );
    index.upsert_service(
        &serde_json::from_value(
            json!({"metadata": {"namespace": "default", "name": "big"}, "spec": {"clusterIP": "None"}}),
        )
        .unwrap(),
    );
    let eps: Vec<serde_json::Value> =
        (0..200).map(|k| json!({"addresses": [format!("10.244.{}.{}", k / 100, k % 100 + 1)]})).collect();
    index.upsert_endpoint_slice(
        &serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "big-1",
            "labels": {"kubernetes.io/service-name": "big"}}, "addressType": "IPv4", "endpoints": eps}))
        .unwrap(),
    );
    index.set_synced(true);
    let config = Config { upstreams: Some(vec![]), ..Config::default() };
    let handler = yard_dns::handler(index, &config, &[]);
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut s = Scratch::default();
    // A UDP worker's scratch with its answer cache: its replies must equal uncached ones.
    let mut cached = Scratch::with_cache();
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut n, mut replies) = (0u64, 0u64);
    while Instant::now() < deadline && n < 2_000_000 {
        n += 1;
        let mut pkt: Vec<u8> = match rng.random_range(0..4) {
            0 => (0..rng.random_range(0..600)).map(|_| rng.random()).collect(),
            _ => seeds[rng.random_range(0..seeds.len())].clone(),
        };
        // Mutations: flips, truncation, insertions, header count games.
        for _ in 0..rng.random_range(0..6) {
            if pkt.is_empty() {
                break;
            }
            match rng.random_range(0..5) {
                0 => {
                    let i = rng.random_range(0..pkt.len());
                    pkt[i] ^= 1 << rng.random_range(0..8);
                }
                1 => pkt.truncate(rng.random_range(0..pkt.len())),
                2 => {
                    let i = rng.random_range(0..=pkt.len());
                    pkt.insert(i, rng.random());
                }
                3 => {
                    let i = rng.random_range(0..pkt.len());
                    pkt[i] = rng.random();
                }
                _ => {
                    if pkt.len() >= 12 {
                        let i = 4 + 2 * rng.random_range(0..4);
                        pkt[i] = rng.random_range(0..3);
                        pkt[i + 1] = rng.random_range(0..3);
                    }
                }
            }
        }
        let tcp = rng.random_bool(0.3);
        let via_cache = !tcp && rng.random_bool(0.5);
        if via_cache {
            if let Action::Reply = handler.handle(&pkt, false, &mut cached) {
                assert!(
                    matches!(handler.handle(&pkt, false, &mut s), Action::Reply),
                    "cache answered a packet the uncached path does not: {pkt:?}"
                );
                assert_eq!(cached.out, s.out, "cached reply differs: {pkt:?}");
            }
        }
        match handler.handle(&pkt, tcp, if via_cache { &mut cached } else { &mut s }) {
            Action::Reply => {
                let s = if via_cache { &cached } else { &s };
                replies += 1;
                assert!(tcp || s.out.len() <= 4096, "UDP reply of {} bytes", s.out.len());
                let m = Message::from_vec(&s.out).unwrap_or_else(|e| panic!("reply does not decode: {e}: {pkt:?}"));
                assert_eq!(m.metadata.id, u16::from_be_bytes([pkt[0], pkt[1]]));
                assert_eq!(m.metadata.message_type, MessageType::Response);
            }
            Action::Drop => assert!(pkt.len() < 12 || pkt[2] & 0x80 != 0, "dropped a query: {pkt:?}"),
            Action::Forward(_) => panic!("forwarded without upstreams"),
        }
    }
    eprintln!("{n} packets, {replies} replies");
    assert!(n > 2_000, "only {n} packets in the time bound");
    assert!(replies > 1_000, "only {replies} replies");
}
