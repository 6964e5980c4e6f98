//! Network-namespace plumbing shared by every Yard component that touches the kernel: create and
//! delete named namespaces (the `ip netns` layout under `/run/netns`), run a closure or a child
//! process inside one, and open listening sockets that live in one while the caller stays in its
//! own namespace. Nothing here knows about Kubernetes.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

pub mod rtnl;

/// Where named network namespaces live, as `ip netns` keeps them.
pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netns {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("netns {path}: {op}: {errno}")]
    Sys { path: PathBuf, op: &'static str, errno: nix::Error },
    #[error("netns worker thread panicked")]
    Panicked,
}

pub type Result<T> = std::result::Result<T, Error>;

/// The path of the named namespace `name`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Whether a named namespace exists.
pub fn exists(name: &str) -> bool {
    path_of(name).exists()
}

/// Create the named network namespace `name` (like `ip netns add`), with loopback up.
/// Succeeds if it already exists.
pub fn create(name: &str) -> Result<PathBuf> {
    // Binding /run/netns onto itself on every call stacked one mount layer per namespace ever
    // created; every layer then received each later namespace mount by propagation, and the mount
    // table grew until all mounts failed with ENOSPC (fs.mount-max). Do it once, as iproute2 does.
    create_once_shared(name)
}

/// Like [`create`], but makes `/run/netns` a shared mount point only when it is not one yet (as
/// `ip netns add` does), so creating many namespaces does not stack bind mounts of the directory
/// onto itself (each stacked layer receives every later namespace mount by propagation, and the
/// mount table grows until `fs.mount-max` makes every mount fail with ENOSPC).
pub fn create_once_shared(name: &str) -> Result<PathBuf> {
    let path = path_of(name);
    if path.exists() {
        return Ok(path);
    }
    let run = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(run).map_err(|source| Error::Io { path: run.into(), source })?;
    let shared =
        || mount(None::<&str>, NETNS_RUN_DIR, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    if let Err(nix::errno::Errno::EINVAL) = shared() {
        // Not a mount point yet: bind it onto itself once, then make it shared.
        let _ =
            mount(Some(NETNS_RUN_DIR), NETNS_RUN_DIR, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>);
        let _ = shared();
    }
    File::create(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    let p = path.clone();
    let res = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Sys { path: p.clone(), op: "unshare", errno })?;
        mount(Some("/proc/thread-self/ns/net"), &p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|errno| Error::Sys { path: p.clone(), op: "bind mount", errno })?;
        // Loopback up, from inside (a new namespace's `lo` is always index 1, and down).
        rtnl::Rtnl::current().and_then(|mut nl| nl.set_up(1)).map_err(|source| Error::Io {
            path: p.clone(),
            source: io::Error::new(source.kind(), format!("set lo up: {source}")),
        })?;
        Ok(())
    })
    .join()
    .map_err(|_| Error::Panicked)?;
    if let Err(e) = res {
        let _ = delete_path(&path);
        return Err(e);
    }
    Ok(path)
}

/// Delete a named namespace (like `ip netns del`). Missing is not an error.
pub fn delete(name: &str) -> Result<()> {
    delete_path(&path_of(name))
}

/// Delete the namespace bind-mounted at `path`. Missing is not an error.
pub fn delete_path(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let _ = umount2(path, MntFlags::MNT_DETACH);
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io { path: path.into(), source }),
    }
}

/// Run `f` on a fresh OS thread that has joined the network namespace at `path`.
/// Sockets created inside `f` stay in that namespace after `f` returns.
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = File::open(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let p = path.to_path_buf();
    std::thread::spawn(move || -> Result<T> {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Sys { path: p, op: "setns", errno })?;
        Ok(f())
    })
    .join()
    .map_err(|_| Error::Panicked)?
}

/// A TCP listener bound to `addr` inside the namespace at `path` (non-blocking, ready for tokio).
pub fn tcp_listener_in(path: &Path, addr: SocketAddr) -> Result<TcpListener> {
    let l = run_in(path, move || TcpListener::bind(addr))?.map_err(|source| Error::Io { path: path.into(), source })?;
    l.set_nonblocking(true).map_err(|source| Error::Io { path: path.into(), source })?;
    Ok(l)
}

/// A UDP socket bound to `addr` inside the namespace at `path` (non-blocking, ready for tokio).
pub fn udp_socket_in(path: &Path, addr: SocketAddr) -> Result<UdpSocket> {
    let s = run_in(path, move || UdpSocket::bind(addr))?.map_err(|source| Error::Io { path: path.into(), source })?;
    s.set_nonblocking(true).map_err(|source| Error::Io { path: path.into(), source })?;
    Ok(s)
}

/// A `Command` whose child joins the network namespace at `path` before it execs.
///
/// The namespace file is opened here, before the fork (close-on-exec, so the program never sees
/// it): the child only calls `setns`. A path that cannot be opened makes the spawn fail with that
/// error.
pub fn command_in(path: &Path, program: &str) -> Command {
    let mut cmd = Command::new(program);
    // The errno, not the io::Error: building an error in the child must not allocate.
    let ns: std::result::Result<File, i32> = File::open(path).map_err(|e| e.raw_os_error().unwrap_or(libc_enoent()));
    // SAFETY: between fork and exec the closure calls only setns(2) on an fd opened before the
    // fork and builds OS-error values, which do not allocate: all async-signal-safe.
    unsafe {
        cmd.pre_exec(move || match &ns {
            Ok(f) => setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| io::Error::from_raw_os_error(e as i32)),
            Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
        });
    }
    cmd
}

/// ENOENT, for an open that failed without an OS error code.
fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

/// Run `program args...` inside the namespace at `path` and return its stdout; a non-zero exit is an
/// error carrying stderr.
pub fn output_in(path: &Path, program: &str, args: &[&str]) -> Result<String> {
    let out =
        command_in(path, program).args(args).output().map_err(|source| Error::Io { path: path.into(), source })?;
    if !out.status.success() {
        return Err(Error::Io {
            path: path.into(),
            source: io::Error::other(format!(
                "{program} {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yard_test_support::TempNetns;

    #[test]
    fn create_enter_delete() {
        yard_test_support::require_root("network namespaces");
        let ns = TempNetns::new("yard-nstest").expect("create netns (needs root)");
        let out = ns.sh("ip -o link show lo").unwrap();
        assert!(out.contains("UP") || out.contains("UNKNOWN"), "{out}");
        let l = tcp_listener_in(ns.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        // The listener is inside the namespace: from inside, ss sees it; from the root namespace the
        // port is not ours (connect is refused or reaches something else).
        let ss = ns.sh("ss -ltn").unwrap();
        assert!(ss.contains(&format!(":{port}")), "{ss}");
        let name = ns.name().to_string();
        drop(ns);
        assert!(!exists(&name));
    }

    #[test]
    fn command_in_a_missing_namespace_fails_to_spawn_with_its_errno() {
        let dir = std::env::temp_dir().join(format!("yard-netns-missing-{}", std::process::id()));
        let err = command_in(&dir.join("no-such-ns"), "true").status().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        // A file that is not a namespace: setns fails in the child with EINVAL and the spawn reports it.
        let err = command_in(Path::new("/proc/self/status"), "true").status().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::EINVAL as i32), "{err}");
    }
}
