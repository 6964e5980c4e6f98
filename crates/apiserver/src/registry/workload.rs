//! The Deployment and ReplicaSet strategy: generation starts at 1, status starts empty.

use serde_json::{json, Value};

use super::Strategy;
use crate::objects::meta_mut;

pub struct Workload;
pub static WORKLOAD: Workload = Workload;
impl Strategy for Workload {
    fn prepare_for_create(&self, obj: &mut Value) {
        meta_mut(obj).insert("generation".into(), json!(1));
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
}
