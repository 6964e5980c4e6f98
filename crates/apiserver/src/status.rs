//! `kind: Status` errors with upstream's codes, reasons and message shapes.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};

use crate::registry::Resource;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// The Status's `metadata.continue` (a 410 for an expired continue token carries a new one).
    pub list_continue: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None, list_continue: None }
    }
    pub fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }
    pub fn with_list_continue(mut self, token: String) -> Self {
        self.list_continue = Some(token);
        self
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }
    pub fn not_found(r: &Resource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", r.qualified()))
            .with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
    }
    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
            .with_details(json!({"name": ns, "kind": "namespaces"}))
    }
    pub fn already_exists(r: &Resource, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", r.qualified()))
            .with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
    }
    pub fn conflict(r: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", r.qualified()),
        )
        .with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
    }
    pub fn conflict_msg(r: &Resource, name: &str, msg: impl Into<String>) -> Self {
        Self::new(409, "Conflict", msg).with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
    }
    pub fn invalid(r: &Resource, name: &str, errs: &[yard_api::validation::FieldError]) -> Self {
        let message = yard_api::validation::invalid_status_message(&group_kind(r), name, errs);
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.message_without_field(), "field": e.field}))
            .collect();
        Self::new(422, "Invalid", message)
            .with_details(json!({"name": name, "group": r.group, "kind": r.kind, "causes": causes}))
    }
    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", msg)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }
    pub fn too_large() -> Self {
        Self::new(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", msg.into()))
    }
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {ct}"))
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", msg)
    }

    pub fn into_response_owned(self) -> Response {
        self.into_response()
    }

    pub fn to_status(&self) -> Value {
        // Upstream's field order: ..., reason, details, code.
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s["code"] = json!(self.code);
        if self.reason.is_empty() {
            // StatusReasonUnknown is "" and omitted, as upstream serialises it.
            s.as_object_mut().expect("object").remove("reason");
        }
        if let Some(c) = &self.list_continue {
            s["metadata"] = json!({"continue": c});
        }
        s
    }
}

/// `Service` for core, `Deployment.apps` otherwise: how upstream names a kind in Invalid messages.
pub fn group_kind(r: &Resource) -> String {
    if r.group.is_empty() {
        r.kind.to_string()
    } else {
        format!("{}.{}", r.kind, r.group)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json");
        // Upstream sends a Status's retryAfterSeconds as a Retry-After header too.
        if let Some(n) = self.details.as_ref().and_then(|d| d["retryAfterSeconds"].as_u64()).filter(|n| *n > 0) {
            b = b.header("retry-after", n.to_string());
        }
        b.body(Body::from(body)).expect("static response")
    }
}

impl From<yard_store::StoreError> for ApiError {
    fn from(e: yard_store::StoreError) -> Self {
        match e {
            yard_store::StoreError::Expired { requested, oldest } => {
                ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}
