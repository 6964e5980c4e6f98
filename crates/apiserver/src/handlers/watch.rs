//! watch: a chunked stream of watch events with bookmarks, initial events and timeouts.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};
use yard_store::{EventKind, StoreError};

use super::list::{table, Filter};
use crate::codec::from_kv;
use crate::registry::Resource;
use crate::rest::Params;
use crate::status::{ApiError, ApiResult};
use crate::State;

pub(crate) async fn watch(
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

pub(crate) fn stream_response<S>(s: S) -> Response
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
