//! PID namespaces. A process cannot move itself into a new PID namespace: `unshare` and `setns`
//! only place its future children there. A container's first process is forked into its
//! namespace by a thread of the agent's that entered it (`proc::spawn`), so it is PID 1 there, as
//! upstream, and the agent's own child. An exec cannot do that cheaply (its child must also join
//! the container's mount namespace, and its pty node is undone afterwards), so the forked child
//! of an exec forks once more, between `pre_exec` and `exec`: the grandchild, inside the
//! namespace, goes on to exec the program; the child stays outside as a small relay that the agent watches and signals. The relay closes
//! every descriptor but stdio (so nothing of the agent's stays open through it), forwards every
//! signal it gets to the grandchild, and ends the way the grandchild ended: the same exit code,
//! or killed by the same signal. Its SIGKILL reaches the grandchild through PR_SET_PDEATHSIG.
//! Everything here runs between fork and exec and only makes system calls.

use std::io;

/// The pty on stdin (`/dev/pts/N`), taken before the mount namespace changes: its name and a
/// detached bind mount of its node (`open_tree`), which [`PtsName::bind`] attaches at the same
/// path in the program's view (so `tty` and `ttyname(3)` work). The host's devpts itself is not
/// in the view: only this one node is.
pub struct PtsName {
    buf: [u8; 64],
    tree: libc::c_int,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

impl PtsName {
    /// Read `/proc/self/fd/0` into a fixed buffer and clone its mount; `None` when stdin is not
    /// a `/dev/pts` node.
    pub fn of_stdin() -> Option<PtsName> {
        let mut buf = [0u8; 64];
        // SAFETY: readlink writes at most len - 1 bytes into our buffer; open_tree takes an fd and
        // an empty NUL-terminated path.
        unsafe {
            let n = libc::readlink(c"/proc/self/fd/0".as_ptr(), buf.as_mut_ptr().cast(), buf.len() - 1);
            if n <= 0 || !buf.starts_with(b"/dev/pts/") {
                return None;
            }
            let tree = libc::syscall(
                libc::SYS_open_tree,
                0,
                c"".as_ptr(),
                OPEN_TREE_CLONE | AT_EMPTY_PATH | libc::O_CLOEXEC as libc::c_uint,
            );
            if tree < 0 {
                return None;
            }
            Some(PtsName { buf, tree: tree as libc::c_int })
        }
    }

    fn ptr(&self) -> *const libc::c_char {
        self.buf.as_ptr().cast()
    }

    /// In the program's view: make `/dev/pts/N` and attach the node there.
    pub fn bind(&self) -> io::Result<()> {
        // SAFETY: NUL-terminated paths (the buffer ends with zeros); fds we own.
        unsafe {
            libc::mkdir(c"/dev/pts".as_ptr(), 0o755);
            let fd = libc::open(self.ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o600);
            if fd >= 0 {
                libc::close(fd);
            }
            if libc::syscall(
                libc::SYS_move_mount,
                self.tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                self.ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Fork: in the child (inside the PID namespace the caller unshared or joined) return; in the
/// parent, relay until the child ends, then end the same way. `cleanup` is undone by the relay
/// after the child ended.
///
/// # Safety
/// Only between fork and exec (a single-threaded process), after the namespace was entered.
pub unsafe fn fork_into(relay_exe: libc::c_int, cleanup: Option<&PtsName>) -> io::Result<()> {
    // SAFETY: the caller is single-threaded (the forked child of a spawn).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        }
        return Ok(());
    }
    // SAFETY: the relay never returns into the caller.
    unsafe { become_relay(relay_exe, pid, cleanup) }
}

/// The parent side of [`fork_into`]: with every signal blocked (they stay pending through exec)
/// and every descriptor but stdio and the agent's executable closed, exec `builtin relay PID
/// [PTS]` so that the relay holds none of the agent's memory; if that fails, relay in place.
unsafe fn become_relay(exe: libc::c_int, child: libc::pid_t, cleanup: Option<&PtsName>) -> ! {
    // SAFETY: system calls on our own process with buffers on this stack.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        if exe > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (exe - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (exe + 1).max(3) as u32, u32::MAX, 0u32);
        let mut num = [0u8; 16];
        let mut n = child as u32;
        let mut digits = [0u8; 10];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            num[i] = digits[len - 1 - i];
        }
        let pts = cleanup.map(|c| c.ptr()).unwrap_or(std::ptr::null());
        let argv: [*const libc::c_char; 6] = [
            c"yard-relay".as_ptr(),
            c"builtin".as_ptr(),
            c"relay".as_ptr(),
            num.as_ptr().cast(),
            pts,
            std::ptr::null(),
        ];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        libc::syscall(libc::SYS_execveat, exe, c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        relay(child, cleanup.map(|c| c.ptr()))
    }
}

/// `builtin relay PID [PTS]`: the relay's loop, after the exec of [`become_relay`].
pub fn relay_main(args: &[String]) -> i32 {
    let Some(child) = args.first().and_then(|a| a.parse::<libc::pid_t>().ok()) else {
        eprintln!("usage: builtin relay PID [PTS]");
        return 2;
    };
    let pts = args.get(1).and_then(|p| std::ffi::CString::new(p.as_str()).ok());
    // SAFETY: our own child; the path outlives the loop (which never returns).
    unsafe { relay(child, pts.as_ref().map(|p| p.as_ptr())) }
}

/// Forward signals to `child` until it ends, undo the pty node (`pts`), end the same way.
unsafe fn relay(child: libc::pid_t, pts: Option<*const libc::c_char>) -> ! {
    // SAFETY: plain system calls on our own process.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        loop {
            let mut status = 0;
            if libc::waitpid(child, &mut status, libc::WNOHANG) == child {
                finish(status, pts);
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(child, sig);
                continue;
            }
        }
    }
}

/// End as the child ended: its exit code, or killed by its signal.
unsafe fn finish(status: libc::c_int, pts: Option<*const libc::c_char>) -> ! {
    // SAFETY: plain system calls on our own process.
    unsafe {
        if let Some(p) = pts {
            libc::umount2(p, libc::MNT_DETACH);
            libc::unlink(p);
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let s = libc::WTERMSIG(status);
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(s, libc::SIG_DFL);
        let mut one: libc::sigset_t = std::mem::zeroed();
        libc::sigaddset(&mut one, s);
        libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
        libc::kill(libc::getpid(), s);
        libc::_exit(128 + s);
    }
}
