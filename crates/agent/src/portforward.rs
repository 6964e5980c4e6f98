//! Port-forward into a pod, independent of the transport: [`connect`] opens a TCP connection to a
//! port on localhost inside the pod's network namespace (IPv4 first, then IPv6, as the container
//! runtimes do), [`forward`] copies bytes between it and any byte stream, and their errors read as
//! kubelet's (`error forwarding port P to pod ..., uid : failed to execute portforward in network
//! namespace ...`). The WebSocket channel protocol sits on top in [`ws`]; SPDY can call the same
//! functions, running over [`crate::ws_tunnel`] when tunnelled in WebSocket messages.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};

/// Where a pod's ports are.
#[derive(Clone, Debug)]
pub struct Target {
    /// The pod's sandbox id as reported in errors (Yard: the pod's network namespace name).
    pub sandbox: String,
    /// The pod's network namespace file.
    pub netns: PathBuf,
}

/// A failed forward, worded as kubelet words it.
#[derive(Debug, thiserror::Error)]
#[error("error forwarding port {port} to pod {sandbox}, uid : {cause}")]
pub struct ForwardError {
    pub port: u16,
    pub sandbox: String,
    pub cause: String,
}

/// An OS error as Go prints it ("connection refused", not "Connection refused (os error 111)").
fn go_errno(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let d = nix::errno::Errno::from_raw(n).desc();
            let mut c = d.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => d.to_string(),
            }
        }
        None => e.to_string(),
    }
}

/// Connect to `localhost:port` inside the pod: 127.0.0.1 first, then ::1.
pub async fn connect(t: &Target, port: u16) -> Result<tokio::net::TcpStream, ForwardError> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let e4 = match crate::pod::connect_in(t.netns.clone(), v4).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let e6 = match crate::pod::connect_in(t.netns.clone(), v6).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    Err(ForwardError {
        port,
        sandbox: t.sandbox.clone(),
        cause: format!(
            "failed to execute portforward in network namespace \"{}\": failed to connect to localhost:{port} inside namespace \"{}\", IPv4: dial tcp4 {v4}: connect: {} IPv6 dial tcp6 {v6}: connect: {} ",
            t.netns.display(),
            t.sandbox,
            go_errno(&e4),
            go_errno(&e6),
        ),
    })
}

/// Forward one connection: connect to `port` in the pod and copy both ways until both sides are
/// done. A connection reset or broken pipe after connecting ends the copy without an error.
pub async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    t: &Target,
    port: u16,
    mut stream: S,
) -> Result<(), ForwardError> {
    let mut conn = connect(t, port).await?;
    match tokio::io::copy_bidirectional(&mut stream, &mut conn).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => Ok(()),
        Err(e) => Err(ForwardError { port, sandbox: t.sandbox.clone(), cause: e.to_string() }),
    }
}

/// Ports from the `port`/`ports` query parameters (each may be a comma-separated list), checked as
/// kubelet checks them.
pub fn parse_ports(values: &[&str]) -> Result<Vec<u16>, String> {
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut out = vec![];
    for v in values {
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            let n: u16 = p.parse().map_err(|_| format!("unable to parse {v:?} as a port"))?;
            if n < 1 {
                return Err(format!("port {v:?} must be > 0"));
            }
            out.push(n);
        }
    }
    Ok(out)
}

pub mod ws;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_query() {
        assert_eq!(parse_ports(&["80", "81,82"]).unwrap(), vec![80, 81, 82]);
        assert!(parse_ports(&[]).unwrap_err().contains("is required"));
        assert!(parse_ports(&[""]).unwrap_err().contains("cannot be empty"));
        assert!(parse_ports(&["0"]).unwrap_err().contains("must be > 0"));
        assert!(parse_ports(&["70000"]).unwrap_err().contains("unable to parse"));
        assert!(parse_ports(&["8a"]).unwrap_err().contains("unable to parse"));
    }

    #[test]
    fn errno_as_go_prints_it() {
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(go_errno(&e), "connection refused");
    }

    #[tokio::test]
    async fn refused_port_reads_like_kubelet() {
        // This process's own network namespace; nothing listens on a port we just freed.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let t = Target { sandbox: "sb".into(), netns: "/proc/self/ns/net".into() };
        let e = connect(&t, port).await.unwrap_err().to_string();
        let want = format!(
            "error forwarding port {port} to pod sb, uid : failed to execute portforward in network namespace \"/proc/self/ns/net\": failed to connect to localhost:{port} inside namespace \"sb\", IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 [::1]:{port}: connect: "
        );
        assert!(e.starts_with(&want), "{e}");
    }
}
