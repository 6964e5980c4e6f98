//! Issue 22 acceptance: the kubectl matrix. Every kubectl from 1.27 to 1.33 (the google-cloud-sdk
//! binaries) and the repo's 1.37 runs the same session against one shared `yard up` cluster, each in
//! a namespace of its own: apply (and `unchanged` on re-apply), diff, rollout status/restart/history/
//! undo, exec, exec -it with a TTY (under `script`), attach, cp both ways, logs -f, port-forward to a
//! pod and to a Service, auth can-i, auth whoami, api-resources and explain. A test collects every
//! step's result, prints the row, and fails naming the steps that failed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use common::*;

struct Cluster {
    up: Up,
    _dir: TempDir,
}

static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// A test's hold on the shared cluster; the last one released stops it, under the lock.
struct Lease(Option<Arc<Cluster>>);

impl Drop for Lease {
    fn drop(&mut self) {
        let _g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        self.0.take();
    }
}

fn cluster() -> Lease {
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = g.upgrade() {
        return Lease(Some(c));
    }
    let dir = TempDir::new("kubectl-versions");
    let up = Up::start(&format!("kv{}", std::process::id() % 100_000), &dir.0.join("data"), &[]);
    let c = Arc::new(Cluster { up, _dir: dir });
    *g = Arc::downgrade(&c);
    Lease(Some(c))
}

/// A kubectl of one version against the shared cluster, in its own namespace and temp dir.
struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    ns: String,
    tmp: TempDir,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KUBECONFIG", &self.kubeconfig).env_remove("KUBERNETES_SERVICE_HOST").arg("-n").arg(&self.ns).args(args);
        c
    }

    /// Run to completion (at most `secs`, then killed); stdin from `input`.
    fn run_for(&self, args: &[&str], input: Option<&str>, secs: u64) -> Output {
        let mut c = self.cmd(args);
        run_bounded(&mut c, input, secs)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_for(args, None, 90)
    }
}

fn run_bounded(c: &mut Command, input: Option<&str>, secs: u64) -> Output {
    run_bounded_with(c, input, secs, false)
}

/// `keep_open`: the input is written and the pipe kept open until the child ends (an early EOF
/// makes `script` hang up its terminal under kubectl -it, racing the command it runs).
fn run_bounded_with(c: &mut Command, input: Option<&str>, secs: u64, keep_open: bool) -> Output {
    use std::io::{Read, Write};
    c.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let _stdin = input.and_then(|s| {
        let mut si = child.stdin.take().unwrap();
        si.write_all(s.as_bytes()).unwrap();
        keep_open.then_some(si)
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let a = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let b = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = nix_kill(child.id(), 2);
            std::thread::sleep(Duration::from_millis(300));
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: a.join().unwrap(), stderr: b.join().unwrap() }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.chars().take(400).collect()
}

type Step = Result<(), String>;

fn ok_out(o: &Output, want: &[&str]) -> Step {
    let t = text(o);
    if !o.status.success() {
        return Err(format!("exit {}: {}", o.status, one_line(&t)));
    }
    for w in want {
        if !t.contains(w) {
            return Err(format!("output lacks {w:?}: {}", one_line(&t)));
        }
    }
    Ok(())
}

fn manifest(ns: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 8080
    targetPort: 80
---
apiVersion: v1
kind: Pod
metadata:
  name: ticker
  namespace: {ns}
spec:
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo first-log-line; while true; do echo tick; sleep 1; done"]
"#
    )
}

/// `kubectl port-forward TARGET :PORT`, read the local port it prints, GET / through it.
fn port_forward(k: &Kubectl, target: &str, port: &str) -> Step {
    let mut child = k
        .cmd(&["port-forward", target, &format!(":{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let result = (|| {
        let line =
            rx.recv_timeout(Duration::from_secs(20)).map_err(|_| "no `Forwarding from` line in 20 s".to_string())?;
        // "Forwarding from 127.0.0.1:PORT -> 80"
        let local = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_string();
        let o = run_bounded(
            Command::new("curl")
                .args(["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{local}/")),
            None,
            15,
        );
        let code = String::from_utf8_lossy(&o.stdout).to_string();
        if code != "200" {
            return Err(format!("curl through the forward: http code {code:?}"));
        }
        Ok(())
    })();
    let _ = nix_kill(pid, 15);
    let mut stderr = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    result.map_err(|e| format!("{e}; stderr: {}", one_line(&stderr)))
}

fn session(version: &str, bin: &Path) {
    assert!(bin.exists(), "{} missing", bin.display());
    let c = cluster();
    let up = &c.0.as_ref().unwrap().up;
    let ns = format!("kv-{}", version.replace('.', "-"));
    let k =
        Kubectl { bin: bin.to_path_buf(), kubeconfig: up.kubeconfig.clone(), ns: ns.clone(), tmp: TempDir::new("kv") };
    up.k(&["create", "namespace", &ns]);
    let file = k.tmp.0.join("app.yaml");
    std::fs::write(&file, manifest(&ns, 1)).unwrap();
    let file2 = k.tmp.0.join("app2.yaml");
    std::fs::write(&file2, manifest(&ns, 2)).unwrap();
    let f = file.to_str().unwrap();
    let f2 = file2.to_str().unwrap();

    let mut results: Vec<(&str, Step)> = Vec::new();
    let mut step = |name: &'static str, r: Step| results.push((name, r));

    step(
        "apply",
        ok_out(
            &k.run(&["apply", "-f", f]),
            &["deployment.apps/web created", "service/web created", "pod/ticker created"],
        ),
    );
    step(
        "apply_unchanged",
        ok_out(
            &k.run(&["apply", "-f", f]),
            &["deployment.apps/web unchanged", "service/web unchanged", "pod/ticker unchanged"],
        ),
    );
    step(
        "diff",
        (|| {
            let same = k.run(&["diff", "-f", f]);
            if same.status.code() != Some(0) {
                return Err(format!("diff of the applied file: exit {}: {}", same.status, one_line(&text(&same))));
            }
            let changed = k.run(&["diff", "-f", f2]);
            let t = text(&changed);
            if changed.status.code() != Some(1) || !t.contains("+  replicas: 2") || !t.contains("-  replicas: 1") {
                return Err(format!("diff of a change: exit {}: {}", changed.status, one_line(&t)));
            }
            Ok(())
        })(),
    );
    step(
        "rollout_status",
        ok_out(&k.run(&["rollout", "status", "deployment/web", "--timeout=60s"]), &["successfully rolled out"]),
    );
    step(
        "rollout_restart",
        ok_out(&k.run(&["rollout", "restart", "deployment/web"]), &["deployment.apps/web restarted"]).and_then(|_| {
            ok_out(&k.run(&["rollout", "status", "deployment/web", "--timeout=60s"]), &["successfully rolled out"])
        }),
    );
    step("rollout_history", ok_out(&k.run(&["rollout", "history", "deployment/web"]), &["REVISION", "1 ", "2 "]));
    step(
        "rollout_undo",
        ok_out(&k.run(&["rollout", "undo", "deployment/web"]), &["deployment.apps/web rolled back"]).and_then(|_| {
            ok_out(&k.run(&["rollout", "status", "deployment/web", "--timeout=60s"]), &["successfully rolled out"])
        }),
    );
    let ready = k.run(&["wait", "--for=condition=Ready", "pod/ticker", "--timeout=60s"]);
    step("wait_ready", ok_out(&ready, &["condition met"]));
    step("exec", ok_out(&k.run(&["exec", "ticker", "--", "echo", "hello-from-exec"]), &["hello-from-exec"]));
    step(
        "exec_it_tty",
        (|| {
            let kc = format!(
                "KUBECONFIG={} {} -n {ns} exec -it ticker -- sh -c 'test -t 0 && test -t 1 && echo is-a-tty; exit 3'",
                k.kubeconfig.display(),
                k.bin.display()
            );
            let o =
                run_bounded_with(Command::new("script").args(["-q", "-e", "-c", &kc, "/dev/null"]), Some(""), 30, true);
            let t = text(&o);
            if !t.contains("is-a-tty") {
                return Err(format!("no TTY in the container: exit {}: {}", o.status, one_line(&t)));
            }
            if o.status.code() != Some(3) {
                return Err(format!("exit status {} (want the command's 3): {}", o.status, one_line(&t)));
            }
            Ok(())
        })(),
    );
    step(
        "attach",
        (|| {
            let o = k.run_for(&["attach", "ticker", "-c", "main"], None, 4);
            let t = text(&o);
            if !t.contains("tick") {
                return Err(format!("attach printed no output in 4 s: {}", one_line(&t)));
            }
            Ok(())
        })(),
    );
    step(
        "cp_both_ways",
        (|| {
            // Into the pod's own /tmp (its filesystem view), and back into this test's dir.
            let src = k.tmp.0.join("to-pod.txt");
            std::fs::write(&src, "copied-through-kubectl-cp\n").unwrap();
            let in_pod = std::path::PathBuf::from("/tmp/in-pod.txt");
            let o = k.run(&["cp", src.to_str().unwrap(), &format!("ticker:{}", in_pod.display())]);
            ok_out(&o, &[]).map_err(|e| format!("to pod: {e}"))?;
            let cat = k.run(&["exec", "ticker", "--", "cat", in_pod.to_str().unwrap()]);
            ok_out(&cat, &["copied-through-kubectl-cp"]).map_err(|e| format!("cat in pod: {e}"))?;
            let back = k.tmp.0.join("from-pod.txt");
            let o = k.run(&["cp", &format!("ticker:{}", in_pod.display()), back.to_str().unwrap()]);
            ok_out(&o, &[]).map_err(|e| format!("from pod: {e}"))?;
            let got = std::fs::read_to_string(&back).map_err(|e| format!("from pod: {e}"))?;
            if got != "copied-through-kubectl-cp\n" {
                return Err(format!("from pod: content {got:?}"));
            }
            Ok(())
        })(),
    );
    step(
        "logs_follow",
        (|| {
            let o = k.run_for(&["logs", "-f", "ticker"], None, 4);
            let t = text(&o);
            let ticks = t.matches("tick").count();
            if !t.contains("first-log-line") || ticks < 2 {
                return Err(format!("logs -f for 4 s: {}", one_line(&t)));
            }
            Ok(())
        })(),
    );
    let web_pod = String::from_utf8_lossy(
        &k.run(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .stdout,
    )
    .trim()
    .to_string();
    step("port_forward_pod", port_forward(&k, &format!("pod/{web_pod}"), "80"));
    step("port_forward_svc", port_forward(&k, "svc/web", "8080"));
    step("auth_can_i", ok_out(&k.run(&["auth", "can-i", "create", "pods"]), &["yes"]));
    step("auth_whoami", ok_out(&k.run(&["auth", "whoami"]), &["Username"]));
    step(
        "api_resources",
        ok_out(&k.run(&["api-resources"]), &["configmaps", "deployments", "apps/v1", "endpointslices"]),
    );
    step("explain", ok_out(&k.run(&["explain", "deployment.spec.replicas"]), &["replicas", "integer"]));

    let _ = up.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    println!("kubectl {version}:");
    for (name, r) in &results {
        match r {
            Ok(()) => println!("PASS {name}"),
            Err(e) => println!("FAIL {name}: {e}"),
        }
    }
    // Known open bugs that fail some of the time: reported (KNOWN FAIL / KNOWN FLAKY passed) but
    // not counted, until fixed.
    let known: Vec<&str> = KNOWN_FAILING.iter().filter(|(v, _)| *v == version).map(|(_, s)| *s).collect();
    for name in &known {
        match results.iter().find(|(n, _)| n == name) {
            Some((_, Err(_))) => println!("KNOWN FAIL {name} (open bug, see KNOWN_FAILING)"),
            Some((_, Ok(()))) => println!("KNOWN FLAKY {name} passed this time (open bug, see KNOWN_FAILING)"),
            None => {}
        }
    }
    let failed: Vec<&str> = results.iter().filter(|(n, r)| r.is_err() && !known.contains(n)).map(|(n, _)| *n).collect();
    assert!(failed.is_empty(), "kubectl {version}: failed steps {failed:?} (details above)");
}

/// (kubectl version, step) pairs that fail some of the time, reported but not counted; empty since
/// the agent finishes the WebSocket closing handshake before it drops an exec connection (kubectl
/// 1.33's `exec -it` used to lose its exit status to "websocket: close 1006" now and then).
const KNOWN_FAILING: &[(&str, &str)] = &[];

fn sdk(v: &str) -> PathBuf {
    PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}"))
}

#[test]
fn kubectl_1_27() {
    session("1.27", &sdk("1.27"));
}

#[test]
fn kubectl_1_28() {
    session("1.28", &sdk("1.28"));
}

#[test]
fn kubectl_1_29() {
    session("1.29", &sdk("1.29"));
}

#[test]
fn kubectl_1_30() {
    session("1.30", &sdk("1.30"));
}

#[test]
fn kubectl_1_31() {
    session("1.31", &sdk("1.31"));
}

#[test]
fn kubectl_1_32() {
    session("1.32", &sdk("1.32"));
}

#[test]
fn kubectl_1_33() {
    session("1.33", &sdk("1.33"));
}

#[test]
fn kubectl_1_37() {
    session("1.37", &repo_root().join(".venv/bin/kubectl"));
}
