//! A small private network for the kernel tests: a "node" namespace with bridge cni0
//! (10.244.1.1/24), pods on veths into it running socat servers that answer their name, a client
//! pod, and an "external" namespace (192.168.50.2) reaching the node at 192.168.50.1. Everything is
//! removed on drop (processes by their process group, then the namespaces).
//!
//! The namespaces are anonymous ones ([`HeldNetns`], held by a `sleep` we start and addressed as
//! `/proc/PID/ns/net`), so these tests, which make dozens, mount nothing under `/run/netns`.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use yard_proxy::model::{build, DesiredState};
pub use yard_test_support::HeldNetns;

pub const NODE: &str = "node-a";
pub const NODE_EXT_IP: &str = "192.168.50.1";
pub const EXT_IP: &str = "192.168.50.2";
pub const GW: &str = "10.244.1.1";

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

pub struct Pod {
    pub ns: HeldNetns,
    pub ip: String,
    pub name: String,
}

pub struct Topo {
    // Processes first: they are killed before the namespaces go.
    pub procs: Vec<Proc>,
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    pub pods: Vec<Pod>,
    pub client: Pod,
    pub ext: HeldNetns,
    pub node: HeldNetns,
}

fn sh(ns: &HeldNetns, script: &str) {
    if let Err(e) = ns.sh(script) {
        panic!("in {}: {script}: {e}", ns.name());
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Topo {
    /// `n` server pods (10.244.1.10+i, names pod-i) plus a client pod (10.244.1.100).
    pub fn new(_tag: &str, n: usize) -> Topo {
        yard_test_support::require_root("network namespaces, nftables");
        let node = HeldNetns::new().expect("create netns (needs root)");
        sh(
            &node,
            "ip link add cni0 type bridge && ip addr add 10.244.1.1/24 dev cni0 && ip link set cni0 up && \
             sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.bridge.bridge-nf-call-iptables=1 && \
             ip link add dflt0 type bridge && ip link set dflt0 up && ip route add default dev dflt0",
        );
        let ext = HeldNetns::new().unwrap();
        sh(&node, &format!("ip link add ext0 type veth peer name eth0 netns {} && ip addr add {NODE_EXT_IP}/24 dev ext0 && ip link set ext0 up", ext.name()));
        sh(
            &ext,
            &format!(
                "ip addr add {EXT_IP}/24 dev eth0 && ip link set eth0 up && ip route add default via {NODE_EXT_IP}"
            ),
        );
        let mk_pod = |i: usize, ip: String, name: String| -> Pod {
            let ns = HeldNetns::new().unwrap();
            sh(&node, &format!(
                "ip link add vp{i} type veth peer name eth0 netns {} && ip link set vp{i} master cni0 up && bridge link set dev vp{i} hairpin on",
                ns.name()
            ));
            sh(&ns, &format!("ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via {GW}"));
            Pod { ns, ip, name }
        };
        let pods: Vec<Pod> = (0..n).map(|i| mk_pod(i, format!("10.244.1.{}", 10 + i), format!("pod-{i}"))).collect();
        let client = mk_pod(99, "10.244.1.100".into(), "client".into());
        let mut topo =
            Topo { procs: Vec::new(), stop: Default::default(), threads: Vec::new(), pods, client, ext, node };
        for i in 0..n {
            let name = topo.pods[i].name.clone();
            let path = topo.pods[i].ns.path().to_path_buf();
            let tcp = yard_netns::command_in(&path, "socat")
                .args(["TCP-LISTEN:9376,fork,reuseaddr", &format!("SYSTEM:echo {name} $SOCAT_PEERADDR")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("socat");
            topo.procs.push(Proc(tcp));
            // UDP: a socket bound inside the pod answering its name to every datagram.
            let sock = yard_netns::udp_socket_in(&path, "0.0.0.0:5353".parse().unwrap()).expect("udp server");
            sock.set_nonblocking(false).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let stop = topo.stop.clone();
            topo.threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(format!("{name}\n").as_bytes(), peer);
                    }
                }
            }));
        }
        for p in &topo.pods {
            yard_test_support::until(Duration::from_secs(5), &format!("the servers in {} to listen", p.name), || {
                p.ns.sh("ss -ltnu").unwrap_or_default().contains(":9376")
            });
        }
        topo
    }
}

/// One TCP request; Ok(first line) or Err(stderr).
pub fn tcp_get(ns: &HeldNetns, ip: &str, port: u16) -> Result<String, String> {
    ns.sh(&format!("timeout 5 socat -u TCP:{ip}:{port},connect-timeout=3 STDOUT")).map(|s| s.trim().to_string())
}

/// `n` TCP requests; the answers (failures as "ERR").
pub fn tcp_many(ns: &HeldNetns, ip: &str, port: u16, n: usize) -> Vec<String> {
    let out = ns
        .sh(&format!(
            "for i in $(seq {n}); do timeout 5 socat -u TCP:{ip}:{port},connect-timeout=3 STDOUT 2>/dev/null || echo ERR; done"
        ))
        .unwrap_or_default();
    out.lines().map(|l| l.trim().to_string()).collect()
}

/// One UDP request from a fixed source port (a socket bound inside `ns`); Ok(answer) or Err.
pub fn udp_get(ns: &HeldNetns, ip: &str, port: u16, sport: u16) -> Result<String, String> {
    let sock =
        yard_netns::udp_socket_in(ns.path(), format!("0.0.0.0:{sport}").parse().unwrap()).map_err(|e| e.to_string())?;
    sock.set_nonblocking(false).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    sock.send_to(b"q\n", format!("{ip}:{port}")).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).map_err(|e| format!("no answer: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

pub fn names(answers: &[String]) -> std::collections::BTreeSet<String> {
    answers.iter().map(|a| a.split_whitespace().next().unwrap_or("").to_string()).collect()
}

pub fn service(name: &str, ip: &str, port: u16, proto: &str, extra: Value) -> Value {
    let mut spec = json!({
        "clusterIP": ip, "clusterIPs": [ip],
        "ports": [{"name": "p", "port": port, "protocol": proto,
                   "targetPort": if proto == "UDP" { 5353 } else { 9376 }}]
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if k == "nodePort" {
                s["ports"][0]["nodePort"] = v.clone();
            } else {
                s.insert(k.clone(), v.clone());
            }
        }
    }
    json!({"metadata": {"namespace": "default", "name": name}, "spec": spec})
}

/// An EndpointSlice of `svc` with ready endpoints `(ip, node)`.
pub fn slice(svc: &str, proto: &str, eps: &[(&str, &str)]) -> Value {
    json!({
        "metadata": {"namespace": "default", "name": format!("{svc}-x"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": if proto == "UDP" { 5353 } else { 9376 }, "protocol": proto}],
        "endpoints": eps.iter().map(|(ip, node)| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node})).collect::<Vec<_>>()
    })
}

pub fn state(services: &[Value], slices: &[Value]) -> DesiredState {
    let svcs: Vec<Service> = services.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
    let sls: Vec<EndpointSlice> = slices.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
    build(&svcs, &sls, NODE)
}
