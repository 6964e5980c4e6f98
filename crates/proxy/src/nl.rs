//! A minimal nf_tables netlink client for bulk map/set elements: the full sync writes its
//! structure (tables, maps, chains, rules) with `nft -f`, then the elements (the bulk of a large
//! ruleset: one per endpoint) in one netlink batch encoded here, which skips `nft`'s parser
//! (about 10 µs of CPU per element in nft 1.0.6).
//!
//! Only what that needs: `NFT_MSG_NEWSETELEM` inside an nfnetlink batch (one transaction), and
//! `NFT_MSG_GETTABLE` to learn whether a table exists. Element keys and data are given in
//! `nft`'s text notation for the map types this crate declares (see [`encode_key`] /
//! [`encode_data`]) and encoded to the kernel's register layout: every concatenated field
//! padded to 4 bytes, addresses and ports in network order, marks and integers in host order.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::exec::Netns;
use crate::Error;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFPROTO_INET: u8 = 1;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_RETURN: i32 = -5;
const NFT_GOTO: i32 = -4;
const NFT_JUMP: i32 = -3;

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;

/// Bytes of elements per message: the elements list is one attribute, whose length is a u16.
const MAX_ELEMENTS_BYTES: usize = 60_000;

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Command { command: format!("nf_tables netlink: {what}"), message: e.to_string() }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One nfnetlink batch (one transaction) of element additions.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// Sequence number -> set name of every element message (for error reports and acks).
    msgs: Vec<(u32, String)>,
    /// Open message: (start of its header, start of the ELEMENTS nest).
    open: Option<(usize, usize)>,
    table: String,
    set: String,
    /// Message type of the open message.
    kind: u16,
}

impl Batch {
    pub fn new(table: &str) -> Batch {
        let mut b = Batch {
            buf: Vec::with_capacity(1 << 16),
            seq: 1,
            msgs: Vec::new(),
            open: None,
            table: table.into(),
            set: String::new(),
            kind: 0,
        };
        b.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        b.finish_msg(0);
        b
    }

    fn header(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.seq += 1;
        start
    }

    fn finish_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + align4(len) - len, 0);
    }

    fn nest_start(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn close(&mut self) {
        if let Some((start, nest)) = self.open.take() {
            self.nest_end(nest);
            self.finish_msg(start);
        }
    }

    fn open_msg(&mut self, set: &str, kind: u16) {
        self.close();
        let seq = self.seq;
        let flags = if kind == NFT_MSG_NEWSETELEM {
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
        } else {
            NLM_F_REQUEST | NLM_F_ACK
        };
        let start = self.header((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, NFPROTO_INET, 0);
        self.kind = kind;
        let cstr = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            v
        };
        let (t, s) = (cstr(&self.table.clone()), cstr(set));
        self.attr(NFTA_SET_ELEM_LIST_TABLE, &t);
        self.attr(NFTA_SET_ELEM_LIST_SET, &s);
        let nest = self.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        self.open = Some((start, nest));
        self.set = set.to_string();
        self.msgs.push((seq, set.to_string()));
    }

    /// Add the element `key` (with `data` for maps) to `set`, both in `nft` notation.
    pub fn add(&mut self, set: &str, key: &str, data: Option<&str>) -> Result<(), Error> {
        let k = encode_key(key).ok_or_else(|| err("element key", format!("{set}: cannot encode {key:?}")))?;
        let d = match data {
            None => None,
            Some(d) => Some(encode_data(d).ok_or_else(|| err("element data", format!("{set}: cannot encode {d:?}")))?),
        };
        let need = 8
            + 8
            + k.len()
            + match &d {
                None => 0,
                Some(Data::Value(v)) => 8 + v.len() + 8,
                Some(Data::Verdict(_, c)) => 24 + c.as_ref().map_or(0, |c| c.len() + 4),
            };
        self.ensure(set, NFT_MSG_NEWSETELEM, need);
        let el = self.nest_start(NFTA_LIST_ELEM);
        let key_nest = self.nest_start(NFTA_SET_ELEM_KEY);
        self.attr(NFTA_DATA_VALUE, &k);
        self.nest_end(key_nest);
        match d {
            None => {}
            Some(Data::Value(v)) => {
                let n = self.nest_start(NFTA_SET_ELEM_DATA);
                self.attr(NFTA_DATA_VALUE, &v);
                self.nest_end(n);
            }
            Some(Data::Verdict(code, chain)) => {
                let n = self.nest_start(NFTA_SET_ELEM_DATA);
                let v = self.nest_start(NFTA_DATA_VERDICT);
                self.attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
                if let Some(c) = chain {
                    let mut b = c.into_bytes();
                    b.push(0);
                    self.attr(NFTA_VERDICT_CHAIN, &b);
                }
                self.nest_end(v);
                self.nest_end(n);
            }
        }
        self.nest_end(el);
        Ok(())
    }

    fn ensure(&mut self, set: &str, kind: u16, need: usize) {
        match self.open {
            Some((_, nest))
                if self.set == set && self.kind == kind && self.buf.len() - nest + need <= MAX_ELEMENTS_BYTES => {}
            _ => self.open_msg(set, kind),
        }
    }

    /// Delete the element `key` (`nft` notation) from `set`.
    pub fn delete(&mut self, set: &str, key: &str) -> Result<(), Error> {
        let k = encode_key(key).ok_or_else(|| err("element key", format!("{set}: cannot encode {key:?}")))?;
        self.ensure(set, NFT_MSG_DELSETELEM, 16 + k.len());
        let el = self.nest_start(NFTA_LIST_ELEM);
        let key_nest = self.nest_start(NFTA_SET_ELEM_KEY);
        self.attr(NFTA_DATA_VALUE, &k);
        self.nest_end(key_nest);
        self.nest_end(el);
        Ok(())
    }

    /// Number of element messages so far.
    pub fn messages(&self) -> usize {
        self.msgs.len()
    }

    fn finish(mut self) -> (Vec<u8>, Vec<(u32, String)>) {
        self.close();
        let start = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.finish_msg(start);
        (self.buf, self.msgs)
    }
}

/// Encoded element data.
enum Data {
    Value(Vec<u8>),
    Verdict(i32, Option<String>),
}

fn push_field(out: &mut Vec<u8>, f: &str) -> Option<()> {
    let f = f.trim();
    if let Some(hex) = f.strip_prefix("0x") {
        // A mark or other host-order 32-bit integer.
        out.extend_from_slice(&u32::from_str_radix(hex, 16).ok()?.to_ne_bytes());
    } else if let Ok(ip) = f.parse::<IpAddr>() {
        match ip {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    } else if let Some(p) = match f {
        "tcp" => Some(6u8),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    } {
        out.extend_from_slice(&[p, 0, 0, 0]);
    } else {
        return None;
    }
    Some(())
}

/// Key of an element in `nft` notation, e.g. `0x00038000 . 3` (mark . slot, both host order),
/// `10.96.0.1 . tcp . 80` (address . protocol . port), `10.244.1.2 . 10.244.1.2`.
/// A bare decimal is a 32-bit host-order integer when it follows a mark (a numgen slot), and a
/// port (16 bits, network order) otherwise.
pub fn encode_key(key: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(16);
    let mut after_mark = false;
    for f in key.split(" . ") {
        let f = f.trim();
        if let Ok(n) = f.parse::<u32>() {
            if after_mark {
                out.extend_from_slice(&n.to_ne_bytes());
            } else {
                out.extend_from_slice(&u16::try_from(n).ok()?.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
        } else {
            push_field(&mut out, f)?;
        }
        after_mark = f.starts_with("0x");
    }
    Some(out)
}

/// Data of a map element in `nft` notation: `goto CHAIN` / `jump CHAIN` / `drop` / `accept` /
/// `return` (verdict maps), `0x00038000` (mark), `10.244.1.2 . 8080` (address . port).
fn encode_data(data: &str) -> Option<Data> {
    let d = data.trim();
    if let Some(c) = d.strip_prefix("goto ") {
        return Some(Data::Verdict(NFT_GOTO, Some(c.trim().to_string())));
    }
    if let Some(c) = d.strip_prefix("jump ") {
        return Some(Data::Verdict(NFT_JUMP, Some(c.trim().to_string())));
    }
    match d {
        "drop" => return Some(Data::Verdict(NF_DROP, None)),
        "accept" => return Some(Data::Verdict(NF_ACCEPT, None)),
        "return" => return Some(Data::Verdict(NFT_RETURN, None)),
        _ => {}
    }
    let mut out = Vec::with_capacity(20);
    for f in d.split(" . ") {
        let f = f.trim();
        if let Ok(port) = f.parse::<u16>() {
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            push_field(&mut out, f)?;
        }
    }
    Some(Data::Value(out))
}

/// A netlink socket for nf_tables in one network namespace.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    pub fn open(netns: &Netns) -> Result<Socket, Error> {
        let open = || -> std::io::Result<OwnedFd> {
            // SAFETY: plain socket(2); the fd is owned right away.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh, valid descriptor we own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let fd = match netns.path() {
            Some(p) => yard_netns::run_in(p, open)?,
            None => open(),
        }
        .map_err(|e| err("socket", e))?;
        let s = Socket { fd };
        // Errors echo only the header of the failed message, not its (large) payload.
        s.setopt(SOL_NETLINK, NETLINK_CAP_ACK, 1);
        s.setopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
        let tv = libc::timeval { tv_sec: 30, tv_usec: 0 };
        // SAFETY: setsockopt with a timeval we own.
        unsafe {
            libc::setsockopt(
                s.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(s)
    }

    fn setopt(&self, level: libc::c_int, name: libc::c_int, val: libc::c_int) -> bool {
        // SAFETY: setsockopt with an int we own.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    }

    fn send(&self, buf: &[u8]) -> Result<(), Error> {
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sendto with a buffer and address we own.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(err("sendto", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Receive until every sequence number in `want` is acknowledged; the first error wins.
    fn acks(&self, mut want: Vec<(u32, String)>) -> Result<(), Error> {
        let mut buf = vec![0u8; 1 << 16];
        let mut first_err: Option<Error> = None;
        while !want.is_empty() {
            let n = match self.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => return Err(first_err.unwrap_or(e)),
            };
            for (ty, seq, code) in messages(&buf[..n]) {
                if let (NLMSG_ERROR, Some(code)) = (ty, code) {
                    if let Some(i) = want.iter().position(|(s, _)| *s == seq) {
                        let (_, set) = want.swap_remove(i);
                        if code != 0 && first_err.is_none() {
                            first_err =
                                Some(err(&format!("add elements to {set}"), std::io::Error::from_raw_os_error(-code)));
                        }
                    } else if code != 0 && first_err.is_none() {
                        first_err = Some(err("batch", std::io::Error::from_raw_os_error(-code)));
                        // A batch-level failure acknowledges nothing else.
                        want.clear();
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Commit `batch` as one transaction.
    pub fn commit(&self, batch: Batch) -> Result<(), Error> {
        let (buf, msgs) = batch.finish();
        if msgs.is_empty() {
            return Ok(());
        }
        self.setopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, (buf.len() + (1 << 16)).min(i32::MAX as usize / 2) as i32);
        self.send(&buf)?;
        self.acks(msgs)
    }

    /// Number of rules in chain `chain` of inet table `table` (error when either is missing).
    pub fn rule_count(&self, table: &str, chain: &str) -> Result<usize, Error> {
        let mut b = Batch {
            buf: Vec::new(),
            seq: 0x7ffe_0000,
            msgs: Vec::new(),
            open: None,
            table: String::new(),
            set: String::new(),
            kind: 0,
        };
        let start =
            b.header((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, NFPROTO_INET, 0);
        for (ty, v) in [(NFTA_RULE_TABLE, table), (NFTA_RULE_CHAIN, chain)] {
            let mut n = v.as_bytes().to_vec();
            n.push(0);
            b.attr(ty, &n);
        }
        b.finish_msg(start);
        self.send(&b.buf)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut count = 0;
        loop {
            let n = self.recv(&mut buf)?;
            for (ty, seq, code) in messages(&buf[..n]) {
                if seq == 0x7ffe_0000 {
                    match (ty, code) {
                        (NLMSG_DONE, _) => return Ok(count),
                        (NLMSG_ERROR, Some(code)) => {
                            return Err(err("list rules", std::io::Error::from_raw_os_error(-code)));
                        }
                        _ => count += 1,
                    }
                }
            }
        }
    }

    /// One datagram from the socket into `buf`; its length.
    fn recv(&self, buf: &mut [u8]) -> Result<usize, Error> {
        // SAFETY: recv into a buffer we own, at most its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(err("recv", std::io::Error::last_os_error()));
        }
        Ok(n as usize)
    }

    /// Whether table `name` of family inet exists.
    pub fn table_exists(&self, name: &str) -> Result<bool, Error> {
        let mut b = Batch {
            buf: Vec::new(),
            seq: 0x7fff_0000,
            msgs: Vec::new(),
            open: None,
            table: String::new(),
            set: String::new(),
            kind: 0,
        };
        let start =
            b.header((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_ACK, NFPROTO_INET, 0);
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        b.attr(NFTA_TABLE_NAME, &n);
        b.finish_msg(start);
        self.send(&b.buf)?;
        match self.acks(vec![(0x7fff_0000, name.to_string())]) {
            Ok(()) => Ok(true),
            Err(Error::Command { message, .. }) if message.contains("No such file") => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The netlink messages in one received datagram: (type, sequence number, and for messages of
/// 20 bytes or more the first payload word, which is the error code of an `NLMSG_ERROR`). Stops
/// at the first malformed header.
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, Option<i32>)> + '_ {
    yard_netns::rtnl::frames(buf).map_while(Result::ok).map(|f| {
        let word = |at: usize| f[at..at + 4].try_into().unwrap();
        let ty = u16::from_ne_bytes(f[4..6].try_into().unwrap());
        let code = (f.len() >= 20).then(|| i32::from_ne_bytes(word(16)));
        (ty, u32::from_ne_bytes(word(8)), code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_data() {
        let mut mark = 0x0003_8000u32.to_ne_bytes().to_vec();
        mark.extend_from_slice(&3u32.to_ne_bytes());
        assert_eq!(encode_key("0x00038000 . 3").unwrap(), mark);
        assert_eq!(encode_key("10.96.0.1 . tcp . 80").unwrap(), vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(encode_key("tcp . 30080").unwrap(), vec![6, 0, 0, 0, 0x75, 0x80, 0, 0]);
        assert_eq!(encode_key("10.244.1.2 . 10.244.1.2").unwrap(), vec![10, 244, 1, 2, 10, 244, 1, 2]);
        assert_eq!(encode_key("fd00::1 . udp . 53").unwrap().len(), 24);
        assert!(encode_key("bogus . 1").is_none());
        let Some(Data::Value(v)) = encode_data("10.244.1.2 . 8080") else { panic!() };
        assert_eq!(v, vec![10, 244, 1, 2, 0x1f, 0x90, 0, 0]);
        let Some(Data::Value(v)) = encode_data("0x00038000") else { panic!() };
        assert_eq!(v, 0x0003_8000u32.to_ne_bytes().to_vec());
        let Some(Data::Verdict(c, Some(ch))) = encode_data("goto plain-2") else { panic!() };
        assert_eq!((c, ch.as_str()), (NFT_GOTO, "plain-2"));
        assert!(matches!(encode_data("drop"), Some(Data::Verdict(NF_DROP, None))));
    }

    #[test]
    fn batch_splits_messages() {
        let mut b = Batch::new("t");
        for i in 0..5000u32 {
            b.add("endpoints", &format!("0x{:08x} . {}", i << 15, i % 7), Some("10.1.2.3 . 80")).unwrap();
        }
        b.add("service-ips", "10.96.0.1 . tcp . 80", Some("goto plain-2")).unwrap();
        assert!(b.messages() >= 4, "{}", b.messages());
        let (buf, msgs) = b.finish();
        // Walk the messages: every length is consistent and the last is the batch end.
        let mut off = 0;
        let mut last = 0;
        let mut count = 0;
        while off < buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            last = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            off += align4(len);
            count += 1;
        }
        assert_eq!(off, buf.len());
        assert_eq!(last, NFNL_MSG_BATCH_END);
        assert_eq!(count, msgs.len() + 2);
        assert_eq!(msgs.last().unwrap().1, "service-ips");
    }
}
