//! Ports for servers a test starts on loopback. They come from below the kernel's ephemeral range
//! (`yard_store::local_etcd::pick_port` says why: an outgoing connection can take an ephemeral
//! port between picking it and binding it), never the same one twice in one process.

/// A loopback TCP port free now, for a server the test starts next.
pub fn free_port() -> u16 {
    yard_store::local_etcd::pick_port().expect("a free port")
}

/// A port free on 127.0.0.1 for both TCP and UDP (a DNS server binds both).
pub fn free_tcp_udp_port() -> u16 {
    for _ in 0..50 {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_differ_and_bind() {
        let a = super::free_port();
        let b = super::free_tcp_udp_port();
        assert_ne!(a, b);
        std::net::TcpListener::bind(("127.0.0.1", a)).unwrap();
        std::net::UdpSocket::bind(("127.0.0.1", b)).unwrap();
    }
}
