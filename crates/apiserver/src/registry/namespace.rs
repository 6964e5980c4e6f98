//! The Namespace strategy: Active on create, Terminating while its spec finalizers hold it.

use serde_json::{json, Value};

use super::Strategy;

pub struct Namespace;
pub static NAMESPACE: Namespace = Namespace;
impl Strategy for Namespace {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }
    fn holds_deletion(&self, obj: &Value) -> bool {
        obj["spec"]["finalizers"].as_array().is_some_and(|a| !a.is_empty())
    }
    fn on_deletion_started(&self, obj: &mut Value) {
        obj["status"]["phase"] = json!("Terminating");
    }
}
