//! Rendering of a resource handler's JSON response in the negotiated output (see
//! [`crate::negotiate`]): YAML, protobuf or indented JSON bodies; `PartialObjectMetadata(List)`
//! in place of the objects; a `meta.k8s.io/v1beta1` Table in place of the v1 one; protobuf watch
//! streams of length-prefixed `WatchEvent` frames. The handlers keep writing compact JSON (a Table
//! when asked for one); what they write is re-encoded here, so every path — objects, lists, watch
//! events and `Status` errors — gets the same treatment. A response that is not JSON passes as is.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::negotiate::{Convert, Format, Output};
use crate::protobuf_encode;
use crate::registry::Resource;
use crate::status::ApiError;

/// Whether `out` needs anything beyond the handlers' own JSON.
pub fn needs_render(out: &Output) -> bool {
    out.format != Format::Json
        || out.pretty
        || matches!(&out.convert, Convert::Partial(_) | Convert::PartialList(_))
        || matches!(&out.convert, Convert::Table(v) if v != "v1")
}

/// Re-encode `resp` (the handler's answer for `r`) as `out` asks; `watch` for a watch request.
pub async fn render(resp: Response, out: &Output, r: &'static Resource, watch: bool) -> Response {
    if !needs_render(out) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    if watch && resp.status() == StatusCode::OK {
        return render_watch(resp, out.clone(), r);
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(format!("reading response: {e}")).into_response(),
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        parts.headers.remove(CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(bytes));
    };
    let v = match convert(v, &out.convert, r) {
        Ok(v) => v,
        Err(e) => return encode_response(StatusCode::NOT_ACCEPTABLE, None, &e.to_status(), out),
    };
    let status = parts.status;
    let mut resp = encode_response(status, Some(parts.headers), &v, out);
    *resp.status_mut() = status;
    resp
}

/// The body of `v` in `out`'s format, with its content type; `headers` kept but for the body's.
fn encode_response(status: StatusCode, headers: Option<http::HeaderMap>, v: &Value, out: &Output) -> Response {
    let (body, ct) = match encode_body(v, out) {
        Ok(b) => (b, out.content_type(false)),
        // A body the protobuf schema cannot carry stays JSON, labelled as such.
        Err(_) => (serde_json::to_vec(v).unwrap_or_default(), "application/json"),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    if let Some(h) = headers {
        *resp.headers_mut() = h;
    }
    let h = resp.headers_mut();
    h.remove(CONTENT_LENGTH);
    h.remove(TRANSFER_ENCODING);
    h.insert(CONTENT_TYPE, http::HeaderValue::from_static(ct));
    resp
}

fn encode_body(v: &Value, out: &Output) -> Result<Vec<u8>, String> {
    match out.format {
        Format::Json if out.pretty => serde_json::to_vec_pretty(v).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_vec(v).map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::to_string(&sorted(v.clone())).map(String::into_bytes).map_err(|e| e.to_string()),
        Format::Protobuf => protobuf_encode::encode(v),
    }
}

/// `v` with every object's keys in order, as upstream's JSON-to-YAML conversion prints them.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The Go type name upstream's messages print for an object of `r` (`*core.SecretList`).
fn go_type(r: &Resource, list: bool) -> String {
    let pkg = if r.group.is_empty() { "core" } else { r.group.split('.').next().unwrap_or(r.group) };
    format!("*{pkg}.{}{}", r.kind, if list { "List" } else { "" })
}

fn partial(mut obj: Value, version: &str) -> Value {
    let meta = obj.get_mut("metadata").map(Value::take).unwrap_or_else(|| json!({}));
    json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": meta})
}

fn is_list(v: &Value) -> bool {
    v.get("items").is_some_and(Value::is_array) && v["kind"].as_str().is_some_and(|k| k.ends_with("List"))
}

/// Turn the handler's object `v` into what `c` asks for.
fn convert(v: Value, c: &Convert, r: &Resource) -> Result<Value, ApiError> {
    if v["kind"] == "Status" && v["apiVersion"] == "v1" {
        return Ok(v);
    }
    match c {
        Convert::None => Ok(v),
        Convert::Table(version) => {
            let mut v = v;
            if v["kind"] == "Table" {
                let av = json!(format!("meta.k8s.io/{version}"));
                v["apiVersion"] = av.clone();
                if let Some(rows) = v.get_mut("rows").and_then(Value::as_array_mut) {
                    for row in rows {
                        if row["object"]["kind"] == "PartialObjectMetadata" {
                            row["object"]["apiVersion"] = av.clone();
                        }
                    }
                }
            }
            Ok(v)
        }
        Convert::Partial(version) => {
            if is_list(&v) {
                return Err(ApiError::new(
                    406,
                    "NotAcceptable",
                    format!(
                        "you requested PartialObjectMetadata, but the requested object is a list ({})",
                        go_type(r, true)
                    ),
                ));
            }
            Ok(partial(v, version))
        }
        Convert::PartialList(version) => {
            if !is_list(&v) {
                return Err(ApiError::new(
                    406,
                    "NotAcceptable",
                    format!(
                        "you requested PartialObjectMetadataList, but the requested object is not a list ({})",
                        go_type(r, false)
                    ),
                ));
            }
            let Value::Object(mut m) = v else { unreachable!("a list is an object") };
            let items = match m.remove("items") {
                Some(Value::Array(items)) => items.into_iter().map(|i| partial(i, version)).collect(),
                _ => Vec::new(),
            };
            let meta = m.remove("metadata").unwrap_or_else(|| json!({}));
            let mut out = Map::new();
            out.insert("kind".into(), json!("PartialObjectMetadataList"));
            out.insert("apiVersion".into(), json!(format!("meta.k8s.io/{version}")));
            out.insert("metadata".into(), meta);
            out.insert("items".into(), Value::Array(items));
            Ok(Value::Object(out))
        }
    }
}

/// One watch event of the handler's stream in `out`'s form.
fn watch_event(line: &[u8], out: &Output, r: &Resource) -> Option<Bytes> {
    let mut ev: Value = serde_json::from_slice(line).ok()?;
    let ty = ev["type"].as_str().unwrap_or("").to_string();
    let obj = ev.get_mut("object").map(Value::take).unwrap_or(Value::Null);
    let obj = match &out.convert {
        // A watch of metadata sends each object's metadata, whichever of the two was asked for.
        Convert::Partial(v) | Convert::PartialList(v) if !(obj["kind"] == "Status" && ty == "ERROR") => partial(obj, v),
        Convert::Table(_) => convert(obj, &out.convert, r).ok()?,
        _ => obj,
    };
    if out.format == Format::Protobuf {
        if let Ok(frame) = protobuf_encode::watch_frame(&ty, &obj) {
            return Some(Bytes::from(frame));
        }
    }
    let mut s = serde_json::to_vec(&json!({"type": ty, "object": obj})).ok()?;
    s.push(b'\n');
    Some(Bytes::from(s))
}

/// The handler's newline-delimited JSON watch, re-encoded event by event.
fn render_watch(resp: Response, out: Output, r: &'static Resource) -> Response {
    let ct = out.content_type(true);
    let (mut parts, body) = resp.into_parts();
    let stream = body.into_data_stream();
    let events =
        futures::stream::unfold((stream, Vec::<u8>::new(), out), move |(mut stream, mut buf, out)| async move {
            loop {
                if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if let Some(b) = watch_event(&line[..line.len() - 1], &out, r) {
                        return Some((Ok::<_, std::io::Error>(b), (stream, buf, out)));
                    }
                    continue;
                }
                match stream.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        return Some((Err(std::io::Error::other(e.to_string())), (stream, Vec::new(), out)))
                    }
                    None => return None,
                }
            }
        });
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.insert(CONTENT_TYPE, http::HeaderValue::from_static(ct));
    Response::from_parts(parts, Body::from_stream(events))
}
