//! ConfigMaps and Secrets: keys, sizes, secret types and immutability.

use super::*;

pub(super) fn validate_config_map(obj: &Value) -> Vec<FieldError> {
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

pub(super) fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    let pad = s.bytes().rev().take_while(|&c| c == b'=').count();
    ((s.len() / 4) * 3).saturating_sub(pad.min(2))
}

pub(super) fn validate_secret(obj: &Value) -> Vec<FieldError> {
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

pub(super) fn validate_immutable_data(new: &Value, old: &Value, fields: &[&str]) -> Vec<FieldError> {
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
