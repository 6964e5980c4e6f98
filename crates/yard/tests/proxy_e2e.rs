//! Issue 5 acceptance: Service traffic from real pods through `yard up`'s proxy, in every mode
//! (nftables, iptables, userspace). Every address lives in namespaces `yard up` creates and
//! removes; the only traffic from the test's own namespace goes to the API on loopback.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;

/// One cluster at a time: each is a whole cluster on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The objects of the scenario besides the seed's hostnames. `flaky` pods are Ready while the
/// file `<dir>/<pod name>` does not exist.
fn manifest(dir: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client, labels: {{app: client}}}}
spec:
  containers:
  - {{name: c, image: busybox, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: selfie, labels: {{app: selfie}}}}
spec:
  containers:
  - {{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: ["netexec", "--http-port=8080", "--udp-port=0"]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: flaky}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: flaky}}}}
  template:
    metadata: {{labels: {{app: flaky}}}}
    spec:
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080", "--udp-port=8081"]
        readinessProbe:
          exec: {{command: ["sh", "-c", "test ! -e /unready/$(hostname)"]}}
          periodSeconds: 1
          failureThreshold: 1
        volumeMounts: [{{name: unready, mountPath: /unready}}]
      volumes: [{{name: unready, hostPath: {{path: "{dir}", type: Directory}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: flaky}}
spec:
  selector: {{app: flaky}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: local}}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {{app: flaky}}
  ports: [{{port: 80, targetPort: 8080, nodePort: 30090}}]
---
apiVersion: v1
kind: Service
metadata: {{name: udp}}
spec:
  selector: {{udp: active}}
  ports: [{{protocol: UDP, port: 53, targetPort: 8081}}]
---
apiVersion: v1
kind: Service
metadata: {{name: sticky}}
spec:
  selector: {{app: hostnames}}
  sessionAffinity: ClientIP
  ports: [{{port: 80, targetPort: 9376}}]
---
apiVersion: v1
kind: Service
metadata: {{name: selfie}}
spec:
  selector: {{app: selfie}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: empty}}
spec:
  selector: {{app: nothing}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

fn cluster_ip(up: &Up, svc: &str) -> String {
    up.k(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"])
}

/// `n` HTTP requests from the client pod; the answers, one per request ("" for a failure).
fn http_from_client(up: &Up, url: &str, n: usize) -> Vec<String> {
    let script = format!("for i in $(seq {n}); do timeout 3 wget -qO- {url} || printf FAIL; echo; done");
    let out = up.kubectl(&["exec", "client", "--", "sh", "-c", &script]);
    let lines: Vec<String> = stdout_of(&out).lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(lines.len(), n, "{out:?}");
    lines
}

/// Python run in the client pod (pods see the host's programs; busybox has no UDP netcat).
fn py_in_client(up: &Up, code: &str) -> String {
    let out = up.kubectl(&["exec", "client", "--", "python3", "-c", code]);
    assert!(out.status.success(), "{out:?}");
    stdout_of(&out).trim().to_string()
}

/// One UDP request "hostname" from the client pod's fixed port 40000 (the same flow each time).
fn udp_hostname(up: &Up, ip: &str) -> String {
    py_in_client(
        up,
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('',40000))\ns.settimeout(0.5)\n\
             s.sendto(b'hostname',('{ip}',53))\ntry:\n  print(s.recvfrom(200)[0].decode())\nexcept Exception as e:\n  print('TIMEOUT')"
        ),
    )
}

fn counts(answers: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.clone()).or_insert(0) += 1;
    }
    m
}

fn pods_of(up: &Up, selector: &str) -> BTreeSet<String> {
    up.k(&["get", "pods", "-l", selector, "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn scenario(mode: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new(&format!("px{mode}"));
    let data = dir.0.join("data");
    let unready = dir.0.join("unready");
    std::fs::create_dir_all(&unready).unwrap();
    let name = format!("px{}", &mode[..3]);
    let mut up =
        Up::start(&name, &data, &["--proxy-mode", mode, "-f", examples_dir().join("hostnames.yaml").to_str().unwrap()]);
    let applied = kubectl_in(None, &up.kubeconfig, &["apply", "-f", "-"], Some(&manifest(unready.to_str().unwrap())));
    assert!(applied.status.success(), "{applied:?}");
    up.k(&["wait", "--for=condition=Ready", "pod", "--all", "--timeout=60s"]);
    up.k(&["rollout", "status", "deploy/flaky", "--timeout=60s"]);

    // From a pod: the hostnames ClusterIP reaches all 3 pods over 30 requests, roughly evenly.
    let hostnames = pods_of(&up, "app=hostnames");
    assert_eq!(hostnames.len(), 3);
    let vip = cluster_ip(&up, "hostnames");
    let answers = http_from_client(&up, &format!("http://{vip}/"), 30);
    let c = counts(&answers);
    assert_eq!(c.keys().cloned().collect::<BTreeSet<_>>(), hostnames, "{mode}: {answers:?}");
    assert!(c.values().all(|n| *n >= 3), "{mode}: uneven spread {c:?}");

    // ClientIP affinity: one name for 20 requests.
    let sticky = http_from_client(&up, &format!("http://{}/", cluster_ip(&up, "sticky")), 20);
    assert_eq!(counts(&sticky).len(), 1, "{mode}: {sticky:?}");

    // A pod reaches itself through its own Service (hairpin).
    let selfie = cluster_ip(&up, "selfie");
    let out =
        up.kubectl(&["exec", "selfie", "--", "timeout", "3", "wget", "-qO-", &format!("http://{selfie}/hostname")]);
    assert_eq!(stdout_of(&out).trim(), "selfie", "{mode}: hairpin {out:?}");

    // A Service without endpoints refuses at once.
    let empty = cluster_ip(&up, "empty");
    let refused = py_in_client(
        &up,
        &format!(
            "import socket,time\nt=time.time()\ntry:\n  socket.create_connection(('{empty}',80),timeout=5)\n  print('CONNECTED')\nexcept Exception as e:\n  print(type(e).__name__, round(time.time()-t,3))"
        ),
    );
    let mut parts = refused.split_whitespace();
    assert_eq!(parts.next(), Some("ConnectionRefusedError"), "{mode}: {refused}");
    let took: f64 = parts.next().unwrap().parse().unwrap();
    assert!(took < 1.0, "{mode}: refused after {took} s");

    // The NodePort (externalTrafficPolicy Local) answers on the node's IP from another
    // namespace, and the pod sees the real client address (the hub's 172.18.0.1).
    let hub = format!("yard-{name}-net");
    let np = std::process::Command::new("ip")
        .args(["netns", "exec", &hub, "curl", "-s", "-m", "3", "http://172.18.0.2:30090/clientip"])
        .output()
        .unwrap();
    assert!(stdout_of(&np).starts_with("172.18.0.1:"), "{mode}: /clientip through the Local NodePort: {np:?}");

    // UDP follows an endpoint change at once, for the same client flow.
    let flaky: Vec<String> = pods_of(&up, "app=flaky").into_iter().collect();
    assert_eq!(flaky.len(), 2);
    let udp = cluster_ip(&up, "udp");
    up.k(&["label", "pod", &flaky[0], "udp=active"]);
    let first = eventually(Duration::from_secs(10), || Some(udp_hostname(&up, &udp)).filter(|a| a == &flaky[0]));
    assert!(first.is_some(), "{mode}: UDP never reached {}", flaky[0]);
    up.k(&["label", "pod", &flaky[0], "udp-"]);
    up.k(&["label", "pod", &flaky[1], "udp=active"]);
    let t = Instant::now();
    let moved = eventually(Duration::from_secs(5), || Some(udp_hostname(&up, &udp)).filter(|a| a == &flaky[1]));
    assert!(
        moved.is_some() && t.elapsed() < Duration::from_secs(2),
        "{mode}: UDP flow did not follow the endpoint change ({:?})",
        t.elapsed()
    );

    // A pod whose readiness fails stops receiving traffic.
    let flaky_ip = cluster_ip(&up, "flaky");
    let both = counts(&http_from_client(&up, &format!("http://{flaky_ip}/hostname"), 20));
    assert_eq!(both.len(), 2, "{mode}: {both:?}");
    std::fs::write(unready.join(&flaky[0]), b"").unwrap();
    let one = eventually(Duration::from_secs(15), || {
        let ep = up.k(&["get", "ep", "flaky", "-o", "jsonpath={.subsets[*].addresses[*].targetRef.name}"]);
        (ep.split_whitespace().count() == 1).then_some(ep)
    });
    assert_eq!(
        one.as_deref().map(str::trim),
        Some(flaky[1].as_str()),
        "{mode}: readiness failure did not leave one endpoint"
    );
    let after = http_from_client(&up, &format!("http://{flaky_ip}/hostname"), 20);
    assert!(after.iter().all(|a| a == &flaky[1]), "{mode}: the unready pod still gets traffic: {after:?}");

    // Scale hostnames to 2: within 1 s only 2 names answer. A request that races the removed
    // pod's teardown (sent before the proxy dropped its endpoint, after its sandbox was gone)
    // fails instead of answering, as it can upstream; it names no pod, so it is counted apart.
    up.k(&["scale", "--replicas=2", "deploy", "hostnames"]);
    let scaled = Instant::now();
    let mut batches: Vec<(Duration, BTreeSet<String>)> = Vec::new();
    let mut failed = 0;
    let survivors = loop {
        let at = scaled.elapsed();
        let answers = http_from_client(&up, &format!("http://{vip}/"), 10);
        failed += answers.iter().filter(|a| *a == "FAIL").count();
        batches.push((at, answers.into_iter().filter(|a| a != "FAIL").collect()));
        let left = pods_of(&up, "app=hostnames");
        let live: BTreeSet<String> = up
            .k(&["get", "ep", "hostnames", "-o", "jsonpath={.subsets[*].addresses[*].targetRef.name}"])
            .split_whitespace()
            .map(String::from)
            .collect();
        let clean = batches.iter().rev().take_while(|(_, names)| names.is_subset(&live)).count();
        if live.len() == 2 && left.is_superset(&live) && clean >= 3 {
            break live;
        }
        assert!(at < Duration::from_secs(30), "{mode}: hostnames did not settle on 2 endpoints: {batches:?}");
    };
    let first_clean = batches.iter().rposition(|(_, names)| !names.is_subset(&survivors)).map(|i| i + 1).unwrap_or(0);
    let when = batches[first_clean].0;
    assert!(
        when < Duration::from_secs(1),
        "{mode}: the removed pod answered until {when:?} after the scale: {batches:?}"
    );
    assert!(failed <= 1, "{mode}: {failed} requests failed while the Service went from 3 endpoints to 2: {batches:?}");

    let stopped = up.stop();
    assert!(stopped.contains("stopped"), "{stopped}");
}

#[test]
fn proxy_nftables() {
    scenario("nftables");
}

#[test]
fn proxy_iptables() {
    scenario("iptables");
}

#[test]
fn proxy_userspace() {
    scenario("userspace");
}
