//! The UDP listener: worker threads, each receiving a batch of datagrams with one `recvmmsg`,
//! answering them (most from its answer cache, see [`crate::cache`]) and sending the replies
//! with one `sendmmsg`. Several workers may share a socket, and several sockets may share a port
//! (SO_REUSEPORT, see [`crate::bind_udp`]). Queries that go upstream are handed to the tokio
//! runtime and answered from there.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::server::{Action, Handler, Scratch};

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 32;
/// Receive buffer per datagram; longer queries are dropped (a query is a question and an OPT
/// record: a few hundred bytes at most).
const BUF: usize = 4096;
/// How often a worker blocked in `recvmmsg` looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Sets the flag when dropped (the serving future was dropped or returned).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Serves UDP on `sock` with `workers` threads until a worker fails; dropping the future stops
/// the threads (within [`STOP_POLL`]), which then close the socket.
pub(crate) async fn serve_udp(sock: std::net::UdpSocket, handler: Arc<Handler>, workers: usize) -> io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(STOP_POLL))?;
    let sock = Arc::new(sock);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Error>(workers.max(1));
    let rt = tokio::runtime::Handle::current();
    for i in 0..workers.max(1) {
        let (sock, handler, stop, tx, rt) = (sock.clone(), handler.clone(), stop.clone(), tx.clone(), rt.clone());
        std::thread::Builder::new().name(format!("dns-udp-{i}")).spawn(move || {
            if let Err(e) = worker(&sock, &handler, &stop, &rt) {
                let _ = tx.blocking_send(e);
            }
        })?;
    }
    drop(tx);
    match rx.recv().await {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The buffers of one worker. The headers point into the other vectors, which are allocated
/// once and never grow.
struct Batch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iov_in: Vec<libc::iovec>,
    hdr_in: Vec<libc::mmsghdr>,
    outs: Vec<Vec<u8>>,
    iov_out: Vec<libc::iovec>,
    hdr_out: Vec<libc::mmsghdr>,
}

fn zeroed_hdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct for which all zero bits is a valid value.
    unsafe { std::mem::zeroed() }
}

impl Batch {
    fn new() -> Self {
        let mut b = Batch {
            bufs: vec![0u8; BATCH * BUF],
            // SAFETY: sockaddr_storage is a plain C struct; all zero bits is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iov_in: Vec::with_capacity(BATCH),
            hdr_in: (0..BATCH).map(|_| zeroed_hdr()).collect(),
            outs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            iov_out: (0..BATCH).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect(),
            hdr_out: (0..BATCH).map(|_| zeroed_hdr()).collect(),
        };
        let base = b.bufs.as_mut_ptr();
        for i in 0..BATCH {
            b.iov_in.push(libc::iovec {
                // SAFETY: i * BUF + BUF <= bufs.len().
                iov_base: unsafe { base.add(i * BUF) }.cast(),
                iov_len: BUF,
            });
        }
        for i in 0..BATCH {
            let h = &mut b.hdr_in[i].msg_hdr;
            h.msg_iov = &mut b.iov_in[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            let h = &mut b.hdr_out[i].msg_hdr;
            h.msg_iov = &mut b.iov_out[i];
            h.msg_iovlen = 1;
        }
        b
    }
}

fn peer_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn worker(
    sock: &Arc<std::net::UdpSocket>,
    handler: &Arc<Handler>,
    stop: &AtomicBool,
    rt: &tokio::runtime::Handle,
) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let mut b = Batch::new();
    let mut s = Scratch::with_cache();
    let mut errors = 0u32;
    while !stop.load(Ordering::Relaxed) {
        for h in b.hdr_in.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the headers point at live buffers of the lengths they state (see Batch::new).
        let n = unsafe {
            libc::recvmmsg(fd, b.hdr_in.as_mut_ptr(), BATCH as _, libc::MSG_WAITFORONE as _, std::ptr::null_mut())
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) {
                continue;
            }
            // ICMP-induced errors (ECONNREFUSED etc.) are per packet; keep going.
            errors += 1;
            if errors > 1000 {
                return Err(e);
            }
            tracing::debug!("udp recv: {e}");
            continue;
        }
        errors = 0;
        let mut nout = 0;
        for i in 0..n as usize {
            let h = &b.hdr_in[i];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                handler.metrics().dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let namelen = h.msg_hdr.msg_namelen;
            let req = &b.bufs[i * BUF..i * BUF + (h.msg_len as usize).min(BUF)];
            let peer = peer_addr(&b.addrs[i]).map(|a| a.ip());
            match handler.handle_from(req, false, peer, &mut s) {
                Action::Reply => {
                    std::mem::swap(&mut s.out, &mut b.outs[nout]);
                    let out = &b.outs[nout];
                    b.iov_out[nout].iov_base = out.as_ptr() as *mut libc::c_void;
                    b.iov_out[nout].iov_len = out.len();
                    let h = &mut b.hdr_out[nout].msg_hdr;
                    h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = namelen;
                    nout += 1;
                }
                Action::Drop => {}
                Action::Forward(p) => {
                    let Some(peer) = peer_addr(&b.addrs[i]) else {
                        continue;
                    };
                    let (sock, handler) = (sock.clone(), handler.clone());
                    rt.spawn(async move {
                        let mut s = Scratch::default();
                        handler.forward(*p, &mut s).await;
                        if !s.out.is_empty() {
                            let _ = socket2::SockRef::from(&*sock).send_to_with_flags(
                                &s.out,
                                &peer.into(),
                                libc::MSG_DONTWAIT,
                            );
                        }
                    });
                }
            }
        }
        handler.flush_stats(&mut s);
        let mut off = 0;
        while off < nout {
            // SAFETY: headers off..nout point at the replies and peer addresses set above.
            let r = unsafe { libc::sendmmsg(fd, b.hdr_out.as_mut_ptr().add(off), (nout - off) as _, 0) };
            if r > 0 {
                off += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // This datagram cannot be sent (e.g. unreachable peer): skip it.
            tracing::debug!("udp send: {e}");
            off += 1;
        }
    }
    Ok(())
}
