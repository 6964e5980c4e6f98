//! Object validation with upstream's field errors (`k8s.io/apimachinery/pkg/util/validation/field`)
//! and the rules of `pkg/apis/core/validation`, `pkg/apis/apps/validation` and
//! `pkg/apis/discovery/validation` for the kinds Yard serves. Objects are `serde_json::Value`s as
//! stored by the API server, after defaulting (and, for Services, after IP/port allocation, the
//! order upstream uses).
//!
//! `validate` dispatches by resource; the rules live one file per kind (`meta`, `service`, `pod`,
//! `workload`, `config`, `node`, `endpoints`, `event`), the field errors in `crate::field_error`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::naming;
use crate::selector::LabelSelector;

pub use crate::field_error::*;

mod config;
mod endpoints;
mod event;
mod meta;
mod node;
mod pod;
mod resources;
mod service;
#[cfg(test)]
mod tests;
mod volume;
pub use volume::VOLUME_SOURCES;
mod workload;

use config::*;
use endpoints::*;
use event::*;
pub use meta::*;
use node::*;
pub use pod::*;
pub use service::*;
pub use workload::*;

// ---------------------------------------------------------------------------------------------
// Value access helpers

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    if cur.is_null() {
        None
    } else {
        Some(cur)
    }
}

fn get_str<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn get_i64(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

fn get_arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn get_str_map(v: &Value, path: &[&str]) -> Option<BTreeMap<String, String>> {
    let obj = get(v, path)?.as_object()?;
    Some(
        obj.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))).collect(),
    )
}

fn str_list(v: &[Value]) -> Vec<String> {
    v.iter().map(|x| x.as_str().unwrap_or("").to_string()).collect()
}

fn str_list_value(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A name validator (`ValidateNameFunc`): `(name, is_generate_name_prefix) -> problems`.
pub type NameFn = fn(&str, bool) -> Vec<String>;

// ---------------------------------------------------------------------------------------------
// Entry points

/// Whether a resource (plural name) is namespaced.
pub fn is_namespaced(resource: &str) -> bool {
    !matches!(resource, "namespaces" | "nodes")
}

fn name_fn(resource: &str) -> NameFn {
    match resource {
        "services" => naming::name_is_dns1035_label,
        "namespaces" => naming::name_is_dns_label,
        "events" => naming::name_is_path_segment,
        _ => naming::name_is_dns_subdomain,
    }
}

/// Validates `obj` (a `resource` given by plural name) for create (`old == None`) or update.
/// Returns every error, in upstream's order.
pub fn validate(resource: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let empty = Value::Object(Map::new());
    let meta = obj.get("metadata").unwrap_or(&empty);
    let mut errs = Vec::new();
    // Create validates the whole ObjectMeta; update validates the changes and the label and
    // annotation syntax (ValidateObjectMetaUpdate), as upstream.
    let validate_meta = |requires_namespace: bool| -> Vec<FieldError> {
        match old {
            None => validate_object_meta(meta, requires_namespace, name_fn(resource), "metadata"),
            Some(old) => validate_object_meta_update(meta, old.get("metadata").unwrap_or(&empty), "metadata"),
        }
    };
    match resource {
        "services" => {
            errs.extend(validate_meta(true));
            match old {
                Some(old) => {
                    // Validate what upstream's registry would: clusterIPs normalised against the
                    // stored object first.
                    let mut svc = obj.clone();
                    crate::defaults::normalize_service_cluster_ips(&mut svc, Some(old));
                    errs.extend(validate_service_update(&svc, old));
                    errs.extend(validate_service(&svc));
                }
                None => errs.extend(validate_service(obj)),
            }
        }
        "pods" => {
            errs.extend(validate_meta(true));
            errs.extend(validate_pod_spec(obj.get("spec").unwrap_or(&empty), "spec"));
            if let Some(old) = old {
                errs.extend(validate_pod_update(obj, old));
            }
        }
        "deployments" | "replicasets" => {
            errs.extend(validate_meta(true));
            errs.extend(validate_workload_spec(resource, obj.get("spec").unwrap_or(&empty), "spec"));
            if let Some(old) = old {
                let new_sel = get(obj, &["spec", "selector"]).map(sorted_value).unwrap_or(Value::Null);
                let old_sel = get(old, &["spec", "selector"]).map(sorted_value).unwrap_or(Value::Null);
                if new_sel != old_sel {
                    errs.push(FieldError::invalid("spec.selector", new_sel, FIELD_IMMUTABLE));
                }
            }
        }
        "configmaps" => {
            errs.extend(validate_meta(true));
            errs.extend(validate_config_map(obj));
            if let Some(old) = old {
                errs.extend(validate_immutable_data(obj, old, &["data", "binaryData"]));
            }
        }
        "secrets" => {
            errs.extend(validate_meta(true));
            errs.extend(validate_secret(obj));
            if let Some(old) = old {
                let (t, ot) = (get_str(obj, &["type"]), get_str(old, &["type"]));
                if t != ot {
                    errs.push(FieldError::invalid("type", t, FIELD_IMMUTABLE));
                }
                errs.extend(validate_immutable_data(obj, old, &["data"]));
            }
        }
        "namespaces" => {
            errs.extend(validate_meta(false));
            for (i, f) in get_arr(obj, &["spec", "finalizers"]).iter().enumerate() {
                let f = f.as_str().unwrap_or("");
                let p = idx("spec.finalizers", i);
                for m in naming::is_qualified_name(f) {
                    errs.push(FieldError::invalid(p.clone(), f, m));
                }
                if !f.contains('/') && !matches!(f, "kubernetes" | "orphan" | "foregroundDeletion") {
                    errs.push(FieldError::invalid(
                        p,
                        f,
                        "name is neither a standard finalizer name nor is it fully qualified",
                    ));
                }
            }
        }
        "nodes" => {
            errs.extend(validate_meta(false));
            errs.extend(validate_node(obj, old));
        }
        "endpoints" => {
            errs.extend(validate_meta(true));
            errs.extend(validate_endpoints(obj));
        }
        "endpointslices" => {
            errs.extend(validate_meta(true));
            errs.extend(validate_endpoint_slice(obj));
            if let Some(old) = old {
                let (t, ot) = (get_str(obj, &["addressType"]), get_str(old, &["addressType"]));
                if t != ot {
                    errs.push(FieldError::invalid("addressType", t, FIELD_IMMUTABLE));
                }
            }
        }
        "leases" => {
            errs.extend(validate_meta(true));
            if let Some(d) = get_i64(obj, &["spec", "leaseDurationSeconds"]) {
                if d <= 0 {
                    errs.push(FieldError::invalid("spec.leaseDurationSeconds", d, "must be greater than 0"));
                }
            }
            if let Some(t) = get_i64(obj, &["spec", "leaseTransitions"]) {
                if t < 0 {
                    errs.push(FieldError::invalid("spec.leaseTransitions", t, IS_NEGATIVE));
                }
            }
        }
        "events" => {
            errs.extend(validate_meta(true));
            errs.extend(validate_event(obj));
        }
        _ => {
            errs.extend(validate_meta(is_namespaced(resource)));
        }
    }
    errs
}

pub const FIELD_IMMUTABLE: &str = "field is immutable";
const IS_NEGATIVE: &str = "must be greater than or equal to 0";
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
const MAX_SECRET_SIZE: usize = 1024 * 1024;
const SUPPORTED_PORT_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
