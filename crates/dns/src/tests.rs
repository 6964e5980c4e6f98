//! Unit tests of the index and the query path.

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::index::Index;
use crate::metrics::Metrics;
use crate::server::{Action, Handler, Scratch};

pub(crate) fn svc(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

pub(crate) fn cluster_ip(ns: &str, name: &str, ips: &[&str], ports: serde_json::Value) -> Service {
    svc(ns, name, json!({"clusterIP": ips[0], "clusterIPs": ips, "ports": ports}))
}

pub(crate) fn headless(ns: &str, name: &str, ports: serde_json::Value) -> Service {
    svc(ns, name, json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": ports}))
}

/// endpoints: (ip, ready, hostname)
pub(crate) fn slice(
    ns: &str,
    name: &str,
    service: &str,
    family: &str,
    endpoints: &[(&str, Option<bool>, Option<&str>)],
    ports: serde_json::Value,
) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(ip, ready, host)| {
            let mut e = json!({"addresses": [ip]});
            if let Some(r) = ready {
                e["conditions"] = json!({"ready": r});
            }
            if let Some(h) = host {
                e["hostname"] = json!(h);
            }
            e
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "endpoints": eps,
        "ports": ports,
    }))
    .unwrap()
}

fn index() -> Index {
    let i = Index::new("cluster.local", 5).unwrap();
    i.set_synced(true);
    i
}

/// (nxdomain, answers, additionals); panics when the name would be forwarded.
fn q(i: &Index, name: &str, t: RecordType) -> (bool, Vec<Record>, Vec<Record>) {
    i.query(name, t).unwrap_or_else(|| panic!("{name} not authoritative"))
}

fn datas(v: &[Record]) -> Vec<String> {
    let mut d: Vec<String> = v.iter().map(|r| r.data.to_string()).collect();
    d.sort();
    d
}

fn nodata(i: &Index, name: &str, t: RecordType) {
    let (nx, a, _) = q(i, name, t);
    assert!(!nx, "{name} {t}: expected NODATA, got NXDOMAIN");
    assert!(a.is_empty(), "{name} {t}: expected NODATA, got {a:?}");
}

fn nxdomain(i: &Index, name: &str, t: RecordType) {
    let (nx, a, _) = q(i, name, t);
    assert!(nx, "{name} {t}: expected NXDOMAIN, got {a:?}");
    assert!(a.is_empty());
}

#[test]
fn cluster_ip_a_and_aaaa() {
    let i = index();
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10", "fd00::10"], json!([{"port": 80}])));
    let (nx, a, _) = q(&i, "web.default.svc.cluster.local.", RecordType::A);
    assert!(!nx);
    assert_eq!(datas(&a), vec!["10.96.0.10"]);
    assert_eq!(a[0].ttl, 5);
    assert_eq!(a[0].name.to_ascii(), "web.default.svc.cluster.local.");
    let (_, a, _) = q(&i, "web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(datas(&a), vec!["fd00::10"]);
    // Case-insensitive.
    let (_, a, _) = q(&i, "WeB.DeFault.SVC.Cluster.Local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.96.0.10"]);
    // Wrong type => NODATA.
    nodata(&i, "web.default.svc.cluster.local.", RecordType::TXT);
    nodata(&i, "web.default.svc.cluster.local.", RecordType::MX);
}

#[test]
fn ipv4_only_service_has_no_aaaa() {
    let i = index();
    i.upsert_service(&cluster_ip("default", "v4", &["10.96.0.11"], json!([])));
    nodata(&i, "v4.default.svc.cluster.local.", RecordType::AAAA);
}

#[test]
fn ttl_is_configurable() {
    let i = Index::new("cluster.local", 30).unwrap();
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10"], json!([])));
    let (_, a, _) = q(&i, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a[0].ttl, 30);
    let Some((_, _, _)) = i.query("x.default.svc.cluster.local.", RecordType::A) else { panic!() };
    assert_eq!(i.soa().ttl, 30);
}

#[test]
fn other_cluster_domain() {
    let i = Index::new("Corp.Example.", 5).unwrap();
    i.upsert_service(&cluster_ip("a", "b", &["10.96.0.12"], json!([])));
    let (_, a, _) = q(&i, "b.a.svc.corp.example.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.96.0.12"]);
    assert!(i.query("b.a.svc.cluster.local.", RecordType::A).is_none());
}

#[test]
fn srv_for_named_cluster_ip_ports() {
    let i = index();
    i.upsert_service(&cluster_ip(
        "default",
        "web",
        &["10.96.0.10"],
        json!([{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 9000}]),
    ));
    let (_, a, extra) = q(&i, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(datas(&a), vec!["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(datas(&extra), vec!["10.96.0.10"]);
    let (_, a, _) = q(&i, "_dns._udp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(datas(&a), vec!["0 100 53 web.default.svc.cluster.local."]);
    // Wrong protocol / unknown port name => NXDOMAIN.
    nxdomain(&i, "_dns._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    nxdomain(&i, "_nope._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    // Empty non-terminal `_tcp.<svc>` exists.
    nodata(&i, "_tcp.web.default.svc.cluster.local.", RecordType::SRV);
    // SRV name asked for A => NODATA.
    nodata(&i, "_http._tcp.web.default.svc.cluster.local.", RecordType::A);
}

#[test]
fn ptr_for_cluster_ips() {
    let i = index();
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10", "fd00::10"], json!([])));
    let (nx, a, _) = q(&i, "10.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert!(!nx);
    assert_eq!(datas(&a), vec!["web.default.svc.cluster.local."]);
    let rev6 = Name::from("fd00::10".parse::<std::net::IpAddr>().unwrap()).to_ascii();
    let (_, a, _) = q(&i, &rev6, RecordType::PTR);
    assert_eq!(datas(&a), vec!["web.default.svc.cluster.local."]);
    // Unknown reverse names are not ours (forwarded).
    assert!(i.query("11.0.96.10.in-addr.arpa.", RecordType::PTR).is_none());
    i.delete_service_named("default", "web");
    assert!(i.query("10.0.96.10.in-addr.arpa.", RecordType::PTR).is_none());
}

fn headless_fixture(i: &Index) {
    i.upsert_service(&headless("ns1", "db", json!([{"name": "pg", "port": 5432}])));
    i.upsert_endpoint_slice(&slice(
        "ns1",
        "db-abc",
        "db",
        "IPv4",
        &[
            ("10.244.1.5", Some(true), Some("db-0")),
            ("10.244.2.6", None, None),
            ("10.244.3.7", Some(false), Some("db-2")),
        ],
        json!([{"name": "pg", "port": 5433, "protocol": "TCP"}]),
    ));
}

/// Endpoints of a non-headless Service are not kept (they make no records); when the Service
/// turns headless, the index asks for its slices again and answers from them once given.
#[test]
fn endpoints_dropped_for_cluster_ip_services_and_refetched_when_headless() {
    let i = index();
    i.upsert_service(&svc("ns1", "db", json!({"type": "ExternalName", "externalName": "db.example.com"})));
    let the_slice = slice(
        "ns1",
        "db-abc",
        "db",
        "IPv4",
        &[("10.244.1.5", Some(true), Some("db-0"))],
        json!([{"name": "pg", "port": 5433, "protocol": "TCP"}]),
    );
    i.upsert_endpoint_slice(&the_slice);
    assert!(i.take_refetch().is_empty());
    i.upsert_service(&headless("ns1", "db", json!([{"name": "pg", "port": 5432}])));
    // The endpoints were dropped: nothing to answer until the slices are read again.
    nxdomain(&i, "db.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(i.take_refetch(), vec![("ns1".to_string(), "db".to_string())]);
    assert!(i.take_refetch().is_empty(), "asked once");
    i.upsert_endpoint_slice(&the_slice);
    let (_, a, _) = q(&i, "db-0.db.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.5"]);
    // A slice that arrives before its Service keeps its endpoints (the kind is not known yet).
    i.upsert_endpoint_slice(&slice("ns1", "web-abc", "web", "IPv4", &[("10.244.1.9", Some(true), None)], json!([])));
    i.upsert_service(&headless("ns1", "web", json!([])));
    assert!(i.take_refetch().is_empty());
    let (_, a, _) = q(&i, "web.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.9"]);
}

#[test]
fn headless_records() {
    let i = index();
    headless_fixture(&i);
    let (_, a, _) = q(&i, "db.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.5", "10.244.2.6"], "only ready endpoints");
    let (_, a, _) = q(&i, "db-0.db.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.5"]);
    // No hostname => dashed IP form, as CoreDNS.
    let (_, a, _) = q(&i, "10-244-2-6.db.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.2.6"]);
    // Not ready => absent.
    nxdomain(&i, "db-2.db.ns1.svc.cluster.local.", RecordType::A);
    // SRV per ready endpoint, endpoint port, targets are the hostname records.
    let (_, a, extra) = q(&i, "_pg._tcp.db.ns1.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        datas(&a),
        vec!["0 50 5433 10-244-2-6.db.ns1.svc.cluster.local.", "0 50 5433 db-0.db.ns1.svc.cluster.local."]
    );
    assert_eq!(datas(&extra), vec!["10.244.1.5", "10.244.2.6"]);
    // PTR per endpoint IP.
    let (_, a, _) = q(&i, "5.1.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(datas(&a), vec!["db-0.db.ns1.svc.cluster.local."]);
    let (_, a, _) = q(&i, "6.2.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(datas(&a), vec!["10-244-2-6.db.ns1.svc.cluster.local."]);
    assert!(i.query("7.3.244.10.in-addr.arpa.", RecordType::PTR).is_none());
}

#[test]
fn headless_ipv6_endpoints() {
    let i = index();
    i.upsert_service(&headless("ns1", "six", json!([])));
    i.upsert_endpoint_slice(&slice("ns1", "six-1", "six", "IPv6", &[("fd00::5", Some(true), None)], json!([])));
    let (_, a, _) = q(&i, "six.ns1.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(datas(&a), vec!["fd00::5"]);
    nodata(&i, "six.ns1.svc.cluster.local.", RecordType::A);
    let (_, a, _) = q(&i, "fd00--5.six.ns1.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(datas(&a), vec!["fd00::5"]);
}

#[test]
fn headless_without_ready_endpoints_is_nxdomain() {
    let i = index();
    i.upsert_service(&headless("ns1", "empty", json!([])));
    nxdomain(&i, "empty.ns1.svc.cluster.local.", RecordType::A);
    i.upsert_endpoint_slice(&slice("ns1", "empty-1", "empty", "IPv4", &[("10.244.1.9", Some(false), None)], json!([])));
    nxdomain(&i, "empty.ns1.svc.cluster.local.", RecordType::A);
    i.upsert_endpoint_slice(&slice("ns1", "empty-1", "empty", "IPv4", &[("10.244.1.9", Some(true), None)], json!([])));
    let (_, a, _) = q(&i, "empty.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.9"]);
    i.delete_endpoint_slice(&slice("ns1", "empty-1", "empty", "IPv4", &[], json!([])));
    nxdomain(&i, "empty.ns1.svc.cluster.local.", RecordType::A);
}

#[test]
fn publish_not_ready_addresses() {
    let i = index();
    i.upsert_service(&svc("ns1", "pnr", json!({"clusterIP": "None", "publishNotReadyAddresses": true})));
    i.upsert_endpoint_slice(&slice("ns1", "pnr-1", "pnr", "IPv4", &[("10.244.1.9", Some(false), None)], json!([])));
    let (_, a, _) = q(&i, "pnr.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.9"]);
}

#[test]
fn slices_before_service_and_multiple_slices() {
    let i = index();
    i.upsert_endpoint_slice(&slice("ns1", "h-1", "h", "IPv4", &[("10.244.1.1", Some(true), None)], json!([])));
    i.upsert_endpoint_slice(&slice("ns1", "h-2", "h", "IPv4", &[("10.244.1.2", Some(true), None)], json!([])));
    nxdomain(&i, "h.ns1.svc.cluster.local.", RecordType::A);
    i.upsert_service(&headless("ns1", "h", json!([])));
    let (_, a, _) = q(&i, "h.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.1", "10.244.1.2"]);
    // A slice relabelled to another service moves its endpoints.
    i.upsert_service(&headless("ns1", "g", json!([])));
    i.upsert_endpoint_slice(&slice("ns1", "h-2", "g", "IPv4", &[("10.244.1.2", Some(true), None)], json!([])));
    let (_, a, _) = q(&i, "h.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.1"]);
    let (_, a, _) = q(&i, "g.ns1.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.2"]);
}

#[test]
fn pods_with_hostname_and_subdomain() {
    // The endpoints controller copies pod.spec.hostname into the endpoint when
    // pod.spec.subdomain names the headless service.
    let i = index();
    i.upsert_service(&headless("default", "sub", json!([])));
    i.upsert_endpoint_slice(&slice(
        "default",
        "sub-x",
        "sub",
        "IPv4",
        &[("10.244.1.20", Some(true), Some("busybox-1"))],
        json!([]),
    ));
    let (_, a, _) = q(&i, "busybox-1.sub.default.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.244.1.20"]);
}

#[test]
fn external_name() {
    let i = index();
    i.upsert_service(&svc("default", "ext", json!({"type": "ExternalName", "externalName": "example.com"})));
    let (nx, a, _) = q(&i, "ext.default.svc.cluster.local.", RecordType::A);
    assert!(!nx);
    assert_eq!(datas(&a), vec!["example.com."]);
    assert_eq!(a[0].record_type(), RecordType::CNAME);
    let (_, a, _) = q(&i, "ext.default.svc.cluster.local.", RecordType::CNAME);
    assert_eq!(datas(&a), vec!["example.com."]);
    // In-cluster target: CNAME followed by the target's address records.
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10"], json!([])));
    i.upsert_service(&svc(
        "default",
        "alias",
        json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}),
    ));
    let (_, a, _) = q(&i, "alias.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].record_type(), RecordType::CNAME);
    assert_eq!(a[1].data.to_string(), "10.96.0.10");
    let (_, a, _) = q(&i, "alias.default.svc.cluster.local.", RecordType::CNAME);
    assert_eq!(a.len(), 1);
    // CNAME loops are bounded.
    i.upsert_service(&svc(
        "default",
        "l1",
        json!({"type": "ExternalName", "externalName": "l2.default.svc.cluster.local"}),
    ));
    i.upsert_service(&svc(
        "default",
        "l2",
        json!({"type": "ExternalName", "externalName": "l1.default.svc.cluster.local"}),
    ));
    let (_, a, _) = q(&i, "l1.default.svc.cluster.local.", RecordType::A);
    assert!(a.len() <= 9);
}

#[test]
fn dns_version_txt_and_apex() {
    let i = index();
    let (_, a, _) = q(&i, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(datas(&a), vec!["1.1.0"]);
    nodata(&i, "dns-version.cluster.local.", RecordType::A);
    let (_, a, _) = q(&i, "cluster.local.", RecordType::SOA);
    match &a[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
            assert_eq!(soa.rname.to_ascii(), "hostmaster.cluster.local.");
            assert_eq!(soa.minimum, 5);
        }
        other => panic!("{other:?}"),
    }
    let (_, a, _) = q(&i, "cluster.local.", RecordType::NS);
    assert_eq!(datas(&a), vec!["ns.dns.cluster.local."]);
    nodata(&i, "cluster.local.", RecordType::A);
}

#[test]
fn namespace_names_are_nodata_and_unknown_names_nxdomain() {
    let i = index();
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10"], json!([])));
    nodata(&i, "svc.cluster.local.", RecordType::A);
    nodata(&i, "pod.cluster.local.", RecordType::A);
    nodata(&i, "default.svc.cluster.local.", RecordType::A);
    nodata(&i, "other-ns.svc.cluster.local.", RecordType::A);
    nxdomain(&i, "nope.default.svc.cluster.local.", RecordType::A);
    nxdomain(&i, "nope.cluster.local.", RecordType::A);
    nxdomain(&i, "x.web.default.svc.cluster.local.", RecordType::A);
    // ndots:5 search-path expansions.
    nxdomain(&i, "web.default.svc.cluster.local.default.svc.cluster.local.", RecordType::A);
    nxdomain(&i, "web.default.svc.cluster.local.svc.cluster.local.", RecordType::A);
    nxdomain(&i, "web.default.svc.cluster.local.cluster.local.", RecordType::A);
    // The short name + search path finds it.
    let (_, a, _) = q(&i, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.len(), 1);
    // Outside the zone: not ours.
    assert!(i.query("example.com.", RecordType::A).is_none());
    assert!(i.query("web.default.svc.cluster.localx.", RecordType::A).is_none());
    assert!(i.query("local.", RecordType::A).is_none());
}

#[test]
fn pod_records() {
    let i = index();
    let (nx, a, _) = q(&i, "10-244-1-5.default.pod.cluster.local.", RecordType::A);
    assert!(!nx);
    assert_eq!(datas(&a), vec!["10.244.1.5"]);
    assert_eq!(a[0].name.to_ascii(), "10-244-1-5.default.pod.cluster.local.");
    nodata(&i, "10-244-1-5.default.pod.cluster.local.", RecordType::AAAA);
    let (_, a, _) = q(&i, "fd00--1.default.pod.cluster.local.", RecordType::AAAA);
    assert_eq!(datas(&a), vec!["fd00::1"]);
    nxdomain(&i, "10-244-1.default.pod.cluster.local.", RecordType::A);
    nxdomain(&i, "10-244-1-500.default.pod.cluster.local.", RecordType::A);
    nxdomain(&i, "x.10-244-1-5.default.pod.cluster.local.", RecordType::A);
}

#[test]
fn updates_and_deletes() {
    let i = index();
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10"], json!([{"name": "http", "port": 80}])));
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.20"], json!([])));
    let (_, a, _) = q(&i, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.96.0.20"]);
    nxdomain(&i, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert!(i.query("10.0.96.10.in-addr.arpa.", RecordType::PTR).is_none());
    // ClusterIP -> headless.
    i.upsert_service(&headless("default", "web", json!([])));
    nxdomain(&i, "web.default.svc.cluster.local.", RecordType::A);
    i.delete_service_named("default", "web");
    nxdomain(&i, "web.default.svc.cluster.local.", RecordType::A);
    // Static names survive.
    let (_, a, _) = q(&i, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(a.len(), 1);
}

#[test]
fn replace_after_relist() {
    let i = index();
    i.upsert_service(&cluster_ip("default", "a", &["10.96.0.1"], json!([])));
    i.upsert_service(&cluster_ip("default", "b", &["10.96.0.2"], json!([])));
    i.replace_services(&[cluster_ip("default", "b", &["10.96.0.3"], json!([]))]);
    nxdomain(&i, "a.default.svc.cluster.local.", RecordType::A);
    let (_, a, _) = q(&i, "b.default.svc.cluster.local.", RecordType::A);
    assert_eq!(datas(&a), vec!["10.96.0.3"]);
    i.upsert_service(&headless("default", "h", json!([])));
    i.upsert_endpoint_slice(&slice("default", "h-1", "h", "IPv4", &[("10.244.0.1", None, None)], json!([])));
    i.replace_endpoint_slices(&[]);
    nxdomain(&i, "h.default.svc.cluster.local.", RecordType::A);
    assert_eq!(i.service_count(), 2);
}

#[test]
fn shared_endpoint_ip_has_two_ptrs() {
    let i = index();
    for s in ["h1", "h2"] {
        i.upsert_service(&headless("default", s, json!([])));
        i.upsert_endpoint_slice(&slice(
            "default",
            &format!("{s}-1"),
            s,
            "IPv4",
            &[("10.244.0.7", None, Some("p"))],
            json!([]),
        ));
    }
    let (_, a, _) = q(&i, "7.0.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(datas(&a), vec!["p.h1.default.svc.cluster.local.", "p.h2.default.svc.cluster.local."]);
    i.delete_service_named("default", "h1");
    let (_, a, _) = q(&i, "7.0.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(datas(&a), vec!["p.h2.default.svc.cluster.local."]);
}

// ---------------------------------------------------------------- query path

fn handler(i: Index) -> Handler {
    Handler::new(Arc::new(i), None, Arc::new(Metrics::default()))
}

fn query_bytes(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask(h: &Handler, req: &[u8], tcp: bool) -> Option<(Message, usize)> {
    let mut s = Scratch::default();
    match h.handle(req, tcp, &mut s) {
        Action::Reply => Some((Message::from_vec(&s.out).expect("reply decodes"), s.out.len())),
        Action::Drop => None,
        Action::Forward(_) => panic!("unexpected forward"),
    }
}

#[test]
fn servfail_until_synced() {
    let i = Index::new("cluster.local", 5).unwrap();
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10"], json!([])));
    let h = handler(i);
    let (m, _) = ask(&h, &query_bytes("web.default.svc.cluster.local.", RecordType::A, None), false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    h.index().set_synced(true);
    let (m, _) = ask(&h, &query_bytes("web.default.svc.cluster.local.", RecordType::A, None), false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.metadata.id, 0x1234);
    assert!(m.metadata.recursion_desired);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(h.metrics().count(RecordType::A, ResponseCode::ServFail), 1);
    assert_eq!(h.metrics().count(RecordType::A, ResponseCode::NoError), 1);
}

#[test]
fn negative_answers_carry_soa() {
    let i = index();
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10"], json!([])));
    let h = handler(i);
    let (m, _) = ask(&h, &query_bytes("nope.default.svc.cluster.local.", RecordType::A, None), false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    let (m, _) = ask(&h, &query_bytes("web.default.svc.cluster.local.", RecordType::AAAA, None), false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // The question's case is echoed.
    let (m, _) = ask(&h, &query_bytes("WEB.default.svc.cluster.local.", RecordType::A, None), false).unwrap();
    assert_eq!(m.queries[0].name().to_ascii(), "WEB.default.svc.cluster.local.");
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn refused_outside_zone_without_upstreams() {
    let h = handler(index());
    let (m, _) = ask(&h, &query_bytes("example.com.", RecordType::A, None), false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative);
}

#[test]
fn malformed_input() {
    let h = handler(index());
    // Too short for a header: dropped.
    assert!(ask(&h, &[1, 2, 3], false).is_none());
    assert!(ask(&h, &[], false).is_none());
    // A header claiming one question that is not there: FORMERR with the same id.
    let mut bad = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let (m, _) = ask(&h, &bad, false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 0xabcd);
    // Truncated question.
    bad.extend_from_slice(&[3, b'w', b'e']);
    let (m, _) = ask(&h, &bad, false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Two questions.
    let mut two = Message::new(7, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(Name::from_ascii("a.cluster.local.").unwrap(), RecordType::A));
    two.add_query(Query::query(Name::from_ascii("b.cluster.local.").unwrap(), RecordType::A));
    let (m, _) = ask(&h, &two.to_vec().unwrap(), false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Responses are ignored.
    let mut resp = Message::new(7, MessageType::Response, OpCode::Query);
    resp.add_query(Query::query(Name::from_ascii("a.cluster.local.").unwrap(), RecordType::A));
    assert!(ask(&h, &resp.to_vec().unwrap(), false).is_none());
    // Other opcodes: NOTIMP.
    let mut upd = Message::new(8, MessageType::Query, OpCode::Update);
    upd.add_query(Query::query(Name::from_ascii("cluster.local.").unwrap(), RecordType::SOA));
    let (m, _) = ask(&h, &upd.to_vec().unwrap(), false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    // Zone transfers refused.
    let (m, _) = ask(&h, &query_bytes("cluster.local.", RecordType::AXFR, None), true).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // Chaos class in the zone: refused.
    let mut ch = Message::new(9, MessageType::Query, OpCode::Query);
    let mut cq = Query::query(Name::from_ascii("cluster.local.").unwrap(), RecordType::TXT);
    cq.set_query_class(DNSClass::CH);
    ch.add_query(cq);
    let (m, _) = ask(&h, &ch.to_vec().unwrap(), false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn edns_version_and_payload() {
    let h = handler(index());
    let mut m = Message::new(1, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii("cluster.local.").unwrap(), RecordType::SOA));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    let (r, _) = ask(&h, &m.to_vec().unwrap(), false).unwrap();
    // BADVERS (16) shares its code with BADSIG in hickory's decoder.
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.edns.is_some());
    let (r, _) = ask(&h, &query_bytes("cluster.local.", RecordType::SOA, Some(4096)), false).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let (r, _) = ask(&h, &query_bytes("cluster.local.", RecordType::SOA, None), false).unwrap();
    assert!(r.edns.is_none());
}

fn big_headless(n: usize) -> Index {
    let i = index();
    i.upsert_service(&headless("default", "big", json!([{"name": "http", "port": 80}])));
    let ips: Vec<String> = (0..n).map(|k| format!("10.244.{}.{}", k / 250, k % 250 + 1)).collect();
    let eps: Vec<(&str, Option<bool>, Option<&str>)> = ips.iter().map(|ip| (ip.as_str(), Some(true), None)).collect();
    i.upsert_endpoint_slice(&slice("default", "big-1", "big", "IPv4", &eps, json!([{"name": "http", "port": 8080}])));
    i
}

#[test]
fn truncation_and_sizes() {
    let h = handler(big_headless(300));
    let name = "big.default.svc.cluster.local.";
    // Plain UDP: 512 bytes, TC set, no answers.
    let (m, len) = ask(&h, &query_bytes(name, RecordType::A, None), false).unwrap();
    assert!(len <= 512);
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    // EDNS 1232 still too small for 300 A records (16 bytes each).
    let (m, len) = ask(&h, &query_bytes(name, RecordType::A, Some(1232)), false).unwrap();
    assert!(len <= 1232);
    assert!(m.metadata.truncation);
    // TCP: everything.
    let (m, _) = ask(&h, &query_bytes(name, RecordType::A, None), true).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 300);
    // A small headless service fits in 512.
    let h = handler(big_headless(20));
    let (m, len) = ask(&h, &query_bytes(name, RecordType::A, None), false).unwrap();
    assert!(len <= 512);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 20);
    // SRV answers whose additional section does not fit drop the additionals, not TC.
    // (SRV targets are never compressed: 6 SRV records fit in 512 bytes, their 6 A records don't.)
    let h = handler(big_headless(6));
    let (m, len) =
        ask(&h, &query_bytes("_http._tcp.big.default.svc.cluster.local.", RecordType::SRV, None), false).unwrap();
    assert!(len <= 512);
    assert_eq!(m.answers.len(), 6);
    assert!(m.additionals.len() < 6);
    assert!(!m.metadata.truncation);
    let (m, _) =
        ask(&h, &query_bytes("_http._tcp.big.default.svc.cluster.local.", RecordType::SRV, None), true).unwrap();
    let (_, _, extra) = h.index().query("_http._tcp.big.default.svc.cluster.local.", RecordType::SRV).unwrap();
    assert_eq!(extra.len(), 6);
    assert_eq!(m.additionals.len(), 6, "{m:?}");
}

// ---------------------------------------------------------------- answer cache

/// Answers `req` with the cached scratch `s`; returns the raw reply.
fn ask_cached(h: &Handler, s: &mut Scratch, req: &[u8]) -> Vec<u8> {
    match h.handle(req, false, s) {
        Action::Reply => s.out.clone(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn with_id(req: &[u8], id: u16) -> Vec<u8> {
    let mut r = req.to_vec();
    r[..2].copy_from_slice(&id.to_be_bytes());
    r
}

#[test]
fn cache_hits_are_the_bytes_of_a_fresh_answer_with_the_query_id() {
    let i = index();
    i.upsert_service(&cluster_ip("default", "web", &["10.96.0.10"], json!([{"name": "http", "port": 80}])));
    let h = handler(i);
    let mut s = Scratch::with_cache();
    let cases = [
        query_bytes("web.default.svc.cluster.local.", RecordType::A, None),
        query_bytes("web.default.svc.cluster.local.", RecordType::A, Some(1232)),
        query_bytes("WEB.Default.svc.cluster.local.", RecordType::A, None),
        query_bytes("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV, None),
        query_bytes("nope.default.svc.cluster.local.", RecordType::A, None),
        query_bytes("10-244-0-1.default.pod.cluster.local.", RecordType::A, None),
    ];
    for req in &cases {
        let first = ask_cached(&h, &mut s, req);
        for id in [7u16, 0xbeef] {
            let q = with_id(req, id);
            let hit = ask_cached(&h, &mut s, &q);
            // What an uncached handler answers for the same query.
            let mut fresh = Scratch::default();
            assert!(matches!(h.handle(&q, false, &mut fresh), Action::Reply));
            assert_eq!(hit, fresh.out, "cached reply differs for {:?}", Message::from_vec(req).unwrap().queries);
            assert_eq!(&hit[..2], &id.to_be_bytes());
            assert_eq!(hit[2..], first[2..]);
        }
    }
    // The question keeps the letter case it was asked with (one entry per spelling).
    let m = Message::from_vec(&ask_cached(&h, &mut s, &cases[2])).unwrap();
    assert_eq!(m.queries[0].name().to_ascii(), "WEB.Default.svc.cluster.local.");
    // Not `nope.default.svc...`: a name a search list produces is never cached as NXDOMAIN.
    assert_eq!(s.cache.as_ref().unwrap().len(), cases.len() - 1);
    // Hits are counted in the metrics like any answer once the worker flushes.
    h.flush_stats(&mut s);
    // A/NOERROR: 4 cases x (first + 2 hits + 2 uncached) + the case check above.
    assert_eq!(h.metrics().count(RecordType::A, ResponseCode::NoError), 4 * 5 + 1);
    assert_eq!(h.metrics().count(RecordType::A, ResponseCode::NXDomain), 5);
}

#[test]
fn cache_never_answers_from_an_older_index() {
    let i = index();
    let h = handler(i);
    let mut s = Scratch::with_cache();
    let req = query_bytes("new.default.svc.cluster.local.", RecordType::A, Some(1232));
    let rcode = |b: &[u8]| Message::from_vec(b).unwrap().metadata.response_code;
    assert_eq!(rcode(&ask_cached(&h, &mut s, &req)), ResponseCode::NXDomain);
    assert_eq!(rcode(&ask_cached(&h, &mut s, &req)), ResponseCode::NXDomain);
    // Created: the very next query sees it.
    h.index().upsert_service(&cluster_ip("default", "new", &["10.96.0.20"], json!([])));
    let m = Message::from_vec(&ask_cached(&h, &mut s, &req)).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(datas(&m.answers), vec!["10.96.0.20"]);
    // Changed address.
    h.index().upsert_service(&cluster_ip("default", "new", &["10.96.0.21"], json!([])));
    let m = Message::from_vec(&ask_cached(&h, &mut s, &req)).unwrap();
    assert_eq!(datas(&m.answers), vec!["10.96.0.21"]);
    // Deleted: gone at once.
    h.index().delete_service_named("default", "new");
    assert_eq!(rcode(&ask_cached(&h, &mut s, &req)), ResponseCode::NXDomain);
    // Not synced any more: SERVFAIL, not a cached answer.
    h.index().upsert_service(&cluster_ip("default", "new", &["10.96.0.22"], json!([])));
    assert_eq!(rcode(&ask_cached(&h, &mut s, &req)), ResponseCode::NoError);
    h.index().set_synced(false);
    assert_eq!(rcode(&ask_cached(&h, &mut s, &req)), ResponseCode::ServFail);
}

#[test]
fn cache_is_bounded_and_skips_tcp_and_big_replies() {
    let h = handler(big_headless(70));
    let mut s = Scratch::with_cache();
    // A reply bigger than an entry may be (70 A records) is not kept.
    let big = query_bytes("big.default.svc.cluster.local.", RecordType::A, Some(1232));
    let reply = ask_cached(&h, &mut s, &big);
    assert_eq!(Message::from_vec(&reply).unwrap().answers.len(), 70);
    assert!(reply.len() > crate::cache::MAX_ENTRY, "{}", reply.len());
    assert_eq!(s.cache.as_ref().unwrap().len(), 0);
    // TCP neither reads nor fills the cache.
    let small = query_bytes("dns-version.cluster.local.", RecordType::TXT, None);
    assert!(matches!(h.handle(&small, true, &mut s), Action::Reply));
    assert_eq!(s.cache.as_ref().unwrap().len(), 0);
    // Many distinct queries: never more than the table holds, and recent ones are found.
    let cache = s.cache.as_mut().unwrap();
    let reply = [0u8; 100];
    for k in 0..(crate::cache::SLOTS as u32 + 5000) {
        let q = query_bytes(&format!("n{k}.default.svc.cluster.local."), RecordType::A, None);
        cache.put(&q, 1, &reply, 0, false);
        assert!(cache.get(&q, 1).is_some());
        assert!(cache.get(&q, 2).is_none(), "answered for another generation");
    }
    assert!(cache.len() <= crate::cache::SLOTS);
}

// ---------------------------------------------------------------- autopath

fn pod(ns: &str, name: &str, ip: &str, spec: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }))
    .unwrap()
}

fn autopath_handler() -> (Handler, Arc<crate::PodIps>) {
    let i = index();
    i.upsert_service(&cluster_ip("other", "web", &["10.96.0.30"], json!([{"name": "http", "port": 80}])));
    i.upsert_service(&cluster_ip("default", "local", &["10.96.0.31"], json!([])));
    let pods = Arc::new(crate::PodIps::default());
    pods.upsert_pod(&pod("default", "client", "10.244.0.5", json!({"containers": []})));
    pods.upsert_pod(&pod("default", "hostnet", "172.18.0.2", json!({"hostNetwork": true, "containers": []})));
    pods.upsert_pod(&pod("default", "custom", "10.244.0.6", json!({"dnsPolicy": "None", "containers": []})));
    let h = handler(i).with_autopath(pods.clone());
    (h, pods)
}

fn ask_from(h: &Handler, name: &str, t: RecordType, from: &str) -> Message {
    let mut s = Scratch::with_cache();
    let req = query_bytes(name, t, None);
    let Action::Reply = h.handle_from(&req, false, Some(from.parse().unwrap()), &mut s) else { panic!("no reply") };
    Message::from_vec(&s.out).unwrap()
}

#[test]
fn autopath_answers_the_first_existing_search_expansion() {
    let (h, _pods) = autopath_handler();
    // `web.other` from a pod in `default`: the first expansion does not exist, the second does.
    let m = ask_from(&h, "web.other.default.svc.cluster.local.", RecordType::A, "10.244.0.5");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.queries[0].name().to_ascii(), "web.other.default.svc.cluster.local.");
    assert_eq!(m.answers.len(), 2, "{m:?}");
    assert_eq!(m.answers[0].name.to_ascii(), "web.other.default.svc.cluster.local.");
    assert_eq!(m.answers[0].data.to_string(), "web.other.svc.cluster.local.");
    assert_eq!(m.answers[1].name.to_ascii(), "web.other.svc.cluster.local.");
    assert_eq!(m.answers[1].data.to_string(), "10.96.0.30");
    // AAAA of the same lookup picks the same name: CNAME and no data (NODATA there).
    let m = ask_from(&h, "web.other.default.svc.cluster.local.", RecordType::AAAA, "10.244.0.5");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    // `web.other.svc`: the third search domain (the zone itself).
    let m = ask_from(&h, "web.other.svc.default.svc.cluster.local.", RecordType::A, "10.244.0.5");
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.answers[0].data.to_string(), "web.other.svc.cluster.local.");
    // SRV too.
    let m = ask_from(&h, "_http._tcp.web.other.default.svc.cluster.local.", RecordType::SRV, "10.244.0.5");
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.answers[1].record_type(), RecordType::SRV);
    assert_eq!(h.metrics().autopath.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[test]
fn autopath_leaves_everything_else_alone() {
    let (h, pods) = autopath_handler();
    let nx = |name: &str, t: RecordType, from: &str| {
        let m = ask_from(&h, name, t, from);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name} from {from}: {m:?}");
        assert!(m.answers.is_empty());
    };
    // Not a known pod, a host-network pod, a pod with its own DNS policy.
    nx("web.other.default.svc.cluster.local.", RecordType::A, "10.244.9.9");
    nx("web.other.default.svc.cluster.local.", RecordType::A, "172.18.0.2");
    nx("web.other.default.svc.cluster.local.", RecordType::A, "10.244.0.6");
    // Not the asking pod's namespace (not its first search domain).
    nx("web.other.kube-system.svc.cluster.local.", RecordType::A, "10.244.0.5");
    // Nothing exists further down the cluster part of the list: the client goes on itself.
    nx("example.com.default.svc.cluster.local.", RecordType::A, "10.244.0.5");
    // Other types.
    nx("web.other.default.svc.cluster.local.", RecordType::TXT, "10.244.0.5");
    // Existing names are answered as always.
    let m = ask_from(&h, "local.default.svc.cluster.local.", RecordType::A, "10.244.0.5");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "10.96.0.31");
    // A deleted pod no longer gets completion; a finished one neither.
    pods.delete_pod(&pod("default", "client", "10.244.0.5", json!({})));
    nx("web.other.default.svc.cluster.local.", RecordType::A, "10.244.0.5");
    pods.upsert_pod(&pod("default", "client", "10.244.0.5", json!({})));
    assert!(!ask_from(&h, "web.other.default.svc.cluster.local.", RecordType::A, "10.244.0.5").answers.is_empty());
    let mut done = pod("default", "client", "10.244.0.5", json!({}));
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    pods.upsert_pod(&done);
    nx("web.other.default.svc.cluster.local.", RecordType::A, "10.244.0.5");
    // An address reused by a new pod is not dropped by the old pod's deletion.
    pods.upsert_pod(&pod("default", "new", "10.244.0.5", json!({})));
    pods.delete_pod(&pod("default", "client", "10.244.0.5", json!({})));
    assert_eq!(pods.len(), 1);
    assert!(!ask_from(&h, "web.other.default.svc.cluster.local.", RecordType::A, "10.244.0.5").answers.is_empty());
}

#[test]
fn autopath_answers_are_not_served_to_others_from_the_cache() {
    let (h, _pods) = autopath_handler();
    let mut s = Scratch::with_cache();
    let req = query_bytes("web.other.default.svc.cluster.local.", RecordType::A, None);
    let code = |s: &Scratch| Message::from_vec(&s.out).unwrap().metadata.response_code;
    // An unknown source first (NXDOMAIN), then the pod (CNAME), then unknown again.
    for (from, want) in [
        ("10.244.9.9", ResponseCode::NXDomain),
        ("10.244.0.5", ResponseCode::NoError),
        ("10.244.9.9", ResponseCode::NXDomain),
        ("10.244.0.5", ResponseCode::NoError),
    ] {
        assert!(matches!(h.handle_from(&req, false, Some(from.parse().unwrap()), &mut s), Action::Reply));
        assert_eq!(code(&s), want, "from {from}");
    }
}
