//! update: the rules of an update (immutable metadata, status/finalize subresources,
//! generation, finalizers) and the compare-and-swap write.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use yard_store::{KeyValue, Op, StoreError};

use super::create::{create_object, write_service};
use super::delete::deletion_grace;
use super::subresources::update_scale;
use super::{
    check_kind, json_bytes_response, json_response, manager_of, normalize_validated, parse_input, with_warnings,
    WriteCtx,
};
use crate::codec::{encode, from_kv, into_revision};
use crate::objects::{self, meta_mut, meta_str, name_of};
use crate::registry::Resource;
use crate::rest::Params;
use crate::status::{ApiError, ApiResult};
use crate::State;

/// Apply the rules of an update to `new` given the stored `old`, then CAS-write it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn update_object(
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
    r.strategy.defaults(r, &mut new);
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
    if r.group == crate::registry::rbac::GROUP && sub.is_none() {
        crate::auth::rbac::escalation::check(state, r, ns, &new, Some(&old))?;
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
pub(crate) async fn update(
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
