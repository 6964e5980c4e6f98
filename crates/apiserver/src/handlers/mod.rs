//! The REST verbs over the store, one module per verb, and what their writes share: request
//! body parsing, kind checks, field validation, warnings and JSON responses.

pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod get;
pub(crate) mod list;
pub(crate) mod patch;
pub(crate) mod subresources;
pub(crate) mod update;
pub(crate) mod watch;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::objects;
use crate::registry::Resource;
use crate::rest::Params;
use crate::status::{ApiError, ApiResult};

pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    json_bytes_response(code, serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) fn json_bytes_response(code: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response")
}

pub(crate) fn wants_table(h: &HeaderMap) -> bool {
    h.get_all(http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("as=Table"))
}

// ---------------------------------------------------------------------------------------------
// Writes

/// How a write was asked for, for managedFields and validation.
pub(crate) struct WriteCtx<'a> {
    pub(crate) p: &'a Params,
    pub(crate) manager: String,
    pub(crate) warnings: Vec<String>,
}

pub(crate) fn manager_of(p: &Params, headers: &HeaderMap) -> String {
    if let Some(m) = &p.field_manager {
        return m.clone();
    }
    let ua = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    // Upstream uses the user agent's first token (e.g. "kubectl-client-side-apply" or "kubectl").
    ua.split('/').next().unwrap_or("unknown").to_string()
}

pub(crate) fn parse_input(r: &Resource, body: &[u8], headers: &HeaderMap) -> ApiResult<(Value, Vec<String>)> {
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media == crate::protobuf::MEDIA_TYPE {
        let v = crate::protobuf::decode(body).map_err(ApiError::bad_request)?;
        return Ok((v, Vec::new()));
    }
    if !media.is_empty()
        && !matches!(media, "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml" | "*/*")
    {
        tracing::debug!(content_type = ct, "unsupported request media type");
        return Err(ApiError::new(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml".to_string()));
    }
    let (v, dups) = objects::decode_body(body, ct).map_err(ApiError::bad_request)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml".to_string()));
    }
    let _ = r;
    Ok((v, dups))
}

pub(crate) fn check_kind(r: &Resource, v: &mut Value) -> ApiResult<()> {
    let av = r.api_version();
    match v.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => v["apiVersion"] = json!(av),
        Some(a) if a == av => {}
        Some(a) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({a}) does not match the expected API version ({av})"
            )))
        }
    }
    match v.get("kind").and_then(Value::as_str) {
        None | Some("") => v["kind"] = json!(r.kind),
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )))
        }
    }
    Ok(())
}

/// Typed round trip plus field validation as the request asked for.
pub(crate) fn normalize_validated(
    r: &Resource,
    input: &Value,
    dups: &[String],
    ctx: &mut WriteCtx<'_>,
) -> ApiResult<Value> {
    let norm = objects::normalize(r, input).map_err(|e| ApiError::bad_request(format!("{} in body: {e}", r.kind)))?;
    check_fields(input, &norm, dups, ctx)?;
    Ok(norm)
}

/// `fieldValidation`: duplicate fields and fields the typed decoder dropped are an error (Strict),
/// a warning (Warn, the default) or nothing (Ignore).
pub(crate) fn check_fields(input: &Value, norm: &Value, dups: &[String], ctx: &mut WriteCtx<'_>) -> ApiResult<()> {
    let mode = ctx.p.field_validation.as_deref().unwrap_or("Warn");
    if mode == "Ignore" {
        return Ok(());
    }
    let mut problems: Vec<String> = dups.iter().map(|d| format!("json: duplicate field \"{d}\"")).collect();
    problems.extend(objects::unknown_fields(input, norm).into_iter().map(|f| format!("unknown field \"{f}\"")));
    if problems.is_empty() {
        return Ok(());
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!("strict decoding error: {}", problems.join(", "))));
    }
    ctx.warnings.extend(problems);
    Ok(())
}

pub(crate) fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(h) = http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            resp.headers_mut().append("warning", h);
        }
    }
    resp
}
