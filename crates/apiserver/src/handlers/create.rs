//! create: namespace lifecycle checks, name generation, create-time resets and the Service
//! writes with their address allocations.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use yard_store::{KeyValue, Op, StoreError};

use super::delete::namespace_terminating;
use super::{check_kind, json_bytes_response, manager_of, normalize_validated, parse_input, with_warnings, WriteCtx};
use crate::codec::{encode, stored_with_revision};
use crate::mirror::Seen;
use crate::objects::{self, meta_mut, meta_str, name_of};
use crate::registry::{self, Resource};
use crate::rest::Params;
use crate::status::{ApiError, ApiResult};
use crate::State;

pub(crate) async fn check_namespace(state: &State, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<()> {
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

/// Reset what a create may not set, per upstream strategies.
pub(crate) fn prepare_for_create(r: &Resource, v: &mut Value) {
    let m = meta_mut(v);
    for k in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        m.remove(k);
    }
    m.insert("uid".into(), json!(crate::objects::new_uid()));
    m.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
    r.strategy.prepare_for_create(v);
}

pub(crate) async fn create(
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
pub(crate) async fn create_object(
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
    if r.group.is_empty() && r.plural == "pods" {
        // Admission (NamespaceLifecycle, then ServiceAccount) runs before the strategy, as
        // upstream's chain does.
        let ns = ns.unwrap_or("");
        check_namespace(state, r, Some(ns), name_of(obj)).await?;
        crate::sa_admission::admit_pod(state, ns, obj).await?;
    }
    prepare_for_create(r, obj);
    r.strategy.defaults(r, obj);
    let name = name_of(obj).to_string();
    // Services are validated after allocation (as upstream), the rest now.
    if !r.strategy.allocates() {
        let errs = r.strategy.validate(r, obj, None);
        if !errs.is_empty() {
            return Err(ApiError::invalid(r, &name, &errs));
        }
    }
    if r.group == crate::registry::rbac::GROUP {
        crate::auth::rbac::escalation::check(state, r, ns, obj, None)?;
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
pub(crate) async fn write_service(
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
