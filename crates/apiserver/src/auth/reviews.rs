//! The review APIs, answered from the request's user and the [`Authorizer`], never stored:
//! authorization.k8s.io/v1 SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview
//! and LocalSubjectAccessReview; authentication.k8s.io/v1 TokenReview and SelfSubjectReview
//! (also v1beta1, which older kubectl's `auth whoami` asks for). Validation and errors follow
//! upstream's registry strategies for each kind.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Map, Value};
use yard_api::validation::{ErrorKind, FieldError};

use super::{Attributes, Authorized, Decision, UserInfo};
use crate::registry::Resource;
use crate::server::Target;
use crate::status::{ApiError, ApiResult};
use crate::State;

/// Serve one request for a review resource.
pub async fn handle(
    state: &State,
    user: &UserInfo,
    method: &Method,
    t: &Target,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    match review(state, user, method, t, headers, body).await {
        Ok(v) => Response::builder()
            .status(StatusCode::CREATED)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&v).unwrap_or_default()))
            .expect("response"),
        Err(e) => e.into_response(),
    }
}

async fn review(
    state: &State,
    user: &UserInfo,
    method: &Method,
    t: &Target,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Value> {
    let r = t.resource;
    if *method != Method::POST || t.name.is_some() {
        return Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"));
    }
    let (mut obj, _) = crate::rest::parse_input(r, body, headers)?;
    crate::rest::check_kind(r, &mut obj)?;
    if !obj.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    if !obj.get("spec").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("spec must be an object"));
    }
    let status = match r.kind {
        "SelfSubjectAccessReview" => self_subject_access(state, user, r, &obj)?,
        "SubjectAccessReview" => subject_access(state, r, &obj, None)?,
        "LocalSubjectAccessReview" => local_subject_access(state, r, &mut obj, t.namespace.as_deref().unwrap_or(""))?,
        "SelfSubjectRulesReview" => self_subject_rules(state, user, &obj),
        "SelfSubjectReview" => json!({"userInfo": user.to_json()}),
        "TokenReview" => token_review(state, r, &obj).await?,
        _ => return Err(ApiError::not_found(r, "")),
    };
    if obj.get("metadata").is_none() {
        obj["metadata"] = json!({});
    }
    obj["status"] = status;
    Ok(obj)
}

/// `Invalid value: <v>: <detail>` with `v` printed as Go's `%#v` prints it (`raw`), for the bad
/// values that are Go structs.
fn invalid_raw(field: &str, raw: &str, detail: &str) -> FieldError {
    FieldError { kind: ErrorKind::Invalid, field: field.into(), value: None, detail: format!("{raw}: {detail}") }
}

/// Go's `%#v` of an internal `authorization.NonResourceAttributes` (or `"null"` when absent).
fn non_resource_go(v: Option<&Value>) -> Option<String> {
    let v = v?;
    let s = |k: &str| yard_api::validation::go_quote(v.get(k).and_then(Value::as_str).unwrap_or(""));
    Some(format!("authorization.NonResourceAttributes{{Path:{}, Verb:{}}}", s("path"), s("verb")))
}

/// upstream's ValidateSelfSubjectAccessReviewSpec (and the shared part of the others).
fn validate_attributes(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ra = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let nra = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    if ra.is_some() && nra.is_some() {
        let raw = non_resource_go(nra).unwrap_or_default();
        errs.push(invalid_raw(
            "spec.nonResourceAttributes",
            &raw,
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if ra.is_none() && nra.is_none() {
        errs.push(FieldError::invalid(
            "spec.resourceAttributes",
            "null",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    errs
}

/// Metadata other than managedFields (and, for a local review, the namespace) must be empty.
fn metadata_is_empty(obj: &Value, except_namespace: bool) -> bool {
    obj.get("metadata").and_then(Value::as_object).is_none_or(|m| {
        m.iter().all(|(k, v)| {
            k == "managedFields"
                || (except_namespace && k == "namespace")
                || v.is_null()
                || v.as_str() == Some("")
                || v.as_object().is_some_and(Map::is_empty)
        })
    })
}

fn metadata_error(obj: &Value, detail: &str) -> FieldError {
    FieldError::invalid("metadata", obj.get("metadata").cloned().unwrap_or(json!({})), detail)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

/// The attributes a review's spec asks about, for `user`.
fn attributes_from(spec: &Value, user: UserInfo) -> Attributes {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match spec.get("resourceAttributes").filter(|v| v.is_object()) {
        Some(ra) => Attributes {
            user,
            verb: s(ra, "verb"),
            resource_request: true,
            api_group: s(ra, "group"),
            api_version: s(ra, "version"),
            resource: s(ra, "resource"),
            subresource: s(ra, "subresource"),
            namespace: s(ra, "namespace"),
            name: s(ra, "name"),
            path: String::new(),
        },
        None => {
            let nra = spec.get("nonResourceAttributes").cloned().unwrap_or(json!({}));
            Attributes { user, verb: s(&nra, "verb"), path: s(&nra, "path"), ..Default::default() }
        }
    }
}

/// A SubjectAccessReviewStatus of a decision.
fn access_status(a: Authorized) -> Value {
    let mut st = json!({"allowed": a.decision == Decision::Allow});
    if a.decision == Decision::Deny {
        st["denied"] = json!(true);
    }
    if !a.reason.is_empty() {
        st["reason"] = json!(a.reason);
    }
    st
}

fn self_subject_access(state: &State, user: &UserInfo, r: &Resource, obj: &Value) -> ApiResult<Value> {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let mut errs = validate_attributes(&spec);
    if !metadata_is_empty(obj, false) {
        errs.push(metadata_error(obj, "must be empty"));
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(r, "", &errs));
    }
    Ok(access_status(state.authz.authorize(&attributes_from(&spec, user.clone()))))
}

/// The user a SubjectAccessReview names.
fn spec_user(spec: &Value) -> UserInfo {
    let extra = spec
        .get("extra")
        .and_then(Value::as_object)
        // JSON gives each value as a list; protobuf as an ExtraValue message of `items`.
        .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(Some(v.get("items").unwrap_or(v))))).collect())
        .unwrap_or_default();
    UserInfo {
        username: spec.get("user").and_then(Value::as_str).unwrap_or("").into(),
        uid: spec.get("uid").and_then(Value::as_str).unwrap_or("").into(),
        groups: strings(spec.get("groups")),
        extra,
    }
}

/// upstream's ValidateSubjectAccessReviewSpec.
fn validate_subject(spec: &Value) -> Vec<FieldError> {
    let mut errs = validate_attributes(spec);
    let u = spec_user(spec);
    if u.username.is_empty() && u.groups.is_empty() {
        errs.push(FieldError::invalid("spec.user", u.username, "at least one of user or group must be specified"));
    }
    errs
}

fn subject_access(state: &State, r: &Resource, obj: &Value, errs: Option<Vec<FieldError>>) -> ApiResult<Value> {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let mut errs = errs.unwrap_or_default();
    errs.splice(0..0, validate_subject(&spec));
    if r.kind == "SubjectAccessReview" && !metadata_is_empty(obj, false) {
        errs.push(metadata_error(obj, "must be empty"));
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(r, "", &errs));
    }
    Ok(access_status(state.authz.authorize(&attributes_from(&spec, spec_user(&spec)))))
}

fn local_subject_access(state: &State, r: &Resource, obj: &mut Value, ns: &str) -> ApiResult<Value> {
    // The create path's namespace rule: an object without one takes the request's; another one
    // is an error.
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        None | Some("") => {
            if !obj.get("metadata").is_some_and(Value::is_object) {
                obj["metadata"] = json!({});
            }
            obj["metadata"]["namespace"] = json!(ns);
        }
        Some(b) if b != ns => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ))
        }
        Some(_) => {}
    }
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let mut errs = Vec::new();
    if !metadata_is_empty(obj, true) {
        errs.push(metadata_error(obj, "must be empty except for namespace"));
    }
    if let Some(ra) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let got = ra.get("namespace").and_then(Value::as_str).unwrap_or("");
        if got != ns {
            errs.push(FieldError::invalid("spec.resourceAttributes.namespace", got, "must match metadata.namespace"));
        }
    }
    if let Some(nra) = spec.get("nonResourceAttributes").filter(|v| !v.is_null()) {
        let raw = non_resource_go(Some(nra)).unwrap_or_default();
        errs.push(invalid_raw("spec.nonResourceAttributes", &raw, "disallowed on this kind of request"));
    }
    subject_access(state, r, obj, Some(errs))
}

fn self_subject_rules(state: &State, user: &UserInfo, obj: &Value) -> Value {
    let ns = obj.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or("");
    let rules = state.authz.rules_for(user, ns);
    let resource_rules: Vec<Value> = rules
        .resource_rules
        .iter()
        .map(|r| {
            let mut o = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                o["resourceNames"] = json!(r.resource_names);
            }
            o
        })
        .collect();
    let non_resource_rules: Vec<Value> = rules
        .non_resource_rules
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    let mut st = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": rules.incomplete});
    if !rules.evaluation_error.is_empty() {
        st["evaluationError"] = json!(rules.evaluation_error);
    }
    st
}

async fn token_review(state: &State, r: &Resource, obj: &Value) -> ApiResult<Value> {
    let _ = r;
    if obj.pointer("/metadata/namespace").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
        return Err(ApiError::bad_request(
            "namespace is not allowed on this type: ".to_string()
                + obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(""),
        ));
    }
    let token = obj.pointer("/spec/token").and_then(Value::as_str).unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::bad_request("token is required for TokenReview in authentication"));
    }
    let audiences = strings(obj.pointer("/spec/audiences"));
    // The static tokens answer as before; a ServiceAccount token answers with the audiences it
    // is valid for, and a refused one of this issuer with the reason (as upstream).
    if let Some(u) = state.authn.authenticate_token(token) {
        let mut st = json!({"authenticated": true, "user": u.to_json()});
        if !audiences.is_empty() {
            st["audiences"] = json!(audiences);
        }
        return Ok(st);
    }
    Ok(match state.sa.authenticate(token, &audiences).await {
        Ok((u, auds)) => json!({"authenticated": true, "user": u.to_json(), "audiences": auds}),
        Err(super::serviceaccount::TokenError::NotOurs) => json!({"user": {}}),
        Err(e) => json!({"user": {}, "error": e.to_string()}),
    })
}
