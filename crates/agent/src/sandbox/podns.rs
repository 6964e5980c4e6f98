//! The namespaces a pod's containers share besides the network one: IPC (System V IPC and POSIX
//! message queues; the host's with `hostIPC: true`) and UTS (the pod's hostname, set once here).
//! Each is made by a short-lived thread that `unshare`s it and bind-mounts its
//! `/proc/thread-self/ns/*` file into the pod's directory, so it outlives the thread and is
//! found again by an agent that restarts; every container (and the shareProcessNamespace pause)
//! `setns`es into those files before its mount namespace is made.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The shared namespaces of one pod, as bind-mounted namespace files (None: the host's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodNs {
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

fn ns_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("ns")
}

/// Whether `p` is a mount point of a namespace file (what [`ensure`] leaves).
fn is_ns_mount(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.as_os_str().as_encoded_bytes();
    info.lines().any(|l| {
        let mut f = l.split(' ');
        f.nth(4).map(str::as_bytes) == Some(want) && l.split(" - ").nth(1).is_some_and(|t| t.starts_with("nsfs "))
    })
}

/// Make (or find, after an agent restart) the pod's IPC namespace (unless `host_ipc`) and its
/// UTS namespace with `hostname` (always: a hostNetwork pod gets a namespace of its own named
/// after the node, since several nodes of this host share its kernel).
pub fn ensure(pod_dir: &Path, hostname: &str, host_ipc: bool) -> io::Result<PodNs> {
    let dir = ns_dir(pod_dir);
    std::fs::create_dir_all(&dir)?;
    let mut want: Vec<(&str, CloneFlags)> = vec![("uts", CloneFlags::CLONE_NEWUTS)];
    if !host_ipc {
        want.push(("ipc", CloneFlags::CLONE_NEWIPC));
    }
    let mut out = PodNs::default();
    let mut missing = vec![];
    for (name, flag) in &want {
        let p = dir.join(name);
        if !is_ns_mount(&p) {
            missing.push((*name, *flag, p.clone()));
        }
        match *name {
            "uts" => out.uts = Some(p),
            _ => out.ipc = Some(p),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let hostname = hostname.to_string();
    // unshare(2) moves only the calling thread: a thread of its own, which ends right after, so
    // no other agent thread is ever in the pod's namespaces.
    std::thread::spawn(move || -> io::Result<()> {
        let flags = missing.iter().fold(CloneFlags::empty(), |a, (_, f, _)| a | *f);
        unshare(flags).map_err(io::Error::from)?;
        if flags.contains(CloneFlags::CLONE_NEWUTS) {
            nix::unistd::sethostname(&hostname).map_err(io::Error::from)?;
        }
        for (name, _, p) in &missing {
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(p)?;
            let src = format!("/proc/thread-self/ns/{name}");
            mount(Some(src.as_str()), p.as_path(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| io::Error::other(format!("bind {src} to {}: {e}", p.display())))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("pod namespace thread panicked"))??;
    Ok(out)
}

/// Release the pod's namespaces (they end when no process is left in them).
pub fn remove(pod_dir: &Path) {
    let dir = ns_dir(pod_dir);
    for name in ["ipc", "uts"] {
        let p = dir.join(name);
        while is_ns_mount(&p) {
            if let Err(e) = umount2(&p, MntFlags::MNT_DETACH) {
                tracing::warn!("unmount {}: {e}", p.display());
                break;
            }
        }
        let _ = std::fs::remove_file(&p);
    }
    let _ = std::fs::remove_dir(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn made_found_again_and_removed() {
        if !root() {
            panic!("this test needs root (it makes namespaces)");
        }
        let dir = std::env::temp_dir().join(format!("yard-podns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ns = ensure(&dir, "pod-a", false).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
        let mine = |n: &str| ino(Path::new(&format!("/proc/thread-self/ns/{n}")));
        let (ipc, uts) = (ns.ipc.clone().unwrap(), ns.uts.clone().unwrap());
        assert_ne!(ino(&ipc), mine("ipc"));
        assert_ne!(ino(&uts), mine("uts"));
        // Found again, not made again.
        let again = ensure(&dir, "pod-a", false).unwrap();
        assert_eq!(again, ns);
        assert_eq!(ino(&again.uts.clone().unwrap()), ino(&uts));
        // This thread's hostname is untouched.
        assert_ne!(nix::unistd::gethostname().unwrap(), "pod-a");
        remove(&dir);
        assert!(!is_ns_mount(&ipc) && !ipc.exists() && !uts.exists());
        let host = ensure(&dir, "pod-b", true).unwrap();
        assert_eq!(host.ipc, None);
        remove(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
