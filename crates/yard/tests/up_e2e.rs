//! Issue 7 acceptance: the README walkthrough and the seed tutorials' example application against
//! `yard up`, step by step, with the real kubectl; cluster networks live only in namespaces
//! `yard up` creates and removes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// Clusters in this file run one at a time: each is a whole cluster on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn names_via(up: &Up, node: Option<&str>, url: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let o = up.shell(node, &["curl", "-s", "-m", "2", url]);
            stdout_of(&o).trim().to_string()
        })
        .collect()
}

#[test]
fn seed_walkthrough_nftables() {
    let _serial = serial();
    let dir = TempDir::new("up");
    let data = dir.0.join("data");
    let before = host_snapshot();
    let mut up = Up::start("e2ewalk", &data, &["-f", examples_dir().join("hostnames.yaml").to_str().unwrap()]);
    let out = up.stdout.lock().unwrap().clone();
    assert!(out.contains("deployment.apps/hostnames created") && out.contains("service/hostnames created"), "{out}");

    // get svc/ep/pods -o wide.
    let ip = up.k(&["get", "svc", "hostnames", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(ip.starts_with("10."), "{ip}");
    let ep = up.k(&["get", "ep", "hostnames"]);
    let eps = ep.lines().nth(1).unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(eps.split(',').count(), 3, "{ep}");
    assert!(eps.split(',').all(|e| e.starts_with("10.244.") && e.ends_with(":9376")), "{ep}");
    let pods = up.k(&["get", "pods", "-o", "wide"]);
    assert_eq!(pods.lines().filter(|l| l.contains("Running") && l.contains("1/1")).count(), 3, "{pods}");

    // curl the ClusterIP from a node: the hostnames rotate over all 3 pods.
    let got: BTreeSet<String> = names_via(&up, None, &ip, 30).into_iter().collect();
    let pod_names: BTreeSet<String> = up
        .k(&["get", "pods", "-l", "app=hostnames", "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(got, pod_names, "30 requests should reach all 3 pods");

    // scale to 2: endpoints follow.
    up.k(&["scale", "--replicas=2", "deploy", "hostnames"]);
    let two = eventually(Duration::from_secs(20), || {
        let ep = up.k(&["get", "ep", "hostnames", "-o", "jsonpath={.subsets[*].addresses[*].ip}"]);
        (ep.split_whitespace().count() == 2).then_some(ep)
    });
    assert!(two.is_some(), "endpoints did not drop to 2");
    let got: BTreeSet<String> = names_via(&up, None, &ip, 20).into_iter().collect();
    assert_eq!(got.len(), 2, "{got:?}");

    // describe svc.
    let d = up.k(&["describe", "svc", "hostnames"]);
    for want in [
        "Selector:",
        "app=hostnames",
        "Type:",
        "ClusterIP",
        "IP:",
        "Port:",
        "TargetPort:",
        "9376/TCP",
        "Endpoints:",
        ":9376",
        "Session Affinity:",
        "Events:",
    ] {
        assert!(d.contains(want), "describe lacks {want}: {d}");
    }

    // The demo namespace: nginx, headless, NodePort, busybox test pod.
    up.k(&["apply", "-f", examples_dir().join("demo.yaml").to_str().unwrap()]);
    up.k(&["apply", "-f", examples_dir().join("externalname.yaml").to_str().unwrap()]);
    up.k(&["wait", "--for=condition=Ready", "pod", "--all", "-n", "demo", "--timeout=60s"]);
    let svc_ip = up.k(&["get", "svc", "-n", "demo", "nginx-prod-svc-demo", "-o", "jsonpath={.spec.clusterIP}"]);
    let ns_out = stdout_of(&up.kubectl(&[
        "exec",
        "-n",
        "demo",
        "headless-svc-test-pod",
        "--",
        "nslookup",
        "nginx-prod-svc-demo",
    ]));
    assert!(ns_out.contains(&svc_ip), "nslookup of the ClusterIP service: {ns_out}");
    let pod_ips: Vec<String> = up
        .k(&["get", "pods", "-n", "demo", "-l", "app=nginx", "-o", "jsonpath={.items[*].status.podIP}"])
        .split_whitespace()
        .map(String::from)
        .collect();
    let hl = stdout_of(&up.kubectl(&[
        "exec",
        "-n",
        "demo",
        "headless-svc-test-pod",
        "--",
        "nslookup",
        "nginx-prod-demo-headless-svc",
    ]));
    for ip in &pod_ips {
        assert!(hl.contains(ip.as_str()), "headless lookup lacks {ip}: {hl}");
    }
    let cname = stdout_of(&up.kubectl(&[
        "exec",
        "-n",
        "demo",
        "headless-svc-test-pod",
        "--",
        "nslookup",
        "-type=CNAME",
        "backend-alias.demo.svc.cluster.local",
    ]));
    assert!(cname.contains("nginx-prod-svc-demo.demo.svc.cluster.local"), "ExternalName CNAME: {cname}");
    let env = up.k(&["exec", "-n", "demo", "headless-svc-test-pod", "--", "env"]);
    for want in [
        format!("NGINX_PROD_SVC_DEMO_SERVICE_HOST={svc_ip}"),
        "NGINX_PROD_SVC_DEMO_SERVICE_PORT=80".into(),
        "NGINX_PROD_SVC_DEMO_SERVICE_PORT_HTTP=80".into(),
        format!("NGINX_PROD_SVC_DEMO_PORT=tcp://{svc_ip}:80"),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".into(),
    ] {
        assert!(env.contains(&want), "env lacks {want}: {env}");
    }
    let page = stdout_of(&up.kubectl(&[
        "exec",
        "-n",
        "demo",
        "headless-svc-test-pod",
        "--",
        "wget",
        "-q",
        "-O-",
        "http://nginx-prod-svc-demo",
    ]));
    assert!(page.to_lowercase().contains("nginx"), "{page}");
    // NodePort from outside the node: from the cluster's network namespace, on the node's IP.
    let hub = format!("yard-{}-net", up.name);
    let np = std::process::Command::new("ip")
        .args(["netns", "exec", &hub, "curl", "-s", "-m", "3", "http://172.18.0.2:30000/"])
        .output()
        .unwrap();
    assert!(stdout_of(&np).to_lowercase().contains("nginx"), "NodePort: {:?}", np);

    let stopped = up.stop();
    assert!(stopped.contains("stopped"), "{stopped}");
    assert_eq!(before, host_snapshot(), "the host changed after Ctrl-C");
}

/// The last seed tutorial's example application, step by step: a frontend pod reaches a backend
/// pod by its IP; the deleted pod is replaced (new name) and the Endpoints follow; the Service IP
/// balances over both backends; the Service's DNS name reaches them too.
#[test]
fn seed_example_app_pod_ip_then_service() {
    let _serial = serial();
    let dir = TempDir::new("up-example");
    let data = dir.0.join("data");
    let before = host_snapshot();
    let mut up = Up::start("e2eexample", &data, &["-f", examples_dir().join("example-app.yaml").to_str().unwrap()]);
    up.k(&["wait", "--for=condition=Ready", "pod", "--all", "-n", "example", "--timeout=60s"]);
    let backends = |up: &Up| -> Vec<(String, String)> {
        let out = up.k(&[
            "get",
            "pods",
            "--selector=app=backend",
            "-n",
            "example",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 2).then(|| (f[0].to_string(), f[1].to_string()))
            })
            .collect()
    };
    let first = backends(&up);
    assert_eq!(first.len(), 2, "{first:?}");
    let frontend =
        up.k(&["get", "pods", "--selector=app=frontend", "-n", "example", "-o", "jsonpath={.items[0].metadata.name}"]);
    let wget = |up: &Up, url: &str| {
        stdout_of(&up.kubectl(&["exec", &frontend, "-n", "example", "--", "wget", "-q", "-O", "-", url]))
    };

    // The frontend reaches the first backend pod by its IP.
    let (gone_name, gone_ip) = first[0].clone();
    assert_eq!(wget(&up, &format!("http://{gone_ip}:5000/healthy")), "{\"healthy\":true}");

    // Delete it: the ReplicaSet makes another (a new name), and the Endpoints follow.
    let out = up.k(&["delete", "pods", &gone_name, "-n", "example"]);
    // (kubectl 1.33 and later add " from example namespace".)
    assert!(out.trim().starts_with(&format!("pod \"{gone_name}\" deleted")), "{out}");
    let now = eventually(Duration::from_secs(30), || {
        let b = backends(&up);
        (b.len() == 2 && b.iter().all(|(n, _)| *n != gone_name)).then_some(b)
    })
    .expect("a replacement backend pod");
    up.k(&["wait", "--for=condition=Ready", "pod", "--selector=app=backend", "-n", "example", "--timeout=60s"]);
    let mut want: Vec<String> = now.iter().map(|(_, ip)| format!("{ip}:5000")).collect();
    want.sort();
    let eps = eventually(Duration::from_secs(20), || {
        let line = up
            .k(&["get", "endpoints", "-n", "example"])
            .lines()
            .find(|l| l.starts_with("backend-service "))
            .map(String::from)?;
        let mut got: Vec<String> = line.split_whitespace().nth(1)?.split(',').map(String::from).collect();
        got.sort();
        (got == want).then_some(got)
    });
    assert!(
        eps.is_some(),
        "backend-service endpoints never became {want:?}: {}",
        up.k(&["get", "endpoints", "-n", "example"])
    );

    // The Service IP balances over both backends, and so does its DNS name.
    let svc_ip = up.k(&["get", "service", "backend-service", "-n", "example", "-o", "jsonpath={.spec.clusterIP}"]);
    let names: BTreeSet<String> = now.iter().map(|(n, _)| format!("{{\"host_name\":\"{n}\"}}")).collect();
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(wget(&up, &format!("http://{svc_ip}:5000/host_name")));
        if seen == names {
            break;
        }
    }
    assert_eq!(seen, names, "20 requests to the Service IP should reach both backends");
    let by_name = wget(&up, "http://backend-service.example.svc.cluster.local:5000/host_name");
    assert!(names.contains(&by_name), "{by_name}");
    assert_eq!(wget(&up, "http://frontend-service:3000/"), "frontend\n");

    let stopped = up.stop();
    assert!(stopped.contains("stopped"), "{stopped}");
    assert_eq!(before, host_snapshot(), "the host changed after Ctrl-C");
}

#[test]
fn iptables_mode_rules_look_like_kube_proxy() {
    let _serial = serial();
    let dir = TempDir::new("upipt");
    let data = dir.0.join("data");
    let up = Up::start(
        "e2eipt",
        &data,
        &["--proxy-mode", "iptables", "-f", examples_dir().join("hostnames.yaml").to_str().unwrap()],
    );
    let ip = up.k(&["get", "svc", "hostnames", "-o", "jsonpath={.spec.clusterIP}"]);
    let rules = stdout_of(&up.shell(None, &["sh", "-c", "iptables-save | grep hostnames"]));
    assert!(rules.contains(&format!("-d {ip}/32 -p tcp -m comment --comment \"default/hostnames:default cluster IP\" -m tcp --dport 80 -j KUBE-SVC-")), "{rules}");
    let svc_chain = rules.split_whitespace().find(|w| w.starts_with("KUBE-SVC-")).unwrap().to_string();
    let chain = stdout_of(&up.shell(None, &["sh", "-c", &format!("iptables-save | grep -- '-A {svc_chain}'")]));
    assert!(chain.contains("--probability 0.33333333349"), "{chain}");
    let got: BTreeSet<String> = names_via(&up, None, &ip, 30).into_iter().collect();
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn three_nodes_spread_and_reach_from_every_node() {
    let _serial = serial();
    let dir = TempDir::new("up3");
    let data = dir.0.join("data");
    let up =
        Up::start("e2e3n", &data, &["--nodes", "3", "-f", examples_dir().join("hostnames.yaml").to_str().unwrap()]);
    let nodes: BTreeSet<String> = up
        .k(&["get", "pods", "-l", "app=hostnames", "-o", "jsonpath={.items[*].spec.nodeName}"])
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(nodes.len() >= 2, "pods not spread: {nodes:?}");
    let ip = up.k(&["get", "svc", "hostnames", "-o", "jsonpath={.spec.clusterIP}"]);
    for node in ["node-1", "node-2", "node-3"] {
        let got: BTreeSet<String> = names_via(&up, Some(node), &ip, 30).into_iter().filter(|s| !s.is_empty()).collect();
        assert_eq!(got.len(), 3, "from {node}: {got:?}");
    }
}

#[test]
fn two_clusters_side_by_side_and_restart_keeps_objects() {
    let _serial = serial();
    let d1 = TempDir::new("upa");
    let d2 = TempDir::new("upb");
    let (data1, data2) = (d1.0.join("data"), d2.0.join("data"));
    let hostnames = examples_dir().join("hostnames.yaml");
    let mut a = Up::start("e2ea", &data1, &["-f", hostnames.to_str().unwrap()]);
    let b = Up::start("e2eb", &data2, &["-f", hostnames.to_str().unwrap()]);
    for up in [&a, &b] {
        let ip = up.k(&["get", "svc", "hostnames", "-o", "jsonpath={.spec.clusterIP}"]);
        let got: BTreeSet<String> = names_via(up, None, &ip, 30).into_iter().filter(|s| !s.is_empty()).collect();
        assert_eq!(got.len(), 3, "{}: {got:?}", up.name);
    }
    // The same data dir brings the same objects back.
    let uid = a.k(&["get", "svc", "hostnames", "-o", "jsonpath={.metadata.uid}"]);
    let ip = a.k(&["get", "svc", "hostnames", "-o", "jsonpath={.spec.clusterIP}"]);
    a.stop();
    drop(a);
    let a2 = Up::start("e2ea", &data1, &[]);
    assert_eq!(a2.k(&["get", "svc", "hostnames", "-o", "jsonpath={.metadata.uid}"]), uid);
    assert_eq!(a2.k(&["get", "svc", "hostnames", "-o", "jsonpath={.spec.clusterIP}"]), ip);
    a2.k(&["rollout", "status", "deploy/hostnames", "--timeout=60s"]);
    let ready = eventually(Duration::from_secs(60), || {
        let got: BTreeSet<String> = names_via(&a2, None, &ip, 15).into_iter().filter(|s| !s.is_empty()).collect();
        (got.len() == 3).then_some(got)
    });
    assert!(ready.is_some(), "the restarted cluster does not serve all 3 pods");
}

/// Two namespaces this test makes: "host" (where `yard up --host-network` runs, as on a real
/// machine: one veth eth0 with a global address and a default route) and "outside" (another machine on its link).
/// Both are deleted on drop, failure included.
struct TwoHosts {
    host: String,
    outside: String,
}

impl TwoHosts {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let t = TwoHosts { host: format!("yt-{tag}-h{pid}"), outside: format!("yt-{tag}-o{pid}") };
        let sh = |script: &str| {
            let o = std::process::Command::new("sh").args(["-ec", script]).output().unwrap();
            assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
        };
        sh(&format!(
            "ip netns add {h}; ip netns add {o}
             ip -n {h} link set lo up; ip -n {o} link set lo up
             ip -n {h} link add eth0 type veth peer name eth0 netns {o}
             ip -n {h} addr add 192.168.240.2/24 dev eth0; ip -n {h} link set eth0 up
             ip -n {h} route add default via 192.168.240.1
             ip -n {o} addr add 192.168.240.1/24 dev eth0; ip -n {o} link set eth0 up",
            h = t.host,
            o = t.outside
        ));
        t
    }

    /// What `yard up --host-network` may touch in the host namespace.
    fn host_state(&self) -> String {
        let o = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.host,
                "sh",
                "-c",
                "ip -o link; ip -o -4 addr; ip route; nft list ruleset; sysctl net.ipv4.ip_forward; ls /run/netns",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for n in [&self.host, &self.outside] {
            let _ = std::process::Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn host_network_makes_this_namespace_the_node() {
    let _serial = serial();
    let hosts = TwoHosts::new("hn");
    let dir = TempDir::new("uphost");
    let data = dir.0.join("data");
    let machine_before = host_snapshot();
    let host_before = hosts.host_state();
    let mut up = Up::start_in(
        Some(&hosts.host),
        "e2ehn",
        &data,
        &["--host-network", "--node-name", "yt-node", "-f", examples_dir().join("hostnames.yaml").to_str().unwrap()],
    );

    // The node is this namespace: its name, and the address found on eth0.
    assert_eq!(up.k(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]), "yt-node");
    let addr =
        up.k(&["get", "node", "yt-node", "-o", "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}"]);
    assert_eq!(addr, "192.168.240.2");
    let pods = up.k(&["get", "pods", "-o", "wide"]);
    assert_eq!(
        pods.lines().filter(|l| l.contains("Running") && l.contains("1/1") && l.contains("yt-node")).count(),
        3,
        "{pods}"
    );

    // The ClusterIP answers from the host namespace itself and through `yard shell`.
    let ip = up.k(&["get", "svc", "hostnames", "-o", "jsonpath={.spec.clusterIP}"]);
    let pod_names: BTreeSet<String> = up
        .k(&["get", "pods", "-l", "app=hostnames", "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(String::from)
        .collect();
    let curl_in = |ns: &str, url: &str| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-s", "-m", "2", url])
            .output()
            .unwrap();
        stdout_of(&o).trim().to_string()
    };
    let got: BTreeSet<String> = (0..30).map(|_| curl_in(&hosts.host, &ip)).collect();
    assert_eq!(got, pod_names, "30 requests from the host namespace");
    let got: BTreeSet<String> = names_via(&up, None, &ip, 15).into_iter().collect();
    assert!(got.is_subset(&pod_names) && got.len() >= 2, "{got:?}");

    // Cluster DNS from a pod.
    up.k(&["run", "bb", "--image=busybox", "--restart=Never", "--", "sleep", "3600"]);
    up.k(&["wait", "--for=condition=Ready", "pod/bb", "--timeout=60s"]);
    let ns_out = stdout_of(&up.kubectl(&["exec", "bb", "--", "nslookup", "hostnames.default.svc.cluster.local"]));
    assert!(ns_out.contains(&ip), "nslookup from a pod: {ns_out}");

    // A NodePort answers on the node's address from the other machine.
    up.k(&[
        "expose",
        "deploy",
        "hostnames",
        "--name",
        "hn-np",
        "--type",
        "NodePort",
        "--port",
        "80",
        "--target-port",
        "9376",
    ]);
    let np = up.k(&["get", "svc", "hn-np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let url = format!("http://192.168.240.2:{np}/");
    let answered = eventually(Duration::from_secs(5), || {
        let s = curl_in(&hosts.outside, &url);
        pod_names.contains(&s).then_some(s)
    });
    assert!(answered.is_some(), "NodePort {url} from outside");

    // Ctrl-C puts the host namespace back as it was, and the machine is untouched.
    up.stop();
    assert_eq!(hosts.host_state(), host_before, "host namespace changed");
    assert_eq!(host_snapshot(), machine_before, "machine changed");
}
