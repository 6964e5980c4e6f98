//! Route-netlink requests over a socket that lives in one network namespace: what a pod sandbox
//! needs (veth pairs into a bridge, hairpin, addresses, a default route, links up) without starting
//! an `ip` process per step. Messages are built with `netlink-packet-route`; every request asks for
//! an acknowledgement and a kernel error comes back as the `io::Error` of its errno.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The netlink messages of one received datagram, each a whole frame (16-byte header included),
/// in order. A header whose length runs past the datagram (or is shorter than a header) yields
/// one error and ends the walk.
pub fn frames(buf: &[u8]) -> impl Iterator<Item = io::Result<&[u8]>> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 16 > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < 16 || off + len > buf.len() {
            off = buf.len();
            return Some(Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message")));
        }
        let frame = &buf[off..off + len];
        off += (len + 3) & !3;
        Some(Ok(frame))
    })
}

/// A route-netlink socket bound in the namespace it was opened in.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn current() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { sock, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// A socket in the namespace at `path` (the caller stays where it is).
    pub fn open_in(path: &Path) -> io::Result<Self> {
        crate::run_in(path, Self::current).map_err(io::Error::other)?
    }

    /// Send one request with `NLM_F_ACK` and collect the messages that answer it up to the ack.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        self.sock.send(&out, 0)?;
        let mut replies = vec![];
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            for frame in frames(&self.buf[..n]) {
                let frame = frame?;
                let seq = u32::from_ne_bytes(frame[8..12].try_into().expect("4 bytes"));
                if seq != self.seq {
                    continue;
                }
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                match parsed.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(r) => replies.push(r),
                    _ => {}
                }
            }
        }
    }

    /// The index of the link called `name`, or `None` when there is none.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Set the link with index `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// Delete the link called `name`; `false` when there was none.
    pub fn del_link(&mut self, name: &str) -> io::Result<bool> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(m), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Create the veth pair `name` (here, up, enslaved to `master` when given) and `peer` (moved
    /// into the namespace `peer_netns`).
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        master: Option<u32>,
    ) -> io::Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(master) = master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// Turn hairpin mode on or off for the bridge port with index `index`, so a frame can leave
    /// through the port it came in on (a pod reaching itself through its own Service).
    pub fn set_bridge_port_hairpin(&mut self, index: u32, on: bool) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(on)])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), 0).map(drop)
    }

    /// Add (or replace) `addr/prefix_len` on the link with index `index`.
    pub fn add_addr_v4(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix_len;
        m.header.scope = AddressScope::Universe;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr.into()));
        m.attributes.push(AddressAttribute::Address(addr.into()));
        if prefix_len < 31 {
            let host_mask = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
            m.attributes.push(AddressAttribute::Broadcast(Ipv4Addr::from(u32::from(addr) | host_mask)));
        }
        self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_REPLACE).map(drop)
    }

    /// Add (or replace) the IPv4 default route via `gateway` in the main table.
    pub fn replace_default_route_v4(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn ip(ns: &Path, args: &[&str]) -> String {
        crate::output_in(ns, "ip", args).expect("ip")
    }

    /// A pod-like sandbox built only with netlink, checked with `ip` (the kernel's own view).
    #[test]
    fn veth_into_bridge_with_address_route_and_hairpin() {
        yard_test_support::require_root("network namespaces");
        let node = yard_test_support::TempNetns::new("yard-rtnl-node").expect("node netns");
        let pod = yard_test_support::TempNetns::new("yard-rtnl-pod").expect("pod netns");
        crate::output_in(node.path(), "ip", &["link", "add", "br-t", "type", "bridge"]).expect("bridge");
        let mut n = Rtnl::open_in(node.path()).expect("node socket");
        let br = n.link_index("br-t").expect("lookup").expect("bridge index");
        assert_eq!(n.link_index("nope0").expect("lookup"), None);
        let podns = std::fs::File::open(pod.path()).expect("open pod netns");
        n.add_veth("vethrtnl", "eth0", podns.as_fd(), Some(br)).expect("add veth");
        let v = n.link_index("vethrtnl").expect("lookup").expect("veth index");
        n.set_bridge_port_hairpin(v, true).expect("hairpin");
        let link = ip(node.path(), &["-d", "link", "show", "vethrtnl"]);
        assert!(link.contains("master br-t"), "{link}");
        assert!(link.contains("hairpin on"), "{link}");
        assert!(link.contains(",UP"), "{link}");
        // Creating it again is EEXIST, not a silent success.
        let again = n.add_veth("vethrtnl", "eth0", podns.as_fd(), Some(br)).expect_err("exists");
        assert_eq!(again.raw_os_error(), Some(libc::EEXIST));

        let mut p = Rtnl::open_in(pod.path()).expect("pod socket");
        let eth0 = p.link_index("eth0").expect("lookup").expect("eth0 moved into the pod namespace");
        p.add_addr_v4(eth0, Ipv4Addr::new(10, 250, 0, 7), 24).expect("addr");
        p.set_up(eth0).expect("up");
        p.replace_default_route_v4(Ipv4Addr::new(10, 250, 0, 1)).expect("route");
        let addr = ip(pod.path(), &["-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains("inet 10.250.0.7/24 brd 10.250.0.255"), "{addr}");
        let routes = ip(pod.path(), &["route", "show"]);
        assert!(routes.contains("default via 10.250.0.1 dev eth0"), "{routes}");
        assert!(routes.contains("10.250.0.0/24 dev eth0"), "{routes}");

        assert!(n.del_link("vethrtnl").expect("del"));
        assert!(!n.del_link("vethrtnl").expect("del again"));
        assert_eq!(p.link_index("eth0").expect("lookup"), None, "the peer goes with the pair");
    }
}
