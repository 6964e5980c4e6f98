//! Issue 22 items 3 (WebSocket port-forward) and 9 (container stdin/stdinOnce/tty, `pods/attach`)
//! against `yard up` with the real kubectl 1.37 and the real Python kubernetes client (its
//! `portforward` speaks kubelet's `v4.channel.k8s.io` WebSocket protocol). One cluster serves
//! every check; each check fails on an agent without attach/port-forward or with a null stdin.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Run `prog args` with the cluster's kubeconfig, `stdin` written up front (then closed), killed
/// after `limit`.
fn run_with(up: &Up, prog: &str, args: &[&str], stdin: &str, limit: Duration) -> Output {
    let mut child = Command::new(prog)
        .args(args)
        .env("KUBECONFIG", &up.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut w = child.stdin.take().unwrap();
    let _ = w.write_all(stdin.as_bytes());
    drop(w);
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn kubectl_path() -> String {
    kubectl_bin().to_string_lossy().into_owned()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const PF_SCRIPT: &str = r#"
import sys, threading, time
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config()
api = client.CoreV1Api()
pod, good, bad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def fetch(ports):
    pf = portforward(api.connect_get_namespaced_pod_portforward, pod, 'default', ports=ports)
    s = pf.socket(good)
    s.setblocking(True)
    s.sendall(b'GET / HTTP/1.0\r\nHost: pf\r\n\r\n')
    data = b''
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    err = None
    if str(bad) in ports.split(','):
        deadline = time.time() + 10
        while err is None and time.time() < deadline:
            err = pf.error(bad)
            time.sleep(0.05)
    pf.close()
    return data, err

# Both ports in one session: the closed one reports kubelet's error, the open one still answers.
data, err = fetch('%d,%d' % (good, bad))
print('MIXED-STATUS', data.split(b'\r\n')[0].decode())
print('MIXED-ERROR', err)

# Many concurrent forwards.
results = []
def worker():
    for _ in range(3):
        d, _ = fetch(str(good))
        results.append(d.split(b'\r\n')[0].decode())
ts = [threading.Thread(target=worker) for _ in range(8)]
[t.start() for t in ts]
[t.join(60) for t in ts]
print('CONCURRENT', sum(1 for r in results if r.endswith('200 OK')), len(results))
"#;

#[test]
fn attach_stdin_tty_and_portforward() {
    let dir = TempDir::new("attachpf");
    let data = dir.0.join("data");
    let up = Up::start("e2eatt", &data, &[]);
    let kubectl = kubectl_path();

    // 1. kubectl run -i --rm: piped commands reach the container's stdin (stdin + stdinOnce), their
    //    output comes back over attach, and the pod is deleted afterwards.
    let o = run_with(
        &up,
        &kubectl,
        &["run", "-i", "--rm", "--restart=Never", "debug", "--image=busybox:1.28", "--", "sh"],
        "echo piped-$((6*7))\necho to-stderr >&2\n",
        Duration::from_secs(90),
    );
    let out = text(&o);
    assert!(o.status.success(), "kubectl run -i --rm: {out}");
    assert!(out.contains("piped-42"), "stdout of the piped commands: {out}");
    assert!(out.contains("to-stderr"), "stderr of the piped commands: {out}");
    let gone = eventually(Duration::from_secs(30), || {
        let o = up.kubectl(&["get", "pod", "debug"]);
        (!o.status.success()).then_some(())
    });
    assert!(gone.is_some(), "pod debug still exists after --rm");

    // 2. kubectl run -it --rm under a real pty (`script`): the container has a TTY.
    let cmd = format!(
        "(sleep 4; echo 'tty -s && echo is-a-tty-$((2*21))'; sleep 2; echo exit; sleep 3) | script -q -e -c '{kubectl} run -it --rm --restart=Never ttyp --image=busybox:1.28 -- sh' /dev/null"
    );
    let o = run_with(&up, "sh", &["-c", &cmd], "", Duration::from_secs(90));
    let out = text(&o);
    assert!(out.contains("is-a-tty-42"), "kubectl run -it under a pty: {out}");

    // 3. kubectl attach -i to a pod with stdin but no stdinOnce: stdin stays open across attaches,
    //    and the container's output is also in its log.
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: att}
spec:
  restartPolicy: Never
  containers:
  - {name: sh, image: busybox:1.28, command: [sh], stdin: true}
"#;
    let o = kubectl_in(None, &up.kubeconfig, &["apply", "-f", "-"], Some(yaml));
    assert!(o.status.success(), "{}", text(&o));
    up.k(&["wait", "--for=condition=Ready", "pod/att", "--timeout=60s"]);
    // The first attach ends with kubectl still waiting (the container keeps running): cut it off.
    let o = run_with(&up, &kubectl, &["attach", "-i", "att"], "echo first-$((1+1))\n", Duration::from_secs(6));
    assert!(text(&o).contains("first-2"), "first attach: {}", text(&o));
    let o =
        run_with(&up, &kubectl, &["attach", "-i", "att"], "echo second-$((2+2)); exit 3\n", Duration::from_secs(60));
    assert!(text(&o).contains("second-4"), "second attach: {}", text(&o));
    let code = eventually(Duration::from_secs(30), || {
        let c = up.k(&["get", "pod", "att", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"]);
        (!c.is_empty()).then_some(c)
    });
    assert_eq!(code.as_deref(), Some("3"), "the container read `exit 3` from its stdin");
    let logs = up.k(&["logs", "att"]);
    assert!(logs.contains("first-2") && logs.contains("second-4"), "logs: {logs}");

    // 3b. A TTY container: `kubectl attach -it` under a pty reaches it, and its log is what the
    //     terminal showed.
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: ttyl}
spec:
  restartPolicy: Never
  containers:
  - {name: sh, image: busybox:1.28, command: [sh], stdin: true, tty: true}
"#;
    let o = kubectl_in(None, &up.kubeconfig, &["apply", "-f", "-"], Some(yaml));
    assert!(o.status.success(), "{}", text(&o));
    up.k(&["wait", "--for=condition=Ready", "pod/ttyl", "--timeout=60s"]);
    let cmd = format!(
        "(sleep 3; echo 'tty -s && echo logged-$((3*3))'; sleep 2; echo exit; sleep 3) | script -q -e -c '{kubectl} attach -it ttyl' /dev/null"
    );
    let o = run_with(&up, "sh", &["-c", &cmd], "", Duration::from_secs(60));
    assert!(text(&o).contains("logged-9"), "kubectl attach -it: {}", text(&o));
    let logs = up.k(&["logs", "ttyl"]);
    assert!(logs.contains("logged-9"), "a TTY container's log comes from its terminal: {logs}");

    // 4. Port-forward over the WebSocket channel protocol, through the API server.
    up.k(&["run", "web", "--image=nginx", "--restart=Never"]);
    up.k(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    // A bad attach gets a clear error (and the server keeps serving).
    let o = up.kubectl(&["attach", "web", "-c", "nope"]);
    assert!(!o.status.success() && text(&o).contains("container nope is not valid for pod web"), "{}", text(&o));
    let o = run_with(
        &up,
        python_bin().to_str().unwrap(),
        &["-c", PF_SCRIPT, "web", "80", "81"],
        "",
        Duration::from_secs(120),
    );
    let out = text(&o);
    assert!(o.status.success(), "port-forward client: {out}");
    assert!(out.contains("MIXED-STATUS HTTP/1.1 200 OK"), "{out}");
    let uid = up.k(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let short: String = uid.chars().take(8).collect();
    let err_line = out.lines().find(|l| l.starts_with("MIXED-ERROR")).unwrap_or("").to_string();
    assert!(
        err_line.contains("error forwarding port 81 to pod ")
            && err_line.contains(&short)
            && err_line.contains(", uid : failed to execute portforward in network namespace \"")
            && err_line.contains("failed to connect to localhost:81 inside namespace \"",)
            && err_line.contains(
                "IPv4: dial tcp4 127.0.0.1:81: connect: connection refused IPv6 dial tcp6 [::1]:81: connect: "
            ),
        "{err_line}"
    );
    assert!(out.contains("CONCURRENT 24 24"), "{out}");
}
