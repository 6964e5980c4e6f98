//! The filesystem view of one container, built with `pivot_root` in the container's own mount
//! namespace: a fresh tmpfs as `/` (the writable root, with a private `/tmp`), the host's system
//! directories read-only (`/usr` and the merged-usr links, the `/etc` entries programs read), the
//! pod's generated `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, its own `/proc` (mounted from inside
//! its PID namespace), a minimal `/dev`, a read-only `/sys` of the pod's network namespace, and then the program's and the
//! volumes' bind mounts. Nothing else of the host is there: no `/root`, `/home`, host `/tmp`,
//! `/var`, `/run`, the agent's data directory or other pods.
//!
//! [`Plan::new`] runs in the agent before fork and turns everything into C strings and a list of
//! steps; [`Plan::apply`] runs in the child between fork and exec and only makes system calls.
//! The same plan takes an image's unpacked root filesystem later: it is one more read-only bind.

use std::ffi::CString;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The host's system directories a host program needs, bound read-only (or, when the host has a
/// merged /usr, recreated as the same symlinks).
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// The `/etc` entries host programs read (the dynamic linker, users and groups, name service,
/// certificates, time zone, the alternatives links Debian's commands go through, nginx's config).
const ETC_ENTRIES: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "group",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nginx",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "profile",
    "protocols",
    "services",
    "shells",
    "ssl",
    "terminfo",
    "timezone",
];

/// Device nodes bound from the host into the container's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` entries a default (unprivileged) container must not use: masked with /dev/null or
/// made read-only, as container runtimes do.
const PROC_MASKED: &[&str] = &["kcore", "keys", "timer_list", "sched_debug", "latency_stats"];
const PROC_READONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// One bind mount into the view.
#[derive(Clone, Debug, PartialEq)]
pub struct Bind {
    /// Host path (a file or a directory).
    pub host: PathBuf,
    /// Absolute path inside the container.
    pub inner: PathBuf,
    pub read_only: bool,
}

/// What one container's view is made of.
#[derive(Clone, Debug)]
pub struct View {
    /// An empty host directory the view's tmpfs is mounted on (inside the child's mount
    /// namespace only: the host never sees the mount).
    pub root: PathBuf,
    pub hostname_file: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The program's binds (busybox applets, the agent binary for built-ins, nginx's directory)
    /// and then the volumes', in the container's `volumeMounts` order.
    pub binds: Vec<Bind>,
    /// The working directory, created if missing (as container runtimes do).
    pub cwd: Option<PathBuf>,
    /// `privileged: true`: /proc and /sys are not masked and /sys is writable.
    pub privileged: bool,
}

#[derive(Debug)]
enum Step {
    Mkdir(CString, u32),
    Touch(CString),
    Symlink(CString, CString),
    Bind { src: CString, dst: CString, read_only: bool },
    Mount { fstype: &'static str, dst: CString, flags: MsFlags, data: Option<CString> },
}

/// The steps that build a view, prepared before fork.
#[derive(Debug)]
pub struct Plan {
    root: CString,
    steps: Vec<Step>,
    /// Run after pivot_root, by the process inside the container's PID namespace.
    proc_steps: Vec<Step>,
    cwd: CString,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::other("path with NUL"))
}

/// `inner` must be absolute, without `..`: the place it names inside `root`.
fn under(root: &Path, inner: &Path) -> io::Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in inner.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: must not contain '..'", inner.display()),
                ))
            }
        }
    }
    Ok(out)
}

impl Plan {
    pub fn new(v: &View) -> io::Result<Plan> {
        let mut steps = vec![];
        let root = &v.root;
        let mkdir = |steps: &mut Vec<Step>, inner: &str, mode: u32| -> io::Result<()> {
            steps.push(Step::Mkdir(cstr(&under(root, Path::new(inner))?)?, mode));
            Ok(())
        };
        for d in ["etc", "dev", "proc", "sys", "run", "var", "var/lib", "var/log", "var/cache", "root", "home", "mnt"] {
            mkdir(&mut steps, d, if d == "root" { 0o700 } else { 0o755 })?;
        }
        mkdir(&mut steps, "tmp", 0o1777)?;
        mkdir(&mut steps, "var/tmp", 0o1777)?;
        steps.push(Step::Symlink(CString::new("../run").unwrap(), cstr(&root.join("var/run"))?));
        for d in SYSTEM_DIRS {
            let host = Path::new(d);
            let Ok(md) = std::fs::symlink_metadata(host) else { continue };
            let dst = under(root, host)?;
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(host)?;
                if target.is_absolute() {
                    // An absolute link would point out of the view while it is being built.
                    let rel = target.strip_prefix("/").unwrap_or(&target);
                    steps.push(Step::Symlink(cstr(rel)?, cstr(&dst)?));
                } else {
                    steps.push(Step::Symlink(cstr(&target)?, cstr(&dst)?));
                }
            } else if md.is_dir() {
                steps.push(Step::Mkdir(cstr(&dst)?, 0o755));
                steps.push(Step::Bind { src: cstr(host)?, dst: cstr(&dst)?, read_only: true });
            }
        }
        for e in ETC_ENTRIES {
            let host = Path::new("/etc").join(e);
            let Ok(md) = std::fs::metadata(&host) else { continue };
            let dst = root.join("etc").join(e);
            steps.push(if md.is_dir() { Step::Mkdir(cstr(&dst)?, 0o755) } else { Step::Touch(cstr(&dst)?) });
            steps.push(Step::Bind { src: cstr(&host)?, dst: cstr(&dst)?, read_only: true });
        }
        for (src, name) in [(&v.hostname_file, "hostname"), (&v.hosts, "hosts"), (&v.resolv_conf, "resolv.conf")] {
            let dst = root.join("etc").join(name);
            steps.push(Step::Touch(cstr(&dst)?));
            steps.push(Step::Bind { src: cstr(src)?, dst: cstr(&dst)?, read_only: false });
        }
        // /dev: a small tmpfs with the usual nodes, links and a private /dev/shm.
        let dev = root.join("dev");
        let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
        steps.push(Step::Mount {
            fstype: "tmpfs",
            dst: cstr(&dev)?,
            flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            data: Some(CString::new("mode=755,size=65536k").unwrap()),
        });
        for d in DEVICES {
            let host = Path::new("/dev").join(d);
            if host.exists() {
                steps.push(Step::Touch(cstr(&dev.join(d))?));
                steps.push(Step::Bind { src: cstr(&host)?, dst: cstr(&dev.join(d))?, read_only: false });
            }
        }
        for (target, link) in [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
            ("/proc/kcore", "core"),
        ] {
            steps.push(Step::Symlink(CString::new(target).unwrap(), cstr(&dev.join(link))?));
        }
        steps.push(Step::Mkdir(cstr(&dev.join("shm"))?, 0o1777));
        steps.push(Step::Mount {
            fstype: "tmpfs",
            dst: cstr(&dev.join("shm"))?,
            flags: nosuid | MsFlags::MS_NODEV,
            data: Some(CString::new("mode=1777,size=65536k").unwrap()),
        });
        // A read-only /sys (of the pod's network namespace); /proc comes after pivot_root, from
        // inside the container's PID namespace (see [`Plan::apply_proc`]).
        let mut sys_flags = nosuid | MsFlags::MS_NODEV;
        let mut proc_steps = vec![Step::Mount {
            fstype: "proc",
            dst: CString::new("/proc").unwrap(),
            flags: nosuid | MsFlags::MS_NODEV,
            data: None,
        }];
        if !v.privileged {
            sys_flags |= MsFlags::MS_RDONLY;
            for m in PROC_MASKED {
                let p = Path::new("/proc").join(m);
                if p.exists() {
                    proc_steps.push(Step::Bind {
                        src: CString::new("/dev/null").unwrap(),
                        dst: cstr(&p)?,
                        read_only: true,
                    });
                }
            }
            for r in PROC_READONLY {
                let p = Path::new("/proc").join(r);
                if p.exists() {
                    proc_steps.push(Step::Bind { src: cstr(&p)?, dst: cstr(&p)?, read_only: true });
                }
            }
        }
        steps.push(Step::Mount { fstype: "sysfs", dst: cstr(&root.join("sys"))?, flags: sys_flags, data: None });
        // The program's and the volumes' binds: mount points are created along the way (inside
        // the view's tmpfs; a missing one under a read-only host directory is an error).
        for b in &v.binds {
            let dst = under(root, &b.inner)?;
            let md = std::fs::metadata(&b.host)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", b.host.display())))?;
            let mut parents: Vec<&Path> = b.inner.ancestors().skip(1).collect();
            parents.reverse();
            for p in parents.into_iter().skip(1) {
                steps.push(Step::Mkdir(cstr(&under(root, p)?)?, 0o755));
            }
            steps.push(if md.is_dir() { Step::Mkdir(cstr(&dst)?, 0o755) } else { Step::Touch(cstr(&dst)?) });
            steps.push(Step::Bind { src: cstr(&b.host)?, dst: cstr(&dst)?, read_only: b.read_only });
        }
        let cwd = v.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
        if v.cwd.is_some() {
            let mut parents: Vec<&Path> = cwd.ancestors().collect();
            parents.reverse();
            for p in parents.into_iter().skip(1) {
                steps.push(Step::Mkdir(cstr(&under(root, p)?)?, 0o755));
            }
        }
        Ok(Plan { root: cstr(root)?, steps, proc_steps, cwd: cstr(&cwd)? })
    }

    /// In the child, between fork and exec, in a mount namespace of its own whose mounts are
    /// already private: build the view and make it `/`.
    pub fn apply(&self) -> io::Result<()> {
        let at = |what: &str, p: &CString, e: nix::errno::Errno| {
            io::Error::new(io::Error::from(e).kind(), format!("{what} {}: {e}", p.to_string_lossy()))
        };
        mount(
            Some("tmpfs"),
            self.root.as_c_str(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=755"),
        )
        .map_err(|e| at("mount tmpfs on", &self.root, e))?;
        run(&self.steps)?;
        nix::unistd::chdir(self.root.as_c_str()).map_err(|e| at("chdir", &self.root, e))?;
        // pivot_root(".", "."): the old root ends up stacked under the new one and is detached.
        // SAFETY: two NUL-terminated strings.
        if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
            return Err(at("pivot_root", &self.root, nix::errno::Errno::last()));
        }
        umount2(".", MntFlags::MNT_DETACH).map_err(|e| at("detach the old root", &self.root, e))?;
        nix::unistd::chdir(self.cwd.as_c_str()).map_err(|e| at("chdir", &self.cwd, e))?;
        Ok(())
    }

    /// After [`Plan::apply`], in the process that is in the container's PID namespace: its own
    /// /proc, masked for an unprivileged container.
    pub fn apply_proc(&self) -> io::Result<()> {
        run(&self.proc_steps)
    }
}

/// Carry out steps (between fork and exec: system calls only).
fn run(steps: &[Step]) -> io::Result<()> {
    let at = |what: &str, p: &CString, e: nix::errno::Errno| {
        io::Error::new(io::Error::from(e).kind(), format!("{what} {}: {e}", p.to_string_lossy()))
    };
    for s in steps {
        match s {
            Step::Mkdir(p, mode) => {
                // SAFETY: a NUL-terminated path we own.
                if unsafe { libc::mkdir(p.as_ptr(), *mode) } != 0 {
                    let e = nix::errno::Errno::last();
                    if e != nix::errno::Errno::EEXIST && !exists(p) {
                        return Err(at("mkdir", p, e));
                    }
                } else {
                    // The umask must not take the sticky or write bits away.
                    // SAFETY: as above.
                    unsafe { libc::chmod(p.as_ptr(), *mode) };
                }
            }
            Step::Touch(p) => {
                // SAFETY: a NUL-terminated path we own; the fd is closed at once.
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644) };
                if fd < 0 {
                    let e = nix::errno::Errno::last();
                    if !exists(p) {
                        return Err(at("create", p, e));
                    }
                } else {
                    // SAFETY: the fd we just opened.
                    unsafe { libc::close(fd) };
                }
            }
            Step::Symlink(target, link) => {
                // SAFETY: NUL-terminated strings we own.
                if unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } != 0 {
                    let e = nix::errno::Errno::last();
                    if e != nix::errno::Errno::EEXIST {
                        return Err(at("symlink", link, e));
                    }
                }
            }
            Step::Bind { src, dst, read_only } => {
                mount(
                    Some(src.as_c_str()),
                    dst.as_c_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| at("bind mount", dst, e))?;
                if *read_only {
                    mount(
                        None::<&str>,
                        dst.as_c_str(),
                        None::<&str>,
                        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
                        None::<&str>,
                    )
                    .map_err(|e| at("remount read-only", dst, e))?;
                }
            }
            Step::Mount { fstype, dst, flags, data } => {
                mount(Some(*fstype), dst.as_c_str(), Some(*fstype), *flags, data.as_deref())
                    .map_err(|e| at(&format!("mount {fstype} on"), dst, e))?;
            }
        }
    }
    Ok(())
}

fn exists(p: &CString) -> bool {
    // SAFETY: a NUL-terminated path; `st` is written by the kernel.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::stat(p.as_ptr(), &mut st) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_paths_stay_inside() {
        assert_eq!(under(Path::new("/r"), Path::new("/a/b")).unwrap(), PathBuf::from("/r/a/b"));
        assert!(under(Path::new("/r"), Path::new("/a/../../etc")).is_err());
    }

    #[test]
    fn plan_has_system_dirs_and_binds() {
        let v = View {
            root: "/tmp/x-root".into(),
            hostname_file: "/tmp/h".into(),
            hosts: "/tmp/hosts".into(),
            resolv_conf: "/tmp/r".into(),
            binds: vec![Bind { host: "/usr/bin".into(), inner: "/opt/a/b".into(), read_only: true }],
            cwd: Some("/work/dir".into()),
            privileged: false,
        };
        let p = Plan::new(&v).unwrap();
        let s = format!("{p:?}");
        assert!(s.contains("/tmp/x-root/opt/a/b"));
        assert!(s.contains("/tmp/x-root/etc/hostname"));
        assert!(s.contains("/tmp/x-root/work/dir"));
        assert!(format!("{:?}", p.proc_steps).contains("/proc/keys"));
        // A bind whose host side is missing is an error before fork.
        let mut bad = v.clone();
        bad.binds[0].host = "/nonexistent/x".into();
        assert!(Plan::new(&bad).is_err());
    }
}
