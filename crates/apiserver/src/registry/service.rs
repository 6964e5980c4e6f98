//! The Service strategy: addresses are allocated (by `crate::services`) before validation, status
//! writes are validated as status, and a PUT may create.

use serde_json::{json, Value};
use yard_api::validation::FieldError;

use super::{Resource, Strategy};
use crate::objects::meta_mut;

pub struct Service;
pub static SERVICE: Service = Service;
impl Strategy for Service {
    fn prepare_for_create(&self, obj: &mut Value) {
        meta_mut(obj).remove("generation");
        obj["status"] = json!({"loadBalancer": {}});
    }
    fn validate_status(&self, _r: &Resource, obj: &Value, _old: &Value) -> Vec<FieldError> {
        yard_api::validation::validate_service_status(obj)
    }
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn allocates(&self) -> bool {
        true
    }
}
