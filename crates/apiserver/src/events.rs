//! events.k8s.io/v1 Events, served over the core v1 Events' storage: every request is turned
//! into one on core `events` and every answer (object, list, watch event, Status) back, with
//! upstream's field conversion (`involvedObject`<->`regarding`, `message`<->`note`,
//! `source`<->`deprecatedSource`, `firstTimestamp`/`lastTimestamp`/`count`<->their
//! `deprecated*` names, `reportingComponent`<->`reportingController`; the rest keep their names),
//! and the strict validation upstream applies to creates through this group.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use yard_api::validation::FieldError;

use crate::registry::{self, Resource};
use crate::rest::{self, Params};
use crate::server::Target;
use crate::status::{ApiError, ApiResult};
use crate::State;

/// (core v1 name, events.k8s.io/v1 name) of every member whose name differs.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn core_events() -> &'static Resource {
    registry::find("", "v1", "events").expect("core events")
}

/// A core v1 Event (or anything else, unchanged) as events.k8s.io/v1 shows it.
pub fn to_events_v1(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if o.get("kind").and_then(Value::as_str) == Some("Event") {
            for (core, ev) in RENAMED {
                if let Some(x) = o.remove(*core) {
                    o.insert(ev.to_string(), x);
                }
            }
            // Not omitempty in events.k8s.io/v1: an event made through core without one shows null.
            o.entry("eventTime").or_insert(Value::Null);
            o.insert("apiVersion".into(), json!("events.k8s.io/v1"));
        } else if o.get("kind").and_then(Value::as_str) == Some("EventList") {
            if let Some(items) = o.get_mut("items").and_then(Value::as_array_mut) {
                for it in items.iter_mut() {
                    *it = to_events_v1(std::mem::take(it));
                }
            }
            o.insert("apiVersion".into(), json!("events.k8s.io/v1"));
        }
    }
    v
}

/// An events.k8s.io/v1 Event as core v1 stores it.
pub fn to_core(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for (core, ev) in RENAMED {
            // A core-only name in an events.k8s.io body is an unknown field there: dropped.
            o.remove(*core);
            if let Some(x) = o.remove(*ev) {
                o.insert(core.to_string(), x);
            }
        }
        if o.get("eventTime").is_some_and(Value::is_null) {
            o.remove("eventTime");
        }
        o.insert("apiVersion".into(), json!("v1"));
    }
    v
}

/// upstream's ValidateEventCreate for events.k8s.io/v1, on the converted (core) event.
fn validate_create(ev: &Value) -> Vec<FieldError> {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("");
    let mut errs = Vec::new();
    let ns = ev.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let set = |k: &str| ev.get(k).is_some_and(|v| !v.is_null());
    if set("eventTime") {
        let inv_ns = ev.pointer("/involvedObject/namespace").and_then(Value::as_str).unwrap_or("");
        if inv_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid("involvedObject.namespace", inv_ns, "does not match event.namespace"));
        }
    } else {
        let inv_ns = ev.pointer("/involvedObject/namespace").and_then(Value::as_str).unwrap_or("");
        if (inv_ns.is_empty() && !ns.is_empty() && ns != "default") || (!inv_ns.is_empty() && inv_ns != ns) {
            errs.push(FieldError::invalid("involvedObject.namespace", inv_ns, "does not match event.namespace"));
        }
    }
    if set("eventTime") {
        let rc = s("reportingComponent");
        if rc.is_empty() {
            errs.push(FieldError::required("reportingController", ""));
        }
        for m in yard_api::naming::is_qualified_name(rc) {
            errs.push(FieldError::invalid("reportingController", rc, m));
        }
        for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            if s(field).is_empty() {
                errs.push(FieldError::required(field, ""));
            }
            if s(field).len() > limit {
                errs.push(FieldError::invalid(field, "", format!("can have at most {limit} characters")));
            }
        }
        if s("message").len() > 1024 {
            errs.push(FieldError::invalid("message", "", "can have at most 1024 characters"));
        }
    }
    if let Some(series) = ev.get("series").filter(|v| !v.is_null()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errs.push(FieldError::invalid("series.count", "", "should be at least 2"));
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    if !set("eventTime") {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = s("type");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid("type", "", format!("has invalid value: {ty}")));
    }
    for f in ["firstTimestamp", "lastTimestamp"] {
        if set(f) {
            errs.push(FieldError::invalid(f, "", "needs to be unset"));
        }
    }
    if ev.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
        errs.push(FieldError::invalid("count", "", "needs to be unset"));
    }
    let src = |k: &str| ev.pointer(&format!("/source/{k}")).and_then(Value::as_str).unwrap_or("").to_string();
    if !src("component").is_empty() || !src("host").is_empty() {
        errs.push(FieldError::invalid("source", "", "needs to be unset"));
    }
    errs
}

fn json_headers(mut h: HeaderMap) -> HeaderMap {
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

/// The events.k8s.io body of a request, as core JSON.
fn core_body(r: &Resource, headers: &HeaderMap, body: &[u8]) -> ApiResult<Bytes> {
    let (mut v, _) = rest::parse_input(r, body, headers)?;
    rest::check_kind(r, &mut v)?;
    Ok(Bytes::from(serde_json::to_vec(&to_core(v)).unwrap_or_default()))
}

/// Serve one events.k8s.io/v1 request.
pub async fn dispatch(
    state: Arc<State>,
    method: Method,
    t: Target,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = t.resource;
    let core = Target { resource: core_events(), ..t.clone() };
    let watch = p.watch;
    let res: ApiResult<Response> = async {
        let resp = match (&method, t.name.as_deref()) {
            (&Method::POST, None) => {
                let b = core_body(r, &headers, &body)?;
                let mut ev: Value = serde_json::from_slice(&b).unwrap_or_default();
                if let (Some(ns), Some(m)) =
                    (t.namespace.as_deref(), ev.get_mut("metadata").and_then(Value::as_object_mut))
                {
                    m.entry("namespace").or_insert_with(|| json!(ns));
                }
                let errs = validate_create(&ev);
                if !errs.is_empty() {
                    let name = ev.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                    return Err(ApiError::invalid(r, name, &errs));
                }
                rest::dispatch(state, method, core, p, json_headers(headers), b).await
            }
            (&Method::PUT, Some(_)) => {
                let b = core_body(r, &headers, &body)?;
                rest::dispatch(state, method, core, p, json_headers(headers), b).await
            }
            (&Method::PATCH, Some(name)) => patch(&state, &t, core, p, headers, &body, name).await?,
            _ => rest::dispatch(state, method, core, p, headers, body).await,
        };
        Ok(resp)
    }
    .await;
    match res {
        Ok(resp) if watch => convert_stream(resp),
        Ok(resp) => convert_response(resp).await,
        Err(e) => e.into_response(),
    }
}

/// A patch of the events.k8s.io form of the stored event, written back as an update with the
/// read's resourceVersion (a concurrent write gives the usual 409).
async fn patch(
    state: &Arc<State>,
    t: &Target,
    core: Target,
    p: Params,
    headers: HeaderMap,
    body: &[u8],
    name: &str,
) -> ApiResult<Response> {
    use yard_api::patch::{json_merge_patch, json_patch, strategic_merge, PatchType};
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let pt = PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media(ct))?;
    let current = to_events_v1(rest::get_obj(state, core_events(), t.namespace.as_deref(), name).await?);
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let patched = match pt {
        PatchType::Json => json_patch(&current, &doc).map_err(|e| ApiError::new(e.code(), "Invalid", e.to_string()))?,
        PatchType::Merge => json_merge_patch(&current, &doc),
        PatchType::Strategic => strategic_merge(&current, &doc, &yard_api::patch::schema_for("events.k8s.io/v1", "Event"))
            .map_err(|e| ApiError::new(e.code(), "Invalid", e.to_string()))?,
        PatchType::Apply => {
            return Err(ApiError::unsupported_media(
                "application/apply-patch+yaml (server-side apply of events.events.k8s.io is not supported; use the core v1 events API)",
            ))
        }
    };
    let mut out = to_core(patched);
    if out.pointer("/metadata/resourceVersion").is_none() {
        out["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    }
    let b = Bytes::from(serde_json::to_vec(&out).unwrap_or_default());
    let put = Params { force: false, ..p };
    Ok(rest::dispatch(state.clone(), Method::PUT, core, put, json_headers(headers), b).await)
}

/// Convert a buffered JSON answer of the core handler to events.k8s.io/v1.
async fn convert_response(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let is_json = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let bytes = match http_body_util::BodyExt::collect(body).await {
        Ok(c) => c.to_bytes(),
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    if !is_json {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Bytes::from(serde_json::to_vec(&status_for_events(to_events_v1(v))).unwrap_or_default()),
        Err(_) => bytes,
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

/// A Status about core `events` names the events.k8s.io resource instead.
fn status_for_events(mut v: Value) -> Value {
    if v.get("kind").and_then(Value::as_str) == Some("Status") {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            let m = m.replacen("events \"", "events.events.k8s.io \"", 1);
            v["message"] = json!(m);
        }
        if v.pointer("/details/kind").and_then(Value::as_str) == Some("events") {
            v["details"]["group"] = json!("events.k8s.io");
        }
    }
    v
}

/// Convert each line of a watch stream (`{"type", "object"}` per line).
fn convert_stream(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let mut pending: Vec<u8> = Vec::new();
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        pending.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            match serde_json::from_slice::<Value>(&line) {
                Ok(mut ev) => {
                    if let Some(obj) = ev.get_mut("object") {
                        let o = std::mem::take(obj);
                        let o = if o.get("kind").and_then(Value::as_str) == Some("Event") {
                            to_events_v1(o)
                        } else {
                            status_for_events(o)
                        };
                        *obj = o;
                    }
                    out.extend_from_slice(&serde_json::to_vec(&ev).unwrap_or_default());
                    out.push(b'\n');
                }
                Err(_) => out.extend_from_slice(&line),
            }
        }
        Ok::<_, axum::Error>(Bytes::from(out))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_round_trips_and_renames_as_upstream() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "message": "hello",
            "source": {"component": "kubelet", "host": "n1"}, "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:01Z", "count": 3, "reportingComponent": "ctl", "reason": "R", "type": "Normal"});
        let ev = to_events_v1(core.clone());
        assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
        assert_eq!(ev["regarding"]["name"], "p");
        assert_eq!(ev["note"], "hello");
        assert_eq!(ev["deprecatedSource"]["host"], "n1");
        assert_eq!(ev["deprecatedCount"], 3);
        assert_eq!(ev["reportingController"], "ctl");
        assert!(ev.get("message").is_none() && ev.get("involvedObject").is_none());
        assert_eq!(ev["eventTime"], Value::Null);
        assert_eq!(to_core(ev), core);
    }

    #[test]
    fn strict_create_validation_names_upstreams_fields() {
        let ev = to_core(
            json!({"metadata": {"name": "e", "namespace": "default"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "type": "Normal", "reason": "R", "action": "A", "reportingInstance": "i"}),
        );
        let errs = validate_create(&ev);
        // As upstream: required, and the empty name's two qualified-name messages.
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0].to_string(), "reportingController: Required value");
        assert!(errs.iter().all(|e| e.field == "reportingController"), "{errs:?}");
        let ev = to_core(
            json!({"metadata": {"name": "e", "namespace": "default"}, "type": "Odd", "reportingController": "c"}),
        );
        let msgs: Vec<String> = validate_create(&ev).iter().map(|e| e.to_string()).collect();
        assert!(msgs.contains(&"eventTime: Required value".to_string()), "{msgs:?}");
        assert!(msgs.contains(&"type: Invalid value: \"\": has invalid value: Odd".to_string()), "{msgs:?}");
    }
}
