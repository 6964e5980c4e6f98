//! The scale and binding subresources.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use yard_api::selector::LabelSelector;
use yard_store::{Op, StoreError};

use super::get::get_kv;
use super::update::update_object;
use super::{json_response, manager_of, parse_input, WriteCtx};
use crate::codec::{encode, from_kv};
use crate::objects::{self, meta_mut};
use crate::registry::Resource;
use crate::rest::Params;
use crate::status::{ApiError, ApiResult};
use crate::State;

pub(crate) fn scale_of(obj: &Value) -> Value {
    let sel = obj["spec"]["selector"].clone();
    let selector = serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(sel)
        .ok()
        .map(|s| LabelSelector::from_k8s(&s).map(|s| s.to_string()).unwrap_or_default())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

pub(crate) async fn update_scale(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    p: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let (scale, _) = parse_input(r, body, headers)?;
    let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
    let mut ctx = WriteCtx { p, manager: manager_of(p, headers), warnings: Vec::new() };
    let kv = get_kv(state, r, ns, name).await?;
    let rv = scale["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse::<i64>().ok());
    if rv.is_some_and(|rv| rv != kv.mod_revision) {
        return Err(ApiError::conflict(r, name));
    }
    let mut obj = from_kv(&kv)?;
    obj["spec"]["replicas"] = json!(replicas);
    let (out, _) = update_object(state, r, ns, &kv, obj, None, &mut ctx, None).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&out)))
}

pub(crate) async fn binding(
    state: &State,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let (b, _) = parse_input(r, body, headers)?;
    let node = b["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request("target.name: Required value"));
    }
    for _ in 0..8 {
        let kv = get_kv(state, r, ns, name).await?;
        let mut pod = from_kv(&kv)?;
        if let Some(cur) = pod["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
            return Err(ApiError::conflict_msg(r, name, format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{cur}\"")));
        }
        pod["spec"]["nodeName"] = json!(node);
        let now = objects::now_rfc3339();
        let conds = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        pod["status"]["conditions"] = json!(conds);
        meta_mut(&mut pod).remove("resourceVersion");
        match state
            .store
            .write(Op::Update { key: kv.key.clone(), value: encode(&pod), expect: Some(kv.mod_revision) })
            .await
        {
            Ok(_) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(r, name))
}
