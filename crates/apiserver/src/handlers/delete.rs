//! delete and deletecollection: delete options, preconditions, finalizers and graceful deletion.

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};
use yard_store::{KeyValue, Op, StoreError};

use super::get::get_kv;
use super::json_response;
use super::list::list_objects;
use crate::codec::{encode, from_kv, with_revision};
use crate::objects::{self, meta_mut, meta_str, name_of};
use crate::registry::Resource;
use crate::rest::Params;
use crate::status::{ApiError, ApiResult};
use crate::State;

/// An object's `metadata.deletionGracePeriodSeconds` (0 when absent).
pub(crate) fn deletion_grace(obj: &Value) -> i64 {
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

#[derive(Default)]
pub(crate) struct DeleteOpts {
    grace: Option<i64>,
    policy: Option<String>,
    uid: Option<String>,
    rv: Option<i64>,
    dry_run: bool,
    /// `orphanDependents: false` was given: an object not deleted at once is answered with 202
    /// Accepted, as upstream does (200 OK otherwise).
    cascade_asked: bool,
}

pub(crate) fn delete_opts(p: &Params, body: &[u8]) -> ApiResult<DeleteOpts> {
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

pub(crate) async fn delete(
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
pub(crate) async fn delete_one(
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

pub(crate) async fn delete_collection(
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
