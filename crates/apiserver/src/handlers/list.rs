//! list: label/field selection, paging with continue tokens, and server-side Table rendering.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use yard_api::selector::LabelSelector;
use yard_store::KeyValue;

use super::{json_bytes_response, json_response, wants_table};
use crate::codec::{from_kv, from_kv_lean, stored_with_revision};
use crate::consistency;
use crate::objects;
use crate::registry::Resource;
use crate::rest::Params;
use crate::status::{ApiError, ApiResult};
use crate::State;

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

pub(crate) async fn list_objects_with(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    p: &Params,
    decode: fn(&KeyValue) -> ApiResult<Value>,
) -> ApiResult<(Vec<Value>, i64, Option<String>, Option<i64>)> {
    list_matching(state, r, ns, p, &Filter::new(r, p)?, decode).await
}

/// The objects under `r`/`ns` that `filter` matches, decoded by `decode`.
pub(crate) async fn list_matching(
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
pub(crate) async fn list_items<T>(
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

pub(crate) async fn list(
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
pub(crate) fn table_row(r: &Resource, mut o: Value, include: Option<&str>, now: jiff::Timestamp) -> Value {
    let cells = r.strategy.table_cells(r, &o, now);
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
pub(crate) fn table_rows_bytes(
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
pub(crate) fn table_bytes(
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
pub(crate) fn table_head(r: &Resource, rv: Value, cont: Option<String>) -> Value {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": column_definitions(r)})
}

/// `r`'s Table columns from its strategy, computed once per resource (each list as a Table
/// needs them, and their descriptions come from generated schemas).
fn column_definitions(r: &Resource) -> Vec<Value> {
    type Key = (&'static str, &'static str, &'static str);
    static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::BTreeMap<Key, Vec<Value>>>> =
        std::sync::OnceLock::new();
    let key = (r.group, r.version, r.plural);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return v.clone();
    }
    let cols = r.strategy.table_columns(r);
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, cols.clone());
    cols
}

/// A meta.k8s.io/v1 Table of `items`.
pub fn table(r: &Resource, items: &[Value], rv: Value, cont: Option<String>, include: Option<&str>) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = items.iter().map(|o| table_row(r, o.clone(), include, now)).collect();
    let mut t = table_head(r, rv, cont);
    t["rows"] = Value::Array(rows);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
}
