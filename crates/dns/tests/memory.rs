//! Memory of the index at scale: 10,000 Services (10% headless) and 100,000 endpoints.
//! Issue target: < 60 MB (CoreDNS's published formula gives about 164 MB).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use yard_dns::Index;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn ten_thousand_services_hundred_thousand_endpoints() {
    let before = rss_bytes();
    let index = Index::new("cluster.local", 5).unwrap();
    for k in 0..10_000u32 {
        let ns = format!("ns-{}", k % 50);
        let name = format!("svc-{k}");
        let headless = k % 10 == 0;
        let cluster_ip = if headless {
            "None".to_string()
        } else {
            format!("10.{}.{}.{}", 96 + k / 65536, (k / 256) % 256, k % 256)
        };
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }))
        .unwrap();
        index.upsert_service(&svc);
        let eps: Vec<serde_json::Value> = (0..10u32)
            .map(|e| {
                let n = k * 10 + e;
                json!({"addresses": [format!("10.244.{}.{}", n / 250, n % 250 + 1)], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "name": format!("{name}-{e}"), "namespace": ns}})
            })
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{name}-abcde"), "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
        .unwrap();
        index.upsert_endpoint_slice(&slice);
    }
    let untrimmed = rss_bytes();
    // Give freed transient allocations (the JSON objects above) back, as a long-running
    // process would reuse them.
    unsafe { libc::malloc_trim(0) };
    let after = rss_bytes();
    eprintln!("untrimmed {:.1} MB", (untrimmed - before) as f64 / 1e6);
    let mb = (after.saturating_sub(before)) as f64 / 1e6;
    eprintln!("index with {} names: {mb:.1} MB", index.name_count());
    assert!(index
        .query(
            "svc-1.ns-1.svc.cluster.local.",
            hickory_proto::rr::RecordType::A
        )
        .is_some());
    assert!(mb < 60.0, "index uses {mb:.1} MB");
}
