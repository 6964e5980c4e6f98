//! Strategies of the kinds without spec or status semantics: ConfigMap, Secret, ServiceAccount,
//! EndpointSlice, the reviews (PLAIN), and Endpoints, Event and Lease, which a PUT may create.

use super::Strategy;

/// A kind validated as stored, nothing else decided.
pub struct Plain;
pub static PLAIN: Plain = Plain;
impl Strategy for Plain {}

/// A plain kind whose PUT creates a missing object (upstream's AllowCreateOnUpdate).
pub struct CreateOnUpdate;
pub static CREATE_ON_UPDATE: CreateOnUpdate = CreateOnUpdate;
impl Strategy for CreateOnUpdate {
    fn allow_create_on_update(&self) -> bool {
        true
    }
}
