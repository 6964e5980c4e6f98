//! Events (core/v1): `legacyValidateEvent`.

use super::*;

/// legacyValidateEvent (core/v1 requests).
pub(super) fn validate_event(obj: &Value) -> Vec<FieldError> {
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
