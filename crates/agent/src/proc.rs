//! Container and exec processes: start a child inside a pod's network, IPC and UTS namespaces
//! with a mount namespace of its own (the filesystem view of [`crate::sandbox::rootfs`] as its
//! root), its capabilities and seccomp filter; capture stdout/stderr
//! through FIFOs into CRI-format log files, signal process groups, and watch processes that are
//! not our children (adopted after an agent restart).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use tokio::io::AsyncReadExt;

/// Everything needed to start one container process.
#[derive(Clone, Debug)]
pub struct Spec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Pod network namespace.
    pub netns: PathBuf,
    pub hostname: String,
    /// The pod's IPC and UTS namespaces (see [`crate::sandbox::podns`]); without a UTS one the
    /// container gets a namespace of its own named `hostname`.
    pub pod_ns: crate::sandbox::podns::PodNs,
    /// The container's filesystem view (its generated /etc files, binds and volumes).
    pub view: crate::sandbox::rootfs::View,
    /// Which PID namespace the program runs in.
    pub pid_ns: PidNs,
    /// Directory for the stdout/stderr FIFOs of this container.
    pub fifo_dir: PathBuf,
    /// `stdin: true`: the container's stdin is a pipe whose write end the agent keeps.
    pub stdin: bool,
    /// `tty: true`: stdin, stdout and stderr are one pty whose master the agent keeps.
    pub tty: bool,
    /// The container's cgroup: its `cgroup.procs` files are opened before fork and the child
    /// joins them before anything else, so its limits hold from the first instruction.
    pub cgroup: Option<crate::cgroup::Cgroup>,
    /// User, groups and no_new_privs from the securityContext.
    pub identity: crate::security::Identity,
}

/// The PID namespace of a container.
#[derive(Clone, Debug, PartialEq)]
pub enum PidNs {
    /// `hostPID: true`: the node's.
    Host,
    /// Its own: the program is PID 1 there (and the agent's child).
    Own,
    /// `shareProcessNamespace: true`: the pod's, whose PID 1 is the pod's pause process (this
    /// names the pause's `/proc/<pid>/ns/pid_for_children`).
    Join(PathBuf),
}

/// The environment's PATH, or the default one.
fn env_path(env: &[(String, String)]) -> String {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
}

/// Look the program up in the environment's PATH (as the container would).
pub fn resolve_program(argv0: &str, env: &[(String, String)]) -> Option<PathBuf> {
    let path = env_path(env);
    crate::image::find_in_path(argv0, &path).filter(|p| p.exists())
}

/// Look the program up as the container would, in the filesystem view whose root is `root` (a
/// running container's `/proc/<pid>/root`). The path returned is the container's.
pub fn resolve_program_in(root: &Path, argv0: &str, env: &[(String, String)]) -> Option<PathBuf> {
    let path = env_path(env);
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if argv0.contains('/') {
        let p = PathBuf::from(argv0);
        return inside(&p).exists().then_some(p);
    }
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(argv0))
        .find(|cand| executable(&inside(cand)) || executable(cand) && inside(cand).exists())
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::other("path with NUL"))
}

fn mkfifo(p: &Path) -> io::Result<()> {
    match nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// The FIFO paths of a container.
pub fn fifo_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("stdout.fifo"), dir.join("stderr.fifo"))
}

/// A started container: the child and the FIFO read ends (opened before the child so no output is
/// lost), or with a TTY the pty master (its output, and its input).
pub struct Started {
    pub child: tokio::process::Child,
    pub pid: i32,
    pub stdout: Option<tokio::net::unix::pipe::Receiver>,
    pub stderr: Option<tokio::net::unix::pipe::Receiver>,
    /// Write end of the stdin pipe (`stdin: true` without a TTY).
    pub stdin: Option<File>,
    /// The pty master (`tty: true`).
    pub pty: Option<OwnedFd>,
}

/// Open the read end of a FIFO without blocking.
pub fn open_fifo_reader(p: &Path) -> io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::OpenOptions::new().open_receiver(p)
}

/// Start a container process. Must be called inside a tokio runtime.
pub fn spawn(spec: &Spec) -> io::Result<Started> {
    let prog = resolve_program(&spec.argv[0], &spec.env).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("exec: \"{}\": executable file not found in $PATH", spec.argv[0]),
        )
    })?;
    std::fs::create_dir_all(&spec.fifo_dir)?;
    let mut cmd = std::process::Command::new(&prog);
    let (mut stdout, mut stderr, mut stdin_w, mut pty) = (None, None, None, None);
    if spec.tty {
        let (master, slave) = openpty()?;
        let s = || -> io::Result<Stdio> { Ok(Stdio::from(dup_file(slave.as_raw_fd())?)) };
        cmd.stdin(s()?).stdout(s()?).stderr(s()?);
        pty = Some(master);
    } else {
        let (out_p, err_p) = fifo_paths(&spec.fifo_dir);
        mkfifo(&out_p)?;
        mkfifo(&err_p)?;
        stdout = Some(open_fifo_reader(&out_p)?);
        stderr = Some(open_fifo_reader(&err_p)?);
        // The child holds the FIFOs read-write: it never gets SIGPIPE while no agent reads, and output
        // stays buffered for the agent that adopts it.
        let w_out = OpenOptions::new().read(true).write(true).open(&out_p)?;
        let w_err = OpenOptions::new().read(true).write(true).open(&err_p)?;
        cmd.stdout(Stdio::from(w_out)).stderr(Stdio::from(w_err));
        if spec.stdin {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
            cmd.stdin(Stdio::from(r));
            stdin_w = Some(File::from(w));
        } else {
            cmd.stdin(Stdio::null());
        }
    }
    let ctty = spec.tty;
    let netns = File::open(&spec.netns)?;
    let netns_fd: RawFd = netns.as_raw_fd();
    let hostname = spec.hostname.clone();
    let ipc_ns = spec.pod_ns.ipc.as_ref().map(File::open).transpose()?;
    let uts_ns = spec.pod_ns.uts.as_ref().map(File::open).transpose()?;
    std::fs::create_dir_all(&spec.view.root)?;
    let plan = crate::sandbox::rootfs::Plan::new(&spec.view)?;
    let cgroup_procs =
        spec.cgroup.as_ref().map(|g| g.open_procs().map_err(io::Error::other)).transpose()?.unwrap_or_default();
    let ident = IdentitySwitch::new(&spec.identity)?;
    let read_only_root = spec.identity.read_only_root;
    cmd.arg0(&spec.argv[0]).args(&spec.argv[1..]).env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    let join_pid = match &spec.pid_ns {
        PidNs::Join(p) => Some(File::open(p)?),
        _ => None,
    };
    // SAFETY: the closure runs in the forked child before exec and only makes system calls.
    unsafe {
        cmd.pre_exec(move || {
            crate::cgroup::join_self(&cgroup_procs)?;
            nix::unistd::setsid().map_err(io::Error::from)?;
            let pts = if ctty { crate::sandbox::pidns::PtsName::of_stdin() } else { None };
            let fd = std::os::fd::BorrowedFd::borrow_raw(netns_fd);
            setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            if let Some(f) = &ipc_ns {
                setns(f, CloneFlags::CLONE_NEWIPC).map_err(io::Error::from)?;
            }
            match &uts_ns {
                Some(f) => setns(f, CloneFlags::CLONE_NEWUTS).map_err(io::Error::from)?,
                None => {
                    unshare(CloneFlags::CLONE_NEWUTS).map_err(io::Error::from)?;
                    nix::unistd::sethostname(&hostname).map_err(io::Error::from)?;
                }
            }
            unshare(CloneFlags::CLONE_NEWNS).map_err(io::Error::from)?;
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
                .map_err(io::Error::from)?;
            // Drop this namespace's references to every named network namespace (other pods'
            // included) so they are freed when the agent deletes them.
            for _ in 0..64 {
                if nix::mount::umount2("/run/netns", nix::mount::MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
            plan.apply()?;
            if ctty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            plan.apply_proc()?;
            if let Some(p) = &pts {
                p.bind()?;
            }
            if read_only_root {
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    None::<&str>,
                )
                .map_err(io::Error::from)?;
            }
            ident.apply()
        });
    }
    let mut tcmd = tokio::process::Command::from(cmd);
    tcmd.kill_on_drop(false);
    // (The command, and the child's ends of its stdio with it, is dropped once spawned.)
    let child = spawn_in_pid_ns(tcmd, &spec.pid_ns, join_pid)?;
    drop(netns);
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    Ok(Started { child, pid, stdout, stderr, stdin: stdin_w, pty })
}

/// Spawn a container's first process into its PID namespace: a new one (`Own`: it is PID 1
/// there), the pod's (`join`: the pause's), or the node's. `unshare(CLONE_NEWPID)` and `setns`
/// of a PID namespace only change where the calling thread's future children go, so they are
/// made on a thread of its own that forks this one child and ends: no other thread of the agent
/// ever forks into a pod's namespace, and the container is the agent's own child (no relay).
fn spawn_in_pid_ns(
    mut cmd: tokio::process::Command,
    ns: &PidNs,
    join: Option<File>,
) -> io::Result<tokio::process::Child> {
    if *ns == PidNs::Host {
        return cmd.spawn();
    }
    let handle = tokio::runtime::Handle::current();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _rt = handle.enter();
            match &join {
                Some(f) => setns(f, CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?,
                None => unshare(CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?,
            }
            cmd.spawn()
        })
        .join()
        .map_err(|_| io::Error::other("spawn thread panicked"))?
    })
}

/// Namespace files of a running process that an exec joins.
pub struct ExecTarget {
    pub pid: i32,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// The container's cgroup: an exec runs under its limits.
    pub cgroup: Option<crate::cgroup::Cgroup>,
    /// The container's user: an exec runs as it.
    pub identity: crate::security::Identity,
    /// An executable that runs `builtin relay` (see [`crate::sandbox::pidns`]).
    pub relay_exe: PathBuf,
}

/// Open /proc/<pid>/ns/{net,ipc,uts,mnt} and the PID namespace its children are in: the container's,
/// both for its first process and for the relay an earlier agent version started it behind.
fn open_ns(pid: i32) -> io::Result<Vec<(File, CloneFlags)>> {
    Ok(vec![
        (File::open(format!("/proc/{pid}/ns/net"))?, CloneFlags::CLONE_NEWNET),
        (File::open(format!("/proc/{pid}/ns/ipc"))?, CloneFlags::CLONE_NEWIPC),
        (File::open(format!("/proc/{pid}/ns/uts"))?, CloneFlags::CLONE_NEWUTS),
        (File::open(format!("/proc/{pid}/ns/pid_for_children"))?, CloneFlags::CLONE_NEWPID),
        (File::open(format!("/proc/{pid}/ns/mnt"))?, CloneFlags::CLONE_NEWNS),
    ])
}

/// A `Command` that runs `argv` inside the namespaces of the target process, with its env and
/// working directory. `ctty` makes the child a session leader with stdin as controlling terminal.
pub fn exec_command(t: &ExecTarget, argv: &[String], ctty: bool) -> io::Result<tokio::process::Command> {
    if argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let root = PathBuf::from(format!("/proc/{}/root", t.pid));
    let prog = resolve_program_in(&root, &argv[0], &t.env).ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("exec: \"{}\": executable file not found in $PATH", argv[0]))
    })?;
    let ns = open_ns(t.pid)?;
    let relay_exe = File::open(&t.relay_exe)?;
    let relay_fd = relay_exe.as_raw_fd();
    let fds: Vec<(RawFd, CloneFlags)> = ns.iter().map(|(f, c)| (f.as_raw_fd(), *c)).collect();
    let cgroup_procs =
        t.cgroup.as_ref().map(|g| g.open_procs().map_err(io::Error::other)).transpose()?.unwrap_or_default();
    let ident = IdentitySwitch::new(&t.identity)?;
    let cwd = t.cwd.as_ref().map(|c| cstr(c)).transpose()?;
    let mut cmd = std::process::Command::new(&prog);
    cmd.arg0(&argv[0]).args(&argv[1..]).env_clear().envs(t.env.iter().map(|(k, v)| (k, v)));
    // SAFETY: only system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &ns;
            crate::cgroup::join_self(&cgroup_procs)?;
            nix::unistd::setsid().map_err(io::Error::from)?;
            let pts = if ctty { crate::sandbox::pidns::PtsName::of_stdin() } else { None };
            for (fd, flag) in &fds {
                setns(std::os::fd::BorrowedFd::borrow_raw(*fd), *flag).map_err(io::Error::from)?;
            }
            // Into the container's PID namespace (its processes see the exec, it sees theirs).
            let _keep_exe = &relay_exe;
            crate::sandbox::pidns::fork_into(relay_fd, pts.as_ref())?;
            nix::unistd::setsid().map_err(io::Error::from)?;
            if ctty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(p) = &pts {
                p.bind()?;
            }
            ident.apply()?;
            if let Some(c) = &cwd {
                let _ = nix::unistd::chdir(c.as_c_str());
            } else {
                let _ = nix::unistd::chdir("/");
            }
            Ok(())
        });
    }
    let mut tcmd = tokio::process::Command::from(cmd);
    tcmd.kill_on_drop(true);
    Ok(tcmd)
}

/// A securityContext identity, prepared before fork so that the child only makes system calls:
/// the capability bounding set, the seccomp filter (installed while the child still has
/// CAP_SYS_ADMIN), supplementary groups, gid and uid (after which the kernel drops a non-root
/// user's capabilities), a root process's capability sets, then no_new_privs.
struct IdentitySwitch {
    switch: bool,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
    no_new_privs: bool,
    caps: crate::sandbox::caps::Caps,
    filter: Option<crate::sandbox::seccomp::Filter>,
}

impl IdentitySwitch {
    fn new(id: &crate::security::Identity) -> io::Result<Self> {
        Ok(IdentitySwitch {
            switch: id.uid != 0 || id.gid != 0 || !id.groups.is_empty(),
            uid: nix::unistd::Uid::from_raw(id.uid),
            gid: nix::unistd::Gid::from_raw(id.gid),
            groups: id.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect(),
            no_new_privs: id.no_new_privs,
            caps: id.caps.clone(),
            filter: id.seccomp.compile()?,
        })
    }

    /// In the child, between fork and exec, after the namespaces and mounts.
    fn apply(&self) -> io::Result<()> {
        self.caps.drop_bounding()?;
        if let Some(f) = &self.filter {
            f.install()?;
        }
        if self.switch {
            nix::unistd::setgroups(&self.groups).map_err(io::Error::from)?;
            nix::unistd::setgid(self.gid).map_err(io::Error::from)?;
            nix::unistd::setuid(self.uid).map_err(io::Error::from)?;
        }
        if self.uid.is_root() {
            self.caps.set_root()?;
        }
        if self.no_new_privs {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Wait for an exec's process; if `gone` (the client went away) comes first, hang the session
/// up as a closed terminal would (SIGHUP, then SIGKILL after 500 ms). Its exit code, or 128 plus
/// the signal that ended it.
pub async fn wait_or_hang_up(
    child: &mut tokio::process::Child,
    gone: impl std::future::Future<Output = ()>,
) -> Option<i32> {
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let waited = tokio::select! {
        r = child.wait() => r,
        _ = gone => {
            signal(pid, nix::sys::signal::Signal::SIGHUP);
            match tokio::time::timeout(std::time::Duration::from_millis(500), child.wait()).await {
                Ok(r) => r,
                Err(_) => {
                    signal(pid, nix::sys::signal::Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    waited.ok().and_then(|s| s.code().or_else(|| s.signal().map(|sig| 128 + sig)))
}

/// Signal a container's process group (falls back to the process).
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    use nix::unistd::Pid;
    if pid <= 1 {
        return;
    }
    if nix::sys::signal::kill(Pid::from_raw(-pid), sig).is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// Start time (clock ticks since boot) of a process, to tell a PID apart from a reused one.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    // Fields after the comm: state is field 3; starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive (not a zombie) and still the process that started at `start`.
pub fn alive(pid: i32, start: u64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(i) = s.rfind(')') else { return false };
    let state = s[i + 2..].chars().next().unwrap_or('X');
    state != 'Z' && state != 'X' && start_time(pid) == Some(start)
}

/// A CRI-format log file writer shared by a container run's stdout and stderr pumps.
#[derive(Clone)]
pub struct LogFile(Arc<Mutex<File>>);

impl LogFile {
    pub fn create(p: &Path) -> io::Result<LogFile> {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let f = OpenOptions::new().create(true).append(true).mode(0o640).open(p)?;
        Ok(LogFile(Arc::new(Mutex::new(f))))
    }

    fn line(&self, stream: &str, tag: &str, content: &[u8]) {
        let ts = jiff::Timestamp::now();
        let mut buf = Vec::with_capacity(content.len() + 48);
        let _ = write!(buf, "{} {stream} {tag} ", ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"));
        buf.extend_from_slice(content);
        buf.push(b'\n');
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(&buf);
        }
    }
}

/// Copy a container's output (a FIFO, or a pty master) into the log file as CRI lines until every
/// writer is gone; each chunk read also goes to `tap` (attached clients), if any.
pub async fn pump<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    log: LogFile,
    stream: &'static str,
    tap: Option<crate::attach::Tap>,
) {
    let mut pending: Vec<u8> = vec![];
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(t) = &tap {
            t.send(&buf[..n]);
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            log.line(stream, "F", &pending[..i]);
            pending.drain(..=i);
        }
        if pending.len() >= 16 * 1024 {
            log.line(stream, "P", &pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        log.line(stream, "F", &pending);
    }
}

/// A parsed CRI log line.
#[derive(Debug, PartialEq)]
pub struct LogLine<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

pub fn parse_log_line(line: &[u8]) -> Option<LogLine<'_>> {
    let mut it = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(it.next()?).ok()?;
    let stream = std::str::from_utf8(it.next()?).ok()?;
    let tag = it.next()?;
    let content = it.next().unwrap_or(&[]);
    Some(LogLine { time, stream, partial: tag == b"P", content })
}

/// Allocate a pty pair: (master, slave).
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    let r = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    for fd in [&r.master, &r.slave] {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(io::Error::from)?;
    }
    Ok((r.master, r.slave))
}

/// Set a terminal's window size.
pub fn set_winsize(fd: RawFd, cols: u16, rows: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    unsafe {
        libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
    }
}

/// Duplicate a raw fd into a File (close-on-exec: a child gets it only as a redirected stdio fd).
pub fn dup_file(fd: RawFd) -> io::Result<File> {
    // SAFETY: the caller passes an open fd it owns for the duration of the call.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let d = nix::fcntl::fcntl(b, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0)).map_err(io::Error::from)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(d) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_line() {
        let l = parse_log_line(b"2024-01-01T00:00:00.000000001Z stdout F hello world").unwrap();
        assert_eq!(l.stream, "stdout");
        assert_eq!(l.content, b"hello world");
        assert!(!l.partial);
    }

    #[test]
    fn own_start_time() {
        let me = std::process::id() as i32;
        let st = start_time(me).unwrap();
        assert!(alive(me, st));
        assert!(!alive(me, st + 1));
    }
}
