//! The real `yard apiserver` as a child process of the test, for suites that drive it from outside
//! (kubectl, kube-rs over TLS). The caller keeps the [`Child`] and ends it by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `yard` binary next to the running test (`target/<profile>/deps/x-HASH` ->
/// `target/<profile>/yard`), or `$YARD_BIN`. Crates other than `yard` cannot name it with
/// `CARGO_BIN_EXE_yard`; `cargo build -p yard` builds it. Panics with that advice when absent.
pub fn yard_bin() -> PathBuf {
    if let Ok(p) = std::env::var("YARD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe.parent().and_then(|p| p.parent()).expect("target dir").join("yard");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p yard` (same target dir) or set YARD_BIN",
        bin.display()
    );
    bin
}

/// Starts `bin apiserver --data-dir DIR <args>` with its stderr in `DIR/apiserver.log` and waits
/// (at most 30 s) until it has written `DIR/kubeconfig`; panics with the log if it exits first.
pub fn spawn_apiserver(bin: &Path, data_dir: &Path, args: &[String]) -> Child {
    let kubeconfig = data_dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let log_path = data_dir.join("apiserver.log");
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
    let mut child = Command::new(bin)
        .args(["apiserver", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn yard apiserver");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("yard apiserver exited early: {st}: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("apiserver did not write {} in time", kubeconfig.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Ends `child` (ours) with SIGTERM, then SIGKILL if it is still there after `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
