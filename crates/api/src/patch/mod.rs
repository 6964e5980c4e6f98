//! Patch semantics of the Kubernetes API server: JSON patch (RFC 6902), JSON merge patch
//! (RFC 7386), strategic merge patch with the upstream directives (`$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList/`, `$setElementOrder/`), and server-side apply with field
//! ownership recorded in `metadata.managedFields` (`FieldsV1`).
//!
//! Everything works on `serde_json::Value` objects as the API server stores them; the patch
//! metadata of each served kind (merge keys, list types) is in [`schema_for`].
//!
//! How the API server uses it, as upstream does:
//! - `kubectl apply` (client-side) sends a strategic merge patch computed from the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation (with `$setElementOrder/`,
//!   `$retainKeys` and `$patch: delete` items); [`strategic_merge`] applies it, then the write is
//!   recorded with [`track_update`] under `fieldManager=kubectl-client-side-apply`.
//! - Every create, update and non-apply patch calls [`track_update`] with the stored object
//!   (`None` on create) and the object about to be stored (after defaulting); a write that
//!   changes nothing leaves `managedFields` untouched.
//! - `kubectl apply --server-side` sends `application/apply-patch+yaml` with
//!   `fieldManager=kubectl` and `force=false`; [`apply`] merges it, records ownership and
//!   returns [`ApplyError::Conflict`] (409, one `FieldManagerConflict` cause per
//!   [`Conflict`]) when fields owned by others would change. An unchanged re-apply returns
//!   the live object as it was, so the server can skip the write. After apply the server
//!   still restores what its strategy resets (system metadata, `status` on the main
//!   resource) and runs defaulting and validation.

mod fieldpath;
mod json;
mod schema;
mod smp;
mod ssa;
mod value;

#[cfg(test)]
mod tests;

pub use fieldpath::{FieldPath, FieldSet, PathElement};
pub use json::{json_merge_patch, json_patch, MAX_JSON_PATCH_OPERATIONS};
pub use schema::{pod_template_at, schema_for, FieldRule, PatchSchema, SmpList, SsaType};
pub use smp::strategic_merge;
pub use ssa::{
    apply, apply_with, decode_managed_fields, default_manager, encode_managed_fields, track_update, track_update_with,
    ApplyOptions, Conflict, ManagedFieldsEntry, LAST_APPLIED_ANNOTATION, MAX_UPDATE_MANAGERS,
};

/// The patch kinds of `PATCH` requests, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902): [`json_patch`].
    Json,
    /// `application/merge-patch+json` (RFC 7386): [`json_merge_patch`].
    Merge,
    /// `application/strategic-merge-patch+json`: [`strategic_merge`].
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply): [`apply`].
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header value (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }

    /// The media type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Upstream's 415 message for an unsupported patch `Content-Type` on built-in kinds.
pub const UNSUPPORTED_PATCH_MESSAGE: &str = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

/// A patch that cannot be applied. [`PatchError::code`] is the HTTP status upstream answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// Malformed patch document (400 BadRequest).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed patch that does not apply to the object (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Too many JSON patch operations (413).
    #[error("{0}")]
    TooLarge(String),
    /// Other patch failures upstream reports as 500 InternalError.
    #[error("{0}")]
    Internal(String),
}

impl PatchError {
    /// HTTP status code of the upstream Status error.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Unprocessable(_) => 422,
            PatchError::TooLarge(_) => 413,
            PatchError::Internal(_) => 500,
        }
    }
}

/// A server-side apply that was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (409 Conflict, reason `Conflict`, one
    /// `FieldManagerConflict` cause per entry of `conflicts`).
    #[error("{message}")]
    Conflict {
        /// `Apply failed with N conflict(s): ...` exactly as upstream.
        message: String,
        /// Each conflicting field with the manager owning it.
        conflicts: Vec<Conflict>,
    },
    /// Malformed apply configuration (400).
    #[error("{0}")]
    BadRequest(String),
    /// The configuration does not fit the kind's schema (e.g. a keyed list item without its
    /// key); upstream answers 500 with this message.
    #[error("{0}")]
    TypedPatch(String),
}

impl ApplyError {
    /// HTTP status code of the upstream Status error.
    pub fn code(&self) -> u16 {
        match self {
            ApplyError::Conflict { .. } => 409,
            ApplyError::BadRequest(_) => 400,
            ApplyError::TypedPatch(_) => 500,
        }
    }
}
