//! managedFields bookkeeping for non-apply writes, delegating the field-set logic to
//! `yard_api::patch`.

use serde_json::Value;

/// Record that `manager` wrote `new` (over `old`) with `operation` on `subresource`.
/// An empty manager means the write already recorded its ownership (server-side apply).
pub fn track(old: Option<&Value>, new: &mut Value, manager: &str, operation: &str, subresource: Option<&str>) {
    if manager.is_empty() {
        return;
    }
    let sub = subresource.filter(|s| *s == "status" || *s == "scale");
    yard_api::patch::track_update(old, new, manager, operation, sub, &crate::objects::now_rfc3339());
}
