//! The `serviceaccounts/token` subresource: authentication.k8s.io/v1 TokenRequest, as upstream's
//! TokenREST creates it (audiences defaulted to the API server's, expirationSeconds 3600 by
//! default and at least 10 minutes, an optional bound Pod, Secret or Node checked to exist with
//! the given uid; a pod-bound token asked for 3607 s is issued for a year with `warnafter`).

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use yard_api::validation::FieldError;

use super::serviceaccount::{BoundRef, TokenClaims, EXTENDED_EXPIRATION_SECONDS, WARN_ONLY_EXPIRATION_SECONDS};
use crate::codec::from_kv;
use crate::handlers::get::get_kv;
use crate::handlers::json_response;
use crate::registry::{self, Resource};
use crate::status::{ApiError, ApiResult};
use crate::State;

/// Upstream's bounds on `spec.expirationSeconds`.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// TokenRequest as an error message names it (`TokenRequest.authentication.k8s.io`).
static TOKEN_REQUEST: Resource = Resource {
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    plural: "tokenrequests",
    singular: "tokenrequest",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    status_subresource: false,
    strategy: &registry::PLAIN,
};

fn core(plural: &str) -> &'static Resource {
    registry::find("", "v1", plural).expect("core resource")
}

fn uid_of(v: &Value) -> String {
    v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string()
}

pub(crate) async fn create(
    state: &State,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let r = &TOKEN_REQUEST;
    let (mut req, _) = crate::rest::parse_input(r, body, headers)?;
    tracing::debug!(request = %req, "TokenRequest");
    match req.get("apiVersion").and_then(Value::as_str) {
        None | Some("") | Some("authentication.k8s.io/v1") => {}
        Some(a) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({a}) does not match the expected API version (authentication.k8s.io/v1)"
            )))
        }
    }
    let meta = |k: &str| req.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).unwrap_or("").to_string();
    let (body_name, body_ns) = (meta("name"), meta("namespace"));
    if !body_name.is_empty() && body_name != name {
        let e =
            FieldError::invalid("metadata.name", body_name.clone(), "must match the service account name if specified");
        return Err(ApiError::invalid(r, name, &[e]));
    }
    if !body_ns.is_empty() && body_ns != ns {
        let e = FieldError::invalid(
            "metadata.namespace",
            body_ns.clone(),
            "must match the service account namespace if specified",
        );
        return Err(ApiError::invalid(r, name, &[e]));
    }
    let sa = from_kv(&get_kv(state, core("serviceaccounts"), Some(ns), name).await?)?;
    let mut audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = state.sa.issuer.api_audiences.clone();
    }
    let expiration = match req.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    let now = jiff::Timestamp::now();
    let mut errs = Vec::new();
    if expiration < MIN_EXPIRATION_SECONDS {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(r, "", &errs));
    }
    let mut claims = TokenClaims {
        namespace: ns.to_string(),
        sa_name: name.to_string(),
        sa_uid: uid_of(&sa),
        audiences: audiences.clone(),
        jti: crate::objects::new_uid(),
        ..Default::default()
    };
    let bound = req.pointer("/spec/boundObjectRef").filter(|v| v.is_object()).cloned();
    if let Some(b) = &bound {
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (api_version, kind, bname, buid) = (s("apiVersion"), s("kind"), s("name"), s("uid"));
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let (got, gvk_kind) = match (group, kind.as_str()) {
            ("", "Pod") => {
                let pod = from_kv(&get_kv(state, core("pods"), Some(ns), &bname).await?)?;
                let pod_sa = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("");
                if pod_sa != name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {} to pod running with different serviceaccount name.",
                        yard_api::validation::go_quote(name)
                    )));
                }
                claims.pod = Some(BoundRef { kind: "Pod".into(), name: bname.clone(), uid: uid_of(&pod) });
                if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                    match state.store.get(&core("nodes").key(None, node)).await? {
                        Some(kv) => {
                            let n = from_kv(&kv)?;
                            claims.node = Some(BoundRef { kind: "Node".into(), name: node.into(), uid: uid_of(&n) });
                        }
                        None => tracing::debug!(node, "the bound pod's node was not found; no node claim"),
                    }
                }
                (pod, "Pod")
            }
            ("", "Secret") => {
                let secret = from_kv(&get_kv(state, core("secrets"), Some(ns), &bname).await?)?;
                claims.secret = Some(BoundRef { kind: "Secret".into(), name: bname.clone(), uid: uid_of(&secret) });
                (secret, "Secret")
            }
            ("", "Node") => {
                let node = from_kv(&get_kv(state, core("nodes"), None, &bname).await?)?;
                claims.node = Some(BoundRef { kind: "Node".into(), name: bname.clone(), uid: uid_of(&node) });
                (node, "Node")
            }
            _ => {
                let gvk = match api_version.rsplit_once('/') {
                    Some((g, v)) => format!("{g}/{v}, Kind={kind}"),
                    None => format!("/{api_version}, Kind={kind}"),
                };
                return Err(ApiError::bad_request(format!("cannot bind token to object of type {gvk}")));
            }
        };
        if !buid.is_empty() && buid != uid_of(&got) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {gvk_kind} {}: the UID in the bound object reference ({buid}) does not match the UID in record. The object might have been deleted and then recreated",
                    yard_api::validation::go_quote(&bname)
                ),
            )
            .with_details(json!({"name": bname, "kind": gvk_kind})));
        }
    }
    // Upstream's safe transition for projected tokens: a pod-bound token of the admission
    // plugin's 3607 s, for the API server's audiences, is valid for a year and warns after.
    let mut exp = expiration;
    let kube_audiences = audiences.iter().all(|a| state.sa.issuer.api_audiences.contains(a));
    if claims.pod.is_some() && expiration == WARN_ONLY_EXPIRATION_SECONDS && kube_audiences {
        claims.warn_after = Some(now.as_second() + expiration);
        exp = EXTENDED_EXPIRATION_SECONDS;
    }
    claims.iat = now.as_second();
    claims.nbf = now.as_second();
    claims.exp = now.as_second() + exp;
    let token = state.sa.issuer.issue(&claims);
    let ts = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let expires = now + jiff::SignedDuration::from_secs(expiration);
    let mut spec = json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": bound});
    if bound.is_none() {
        spec.as_object_mut().expect("spec").remove("boundObjectRef");
    }
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts(now)},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": ts(expires)},
    });
    if req.get("metadata").is_none() {
        req["metadata"] = json!({});
    }
    Ok(json_response(StatusCode::CREATED, &out))
}
