//! `wget` for Yard's busybox image: an HTTP client with busybox 1.35's command line, messages,
//! exit codes and request format, including the `-T SEC` network timeout.
//!
//! Why Yard has its own: Debian's busybox 1.35 (packages `busybox` and `busybox-static`, which the
//! busybox image runs) is built without `CONFIG_FEATURE_WGET_TIMEOUT`, yet its wget.c always
//! declares `-T` in the getopt32 option string as a numeric option (`"T:+"`). With the feature
//! off the pointer handed to getopt32 for `-T` is NULL, and getopt32 stores the parsed number
//! through it without a check (`*(unsigned*)NULL = 2`): every `wget -T N ...` dies with SIGSEGV
//! (exit 139) before it sends a byte. No Debian build of that release enables the option (the
//! Debian packaging turned it on only in 1.36.1-5), so the image's `/bin/wget` runs this instead.
//! `https://` and `ftp://` URLs without `-T` are handed to the host busybox, which does them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

const USAGE: &str = "Usage: wget [-cqS] [--spider] [-O FILE] [-o LOGFILE] [--header STR]
\t[--post-data STR | --post-file FILE] [-Y on/off]
\t[--no-check-certificate] [-P DIR] [-U AGENT] [-T SEC] URL...

Retrieve files via HTTP or FTP

\t--spider\tOnly check URL existence: $? is 0 if exists
\t--header STR\tAdd STR (of form 'header: value') to headers
\t--post-data STR\tSend STR using POST method
\t--post-file FILE\tSend FILE using POST method
\t--no-check-certificate\tDon't validate the server's certificate
\t-c\t\tContinue retrieval of aborted transfer
\t-q\t\tQuiet
\t-P DIR\t\tSave to DIR (default .)
\t-S    \t\tShow server response
\t-T SEC\t\tNetwork read timeout is SEC seconds
\t-O FILE\t\tSave to FILE ('-' for stdout)
\t-o LOGFILE\tLog messages to FILE
\t-U STR\t\tUse STR for User-Agent header
\t-Y on/off\tUse proxy
";

/// A fatal error: the message busybox prints after `wget: `; exit code 1.
#[derive(Debug)]
struct Die(String);

type R<T> = Result<T, Die>;

fn die<T>(msg: impl Into<String>) -> R<T> {
    Err(Die(msg.into()))
}

/// libc's text for an errno (what busybox's perror messages append).
fn strerror(e: &io::Error) -> String {
    match e.raw_os_error() {
        // SAFETY: strerror returns a pointer to a NUL-terminated static or thread-local string.
        Some(code) => unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) }.to_string_lossy().into_owned(),
        None => e.to_string(),
    }
}

/// `msg: strerror` as bb_perror_msg prints it (no suffix when there is no errno).
fn perror(msg: &str, e: Option<&io::Error>) -> Die {
    match e {
        Some(e) => Die(format!("{msg}: {}", strerror(e))),
        None => Die(msg.to_string()),
    }
}

#[derive(Default, Debug)]
struct Opts {
    cont: bool,
    quiet: bool,
    server_response: bool,
    out: Option<String>,
    log: Option<String>,
    prefix: Option<String>,
    proxy: String,
    user_agent: String,
    /// Seconds; 0 = none. busybox's default is 900.
    timeout: u32,
    /// -T was given.
    timeout_set: bool,
    headers: Vec<String>,
    post_data: Option<String>,
    post_file: Option<String>,
    spider: bool,
    urls: Vec<String>,
}

enum Parsed {
    Run(Box<Opts>),
    /// Print this (then the usage text) and exit 1.
    Usage(Option<String>),
}

/// `xatoi_positive`: a decimal number in 0..=INT_MAX.
fn positive(s: &str) -> R<u32> {
    match s.parse::<u32>() {
        Ok(v) if v <= i32::MAX as u32 && !s.starts_with('+') => Ok(v),
        _ => die(format!("invalid number '{s}'")),
    }
}

const LONG: &[(&str, bool, char)] = &[
    ("continue", false, 'c'),
    ("quiet", false, 'q'),
    ("server-response", false, 'S'),
    ("output-document", true, 'O'),
    ("output-file", true, 'o'),
    ("directory-prefix", true, 'P'),
    ("proxy", true, 'Y'),
    ("user-agent", true, 'U'),
    ("timeout", true, 'T'),
    ("tries", true, 't'),
    ("header", true, 'h'),
    ("post-data", true, 'd'),
    ("spider", false, 's'),
    ("no-check-certificate", false, '-'),
    ("post-file", true, 'f'),
    ("passive-ftp", false, '-'),
    ("no-cache", false, '-'),
    ("no-verbose", false, '-'),
    ("no-clobber", false, '-'),
    ("no-host-directories", false, '-'),
    ("no-parent", false, '-'),
];

fn set(o: &mut Opts, key: char, val: Option<String>) -> R<()> {
    let v = || val.clone().unwrap_or_default();
    match key {
        'c' => o.cont = true,
        'q' => o.quiet = true,
        'S' => o.server_response = true,
        'O' => o.out = Some(v()),
        'o' => o.log = Some(v()),
        'P' => o.prefix = Some(v()),
        'Y' => o.proxy = v(),
        'U' => o.user_agent = v(),
        'T' => {
            o.timeout = positive(&v())?;
            o.timeout_set = true;
        }
        'h' => o.headers.push(v()),
        'd' => o.post_data = Some(v()),
        'f' => o.post_file = Some(v()),
        's' => o.spider = true,
        _ => {}
    }
    Ok(())
}

/// getopt32 with GNU permutation: options may follow URLs; `--` ends options.
fn parse(args: &[String]) -> R<Parsed> {
    let mut o = Opts { proxy: "on".into(), user_agent: "Wget".into(), timeout: 900, ..Opts::default() };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            o.urls.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let exact = LONG.iter().find(|(n, _, _)| *n == name);
            let cands: Vec<_> = LONG.iter().filter(|(n, _, _)| n.starts_with(name)).collect();
            let Some(&(full, has_arg, key)) = exact.or(if cands.len() == 1 { Some(cands[0]) } else { None }) else {
                return Ok(Parsed::Usage(Some(format!("unrecognized option '{a}'"))));
            };
            let val = if has_arg {
                match inline {
                    Some(v) => Some(v),
                    None if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    None => return Ok(Parsed::Usage(Some(format!("option '--{full}' requires an argument")))),
                }
            } else {
                if inline.is_some() {
                    return Ok(Parsed::Usage(Some(format!("option '--{full}' doesn't allow an argument"))));
                }
                None
            };
            set(&mut o, key, val)?;
            continue;
        }
        if a.len() < 2 || !a.starts_with('-') {
            o.urls.push(a.clone());
            continue;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            j += 1;
            match c {
                'c' | 'q' | 'S' => set(&mut o, c, None)?,
                'O' | 'o' | 'P' | 'Y' | 'U' | 'T' | 't' => {
                    let rest: String = chars[j..].iter().collect();
                    let val = if !rest.is_empty() {
                        rest
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Ok(Parsed::Usage(Some(format!("option requires an argument -- '{c}'"))));
                    };
                    set(&mut o, c, Some(val))?;
                    j = chars.len();
                }
                // -n[ARG]: the argument, if any, is glued on (-nv, -nc, -nH, -np); all ignored.
                'n' => j = chars.len(),
                _ => return Ok(Parsed::Usage(Some(format!("invalid option -- '{c}'")))),
            }
        }
    }
    if o.urls.is_empty() || (o.post_data.is_some() && o.post_file.is_some()) {
        return Ok(Parsed::Usage(None));
    }
    Ok(Parsed::Run(Box::new(o)))
}

/// One parsed URL (busybox's `struct host_info`).
#[derive(Clone, Debug)]
struct Url {
    scheme: String,
    /// `host` or `host:port` exactly as written (what `Host:` and "Connecting to" show).
    host: String,
    port: u16,
    /// Without the leading '/'.
    path: String,
    user: Option<String>,
}

fn parse_url(src: &str) -> R<Url> {
    let (scheme, rest) = match src.split_once("://") {
        Some((s, r)) => match s {
            "http" => ("http", r),
            "https" => ("https", r),
            "ftp" => ("ftp", r),
            _ => return die(format!("not an http or ftp url: {src}")),
        },
        None => ("http", src),
    };
    let port = match scheme {
        "https" => 443,
        "ftp" => 21,
        _ => 80,
    };
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (mut host, tail) = rest.split_at(cut);
    let path = match tail.as_bytes().first() {
        None => String::new(),
        Some(b'/') => tail[1..].to_string(),
        Some(b'#') => String::new(),
        Some(_) => tail.to_string(),
    };
    let path = path.split('#').next().unwrap_or("").to_string();
    let mut user = None;
    if let Some(at) = host.rfind('@') {
        user = Some(crate::builtin::percent_decode(&host[..at]));
        host = &host[at + 1..];
    }
    Ok(Url { scheme: scheme.into(), host: host.into(), port, path, user })
}

/// `xhost2sockaddr`: `host`, `host:port`, `[v6]`, `[v6]:port`; resolved with getaddrinfo.
fn resolve(host: &str, default_port: u16) -> R<SocketAddr> {
    let bad = || Die(format!("bad address '{host}'"));
    let (name, port) = if let Some(r) = host.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        (h, port)
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p.parse().map_err(|_| bad())?),
            _ => (host, default_port),
        }
    };
    (name, port).to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)
}

/// The display form of an address: `1.2.3.4:80` or `[::1]:80`.
fn dotted(a: &SocketAddr) -> String {
    a.to_string()
}

fn base64(s: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for ch in s.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= ch.len() {
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Trim at the first control character (busybox's sanitize_string).
fn sanitize(line: &[u8]) -> String {
    let end = line.iter().position(|b| *b < 0x20).unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).into_owned()
}

struct Conn {
    r: BufReader<TcpStream>,
    timeout: u32,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl Conn {
    fn open(addr: SocketAddr, timeout: u32) -> R<Conn> {
        let res = if timeout > 0 {
            TcpStream::connect_timeout(&addr, Duration::from_secs(timeout as u64))
        } else {
            TcpStream::connect(addr)
        };
        let s = res.map_err(|e| {
            if timeout > 0 && e.kind() == io::ErrorKind::TimedOut {
                Die("download timed out".into())
            } else if let SocketAddr::V4(v4) = addr {
                perror(&format!("can't connect to remote host ({})", v4.ip()), Some(&e))
            } else {
                perror("can't connect to remote host", Some(&e))
            }
        })?;
        if timeout > 0 {
            let _ = s.set_read_timeout(Some(Duration::from_secs(timeout as u64)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(timeout as u64)));
        }
        Ok(Conn { r: BufReader::with_capacity(64 * 1024, s), timeout })
    }

    /// One response line (busybox's fgets_trim_sanitize), shown with -S as `fmt`.
    fn line(&mut self, show: bool) -> R<String> {
        let mut buf = Vec::new();
        let mut limited = (&mut self.r).take(4096);
        match limited.read_until(b'\n', &mut buf) {
            Ok(0) => return Err(perror("error getting response", None)),
            Ok(_) => {}
            Err(e) if self.timeout > 0 && is_timeout(&e) => return die("download timed out"),
            Err(e) => return Err(perror("error getting response", Some(&e))),
        }
        if !buf.ends_with(b"\n") && buf.len() >= 4096 {
            // The rest of an over-long line is dropped, as busybox does.
            let mut rest = Vec::new();
            let _ = self.r.read_until(b'\n', &mut rest);
        }
        let s = sanitize(&buf);
        if show {
            eprintln!("  {s}");
        }
        Ok(s)
    }

    /// One header: `(lowercased name, value)`, or None at the blank line.
    fn header(&mut self, show: bool) -> R<Option<(String, String)>> {
        let l = self.line(show)?;
        if l.is_empty() {
            return Ok(None);
        }
        let end = l.find(|c: char| !(c.is_ascii_alphanumeric() || "-._".contains(c))).unwrap_or(l.len());
        if l.as_bytes().get(end) != Some(&b':') {
            return die(format!("bad header line: {l}"));
        }
        let name = l[..end].to_ascii_lowercase();
        let val = l[end + 1..].trim_start_matches([' ', '\t']).trim_end_matches([' ', '\t']).to_string();
        Ok(Some((name, val)))
    }
}

/// The progress line busybox prints to a non-terminal stderr (at most once a second, and at the end).
struct Progress {
    name: String,
    start: Instant,
    last: Instant,
    on: bool,
}

fn size5(v: u64) -> String {
    // smart_ulltoa5: five columns, scaled by 1024 with a k/M/G/... suffix once it does not fit.
    if v < 100_000 {
        return format!("{v:>5}");
    }
    let mut v = v;
    let mut idx = 0;
    let suffix = [' ', 'k', 'M', 'G', 'T', 'P', 'E', 'Z', 'Y'];
    while v >= 10_000 && idx < suffix.len() - 1 {
        v /= 1024;
        idx += 1;
    }
    format!("{v:>4}{}", suffix[idx])
}

impl Progress {
    fn show(&mut self, beg: u64, done: u64, total: Option<u64>, last: bool) {
        if !self.on || (!last && self.last.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.last = Instant::now();
        let name: String = self.name.chars().take(20).collect();
        let mut line = format!("{name:<20} ");
        if let Some(t) = total.filter(|t| *t > 0) {
            let cur = beg + done;
            let ratio = 100 * cur / t;
            let stars = (32 * cur / t).min(32) as usize;
            line.push_str(&format!("{ratio:>3}% |{}{}| ", "*".repeat(stars), " ".repeat(32 - stars)));
        }
        line.push_str(&size5(beg + done));
        let elapsed = self.start.elapsed().as_secs();
        match total {
            Some(t) if t > 0 && done > 0 => {
                let bytes = t - beg;
                let eta = (bytes * elapsed / done).saturating_sub(elapsed).min(1000 * 3600 - 1);
                line.push_str(&format!("{:>3}:{:02}:{:02} ETA", eta / 3600, eta % 3600 / 60, eta % 60));
            }
            _ => line.push_str(" --:--:-- ETA"),
        }
        eprintln!("{line}");
    }
}

struct Out {
    file: File,
    is_stdout: bool,
    name: String,
}

struct Wget {
    o: Opts,
    /// Output shared by every URL when -O is given.
    out: Option<Out>,
    logging: bool,
}

impl Wget {
    fn request(&self, conn: &mut Conn, target: &Url, proxy: Option<&Url>, beg: u64) -> R<()> {
        let user_has = |h: &str| self.o.headers.iter().any(|x| x.starts_with(h));
        let mut req = String::new();
        let post = self.o.post_data.is_some() || self.o.post_file.is_some();
        if proxy.is_some() {
            req.push_str(&format!("GET {}://{}/{} HTTP/1.1\r\n", target.scheme, target.host, target.path));
        } else {
            req.push_str(&format!("{} /{} HTTP/1.1\r\n", if post { "POST" } else { "GET" }, target.path));
        }
        if !user_has("Host:") {
            req.push_str(&format!("Host: {}\r\n", target.host));
        }
        if !user_has("User-Agent:") {
            req.push_str(&format!("User-Agent: {}\r\n", self.o.user_agent));
        }
        req.push_str("Connection: close\r\n");
        if let Some(u) = &target.user {
            if !user_has("Authorization:") {
                req.push_str(&format!("Authorization: Basic {}\r\n", base64(u.as_bytes())));
            }
        }
        if let Some(u) = proxy.and_then(|p| p.user.as_ref()) {
            if !user_has("Proxy-Authorization:") {
                req.push_str(&format!("Proxy-Authorization: Basic {}\r\n", base64(u.as_bytes())));
            }
        }
        if beg != 0 && !user_has("Range:") {
            req.push_str(&format!("Range: bytes={beg}-\r\n"));
        }
        for h in &self.o.headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        let mut body = Vec::new();
        if let Some(f) = &self.o.post_file {
            body = if f == "-" {
                let mut b = Vec::new();
                io::stdin().read_to_end(&mut b).map_err(|e| perror("read error", Some(&e)))?;
                b
            } else {
                std::fs::read(f).map_err(|e| perror(&format!("can't open '{f}'"), Some(&e)))?
            };
        } else if let Some(d) = &self.o.post_data {
            body = d.as_bytes().to_vec();
        }
        if post {
            if !user_has("Content-Type:") {
                req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            }
            req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        } else {
            req.push_str("\r\n");
        }
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&body);
        let s = conn.r.get_mut();
        s.write_all(&bytes).and_then(|_| s.flush()).map_err(|e| {
            if conn.timeout > 0 && is_timeout(&e) {
                Die("download timed out".into())
            } else {
                perror("write error", Some(&e))
            }
        })
    }

    fn download(&mut self, url: &str) -> R<()> {
        let mut target = parse_url(url)?;
        let proxy = if self.o.proxy != "off" {
            let var = if target.scheme == "ftp" { "ftp_proxy" } else { "http_proxy" };
            match std::env::var(var) {
                Ok(p) if !p.is_empty() => Some(parse_url(&p)?),
                _ => None,
            }
        } else {
            None
        };
        let mut server = proxy.clone().unwrap_or_else(|| target.clone());
        // Output file name when there is no -O: the last path component, else index.html.
        let mut fname = match &self.out {
            Some(o) => o.name.clone(),
            None => {
                let p = target.path.as_str();
                let last = p.rsplit('/').next().unwrap_or("");
                let last = if last.is_empty() { "index.html" } else { last };
                match &self.o.prefix {
                    Some(d) => format!("{}/{last}", d.trim_end_matches('/')),
                    None => last.to_string(),
                }
            }
        };
        if self.out.is_none() && fname.is_empty() {
            fname = "index.html".into();
        }
        let mut beg: u64 = 0;
        let mut cont_file = None;
        if self.o.cont && self.out.as_ref().map(|o| !o.is_stdout).unwrap_or(true) {
            if let Ok(mut f) = OpenOptions::new().write(true).open(&fname) {
                beg = f.seek(SeekFrom::End(0)).unwrap_or(0);
                cont_file = Some(f);
            }
        }
        let mut redirs = 16;
        let mut addr = resolve(&server.host, server.port)?;
        if !self.o.quiet {
            eprintln!("Connecting to {} ({})", server.host, dotted(&addr));
        }
        let (mut conn, got_len, chunked) = loop {
            let mut conn = Conn::open(addr, self.o.timeout)?;
            self.request(&mut conn, &target, proxy.as_ref(), beg)?;
            let status_line = loop {
                let l = conn.line(self.o.server_response)?;
                let code = status_of(&l);
                if code == 0 || code == 100 {
                    while conn.header(self.o.server_response)?.is_some() {}
                    continue;
                }
                break l;
            };
            let status = status_of(&status_line);
            match status {
                200..=204 => {
                    if beg != 0 {
                        eprintln!("wget: restart failed");
                        beg = 0;
                        if let Some(f) = cont_file.as_mut() {
                            let _ = f.seek(SeekFrom::Start(0));
                        }
                    }
                }
                300..=303 | 307 | 308 => {}
                206 if beg != 0 => {}
                _ => return die(format!("server returned error: {status_line}")),
            }
            let mut content_len = None;
            let mut chunked = false;
            let mut redirect = None;
            while let Some((k, v)) = conn.header(self.o.server_response)? {
                match k.as_str() {
                    "content-length" => match v.parse::<u64>() {
                        Ok(n) if !v.starts_with('+') => content_len = Some(n),
                        _ => return die(format!("content-length {v} is garbage")),
                    },
                    "transfer-encoding" => {
                        if !v.eq_ignore_ascii_case("chunked") {
                            return die(format!("transfer encoding '{v}' is not supported"));
                        }
                        chunked = true;
                    }
                    "location" if status >= 300 => {
                        redirs -= 1;
                        if redirs == 0 {
                            return die("too many redirections");
                        }
                        redirect = Some(v);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(loc) = redirect else { break (conn, content_len, chunked) };
            drop(conn);
            if let Some(p) = loc.strip_prefix('/') {
                target.path = p.to_string();
            } else {
                let keep_user = target.user.clone();
                target = parse_url(&loc)?;
                if target.user.is_none() {
                    target.user = keep_user;
                }
                if target.scheme != "http" {
                    return die(format!("redirect to {loc} is not supported by this wget"));
                }
                if proxy.is_none() {
                    server = target.clone();
                    addr = resolve(&server.host, server.port)?;
                    if !self.o.quiet {
                        eprintln!("Connecting to {} ({})", server.host, dotted(&addr));
                    }
                }
            }
        };
        if self.o.spider {
            if !self.o.quiet {
                eprintln!("remote file exists");
            }
            return Ok(());
        }
        let own;
        let out: &mut Out = match (&mut self.out, cont_file) {
            (Some(o), _) => o,
            (None, Some(f)) => {
                own = Out { file: f, is_stdout: false, name: fname.clone() };
                self.out.insert(own)
            }
            (None, None) => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o666)
                    .open(&fname)
                    .map_err(|e| perror(&format!("can't open '{fname}'"), Some(&e)))?;
                self.out.insert(Out { file: f, is_stdout: false, name: fname.clone() })
            }
        };
        let res = retrieve(&mut conn, out, &self.o, self.logging, beg, got_len, chunked);
        if self.o.out.is_none() {
            self.out = None;
        }
        res
    }
}

fn status_of(line: &str) -> u32 {
    // atoi of the second word: leading digits, 0 when there are none.
    let word = line.split_whitespace().nth(1).unwrap_or("");
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// Pump the body to the output (busybox's retrieve_file_data).
fn retrieve(
    conn: &mut Conn,
    out: &mut Out,
    o: &Opts,
    logging: bool,
    beg: u64,
    clen: Option<u64>,
    chunked: bool,
) -> R<()> {
    if !o.quiet {
        if out.is_stdout {
            eprintln!("writing to stdout");
        } else {
            eprintln!("saving to '{}'", out.name);
        }
    }
    let base = if out.is_stdout { "-".to_string() } else { out.name.rsplit('/').next().unwrap_or("").to_string() };
    let mut prog = Progress { name: base, start: Instant::now(), last: Instant::now(), on: !o.quiet && !logging };
    let mut done: u64 = 0;
    let mut remaining = clen;
    let total = if chunked { None } else { clen.map(|c| beg + c) };
    let mut buf = vec![0u8; 64 * 1024];
    let mut first_chunk = true;
    loop {
        if chunked {
            if !first_chunk {
                conn.line(false)?;
            }
            first_chunk = false;
            let l = conn.line(false)?;
            let hex = l.split(';').next().unwrap_or("").trim();
            let n = u64::from_str_radix(hex, 16).ok().filter(|n| *n < (1u64 << 62));
            match n {
                None => return die(format!("bad chunk length '{l}'")),
                Some(0) => {
                    remaining = Some(0);
                    break;
                }
                Some(n) => remaining = Some(n),
            }
        }
        loop {
            let want = match remaining {
                Some(0) => break,
                Some(r) => (r as usize).min(buf.len()),
                None => buf.len(),
            };
            let n = match conn.r.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if conn.timeout > 0 && is_timeout(&e) => {
                    prog.show(beg, done, total, true);
                    return die("download timed out");
                }
                Err(e) => {
                    prog.show(beg, done, total, true);
                    return Err(perror("read error", Some(&e)));
                }
            };
            out.file.write_all(&buf[..n]).map_err(|e| perror("write error", Some(&e)))?;
            done += n as u64;
            if let Some(r) = remaining.as_mut() {
                *r -= n as u64;
            }
            prog.show(beg, done, total, false);
        }
        if !chunked {
            break;
        }
        if remaining != Some(0) {
            break;
        }
    }
    prog.show(beg, done, Some(beg + done), true);
    if remaining.is_some_and(|r| r != 0) {
        return Err(perror("connection closed prematurely", None));
    }
    if !out.is_stdout {
        if let Ok(pos) = out.file.stream_position() {
            let _ = out.file.set_len(pos);
        }
    }
    if !o.quiet {
        if out.is_stdout {
            eprintln!("written to stdout");
        } else {
            eprintln!("'{}' saved", out.name);
        }
    }
    Ok(())
}

/// Hand the whole command line to the host busybox (for https:// and ftp:// URLs).
fn delegate(args: &[String]) -> i32 {
    use std::os::unix::process::CommandExt;
    let path = std::env::var("PATH").unwrap_or_default();
    let Some(bb) = crate::image::find_in_path("busybox", &path)
        .or_else(|| crate::image::find_in_path("busybox", "/usr/bin:/bin:/usr/sbin:/sbin"))
    else {
        eprintln!("wget: busybox not found for https/ftp");
        return 1;
    };
    let err = std::process::Command::new(bb).arg("wget").args(args).exec();
    eprintln!("wget: can't execute 'busybox': {}", strerror(&err));
    127
}

/// Run `wget ARGS...`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    // As in C: `wget -qO- URL | head -1` ends quietly by SIGPIPE (Rust's runtime ignores it).
    // SAFETY: resetting a signal disposition to the default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    run(args)
}

fn run(args: &[String]) -> i32 {
    let o = match parse(args) {
        Ok(Parsed::Run(o)) => *o,
        Ok(Parsed::Usage(msg)) => {
            if let Some(m) = msg {
                eprintln!("wget: {m}");
            }
            eprint!("{USAGE}");
            return 1;
        }
        Err(Die(m)) => {
            eprintln!("wget: {m}");
            return 1;
        }
    };
    let other = o.urls.iter().any(|u| u.starts_with("https://") || u.starts_with("ftp://"));
    if other {
        if !o.timeout_set {
            return delegate(args);
        }
        eprintln!("wget: -T SEC with https:// or ftp:// URLs is not available in Yard's busybox image");
        return 1;
    }
    let mut w = Wget { o, out: None, logging: false };
    if let Some(log) = w.o.log.clone().filter(|l| l != "-") {
        match OpenOptions::new().write(true).create(true).truncate(true).mode(0o666).open(&log) {
            Ok(f) => {
                // Only stderr goes to the log, so -O - still works.
                // SAFETY: dup2 on two valid descriptors.
                if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&f), 2) } < 0 {
                    eprintln!("wget: can't redirect stderr");
                    return 1;
                }
                w.logging = true;
            }
            Err(e) => {
                eprintln!("wget: can't open '{log}': {}", strerror(&e));
                return 1;
            }
        }
    }
    if let Some(name) = w.o.out.clone() {
        if name == "-" {
            // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop keeps it so.
            let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(1) };
            w.out = Some(Out { file: f, is_stdout: true, name });
            w.o.cont = false;
        } else {
            match OpenOptions::new().write(true).create(true).truncate(!w.o.cont).mode(0o666).open(&name) {
                Ok(mut f) => {
                    if w.o.cont {
                        let _ = f.seek(SeekFrom::End(0));
                    }
                    w.out = Some(Out { file: f, is_stdout: false, name });
                }
                Err(e) => {
                    eprintln!("wget: can't open '{name}': {}", strerror(&e));
                    return 1;
                }
            }
        }
    }
    let urls = w.o.urls.clone();
    for u in &urls {
        if let Err(Die(m)) = w.download(u) {
            let _ = io::stdout().flush();
            eprintln!("wget: {m}");
            if let Some(o) = w.out.take() {
                if o.is_stdout {
                    std::mem::forget(o.file);
                }
            }
            return 1;
        }
    }
    if let Some(o) = w.out.take() {
        if o.is_stdout {
            let mut f = o.file;
            let _ = f.flush();
            std::mem::forget(f);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(a: &[&str]) -> Opts {
        match parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap() {
            Parsed::Run(o) => *o,
            Parsed::Usage(m) => panic!("usage: {m:?}"),
        }
    }

    #[test]
    fn options() {
        let o = opts(&["-qO-", "-T", "2", "http://x/"]);
        assert!(o.quiet);
        assert_eq!(o.out.as_deref(), Some("-"));
        assert_eq!(o.timeout, 2);
        assert_eq!(o.urls, vec!["http://x/"]);
        let o = opts(&["http://x/", "-T2", "--spider", "-nv", "--header", "A: b", "--user-agent=z"]);
        assert_eq!(o.timeout, 2);
        assert!(o.spider);
        assert_eq!(o.headers, vec!["A: b"]);
        assert_eq!(o.user_agent, "z");
        assert_eq!(opts(&["--timeout=5", "u"]).timeout, 5);
        assert!(opts(&["--spi", "u"]).spider);
        assert!(matches!(parse(&["-T".into(), "x".into(), "u".into()]), Err(Die(m)) if m == "invalid number 'x'"));
        assert!(
            matches!(parse(&["-z".into(), "u".into()]), Ok(Parsed::Usage(Some(m))) if m == "invalid option -- 'z'")
        );
        assert!(matches!(parse(&["-q".into()]), Ok(Parsed::Usage(None))));
    }

    /// A one-connection server on loopback that sends `reply` after reading the request head.
    fn serve(reply: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let _ = s.write_all(reply);
            head
        });
        (url, h)
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("yard-wget-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn chunked_body_request_and_auth() {
        let (url, h) =
            serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n");
        let d = tmp("chunked");
        let f = d.join("out");
        let u = url.replace("http://", "http://me:p%40ss@") + "/a/b?q=1";
        assert_eq!(run(&args(&["-q", "-U", "agent/1", "--header", "X-A: 1", "-O", f.to_str().unwrap(), &u])), 0);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "abcde");
        let head = h.join().unwrap();
        let host = url.trim_start_matches("http://");
        assert_eq!(
            head,
            format!(
                "GET /a/b?q=1 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: agent/1\r\nConnection: close\r\n\
                 Authorization: Basic bWU6cEBzcw==\r\nX-A: 1\r\n"
            )
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn hostile_replies_fail_cleanly() {
        let d = tmp("hostile");
        let f = d.join("out");
        let out = f.to_str().unwrap();
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 99x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 500 Oops\r\n\r\n",
            b"",
        ] {
            let (url, h) = serve(reply);
            assert_eq!(run(&args(&["-q", "-T", "5", "-O", out, &url])), 1, "{:?}", String::from_utf8_lossy(reply));
            h.join().unwrap();
        }
        // Without -O the file name comes from the URL and an existing file is not overwritten.
        let (url, h) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(run(&args(&["-q", "-P", d.to_str().unwrap(), &format!("{url}/dir/name.txt")])), 0);
        h.join().unwrap();
        assert_eq!(std::fs::read_to_string(d.join("name.txt")).unwrap(), "ok");
        let (url, _h) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
        assert_eq!(run(&args(&["-q", "-T", "2", "-P", d.to_str().unwrap(), &format!("{url}/name.txt")])), 1);
        assert_eq!(std::fs::read_to_string(d.join("name.txt")).unwrap(), "ok");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn redirect_and_timeout() {
        let (url2, h2) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
        let loc: &'static str =
            Box::leak(format!("HTTP/1.1 302 Found\r\nLocation: {url2}/next\r\n\r\n").into_boxed_str());
        let (url1, h1) = serve(loc.as_bytes());
        let d = tmp("redir");
        let f = d.join("out");
        assert_eq!(run(&args(&["-q", "-O", f.to_str().unwrap(), &url1])), 0);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "done");
        h1.join().unwrap();
        assert!(h2.join().unwrap().starts_with("GET /next HTTP/1.1\r\n"));
        // A server that accepts and says nothing: -T 1 gives up after about a second.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let t = Instant::now();
        assert_eq!(run(&args(&["-q", "-T", "1", "-O", f.to_str().unwrap(), &url])), 1);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
        drop(l);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn urls() {
        let u = parse_url("http://user:p%20w@svc:8080/a/b?c=d#frag").unwrap();
        assert_eq!((u.host.as_str(), u.path.as_str(), u.user.as_deref()), ("svc:8080", "a/b?c=d", Some("user:p w")));
        let u = parse_url("example.com").unwrap();
        assert_eq!((u.scheme.as_str(), u.host.as_str(), u.path.as_str(), u.port), ("http", "example.com", "", 80));
        assert!(matches!(parse_url("gopher://x"), Err(Die(m)) if m == "not an http or ftp url: gopher://x"));
        assert_eq!(resolve("127.0.0.1:1", 80).unwrap().to_string(), "127.0.0.1:1");
        assert_eq!(resolve("[::1]", 80).unwrap().to_string(), "[::1]:80");
        assert_eq!(base64(b"test:my pass"), "dGVzdDpteSBwYXNz");
        assert_eq!(size5(11), "   11");
        assert_eq!(status_of("HTTP/1.1 404 Not Found"), 404);
    }
}
