//! Server-side search-path completion (autopath) with real stub resolvers: glibc's and musl's
//! `getaddrinfo` (one small C program built with `cc` and with `musl-gcc -static`), run inside a
//! network namespace of the test's own with a pod's resolv.conf (`search <ns>.svc.cluster.local
//! svc.cluster.local cluster.local`, `ndots:5`) bind-mounted in a private mount namespace. The
//! server listens inside that namespace; the client's source address is the pod's address.
//! Each library must resolve the same addresses with and without completion, and with it in
//! fewer queries.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::json;
use yard_dns::{Config, Index, PodIps};

const POD_IP: &str = "10.244.0.53";

const GAI: &str = r#"
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    struct addrinfo hints, *res, *p;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_CANONNAME;
    int r = getaddrinfo(argv[1], NULL, &hints, &res);
    if (r) { printf("error %s\n", gai_strerror(r)); return 0; }
    if (res->ai_canonname) printf("canon %s\n", res->ai_canonname);
    for (p = res; p; p = p->ai_next) {
        char buf[64];
        void *a = p->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr
                                          : (void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
        inet_ntop(p->ai_family, a, buf, sizeof buf);
        printf("addr %s\n", buf);
    }
    freeaddrinfo(res);
    return 0;
}
"#;

fn build(dir: &Path, compiler: &str, extra: &[&str], out: &str) -> PathBuf {
    let src = dir.join("gai.c");
    std::fs::write(&src, GAI).unwrap();
    let bin = dir.join(out);
    let st = Command::new(compiler)
        .args(extra)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("{compiler} (scripts/install-deps.sh installs it): {e}"));
    assert!(st.success(), "{compiler} failed");
    bin
}

/// Runs `bin name` in the namespace with `conf` as its /etc/resolv.conf.
fn resolve(ns: &yard_test_support::TempNetns, conf: &Path, bin: &Path, name: &str) -> String {
    let script = format!("mount --bind {} /etc/resolv.conf && exec {} {name}", conf.display(), bin.display());
    let out = yard_netns::command_in(ns.path(), "unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn queries(h: &yard_dns::Handler) -> u64 {
    let m = h.metrics();
    [RecordType::A, RecordType::AAAA]
        .iter()
        .flat_map(|t| [ResponseCode::NoError, ResponseCode::NXDomain, ResponseCode::Refused].map(|r| m.count(*t, r)))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glibc_and_musl_resolve_the_same_in_one_round_trip() {
    yard_test_support::require_root("network namespaces, mounts");
    let dir = yard_test_support::TempDir::new("dns-autopath");
    let glibc = build(&dir.0, "cc", &[], "gai-glibc");
    let musl = build(&dir.0, "musl-gcc", &["-static"], "gai-musl");
    let conf = dir.0.join("resolv.conf");
    std::fs::write(
        &conf,
        format!("nameserver {POD_IP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:1\n"),
    )
    .unwrap();

    let ns = yard_test_support::TempNetns::new("yard-dnsap").expect("create netns");
    ns.sh(&format!("ip link set lo up && ip addr add {POD_IP}/32 dev lo")).unwrap();
    let addr: SocketAddr = format!("{POD_IP}:53").parse().unwrap();
    let udp = yard_netns::udp_socket_in(ns.path(), addr).unwrap();
    let tcp = yard_netns::tcp_listener_in(ns.path(), addr).unwrap();

    let index = Arc::new(Index::new("cluster.local", 5).unwrap());
    let svc: Service = serde_json::from_value(json!({"metadata": {"namespace": "other", "name": "web"},
        "spec": {"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30"], "ports": [{"name": "http", "port": 80}]}}))
    .unwrap();
    index.upsert_service(&svc);
    index.set_synced(true);
    let pods = Arc::new(PodIps::default());
    let config = Config { upstreams: Some(vec![]), udp_workers: 1, ..Config::default() };
    let h = Arc::new(yard_dns::handler(index, &config, &[addr]).with_autopath(pods.clone()));
    let server = tokio::spawn(yard_dns::serve_handler(h.clone(), config, vec![udp], vec![tcp]));

    let pod: Pod = serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "client"},
        "spec": {"containers": []}, "status": {"phase": "Running", "podIP": POD_IP, "podIPs": [{"ip": POD_IP}]}}))
    .unwrap();
    for (lib, bin) in [("glibc", &glibc), ("musl", &musl)] {
        for name in ["web.other", "web.other.svc"] {
            // (The server's UDP workers are threads of their own: blocking here is fine.)
            let run = |bin: &Path| {
                let before = queries(&h);
                let out = resolve(&ns, &conf, bin, name);
                (out, queries(&h) - before)
            };
            // Not a known pod: the client walks its search list itself.
            pods.delete_pod(&pod);
            let (plain, plain_n) = run(bin);
            pods.upsert_pod(&pod);
            let (auto, auto_n) = run(bin);
            eprintln!("{lib} {name}: {plain_n} queries without autopath, {auto_n} with\n{auto}");
            assert!(auto.contains("addr 10.96.0.30"), "{lib} {name}: {auto}");
            assert_eq!(
                auto.lines().filter(|l| l.starts_with("addr")).collect::<Vec<_>>(),
                plain.lines().filter(|l| l.starts_with("addr")).collect::<Vec<_>>(),
                "{lib} {name}: different addresses with autopath:\n{plain}\n{auto}"
            );
            assert!(auto_n < plain_n, "{lib} {name}: {auto_n} queries with autopath, {plain_n} without");
            // One query per address family: the first question was answered.
            assert_eq!(auto_n, 2, "{lib} {name}");
        }
        // A name that exists nowhere in the cluster part: the same failure either way.
        let out = resolve(&ns, &conf, bin, "nothing.here");
        assert!(out.starts_with("error"), "{lib}: {out}");
    }
    assert!(h.metrics().autopath.load(std::sync::atomic::Ordering::Relaxed) >= 8);
    server.abort();
}
