//! Issue 22 item 8: what a tutorial user types in a busybox pod (`kubectl exec bb -- wget ...`,
//! nslookup, nc, ping, hostname, env, ip) works against one shared `yard up` cluster, with real
//! kubectl exec and the real applets. wget is Yard's own (Debian's busybox 1.35 wget segfaults on
//! `-T`); every other applet is the host busybox.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: bb
  labels: {app: bb}
spec:
  containers:
  - name: bb
    image: busybox:1.28
    command: ['sh', '-c', 'sleep 3600']
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: registry.k8s.io/e2e-test-images/agnhost:2.40
    args: ['netexec', '--http-port=8080']
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  name: hang
  labels: {app: hang}
spec:
  containers:
  - name: hang
    image: busybox
    # Accepts one connection and never answers (its stdin stays open): a client waits for a response.
    command: ['sh', '-c', 'sleep 3600 | nc -l -p 9000 >/dev/null']
---
apiVersion: v1
kind: Service
metadata:
  name: hang
spec:
  selector: {app: hang}
  ports:
  - {port: 9000}
"#;

fn exec(up: &Up, args: &[&str]) -> Output {
    let mut a = vec!["exec", "bb", "--"];
    a.extend_from_slice(args);
    up.kubectl(&a)
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// kubectl exec reports a command's exit code on stderr as "command terminated with exit code N".
fn exit_code(o: &Output) -> i32 {
    if o.status.success() {
        return 0;
    }
    let e = stderr_of(o);
    e.rsplit("command terminated with exit code ")
        .next()
        .and_then(|t| t.trim().parse().ok())
        .filter(|_| e.contains("command terminated with exit code"))
        .unwrap_or(-1)
}

struct Cluster {
    up: Up,
    svc_ip: String,
    web_ip: String,
    _dir: TempDir,
}

fn cluster() -> Cluster {
    let dir = TempDir::new("busybox");
    let up = Up::start("e2ebb", &dir.0.join("data"), &[]);
    let o = kubectl_in(None, &up.kubeconfig, &["apply", "-f", "-"], Some(MANIFEST));
    assert!(o.status.success(), "apply: {}", stderr_of(&o));
    up.k(&["wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s"]);
    let svc_ip = up.k(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let web_ip = up.k(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    // The service answers once its endpoints are programmed.
    let ready = eventually(Duration::from_secs(30), || {
        let o = exec(&up, &["wget", "-q", "-T", "2", "-O-", "http://web/hostname"]);
        (stdout_of(&o) == "web").then_some(())
    });
    assert!(ready.is_some(), "service web never answered wget");
    Cluster { up, svc_ip, web_ip, _dir: dir }
}

fn wget_timeout_closed_port(c: &Cluster) {
    // The pod's port 1 is closed: an immediate refusal, busybox's message, exit 1 (was SIGSEGV, 139).
    let url = format!("http://{}:1/", c.web_ip);
    let t = Instant::now();
    let o = exec(&c.up, &["wget", "-T", "2", &url]);
    let took = t.elapsed();
    let err = stderr_of(&o);
    assert_eq!(exit_code(&o), 1, "{err}");
    assert!(err.contains(&format!("Connecting to {}:1 ({}:1)", c.web_ip, c.web_ip)), "{err}");
    assert!(err.contains(&format!("wget: can't connect to remote host ({}): Connection refused", c.web_ip)), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

fn wget_timeout_times_out(c: &Cluster) {
    // The server accepts and never answers: -T 2 gives up after about 2 s. (Until its nc listens
    // and its endpoint is programmed the port refuses; that is retried.)
    let mut t = Instant::now();
    let o = eventually(Duration::from_secs(30), || {
        t = Instant::now();
        let o = exec(&c.up, &["wget", "-T", "2", "-O-", "http://hang:9000/"]);
        (!stderr_of(&o).contains("Connection refused")).then_some(o)
    })
    .expect("hang:9000 never accepted");
    let took = t.elapsed();
    let err = stderr_of(&o);
    assert_eq!(exit_code(&o), 1, "{err}");
    assert!(err.contains("wget: download timed out"), "{err}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "took {took:?}: {err}");
    // Connect timeout: an address of the pod network nobody has (no ARP answer).
    let t = Instant::now();
    let o = exec(&c.up, &["wget", "-T", "1", "http://10.244.0.250/"]);
    let took = t.elapsed();
    let err = stderr_of(&o);
    assert_eq!(exit_code(&o), 1, "{err}");
    assert!(err.contains("wget: download timed out"), "{err}");
    assert!(took < Duration::from_millis(2800), "took {took:?}: {err}");
}

fn wget_bodies(c: &Cluster) {
    let o = exec(&c.up, &["wget", "-q", "-O-", "http://web/echo?msg=hello"]);
    assert_eq!(exit_code(&o), 0, "{}", stderr_of(&o));
    assert_eq!(stdout_of(&o), "hello");
    assert_eq!(stderr_of(&o), "", "-q prints nothing");
    // Without -q: busybox's progress messages on stderr; ClusterIP by name.
    let o = exec(&c.up, &["wget", "-O", "-", "http://web.default.svc.cluster.local/hostname"]);
    let err = stderr_of(&o);
    assert_eq!(stdout_of(&o), "web", "{err}");
    assert!(err.contains(&format!("Connecting to web.default.svc.cluster.local ({}:80)", c.svc_ip)), "{err}");
    assert!(err.contains("writing to stdout") && err.contains("written to stdout"), "{err}");
    assert!(err.contains("-                    100% |********************************|     3"), "{err}");
    // -O FILE: the file lands in the pod's own /tmp (not the host's).
    let file = "/tmp/page.txt";
    let o = exec(&c.up, &["wget", "-O", file, "http://web/echo?msg=saved"]);
    let err = stderr_of(&o);
    assert_eq!(exit_code(&o), 0, "{err}");
    assert!(err.contains(&format!("saving to '{file}'")), "{err}");
    assert!(err.contains(&format!("'{file}' saved")), "{err}");
    assert_eq!(stdout_of(&exec(&c.up, &["cat", file])), "saved");
    // A 404 is an error with the status line.
    let o = exec(&c.up, &["wget", "-q", "-O-", "http://web/nope"]);
    assert_eq!(exit_code(&o), 1);
    assert!(stderr_of(&o).contains("wget: server returned error: HTTP/1.1 404 Not Found"), "{}", stderr_of(&o));
}

fn wget_spider_and_headers(c: &Cluster) {
    let o = exec(&c.up, &["wget", "-S", "--spider", "http://web/"]);
    let err = stderr_of(&o);
    assert_eq!(exit_code(&o), 0, "{err}");
    assert!(err.contains("  HTTP/1.1 200 OK\n"), "{err}");
    assert!(err.contains("  Content-Length: 3\n"), "{err}");
    assert!(err.contains("remote file exists"), "{err}");
    assert_eq!(stdout_of(&o), "");
    let o = exec(&c.up, &["wget", "-q", "--spider", "http://web/nope"]);
    assert_eq!(exit_code(&o), 1, "{}", stderr_of(&o));
    // Unknown service name.
    let o = exec(&c.up, &["wget", "-q", "-T", "2", "http://nosuch-svc/"]);
    assert_eq!(exit_code(&o), 1);
    assert!(stderr_of(&o).contains("wget: bad address 'nosuch-svc'"), "{}", stderr_of(&o));
    // Bad -T value: busybox's message.
    let o = exec(&c.up, &["wget", "-T", "soon", "http://web/"]);
    assert_eq!(exit_code(&o), 1);
    assert!(stderr_of(&o).contains("wget: invalid number 'soon'"), "{}", stderr_of(&o));
}

fn nslookup(c: &Cluster) {
    let o = exec(&c.up, &["nslookup", "web"]);
    let out = stdout_of(&o);
    assert!(out.contains(&c.svc_ip), "nslookup web: {out}{}", stderr_of(&o));
    assert!(out.contains("web.default.svc.cluster.local"), "{out}");
    let o = exec(&c.up, &["nslookup", "kubernetes.default"]);
    assert!(stdout_of(&o).contains("10.96.0.1"), "{}", stdout_of(&o));
}

fn nc(c: &Cluster) {
    // Connect: an HTTP request by hand through the ClusterIP.
    let o = exec(&c.up, &["sh", "-c", "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 web 80"]);
    let out = stdout_of(&o);
    assert!(out.starts_with("HTTP/1.1 200 OK") && out.ends_with("\r\n\r\nweb"), "{out}{}", stderr_of(&o));
    // Listen and connect: a server in the pod gets the client's line by the pod's own address.
    let bb_ip = c.up.k(&["get", "pod", "bb", "-o", "jsonpath={.status.podIP}"]);
    let script = format!("nc -l -p 7000 & sleep 0.5; echo via-nc | nc -w 2 {bb_ip} 7000; echo client=$?; wait");
    let o = exec(&c.up, &["sh", "-c", &script]);
    let out = stdout_of(&o);
    assert!(out.contains("via-nc\n") && out.contains("client=0"), "{out}{}", stderr_of(&o));
    // A closed port fails.
    let o = exec(&c.up, &["nc", "-w", "2", &c.web_ip, "1"]);
    assert_ne!(exit_code(&o), 0);
    // Port checks as tutorials type them (Debian's small nc has no -z/-v).
    let o = exec(&c.up, &["nc", "-zv", "-w", "2", "web", "80"]);
    assert_eq!(exit_code(&o), 0, "{}", stderr_of(&o));
    assert_eq!(stderr_of(&o), format!("web ({}:80) open\n", c.svc_ip));
    let o = exec(&c.up, &["nc", "-z", "-w", "2", &c.web_ip, "1"]);
    assert_eq!(exit_code(&o), 1, "{}", stderr_of(&o));
    let o = exec(&c.up, &["nc", "-vv", "-z", "-w", "2", &c.web_ip, "1"]);
    assert!(stderr_of(&o).contains(&format!("nc: {0} ({0}:1): Connection refused", c.web_ip)), "{}", stderr_of(&o));
    let o = exec(&c.up, &["sh", "-c", "printf 'GET /echo?msg=v HTTP/1.0\\r\\n\\r\\n' | nc -v web 80"]);
    assert!(stdout_of(&o).ends_with("\r\n\r\nv"), "{}{}", stdout_of(&o), stderr_of(&o));
    assert!(stderr_of(&o).contains("web ("), "{}", stderr_of(&o));
}

fn ping(c: &Cluster) {
    let o = exec(&c.up, &["ping", "-c", "1", "-W", "2", &c.web_ip]);
    let out = stdout_of(&o);
    assert_eq!(exit_code(&o), 0, "{out}{}", stderr_of(&o));
    assert!(out.contains("1 packets transmitted, 1 packets received, 0% packet loss"), "{out}");
}

fn basics(c: &Cluster) {
    assert_eq!(stdout_of(&exec(&c.up, &["hostname"])).trim(), "bb");
    let env = stdout_of(&exec(&c.up, &["env"]));
    // bb was created with the services, so (as in Kubernetes) only `kubernetes` is in its env.
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.96.0.1\n") && env.contains("HOSTNAME=bb\n"), "{env}");
    let bb_ip = c.up.k(&["get", "pod", "bb", "-o", "jsonpath={.status.podIP}"]);
    let ip = stdout_of(&exec(&c.up, &["ip", "addr"]));
    assert!(ip.contains(&format!("inet {bb_ip}/")), "{ip}");
    let ifc = stdout_of(&exec(&c.up, &["ifconfig", "eth0"]));
    assert!(ifc.contains(&format!("inet addr:{bb_ip}")), "{ifc}");
    let o = exec(&c.up, &["sh", "-c", "echo $((6*7)); sleep 0.1; cat /etc/resolv.conf"]);
    let out = stdout_of(&o);
    assert!(out.starts_with("42\n") && out.contains("search default.svc.cluster.local"), "{out}");
}

#[test]
fn busybox_applets() {
    let c = cluster();
    wget_timeout_closed_port(&c);
    wget_timeout_times_out(&c);
    wget_bodies(&c);
    wget_spider_and_headers(&c);
    nslookup(&c);
    nc(&c);
    ping(&c);
    basics(&c);
}
