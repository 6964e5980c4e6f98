//! ObjectMeta: `ValidateObjectMeta` and `ValidateObjectMetaUpdate` (name or generateName, namespace,
//! labels, annotations, ownerReferences, finalizers, immutable fields).

use super::*;

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

pub(super) fn validate_owner_references(refs: &[Value], path: &str) -> Vec<FieldError> {
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
