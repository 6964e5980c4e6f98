//! Real-kernel tests of the backends inside private namespaces (needs root).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use yard_proxy::model::DesiredState;
use yard_proxy::{Backend, Netns};

const VIP: &str = "10.96.0.50";

struct Cleanup<'a>(&'a mut dyn Backend);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.cleanup();
    }
}

fn hostnames(extra: Value) -> Value {
    let mut e = json!({"type": "NodePort", "nodePort": 30080});
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    service("hostnames", VIP, 80, "TCP", e)
}

/// The whole scenario against one backend. `sabotage` wipes the backend's kernel state the way an
/// admin might; `programmed` says whether anything of the backend is left in the node.
fn scenario(tag: &str, mk: impl FnOnce(Netns) -> Box<dyn Backend>, sabotage: &str, programmed: impl Fn(&Topo) -> bool) {
    let t = Topo::new(tag, 3);
    let mut backend = mk(Netns::new(Some(t.node.path().to_path_buf())));
    let b = Cleanup(backend.as_mut());
    let all = [("10.244.1.10", NODE), ("10.244.1.11", NODE), ("10.244.1.12", NODE)];
    let base_services = |h: Value| -> Vec<Value> {
        vec![
            h,
            service("self", "10.96.0.51", 80, "TCP", json!({})),
            service("empty", "10.96.0.52", 80, "TCP", json!({})),
            service("dns", "10.96.0.53", 53, "UDP", json!({})),
            service(
                "local",
                "10.96.0.54",
                80,
                "TCP",
                json!({"type": "NodePort", "nodePort": 30081, "externalTrafficPolicy": "Local"}),
            ),
        ]
    };
    let base_slices = |eps: &[(&str, &str)], dns: &str| -> Vec<Value> {
        vec![
            slice("hostnames", "TCP", eps),
            slice("self", "TCP", &[("10.244.1.10", NODE)]),
            slice("dns", "UDP", &[(dns, NODE)]),
            slice("local", "TCP", &[("10.244.1.11", NODE), ("10.244.2.5", "node-b")]),
        ]
    };
    let s1: DesiredState = state(&base_services(hostnames(json!({}))), &base_slices(&all, "10.244.1.10"));
    let n = b.0.sync(&s1).expect("full sync");
    assert_eq!(n, 5);
    assert!(programmed(&t));
    // A second sync with the same state changes nothing.
    assert_eq!(b.0.sync(&s1).unwrap(), 0);

    // Round robin over all three endpoints.
    let answers = tcp_many(&t.client.ns, VIP, 80, 30);
    assert_eq!(answers.len(), 30);
    assert_eq!(names(&answers), ["pod-0", "pod-1", "pod-2"].map(String::from).into(), "{answers:?}");
    // Off-cluster masquerade is not applied to pod clients: the server sees the client pod.
    assert!(answers.iter().all(|a| a.ends_with("10.244.1.100")), "{answers:?}");

    // NodePort on the node's address from another namespace (Cluster policy: masqueraded).
    let a = tcp_get(&t.ext, NODE_EXT_IP, 30080).expect("nodeport");
    assert!(a.starts_with("pod-"), "{a}");
    assert!(!a.ends_with(EXT_IP), "Cluster policy masquerades: {a}");

    // Hairpin: pod-0 reaches itself through a Service whose only endpoint it is.
    assert_eq!(tcp_get(&t.pods[0].ns, "10.96.0.51", 80).expect("hairpin").split_whitespace().next(), Some("pod-0"));

    // No endpoints: refused at once.
    let start = Instant::now();
    let e = tcp_get(&t.client.ns, "10.96.0.52", 80).expect_err("must be refused");
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}: {e}", start.elapsed());
    assert!(e.to_lowercase().contains("refused"), "{e}");

    // externalTrafficPolicy Local: only the local endpoint, client address preserved.
    let answers = tcp_many(&t.ext, NODE_EXT_IP, 30081, 10);
    assert!(answers.iter().all(|a| a == &format!("pod-1 {EXT_IP}")), "{answers:?}");

    // UDP: follows an endpoint change at once even for the same client flow (conntrack).
    assert_eq!(udp_get(&t.client.ns, "10.96.0.53", 53, 40000).expect("udp"), "pod-0");
    let s2 = state(&base_services(hostnames(json!({}))), &base_slices(&all, "10.244.1.11"));
    assert_eq!(b.0.sync(&s2).unwrap(), 1);
    let a = udp_get(&t.client.ns, "10.96.0.53", 53, 40000).expect("udp");
    assert_eq!(
        a,
        "pod-1",
        "{}\n{}",
        t.node.sh("iptables-save -t nat; nft list ruleset | head -80").unwrap_or_default(),
        t.node.sh("conntrack -L 2>&1").unwrap_or_default()
    );

    // ClientIP affinity pins one endpoint.
    let s3 =
        state(&base_services(hostnames(json!({"sessionAffinity": "ClientIP"}))), &base_slices(&all, "10.244.1.11"));
    assert_eq!(b.0.sync(&s3).unwrap(), 1);
    let answers = tcp_many(&t.client.ns, VIP, 80, 20);
    assert_eq!(names(&answers).len(), 1, "{answers:?}");

    // Scale down to two: the third never answers again.
    let two = [("10.244.1.10", NODE), ("10.244.1.11", NODE)];
    let s4 = state(&base_services(hostnames(json!({}))), &base_slices(&two, "10.244.1.11"));
    assert_eq!(b.0.sync(&s4).unwrap(), 1);
    let answers = tcp_many(&t.client.ns, VIP, 80, 30);
    assert_eq!(names(&answers), ["pod-0", "pod-1"].map(String::from).into(), "{answers:?}");

    // Someone wipes our rules: the check notices and the next sync restores them.
    t.node.sh(sabotage).expect("sabotage");
    assert!(!b.0.check().unwrap());
    b.0.sync(&s4).unwrap();
    assert!(b.0.check().unwrap());
    assert!(tcp_get(&t.client.ns, VIP, 80).unwrap().starts_with("pod-"));

    // Service deleted: its VIP stops answering.
    let mut s5 = s4.clone();
    s5.remove_service("default", "hostnames");
    assert_eq!(b.0.sync(&s5).unwrap(), 1);
    assert!(tcp_get(&t.client.ns, VIP, 80).is_err());

    // Stop removes everything.
    b.0.cleanup().unwrap();
    assert!(!programmed(&t), "left over after cleanup");
    drop(b);
}

#[test]
fn nftables_backend() {
    scenario(
        "nft",
        |ns| Box::new(yard_proxy::nft::NftBackend::new(ns, vec!["10.244.0.0/16".parse().unwrap()])),
        "nft flush ruleset",
        |t| t.node.sh("nft list table inet yard-proxy").is_ok(),
    );
}

#[test]
fn iptables_backend() {
    scenario(
        "ipt",
        |ns| Box::new(yard_proxy::iptables::IptablesBackend::new(ns, vec!["10.244.0.0/16".parse().unwrap()])),
        "iptables -t nat -F KUBE-SERVICES",
        |t| t.node.sh("iptables-save").map(|s| s.contains("KUBE-")).unwrap_or(true),
    );
}

#[test]
fn iptables_save_looks_like_kube_proxy() {
    let t = Topo::new("ipts", 0);
    let mut b = yard_proxy::iptables::IptablesBackend::new(
        Netns::new(Some(t.node.path().to_path_buf())),
        vec!["10.1.0.0/16".parse().unwrap()],
    );
    let g = Cleanup(&mut b);
    let s = state(
        &[json!({"metadata": {"namespace": "default", "name": "hostnames"},
            "spec": {"clusterIP": "10.0.91.192", "ports": [{"name": "default", "port": 80, "protocol": "TCP", "targetPort": 9376}]}})],
        &[
            json!({"metadata": {"namespace": "default", "name": "hostnames-a", "labels": {"kubernetes.io/service-name": "hostnames"}},
            "addressType": "IPv4", "ports": [{"name": "default", "port": 9376, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.1.161.47"]}, {"addresses": ["10.1.166.146"]}, {"addresses": ["10.1.166.166"]}]}),
        ],
    );
    g.0.sync(&s).unwrap();
    let save = t.node.sh("iptables-save").unwrap();
    let grep: Vec<&str> = save.lines().filter(|l| l.contains("hostnames")).collect();
    assert_eq!(grep, vec![
        "-A KUBE-SERVICES ! -s 10.1.0.0/16 -d 10.0.91.192/32 -p tcp -m comment --comment \"default/hostnames:default cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -d 10.0.91.192/32 -p tcp -m comment --comment \"default/hostnames:default cluster IP\" -m tcp --dport 80 -j KUBE-SVC-ODX2UBAZM7RQWOIU",
    ], "{save}");
    let svc: Vec<&str> = save.lines().filter(|l| l.starts_with("-A KUBE-SVC-ODX2UBAZM7RQWOIU")).collect();
    assert_eq!(svc.len(), 3);
    assert!(svc[0].contains("-m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-"), "{}", svc[0]);
    assert!(svc[1].contains("--probability 0.50000000000 -j KUBE-SEP-"), "{}", svc[1]);
    assert!(save.contains(":KUBE-SVC-ODX2UBAZM7RQWOIU - [0:0]"));
    assert!(save.contains("-j DNAT --to-destination 10.1.161.47:9376"));
    g.0.cleanup().unwrap();
    let save = t.node.sh("iptables-save").unwrap();
    assert!(!save.contains("KUBE-"), "{save}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn userspace_backend() {
    let t = Topo::new("usr", 3);
    let mut backend = yard_proxy::userspace::UserspaceBackend::new(
        Netns::new(Some(t.node.path().to_path_buf())),
        vec!["10.244.0.0/16".parse().unwrap()],
    )
    .unwrap();
    let b = Cleanup(&mut backend);
    let all = [("10.244.1.10", NODE), ("10.244.1.11", NODE), ("10.244.1.12", NODE)];
    let services = vec![
        service("hostnames", VIP, 80, "TCP", json!({"type": "NodePort", "nodePort": 30080})),
        service("dns", "10.96.0.53", 53, "UDP", json!({})),
        service("empty", "10.96.0.52", 80, "TCP", json!({})),
        service(
            "local",
            "10.96.0.54",
            80,
            "TCP",
            json!({"type": "NodePort", "nodePort": 30081, "externalTrafficPolicy": "Local"}),
        ),
    ];
    let local = slice("local", "TCP", &[("10.244.1.11", NODE), ("10.244.2.5", "node-b")]);
    let s1 = state(
        &services,
        &[slice("hostnames", "TCP", &all), slice("dns", "UDP", &[("10.244.1.10", NODE)]), local.clone()],
    );
    tokio::task::block_in_place(|| b.0.sync(&s1)).unwrap();
    let ns = &t.client.ns;
    let answers = tokio::task::block_in_place(|| tcp_many(ns, VIP, 80, 30));
    assert_eq!(names(&answers), ["pod-0", "pod-1", "pod-2"].map(String::from).into(), "{answers:?}");
    let a = tokio::task::block_in_place(|| tcp_get(&t.ext, NODE_EXT_IP, 30080)).expect("nodeport");
    assert!(a.starts_with("pod-"), "{a}");
    // externalTrafficPolicy Local: only the local endpoint, and it sees the client's address.
    let answers = tokio::task::block_in_place(|| tcp_many(&t.ext, NODE_EXT_IP, 30081, 10));
    assert!(answers.iter().all(|a| a == &format!("pod-1 {EXT_IP}")), "{answers:?}");
    // ...while a pod client of the same NodePort still works (proxied from the node's address).
    let a = tokio::task::block_in_place(|| tcp_get(ns, NODE_EXT_IP, 30081)).expect("nodeport from a pod");
    assert!(a.starts_with("pod-1 "), "{a}");
    let e = tokio::task::block_in_place(|| tcp_get(ns, "10.96.0.52", 80)).expect_err("refused");
    assert!(e.to_lowercase().contains("refused"), "{e}");
    assert_eq!(tokio::task::block_in_place(|| udp_get(ns, "10.96.0.53", 53, 40001)).unwrap(), "pod-0");
    let s2 = state(&services, &[slice("hostnames", "TCP", &all), slice("dns", "UDP", &[("10.244.1.11", NODE)]), local]);
    tokio::task::block_in_place(|| b.0.sync(&s2)).unwrap();
    assert_eq!(tokio::task::block_in_place(|| udp_get(ns, "10.96.0.53", 53, 40001)).unwrap(), "pod-1");
    tokio::task::block_in_place(|| b.0.cleanup()).unwrap();
    assert!(t.node.sh("ip link show yard-vip0").is_err());
    assert!(t.node.sh("nft list table inet yard-userspace").is_err(), "divert table left over");
    let rules = t.node.sh("ip rule; ip -6 rule").unwrap();
    assert!(!rules.contains("0x4000"), "{rules}");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_node_port() {
    let t = Topo::new("hc", 0);
    let mut hc = yard_proxy::health::HealthChecks::new(Netns::new(Some(t.node.path().to_path_buf())));
    let lb = |eps: &[(&str, &str)]| {
        state(
            &[service(
                "lb",
                "10.96.0.60",
                80,
                "TCP",
                json!({"type": "LoadBalancer", "nodePort": 30090, "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000}),
            )],
            &[slice("lb", "TCP", eps)],
        )
    };
    tokio::task::block_in_place(|| {
        hc.update(&lb(&[("10.244.1.10", NODE), ("10.244.1.11", NODE), ("10.244.2.9", "node-b")]))
    });
    let curl = |t: &Topo| {
        t.ext
            .sh(&format!("curl -s -m 3 -w ' %{{http_code}}' http://{NODE_EXT_IP}:32000/healthz; true"))
            .unwrap_or_default()
    };
    let out = tokio::task::block_in_place(|| curl(&t));
    assert!(out.ends_with(" 200"), "{out}");
    let body: serde_json::Value = serde_json::from_str(out.trim_end_matches(" 200")).unwrap();
    assert_eq!(body["localEndpoints"], 2);
    assert_eq!(body["service"]["namespace"], "default");
    assert_eq!(body["service"]["name"], "lb");
    tokio::task::block_in_place(|| hc.update(&lb(&[("10.244.2.9", "node-b")])));
    let out = tokio::task::block_in_place(|| curl(&t));
    assert!(out.ends_with(" 503") && out.contains("\"localEndpoints\":0"), "{out}");
    hc.update(&DesiredState::default());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = tokio::task::block_in_place(|| curl(&t));
    assert!(out.ends_with(" 000"), "server must be gone: {out}");
}
