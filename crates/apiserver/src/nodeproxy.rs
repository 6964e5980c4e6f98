//! Streaming subresources (`pods/exec`, `pods/attach`, `pods/portforward`, `pods/log`) are served
//! by the node agent, as kubelet serves them: the request, upgrade headers and all, is forwarded to
//! the agent of the pod's node and the two streams are joined.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::registry;
use crate::rest::get_obj;
use crate::server::Target;
use crate::status::ApiError;
use crate::State;

/// Annotation on a Node naming where its agent's exec/log server listens.
pub const AGENT_ENDPOINT_ANNOTATION: &str = "yard.dev/agent-endpoint";

async fn agent_address(state: &State, t: &Target) -> Result<String, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let pod = get_obj(state, t.resource, t.namespace.as_deref(), name).await?;
    let node = pod["spec"]["nodeName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let nodes = registry::find("", "v1", "nodes").expect("nodes");
    let n = get_obj(state, nodes, None, node).await?;
    if let Some(ep) = n["metadata"]["annotations"][AGENT_ENDPOINT_ANNOTATION].as_str() {
        return Ok(ep.to_string());
    }
    let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_i64().unwrap_or(10250);
    let ip = n["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .ok_or_else(|| ApiError::internal(format!("node {node} has no InternalIP")))?;
    Ok(format!("{ip}:{port}"))
}

pub async fn forward(state: Arc<State>, t: &Target, mut req: Request) -> Response {
    let addr = match agent_address(&state, t).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let stream = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => return ApiError::internal(format!("error dialing backend: dial tcp {addr}: {e}")).into_response(),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return ApiError::internal(format!("error dialing backend: {e}")).into_response(),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut out = http::Request::builder()
        .method(req.method())
        .uri(req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    for (k, v) in req.headers() {
        if k == http::header::AUTHORIZATION || k == http::header::HOST {
            continue;
        }
        out = out.header(k, v);
    }
    out = out.header(http::header::HOST, addr.as_str());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let out = match out.body(http_body_util::Full::new(body)) {
        Ok(o) => o,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return ApiError::internal(format!("error talking to node agent: {e}")).into_response(),
    };
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let agent_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(c), Ok(a)) = (client_upgrade.await, agent_upgrade.await) else { return };
            let mut c = TokioIo::new(c);
            let mut a = TokioIo::new(a);
            let _ = tokio::io::copy_bidirectional(&mut c, &mut a).await;
        });
        let mut builder = Response::builder().status(http::StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            builder = builder.header(k, v);
        }
        return builder.body(Body::empty()).expect("response");
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(body))
}
