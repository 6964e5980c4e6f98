//! get: one object by name (as JSON or as a one-row Table).

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use yard_store::KeyValue;

use super::list::table;
use super::{json_response, wants_table};
use crate::codec::from_kv;
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};
use crate::State;

pub(crate) async fn get_kv(state: &State, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<KeyValue> {
    state.store.get(&r.key(ns, name)).await?.ok_or_else(|| ApiError::not_found(r, name))
}

pub async fn get_obj(state: &State, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
    from_kv(&get_kv(state, r, ns, name).await?)
}

pub(crate) async fn get(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let obj = get_obj(state, r, ns, name).await?;
    if wants_table(headers) {
        let rv = obj["metadata"]["resourceVersion"].clone();
        return Ok(json_response(StatusCode::OK, &table(r, &[obj], rv, None, None)));
    }
    Ok(json_response(StatusCode::OK, &obj))
}
