//! Deployments and ReplicaSets: label selectors, rollout strategy and the workload spec.

use super::*;

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

pub(super) fn int_or_percent(v: Option<&Value>) -> (Value, i64, bool) {
    match v {
        Some(Value::String(s)) => {
            let n = s.strip_suffix('%').and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
            (Value::String(s.clone()), n, true)
        }
        Some(other) => (other.clone(), other.as_i64().unwrap_or(0), false),
        None => (Value::from(0), 0, false),
    }
}

pub(super) fn validate_positive_int_or_percent(v: &Value, path: &str) -> Vec<FieldError> {
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

/// Upstream's `ValidatePodTemplateSpec`: the template's labels and annotations, its pod spec, and
/// no ephemeral containers. Shared by PodTemplates (`template`) and the workloads'
/// `spec.template`.
pub fn validate_pod_template_spec(t: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    errs.extend(validate_labels(&get_str_map(t, &["metadata", "labels"]).unwrap_or_default(), &child(path, "labels")));
    errs.extend(validate_annotations(
        &get_str_map(t, &["metadata", "annotations"]).unwrap_or_default(),
        &child(path, "annotations"),
    ));
    let empty = Value::Object(Map::new());
    let pspec = t.get("spec").unwrap_or(&empty);
    errs.extend(validate_pod_spec(pspec, &child(path, "spec")));
    if !get_arr(pspec, &["ephemeralContainers"]).is_empty() {
        errs.push(FieldError::forbidden(
            child(path, "spec.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

pub(super) fn validate_workload_spec(resource: &str, spec: &Value, path: &str) -> Vec<FieldError> {
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
            errs.extend(validate_pod_template_spec(t, &tpath));
            let empty = Value::Object(Map::new());
            let pspec = t.get("spec").unwrap_or(&empty);
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
