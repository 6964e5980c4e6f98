//! Issue 22 (items 3 and 4): exec and port-forward over SPDY/3.1 against `yard up`, driven by the
//! real old kubectl binaries (1.27–1.29 speak only SPDY; 1.33 with WebSockets turned off), plus a
//! raw SPDY client against the node agent for what kubectl cannot show (a session that keeps
//! serving after one forwarded port fails; hostile bytes after the upgrade).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use yard_agent::spdy::frame::{encode, Frame, FrameReader, FLAG_FIN};
use yard_agent::spdy::headers::{Deflater, Headers};

const OLD: &str = "/usr/lib/google-cloud-sdk/bin";

fn old_kubectl(v: &str) -> PathBuf {
    let p = PathBuf::from(format!("{OLD}/kubectl.{v}"));
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// Run an old kubectl with optional stdin bytes and extra env; bounded to 60 s.
fn run_old(
    v: &str,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = Command::new(old_kubectl(v));
    c.env("KUBECONFIG", kubeconfig).env_remove("KUBERNETES_SERVICE_HOST").args(args);
    for (k, val) in env {
        c.env(k, val);
    }
    run_bounded(c, stdin)
}

fn run_bounded(mut c: Command, stdin: Option<&[u8]>) -> std::process::Output {
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    if let Some(b) = stdin {
        let mut w = child.stdin.take().unwrap();
        let b = b.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&b);
        });
    }
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output { status, stdout: t1.join().unwrap(), stderr: t2.join().unwrap() }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\0', "")
}

/// A pod serving two directories with busybox httpd on 8081 and 8082; nothing on 9999.
fn pod_yaml(www: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: spdy
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "httpd -f -p 8081 -h /www/one & httpd -f -p 8082 -h /www/two & exec sleep 3600"]
    volumeMounts: [{{name: www, mountPath: /www, readOnly: true}}]
  volumes: [{{name: www, hostPath: {{path: "{w}", type: Directory}}}}]
"#,
        w = www.display()
    )
}

fn curl(port: u16) -> Option<String> {
    let o = Command::new("curl").args(["-s", "-m", "5", &format!("http://127.0.0.1:{port}/")]).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// A port-forward kubectl process, ended by PID on drop.
struct PortForward {
    child: std::process::Child,
    stderr: PathBuf,
}

impl PortForward {
    fn start(v: &str, kubeconfig: &Path, dir: &Path, maps: &[String], env: &[(&str, &str)]) -> PortForward {
        let stderr = dir.join(format!("pf-{v}-{}.err", maps.join("_").replace(':', "-")));
        let mut c = Command::new(old_kubectl(v));
        c.env("KUBECONFIG", kubeconfig).arg("port-forward").arg("pod/spdy").args(maps);
        for (k, val) in env {
            c.env(k, val);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("port-forward");
        PortForward { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn spdy_exec_and_port_forward_with_old_kubectl() {
    let dir = TempDir::new("spdy");
    let www = dir.0.join("www");
    for (d, body) in [("one", "one"), ("two", "two")] {
        std::fs::create_dir_all(www.join(d)).unwrap();
        std::fs::write(www.join(d).join("index.html"), format!("{body}\n")).unwrap();
    }
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let up = Up::start("e2espdy", &data, &[]);
    let manifest = dir.0.join("pod.yaml");
    std::fs::write(&manifest, pod_yaml(&www)).unwrap();
    up.k(&["apply", "-f", manifest.to_str().unwrap()]);
    up.k(&["wait", "--for=condition=Ready", "pod/spdy", "--timeout=60s"]);
    let kc = up.kubeconfig.clone();
    // httpd may need a moment after the pod is Ready.
    let ep = up.k(&["get", "node", "-o", "jsonpath={.items[0].metadata.annotations.yard\\.dev/agent-endpoint}"]);

    // exec: stdout, for each SPDY-only kubectl.
    for v in ["1.27", "1.28", "1.29"] {
        let o = run_old(v, &kc, &["exec", "spdy", "--", "echo", "hi"], None, &[]);
        assert!(o.status.success(), "kubectl {v}: {}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "hi\n", "kubectl {v}");
    }

    // Exit codes and stderr.
    let o = run_old("1.27", &kc, &["exec", "spdy", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "out\n");
    let err = text(&o.stderr);
    assert!(err.contains("err\n") && err.contains("command terminated with exit code 3"), "{err}");

    // stdin piped, small and 1 MiB (many data frames), and EOF reaching the process.
    let o = run_old("1.28", &kc, &["exec", "-i", "spdy", "--", "sh", "-c", "cat; echo done"], Some(b"hello\n"), &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hello\ndone\n");
    let big = vec![b'x'; 1 << 20];
    let o = run_old("1.28", &kc, &["exec", "-i", "spdy", "--", "wc", "-c"], Some(&big), &[]);
    assert_eq!(text(&o.stdout).trim(), "1048576", "{}", text(&o.stderr));
    // And 1 MiB back out.
    let o =
        run_old("1.27", &kc, &["exec", "spdy", "--", "sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' y"], None, &[]);
    assert_eq!(o.stdout.len(), 1 << 20);
    assert!(o.stdout.iter().all(|b| *b == b'y'));

    // -it with a terminal from script(1): the terminal size arrives over the resize stream.
    let script_cmd = format!(
        "stty rows 30 cols 100; {} --kubeconfig {} exec -it spdy -- stty size",
        old_kubectl("1.29").display(),
        kc.display()
    );
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &script_cmd, "/dev/null"]);
    let o = run_bounded(c, None);
    assert!(text(&o.stdout).contains("30 100"), "stty size over SPDY tty: {:?} {}", text(&o.stdout), text(&o.stderr));
    // An interactive shell: typed input, its exit code.
    let script_cmd = format!("{} --kubeconfig {} exec -it spdy -- sh", old_kubectl("1.29").display(), kc.display());
    let mut c = Command::new("sh");
    c.args([
        "-c",
        &format!(
            "(sleep 2; printf 'echo via$((40+2))tty; exit 4\\r'; sleep 3) | script -q -e -c '{script_cmd}' /dev/null"
        ),
    ]);
    let o = run_bounded(c, None);
    let out = text(&o.stdout);
    assert!(out.contains("via42tty"), "{out}");
    assert!(out.contains("command terminated with exit code 4"), "{out}");
    assert_eq!(o.status.code(), Some(4), "{out}");

    // kubectl 1.33 with WebSockets turned off speaks SPDY too (its request says so at -v=8).
    let o = run_old(
        "1.33",
        &kc,
        &["exec", "spdy", "-v=8", "--", "sh", "-c", "exit 7"],
        None,
        &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
    );
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("Upgrade: SPDY/3.1"), "1.33 did not use SPDY: {}", text(&o.stderr));

    // port-forward (kubectl 1.29: SPDY only): two ports, many concurrent connections.
    let (l1, l2) = (free_port(), free_port());
    let mut pf = PortForward::start("1.29", &kc, &dir.0, &[format!("{l1}:8081"), format!("{l2}:8082")], &[]);
    let ready = eventually(Duration::from_secs(20), || (curl(l1).as_deref() == Some("one")).then_some(()));
    assert!(ready.is_some(), "port-forward never worked: {}", pf.stderr());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let (port, want) = if (t + i) % 2 == 0 { (l1, "one") } else { (l2, "two") };
                        curl(port).as_deref() == Some(want)
                    })
                    .filter(|ok| *ok)
                    .count()
            })
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(ok, 80, "concurrent forwarded requests: {}", pf.stderr());
    assert!(pf.alive());

    // A port nothing listens on: upstream's error text on that request's error stream. kubectl
    // 1.29 then drops its own session ("lost connection to pod"), as against a real kubelet; the
    // other forwarder keeps working.
    let l3 = free_port();
    let bad = PortForward::start("1.29", &kc, &dir.0, &[format!("{l3}:9999")], &[]);
    let _ = eventually(Duration::from_secs(10), || bad.stderr().contains("Forwarding from").then_some(()));
    assert_eq!(curl(l3), None);
    let msg = eventually(Duration::from_secs(10), || {
        let e = bad.stderr();
        e.contains("an error occurred forwarding").then_some(e)
    })
    .unwrap_or_else(|| bad.stderr());
    assert!(msg.contains(&format!("an error occurred forwarding {l3} -> 9999")), "{msg}");
    assert!(msg.contains("error forwarding port 9999 to pod"), "{msg}");
    assert!(msg.contains("connect: connection refused"), "{msg}");
    assert!(msg.contains("\"closeConnection\":true"), "{msg}");
    assert_eq!(curl(l1).as_deref(), Some("one"));
    assert_eq!(curl(l2).as_deref(), Some("two"));
    assert!(pf.alive());
    drop(bad);
    drop(pf);

    // kubectl 1.33 port-forward with WebSockets turned off uses SPDY as well.
    let l4 = free_port();
    let pf33 = PortForward::start(
        "1.33",
        &kc,
        &dir.0,
        &[format!("{l4}:8082")],
        &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")],
    );
    let ok = eventually(Duration::from_secs(20), || (curl(l4).as_deref() == Some("two")).then_some(()));
    assert!(ok.is_some(), "1.33 SPDY port-forward: {}", pf33.stderr());
    drop(pf33);

    // Older stream protocols: v3 reports a failure as plain text on the error stream, v4 as a
    // Status (success included).
    let (v3_text, _) = raw_exec(&ep, "v3.channel.k8s.io", "sh&command=-c&command=exit%203");
    assert_eq!(
        v3_text,
        "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
    );
    let (v4_text, out) = raw_exec(&ep, "v4.channel.k8s.io", "echo&command=raw");
    let v: serde_json::Value = serde_json::from_str(&v4_text).unwrap();
    assert_eq!(v["status"], "Success", "{v4_text}");
    assert_eq!(out, "raw\n");
    let (v4_fail, _) = raw_exec(&ep, "v4.channel.k8s.io", "sh&command=-c&command=exit%205");
    let v: serde_json::Value = serde_json::from_str(&v4_fail).unwrap();
    assert_eq!(v["reason"], "NonZeroExitCode", "{v4_fail}");
    assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(v["details"]["causes"][0]["message"], "5");

    // The raw session check: one SPDY session, the refused port answered on its own error stream,
    // then a working pair on the same session.
    raw_session_keeps_serving(&ep);
    // Hostile bytes after the upgrade end that session only; the agent keeps serving everyone.
    raw_garbage_after_upgrade(&ep);
    // A client that vanishes mid-exec: the command is hung up, not left running.
    {
        let s = upgrade(
            &ep,
            "/api/v1/namespaces/default/pods/spdy/exec?command=sleep&command=61&stdout=true",
            "v4.channel.k8s.io",
        );
        let mut z = Deflater::new();
        let mut out = vec![];
        for (id, t) in [(1, "error"), (3, "stdout")] {
            let f = Frame::SynStream {
                stream_id: id,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: hs(&[("streamtype", t)]),
            };
            encode(&f, &mut z, &mut out);
        }
        (&s).write_all(&out).unwrap();
        let running = || {
            let o = run_old("1.27", &kc, &["exec", "spdy", "--", "ps", "-o", "args"], None, &[]);
            text(&o.stdout).lines().any(|l| l.trim() == "sleep 61")
        };
        assert!(eventually(Duration::from_secs(10), || running().then_some(())).is_some(), "sleep 61 never ran");
        drop(s);
        assert!(
            eventually(Duration::from_secs(10), || (!running()).then_some(())).is_some(),
            "sleep 61 outlived its client"
        );
    }
    let o = run_old("1.27", &kc, &["exec", "spdy", "--", "echo", "still"], None, &[]);
    assert_eq!(text(&o.stdout), "still\n", "{}", text(&o.stderr));
}

fn upgrade(ep: &str, path: &str, proto: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(ep).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {ep}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {proto}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut head = vec![];
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "connection closed during the upgrade");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains(&format!("x-stream-protocol-version: {proto}")), "{head}");
    s
}

fn hs(p: &[(&str, &str)]) -> Headers {
    Headers(p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
}

fn raw_session_keeps_serving(ep: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let s = upgrade(ep, "/api/v1/namespaces/default/pods/spdy/portforward", "portforward.k8s.io");
    rt.block_on(async move {
        s.set_nonblocking(true).unwrap();
        let s = tokio::net::TcpStream::from_std(s).unwrap();
        let (r, mut w) = s.into_split();
        let mut fr = FrameReader::new(r);
        let mut z = Deflater::new();
        let mut out = vec![];
        let syn = |id: u32, t: &str, port: &str, req: &str| Frame::SynStream {
            stream_id: id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: hs(&[("streamtype", t), ("port", port), ("requestid", req)]),
        };
        for f in [syn(1, "error", "9999", "0"), syn(3, "data", "9999", "0")] {
            encode(&f, &mut z, &mut out);
        }
        tokio::io::AsyncWriteExt::write_all(&mut w, &out).await.unwrap();
        // Error stream 1 gets the JSON, then FIN; data stream 3 is FIN'd.
        let mut err = vec![];
        let mut fins = 0;
        while fins < 2 {
            match tokio::time::timeout(Duration::from_secs(15), fr.next()).await.unwrap().unwrap().unwrap() {
                Frame::Data { stream_id: 1, flags, data } => {
                    err.extend_from_slice(&data);
                    fins += (flags & FLAG_FIN != 0) as u32;
                }
                Frame::Data { stream_id: 3, flags, .. } => fins += (flags & FLAG_FIN != 0) as u32,
                Frame::SynReply { .. } => {}
                f => panic!("unexpected {f:?}"),
            }
        }
        let v: serde_json::Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(v["closeConnection"], true);
        assert!(v["message"].as_str().unwrap().contains("connection refused"), "{v}");
        // Same session, a working port.
        out.clear();
        for f in [syn(5, "error", "8082", "1"), syn(7, "data", "8082", "1")] {
            encode(&f, &mut z, &mut out);
        }
        encode(
            &Frame::Data { stream_id: 7, flags: FLAG_FIN, data: b"GET / HTTP/1.0\r\n\r\n".to_vec() },
            &mut z,
            &mut out,
        );
        tokio::io::AsyncWriteExt::write_all(&mut w, &out).await.unwrap();
        let mut body = vec![];
        loop {
            match tokio::time::timeout(Duration::from_secs(15), fr.next()).await.unwrap().unwrap().unwrap() {
                Frame::Data { stream_id: 7, flags, data } => {
                    body.extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                Frame::SynReply { .. } => {}
                Frame::Data { stream_id: 5, data, .. } => {
                    assert!(data.is_empty(), "{}", String::from_utf8_lossy(&data))
                }
                f => panic!("unexpected {f:?}"),
            }
        }
        let body = String::from_utf8_lossy(&body);
        assert!(body.starts_with("HTTP/1.") && body.ends_with("two\n"), "{body}");
    });
}

fn raw_garbage_after_upgrade(ep: &str) {
    for junk in [
        // A control frame claiming 16 MB.
        vec![0x80u8, 3, 0, 1, 0, 0xff, 0xff, 0xff],
        // A SYN_STREAM whose header block is not zlib.
        vec![0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef],
    ] {
        let mut s = upgrade(
            ep,
            "/api/v1/namespaces/default/pods/spdy/exec?command=sleep&command=60&stdout=true",
            "v4.channel.k8s.io",
        );
        s.write_all(&junk).unwrap();
        // GOAWAY (PROTOCOL_ERROR) and a closed connection, promptly.
        let mut got = vec![];
        let _ = s.read_to_end(&mut got);
        assert!(got.len() >= 16, "{got:?}");
        assert_eq!(&got[..4], &[0x80, 3, 0, 7], "GOAWAY expected: {got:?}");
        assert_eq!(&got[12..16], &[0, 0, 0, 1]);
    }
}

/// Exec over a raw SPDY session with `proto`: returns (error stream text, stdout).
fn raw_exec(ep: &str, proto: &str, command_query: &str) -> (String, String) {
    let path = format!("/api/v1/namespaces/default/pods/spdy/exec?command={command_query}&stdout=true");
    let s = upgrade(ep, &path, proto);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        s.set_nonblocking(true).unwrap();
        let s = tokio::net::TcpStream::from_std(s).unwrap();
        let (r, mut w) = s.into_split();
        let mut fr = FrameReader::new(r);
        let mut z = Deflater::new();
        let mut out = vec![];
        for (id, t) in [(1, "error"), (3, "stdout")] {
            let f = Frame::SynStream {
                stream_id: id,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: hs(&[("streamtype", t)]),
            };
            encode(&f, &mut z, &mut out);
        }
        tokio::io::AsyncWriteExt::write_all(&mut w, &out).await.unwrap();
        let (mut err, mut stdout) = (vec![], vec![]);
        let mut err_done = false;
        while !err_done {
            match tokio::time::timeout(Duration::from_secs(15), fr.next()).await.unwrap().unwrap() {
                Some(Frame::Data { stream_id: 1, flags, data }) => {
                    err.extend_from_slice(&data);
                    err_done = flags & FLAG_FIN != 0;
                }
                Some(Frame::Data { stream_id: 3, data, .. }) => stdout.extend_from_slice(&data),
                Some(Frame::SynReply { .. }) => {}
                Some(f) => panic!("unexpected {f:?}"),
                None => break,
            }
        }
        assert!(err_done, "the error stream was never closed");
        (String::from_utf8_lossy(&err).into_owned(), String::from_utf8_lossy(&stdout).into_owned())
    })
}
