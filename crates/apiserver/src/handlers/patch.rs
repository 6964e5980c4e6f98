//! patch: JSON, merge, strategic-merge and server-side apply patches.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::create::create_object;
use super::get::get_kv;
use super::subresources::{scale_of, update_scale};
use super::update::update_object;
use super::{
    check_fields, check_kind, json_bytes_response, json_response, manager_of, normalize_validated, with_warnings,
    WriteCtx,
};
use crate::codec::from_kv;
use crate::objects::{self, meta_mut, meta_str, name_of};
use crate::registry::Resource;
use crate::rest::Params;
use crate::status::{ApiError, ApiResult};
use crate::State;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn patch(
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
                let schema = r.strategy.patch_schema(r);
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
pub(crate) fn apply_validated(
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
    let schema = r.strategy.patch_schema(r);
    let opts = yard_api::patch::ApplyOptions {
        manager: &ctx.manager,
        force: ctx.p.force,
        now: &now,
        subresource: sub,
        schema: Some(&schema),
    };
    let merged = yard_api::patch::apply_with(live, &input, &opts).map_err(apply_err(r, name))?;
    let norm = objects::normalize(r, &merged).map_err(|e| ApiError::bad_request(format!("{} in body: {e}", r.kind)))?;
    check_fields(&input, &norm, dups, ctx)?;
    Ok(norm)
}

pub(crate) fn apply_err<'a>(
    r: &'static Resource,
    name: &'a str,
) -> impl Fn(yard_api::patch::ApplyError) -> ApiError + 'a {
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

pub(crate) fn patch_err(e: yard_api::patch::PatchError) -> ApiError {
    match e.code() {
        400 => ApiError::bad_request(e.to_string()),
        413 => ApiError::new(413, "RequestEntityTooLarge", e.to_string()),
        422 => ApiError::new(422, "Invalid", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}
