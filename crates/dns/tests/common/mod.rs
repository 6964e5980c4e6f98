//! Helpers of the end-to-end tests that run `yard dns` (its `run` entry point, with flags parsed
//! from a command line exactly as the `yard` binary parses them) against yard's API server on
//! loopback, with objects created through the API.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub use yard_test_support::apiserver::client_for;
pub use yard_test_support::{free_tcp_udp_port as free_port, until_async, TempDir};

/// Yard's API server on 127.0.0.1:<free port>, dual-stack Service ranges, and a client for it.
pub async fn api_server(dir: &TempDir) -> (yard_apiserver::Running, kube::Client) {
    let args = yard_apiserver::Args {
        data_dir: dir.0.join("api"),
        port: 0,
        service_cidr: vec!["10.96.0.0/12".parse().unwrap(), "fd00:10:96::/112".parse().unwrap()],
        ..Default::default()
    };
    yard_test_support::apiserver::start(args).await
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    dns: yard_dns::Args,
}

/// `yard dns <flags>` running in this process; stopped when dropped.
pub struct YardDns {
    /// The first `--listen` address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), yard_dns::Error>>,
}

impl Drop for YardDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `yard dns --kubeconfig <running's> --upstream <upstream> <extra>` (see [`yard_dns`]), once
/// its first sync is done (the `kubernetes` Service answers).
pub async fn synced_dns(running: &yard_apiserver::Running, upstream: &FakeUpstream, extra: &[&str]) -> YardDns {
    let mut flags = vec![
        "--kubeconfig".to_string(),
        running.kubeconfig.to_string_lossy().into_owned(),
        "--upstream".to_string(),
        upstream.addr.to_string(),
    ];
    flags.extend(extra.iter().map(|f| f.to_string()));
    let dns = yard_dns(&flags).await;
    let s = dns.addr;
    until_async(Duration::from_secs(20), "first sync", || async {
        ask(s, "kubernetes.default.svc.cluster.local.", RecordType::A).await.0 == ResponseCode::NoError
    })
    .await;
    dns
}

/// Starts `yard dns --listen 127.0.0.1:<free port> <flags>` (`{port}` in a flag is replaced by
/// that port) and waits until it answers on UDP (anything, SERVFAIL included).
pub async fn yard_dns(flags: &[String]) -> YardDns {
    for _ in 0..5 {
        let port = free_port();
        let mut argv = vec!["yard-dns".to_string(), "--listen".to_string(), format!("127.0.0.1:{port}")];
        argv.extend(flags.iter().map(|f| f.replace("{port}", &port.to_string())));
        let args = Cli::try_parse_from(&argv).expect("flags parse").dns;
        let addr = args.listen[0];
        let client = client_for(args.kubeconfig.as_deref().expect("--kubeconfig")).await;
        let task = tokio::spawn(yard_dns::run(client, args));
        let start = Instant::now();
        loop {
            if task.is_finished() {
                break;
            }
            let probe =
                Message::from_vec(&query_bytes(rand::random(), "dns-version.cluster.local.", RecordType::TXT)).unwrap();
            if exchange(addr, &probe, Duration::from_millis(100)).await.is_some() {
                return YardDns { addr, task };
            }
            assert!(start.elapsed() < Duration::from_secs(10), "yard dns does not answer on {addr}");
        }
        // Lost the port to someone else between probing and binding: try another.
        match task.await {
            Ok(r) => eprintln!("yard dns on {addr} ended: {r:?}; retrying"),
            Err(e) => panic!("yard dns task: {e}"),
        }
    }
    panic!("could not start yard dns");
}

pub fn query_bytes(id: u16, name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

/// One UDP exchange of `req` with `server` (a hickory-proto client); `None` on timeout.
pub async fn exchange(server: SocketAddr, req: &Message, timeout: Duration) -> Option<Message> {
    exchange_bytes(server, &req.to_vec().unwrap(), timeout).await.map(|b| Message::from_vec(&b).expect("reply decodes"))
}

/// Sends raw bytes over UDP; the raw reply whose id matches, or `None` on timeout.
pub async fn exchange_bytes(server: SocketAddr, req: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server).await.unwrap();
    sock.send(req).await.unwrap();
    let mut buf = vec![0u8; 65536];
    tokio::time::timeout(timeout, async {
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) if n >= 2 && req.len() >= 2 && buf[..2] == req[..2] => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Asks `name`/`t` over UDP (hickory-proto client): (rcode, sorted answer data).
pub async fn ask(server: SocketAddr, name: &str, t: RecordType) -> (ResponseCode, Vec<String>) {
    let req = Message::from_vec(&query_bytes(rand::random(), name, t)).unwrap();
    let m = exchange(server, &req, Duration::from_secs(2)).await.unwrap_or_else(|| panic!("no answer for {name} {t}"));
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    (m.metadata.response_code, v)
}

// ------------------------------------------------------------------------------------- dig

#[derive(Debug)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
    pub raw: String,
}

impl Dig {
    /// Answer records as "TYPE DATA", sorted.
    pub fn answers(&self) -> Vec<String> {
        type_data(&self.answer)
    }
    /// Additional records as "TYPE DATA", sorted.
    pub fn additionals(&self) -> Vec<String> {
        type_data(&self.additional)
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    /// TTL of every answer record.
    pub fn answer_ttls(&self) -> Vec<u32> {
        self.answer.iter().map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap()).collect()
    }
    /// The authority section must be exactly the zone's SOA; returns its TTL and minimum.
    pub fn assert_soa(&self, zone: &str) -> (u32, u32) {
        assert_eq!(self.authority.len(), 1, "one SOA in authority: {}", self.raw);
        let f: Vec<&str> = self.authority[0].split_whitespace().collect();
        assert_eq!(f[0], format!("{zone}."), "{}", self.raw);
        assert_eq!(f[3], "SOA", "{}", self.raw);
        assert_eq!(f[4], format!("ns.dns.{zone}."), "{}", self.raw);
        assert_eq!(f[5], format!("hostmaster.{zone}."), "{}", self.raw);
        (f[1].parse().unwrap(), f[10].parse().unwrap())
    }
}

fn type_data(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", f[3], f[4..].join(" "))
        })
        .filter(|s| !s.starts_with("OPT "))
        .collect();
    v.sort();
    v
}

/// Runs the real `dig @server -p port +time=3 +tries=1 +norec <args>` and parses its output.
pub async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let mut cmd = Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=3", "+tries=1", "+norec"])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run dig (scripts/install-deps.sh installs it)");
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let mut d = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap().trim().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest.split(';').next().unwrap().split_whitespace().map(String::from).collect();
        }
        for (head, name) in [
            (";; ANSWER SECTION", "answer"),
            (";; AUTHORITY SECTION", "authority"),
            (";; ADDITIONAL SECTION", "additional"),
        ] {
            if line.starts_with(head) {
                section = name;
            }
        }
        if line.trim().is_empty() {
            section = "";
        }
        if line.trim().is_empty() || line.starts_with(';') {
            continue;
        }
        match section {
            "answer" => d.answer.push(line.to_string()),
            "authority" => d.authority.push(line.to_string()),
            "additional" => d.additional.push(line.to_string()),
            _ => {}
        }
    }
    assert!(!d.status.is_empty(), "dig gave no status:\n{raw}\n{}", String::from_utf8_lossy(&out.stderr));
    d
}

/// `curl -s http://addr/path`: (status code, body).
pub async fn curl(addr: SocketAddr, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl").args(["-s", "-m", "3", "-o", "-", "-w", "\n%{http_code}", &url]).output()
    })
    .await
    .unwrap()
    .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of one sample line of a Prometheus text page (0 when absent).
pub fn metric(page: &str, sample: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

// ----------------------------------------------------------------------- fake upstream

/// A fake upstream resolver on 127.0.0.1 (UDP): `A` of `*.example.test` is `192.0.2.7` (TTL
/// 60), every other name is NXDOMAIN with an SOA (TTL 60). Logs every question it gets.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const UPSTREAM_IP: &str = "192.0.2.7";

impl FakeUpstream {
    pub async fn start() -> Self {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = req.queries.first().cloned() else {
                    continue;
                };
                let name = q.name().to_ascii().to_ascii_lowercase();
                l.lock().unwrap().push(format!("{name} {}", q.query_type()));
                let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
                m.metadata.recursion_desired = req.metadata.recursion_desired;
                m.metadata.recursion_available = true;
                m.add_query(q.clone());
                if name.ends_with(".example.test.") && name != "nope.example.test." {
                    if q.query_type() == RecordType::A {
                        m.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::A(A(UPSTREAM_IP.parse().unwrap())),
                        ));
                    }
                } else {
                    m.metadata.response_code = ResponseCode::NXDomain;
                }
                if m.answers.is_empty() {
                    m.add_authority(Record::from_rdata(
                        Name::from_ascii("example.test.").unwrap(),
                        60,
                        RData::SOA(SOA::new(
                            Name::from_ascii("ns.example.test.").unwrap(),
                            Name::from_ascii("hostmaster.example.test.").unwrap(),
                            1,
                            7200,
                            1800,
                            86400,
                            60,
                        )),
                    ));
                }
                let _ = sock.send_to(&m.to_vec().unwrap(), peer).await;
            }
        });
        FakeUpstream { addr, log, task }
    }

    /// How many questions for `name` (lower case, fully qualified) it got.
    pub fn asked(&self, name: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.split(' ').next() == Some(name)).count()
    }
}

/// Creates an object (given as JSON) through the API.
pub async fn create<K>(api: &kube::Api<K>, obj: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o: K = serde_json::from_value(obj).unwrap();
    api.create(&kube::api::PostParams::default(), &o).await.unwrap_or_else(|e| panic!("create {o:?}: {e}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
