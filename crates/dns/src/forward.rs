//! Forwarding of names outside the cluster to upstream resolvers, with a small cache that
//! respects record TTLs (capped).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::RData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// (name key, type, class)
type CacheKey = (Box<[u8]>, u16, u16);

/// Most entries kept in the cache.
const CACHE_CAPACITY: usize = 10_000;

#[derive(Debug)]
struct Entry {
    msg: Message,
    stored: Instant,
    expires: Instant,
}

/// Upstream resolvers and the answer cache.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    max_ttl: u32,
    cache: Mutex<FastMap<CacheKey, Entry>>,
}

/// Nameservers listed in a resolv.conf text (port 53).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "nameserver" {
                return None;
            }
            let ip: IpAddr = w.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Upstreams from /etc/resolv.conf.
pub fn system_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf").map(|t| parse_resolv_conf(&t)).unwrap_or_default()
}

impl Forwarder {
    /// A forwarder asking `upstreams` in order, caching for at most `max_ttl` seconds.
    pub fn new(upstreams: Vec<SocketAddr>, max_ttl: u32) -> Self {
        Forwarder { upstreams, timeout: Duration::from_secs(2), max_ttl, cache: Mutex::new(FastMap::default()) }
    }

    /// The upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// A cached answer for `query` (whose name key is `key`), TTLs lowered by the time spent in
    /// the cache.
    pub(crate) fn cache_get(&self, key: &[u8], query: &Query) -> Option<Message> {
        let k = (Box::<[u8]>::from(key), u16::from(query.query_type()), u16::from(query.query_class()));
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let e = cache.get(&k)?;
        let now = Instant::now();
        if now >= e.expires {
            return None;
        }
        let age = now.duration_since(e.stored).as_secs() as u32;
        let remaining = (e.expires.duration_since(now).as_secs() as u32).max(1);
        let mut msg = e.msg.clone();
        for r in msg.answers.iter_mut().chain(msg.authorities.iter_mut()).chain(msg.additionals.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age).min(remaining);
        }
        Some(msg)
    }

    fn cache_put(&self, query: &Query, msg: &Message) {
        if msg.metadata.truncation {
            return;
        }
        let rcode = msg.metadata.response_code;
        if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
            return;
        }
        let ttl = if msg.answers.is_empty() {
            msg.authorities
                .iter()
                .find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
                .unwrap_or(0)
        } else {
            msg.answers.iter().map(|r| r.ttl).min().unwrap_or(0)
        };
        let ttl = ttl.min(self.max_ttl);
        if ttl == 0 {
            return;
        }
        let mut key = Vec::new();
        crate::index::name_key(query.name(), &mut key);
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        let mut msg = msg.clone();
        msg.edns = None;
        cache.insert(
            (key.into_boxed_slice(), u16::from(query.query_type()), u16::from(query.query_class())),
            Entry { msg, stored: now, expires: now + Duration::from_secs(u64::from(ttl)) },
        );
    }

    /// Asks the upstreams (UDP, then TCP if truncated); `None` when none answered.
    pub async fn resolve(&self, query: &Query) -> Option<Message> {
        let mut req = Message::query();
        req.metadata.recursion_desired = true;
        let mut q = query.clone();
        q.set_query_class(query.query_class());
        req.add_query(q);
        let mut e = Edns::new();
        e.set_max_payload(1232);
        req.set_edns(e);
        for up in &self.upstreams {
            match self.exchange(*up, &mut req, query).await {
                Some(msg) => {
                    if msg.metadata.response_code == ResponseCode::ServFail
                        || msg.metadata.response_code == ResponseCode::Refused
                    {
                        continue;
                    }
                    self.cache_put(query, &msg);
                    return Some(msg);
                }
                None => continue,
            }
        }
        None
    }

    async fn exchange(&self, up: SocketAddr, req: &mut Message, query: &Query) -> Option<Message> {
        req.metadata.id = rand::random();
        let bytes = req.to_vec().ok()?;
        let id = req.metadata.id;
        let matches = |m: &Message| {
            m.metadata.id == id
                && m.queries.len() == 1
                && m.queries[0].query_type() == query.query_type()
                && m.queries[0].name() == query.name()
        };
        let udp = tokio::time::timeout(self.timeout, async {
            let bind: SocketAddr = match up {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
            sock.connect(up).await.ok()?;
            sock.send(&bytes).await.ok()?;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                if let Ok(m) = Message::from_vec(&buf[..n]) {
                    if matches(&m) {
                        return Some(m);
                    }
                }
            }
        })
        .await
        .ok()
        .flatten()?;
        if !udp.metadata.truncation {
            return Some(udp);
        }
        tokio::time::timeout(self.timeout, async {
            let mut stream = tokio::net::TcpStream::connect(up).await.ok()?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await.ok()?;
            let len = stream.read_u16().await.ok()? as usize;
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await.ok()?;
            let m = Message::from_vec(&buf).ok()?;
            matches(&m).then_some(m)
        })
        .await
        .ok()
        .flatten()
        .or(Some(udp))
    }
}

/// Drops upstreams that are one of our own listen addresses (would loop).
pub fn without_self(upstreams: Vec<SocketAddr>, listen: &[SocketAddr]) -> Vec<SocketAddr> {
    upstreams
        .into_iter()
        .filter(|u| {
            !listen.iter().any(|l| {
                l.port() == u.port() && (l.ip() == u.ip() || (l.ip().is_unspecified() && u.ip().is_loopback()))
            })
        })
        .collect()
}
