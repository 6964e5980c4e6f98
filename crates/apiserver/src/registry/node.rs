//! The Node strategy: a spec without generation.

use serde_json::Value;

use super::Strategy;
use crate::objects::meta_mut;

pub struct Node;
pub static NODE: Node = Node;
impl Strategy for Node {
    fn prepare_for_create(&self, obj: &mut Value) {
        meta_mut(obj).remove("generation");
    }
}
