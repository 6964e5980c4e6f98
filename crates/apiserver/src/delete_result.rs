//! What a DELETE answers once the object is gone, per kind as upstream's registry stores do:
//! the deleted object for the kinds whose store sets `ReturnDeletedObject` (pods, services,
//! namespaces, service accounts), otherwise a `Status` of `Success` naming it. An object that
//! finalizers or graceful deletion keep is always answered with the object itself.

use serde_json::{json, Value};

use crate::registry::Resource;

/// Whether upstream's store for `r` sets `ReturnDeletedObject`.
pub fn returns_deleted_object(r: &Resource) -> bool {
    r.group.is_empty() && matches!(r.plural, "pods" | "services" | "namespaces" | "serviceaccounts")
}

/// Upstream's `finalizeDelete` Status for a deleted `obj`: `details.kind` is the resource, and
/// empty fields are omitted as Go's `omitempty` does.
pub fn delete_success(r: &Resource, obj: &Value) -> Value {
    let mut details = serde_json::Map::new();
    let meta = &obj["metadata"];
    if let Some(n) = meta["name"].as_str().filter(|s| !s.is_empty()) {
        details.insert("name".into(), json!(n));
    }
    if !r.group.is_empty() {
        details.insert("group".into(), json!(r.group));
    }
    details.insert("kind".into(), json!(r.plural));
    if let Some(u) = meta["uid"].as_str().filter(|s| !s.is_empty()) {
        details.insert("uid".into(), json!(u));
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
