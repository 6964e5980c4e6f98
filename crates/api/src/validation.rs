//! Object validation with upstream's field errors (`k8s.io/apimachinery/pkg/util/validation/field`)
//! and the rules of `pkg/apis/core/validation`, `pkg/apis/apps/validation` and
//! `pkg/apis/discovery/validation` for the kinds Yard serves. Objects are `serde_json::Value`s as
//! stored by the API server, after defaulting (and, for Services, after IP/port allocation, the
//! order upstream uses).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Map, Value};

use crate::naming;
use crate::selector::LabelSelector;

/// The kind of a field error (upstream `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
    TypeInvalid,
}

impl ErrorKind {
    /// The canonical text (`ErrorType.String()`), e.g. `Invalid value`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "Not found",
            ErrorKind::Required => "Required value",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::Invalid => "Invalid value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany => "Too many",
            ErrorKind::Internal => "Internal error",
            ErrorKind::TypeInvalid => "Invalid value",
        }
    }

    /// The StatusCause type (`metav1.CauseType`), e.g. `FieldValueInvalid`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "FieldValueNotFound",
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany => "FieldValueTooMany",
            ErrorKind::Internal => "InternalError",
            ErrorKind::TypeInvalid => "FieldValueTypeInvalid",
        }
    }
}

/// One field-level validation error, printed exactly like upstream's `field.Error`.
///
/// `value` is the bad value as Go would hold it: strings print quoted (`%q`), numbers and
/// booleans plainly, anything else as JSON (build objects that stand for Go maps with sorted
/// keys, and objects that stand for Go structs in field order). `None` omits the value.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: ErrorKind,
    pub field: String,
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { kind: ErrorKind::Required, field: field.into(), value: None, detail: detail.into() }
    }
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        FieldError { kind: ErrorKind::Invalid, field: field.into(), value: Some(value.into()), detail: detail.into() }
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        FieldError { kind: ErrorKind::Duplicate, field: field.into(), value: Some(value.into()), detail: String::new() }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { kind: ErrorKind::Forbidden, field: field.into(), value: None, detail: detail.into() }
    }
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        FieldError { kind: ErrorKind::NotFound, field: field.into(), value: Some(value.into()), detail: String::new() }
    }
    /// `Unsupported value: "x": supported values: "a", "b"`
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, valid: &[&str]) -> Self {
        let detail = if valid.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError { kind: ErrorKind::NotSupported, field: field.into(), value: Some(value.into()), detail }
    }
    /// `Too long: may not be more than N bytes`
    pub fn too_long(field: impl Into<String>, max_length: i64) -> Self {
        let detail = if max_length >= 0 {
            format!("may not be more than {max_length} {}", if max_length == 1 { "byte" } else { "bytes" })
        } else {
            "value is too long".to_string()
        };
        FieldError { kind: ErrorKind::TooLong, field: field.into(), value: None, detail }
    }
    /// `Too many: 101: must have at most 100 items`
    pub fn too_many(field: impl Into<String>, actual: i64, max: i64) -> Self {
        let detail = if max >= 0 {
            format!("must have at most {max} {}", if max == 1 { "item" } else { "items" })
        } else {
            "has too many items".to_string()
        };
        FieldError {
            kind: ErrorKind::TooMany,
            field: field.into(),
            value: if actual >= 0 { Some(Value::from(actual)) } else { None },
            detail,
        }
    }
    pub fn type_invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: ErrorKind::TypeInvalid,
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }
    pub fn internal(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { kind: ErrorKind::Internal, field: field.into(), value: None, detail: detail.into() }
    }

    /// The StatusCause `reason` (`FieldValueInvalid`, ...).
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// Upstream's `ErrorBody()`: the message without the field path, as used in
    /// `details.causes[].message`.
    pub fn message_without_field(&self) -> String {
        let mut s = match self.kind {
            ErrorKind::Required | ErrorKind::Forbidden | ErrorKind::TooLong | ErrorKind::Internal => {
                self.kind.as_str().to_string()
            }
            _ => match &self.value {
                None => self.kind.as_str().to_string(),
                Some(v) => format!("{}: {}", self.kind.as_str(), render_bad_value(v)),
            },
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// Alias of [`FieldError::message_without_field`].
    pub fn body(&self) -> String {
        self.message_without_field()
    }

    /// The StatusCause object: `{"reason", "message", "field"}`.
    pub fn to_cause(&self) -> Value {
        json!({"reason": self.reason(), "message": self.message_without_field(), "field": self.field})
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message_without_field())
    }
}

impl std::error::Error for FieldError {}

/// Go's `%q` for a string.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `json.Marshal` text for a value (HTML characters escaped as Go does).
pub fn go_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn render_bad_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => go_json(other),
    }
}

/// A Go `map[string]string` as a bad value: a JSON object with sorted keys.
pub fn string_map_value(m: &BTreeMap<String, String>) -> Value {
    let mut out = Map::new();
    for (k, v) in m {
        out.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(out)
}

/// A JSON value with every object's keys sorted (how Go marshals maps and most API structs).
pub fn sorted_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted_value(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted_value).collect()),
        other => other.clone(),
    }
}

/// Upstream's aggregate message (`utilerrors.NewAggregate(...).Error()` over `ErrorList.ToAggregate()`):
/// one message alone, several as `[a, b]`, duplicates dropped.
pub fn aggregate_message(errs: &[FieldError]) -> String {
    let mut seen = BTreeSet::new();
    let mut msgs = Vec::new();
    for e in errs {
        let m = e.to_string();
        if seen.insert(m.clone()) {
            msgs.push(m);
        }
    }
    if msgs.len() == 1 {
        return msgs.remove(0);
    }
    format!("[{}]", msgs.join(", "))
}

/// `Service "x" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive`.
/// `kind` is the qualified kind as upstream prints a GroupKind (`Service`, `Deployment.apps`).
pub fn invalid_status_message(kind: &str, name: &str, errs: &[FieldError]) -> String {
    if errs.is_empty() {
        format!("{kind} {} is invalid", go_quote(name))
    } else {
        format!("{kind} {} is invalid: {}", go_quote(name), aggregate_message(errs))
    }
}

/// GroupKind string: `Kind` for the core group, `Kind.group` otherwise.
pub fn qualified_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// `details.causes` for a 422 Invalid Status.
pub fn status_causes(errs: &[FieldError]) -> Vec<Value> {
    errs.iter().map(FieldError::to_cause).collect()
}

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

// ---------------------------------------------------------------------------------------------
// ObjectMeta

/// ValidateObjectMeta: name (or generateName), namespace, generation, labels, annotations,
/// ownerReferences and finalizers.
pub fn validate_object_meta(meta: &Value, requires_namespace: bool, name_fn: NameFn, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let generate_name = get_str(meta, &["generateName"]);
    if !generate_name.is_empty() {
        for m in name_fn(generate_name, true) {
            errs.push(FieldError::invalid(child(path, "generateName"), generate_name, m));
        }
    }
    let name = get_str(meta, &["name"]);
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), "name or generateName is required"));
    } else {
        for m in name_fn(name, false) {
            errs.push(FieldError::invalid(child(path, "name"), name, m));
        }
    }
    let ns = get_str(meta, &["namespace"]);
    if requires_namespace {
        if ns.is_empty() {
            errs.push(FieldError::required(child(path, "namespace"), ""));
        } else {
            for m in naming::name_is_dns_label(ns, false) {
                errs.push(FieldError::invalid(child(path, "namespace"), ns, m));
            }
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(child(path, "namespace"), "not allowed on this type"));
    }
    if let Some(g) = get_i64(meta, &["generation"]) {
        if g < 0 {
            errs.push(FieldError::invalid(child(path, "generation"), g, IS_NEGATIVE));
        }
    }
    errs.extend(validate_labels(&get_str_map(meta, &["labels"]).unwrap_or_default(), &child(path, "labels")));
    errs.extend(validate_annotations(
        &get_str_map(meta, &["annotations"]).unwrap_or_default(),
        &child(path, "annotations"),
    ));
    errs.extend(validate_owner_references(get_arr(meta, &["ownerReferences"]), &child(path, "ownerReferences")));
    let fpath = child(path, "finalizers");
    let finalizers = str_list(get_arr(meta, &["finalizers"]));
    for f in &finalizers {
        for m in naming::is_qualified_name(f) {
            errs.push(FieldError::invalid(fpath.clone(), f.as_str(), m));
        }
    }
    if finalizers.iter().any(|f| f == "orphan") && finalizers.iter().any(|f| f == "foregroundDeletion") {
        errs.push(FieldError::invalid(
            fpath,
            str_list_value(&finalizers),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// ValidateLabels: every key a qualified name, every value a label value (errors on the map path).
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        for m in naming::is_qualified_name(k) {
            errs.push(FieldError::invalid(path, k.as_str(), m));
        }
        for m in naming::is_valid_label_value(v) {
            errs.push(FieldError::invalid(path, v.as_str(), m));
        }
    }
    errs
}

/// ValidateAnnotations: keys are qualified names (case-insensitive), total size at most 256 KiB.
pub fn validate_annotations(annotations: &BTreeMap<String, String>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        for m in naming::is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k.as_str(), m));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT as i64));
    }
    errs
}

fn validate_owner_references(refs: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut controllers = Vec::new();
    for r in refs {
        let api_version = get_str(r, &["apiVersion"]);
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(child(path, "apiVersion"), api_version, "version must not be empty"));
        }
        let kind = get_str(r, &["kind"]);
        if kind.is_empty() {
            errs.push(FieldError::invalid(child(path, "kind"), kind, "must not be empty"));
        }
        let name = get_str(r, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::invalid(child(path, "name"), name, "must not be empty"));
        }
        let uid = get_str(r, &["uid"]);
        if uid.is_empty() {
            errs.push(FieldError::invalid(child(path, "uid"), uid, "must not be empty"));
        }
        if get(r, &["controller"]).and_then(Value::as_bool) == Some(true) {
            controllers.push(name.to_string());
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            path,
            Value::Array(refs.iter().map(sorted_value).collect()),
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {} and {}",
                controllers[0], controllers[1]
            ),
        ));
    }
    errs
}

/// ValidateObjectMetaUpdate: name, namespace, uid, creationTimestamp, deletionTimestamp and
/// deletionGracePeriodSeconds are immutable; no new finalizers once deleting.
pub fn validate_object_meta_update(new: &Value, old: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if get(old, &["deletionTimestamp"]).is_some() {
        let old_f: BTreeSet<String> = str_list(get_arr(old, &["finalizers"])).into_iter().collect();
        let added: Vec<String> =
            str_list(get_arr(new, &["finalizers"])).into_iter().filter(|f| !old_f.contains(f)).collect();
        if !added.is_empty() {
            errs.push(FieldError::forbidden(
                child(path, "finalizers"),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    added.iter().map(|f| go_quote(f)).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    for f in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        let nv = get(new, &[f]).cloned().unwrap_or(Value::Null);
        let ov = get(old, &[f]).cloned().unwrap_or(Value::Null);
        let (nv, ov) = if matches!(f, "name" | "namespace" | "uid") {
            (
                if nv.is_null() { Value::String(String::new()) } else { nv },
                if ov.is_null() { Value::String(String::new()) } else { ov },
            )
        } else {
            (nv, ov)
        };
        if nv != ov {
            errs.push(FieldError::invalid(child(path, f), nv, FIELD_IMMUTABLE));
        }
    }
    errs.extend(validate_labels(&get_str_map(new, &["labels"]).unwrap_or_default(), &child(path, "labels")));
    errs.extend(validate_annotations(
        &get_str_map(new, &["annotations"]).unwrap_or_default(),
        &child(path, "annotations"),
    ));
    errs.extend(validate_owner_references(get_arr(new, &["ownerReferences"]), &child(path, "ownerReferences")));
    errs
}

// ---------------------------------------------------------------------------------------------
// Services

fn is_headless(svc: &Value) -> bool {
    let ips = get_arr(svc, &["spec", "clusterIPs"]);
    ips.len() == 1 && ips[0].as_str() == Some("None")
}

fn externally_accessible(svc: &Value) -> bool {
    let t = get_str(svc, &["spec", "type"]);
    t == "LoadBalancer" || t == "NodePort" || (t == "ClusterIP" && !get_arr(svc, &["spec", "externalIPs"]).is_empty())
}

fn needs_health_check(svc: &Value) -> bool {
    get_str(svc, &["spec", "type"]) == "LoadBalancer" && get_str(svc, &["spec", "externalTrafficPolicy"]) == "Local"
}

/// The target port as Go's intstr: a number, or a string.
fn int_or_string(v: Option<&Value>) -> Value {
    match v {
        None => Value::from(0),
        Some(v) => v.clone(),
    }
}

/// ValidateService (create and update).
pub fn validate_service(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let no_spec = Value::Object(Map::new());
    let spec = svc.get("spec").unwrap_or(&no_spec);
    let stype = get_str(spec, &["type"]);
    let ports = get_arr(spec, &["ports"]);
    let headless = is_headless(svc);
    let cluster_ips = str_list(get_arr(spec, &["clusterIPs"]));

    let topo_mode =
        get(svc, &["metadata", "annotations", "service.kubernetes.io/topology-mode"]).and_then(Value::as_str);
    let topo_hints =
        get(svc, &["metadata", "annotations", "service.kubernetes.io/topology-aware-hints"]).and_then(Value::as_str);
    if let (Some(mode), Some(hints)) = (topo_mode, topo_hints) {
        if mode != hints {
            errs.push(FieldError::invalid(
                "metadata.annotations[service.kubernetes.io/topology-mode]",
                mode,
                "must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
            ));
        }
    }
    if ports.is_empty() && !headless && stype != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match stype {
        "LoadBalancer" if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                cluster_ips[0].as_str(),
                "may not be set to 'None' for LoadBalancer services",
            ));
        }
        "NodePort" if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                cluster_ips[0].as_str(),
                "may not be set to 'None' for NodePort services",
            ));
        }
        "ExternalName" => {
            if !cluster_ips.is_empty() {
                errs.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
            }
            if !get_arr(spec, &["ipFamilies"]).is_empty() {
                errs.push(FieldError::forbidden("spec.ipFamilies", "may not be set for ExternalName services"));
            }
            if get(spec, &["ipFamilyPolicy"]).is_some() {
                errs.push(FieldError::forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"));
            }
            let en = get_str(spec, &["externalName"]);
            let cname = en.strip_suffix('.').unwrap_or(en);
            if !cname.is_empty() {
                for m in naming::is_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid("spec.externalName", cname, m));
                }
            } else {
                errs.push(FieldError::required("spec.externalName", ""));
            }
        }
        _ => {}
    }

    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(validate_service_port(p, ports.len() > 1, &mut names, &idx("spec.ports", i)));
    }

    if let Some(sel) = get_str_map(spec, &["selector"]) {
        errs.extend(validate_labels(&sel, "spec.selector"));
    }

    let affinity = get_str(spec, &["sessionAffinity"]);
    if affinity.is_empty() {
        errs.push(FieldError::required("spec.sessionAffinity", ""));
    } else if !matches!(affinity, "ClientIP" | "None") {
        errs.push(FieldError::not_supported("spec.sessionAffinity", affinity, &["ClientIP", "None"]));
    }
    if affinity == "ClientIP" {
        let p = "spec.sessionAffinityConfig";
        let detail = "when session affinity type is ClientIP";
        match get(spec, &["sessionAffinityConfig"]) {
            None => errs.push(FieldError::required(p, detail)),
            Some(cfg) => match get(cfg, &["clientIP"]) {
                None => errs.push(FieldError::required(child(p, "clientIP"), detail)),
                Some(cip) => match get(cip, &["timeoutSeconds"]) {
                    None => {
                        errs.push(FieldError::required("spec.sessionAffinityConfig.clientIP.timeoutSeconds", detail))
                    }
                    Some(t) => {
                        let tv = t.as_i64().unwrap_or(0);
                        if tv <= 0 || tv > 86400 {
                            errs.push(FieldError::invalid(
                                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                                t.clone(),
                                "must be greater than 0 and less than 86400",
                            ));
                        }
                    }
                },
            },
        }
    } else if affinity == "None" && get(spec, &["sessionAffinityConfig"]).is_some() {
        errs.push(FieldError::forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"));
    }

    errs.extend(validate_service_cluster_ips_related_fields(svc));

    for (i, ip) in get_arr(spec, &["externalIPs"]).iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        let p = idx("spec.externalIPs", i);
        let msgs = naming::is_valid_ip(ip);
        if !msgs.is_empty() {
            for m in msgs {
                errs.push(FieldError::invalid(p.clone(), ip, m));
            }
        } else {
            errs.extend(validate_non_special_ip(ip, &p));
        }
    }

    if stype.is_empty() {
        errs.push(FieldError::required("spec.type", ""));
    } else if !matches!(stype, "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort") {
        errs.push(FieldError::not_supported(
            "spec.type",
            stype,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }

    if stype == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if get_i64(p, &["nodePort"]).unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }

    // Duplicate node ports, per protocol.
    let mut node_ports = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let np = get_i64(p, &["nodePort"]).unwrap_or(0);
        if np == 0 {
            continue;
        }
        let k = (get_str(p, &["protocol"]).to_string(), np);
        if !node_ports.insert(k) {
            errs.push(FieldError::duplicate(format!("spec.ports[{i}].nodePort"), np));
        }
    }
    // Duplicate (protocol, port) pairs; the bad value is a core.ServicePort with only those set.
    let mut pairs = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = get_str(p, &["protocol"]).to_string();
        let port = get_i64(p, &["port"]).unwrap_or(0);
        if !pairs.insert((proto.clone(), port)) {
            let mut key = Map::new();
            key.insert("Name".into(), Value::String(String::new()));
            key.insert("Protocol".into(), Value::String(proto));
            key.insert("AppProtocol".into(), Value::Null);
            key.insert("Port".into(), Value::from(port));
            key.insert("TargetPort".into(), Value::from(0));
            key.insert("NodePort".into(), Value::from(0));
            errs.push(FieldError::duplicate(idx("spec.ports", i), Value::Object(key)));
        }
    }

    // LoadBalancerSourceRanges (the field, else the legacy annotation).
    const SOURCE_RANGES_ANN: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
    let ranges = str_list(get_arr(spec, &["loadBalancerSourceRanges"]));
    if !ranges.is_empty() {
        let fpath = "spec.LoadBalancerSourceRanges";
        if stype != "LoadBalancer" {
            errs.push(FieldError::forbidden(fpath, "may only be used when `type` is 'LoadBalancer'"));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            if !is_valid_cidr(r) {
                errs.push(FieldError::invalid(idx(fpath, i), r, CIDR_MSG));
            }
        }
    } else if let Some(val) = get(svc, &["metadata", "annotations", SOURCE_RANGES_ANN]).and_then(Value::as_str) {
        let fpath = key("metadata.annotations", SOURCE_RANGES_ANN);
        if stype != "LoadBalancer" {
            errs.push(FieldError::forbidden(fpath.clone(), "may only be used when `type` is 'LoadBalancer'"));
        }
        let val = val.trim();
        if !val.is_empty() {
            for r in val.split(',') {
                let r = r.trim();
                if !is_valid_cidr(r) {
                    errs.push(FieldError::invalid(fpath.clone(), r, CIDR_MSG));
                }
            }
        }
    }

    // allocateLoadBalancerNodePorts (upstream reports the missing value at the root path).
    if get(spec, &["allocateLoadBalancerNodePorts"]).is_some() && stype != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if stype == "LoadBalancer" && get(spec, &["allocateLoadBalancerNodePorts"]).is_none() {
        errs.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }

    // loadBalancerClass.
    if stype == "LoadBalancer" {
        if let Some(c) = get(spec, &["loadBalancerClass"]).and_then(Value::as_str) {
            for m in naming::is_qualified_name(c) {
                errs.push(FieldError::invalid("spec.loadBalancerClass", c, m));
            }
        }
    } else if get(spec, &["loadBalancerClass"]).is_some() {
        errs.push(FieldError::forbidden("spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'"));
    }

    // externalTrafficPolicy / healthCheckNodePort.
    let etp = get_str(spec, &["externalTrafficPolicy"]);
    if !externally_accessible(svc) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required("spec.externalTrafficPolicy", ""));
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.push(FieldError::not_supported("spec.externalTrafficPolicy", etp, &["Cluster", "Local"]));
    }
    let hcnp = get_i64(spec, &["healthCheckNodePort"]).unwrap_or(0);
    if needs_health_check(svc) {
        if hcnp <= 0 {
            errs.push(FieldError::required("spec.healthCheckNodePort", ""));
        } else {
            for m in naming::is_valid_port_num(hcnp) {
                errs.push(FieldError::invalid("spec.healthCheckNodePort", hcnp, m));
            }
        }
    } else if hcnp != 0 {
        errs.push(FieldError::invalid(
            "spec.healthCheckNodePort",
            hcnp,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }

    // internalTrafficPolicy.
    match get(spec, &["internalTrafficPolicy"]) {
        None => {
            if matches!(stype, "NodePort" | "LoadBalancer" | "ClusterIP") {
                errs.push(FieldError::required("spec.internalTrafficPolicy", ""));
            }
        }
        Some(v) => {
            let itp = v.as_str().unwrap_or("");
            if !matches!(itp, "Cluster" | "Local") {
                errs.push(FieldError::not_supported("spec.internalTrafficPolicy", itp, &["Cluster", "Local"]));
            }
        }
    }

    // trafficDistribution.
    if let Some(td) = get(spec, &["trafficDistribution"]).and_then(Value::as_str) {
        const SUPPORTED: &[&str] = &["PreferClose", "PreferSameZone", "PreferSameNode"];
        if !SUPPORTED.contains(&td) {
            errs.push(FieldError::not_supported("spec.trafficDistribution", td, SUPPORTED));
        }
    }
    errs
}

const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// `netutils.ParseCIDRSloppy`: an IP (IPv4 octets may carry leading zeros) and a prefix length.
fn is_valid_cidr(v: &str) -> bool {
    let Some((ip, prefix)) = v.split_once('/') else { return false };
    let Some(ip) = naming::parse_ip_sloppy(ip) else { return false };
    if prefix.is_empty() || !prefix.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.parse::<u32>().is_ok_and(|p| p <= max)
}

/// ValidateServiceStatusUpdate's load balancer rules (`status.loadBalancer.ingress`).
pub fn validate_service_status(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ingress = get_arr(svc, &["status", "loadBalancer", "ingress"]);
    let path = "status.loadBalancer.ingress";
    if get_str(svc, &["spec", "type"]) != "LoadBalancer" && !ingress.is_empty() {
        errs.push(FieldError::forbidden(path, "may only be used when `spec.type` is 'LoadBalancer'"));
        return errs;
    }
    for (i, ing) in ingress.iter().enumerate() {
        let ip_path = idx(path, i);
        let ip = get_str(ing, &["ip"]);
        if !ip.is_empty() {
            for m in naming::is_valid_ip(ip) {
                errs.push(FieldError::invalid(child(&ip_path, "ip"), ip, m));
            }
        }
        match get(ing, &["ipMode"]).and_then(Value::as_str) {
            None if !ip.is_empty() => {
                errs.push(FieldError::required(child(&ip_path, "ipMode"), "must be specified when `ip` is set"));
            }
            Some(_) if ip.is_empty() => {
                errs.push(FieldError::forbidden(
                    child(&ip_path, "ipMode"),
                    "may not be specified when `ip` is not set",
                ));
            }
            Some(mode) if !matches!(mode, "Proxy" | "VIP") => {
                errs.push(FieldError::not_supported(child(&ip_path, "ipMode"), mode, &["Proxy", "VIP"]));
            }
            _ => {}
        }
        let host = get_str(ing, &["hostname"]);
        if !host.is_empty() {
            for m in naming::is_dns1123_subdomain(host) {
                errs.push(FieldError::invalid(child(&ip_path, "hostname"), host, m));
            }
            if naming::parse_ip_sloppy(host).is_some() {
                errs.push(FieldError::invalid(
                    child(&ip_path, "hostname"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
        }
    }
    errs
}

fn validate_service_port(p: &Value, require_name: bool, names: &mut BTreeSet<String>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = get_str(p, &["name"]);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    } else if !name.is_empty() {
        for m in naming::is_dns1123_label(name) {
            errs.push(FieldError::invalid(child(path, "name"), name, m));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(path, "name"), name));
        }
    }
    let port = get_i64(p, &["port"]).unwrap_or(0);
    for m in naming::is_valid_port_num(port) {
        errs.push(FieldError::invalid(child(path, "port"), port, m));
    }
    let proto = get_str(p, &["protocol"]);
    if proto.is_empty() {
        errs.push(FieldError::required(child(path, "protocol"), ""));
    } else if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) {
        errs.push(FieldError::not_supported(child(path, "protocol"), proto, SUPPORTED_PORT_PROTOCOLS));
    }
    errs.extend(validate_port_num_or_name(&int_or_string(get(p, &["targetPort"])), &child(path, "targetPort")));
    if let Some(ap) = get(p, &["appProtocol"]).and_then(Value::as_str) {
        for m in naming::is_qualified_name(ap) {
            errs.push(FieldError::invalid(child(path, "appProtocol"), ap, m));
        }
    }
    errs
}

/// ValidatePortNumOrName: a port number (1-65535) or an IANA service name.
pub fn validate_port_num_or_name(v: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match v {
        Value::String(s) if s.is_empty() => errs.push(FieldError::required(path, "")),
        Value::String(s) => {
            for m in naming::is_valid_port_name(s) {
                errs.push(FieldError::invalid(path, s.as_str(), m));
            }
        }
        other => {
            let n = other.as_i64().unwrap_or(0);
            for m in naming::is_valid_port_num(n) {
                errs.push(FieldError::invalid(path, n, m));
            }
        }
    }
    errs
}

fn validate_non_special_ip(ip: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(addr) = naming::parse_ip_sloppy(ip) else { return errs };
    let (unspecified, loopback, link_local, ll_multicast) = match addr {
        std::net::IpAddr::V4(a) => (
            a.is_unspecified(),
            a.is_loopback(),
            a.is_link_local(),
            a.octets()[0] == 224 && a.octets()[1] == 0 && a.octets()[2] == 0,
        ),
        std::net::IpAddr::V6(a) => {
            let s = a.segments();
            (a.is_unspecified(), a.is_loopback(), (s[0] & 0xffc0) == 0xfe80, (s[0] & 0xff0f) == 0xff02)
        }
    };
    if unspecified {
        errs.push(FieldError::invalid(path, ip, format!("may not be unspecified ({ip})")));
    }
    if loopback {
        errs.push(FieldError::invalid(path, ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)"));
    }
    if link_local {
        errs.push(FieldError::invalid(path, ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
    }
    if ll_multicast {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// ValidateServiceClusterIPsRelatedFields: clusterIP/clusterIPs sync, ipFamilies, ipFamilyPolicy.
pub fn validate_service_cluster_ips_related_fields(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if get_str(svc, &["spec", "type"]) == "ExternalName" {
        return errs;
    }
    let cluster_ip = get_str(svc, &["spec", "clusterIP"]);
    let ips = str_list(get_arr(svc, &["spec", "clusterIPs"]));
    let families = str_list(get_arr(svc, &["spec", "ipFamilies"]));
    let ips_value = str_list_value(&ips);
    if !cluster_ip.is_empty() {
        if ips.is_empty() {
            errs.push(FieldError::required("spec.clusterIPs", ""));
        } else if ips[0] != cluster_ip {
            errs.push(FieldError::invalid("spec.clusterIPs", ips_value.clone(), "first value must match `clusterIP`"));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            ips_value.clone(),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, f) in families.iter().enumerate() {
        if !matches!(f.as_str(), "IPv4" | "IPv6") {
            errs.push(FieldError::not_supported(idx("spec.ipFamilies", i), f.as_str(), &["IPv4", "IPv6"]));
        }
        if !seen.insert(f.clone()) {
            errs.push(FieldError::duplicate(idx("spec.ipFamilies", i), f.as_str()));
        }
    }
    if let Some(p) = get(svc, &["spec", "ipFamilyPolicy"]) {
        let p = p.as_str().unwrap_or("");
        if !matches!(p, "PreferDualStack" | "RequireDualStack" | "SingleStack") {
            errs.push(FieldError::not_supported(
                "spec.ipFamilyPolicy",
                p,
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            ));
        }
    }
    let mut has_invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                has_invalid = true;
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    ips_value.clone(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let msgs = naming::is_valid_ip(ip);
        if !msgs.is_empty() {
            has_invalid = true;
        }
        for m in msgs {
            errs.push(FieldError::invalid(idx("spec.clusterIPs", i), ip.as_str(), m));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid("spec.clusterIPs", ips_value.clone(), "may only hold up to 2 values"));
    }
    if has_invalid {
        return errs;
    }
    if ips.len() > 1 {
        let v6: Vec<bool> = ips.iter().map(|ip| ip.contains(':')).collect();
        let dual = ips.len() == 2 && v6[0] != v6[1];
        if !dual {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                ips_value.clone(),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(svc) && !ips.is_empty() && !families.is_empty() {
        for (i, ip) in ips.iter().enumerate() {
            if i >= families.len() {
                break;
            }
            let is6 = naming::parse_ip_sloppy(ip).map(|a| a.is_ipv6()).unwrap_or(false);
            if families[i] == "IPv4" && is6 {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if families[i] == "IPv6" && !is6 {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// The update-only checks of ValidateServiceUpdate (clusterIPs, ipFamilies, loadBalancerClass).
pub fn validate_service_update(svc: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (t, ot) = (get_str(svc, &["spec", "type"]), get_str(old, &["spec", "type"]));
    if t != "ExternalName" && ot != "ExternalName" {
        let new_ips = str_list(get_arr(svc, &["spec", "clusterIPs"]));
        let old_ips = str_list(get_arr(old, &["spec", "clusterIPs"]));
        let nv = str_list_value(&new_ips);
        if !(is_headless(svc) && is_headless(old)) {
            if old_ips.len() == new_ips.len() {
                for (i, ip) in old_ips.iter().enumerate() {
                    if *ip != new_ips[i] {
                        errs.push(FieldError::invalid(
                            idx("spec.clusterIPs", i),
                            nv.clone(),
                            "may not change once set",
                        ));
                    }
                }
            } else if old_ips.len() > new_ips.len() {
                if new_ips.is_empty() {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs[0]",
                        nv.clone(),
                        "primary clusterIP can not be unset",
                    ));
                }
                if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
                    errs.push(FieldError::invalid("spec.clusterIPs[0]", nv.clone(), "may not change once set"));
                }
                if new_ips.len() == 1 && get_str(svc, &["spec", "ipFamilyPolicy"]) != "SingleStack" {
                    errs.push(FieldError::invalid(
                        "spec.ipFamilyPolicy",
                        get(svc, &["spec", "ipFamilyPolicy"]).cloned().unwrap_or(Value::Null),
                        "must be set to 'SingleStack' when releasing the secondary clusterIP",
                    ));
                }
            } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(FieldError::invalid("spec.clusterIPs[0]", nv.clone(), "may not change once set"));
            }
        }
        if is_headless(svc) == is_headless(old) && !is_headless(svc) {
            let nf = str_list(get_arr(svc, &["spec", "ipFamilies"]));
            let of = str_list(get_arr(old, &["spec", "ipFamilies"]));
            let nfv = str_list_value(&nf);
            if nf.len() == of.len() {
                for (i, f) in of.iter().enumerate() {
                    if *f != nf[i] {
                        errs.push(FieldError::invalid("spec.ipFamilies[0]", nfv.clone(), "may not change once set"));
                    }
                }
            } else if of.len() > nf.len() {
                if get_arr(svc, &["spec", "clusterIPs"]).is_empty() {
                    errs.push(FieldError::invalid(
                        "spec.ipFamilies[0]",
                        nfv.clone(),
                        "primary ipFamily can not be unset",
                    ));
                }
                if !nf.is_empty() && nf[0] != of[0] {
                    errs.push(FieldError::invalid("spec.ipFamilies[0]", nv.clone(), "may not change once set"));
                }
                if nf.len() == 1 && get_str(svc, &["spec", "ipFamilyPolicy"]) != "SingleStack" {
                    errs.push(FieldError::invalid(
                        "spec.ipFamilyPolicy",
                        get(svc, &["spec", "ipFamilyPolicy"]).cloned().unwrap_or(Value::Null),
                        "must be set to 'SingleStack' when releasing the secondary ipFamily",
                    ));
                }
            } else if !of.is_empty() && !nf.is_empty() && nf[0] != of[0] {
                errs.push(FieldError::invalid("spec.ipFamilies[0]", nv.clone(), "may not change once set"));
            }
        }
    }
    if t == "LoadBalancer" && ot == "LoadBalancer" {
        let nc = get(svc, &["spec", "loadBalancerClass"]);
        let oc = get(old, &["spec", "loadBalancerClass"]);
        if nc != oc {
            errs.push(FieldError::invalid(
                "spec.loadBalancerClass",
                nc.cloned().unwrap_or(Value::Null),
                "may not change once set",
            ));
        }
    }
    if needs_health_check(old)
        && needs_health_check(svc)
        && get_i64(svc, &["spec", "healthCheckNodePort"]) != get_i64(old, &["spec", "healthCheckNodePort"])
    {
        errs.push(FieldError::forbidden("spec.healthCheckNodePort", FIELD_IMMUTABLE));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Pods and pod templates

/// ValidatePodSpec (the parts Yard's runtime uses: containers, ports, policies, probes).
pub fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = get_arr(spec, &["containers"]);
    let init = get_arr(spec, &["initContainers"]);
    let mut names = BTreeSet::new();
    for (i, c) in init.iter().enumerate() {
        errs.extend(validate_container(c, &idx(&child(path, "initContainers"), i), &mut names));
    }
    if containers.is_empty() {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        errs.extend(validate_container(c, &idx(&child(path, "containers"), i), &mut names));
    }
    let rp = get_str(spec, &["restartPolicy"]);
    if rp.is_empty() {
        errs.push(FieldError::required(child(path, "restartPolicy"), ""));
    } else if !matches!(rp, "Always" | "OnFailure" | "Never") {
        errs.push(FieldError::not_supported(child(path, "restartPolicy"), rp, &["Always", "OnFailure", "Never"]));
    }
    let dp = get_str(spec, &["dnsPolicy"]);
    if dp.is_empty() {
        errs.push(FieldError::required(child(path, "dnsPolicy"), ""));
    } else if !matches!(dp, "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None") {
        errs.push(FieldError::not_supported(
            child(path, "dnsPolicy"),
            dp,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ));
    }
    if let Some(t) = get_i64(spec, &["terminationGracePeriodSeconds"]) {
        if t < 0 {
            errs.push(FieldError::invalid(child(path, "terminationGracePeriodSeconds"), t, IS_NEGATIVE));
        }
    }
    if let Some(t) = get_i64(spec, &["activeDeadlineSeconds"]) {
        if t <= 0 {
            errs.push(FieldError::invalid(
                child(path, "activeDeadlineSeconds"),
                t,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    let node = get_str(spec, &["nodeName"]);
    if !node.is_empty() {
        for m in naming::is_dns1123_subdomain(node) {
            errs.push(FieldError::invalid(child(path, "nodeName"), node, m));
        }
    }
    let sa = get_str(spec, &["serviceAccountName"]);
    if !sa.is_empty() {
        for m in naming::is_dns1123_subdomain(sa) {
            errs.push(FieldError::invalid(child(path, "serviceAccountName"), sa, m));
        }
    }
    let hostname = get_str(spec, &["hostname"]);
    if !hostname.is_empty() {
        for m in naming::is_dns1123_label(hostname) {
            errs.push(FieldError::invalid(child(path, "hostname"), hostname, m));
        }
    }
    let subdomain = get_str(spec, &["subdomain"]);
    if !subdomain.is_empty() {
        for m in naming::is_dns1123_label(subdomain) {
            errs.push(FieldError::invalid(child(path, "subdomain"), subdomain, m));
        }
    }
    if let Some(sel) = get_str_map(spec, &["nodeSelector"]) {
        errs.extend(validate_labels(&sel, &child(path, "nodeSelector")));
    }
    errs
}

fn validate_container(c: &Value, path: &str, names: &mut BTreeSet<String>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = get_str(c, &["name"]);
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    } else {
        for m in naming::is_dns1123_label(name) {
            errs.push(FieldError::invalid(child(path, "name"), name, m));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(path, "name"), name));
        }
    }
    let image = get_str(c, &["image"]);
    if image.is_empty() {
        errs.push(FieldError::required(child(path, "image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(child(path, "image"), image, "must not have leading or trailing whitespace"));
    }
    let mut port_names = BTreeSet::new();
    for (i, p) in get_arr(c, &["ports"]).iter().enumerate() {
        let pp = idx(&child(path, "ports"), i);
        let pname = get_str(p, &["name"]);
        if !pname.is_empty() {
            let msgs = naming::is_valid_port_name(pname);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(child(&pp, "name"), pname, m));
                }
            } else if !port_names.insert(pname.to_string()) {
                errs.push(FieldError::duplicate(child(&pp, "name"), pname));
            }
        }
        let cp = get_i64(p, &["containerPort"]).unwrap_or(0);
        if cp == 0 {
            errs.push(FieldError::required(child(&pp, "containerPort"), ""));
        } else {
            for m in naming::is_valid_port_num(cp) {
                errs.push(FieldError::invalid(child(&pp, "containerPort"), cp, m));
            }
        }
        let hp = get_i64(p, &["hostPort"]).unwrap_or(0);
        if hp != 0 {
            for m in naming::is_valid_port_num(hp) {
                errs.push(FieldError::invalid(child(&pp, "hostPort"), hp, m));
            }
        }
        let proto = get_str(p, &["protocol"]);
        if proto.is_empty() {
            errs.push(FieldError::required(child(&pp, "protocol"), ""));
        } else if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(child(&pp, "protocol"), proto, SUPPORTED_PORT_PROTOCOLS));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = get(c, &[probe]) {
            let pp = child(path, probe);
            for f in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"]
            {
                if let Some(v) = get_i64(p, &[f]) {
                    if v < 0 {
                        errs.push(FieldError::invalid(child(&pp, f), v, IS_NEGATIVE));
                    }
                }
            }
            if probe != "readinessProbe" {
                if let Some(v) = get_i64(p, &["successThreshold"]) {
                    if v != 1 {
                        errs.push(FieldError::invalid(child(&pp, "successThreshold"), v, "must be 1"));
                    }
                }
            }
            let handlers = ["exec", "httpGet", "tcpSocket", "grpc"].iter().filter(|h| get(p, &[**h]).is_some()).count();
            if handlers == 0 {
                errs.push(FieldError::required(pp.clone(), "must specify a handler type"));
            } else if handlers > 1 {
                errs.push(FieldError::forbidden(pp.clone(), "may not specify more than 1 handler type"));
            }
            for h in ["httpGet", "tcpSocket"] {
                if let Some(a) = get(p, &[h]) {
                    errs.extend(validate_port_num_or_name(
                        &int_or_string(get(a, &["port"])),
                        &format!("{pp}.{h}.port"),
                    ));
                }
            }
        }
    }
    for (i, e) in get_arr(c, &["env"]).iter().enumerate() {
        if get_str(e, &["name"]).is_empty() {
            errs.push(FieldError::required(child(&idx(&child(path, "env"), i), "name"), ""));
        }
    }
    errs
}

/// ValidatePodUpdate's spec rule: only images, activeDeadlineSeconds, tolerations (additions) and
/// terminationGracePeriodSeconds may change.
fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let strip = |v: &Value| -> Value {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Object(Map::new()));
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = s.get_mut(list) {
                for c in cs.iter_mut() {
                    if let Some(o) = c.as_object_mut() {
                        o.remove("image");
                    }
                }
            }
        }
        if let Some(o) = s.as_object_mut() {
            o.remove("activeDeadlineSeconds");
            o.remove("tolerations");
            o.remove("terminationGracePeriodSeconds");
            o.remove("schedulingGates");
        }
        sorted_value(&s)
    };
    if strip(new) != strip(old) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Deployments and ReplicaSets

/// ValidateLabelSelector (metav1): matchLabels syntax and matchExpressions operators.
pub fn validate_label_selector(sel: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(ml) = get_str_map(sel, &["matchLabels"]) {
        errs.extend(validate_labels(&ml, &child(path, "matchLabels")));
    }
    for (i, e) in get_arr(sel, &["matchExpressions"]).iter().enumerate() {
        let ep = idx(&child(path, "matchExpressions"), i);
        let op = get_str(e, &["operator"]);
        let values = get_arr(e, &["values"]);
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&ep, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&ep, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(FieldError::invalid(child(&ep, "operator"), op, "not a valid selector operator")),
        }
        let k = get_str(e, &["key"]);
        for m in naming::is_qualified_name(k) {
            errs.push(FieldError::invalid(child(&ep, "key"), k, m));
        }
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            for m in naming::is_valid_label_value(v) {
                errs.push(FieldError::invalid(idx(&child(&ep, "values"), j), v, m));
            }
        }
    }
    errs
}

fn int_or_percent(v: Option<&Value>) -> (Value, i64, bool) {
    match v {
        Some(Value::String(s)) => {
            let n = s.strip_suffix('%').and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
            (Value::String(s.clone()), n, true)
        }
        Some(other) => (other.clone(), other.as_i64().unwrap_or(0), false),
        None => (Value::from(0), 0, false),
    }
}

fn validate_positive_int_or_percent(v: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match v {
        Value::String(s) => {
            let ok = s.len() > 1 && s.ends_with('%') && s[..s.len() - 1].bytes().all(|c| c.is_ascii_digit());
            if !ok {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    naming::regex_error(
                        "a valid percent string must be a numeric string followed by an ending '%'",
                        "[0-9]+%",
                        &["1%", "93%"],
                    ),
                ));
            }
        }
        other => {
            let n = other.as_i64().unwrap_or(0);
            if n < 0 {
                errs.push(FieldError::invalid(path, n, IS_NEGATIVE));
            }
        }
    }
    errs
}

fn validate_workload_spec(resource: &str, spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let replicas = get_i64(spec, &["replicas"]).unwrap_or(0);
    if replicas < 0 {
        errs.push(FieldError::invalid(child(path, "replicas"), replicas, IS_NEGATIVE));
    }
    if resource == "replicasets" {
        let mrs = get_i64(spec, &["minReadySeconds"]).unwrap_or(0);
        if mrs < 0 {
            errs.push(FieldError::invalid(child(path, "minReadySeconds"), mrs, IS_NEGATIVE));
        }
    }
    // Upstream says "deployment" for ReplicaSets too.
    let kind_word = "deployment";
    let sel_value = get(spec, &["selector"]);
    let mut selector = None;
    match sel_value {
        None => {
            errs.push(FieldError::required(child(path, "selector"), ""));
            // A nil selector converts to "nothing", which no template matches.
            selector = Some(LabelSelector::nothing());
        }
        Some(sel) => {
            errs.extend(validate_label_selector(sel, &child(path, "selector")));
            let n = get(sel, &["matchLabels"]).and_then(Value::as_object).map(Map::len).unwrap_or(0)
                + get_arr(sel, &["matchExpressions"]).len();
            if n == 0 {
                errs.push(FieldError::invalid(
                    child(path, "selector"),
                    sorted_value(sel),
                    format!("empty selector is invalid for {kind_word}"),
                ));
            }
            match serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(sel.clone())
                .ok()
                .map(|s| LabelSelector::from_k8s(&s))
            {
                Some(Ok(s)) => selector = Some(s),
                _ => {
                    errs.push(FieldError::invalid(child(path, "selector"), sorted_value(sel), "invalid label selector"))
                }
            }
        }
    }
    let tpath = child(path, "template");
    match get(spec, &["template"]) {
        None => errs.push(FieldError::required(tpath.clone(), "")),
        Some(t) => {
            let labels = get_str_map(t, &["metadata", "labels"]).unwrap_or_default();
            if let Some(sel) = &selector {
                if (sel.is_nothing() || !sel.is_empty()) && !sel.matches(&labels) {
                    errs.push(FieldError::invalid(
                        format!("{tpath}.metadata.labels"),
                        string_map_value(&labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            errs.extend(validate_labels(&labels, &format!("{tpath}.labels")));
            errs.extend(validate_annotations(
                &get_str_map(t, &["metadata", "annotations"]).unwrap_or_default(),
                &format!("{tpath}.annotations"),
            ));
            let empty = Value::Object(Map::new());
            let pspec = t.get("spec").unwrap_or(&empty);
            errs.extend(validate_pod_spec(pspec, &format!("{tpath}.spec")));
            let rp = get_str(pspec, &["restartPolicy"]);
            if rp != "Always" {
                errs.push(FieldError::not_supported(format!("{tpath}.spec.restartPolicy"), rp, &["Always"]));
            }
            if get(pspec, &["activeDeadlineSeconds"]).is_some() {
                errs.push(FieldError::forbidden(
                    format!("{tpath}.spec.activeDeadlineSeconds"),
                    "activeDeadlineSeconds in ReplicaSet is not Supported",
                ));
            }
        }
    }
    if resource == "deployments" {
        let sp = child(path, "strategy");
        let stype = get_str(spec, &["strategy", "type"]);
        match stype {
            "Recreate" => {
                if get(spec, &["strategy", "rollingUpdate"]).is_some() {
                    errs.push(FieldError::forbidden(
                        child(&sp, "rollingUpdate"),
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            "RollingUpdate" => match get(spec, &["strategy", "rollingUpdate"]) {
                None => errs.push(FieldError::required(
                    child(&sp, "rollingUpdate"),
                    "this should be defaulted and never be nil",
                )),
                Some(ru) => {
                    let rp = child(&sp, "rollingUpdate");
                    let (mu, mu_n, mu_pct) = int_or_percent(get(ru, &["maxUnavailable"]));
                    let (ms, ms_n, _) = int_or_percent(get(ru, &["maxSurge"]));
                    errs.extend(validate_positive_int_or_percent(&mu, &child(&rp, "maxUnavailable")));
                    errs.extend(validate_positive_int_or_percent(&ms, &child(&rp, "maxSurge")));
                    if mu_n == 0 && ms_n == 0 {
                        errs.push(FieldError::invalid(
                            child(&rp, "maxUnavailable"),
                            mu.clone(),
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                    if mu_pct && mu_n > 100 {
                        errs.push(FieldError::invalid(
                            child(&rp, "maxUnavailable"),
                            mu,
                            "must not be greater than 100%",
                        ));
                    }
                }
            },
            _ => {
                let strategy = get(spec, &["strategy"]).map(sorted_value).unwrap_or(json!({}));
                errs.push(FieldError::not_supported(sp, strategy, &["Recreate", "RollingUpdate"]));
            }
        }
        let mrs = get_i64(spec, &["minReadySeconds"]).unwrap_or(0);
        if mrs < 0 {
            errs.push(FieldError::invalid(child(path, "minReadySeconds"), mrs, IS_NEGATIVE));
        }
        if let Some(r) = get_i64(spec, &["revisionHistoryLimit"]) {
            if r < 0 {
                errs.push(FieldError::invalid(child(path, "revisionHistoryLimit"), r, IS_NEGATIVE));
            }
        }
        if let Some(p) = get_i64(spec, &["progressDeadlineSeconds"]) {
            if p < 0 {
                errs.push(FieldError::invalid(child(path, "progressDeadlineSeconds"), p, IS_NEGATIVE));
            }
            if p <= mrs {
                errs.push(FieldError::invalid(
                    child(path, "progressDeadlineSeconds"),
                    p,
                    "must be greater than minReadySeconds",
                ));
            }
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// ConfigMaps and Secrets

fn validate_config_map(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data = get(obj, &["data"]).and_then(Value::as_object).cloned().unwrap_or_default();
    let binary = get(obj, &["binaryData"]).and_then(Value::as_object).cloned().unwrap_or_default();
    let mut total = 0usize;
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    for k in keys {
        let p = key("data", k);
        for m in naming::is_config_map_key(k) {
            errs.push(FieldError::invalid(p.clone(), k.as_str(), m));
        }
        if binary.contains_key(k) {
            errs.push(FieldError::invalid(p, k.as_str(), "duplicate of key present in binaryData"));
        }
        total += data[k].as_str().map(str::len).unwrap_or(0);
    }
    let mut bkeys: Vec<&String> = binary.keys().collect();
    bkeys.sort();
    for k in bkeys {
        for m in naming::is_config_map_key(k) {
            errs.push(FieldError::invalid(key("binaryData", k), k.as_str(), m));
        }
        total += decoded_len(&binary[k]);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE as i64));
    }
    errs
}

fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    let pad = s.bytes().rev().take_while(|&c| c == b'=').count();
    ((s.len() / 4) * 3).saturating_sub(pad.min(2))
}

fn validate_secret(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data = get(obj, &["data"]).and_then(Value::as_object).cloned().unwrap_or_default();
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    let mut total = 0usize;
    for k in keys {
        for m in naming::is_config_map_key(k) {
            errs.push(FieldError::invalid(key("data", k), k.as_str(), m));
        }
        total += decoded_len(&data[k]);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE as i64));
    }
    match get_str(obj, &["type"]) {
        "kubernetes.io/service-account-token"
            if get_str(obj, &["metadata", "annotations", "kubernetes.io/service-account.name"]).is_empty() =>
        {
            errs.push(FieldError::required("metadata.annotations[kubernetes.io/service-account.name]", ""));
        }
        "kubernetes.io/dockercfg" if !data.contains_key(".dockercfg") => {
            errs.push(FieldError::required("data[.dockercfg]", ""));
        }
        "kubernetes.io/dockerconfigjson" if !data.contains_key(".dockerconfigjson") => {
            errs.push(FieldError::required("data[.dockerconfigjson]", ""));
        }
        "kubernetes.io/basic-auth" if !data.contains_key("username") && !data.contains_key("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if !data.contains_key("ssh-privatekey") => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            if !data.contains_key("tls.crt") {
                errs.push(FieldError::required("data[tls.crt]", ""));
            }
            if !data.contains_key("tls.key") {
                errs.push(FieldError::required("data[tls.key]", ""));
            }
        }
        _ => {}
    }
    errs
}

fn validate_immutable_data(new: &Value, old: &Value, fields: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if get(old, &["immutable"]).and_then(Value::as_bool) == Some(true) {
        if get(new, &["immutable"]).and_then(Value::as_bool) != Some(true) {
            errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
        }
        for f in fields {
            if get(new, &[f]).map(sorted_value) != get(old, &[f]).map(sorted_value) {
                errs.push(FieldError::forbidden(*f, "field is immutable when `immutable` is set"));
            }
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Nodes, Endpoints, EndpointSlices, Events

fn validate_node(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let cidrs = str_list(get_arr(obj, &["spec", "podCIDRs"]));
    for (i, c) in cidrs.iter().enumerate() {
        if c.parse::<ipnet::IpNet>().is_err() {
            errs.push(FieldError::invalid(idx("spec.podCIDRs", i), str_list_value(&cidrs), "must be valid CIDR"));
        }
    }
    if cidrs.len() > 1 {
        let dual = cidrs.len() == 2 && cidrs[0].contains(':') != cidrs[1].contains(':');
        if !dual {
            errs.push(FieldError::invalid(
                "spec.podCIDRs",
                str_list_value(&cidrs),
                "may specify no more than one CIDR for each IP family",
            ));
        }
    }
    if let Some(old) = old {
        let old_cidrs = str_list(get_arr(old, &["spec", "podCIDRs"]));
        if !old_cidrs.is_empty() && old_cidrs != cidrs {
            errs.push(FieldError::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let (p, op) = (get_str(obj, &["spec", "providerID"]), get_str(old, &["spec", "providerID"]));
        if !op.is_empty() && op != p {
            errs.push(FieldError::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    errs
}

fn validate_endpoints(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ss) in get_arr(obj, &["subsets"]).iter().enumerate() {
        let sp = idx("subsets", i);
        let addrs = get_arr(ss, &["addresses"]);
        let nr = get_arr(ss, &["notReadyAddresses"]);
        if addrs.is_empty() && nr.is_empty() {
            errs.push(FieldError::required(sp.clone(), "must specify `addresses` or `notReadyAddresses`"));
        }
        for (list, name) in [(addrs, "addresses"), (nr, "notReadyAddresses")] {
            for (j, a) in list.iter().enumerate() {
                let ap = idx(&child(&sp, name), j);
                let ip = get_str(a, &["ip"]);
                if naming::parse_ip_sloppy(ip).is_none() {
                    errs.push(FieldError::invalid(child(&ap, "ip"), ip, "must be a valid IP address"));
                } else {
                    errs.extend(validate_non_special_ip(ip, &child(&ap, "ip")));
                }
                let h = get_str(a, &["hostname"]);
                if !h.is_empty() {
                    for m in naming::is_dns1123_label(h) {
                        errs.push(FieldError::invalid(child(&ap, "hostname"), h, m));
                    }
                }
                if let Some(n) = get(a, &["nodeName"]).and_then(Value::as_str) {
                    for m in naming::is_dns1123_subdomain(n) {
                        errs.push(FieldError::invalid(child(&ap, "nodeName"), n, m));
                    }
                }
            }
        }
        let ports = get_arr(ss, &["ports"]);
        for (j, p) in ports.iter().enumerate() {
            let pp = idx(&child(&sp, "ports"), j);
            let name = get_str(p, &["name"]);
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(child(&pp, "name"), ""));
            } else if !name.is_empty() {
                for m in naming::is_dns1123_label(name) {
                    errs.push(FieldError::invalid(child(&pp, "name"), name, m));
                }
            }
            let port = get_i64(p, &["port"]).unwrap_or(0);
            for m in naming::is_valid_port_num(port) {
                errs.push(FieldError::invalid(child(&pp, "port"), port, m));
            }
            let proto = get_str(p, &["protocol"]);
            if proto.is_empty() {
                errs.push(FieldError::required(child(&pp, "protocol"), ""));
            } else if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) {
                errs.push(FieldError::not_supported(child(&pp, "protocol"), proto, SUPPORTED_PORT_PROTOCOLS));
            }
        }
    }
    errs
}

fn validate_endpoint_slice(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let at = get_str(obj, &["addressType"]);
    if at.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !matches!(at, "FQDN" | "IPv4" | "IPv6") {
        errs.push(FieldError::not_supported("addressType", at, &["FQDN", "IPv4", "IPv6"]));
    }
    let endpoints = get_arr(obj, &["endpoints"]);
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many("endpoints", endpoints.len() as i64, 1000));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let ep = idx("endpoints", i);
        let addrs = get_arr(e, &["addresses"]);
        if addrs.is_empty() {
            errs.push(FieldError::required(child(&ep, "addresses"), "must contain at least 1 address"));
        } else if addrs.len() > 100 {
            errs.push(FieldError::too_many(child(&ep, "addresses"), addrs.len() as i64, 100));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let ap = idx(&child(&ep, "addresses"), j);
            match at {
                "IPv4" => {
                    if !matches!(naming::parse_ip_sloppy(a), Some(std::net::IpAddr::V4(_))) {
                        errs.push(FieldError::invalid(ap.clone(), a, "must be a valid IPv4 address"));
                    } else {
                        errs.extend(validate_non_special_ip(a, &ap));
                    }
                }
                "IPv6" => {
                    if !matches!(a.parse::<std::net::IpAddr>(), Ok(std::net::IpAddr::V6(_))) {
                        errs.push(FieldError::invalid(ap.clone(), a, "must be a valid IPv6 address"));
                    } else {
                        errs.extend(validate_non_special_ip(a, &ap));
                    }
                }
                "FQDN" => {
                    for m in naming::is_dns1123_subdomain(a) {
                        errs.push(FieldError::invalid(ap.clone(), a, m));
                    }
                }
                _ => {}
            }
        }
        if let Some(h) = get(e, &["hostname"]).and_then(Value::as_str) {
            for m in naming::is_dns1123_label(h) {
                errs.push(FieldError::invalid(child(&ep, "hostname"), h, m));
            }
        }
        if let Some(n) = get(e, &["nodeName"]).and_then(Value::as_str) {
            for m in naming::is_dns1123_subdomain(n) {
                errs.push(FieldError::invalid(child(&ep, "nodeName"), n, m));
            }
        }
    }
    let ports = get_arr(obj, &["ports"]);
    if ports.len() > 20000 {
        errs.push(FieldError::too_many("ports", ports.len() as i64, 20000));
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = idx("ports", i);
        let name = get_str(p, &["name"]);
        if !name.is_empty() {
            for m in naming::is_dns1123_label(name) {
                errs.push(FieldError::invalid(child(&pp, "name"), name, m));
            }
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&pp, "name"), name));
        }
        match get(p, &["protocol"]).and_then(Value::as_str) {
            None => errs.push(FieldError::required(child(&pp, "protocol"), "")),
            Some(proto) if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) => {
                errs.push(FieldError::not_supported(child(&pp, "protocol"), proto, SUPPORTED_PORT_PROTOCOLS));
            }
            _ => {}
        }
        if let Some(port) = get_i64(p, &["port"]) {
            for m in naming::is_in_range(port, 0, 65535) {
                errs.push(FieldError::invalid(child(&pp, "port"), port, m));
            }
        }
    }
    errs
}

/// legacyValidateEvent (core/v1 requests).
fn validate_event(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = get_str(obj, &["metadata", "namespace"]);
    let ins = get_str(obj, &["involvedObject", "namespace"]);
    if get(obj, &["eventTime"]).is_none() {
        if ins.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(FieldError::invalid("involvedObject.namespace", ins, "does not match event.namespace"));
            }
        } else if ns != ins {
            errs.push(FieldError::invalid("involvedObject.namespace", ins, "does not match event.namespace"));
        }
    } else {
        if ins.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid("involvedObject.namespace", ins, "does not match event.namespace"));
        }
        let rc = get_str(obj, &["reportingComponent"]);
        if rc.is_empty() {
            errs.push(FieldError::required("reportingComponent", ""));
        }
        for m in naming::is_qualified_name(rc) {
            errs.push(FieldError::invalid("reportingComponent", rc, m));
        }
        let ri = get_str(obj, &["reportingInstance"]);
        if ri.is_empty() {
            errs.push(FieldError::required("reportingInstance", ""));
        }
        if ri.len() > 128 {
            errs.push(FieldError::invalid("reportingInstance", "", "can have at most 128 characters"));
        }
        let action = get_str(obj, &["action"]);
        if action.is_empty() {
            errs.push(FieldError::required("action", ""));
        }
        if action.len() > 128 {
            errs.push(FieldError::invalid("action", "", "can have at most 128 characters"));
        }
        let reason = get_str(obj, &["reason"]);
        if reason.is_empty() {
            errs.push(FieldError::required("reason", ""));
        }
        if reason.len() > 128 {
            errs.push(FieldError::invalid("reason", "", "can have at most 128 characters"));
        }
        if get_str(obj, &["message"]).len() > 1024 {
            errs.push(FieldError::invalid("message", "", "can have at most 1024 characters"));
        }
    }
    for m in naming::is_dns1123_subdomain(ns) {
        errs.push(FieldError::invalid("namespace", ns, m));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn defaulted_svc(spec: Value) -> Value {
        let mut s = svc(spec);
        crate::defaults::apply_defaults("services", &mut s);
        s
    }

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn display_matches_upstream() {
        assert_eq!(
            FieldError::invalid("spec.ports[0].nodePort", 30080, "provided port is already allocated").to_string(),
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        assert_eq!(
            FieldError::duplicate("spec.ports[1].name", "http").to_string(),
            "spec.ports[1].name: Duplicate value: \"http\""
        );
        assert_eq!(FieldError::required("spec.ports[0].name", "").to_string(), "spec.ports[0].name: Required value");
        assert_eq!(
            FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]).to_string(),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        );
        assert_eq!(
            FieldError::too_long("metadata.annotations", 262144).to_string(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            FieldError::too_many("endpoints", 1001, 1000).to_string(),
            "endpoints: Too many: 1001: must have at most 1000 items"
        );
        let e = FieldError::invalid("x", json!({"b": "<", "a": 1}), "d");
        assert_eq!(e.to_string(), "x: Invalid value: {\"b\":\"\\u003c\",\"a\":1}: d");
        assert_eq!(e.reason(), "FieldValueInvalid");
        assert_eq!(FieldError::forbidden("a", "b").reason(), "FieldValueForbidden");
        assert_eq!(FieldError::required("a", "").message_without_field(), "Required value");
    }

    #[test]
    fn status_message_forms() {
        let one = vec![FieldError::invalid("spec.ports[0].port", 0, "must be between 1 and 65535, inclusive")];
        assert_eq!(
            invalid_status_message("Service", "x", &one),
            "Service \"x\" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        let two = vec![
            FieldError::required("spec.ports[0].name", ""),
            FieldError::required("spec.ports[1].name", ""),
            FieldError::required("spec.ports[1].name", ""),
        ];
        assert_eq!(
            invalid_status_message(&qualified_kind("apps", "Deployment"), "d", &two),
            "Deployment.apps \"d\" is invalid: [spec.ports[0].name: Required value, spec.ports[1].name: Required value]"
        );
        assert_eq!(invalid_status_message("Service", "x", &[]), "Service \"x\" is invalid");
    }

    #[test]
    fn valid_service_has_no_errors() {
        let s = defaulted_svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 9376}]}));
        assert_eq!(msgs(&validate("services", &s, None)), Vec::<String>::new());
        let s = defaulted_svc(json!({"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}));
        assert_eq!(msgs(&validate("services", &s, None)), Vec::<String>::new());
        let s = defaulted_svc(json!({"type": "ExternalName", "externalName": "example.com."}));
        assert_eq!(msgs(&validate("services", &s, None)), Vec::<String>::new());
    }

    #[test]
    fn service_port_rules() {
        let s =
            defaulted_svc(json!({"ports": [{"port": 80}, {"port": 0, "name": "http"}, {"port": 81, "name": "http"}]}));
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec![
                "spec.ports[0].name: Required value",
                "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[2].name: Duplicate value: \"http\"",
            ]
        );
        let s = defaulted_svc(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}));
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.ports[1]: Duplicate value: {\"Name\":\"\",\"Protocol\":\"TCP\",\"AppProtocol\":null,\"Port\":80,\"TargetPort\":0,\"NodePort\":0}"]
        );
        let s = defaulted_svc(json!({"ports": [{"port": 80, "targetPort": "HTTP--", "name": "Web"}]}));
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec![
                "spec.ports[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "spec.ports[0].targetPort: Invalid value: \"HTTP--\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[0].targetPort: Invalid value: \"HTTP--\": must contain at least one letter (a-z)",
                "spec.ports[0].targetPort: Invalid value: \"HTTP--\": must not contain consecutive hyphens",
                "spec.ports[0].targetPort: Invalid value: \"HTTP--\": must not begin or end with a hyphen",
            ]
        );
        let s = defaulted_svc(json!({"ports": [{"port": 80, "protocol": "ICMP"}]}));
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""]
        );
    }

    #[test]
    fn service_type_rules() {
        let s = defaulted_svc(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        let s = defaulted_svc(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"]
        );
        let s = defaulted_svc(json!({"type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 80}]}));
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"]
        );
        let s = defaulted_svc(json!({"type": "Magic", "ports": [{"port": 80}]}));
        assert!(msgs(&validate("services", &s, None)).contains(
            &"spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_string()
        ));
        let s = defaulted_svc(json!({"type": "ExternalName"}));
        assert_eq!(msgs(&validate("services", &s, None)), vec!["spec.externalName: Required value"]);
        let s = defaulted_svc(json!({"type": "ExternalName", "externalName": "Bad_Name"}));
        let m = msgs(&validate("services", &s, None));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("spec.externalName: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
        let s = defaulted_svc(json!({"ports": [{"port": 80}], "selector": {"app": "a b"}}));
        assert_eq!(msgs(&validate("services", &s, None)).len(), 1);
        assert!(msgs(&validate("services", &s, None))[0]
            .starts_with("spec.selector: Invalid value: \"a b\": a valid label must be"));
    }

    #[test]
    fn service_affinity_and_ips() {
        let mut s = defaulted_svc(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP"}));
        s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = json!(90000);
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 90000: must be greater than 0 and less than 86400"]
        );
        let s = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.300"}));
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.clusterIPs[0]: Invalid value: \"10.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
        );
        let mut s = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.5"}));
        s["spec"]["clusterIPs"] = json!(["10.96.0.6"]);
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.clusterIPs: Invalid value: [\"10.96.0.6\"]: first value must match `clusterIP`"]
        );
        let mut s = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.5"}));
        s["spec"]["ipFamilies"] = json!(["IPv6"]);
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["spec.clusterIPs[0]: Invalid value: \"10.96.0.5\": expected an IPv6 value as indicated by `ipFamilies[0]`"]
        );
    }

    #[test]
    fn service_load_balancer_rules() {
        let mut s = defaulted_svc(
            json!({"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}], "loadBalancerSourceRanges": ["10.0.0.0/8", "bad"]}),
        );
        s["spec"].as_object_mut().unwrap().remove("allocateLoadBalancerNodePorts");
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec![
                "spec.LoadBalancerSourceRanges[1]: Invalid value: \"bad\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "allocateLoadBalancerNodePorts: Required value",
            ]
        );
        let s = defaulted_svc(
            json!({"ports": [{"port": 80}], "loadBalancerSourceRanges": ["10.0.0.0/8"], "externalTrafficPolicy": "Local"}),
        );
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec![
                "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
                "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
            ]
        );
        let mut s =
            defaulted_svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}], "externalTrafficPolicy": "Local"}));
        assert_eq!(msgs(&validate("services", &s, None)), vec!["spec.healthCheckNodePort: Required value"]);
        s["spec"]["healthCheckNodePort"] = json!(31000);
        assert!(validate("services", &s, None).is_empty());
        s["status"] = json!({"loadBalancer": {"ingress": [{"ip": "172.18.255.1"}]}});
        assert_eq!(
            msgs(&validate_service_status(&s)),
            vec!["status.loadBalancer.ingress[0].ipMode: Required value: must be specified when `ip` is set"]
        );
        crate::defaults::apply_defaults("services", &mut s);
        assert!(validate_service_status(&s).is_empty());
        let c = defaulted_svc(json!({"ports": [{"port": 80}]}));
        let mut with_status = c.clone();
        with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}});
        assert_eq!(
            msgs(&validate_service_status(&with_status)),
            vec!["status.loadBalancer.ingress: Forbidden: may only be used when `spec.type` is 'LoadBalancer'"]
        );
    }

    #[test]
    fn update_validates_metadata_changes() {
        let old = defaulted_svc(json!({"ports": [{"port": 80}]}));
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"ok": "-bad-"});
        new["metadata"]["uid"] = json!("other");
        let m = msgs(&validate("services", &new, Some(&old)));
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], "metadata.uid: Invalid value: \"other\": field is immutable");
        assert!(m[1].starts_with("metadata.labels: Invalid value: \"-bad-\": a valid label must be"));
    }

    #[test]
    fn service_update_rules() {
        let old = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.5"}));
        let new = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.7"}));
        assert_eq!(
            msgs(&validate("services", &new, Some(&old))),
            vec!["spec.clusterIPs[0]: Invalid value: [\"10.96.0.7\"]: may not change once set"]
        );
        assert!(validate("services", &old, Some(&old)).is_empty());
        // A patch that changes only clusterIP (clusterIPs still the stored value).
        let mut patched = old.clone();
        patched["spec"]["clusterIP"] = json!("10.96.0.9");
        assert_eq!(
            msgs(&validate("services", &patched, Some(&old))),
            vec!["spec.clusterIPs[0]: Invalid value: [\"10.96.0.9\"]: may not change once set"]
        );
        // An old client that sends clusterIP without clusterIPs.
        let mut legacy = old.clone();
        legacy["spec"].as_object_mut().unwrap().remove("clusterIPs");
        assert!(validate("services", &legacy, Some(&old)).is_empty());
    }

    #[test]
    fn metadata_rules() {
        let mut s = defaulted_svc(json!({"ports": [{"port": 80}]}));
        s["metadata"]["name"] = json!("Foo");
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["metadata.name: Invalid value: \"Foo\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"]
        );
        s["metadata"]["name"] = json!("");
        assert_eq!(
            msgs(&validate("services", &s, None)),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let ns = json!({"metadata": {"name": "a.b"}, "spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(
            msgs(&validate("namespaces", &ns, None)),
            vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]
        );
        let cm =
            json!({"metadata": {"name": "c", "namespace": "default", "labels": {"-x": "y"}}, "data": {"a b": "1"}});
        let m = msgs(&validate("configmaps", &cm, None));
        assert_eq!(m.len(), 2);
        assert!(m[0].starts_with("metadata.labels: Invalid value: \"-x\": name part must consist"));
        assert!(m[1].starts_with("data[a b]: Invalid value: \"a b\": a valid config key must consist"));
    }

    fn deployment(sel: Value, labels: Value) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {"selector": sel, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        });
        crate::defaults::apply_defaults("deployments", &mut d);
        d
    }

    #[test]
    fn deployment_rules() {
        let d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        assert_eq!(msgs(&validate("deployments", &d, None)), Vec::<String>::new());
        let d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"}));
        assert_eq!(
            msgs(&validate("deployments", &d, None)),
            vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"b\"}: `selector` does not match template `labels`"]
        );
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"]["replicas"] = json!(-1);
        assert_eq!(
            msgs(&validate("deployments", &d, None)),
            vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
        );
        let old = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a", "x": "y"}));
        let new = deployment(json!({"matchLabels": {"app": "a", "x": "y"}}), json!({"app": "a", "x": "y"}));
        assert_eq!(
            msgs(&validate("deployments", &new, Some(&old))),
            vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"a\",\"x\":\"y\"}}: field is immutable"]
        );
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"]["template"]["spec"]["containers"] = json!([{"name": "c"}, {"name": "c", "image": "x"}]);
        assert_eq!(
            msgs(&validate("deployments", &d, None)),
            vec![
                "spec.template.spec.containers[0].image: Required value",
                "spec.template.spec.containers[1].name: Duplicate value: \"c\""
            ]
        );
    }

    #[test]
    fn pod_rules() {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}});
        crate::defaults::apply_defaults("pods", &mut p);
        assert_eq!(msgs(&validate("pods", &p, None)), vec!["spec.containers: Required value"]);
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 70000}]}]}});
        crate::defaults::apply_defaults("pods", &mut p);
        assert_eq!(
            msgs(&validate("pods", &p, None)),
            vec!["spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"]
        );
    }

    #[test]
    fn event_rules() {
        let ev = json!({"metadata": {"name": "web.17a8b", "namespace": "default"}, "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "x"});
        assert!(validate("events", &ev, None).is_empty());
        let ev = json!({"metadata": {"name": "e", "namespace": "demo"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}});
        assert_eq!(
            msgs(&validate("events", &ev, None)),
            vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
        );
        let ev = json!({"metadata": {"name": "e", "namespace": "demo"}, "eventTime": "2025-01-01T00:00:00.000000Z",
                        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "demo"}, "reason": "Started"});
        assert_eq!(
            msgs(&validate("events", &ev, None)),
            vec![
                "reportingComponent: Required value",
                "reportingComponent: Invalid value: \"\": name part must be non-empty",
                "reportingComponent: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "reportingInstance: Required value",
                "action: Required value",
            ]
        );
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata": {"name": "e", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80, "protocol": "TCP"}]}]});
        assert!(validate("endpoints", &ep, None).is_empty());
        let ep = json!({"metadata": {"name": "e", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 80, "protocol": "TCP"}]}]});
        assert_eq!(
            msgs(&validate("endpoints", &ep, None)),
            vec!["subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"]
        );
        let es = json!({"metadata": {"name": "e", "namespace": "default"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "", "port": 80, "protocol": "TCP"}]});
        assert!(validate("endpointslices", &es, None).is_empty());
        let es = json!({"metadata": {"name": "e", "namespace": "default"}, "addressType": "IPv4", "endpoints": [{"addresses": ["::1"]}]});
        assert_eq!(
            msgs(&validate("endpointslices", &es, None)),
            vec!["endpoints[0].addresses[0]: Invalid value: \"::1\": must be a valid IPv4 address"]
        );
    }
}
