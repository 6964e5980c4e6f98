//! `nc` for Yard's busybox image: the port check `nc -z [-v] [-w SEC] [-n] HOST PORT` and the
//! verbose connect `nc -v HOST PORT`, with the messages and exit codes of the busybox image's
//! netcat (busybox's nc_bloaty, netcat 1.10 compatible). Debian's busybox is built with the small
//! nc, which rejects `-z` and `-v` ("invalid option"), so tutorials' `nc -zv svc 80` failed.
//! Every other use (`nc -l -p PORT`, `nc HOST PORT`, `-e`, `-w`, `-i`, ...) is handed to the host
//! busybox's nc unchanged.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

fn strerror(code: i32) -> String {
    // SAFETY: strerror returns a pointer to a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) }.to_string_lossy().into_owned()
}

struct Scan {
    zero: bool,
    verbose: u32,
    wait: u32,
    host: String,
    port: String,
}

enum Plan {
    Scan(Scan),
    /// No -z/-v: the host busybox nc does it.
    Delegate,
    Fail(String),
}

fn plan(args: &[String]) -> Plan {
    let mut s = Scan { zero: false, verbose: 0, wait: 0, host: String::new(), port: String::new() };
    let mut pos = vec![];
    let mut other = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            pos.extend(args[i..].iter().cloned());
            break;
        }
        if a.len() < 2 || !a.starts_with('-') {
            pos.push(a.clone());
            continue;
        }
        let cs: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < cs.len() {
            let c = cs[j];
            j += 1;
            match c {
                'z' => s.zero = true,
                'v' => s.verbose += 1,
                'n' => {}
                'w' => {
                    let rest: String = cs[j..].iter().collect();
                    let v = if !rest.is_empty() {
                        rest
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Plan::Fail("option requires an argument -- 'w'".into());
                    };
                    match v.parse::<u32>() {
                        Ok(n) => s.wait = n,
                        Err(_) => return Plan::Fail(format!("invalid number '{v}'")),
                    }
                    j = cs.len();
                }
                _ => {
                    other.get_or_insert(c);
                    // Options with an argument swallow the rest or the next word.
                    if "psioe".contains(c) {
                        if j >= cs.len() {
                            i += 1;
                        }
                        j = cs.len();
                    }
                }
            }
        }
    }
    if !s.zero && s.verbose == 0 {
        return Plan::Delegate;
    }
    if let Some(c) = other {
        return Plan::Fail(format!("-{c} with -z/-v is not available in Yard's busybox image"));
    }
    if pos.len() != 2 {
        return Plan::Fail("usage: nc -z [-v] [-w SEC] [-n] HOST PORT".into());
    }
    s.host = pos[0].clone();
    s.port = pos[1].clone();
    Plan::Scan(s)
}

fn lookup_port(p: &str) -> Option<u16> {
    if let Ok(n) = p.parse::<u16>() {
        return Some(n);
    }
    let name = std::ffi::CString::new(p).ok()?;
    // SAFETY: getservbyname reads two C strings and returns a static entry or NULL.
    let ent = unsafe { libc::getservbyname(name.as_ptr(), c"tcp".as_ptr()) };
    // SAFETY: a non-NULL entry is valid until the next call; s_port is in network order.
    (!ent.is_null()).then(|| u16::from_be(unsafe { (*ent).s_port } as u16))
}

fn scan(s: Scan) -> i32 {
    let Some(port) = lookup_port(&s.port) else {
        eprintln!("nc: bad port '{}'", s.port);
        return 1;
    };
    let addr: Option<SocketAddr> = (s.host.as_str(), port).to_socket_addrs().ok().and_then(|mut a| a.next());
    let Some(addr) = addr else {
        eprintln!("nc: bad address '{}'", s.host);
        return 1;
    };
    let dotted = addr.to_string();
    let res = if s.wait > 0 {
        TcpStream::connect_timeout(&addr, Duration::from_secs(s.wait as u64)).map_err(|e| {
            // busybox's connect is cut by alarm(): the error it reports is EINTR.
            if e.kind() == io::ErrorKind::TimedOut {
                libc::EINTR
            } else {
                e.raw_os_error().unwrap_or(libc::EIO)
            }
        })
    } else {
        TcpStream::connect(addr).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    };
    let stream = match res {
        Ok(st) => st,
        Err(code) => {
            if s.verbose > 1 || (s.verbose > 0 && code != libc::ECONNREFUSED) {
                eprintln!("nc: {} ({dotted}): {}", s.host, strerror(code));
            }
            return 1;
        }
    };
    if s.verbose > 0 {
        eprintln!("{} ({dotted}) open", s.host);
    }
    if s.zero {
        let _ = stream.shutdown(Shutdown::Both);
        return 0;
    }
    // -v without -z: copy stdin to the connection and the connection to stdout until it closes.
    let mut up = match stream.try_clone() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("nc: {e}");
            return 1;
        }
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdin = io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || up.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut down = stream;
    let mut buf = [0u8; 8192];
    let mut out = io::stdout();
    loop {
        match down.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    0
}

/// Run `nc ARGS...`; returns the exit code (or execs the host busybox).
pub fn main(args: &[String]) -> i32 {
    match plan(args) {
        Plan::Scan(s) => scan(s),
        Plan::Fail(m) => {
            eprintln!("nc: {m}");
            1
        }
        Plan::Delegate => {
            use std::os::unix::process::CommandExt;
            let Some(bb) = crate::image::find_in_path("busybox", "/usr/bin:/bin:/usr/sbin:/sbin") else {
                eprintln!("nc: busybox not found");
                return 127;
            };
            let err = std::process::Command::new(bb).arg("nc").args(args).exec();
            eprintln!("nc: can't execute 'busybox': {err}");
            127
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Plan {
        plan(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn plans() {
        assert!(matches!(p(&["-l", "-p", "80"]), Plan::Delegate));
        assert!(matches!(p(&["-w", "2", "web", "80"]), Plan::Delegate));
        assert!(matches!(p(&["-zv", "-w2", "web", "80"]), Plan::Scan(Scan { zero: true, verbose: 1, wait: 2, .. })));
        assert!(matches!(p(&["-vv", "web", "http"]), Plan::Scan(Scan { zero: false, verbose: 2, .. })));
        assert!(matches!(p(&["-zl", "web", "80"]), Plan::Fail(_)));
        assert_eq!(lookup_port("80"), Some(80));
    }

    #[test]
    fn scan_open_and_closed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port().to_string();
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(main(&args(&["-z", "-w", "2", "127.0.0.1", &port])), 0);
        drop(l);
        // A closed port that no parallel test can take meanwhile: bound, never listening.
        use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
        let s = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).unwrap();
        bind(std::os::fd::AsRawFd::as_raw_fd(&s), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
        let closed: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&s)).unwrap();
        assert_eq!(main(&args(&["-zv", "-w", "2", "127.0.0.1", &closed.port().to_string()])), 1);
    }
}
