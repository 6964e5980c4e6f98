//! End-to-end harness: starts the real `yard` binary as a child process (ended by PID on drop) and
//! drives it with the real kubectl and Python client from the repo's `.venv`.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The kubectl the test command installed (`.venv/bin/kubectl`), or $YARD_KUBECTL.
pub fn kubectl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("YARD_KUBECTL") {
        return PathBuf::from(p);
    }
    let p = repo_root().join(".venv/bin/kubectl");
    assert!(p.exists(), "kubectl not found at {} (run the README's test command, which installs it)", p.display());
    p
}

pub fn python_bin() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(p.exists(), "python venv not found at {}", p.display());
    p
}

/// A temporary directory removed on drop (also when the test panics).
pub use yard_test_support::TempDir;

/// A running `yard apiserver` child.
pub struct ApiServer {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub port: u16,
    extra: Vec<String>,
}

/// A port for a server a test starts (below the ephemeral range; see `pick_port`).
pub use yard_test_support::free_port;

impl ApiServer {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let mut s = Self {
            child: None,
            data_dir: data_dir.to_path_buf(),
            kubeconfig: data_dir.join("kubeconfig"),
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut args = vec!["--port".to_string(), self.port.to_string()];
        args.extend(self.extra.iter().cloned());
        self.child = Some(yard_test_support::process::spawn_apiserver(
            Path::new(env!("CARGO_BIN_EXE_yard")),
            &self.data_dir,
            &args,
        ));
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_with(&self.kubeconfig, args, None)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn k(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl with stdin.
    pub fn k_stdin(&self, args: &[&str], stdin: &str) -> Output {
        kubectl_with(&self.kubeconfig, args, Some(stdin))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // End only our own child, by PID.
            yard_test_support::process::stop(&mut c, Duration::from_secs(5));
        }
    }
}

pub fn nix_kill(pid: u32, sig: i32) -> std::io::Result<()> {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}

pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_in(None, kubeconfig, args, stdin)
}

/// kubectl run inside the named network namespace (`ip netns exec`), or here.
pub fn kubectl_in(netns: Option<&str>, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(kubectl_bin());
            c
        }
        None => Command::new(kubectl_bin()),
    };
    cmd.env("KUBECONFIG", kubeconfig).env_remove("KUBERNETES_SERVICE_HOST").args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    // Drained while kubectl runs: output larger than a pipe's buffer would otherwise stall it.
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kubectl {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Everything `r` yields until it ends, read on a thread of its own.
fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Poll `f` until it returns Some (or true) or `timeout` passes.
pub use yard_test_support::eventually;

pub fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// A running `yard up` child process; stopped with SIGINT (as Ctrl-C) on drop.
pub struct Up {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub name: String,
    pub kubeconfig: PathBuf,
    pub stdout: std::sync::Arc<std::sync::Mutex<String>>,
    /// The network namespace `yard up` (and kubectl) run in; None = this one.
    pub netns: Option<String>,
}

impl Up {
    pub fn start(name: &str, data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_in(None, name, data_dir, extra)
    }

    /// `yard up` run inside the named network namespace (`ip netns exec` execs it: same PID).
    pub fn start_in(netns: Option<&str>, name: &str, data_dir: &Path, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_yard")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_yard")),
        };
        let mut child = cmd
            .args(["up", "--name", name, "--api-port", "0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data_dir.with_extension("stderr.log")).unwrap())
            .spawn()
            .expect("spawn yard up");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let o2 = out.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                o2.lock().unwrap().push_str(&line);
                o2.lock().unwrap().push('\n');
                if line.contains("is up;") {
                    let _ = tx.send(true);
                }
            }
            let _ = tx.send(false);
        });
        let up = Up {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            name: name.to_string(),
            kubeconfig: data_dir.join("kubeconfig"),
            stdout: out,
            netns: netns.map(String::from),
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(true) => up,
            _ => panic!(
                "yard up did not come up:\n{}\n{}",
                up.stdout.lock().unwrap(),
                std::fs::read_to_string(data_dir.with_extension("stderr.log")).unwrap_or_default()
            ),
        }
    }

    pub fn k(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_in(self.netns.as_deref(), &self.kubeconfig, args, None)
    }

    /// `yard shell --node NODE -- args...`
    pub fn shell(&self, node: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_yard"));
        cmd.args(["shell", "--data-dir"]).arg(&self.data_dir);
        if let Some(n) = node {
            cmd.args(["--node", n]);
        }
        cmd.arg("--").args(args).output().expect("yard shell")
    }

    /// SIGKILL `yard up` (nothing of it runs its shutdown) and reap it; what it started stays.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop with SIGINT (Ctrl-C) and wait; returns stdout.
    pub fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = nix_kill(c.id(), 2);
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("yard up did not stop within 90 s of SIGINT");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.is_some() && !std::thread::panicking() {
            self.stop();
        } else if let Some(c) = self.child.as_ref() {
            // A failed test: show what the cluster logged (its data dir is about to be removed).
            let log = std::fs::read_to_string(self.data_dir.with_extension("stderr.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- last lines of `yard up` ({}) stderr ---\n{}",
                self.name,
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
            let _ = nix_kill(c.id(), 2);
            if let Some(mut c) = self.child.take() {
                let deadline = Instant::now() + Duration::from_secs(60);
                while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a run may change on the host: named namespaces, links, nftables ruleset.
pub fn host_snapshot() -> String {
    let run = |c: &str, a: &[&str]| {
        String::from_utf8_lossy(&Command::new(c).args(a).output().map(|o| o.stdout).unwrap_or_default()).into_owned()
    };
    format!(
        "{}\n{}\n{}",
        run("ip", &["netns", "list"]),
        run("ip", &["-o", "link", "show"]),
        run("nft", &["list", "ruleset"])
    )
}
