//! The REST verbs over the store: get, list, watch, create, update, patch, delete and
//! deletecollection, with the status/scale/binding/finalize subresources, Table output,
//! dry-run, field validation and graceful deletion as upstream implements them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use yard_api::selector::LabelSelector;
use yard_store::{EventKind, KeyValue, Op, StoreError};

use crate::consistency;
use crate::mirror::Seen;
use crate::objects::{self, meta_mut, meta_str, name_of};
use crate::registry::{self, Resource};
use crate::request::params::query_bool;
use crate::server::Target;
use crate::status::{ApiError, ApiResult};
use crate::State;

/// Query parameters upstream accepts on resource paths.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub dry_run: bool,
    /// Every `dryRun` value as given (upstream validates that each is `All`).
    pub dry_run_values: Vec<String>,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
    pub force: bool,
    /// `force` was given at all (forbidden on a non-apply patch).
    pub force_given: bool,
    pub propagation_policy: Option<String>,
    pub grace_period: Option<i64>,
    pub orphan_dependents: Option<bool>,
    pub include_object: Option<String>,
}

impl Params {
    pub fn parse(q: &str) -> Self {
        let mut p = Params::default();
        for (k, v) in form_urlencoded(q) {
            match k.as_str() {
                "labelSelector" => p.label_selector = Some(v).filter(|s| !s.is_empty()),
                "fieldSelector" => p.field_selector = Some(v).filter(|s| !s.is_empty()),
                "limit" => p.limit = v.parse().ok().filter(|n| *n > 0),
                "continue" => p.continue_token = Some(v).filter(|s| !s.is_empty()),
                "watch" => p.watch = query_bool(&v),
                "resourceVersion" => p.resource_version = Some(v),
                "resourceVersionMatch" => p.resource_version_match = Some(v),
                "timeoutSeconds" => p.timeout_seconds = v.parse().ok(),
                "allowWatchBookmarks" => p.allow_bookmarks = query_bool(&v),
                "sendInitialEvents" => p.send_initial_events = Some(query_bool(&v)),
                "dryRun" => {
                    p.dry_run = v == "All";
                    p.dry_run_values.push(v);
                }
                "fieldManager" => p.field_manager = Some(v),
                "fieldValidation" => p.field_validation = Some(v),
                "force" => {
                    p.force = query_bool(&v);
                    p.force_given = true;
                }
                "propagationPolicy" => p.propagation_policy = Some(v),
                "gracePeriodSeconds" => p.grace_period = v.parse().ok(),
                "orphanDependents" => p.orphan_dependents = Some(query_bool(&v)),
                "includeObject" => p.include_object = Some(v),
                _ => {}
            }
        }
        p
    }
}

pub fn form_urlencoded(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(c) => {
                        out.push(c);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The verb name used in metrics (upstream's apiserver_request_total labels).
pub fn verb_name(m: &Method, t: &Target, p: &Params) -> String {
    match *m {
        Method::GET if t.name.is_none() => {
            if p.watch {
                "WATCH"
            } else {
                "LIST"
            }
        }
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => {
            if p.force || p.field_manager.is_some() {
                "APPLY"
            } else {
                "PATCH"
            }
        }
        Method::DELETE if t.name.is_none() => "DELETECOLLECTION",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
    .to_string()
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    json_bytes_response(code, serde_json::to_vec(v).unwrap_or_default())
}

fn json_bytes_response(code: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response")
}

fn wants_table(h: &HeaderMap) -> bool {
    h.get_all(http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("as=Table"))
}

/// Decode a stored value and stamp its resourceVersion.
pub fn from_kv(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("stored object {}: {e}", kv.key)))?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

/// The stored JSON of `kv` with `"resourceVersion"` first in its top-level metadata: what
/// `from_kv` would print, without building the object. (Falls back to `from_kv` for a value
/// without a metadata object, which the API server never stores.)
fn stored_with_revision(kv: &KeyValue) -> Vec<u8> {
    let b = &kv.value[..];
    let Some(at) = metadata_body_offset(b) else {
        return from_kv(kv).map(|v| serde_json::to_vec(&v).unwrap_or_default()).unwrap_or_else(|_| b.to_vec());
    };
    let rv = kv.mod_revision.to_string();
    let mut out = Vec::with_capacity(b.len() + rv.len() + 22);
    out.extend_from_slice(&b[..at]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.as_bytes());
    out.push(b'"');
    if b[at..].iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&b[at..]);
    out
}

/// The offset just inside the `{` of the top-level `"metadata"` member of a JSON object.
fn metadata_body_offset(b: &[u8]) -> Option<usize> {
    let (mut depth, mut i) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                // Only a key is followed by ':'.
                if depth == 1 && b.get(start..i) == Some(b"metadata".as_slice()) {
                    let mut j = i + 1;
                    let skip = |j: &mut usize| {
                        while b.get(*j).is_some_and(|c| c.is_ascii_whitespace()) {
                            *j += 1;
                        }
                    };
                    skip(&mut j);
                    if b.get(j) == Some(&b':') {
                        j += 1;
                        skip(&mut j);
                        return (b.get(j) == Some(&b'{')).then_some(j + 1);
                    }
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// A stored object without `metadata.managedFields`, skipped while parsing: what a Table row
/// needs (its printers never read them, and they are a large share of each object's bytes).
fn from_kv_lean(kv: &KeyValue) -> ApiResult<Value> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Obj {
        top: bool,
    }
    impl<'de> Visitor<'de> for Obj {
        type Value = serde_json::Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(k) = m.next_key::<String>()? {
                if self.top && k == "metadata" {
                    let meta = m.next_value_seed(Obj { top: false })?;
                    out.insert(k, Value::Object(meta));
                } else if !self.top && k == "managedFields" {
                    m.next_value::<IgnoredAny>()?;
                } else {
                    out.insert(k, m.next_value()?);
                }
            }
            Ok(out)
        }
    }
    impl<'de> DeserializeSeed<'de> for Obj {
        type Value = serde_json::Map<String, Value>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(&kv.value);
    let map = Obj { top: true }
        .deserialize(&mut de)
        .map_err(|e| ApiError::internal(format!("stored object {}: {e}", kv.key)))?;
    let mut v = Value::Object(map);
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

/// What a client gets back for an object just written as `encode(obj)` at `revision`: the same
/// as `from_kv` of the stored bytes, without parsing them again.
fn with_revision(obj: &Value, revision: i64) -> Value {
    into_revision(obj.clone(), revision)
}

/// [`with_revision`] of an object the caller is done with (no copy).
fn into_revision(mut v: Value, revision: i64) -> Value {
    let m = meta_mut(&mut v);
    m.remove("selfLink");
    m.insert("resourceVersion".into(), json!(revision.to_string()));
    v
}

fn encode(v: &Value) -> Bytes {
    let stamped = v
        .get("metadata")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key("resourceVersion") || m.contains_key("selfLink"));
    if !stamped {
        // Nothing to strip (a create's object): serialized as it is.
        return Bytes::from(serde_json::to_vec(v).expect("json"));
    }
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    Bytes::from(serde_json::to_vec(&v).expect("json"))
}

pub async fn dispatch(
    state: Arc<State>,
    method: Method,
    t: Target,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = t.resource;
    let res: ApiResult<Response> = async {
        match (&method, t.name.as_deref(), t.sub.as_deref()) {
            (&Method::GET, None, None) if p.watch => {
                Ok(watch(state, r, t.namespace.clone(), p, wants_table(&headers)).await?)
            }
            (&Method::GET, None, None) => list(&state, r, t.namespace.as_deref(), &p, &headers).await,
            (&Method::GET, Some(name), None | Some("status")) => {
                consistency::get_read(&*state.store, &p).await?;
                get(&state, r, t.namespace.as_deref(), name, &headers).await
            }
            (&Method::GET, Some(name), Some("scale")) => {
                let obj = get_obj(&state, r, t.namespace.as_deref(), name).await?;
                Ok(json_response(StatusCode::OK, &scale_of(&obj)))
            }
            (&Method::POST, None, None) => create(&state, r, t.namespace.as_deref(), &p, &headers, &body).await,
            (&Method::POST, Some(name), Some("binding")) => {
                binding(&state, r, t.namespace.as_deref(), name, &headers, &body).await
            }
            (&Method::PUT, Some(name), sub) => {
                update(&state, r, t.namespace.as_deref(), name, sub, &p, &headers, &body).await
            }
            (&Method::PATCH, Some(name), sub) => {
                patch(&state, r, t.namespace.as_deref(), name, sub, &p, &headers, &body).await
            }
            (&Method::DELETE, Some(name), None) => delete(&state, r, t.namespace.as_deref(), name, &p, &body).await,
            (&Method::DELETE, None, None) => delete_collection(&state, r, t.namespace.as_deref(), &p, &body).await,
            _ => Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource".to_string(),
            )),
        }
    }
    .await;
    match res {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

async fn get_kv(state: &State, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<KeyValue> {
    state.store.get(&r.key(ns, name)).await?.ok_or_else(|| ApiError::not_found(r, name))
}

pub async fn get_obj(state: &State, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
    from_kv(&get_kv(state, r, ns, name).await?)
}

async fn get(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let obj = get_obj(state, r, ns, name).await?;
    if wants_table(headers) {
        let rv = obj["metadata"]["resourceVersion"].clone();
        return Ok(json_response(StatusCode::OK, &table(r, &[obj], rv, None, None)));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

/// Label and field selectors of a request, compiled.
pub struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<yard_api::fields::FieldSelector>,
    resource: &'static str,
}

impl Filter {
    pub fn new(r: &'static Resource, p: &Params) -> ApiResult<Self> {
        let labels = match &p.label_selector {
            Some(s) => Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?),
            None => None,
        };
        let fields = match &p.field_selector {
            Some(s) => {
                let f = yard_api::fields::FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(f.convert_for(r.plural).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        Ok(Self { labels, fields, resource: r.plural })
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            if !l.matches(&objects::labels_of(obj)) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            if !f.matches(self.resource, obj) {
                return false;
            }
        }
        true
    }
}

/// List objects: returns items, list revision, continue token and remaining count.
pub async fn list_objects(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    p: &Params,
) -> ApiResult<(Vec<Value>, i64, Option<String>, Option<i64>)> {
    list_objects_with(state, r, ns, p, from_kv).await
}

async fn list_objects_with(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    p: &Params,
    decode: fn(&KeyValue) -> ApiResult<Value>,
) -> ApiResult<(Vec<Value>, i64, Option<String>, Option<i64>)> {
    list_matching(state, r, ns, p, &Filter::new(r, p)?, decode).await
}

/// The objects under `r`/`ns` that `filter` matches, decoded by `decode`.
async fn list_matching(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    p: &Params,
    filter: &Filter,
    decode: fn(&KeyValue) -> ApiResult<Value>,
) -> ApiResult<(Vec<Value>, i64, Option<String>, Option<i64>)> {
    list_items(state, r, ns, p, filter, |kv| {
        let obj = decode(kv)?;
        Ok(filter.matches(&obj).then_some(obj))
    })
    .await
}

/// One page (or all) of the objects under `r`/`ns` that `keep` keeps, as `keep` renders them,
/// with the listing's revision and the continue token. `filter` only sizes the store's pages.
async fn list_items<T>(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    p: &Params,
    filter: &Filter,
    keep: impl Fn(&KeyValue) -> ApiResult<Option<T>>,
) -> ApiResult<(Vec<T>, i64, Option<String>, Option<i64>)> {
    let prefix = r.ns_prefix(ns);
    // The snapshot this response reads: a continue token's, an exact resourceVersion, or the
    // latest; every store page after the first reads at the first's revision.
    let read = consistency::list_read(&*state.store, p, &prefix).await?;
    let mut start = read.start_after.clone();
    let mut items = Vec::new();
    let mut revision = None;
    loop {
        let want = p.limit.map(|l| l - items.len());
        let size = if filter.is_empty() { want } else { want.map(|w| w.max(500)) };
        let page = read.page(&*state.store, &prefix, start.as_deref(), size, revision).await?;
        let rev = *revision.get_or_insert(page.revision);
        // Upstream counts what follows a page only when nothing is filtered out.
        let count = |after: usize| filter.is_empty().then_some(page.remaining + after as i64);
        let mut last_key = None;
        for (i, kv) in page.items.iter().enumerate() {
            if p.limit.is_some_and(|l| items.len() >= l) {
                let c = last_key.unwrap_or_default();
                return Ok((
                    items,
                    rev,
                    Some(consistency::encode_continue(&prefix, c, rev)),
                    count(page.items.len() - i),
                ));
            }
            last_key = Some(kv.key.as_str());
            if let Some(item) = keep(kv)? {
                items.push(item);
            }
        }
        match page.more {
            Some(more) if p.limit.is_some_and(|l| items.len() >= l) => {
                return Ok((items, rev, Some(consistency::encode_continue(&prefix, &more, rev)), count(0)));
            }
            Some(more) => start = Some(more),
            None => return Ok((items, rev, None, None)),
        }
    }
}

async fn list(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    p: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let as_table = wants_table(headers);
    // A Table honours `limit` and answers a `continue` token like any list: `kubectl get
    // --chunk-size=N` pages through it.
    let filter = Filter::new(r, p)?;
    if !as_table && filter.is_empty() {
        // Nothing to match: each item is its stored bytes with the resourceVersion spliced into
        // its metadata, never parsed (the bulk of a large list's cost).
        let (items, rev, cont, remaining) =
            list_items(state, r, ns, p, &filter, |kv| Ok(Some(stored_with_revision(kv)))).await?;
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        if let Some(n) = remaining {
            meta["remainingItemCount"] = json!(n);
        }
        let head = serde_json::to_vec(&json!({"kind": r.list_kind(), "apiVersion": r.api_version(), "metadata": meta}))
            .unwrap_or_default();
        let mut body = Vec::with_capacity(head.len() + 12 + items.iter().map(|i| i.len() + 1).sum::<usize>());
        body.extend_from_slice(&head[..head.len() - 1]);
        body.extend_from_slice(b",\"items\":[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.extend_from_slice(b"]}");
        return Ok(json_bytes_response(StatusCode::OK, body));
    }
    let lean = as_table && p.include_object.as_deref() != Some("Object");
    let decode = if lean { from_kv_lean } else { from_kv };
    if as_table && p.limit.is_none() {
        // The whole Table: the stored values are gathered first, then decoded, filtered and
        // rendered row by row straight into the body, on all cores for a large list.
        let (kvs, rev, _, _) = list_items(state, r, ns, p, &filter, |kv| Ok(Some(kv.clone()))).await?;
        let body = table_bytes(r, &kvs, rev, &filter, decode, p.include_object.as_deref())?;
        return Ok(json_bytes_response(StatusCode::OK, body));
    }
    let (items, rev, cont, remaining) = list_matching(state, r, ns, p, &filter, decode).await?;
    if as_table {
        return Ok(json_response(
            StatusCode::OK,
            &table(r, &items, json!(rev.to_string()), cont, p.include_object.as_deref()),
        ));
    }
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(n) = remaining {
        meta["remainingItemCount"] = json!(n);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": r.list_kind(), "apiVersion": r.api_version(), "metadata": meta, "items": items}),
    ))
}

/// The row of a Table for `o`, per `include` (`includeObject`: None, Object or Metadata).
fn table_row(r: &Resource, mut o: Value, include: Option<&str>, now: jiff::Timestamp) -> Value {
    let cells = yard_api::table::row_cells(r.plural, &o, now);
    let object = match include.unwrap_or("Metadata") {
        "None" => Value::Null,
        "Object" => o,
        _ => {
            // Row metadata without managedFields: printers never read them, and they are most
            // of each row's bytes.
            let mut m = o.get_mut("metadata").map(Value::take).unwrap_or(Value::Null);
            if let Some(m) = m.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m})
        }
    };
    json!({"cells": cells, "object": object})
}

/// The serialized rows of the `kvs` that `filter` keeps, comma-separated.
fn table_rows_bytes(
    r: &Resource,
    kvs: &[KeyValue],
    filter: &Filter,
    decode: fn(&KeyValue) -> ApiResult<Value>,
    include: Option<&str>,
    now: jiff::Timestamp,
) -> ApiResult<Vec<u8>> {
    let mut out = Vec::with_capacity(kvs.iter().map(|kv| kv.value.len() / 2 + 64).sum());
    for kv in kvs {
        let obj = decode(kv)?;
        if !filter.matches(&obj) {
            continue;
        }
        if !out.is_empty() {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &table_row(r, obj, include, now))
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    Ok(out)
}

/// A whole meta.k8s.io/v1 Table of the stored `kvs` that `filter` keeps, as JSON bytes. Lists of
/// more than a few thousand objects are rendered in chunks on several threads.
fn table_bytes(
    r: &Resource,
    kvs: &[KeyValue],
    rev: i64,
    filter: &Filter,
    decode: fn(&KeyValue) -> ApiResult<Value>,
    include: Option<&str>,
) -> ApiResult<Vec<u8>> {
    let now = jiff::Timestamp::now();
    let threads =
        if kvs.len() >= 2000 { std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) } else { 1 };
    let chunks: Vec<ApiResult<Vec<u8>>> = if threads > 1 {
        let size = kvs.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = kvs
                .chunks(size)
                .map(|c| s.spawn(move || table_rows_bytes(r, c, filter, decode, include, now)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(ApiError::internal("table rendering failed".to_string()))))
                .collect()
        })
    } else {
        vec![table_rows_bytes(r, kvs, filter, decode, include, now)]
    };
    let head = serde_json::to_vec(&table_head(r, json!(rev.to_string()), None))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let chunks = chunks.into_iter().collect::<ApiResult<Vec<_>>>()?;
    let mut body = Vec::with_capacity(head.len() + 12 + chunks.iter().map(|c| c.len() + 1).sum::<usize>());
    body.extend_from_slice(&head[..head.len() - 1]);
    body.extend_from_slice(b",\"rows\":[");
    let mut first = true;
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        if !first {
            body.push(b',');
        }
        first = false;
        body.extend_from_slice(c);
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

/// A meta.k8s.io/v1 Table without its rows.
fn table_head(r: &Resource, rv: Value, cont: Option<String>) -> Value {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": yard_api::table::column_definitions(r.plural)})
}

/// A meta.k8s.io/v1 Table of `items`.
pub fn table(r: &Resource, items: &[Value], rv: Value, cont: Option<String>, include: Option<&str>) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = items.iter().map(|o| table_row(r, o.clone(), include, now)).collect();
    let mut t = table_head(r, rv, cont);
    t["rows"] = Value::Array(rows);
    t
}

// ---------------------------------------------------------------------------------------------
// Watch

async fn watch(
    state: Arc<State>,
    r: &'static Resource,
    ns: Option<String>,
    p: Params,
    as_table: bool,
) -> ApiResult<Response> {
    let filter = Filter::new(r, &p)?;
    let prefix = r.ns_prefix(ns.as_deref());
    let rv = p.resource_version.clone().unwrap_or_default();
    let send_initial = p.send_initial_events.unwrap_or(rv.is_empty() || rv == "0");
    let (initial, mut watcher, start_rev) = if send_initial {
        let (page, w) = state.store.list_and_watch(&prefix).await?;
        (page.items, w, page.revision)
    } else {
        let after: i64 = rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
        match state.store.watch(&prefix, after).await {
            Ok(w) => (Vec::new(), w, after),
            Err(StoreError::Expired { requested, oldest }) => {
                // Upstream answers 200 and sends one ERROR event with a 410 Status.
                let st = ApiError::gone(format!("too old resource version: {requested} ({oldest})")).to_status();
                let line = format!("{}\n", json!({"type": "ERROR", "object": st}));
                return Ok(stream_response(futures::stream::once(async move {
                    Ok::<_, std::io::Error>(Bytes::from(line))
                })));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let timeout =
        p.timeout_seconds.map(Duration::from_secs).unwrap_or(Duration::from_secs(1800 + rand::random_range(0..1800)));
    let bookmarks = p.allow_bookmarks;
    let initial_end = p.send_initial_events == Some(true);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let encode_ev = |ty: &str, obj: &Value| -> Bytes {
            let obj = if as_table {
                table(r, std::slice::from_ref(obj), obj["metadata"]["resourceVersion"].clone(), None, None)
            } else {
                obj.clone()
            };
            let mut s = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
            s.push(b'\n');
            Bytes::from(s)
        };
        for kv in &initial {
            let Ok(obj) = from_kv(kv) else { continue };
            if filter.matches(&obj) && tx.send(encode_ev("ADDED", &obj)).await.is_err() {
                return;
            }
        }
        let bookmark = |rv: i64, end: bool| -> Bytes {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let mut s = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta}})).unwrap_or_default();
            s.push(b'\n');
            Bytes::from(s)
        };
        if initial_end && tx.send(bookmark(start_rev, true)).await.is_err() {
            return;
        }
        let mut last = start_rev;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tokio::select! {
                ev = watcher.next() => {
                    let Some(ev) = ev else { break };
                    last = ev.revision();
                    let Ok(obj) = from_kv(&ev.kv) else { continue };
                    let out = match ev.kind {
                        EventKind::Delete => filter.matches(&obj).then_some("DELETED"),
                        EventKind::Put => {
                            let now_m = filter.matches(&obj);
                            let was = ev.prev.as_ref().map(|p| from_kv(p).map(|o| filter.matches(&o)).unwrap_or(false));
                            match (was, now_m) {
                                (None, true) => Some("ADDED"),
                                (Some(true), true) => Some("MODIFIED"),
                                (Some(false), true) => Some("ADDED"),
                                (Some(true), false) => Some("DELETED"),
                                _ => None,
                            }
                        }
                    };
                    if let Some(ty) = out {
                        if tx.send(encode_ev(ty, &obj)).await.is_err() { return; }
                    }
                }
                _ = tick.tick(), if bookmarks => {
                    if tx.send(bookmark(last, false)).await.is_err() { return; }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tx.closed() => return,
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    Ok(stream_response(stream))
}

fn stream_response<S>(s: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(s))
        .expect("response")
}

// ---------------------------------------------------------------------------------------------
// Writes

/// How a write was asked for, for managedFields and validation.
struct WriteCtx<'a> {
    p: &'a Params,
    manager: String,
    warnings: Vec<String>,
}

fn manager_of(p: &Params, headers: &HeaderMap) -> String {
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
fn normalize_validated(r: &Resource, input: &Value, dups: &[String], ctx: &mut WriteCtx<'_>) -> ApiResult<Value> {
    let norm = objects::normalize(r, input).map_err(|e| ApiError::bad_request(format!("{} in body: {e}", r.kind)))?;
    check_fields(input, &norm, dups, ctx)?;
    Ok(norm)
}

/// `fieldValidation`: duplicate fields and fields the typed decoder dropped are an error (Strict),
/// a warning (Warn, the default) or nothing (Ignore).
fn check_fields(input: &Value, norm: &Value, dups: &[String], ctx: &mut WriteCtx<'_>) -> ApiResult<()> {
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

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(h) = http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            resp.headers_mut().append("warning", h);
        }
    }
    resp
}

async fn check_namespace(state: &State, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<()> {
    let Some(ns) = ns.filter(|_| r.namespaced) else { return Ok(()) };
    let nsr = registry::find("", "v1", "namespaces").expect("namespaces");
    let key = nsr.key(None, ns);
    // As upstream's NamespaceLifecycle admission: the watch-fed copy answers when it has the
    // namespace; a namespace it has not seen (yet) is read from the store.
    let terminating = match state.namespaces.get(&key) {
        Seen::Present(t) => t,
        Seen::Absent | Seen::Unknown => match state.store.get(&key).await? {
            None => return Err(ApiError::namespace_not_found(ns)),
            Some(kv) => namespace_terminating(&kv),
        },
    };
    if terminating {
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            r.qualified()
        )));
    }
    Ok(())
}

/// An object's `metadata.deletionGracePeriodSeconds` (0 when absent).
fn deletion_grace(obj: &Value) -> i64 {
    obj["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0)
}

/// Whether a stored Namespace is being deleted (has a `deletionTimestamp`).
pub fn namespace_terminating(kv: &KeyValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Ns {
        #[serde(default)]
        metadata: Meta,
    }
    #[derive(serde::Deserialize, Default)]
    struct Meta {
        #[serde(rename = "deletionTimestamp", default)]
        deletion_timestamp: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Ns>(&kv.value).is_ok_and(|n| n.metadata.deletion_timestamp.is_some())
}

/// Reset what a create may not set, per upstream strategies.
fn prepare_for_create(r: &Resource, v: &mut Value) {
    let m = meta_mut(v);
    for k in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        m.remove(k);
    }
    m.insert("uid".into(), json!(crate::objects::new_uid()));
    m.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
    r.strategy.prepare_for_create(v);
}

async fn create(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    p: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let (mut input, dups) = parse_input(r, body, headers)?;
    check_kind(r, &mut input)?;
    let mut ctx = WriteCtx { p, manager: manager_of(p, headers), warnings: Vec::new() };
    let mut obj = normalize_validated(r, &input, &dups, &mut ctx)?;
    // Upstream's storage refuses a create that carries a resourceVersion (an error it does not
    // map to a Status reason: a 500 without one). "0" and unparsable values count as unset.
    if meta_str(&input, "resourceVersion").and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v != 0) {
        return Err(ApiError::new(500, "", "resourceVersion should not be set on objects to be created"));
    }
    let out = create_object(state, r, ns, &mut obj, &mut ctx).await?;
    Ok(with_warnings(json_bytes_response(StatusCode::CREATED, out), &ctx.warnings))
}

/// Create `obj`; returns the client's copy of the stored object, serialized (the stored bytes
/// with the write's resourceVersion, as a read of the object prints them).
async fn create_object(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    obj: &mut Value,
    ctx: &mut WriteCtx<'_>,
) -> ApiResult<Vec<u8>> {
    if r.namespaced {
        let body_ns = meta_str(obj, "namespace").map(String::from);
        let ns = ns.ok_or_else(|| ApiError::bad_request("the server could not find the requested resource"))?;
        match body_ns.as_deref() {
            Some(b) if !b.is_empty() && b != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta_mut(obj).insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta_mut(obj).remove("namespace");
    }
    if name_of(obj).is_empty() {
        match meta_str(obj, "generateName").filter(|g| !g.is_empty()) {
            Some(g) => {
                // Upstream's name generator cuts the prefix to 63 - 5 characters first.
                let g: String = g.chars().take(58).collect();
                let n = format!("{g}{}", objects::random_suffix(5));
                meta_mut(obj).insert("name".into(), json!(n));
            }
            None => {
                return Err(ApiError::invalid(
                    r,
                    "",
                    &[yard_api::validation::FieldError {
                        kind: yard_api::validation::ErrorKind::Required,
                        field: "metadata.name".into(),
                        value: None,
                        detail: "name or generateName is required".into(),
                    }],
                ))
            }
        }
    }
    prepare_for_create(r, obj);
    yard_api::defaults::apply_defaults(r.plural, obj);
    let name = name_of(obj).to_string();
    // Services are validated after allocation (as upstream), the rest now.
    if !r.strategy.allocates() {
        let errs = r.strategy.validate(r, obj, None);
        if !errs.is_empty() {
            return Err(ApiError::invalid(r, &name, &errs));
        }
    }
    check_namespace(state, r, ns, &name).await?;
    crate::managed::track(None, obj, &ctx.manager, "Update", None);
    let key = r.key(ns, &name);
    if ctx.p.dry_run {
        if r.strategy.allocates() {
            let errs: Vec<_> = r
                .strategy
                .validate(r, obj, None)
                .into_iter()
                .filter(|e| {
                    !e.field.starts_with("spec.clusterIP")
                        && !e.field.ends_with("nodePort")
                        && e.field != "spec.healthCheckNodePort"
                })
                .collect();
            if !errs.is_empty() {
                return Err(ApiError::invalid(r, &name, &errs));
            }
        }
        if state.store.get(&key).await?.is_some() {
            return Err(ApiError::already_exists(r, &name));
        }
        return Ok(serde_json::to_vec(obj).expect("json"));
    }
    if r.strategy.allocates() {
        let (res, _) =
            write_service(state, r, &name, None, obj, |o| Op::Create { key: key.clone(), value: encode(o) }).await?;
        return match res {
            Ok(kv) => Ok(stored_with_revision(&kv)),
            Err(StoreError::AlreadyExists(_)) => Err(ApiError::already_exists(r, &name)),
            Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(r, &name)),
            Err(e) => Err(e.into()),
        };
    }
    match state.store.write(Op::Create { key, value: encode(obj) }).await {
        Ok(kv) => Ok(stored_with_revision(&kv)),
        Err(StoreError::AlreadyExists(_)) => Err(ApiError::already_exists(r, &name)),
        Err(e) => Err(e.into()),
    }
}

/// Write a Service (`op` makes the object's own write from it) with the allocations it needs,
/// picked by the allocator and created in the same transaction, validating it once allocated
/// (`old` is the stored object on update). When another API server wins a picked key meanwhile:
/// record it, list the allocations again and pick again, from the spec and status as they were
/// (allocation changes only those), up to 8 times; then the result is a Conflict. Returns the
/// write's result and the keys to release once it succeeded.
async fn write_service(
    state: &State,
    r: &'static Resource,
    name: &str,
    old: Option<&Value>,
    svc: &mut Value,
    op: impl Fn(&Value) -> Op,
) -> ApiResult<(Result<KeyValue, StoreError>, Vec<String>)> {
    let before = (svc.get("spec").cloned(), svc.get("status").cloned());
    for _attempt in 0..8 {
        let generation = state.alloc.generation();
        let (taken, release) = match state.alloc.prepare(old, svc).await {
            Ok((t, rel)) => (t.0, rel),
            Err(Ok(errs)) => return Err(ApiError::invalid(r, name, &errs)),
            Err(Err(e)) => return Err(e.into()),
        };
        let errs = yard_api::validation::validate(r.plural, svc, old);
        if !errs.is_empty() {
            state.alloc.unreserve(&taken);
            return Err(ApiError::invalid(r, name, &errs));
        }
        if taken.is_empty() {
            return Ok((state.store.write(op(svc)).await, release));
        }
        let mut ops = crate::services::Allocator::create_ops(&taken, svc);
        ops.push(op(svc));
        match state
            .store
            .txn(ops)
            .await
            .and_then(|mut kvs| kvs.pop().ok_or_else(|| StoreError::Backend("empty transaction result".into())))
        {
            Ok(kv) => {
                state.alloc.committed(&taken);
                return Ok((Ok(kv), release));
            }
            Err(StoreError::AlreadyExists(k)) if crate::services::Allocator::is_allocation_key(&k) => {
                state.alloc.unreserve(&taken);
                state.alloc.lost(&k, generation).await?;
                if let Some(o) = svc.as_object_mut() {
                    for (field, v) in [("spec", &before.0), ("status", &before.1)] {
                        match v {
                            Some(v) => {
                                o.insert(field.into(), v.clone());
                            }
                            None => {
                                o.shift_remove(field);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                state.alloc.unreserve(&taken);
                return Ok((Err(e), release));
            }
        }
    }
    Ok((Err(StoreError::Conflict { key: r.key(meta_str(svc, "namespace"), name), current: None }), Vec::new()))
}

/// Apply the rules of an update to `new` given the stored `old`, then CAS-write it.
#[allow(clippy::too_many_arguments)]
async fn update_object(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    old_kv: &KeyValue,
    mut new: Value,
    sub: Option<&str>,
    ctx: &mut WriteCtx<'_>,
    precondition_rv: Option<i64>,
) -> ApiResult<(Value, bool)> {
    let old = from_kv(old_kv)?;
    let name = name_of(&old).to_string();
    // Immutable metadata.
    {
        let om = old["metadata"].clone();
        let m = meta_mut(&mut new);
        for k in
            ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "generation"]
        {
            match om.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        m.insert("name".into(), json!(name));
        m.remove("resourceVersion");
    }
    match sub {
        Some("status") => {
            // Only status changes (and labels/annotations stay as stored).
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            if let Some(mf) = new["metadata"].get("managedFields").cloned() {
                meta_mut(&mut merged).insert("managedFields".into(), mf);
            }
            meta_mut(&mut merged).remove("resourceVersion");
            new = merged;
        }
        Some("finalize") => {
            let mut merged = old.clone();
            merged["spec"]["finalizers"] = new["spec"].get("finalizers").cloned().unwrap_or(json!([]));
            meta_mut(&mut merged).remove("resourceVersion");
            new = merged;
        }
        _ => {
            if r.status_subresource {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
        }
    }
    if r.strategy.allocates() && sub.is_none() {
        crate::services::drop_type_dependent_fields(&mut new, &old);
    }
    yard_api::defaults::apply_defaults(r.plural, &mut new);
    if sub.is_none() && objects::spec_changed(&old, &new) && old["metadata"].get("generation").is_some() {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    if !(r.strategy.allocates() && sub.is_none()) {
        let errs = if sub == Some("status") {
            r.strategy.validate_status(r, &new, &old)
        } else {
            r.strategy.validate(r, &new, Some(&old))
        };
        if !errs.is_empty() {
            return Err(ApiError::invalid(r, &name, &errs));
        }
    }
    // Finalizers may only shrink while deleting; when the last goes, the object goes.
    let deleting = old["metadata"].get("deletionTimestamp").is_some_and(|v| !v.is_null());
    if deleting {
        let added: Vec<String> =
            objects::finalizers_of(&new).into_iter().filter(|f| !objects::finalizers_of(&old).contains(f)).collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                r,
                &name,
                &[yard_api::validation::FieldError {
                    kind: yard_api::validation::ErrorKind::Forbidden,
                    field: "metadata.finalizers".into(),
                    value: None,
                    detail: format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                }],
            ));
        }
    }
    crate::managed::track(Some(&old), &mut new, &ctx.manager, "Update", sub);
    if new == {
        let mut o = old.clone();
        meta_mut(&mut o).remove("resourceVersion");
        o
    } {
        // No-op update: upstream does not write and keeps the resourceVersion.
        return Ok((old, false));
    }
    let expect = precondition_rv.unwrap_or(old_kv.mod_revision);
    if ctx.p.dry_run {
        if r.strategy.allocates() && sub.is_none() {
            let errs = r.strategy.validate(r, &new, Some(&old));
            if !errs.is_empty() {
                return Err(ApiError::invalid(r, &name, &errs));
            }
        }
        return Ok((new, false));
    }
    let key = r.key(ns, &name);
    // As upstream's ShouldDeleteDuringUpdate: only when no grace period is running. A pod in
    // graceful deletion stays (Terminating) through its node agent's status writes until the agent
    // deletes it with grace 0.
    let finished = deleting
        && deletion_grace(&old) == 0
        && objects::finalizers_of(&new).is_empty()
        && !r.strategy.holds_deletion(&new);
    let op = |o: &Value| {
        if finished {
            Op::Delete { key: key.clone(), expect: Some(expect) }
        } else {
            Op::Update { key: key.clone(), value: encode(o), expect: Some(expect) }
        }
    };
    let (res, release) = if r.strategy.allocates() && sub.is_none() {
        write_service(state, r, &name, Some(&old), &mut new, op).await?
    } else {
        (state.store.write(op(&new)).await, Vec::new())
    };
    match res {
        Ok(kv) => {
            state.alloc.release(&release).await;
            if finished && r.strategy.allocates() {
                state.alloc.release_service(&new).await;
            }
            Ok((into_revision(new, kv.mod_revision), true))
        }
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(r, &name)),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(r, &name)),
        Err(e) => Err(e.into()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn update(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    p: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    if sub == Some("scale") {
        return update_scale(state, r, ns, name, p, headers, body).await;
    }
    let (mut input, dups) = parse_input(r, body, headers)?;
    check_kind(r, &mut input)?;
    let mut ctx = WriteCtx { p, manager: manager_of(p, headers), warnings: Vec::new() };
    let new = normalize_validated(r, &input, &dups, &mut ctx)?;
    if name_of(&new) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&new)
        )));
    }
    let rv = meta_str(&new, "resourceVersion")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid resourceVersion"))?;
    let old_kv = match state.store.get(&r.key(ns, name)).await? {
        Some(kv) => kv,
        // Upstream's AllowCreateOnUpdate: a PUT creates these kinds.
        None if sub.is_none() && r.strategy.allow_create_on_update() => {
            let mut obj = new;
            let out = create_object(state, r, ns, &mut obj, &mut ctx).await?;
            return Ok(with_warnings(json_bytes_response(StatusCode::CREATED, out), &ctx.warnings));
        }
        None => return Err(ApiError::not_found(r, name)),
    };
    if let Some(rv) = rv {
        if rv != old_kv.mod_revision {
            return Err(ApiError::conflict(r, name));
        }
    }
    let (out, _) = update_object(state, r, ns, &old_kv, new, sub, &mut ctx, rv).await?;
    Ok(with_warnings(json_response(StatusCode::OK, &out), &ctx.warnings))
}

// ---------------------------------------------------------------------------------------------
// Patch

#[allow(clippy::too_many_arguments)]
async fn patch(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    p: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let kind = match ct.as_str() {
        "application/json-patch+json" => "json",
        "application/merge-patch+json" => "merge",
        "application/strategic-merge-patch+json" => "strategic",
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => "apply",
        other => return Err(ApiError::unsupported_media(other)),
    };
    if kind == "apply" && p.field_manager.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let (patch_doc, dups) =
        objects::decode_body(body, if kind == "apply" { "application/yaml" } else { "application/json" })
            .map_err(ApiError::bad_request)?;
    if kind == "apply" {
        crate::request::params::check_apply_gvk(r, &patch_doc)?;
    }
    let mut ctx = WriteCtx { p, manager: manager_of(p, headers), warnings: Vec::new() };
    if sub == Some("scale") {
        // Patch the Scale view, then write its replicas into the object.
        let kv = get_kv(state, r, ns, name).await?;
        let cur = scale_of(&from_kv(&kv)?);
        let patched = match kind {
            "json" => yard_api::patch::json_patch(&cur, &patch_doc).map_err(patch_err)?,
            "merge" | "strategic" => yard_api::patch::json_merge_patch(&cur, &patch_doc),
            _ => yard_api::patch::json_merge_patch(&cur, &patch_doc),
        };
        let body = serde_json::to_vec(&patched).unwrap_or_default();
        let mut h = headers.clone();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        return update_scale(state, r, ns, name, p, &h, &body).await;
    }
    for attempt in 0..8 {
        let current = state.store.get(&r.key(ns, name)).await?;
        let Some(cur_kv) = current else {
            if kind == "apply" && sub.is_none() {
                let mut obj = apply_validated(r, None, &patch_doc, &dups, sub, &mut ctx, name)?;
                meta_mut(&mut obj).insert("name".into(), json!(name));
                ctx.manager = String::new();
                let out = create_object(state, r, ns, &mut obj, &mut ctx).await?;
                return Ok(with_warnings(json_bytes_response(StatusCode::CREATED, out), &ctx.warnings));
            }
            return Err(ApiError::not_found(r, name));
        };
        let cur = from_kv(&cur_kv)?;
        let patched = match kind {
            "json" => yard_api::patch::json_patch(&cur, &patch_doc).map_err(patch_err)?,
            "merge" => yard_api::patch::json_merge_patch(&cur, &patch_doc),
            "strategic" => {
                let schema = yard_api::patch::schema_for(&r.api_version(), r.kind);
                yard_api::patch::strategic_merge(&cur, &patch_doc, &schema).map_err(patch_err)?
            }
            _ => apply_validated(r, Some(&cur), &patch_doc, &dups, sub, &mut ctx, name)?,
        };
        let mut patched = patched;
        check_kind(r, &mut patched)?;
        if kind != "apply" {
            patched = normalize_validated(r, &patched, &[], &mut ctx)?;
        }
        if name_of(&patched) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&patched)
            )));
        }
        if kind == "apply" {
            // Ownership was recorded by apply itself.
            ctx.manager = String::new();
        }
        let pre = meta_str(&patched, "resourceVersion")
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|rv| *rv != cur_kv.mod_revision);
        if pre.is_some() {
            return Err(ApiError::conflict(r, name));
        }
        match update_object(state, r, ns, &cur_kv, patched, sub, &mut ctx, None).await {
            Err(e) if e.code == 409 && e.reason == "Conflict" && attempt < 7 => continue,
            Err(e) => return Err(e),
            Ok((out, _)) => return Ok(with_warnings(json_response(StatusCode::OK, &out), &ctx.warnings)),
        }
    }
    Err(ApiError::conflict(r, name))
}

/// Server-side apply of a (partial) configuration, with field validation on the merged result:
/// apply configurations are not whole objects, so they are checked once merged.
fn apply_validated(
    r: &'static Resource,
    live: Option<&Value>,
    doc: &Value,
    dups: &[String],
    sub: Option<&str>,
    ctx: &mut WriteCtx<'_>,
    name: &str,
) -> ApiResult<Value> {
    let mut input = doc.clone();
    check_kind(r, &mut input)?;
    let now = objects::now_rfc3339();
    let opts = yard_api::patch::ApplyOptions {
        manager: &ctx.manager,
        force: ctx.p.force,
        now: &now,
        subresource: sub,
        schema: None,
    };
    let merged = yard_api::patch::apply_with(live, &input, &opts).map_err(apply_err(r, name))?;
    let norm = objects::normalize(r, &merged).map_err(|e| ApiError::bad_request(format!("{} in body: {e}", r.kind)))?;
    check_fields(&input, &norm, dups, ctx)?;
    Ok(norm)
}

fn apply_err<'a>(r: &'static Resource, name: &'a str) -> impl Fn(yard_api::patch::ApplyError) -> ApiError + 'a {
    move |e| match &e {
        yard_api::patch::ApplyError::Conflict { message, conflicts } => {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": c.cause_message(), "field": c.field}))
                .collect();
            ApiError::new(409, "Conflict", message.clone())
                .with_details(json!({"name": name, "group": r.group, "kind": r.plural, "causes": causes}))
        }
        _ => match e.code() {
            400 => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        },
    }
}

fn patch_err(e: yard_api::patch::PatchError) -> ApiError {
    match e.code() {
        400 => ApiError::bad_request(e.to_string()),
        413 => ApiError::new(413, "RequestEntityTooLarge", e.to_string()),
        422 => ApiError::new(422, "Invalid", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Subresources

fn scale_of(obj: &Value) -> Value {
    let sel = obj["spec"]["selector"].clone();
    let selector = serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(sel)
        .ok()
        .map(|s| LabelSelector::from_k8s(&s).map(|s| s.to_string()).unwrap_or_default())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

async fn update_scale(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    p: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let (scale, _) = parse_input(r, body, headers)?;
    let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
    let mut ctx = WriteCtx { p, manager: manager_of(p, headers), warnings: Vec::new() };
    let kv = get_kv(state, r, ns, name).await?;
    let rv = scale["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse::<i64>().ok());
    if rv.is_some_and(|rv| rv != kv.mod_revision) {
        return Err(ApiError::conflict(r, name));
    }
    let mut obj = from_kv(&kv)?;
    obj["spec"]["replicas"] = json!(replicas);
    let (out, _) = update_object(state, r, ns, &kv, obj, None, &mut ctx, None).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&out)))
}

async fn binding(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let (b, _) = parse_input(r, body, headers)?;
    let node = b["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request("target.name: Required value"));
    }
    for _ in 0..8 {
        let kv = get_kv(state, r, ns, name).await?;
        let mut pod = from_kv(&kv)?;
        if let Some(cur) = pod["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
            return Err(ApiError::conflict_msg(r, name, format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{cur}\"")));
        }
        pod["spec"]["nodeName"] = json!(node);
        let now = objects::now_rfc3339();
        let conds = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        pod["status"]["conditions"] = json!(conds);
        meta_mut(&mut pod).remove("resourceVersion");
        match state
            .store
            .write(Op::Update { key: kv.key.clone(), value: encode(&pod), expect: Some(kv.mod_revision) })
            .await
        {
            Ok(_) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(r, name))
}

// ---------------------------------------------------------------------------------------------
// Delete

#[derive(Default)]
struct DeleteOpts {
    grace: Option<i64>,
    policy: Option<String>,
    uid: Option<String>,
    rv: Option<i64>,
    dry_run: bool,
    /// `orphanDependents: false` was given: an object not deleted at once is answered with 202
    /// Accepted, as upstream does (200 OK otherwise).
    cascade_asked: bool,
}

fn delete_opts(p: &Params, body: &[u8]) -> ApiResult<DeleteOpts> {
    let mut o = DeleteOpts {
        grace: p.grace_period,
        policy: p.propagation_policy.clone(),
        dry_run: p.dry_run,
        ..Default::default()
    };
    if p.orphan_dependents == Some(true) && o.policy.is_none() {
        o.policy = Some("Orphan".into());
    }
    o.cascade_asked = p.orphan_dependents == Some(false);
    // What upstream validates: the options decoded from the body if there is one, else the query.
    let (mut v_orphan, mut v_policy, mut v_dry) =
        (p.orphan_dependents, p.propagation_policy.clone(), p.dry_run_values.clone());
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v = if crate::protobuf::is_protobuf(body) {
            crate::protobuf::decode(body).map_err(ApiError::bad_request)?
        } else {
            objects::decode_body(body, "application/json").map_err(ApiError::bad_request)?.0
        };
        if let Some(g) = v["gracePeriodSeconds"].as_i64() {
            o.grace = Some(g);
        }
        if let Some(pp) = v["propagationPolicy"].as_str() {
            o.policy = Some(pp.to_string());
        }
        if v["orphanDependents"].as_bool() == Some(true) && o.policy.is_none() {
            o.policy = Some("Orphan".into());
        }
        if let Some(b) = v["orphanDependents"].as_bool() {
            o.cascade_asked = !b;
        }
        if let Some(u) = v["preconditions"]["uid"].as_str() {
            o.uid = Some(u.to_string());
        }
        if let Some(r) = v["preconditions"]["resourceVersion"].as_str() {
            o.rv = r.parse().ok();
        }
        if v["dryRun"].as_array().is_some_and(|a| a.iter().any(|x| x == "All")) {
            o.dry_run = true;
        }
        v_orphan = v["orphanDependents"].as_bool();
        v_policy = v["propagationPolicy"].as_str().map(String::from);
        v_dry = v["dryRun"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default();
    }
    let errs = crate::request::params::validate_delete(v_orphan, v_policy.as_deref(), &v_dry);
    if !errs.is_empty() {
        return Err(crate::request::params::options_invalid("DeleteOptions", &errs));
    }
    Ok(o)
}

async fn delete(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    p: &Params,
    body: &[u8],
) -> ApiResult<Response> {
    let o = delete_opts(p, body)?;
    crate::protected::check_delete(r, name)?;
    let (code, out, gone) = delete_one(state, r, ns, name, &o).await?;
    if gone && !crate::delete_result::returns_deleted_object(r) {
        return Ok(json_response(code, &crate::delete_result::delete_success(r, &out)));
    }
    Ok(json_response(code, &out))
}

/// Delete (or start deleting) one object: the status code, the object, and whether it is gone.
async fn delete_one(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    o: &DeleteOpts,
) -> ApiResult<(StatusCode, Value, bool)> {
    for _ in 0..8 {
        let kv = get_kv(state, r, ns, name).await?;
        let mut obj = from_kv(&kv)?;
        if let Some(u) = &o.uid {
            if meta_str(&obj, "uid") != Some(u.as_str()) {
                return Err(ApiError::conflict_msg(
                    r,
                    name,
                    format!(
                        "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                        meta_str(&obj, "uid").unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(rv) = o.rv {
            if rv != kv.mod_revision {
                return Err(ApiError::conflict_msg(r, name, format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", kv.mod_revision)));
            }
        }
        let deleting = obj["metadata"].get("deletionTimestamp").is_some_and(|v| !v.is_null());
        let mut finalizers = objects::finalizers_of(&obj);
        match o.policy.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
            _ => {}
        }
        // Graceful deletion of pods bound to a node: the node agent finishes it.
        let pod_grace = r.strategy.graceful_delete(&obj, o.grace);
        let ns_finalizers = r.strategy.holds_deletion(&obj);
        if finalizers.is_empty() && pod_grace.is_none() && !ns_finalizers {
            if o.dry_run {
                return Ok((StatusCode::OK, obj, true));
            }
            match state.store.write(Op::Delete { key: kv.key.clone(), expect: Some(kv.mod_revision) }).await {
                Ok(gone) => {
                    if r.strategy.allocates() {
                        state.alloc.release_service(&obj).await;
                    }
                    let out = with_revision(&obj, gone.mod_revision);
                    return Ok((StatusCode::OK, out, true));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(r, name)),
                Err(e) => return Err(e.into()),
            }
        }
        let pending = if o.cascade_asked { StatusCode::ACCEPTED } else { StatusCode::OK };
        if deleting && pod_grace.is_none() && deletion_grace(&obj) == 0 && finalizers == objects::finalizers_of(&obj) {
            return Ok((pending, obj, false));
        }
        let now = objects::now_rfc3339();
        {
            let m = meta_mut(&mut obj);
            if !deleting {
                let ts = match pod_grace {
                    Some(g) => objects::rfc3339_after(g),
                    None => now.clone(),
                };
                m.insert("deletionTimestamp".into(), json!(ts));
                m.insert("deletionGracePeriodSeconds".into(), json!(pod_grace.unwrap_or(0)));
            } else {
                // A shorter grace period may replace a longer one (0 too: an object that
                // finalizers still hold then goes as soon as the last one is removed).
                let g = pod_grace.unwrap_or(0);
                let cur = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(i64::MAX);
                if g < cur {
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(if g == 0 { now.clone() } else { objects::rfc3339_after(g) }),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(g));
                }
            }
            if !finalizers.is_empty() {
                m.insert("finalizers".into(), json!(finalizers));
            }
            m.remove("resourceVersion");
        }
        r.strategy.on_deletion_started(&mut obj);
        if o.dry_run {
            return Ok((StatusCode::OK, obj, false));
        }
        match state
            .store
            .write(Op::Update { key: kv.key.clone(), value: encode(&obj), expect: Some(kv.mod_revision) })
            .await
        {
            Ok(nkv) => return Ok((pending, with_revision(&obj, nkv.mod_revision), false)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(r, name))
}

async fn delete_collection(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    p: &Params,
    body: &[u8],
) -> ApiResult<Response> {
    let o = delete_opts(p, body)?;
    let lp = Params { limit: None, continue_token: None, ..p.clone() };
    let (items, rev, _, _) = list_objects(state, r, ns, &lp).await?;
    // An immortal namespace among them refuses the whole request before anything is deleted.
    items.iter().try_for_each(|it| crate::protected::check_delete(r, name_of(it)))?;
    let mut out = Vec::new();
    for it in items {
        let n = name_of(&it).to_string();
        let itns = meta_str(&it, "namespace").map(String::from);
        match delete_one(state, r, itns.as_deref().or(ns), &n, &o).await {
            Ok((_, v, _)) => out.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": r.list_kind(), "apiVersion": r.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": out}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_table_bytes_match_the_table_of_the_same_objects() {
        // Enough objects for the threaded path; a label selector keeps every third; the
        // managedFields stay out of the rows' metadata either way.
        let r = crate::registry::find("", "v1", "services").unwrap();
        let kvs: Vec<KeyValue> = (0..2500)
            .map(|i| {
                let v = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i:04}"), "namespace": "default", "labels": {"k": (i % 3).to_string()},
                    "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "m", "operation": "Update"}]},
                    "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", i / 250, i % 250), "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": format!("a{i}")}}});
                KeyValue { key: format!("/registry/services/default/s{i:04}"), value: Bytes::from(serde_json::to_vec(&v).unwrap()), create_revision: i + 2, mod_revision: i + 2 }
            })
            .collect();
        for (selector, include, rows) in [
            (None, None, 2500),
            (Some("k=1"), None, 833),
            (Some("k=2"), Some("Object"), 833),
            (None, Some("None"), 2500),
        ] {
            let p = Params { label_selector: selector.map(String::from), ..Default::default() };
            let filter = Filter::new(r, &p).unwrap();
            let decode = if include == Some("Object") { from_kv } else { from_kv_lean };
            let got: Value =
                serde_json::from_slice(&table_bytes(r, &kvs, 9000, &filter, decode, include).unwrap()).unwrap();
            let items: Vec<Value> = kvs.iter().map(|kv| decode(kv).unwrap()).filter(|o| filter.matches(o)).collect();
            let want = table(r, &items, json!("9000"), None, include);
            assert_eq!(got["rows"].as_array().unwrap().len(), rows);
            // AGE (cell 5) is computed from the clock at each call.
            let strip = |t: &Value| -> Vec<Value> {
                t["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|row| {
                        let mut row = row.clone();
                        row["cells"][5] = Value::Null;
                        row
                    })
                    .collect()
            };
            assert_eq!(strip(&got), strip(&want), "{selector:?} {include:?}");
            assert_eq!(got["metadata"], want["metadata"]);
            assert_eq!(got["columnDefinitions"], want["columnDefinitions"]);
            if include.is_none() {
                assert!(got["rows"][0]["object"]["metadata"].get("managedFields").is_none());
                assert_eq!(got["rows"][0]["object"]["kind"], "PartialObjectMetadata");
            }
        }
    }

    #[test]
    fn stored_with_revision_prints_what_from_kv_prints() {
        let values = [
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"ports":[{"port":80}]}}"#,
            // A nested "metadata" (a pod template) and a string holding `"metadata":{` come first.
            r#"{"spec":{"template":{"metadata":{"labels":{"a":"b"}}},"note":"\"metadata\":{ [ } \\"},"metadata":{"name":"d"},"kind":"Deployment"}"#,
            r#"{"kind":"ConfigMap","metadata":{},"data":{"metadata":"{"}}"#,
            r#"{ "kind" : "ConfigMap" , "metadata" : { } }"#,
        ];
        for v in values {
            let kv = KeyValue { key: "/k".into(), value: Bytes::from(v), create_revision: 3, mod_revision: 42 };
            let spliced: Value =
                serde_json::from_slice(&stored_with_revision(&kv)).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(spliced, from_kv(&kv).unwrap(), "{v}");
            assert_eq!(spliced["metadata"]["resourceVersion"], "42");
        }
        // No metadata object: the slow path adds one, as from_kv does.
        let kv = KeyValue {
            key: "/k".into(),
            value: Bytes::from(r#"{"kind":"X","metadata":null}"#),
            create_revision: 1,
            mod_revision: 7,
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&stored_with_revision(&kv)).unwrap()["metadata"]["resourceVersion"],
            "7"
        );
    }
}
