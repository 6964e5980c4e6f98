//! Network namespaces a test creates and that go away when it ends, on failure too. Every address
//! a test gives out lives inside one of these (or on loopback), never in the root namespace.
//!
//! - [`TempNetns`]: a named namespace under `/run/netns` (what `ip netns exec NAME` and
//!   `ip link ... netns NAME` accept), deleted on drop.
//! - [`HeldNetns`]: an anonymous namespace held open by a `sleep` the test starts (`unshare --net`),
//!   addressed as `/proc/PID/ns/net`; killing the holder on drop frees it. For tests that make
//!   dozens of namespaces: nothing is mounted, so the host's mount table does not grow.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A named network namespace `prefix-<pid>-<n>` (loopback up), deleted when dropped.
pub struct TempNetns {
    name: String,
    path: PathBuf,
}

impl TempNetns {
    /// Creates `prefix-<pid>-<n>`, unique within this process. Needs root.
    pub fn new(prefix: &str) -> yard_netns::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = yard_netns::create(&name)?;
        Ok(Self { name, path })
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Runs `sh -c script` inside; its stdout, or an error carrying stderr on a non-zero exit.
    pub fn sh(&self, script: &str) -> yard_netns::Result<String> {
        yard_netns::output_in(&self.path, "sh", &["-c", script])
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = yard_netns::delete_path(&self.path);
    }
}

/// An anonymous network namespace (loopback up) held by a `sleep` child; gone when dropped.
pub struct HeldNetns {
    holder: Child,
    path: PathBuf,
    pid: String,
}

impl HeldNetns {
    /// Starts the holder (`unshare --net sleep 3600`) and waits until it is in its own namespace.
    pub fn new() -> Result<HeldNetns, String> {
        let holder = std::process::Command::new("unshare")
            .args(["--net", "sleep", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let pid = holder.id().to_string();
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let ns = HeldNetns { holder, path, pid };
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
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// What `ip ... netns X` accepts: the holder's PID.
    pub fn name(&self) -> &str {
        &self.pid
    }
    /// Runs `sh -c script` inside; its stdout, or stderr as the error.
    pub fn sh(&self, script: &str) -> Result<String, String> {
        yard_netns::output_in(&self.path, "sh", &["-c", script]).map_err(|e| e.to_string())
    }
}

impl Drop for HeldNetns {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_held_namespaces_are_private_and_go_on_drop() {
        crate::require_root("network namespaces");
        let ns = TempNetns::new("yard-ts").expect("create netns");
        let out = ns.sh("ip -o link show lo").unwrap();
        assert!(out.contains("UP") || out.contains("UNKNOWN"), "{out}");
        let name = ns.name().to_string();
        assert!(yard_netns::exists(&name));
        drop(ns);
        assert!(!yard_netns::exists(&name));

        let held = HeldNetns::new().unwrap();
        let inside = std::fs::read_link(held.path()).unwrap();
        assert_ne!(inside, std::fs::read_link("/proc/self/ns/net").unwrap());
        let path = held.path().to_path_buf();
        drop(held);
        assert!(!path.exists(), "holder gone");
    }
}
