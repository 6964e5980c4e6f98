//! A small private network for the kernel tests: a "node" namespace with bridge cni0
//! (10.244.1.1/24), pods on veths into it running socat servers that answer their name, a client
//! pod, and an "external" namespace (192.168.50.2) reaching the node at 192.168.50.1. Everything is
//! removed on drop (processes by their process group, then the namespaces).
//!
//! The namespaces are anonymous ones held by a `sleep` process we start (`unshare --net`) and
//! addressed as `/proc/PID/ns/net`: `yard_netns::TempNetns` re-binds `/run/netns` onto itself on
//! every create, which multiplies the host's mount table (ENOSPC after a few dozen namespaces), so
//! these tests stay out of `/run/netns` altogether.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use yard_proxy::model::{build, DesiredState};

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

/// A network namespace held open by a `sleep` we started; deleted when that process is killed.
pub struct TempNetns {
    holder: Child,
    path: std::path::PathBuf,
    pid: String,
}

impl TempNetns {
    pub fn new(_tag: &str) -> Result<TempNetns, String> {
        let holder = std::process::Command::new("unshare")
            .args(["--net", "sleep", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let pid = holder.id().to_string();
        let path = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
        let ns = TempNetns { holder, path, pid };
        let mine = std::fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::read_link(&ns.path) {
                Ok(l) if l != mine => break,
                _ if Instant::now() > deadline => return Err("unshare --net did not take effect".into()),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
    /// What `ip ... netns X` accepts: the holder's PID.
    pub fn name(&self) -> &str {
        &self.pid
    }
    pub fn sh(&self, script: &str) -> Result<String, String> {
        yard_netns::output_in(&self.path, "sh", &["-c", script]).map_err(|e| e.to_string())
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

pub struct Pod {
    pub ns: TempNetns,
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
    pub ext: TempNetns,
    pub node: TempNetns,
}

fn sh(ns: &TempNetns, script: &str) {
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
    pub fn new(tag: &str, n: usize) -> Topo {
        let node = TempNetns::new(&format!("ypx-{tag}-node")).expect("create netns (needs root)");
        sh(
            &node,
            "ip link add cni0 type bridge && ip addr add 10.244.1.1/24 dev cni0 && ip link set cni0 up && \
             sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.bridge.bridge-nf-call-iptables=1 && \
             ip link add dflt0 type bridge && ip link set dflt0 up && ip route add default dev dflt0",
        );
        let ext = TempNetns::new(&format!("ypx-{tag}-ext")).unwrap();
        sh(&node, &format!("ip link add ext0 type veth peer name eth0 netns {} && ip addr add {NODE_EXT_IP}/24 dev ext0 && ip link set ext0 up", ext.name()));
        sh(
            &ext,
            &format!(
                "ip addr add {EXT_IP}/24 dev eth0 && ip link set eth0 up && ip route add default via {NODE_EXT_IP}"
            ),
        );
        let mk_pod = |i: usize, ip: String, name: String| -> Pod {
            let ns = TempNetns::new(&format!("ypx-{tag}-p{i}")).unwrap();
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
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let ss = p.ns.sh("ss -ltnu").unwrap_or_default();
                if ss.contains(":9376") {
                    break;
                }
                assert!(Instant::now() < deadline, "servers in {} did not start: {ss}", p.name);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        topo
    }
}

/// One TCP request; Ok(first line) or Err(stderr).
pub fn tcp_get(ns: &TempNetns, ip: &str, port: u16) -> Result<String, String> {
    ns.sh(&format!("timeout 5 socat -u TCP:{ip}:{port},connect-timeout=3 STDOUT")).map(|s| s.trim().to_string())
}

/// `n` TCP requests; the answers (failures as "ERR").
pub fn tcp_many(ns: &TempNetns, ip: &str, port: u16, n: usize) -> Vec<String> {
    let out = ns
        .sh(&format!(
            "for i in $(seq {n}); do timeout 5 socat -u TCP:{ip}:{port},connect-timeout=3 STDOUT 2>/dev/null || echo ERR; done"
        ))
        .unwrap_or_default();
    out.lines().map(|l| l.trim().to_string()).collect()
}

/// One UDP request from a fixed source port (a socket bound inside `ns`); Ok(answer) or Err.
pub fn udp_get(ns: &TempNetns, ip: &str, port: u16, sport: u16) -> Result<String, String> {
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
