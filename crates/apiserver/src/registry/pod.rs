//! The Pod strategy: Pending on create; a pod bound to a node is deleted gracefully (its node
//! agent finishes the deletion) unless it already ended.

use serde_json::{json, Value};

use super::Strategy;
use crate::objects::meta_mut;

pub struct Pod;
pub static POD: Pod = Pod;
impl Strategy for Pod {
    fn prepare_for_create(&self, obj: &mut Value) {
        meta_mut(obj).remove("generation");
        let qos = yard_api::qos::pod_qos(&obj["spec"]);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    fn graceful_delete(&self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        let bound = obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
        let ended = obj["status"]["phase"] == "Succeeded" || obj["status"]["phase"] == "Failed";
        if !bound || ended {
            return None;
        }
        let g = requested.unwrap_or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30));
        (g > 0).then_some(g)
    }
}
