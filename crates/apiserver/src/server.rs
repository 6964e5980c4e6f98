//! HTTP plumbing: TLS listener, bearer-token authentication, path parsing and dispatch to the
//! REST handlers, discovery, OpenAPI, health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::auth::{self, Attributes, Decision, UserInfo};
use crate::registry::{self, Resource};
use crate::status::ApiError;
use crate::{discovery, openapi, openapi_v2, rest, State};

/// A parsed resource path.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// Parse `/api/v1/...` and `/apis/<g>/<v>/...` resource paths.
pub fn parse_path(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let nf = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let (ns, rest): (Option<String>, &[&str]) = if rest[0] == "namespaces" && rest.len() >= 3 {
        // namespaces/{ns}/{resource}... unless it is a namespace subresource.
        let r = registry::find(group, version, rest[2]);
        match r {
            Some(r) if r.namespaced => (Some(rest[1].to_string()), &rest[2..]),
            _ if group.is_empty() && (rest[2] == "status" || rest[2] == "finalize") && rest.len() == 3 => (None, rest),
            _ => return Err(nf()),
        }
    } else {
        (None, rest)
    };
    let resource = registry::find(group, version, rest[0]).ok_or_else(nf)?;
    if ns.is_none() && resource.namespaced && rest.len() > 1 {
        // A namespaced resource named without a namespace: only list/watch across namespaces.
        return Err(nf());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return Err(nf());
    }
    if let Some(s) = &sub {
        if !resource.has_sub(s) {
            return Err(nf());
        }
    }
    Ok(Some(Target { resource, namespace: ns, name, sub }))
}

/// Serve HTTPS on `listener` until `shutdown` resolves.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    loop {
        let mut stop = stop_rx.clone();
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(state, peer, req.map(Body::new)).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).await;
        });
    }
}

/// Serve plain HTTP (used for in-namespace listeners that tunnel nothing sensitive, and tests).
pub async fn serve_plain(state: Arc<State>, listener: TcpListener) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(state, peer, req.map(Body::new)).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).await;
        });
    }
}

/// The user of a request's bearer token, if it has a valid one; a refused token is logged (as
/// upstream's "Unable to authenticate the request").
async fn authenticate(state: &State, req: &http::request::Parts) -> Option<UserInfo> {
    let h = req.headers.get(http::header::AUTHORIZATION)?;
    let path = req.uri.path();
    let Some(token) = h.to_str().ok().and_then(auth::bearer_token) else {
        tracing::warn!(%path, "Unable to authenticate the request: invalid bearer token");
        return None;
    };
    match state.authenticate_token(token, &[]).await {
        Ok((u, _)) => Some(u),
        Err(e) => {
            let err = match e {
                auth::serviceaccount::TokenError::NotOurs => "invalid bearer token".to_string(),
                e => e.to_string(),
            };
            tracing::warn!(%path, error = %err, "Unable to authenticate the request");
            None
        }
    }
}

pub async fn handle(state: Arc<State>, _peer: SocketAddr, req: Request) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    // Health endpoints are open, as upstream's default RBAC lets anyone read them.
    let open = matches!(path.as_str(), "/healthz" | "/livez" | "/readyz" | "/version" | "/version/")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/");
    let (parts, body) = req.into_parts();
    let user = authenticate(&state, &parts).await;
    let req = Request::from_parts(parts, body);
    let user = match user {
        Some(u) => u,
        None if open => UserInfo {
            username: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        },
        None => return ApiError::unauthorized().into_response(),
    };
    let user = match auth::impersonate::impersonate(&*state.authz, user, req.headers()) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let (resp, verb, resource) = route(state.clone(), req, user, open).await;
    let code = resp.status().as_u16();
    state.metrics.observe(&verb, &resource, code, started.elapsed());
    resp
}

/// Ask the authorizer about a request; a denial (or no opinion) is upstream's 403.
fn authorize(state: &State, a: &Attributes) -> Result<(), ApiError> {
    let d = state.authz.authorize(a);
    match d.decision {
        Decision::Allow => Ok(()),
        Decision::Deny | Decision::NoOpinion => Err(auth::forbidden(a, &d.reason)),
    }
}

async fn route(state: Arc<State>, req: Request, user: UserInfo, open: bool) -> (Response, String, String) {
    let normalized = crate::request::target::normalize(req.uri().path());
    let path = normalized.path;
    let method = req.method().clone();
    let simple = |v: &str, r: Response| (r, v.to_string(), String::new());
    if !open && parse_path(&path).ok().flatten().is_none() {
        // A non-resource request: authorized by its path.
        let a = Attributes {
            user: user.clone(),
            verb: method.as_str().to_ascii_lowercase(),
            path: path.clone(),
            ..Default::default()
        };
        if let Err(e) = authorize(&state, &a) {
            return simple(method.as_str(), e.into_response());
        }
    }
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return simple("GET", (StatusCode::OK, "ok").into_response()),
        "/version" => return simple("GET", discovery::version()),
        "/metrics" => return simple("GET", state.metrics.render()),
        "/api" => return simple("GET", discovery::api_versions()),
        "/apis" => return simple("GET", discovery::api_groups(&req)),
        "/openapi/v3" => return simple("GET", openapi::root()),
        "/openapi/v2" => return simple("GET", openapi_v2::document(req.headers())),
        "/.well-known/openid-configuration" => {
            return simple("GET", oidc_document(state.sa.issuer.openid_configuration(), "application/json"))
        }
        "/openid/v1/jwks" => return simple("GET", oidc_document(state.sa.issuer.jwks(), "application/jwk-set+json")),
        _ => {}
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3/") {
        return simple("GET", openapi::group_version(gv));
    }
    if path.starts_with("/healthz/") || path.starts_with("/livez/") || path.starts_with("/readyz/") {
        return simple("GET", (StatusCode::OK, "ok").into_response());
    }
    if let Some(r) = discovery::resource_list(&path) {
        return simple("GET", r);
    }
    let mut target = match parse_path(&path) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return simple(
                "GET",
                ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response(),
            )
        }
        Err(e) => return simple("GET", e.into_response()),
    };
    let resource = target.resource.plural.to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let mut params = rest::Params::parse(&query);
    if normalized.legacy_watch {
        if let Err(e) = legacy_watch(&method, &mut target, &mut params) {
            return (e.into_response(), "WATCH".into(), resource);
        }
    }
    let attrs = Attributes {
        user: user.clone(),
        verb: auth::resource_verb(&method, target.name.is_some(), params.watch).to_string(),
        resource_request: true,
        api_group: target.resource.group.to_string(),
        api_version: target.resource.version.to_string(),
        resource: resource.clone(),
        subresource: target.sub.clone().unwrap_or_default(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
        path: path.clone(),
    };
    if let Err(e) = authorize(&state, &attrs) {
        return (e.into_response(), rest::verb_name(&method, &target, &params), resource);
    }
    // Streaming and upgrades go straight through.
    if matches!(target.sub.as_deref(), Some("exec" | "attach" | "portforward" | "log")) {
        let verb = if target.sub.as_deref() == Some("log") { "GET" } else { "CONNECT" };
        return (crate::nodeproxy::forward(state, &target, req).await, verb.into(), resource);
    }
    let headers = req.headers().clone();
    let body = if method == Method::GET || method == Method::HEAD {
        Bytes::new()
    } else {
        match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(e) => return (e.into_response(), method.to_string(), resource),
        }
    };
    if let Err(e) = crate::request::params::check(&method, &target, &query, &params, &headers, body.is_empty()) {
        return (e.into_response(), rest::verb_name(&method, &target, &params), resource);
    }
    let verb = rest::verb_name(&method, &target, &params);
    // Reviews and events.k8s.io answer JSON (client-go always accepts it next to protobuf).
    if target.resource.create_only() {
        return (auth::reviews::handle(&state, &user, &method, &target, &headers, &body).await, verb, resource);
    }
    if target.resource.group == "events.k8s.io" {
        return (crate::events::dispatch(state, method, target, params, headers, body).await, verb, resource);
    }
    let watch = method == Method::GET && target.name.is_none() && params.watch;
    let output = match crate::negotiate::negotiate(&headers, &query, watch) {
        Ok(o) => o,
        Err(e) => return (e.into_response(), verb, resource),
    };
    let r = target.resource;
    let mut headers = headers;
    // The handlers see the negotiated choice: a Table, or their plain JSON.
    let accept = match &output.convert {
        crate::negotiate::Convert::Table(_) => "application/json;as=Table;g=meta.k8s.io;v=v1",
        _ => "application/json",
    };
    headers.insert(http::header::ACCEPT, http::HeaderValue::from_static(accept));
    let resp = auth::REQUEST_USER.scope(user, rest::dispatch(state, method, target, params, headers, body)).await;
    (crate::render::render(resp, &output, r, watch).await, verb, resource)
}

/// An OIDC discovery document, cacheable for an hour as upstream serves them.
fn oidc_document(v: serde_json::Value, content_type: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "public, max-age=3600")
        .body(Body::from(serde_json::to_vec(&v).unwrap_or_default()))
        .expect("response")
}

/// A legacy `/watch/` path: a watch of the collection, or of one object as upstream serves it
/// (the collection filtered by `metadata.name`).
fn legacy_watch(method: &Method, target: &mut Target, params: &mut rest::Params) -> Result<(), ApiError> {
    let nf = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    if *method != Method::GET || target.sub.is_some() {
        return Err(nf());
    }
    params.watch = true;
    if let Some(name) = target.name.take() {
        let term = format!("metadata.name={name}");
        match params.field_selector.as_deref() {
            None => params.field_selector = Some(term),
            Some(fs) if fs.split(',').any(|t| t.trim() == term || t.trim() == format!("metadata.name=={name}")) => {}
            Some(_) => return Err(ApiError::bad_request("fieldSelector metadata.name doesn't match requested name")),
        }
    }
    Ok(())
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    // A declared length over the limit is refused before a byte is read, so a client that sent
    // `Expect: 100-continue` gets the 413 instead of a 100 and then a closed connection.
    if axum::body::HttpBody::size_hint(&body).lower() > crate::objects::MAX_BODY as u64 {
        return Err(ApiError::too_large());
    }
    let limited = http_body_util::Limited::new(body, crate::objects::MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError::too_large()),
        Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
    }
}
