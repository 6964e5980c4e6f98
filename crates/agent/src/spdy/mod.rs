//! SPDY/3.1 as Kubernetes streaming clients speak it (client-go over moby/spdystream, used by
//! kubectl exec/attach before 1.30 and by port-forward before 1.31): the frame codec
//! ([`frame`]), header-block compression with zlib and the SPDY/3 dictionary ([`headers`]), and a
//! server-side session that multiplexes client-opened streams over one upgraded HTTP/1.1
//! connection ([`session`]). Exec/attach and port-forward on top live in `spdy_exec` and
//! `spdy_portforward`.

pub mod frame;
pub mod headers;
pub mod session;

use axum::http::{HeaderMap, HeaderValue};

/// The HTTP `Upgrade` token of the protocol.
pub const UPGRADE_TOKEN: &str = "SPDY/3.1";
/// Request and response header carrying the stream protocol negotiation.
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// Response header listing the server's protocols when negotiation fails.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";

/// Whether the request asks for a SPDY/3.1 upgrade (`Connection: Upgrade`, `Upgrade: SPDY/3.1`).
pub fn is_spdy_upgrade(h: &HeaderMap) -> bool {
    let has_token = |name: &str, want: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    has_token("connection", "upgrade") && has_token("upgrade", UPGRADE_TOKEN)
}

/// The client's requested stream protocols, in its order of preference (repeated headers and
/// comma-separated values both count, as upstream's `httpstream.Handshake` reads them).
pub fn client_protocols(h: &HeaderMap) -> Vec<String> {
    h.get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Upstream's negotiation: the first of the client's protocols the server supports. `Ok(None)`
/// when the client asked for none (an old client). `Err` carries upstream's message.
pub fn negotiate(h: &HeaderMap, server: &[&str]) -> Result<Option<String>, String> {
    let client = client_protocols(h);
    if client.is_empty() {
        return Ok(None);
    }
    if let Some(p) = client.iter().find(|c| server.contains(&c.as_str())) {
        return Ok(Some(p.clone()));
    }
    Err(format!(
        "unable to upgrade: unable to negotiate protocol: client supports {}, server supports {}",
        go_list(&client),
        go_list(&server.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    ))
}

fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// The 101 response of an accepted upgrade.
pub fn switching_protocols(protocol: Option<&str>) -> axum::response::Response {
    let mut r = axum::response::Response::new(axum::body::Body::empty());
    *r.status_mut() = axum::http::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    h.insert("upgrade", HeaderValue::from_static(UPGRADE_TOKEN));
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert(PROTOCOL_HEADER, p);
    }
    r
}

/// The 403 of a failed protocol negotiation (upstream's text, plain, with the accepted list).
pub fn negotiation_failed(message: String, server: &[&'static str]) -> axum::response::Response {
    let mut r = axum::response::Response::new(axum::body::Body::from(message));
    *r.status_mut() = axum::http::StatusCode::FORBIDDEN;
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    for p in server {
        h.append(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(p));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let mut h = HeaderMap::new();
        assert_eq!(negotiate(&h, &["v4.channel.k8s.io"]), Ok(None));
        h.append(PROTOCOL_HEADER, HeaderValue::from_static("v9.channel.k8s.io"));
        h.append(PROTOCOL_HEADER, HeaderValue::from_static("v3.channel.k8s.io, v2.channel.k8s.io"));
        assert_eq!(negotiate(&h, &["v4.channel.k8s.io", "v3.channel.k8s.io"]), Ok(Some("v3.channel.k8s.io".into())));
        let e = negotiate(&h, &["portforward.k8s.io"]).unwrap_err();
        assert_eq!(
            e,
            "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io v3.channel.k8s.io \
             v2.channel.k8s.io], server supports [portforward.k8s.io]"
        );
        let mut u = HeaderMap::new();
        u.insert("connection", HeaderValue::from_static("keep-alive, Upgrade"));
        u.insert("upgrade", HeaderValue::from_static("spdy/3.1"));
        assert!(is_spdy_upgrade(&u));
        u.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(!is_spdy_upgrade(&u));
    }
}
