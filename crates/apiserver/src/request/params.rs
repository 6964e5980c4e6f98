//! Query parameters converted and validated as upstream does before a handler runs.
//!
//! Upstream decodes the query into a versioned options struct with its parameter codec: a boolean
//! is false only when it is absent or, case-insensitively, `false` or `0` (anything else, the
//! empty string included, is true; there is no error), an integer is parsed with
//! `strconv.ParseInt` and a failure is a 400 `BadRequest` carrying Go's error text. The decoded
//! options are then validated (`ValidateListOptions`, `ValidateCreateOptions`, ...) and a failure
//! is a 422 `Invalid` on the options kind of group `meta.k8s.io` with name `""`. Only the options
//! struct of the request's verb is decoded: parameters of another verb are ignored, as upstream.

use http::{HeaderMap, Method};
use serde_json::{json, Value};
use yard_api::validation::{go_quote, invalid_status_message, status_causes, FieldError};

use crate::rest::Params;
use crate::server::Target;
use crate::status::{ApiError, ApiResult};

/// Upstream's query boolean (`Convert_Slice_string_To_bool`): false only for `false` or `0` in
/// any letter case.
pub fn query_bool(v: &str) -> bool {
    !matches!(v.to_lowercase().as_str(), "false" | "0")
}

/// The `(key, value)` pairs of a query string, `+` and `%XX` decoded.
pub fn form_urlencoded(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// Go's `strconv.ParseInt(v, 10, 64)`, with its error text.
pub fn go_parse_int(v: &str) -> Result<i64, String> {
    let syntax = || format!("strconv.ParseInt: parsing {}: invalid syntax", go_quote(v));
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    v.parse::<i64>().map_err(|_| format!("strconv.ParseInt: parsing {}: value out of range", go_quote(v)))
}

/// The first value of each integer parameter of an options kind, converted as upstream does;
/// the first that does not convert is a 400.
fn check_integers(query: &str, names: &[&str]) -> ApiResult<()> {
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in form_urlencoded(query) {
        let Some(name) = names.iter().find(|n| **n == k) else { continue };
        if seen.contains(name) {
            continue; // Go reads values[0] only.
        }
        seen.push(name);
        go_parse_int(&v).map_err(ApiError::bad_request)?;
    }
    Ok(())
}

/// A 422 `Invalid` on an options kind of `meta.k8s.io` (`ListOptions`, `CreateOptions`, ...).
pub fn options_invalid(kind: &str, errs: &[FieldError]) -> ApiError {
    let message = invalid_status_message(&format!("{kind}.meta.k8s.io"), "", errs);
    ApiError::new(422, "Invalid", message).with_details(json!({
        "group": "meta.k8s.io",
        "kind": kind,
        "causes": status_causes(errs),
    }))
}

/// `ValidateListOptions` (list and watch; deletecollection too).
pub fn validate_list(p: &Params) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rv_empty = p.resource_version.as_deref().unwrap_or("").is_empty();
    let rvm = p.resource_version_match.as_deref().unwrap_or("");
    let has_continue = p.continue_token.as_deref().is_some_and(|c| !c.is_empty());
    let field = "resourceVersionMatch";
    if p.watch {
        if p.send_initial_events.is_some() && rvm != "NotOlderThan" {
            errs.push(FieldError::forbidden(
                field,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !rvm.is_empty() {
            if p.send_initial_events.is_none() {
                errs.push(FieldError::forbidden(
                    field,
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if rvm != "NotOlderThan" {
                errs.push(FieldError::not_supported(field, rvm, &["NotOlderThan"]));
            }
            if has_continue {
                errs.push(FieldError::forbidden(field, "resourceVersionMatch is forbidden when continue is provided"));
            }
        }
        return errs;
    }
    if !rvm.is_empty() {
        if rv_empty {
            errs.push(FieldError::forbidden(
                field,
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if has_continue {
            errs.push(FieldError::forbidden(field, "resourceVersionMatch is forbidden when continue is provided"));
        }
        if rvm != "Exact" && rvm != "NotOlderThan" {
            errs.push(FieldError::not_supported(field, rvm, &["Exact", "NotOlderThan", ""]));
        }
        if rvm == "Exact" && p.resource_version.as_deref() == Some("0") {
            errs.push(FieldError::forbidden(
                field,
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if p.send_initial_events.is_some() {
        errs.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
    }
    errs
}

/// `ValidateDryRun`: every value must be `All`.
pub fn validate_dry_run(values: &[String]) -> Vec<FieldError> {
    if values.iter().all(|v| v == "All") {
        return Vec::new();
    }
    let bad = Value::Array(values.iter().map(|v| Value::String(v.clone())).collect());
    vec![FieldError::not_supported("dryRun", bad, &["All"])]
}

/// `ValidateFieldManager`: at most 128 bytes, printable characters only.
fn validate_field_manager(m: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if m.len() > 128 {
        errs.push(FieldError::too_long("fieldManager", 128));
    }
    for (i, c) in m.char_indices() {
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            errs.push(FieldError::invalid(
                "fieldManager",
                m,
                format!("invalid character U+{:04X} (at position {i})", c as u32),
            ));
        }
    }
    errs
}

/// `ValidateFieldValidation`: empty, `Ignore`, `Warn` or `Strict`.
fn validate_field_validation(v: Option<&str>) -> Vec<FieldError> {
    match v {
        None | Some("" | "Ignore" | "Warn" | "Strict") => Vec::new(),
        Some(other) => vec![FieldError::not_supported("fieldValidation", other, &["", "Ignore", "Strict", "Warn"])],
    }
}

/// `ValidateCreateOptions` / `ValidateUpdateOptions` / `ValidatePatchOptions`. `apply` is
/// `Some(is_apply_patch)` for a patch, `None` otherwise.
pub fn validate_write(p: &Params, apply: Option<bool>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let manager = p.field_manager.as_deref().unwrap_or("");
    match apply {
        Some(false) if p.force_given => {
            errs.push(FieldError::forbidden("force", "may not be specified for non-apply patch"))
        }
        Some(true) if manager.is_empty() => {
            errs.push(FieldError::required("fieldManager", "is required for apply patch"))
        }
        _ => {}
    }
    errs.extend(validate_field_manager(manager));
    errs.extend(validate_dry_run(&p.dry_run_values));
    errs.extend(validate_field_validation(p.field_validation.as_deref()));
    errs
}

/// `ValidateDeleteOptions` over the options as decoded (from the body if there is one, else
/// from the query).
pub fn validate_delete(orphan: Option<bool>, policy: Option<&str>, dry_run: &[String]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let (Some(_), Some(pp)) = (orphan, policy) {
        errs.push(FieldError::invalid(
            "propagationPolicy",
            pp,
            "orphanDependents and deletionPropagation cannot be both set",
        ));
    }
    if let Some(pp) = policy {
        if !matches!(pp, "Foreground" | "Background" | "Orphan") {
            errs.push(FieldError::not_supported(
                "propagationPolicy",
                pp,
                &["Foreground", "Background", "Orphan", "nil"],
            ));
        }
    }
    errs.extend(validate_dry_run(dry_run));
    errs
}

fn is_apply(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim().to_ascii_lowercase().starts_with("application/apply-patch"))
}

/// Convert and validate the options of the request's verb, as upstream's handlers do before
/// they touch storage. (DeleteOptions are validated where the body is decoded, in `rest`.)
pub fn check(
    method: &Method,
    t: &Target,
    query: &str,
    p: &Params,
    headers: &HeaderMap,
    body_empty: bool,
) -> ApiResult<()> {
    let list_like = t.name.is_none() && t.sub.is_none();
    let write = |kind: &str, apply: Option<bool>| {
        let errs = validate_write(p, apply);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(options_invalid(kind, &errs))
        }
    };
    match *method {
        Method::GET if list_like => {
            check_integers(query, &["limit", "timeoutSeconds"])?;
            let errs = validate_list(p);
            if !errs.is_empty() {
                return Err(options_invalid("ListOptions", &errs));
            }
            Ok(())
        }
        Method::POST => write("CreateOptions", None),
        Method::PUT => write("UpdateOptions", None),
        Method::PATCH => write("PatchOptions", Some(is_apply(headers))),
        Method::DELETE => {
            if list_like {
                check_integers(query, &["limit", "timeoutSeconds"])?;
                let errs = validate_list(p);
                if !errs.is_empty() {
                    return Err(options_invalid("ListOptions", &errs));
                }
            }
            if body_empty {
                check_integers(query, &["gracePeriodSeconds"])?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Upstream's field manager refuses an apply patch whose apiVersion/kind is not the
/// resource's: `invalid object type: <group>/<version>, Kind=<kind>` (a 400).
pub fn check_apply_gvk(r: &crate::registry::Resource, patch: &Value) -> ApiResult<()> {
    let api_version = patch["apiVersion"].as_str().unwrap_or("");
    let kind = patch["kind"].as_str().unwrap_or("");
    // schema.FromAPIVersionAndKind: an apiVersion with more than one slash parses to nothing.
    let (group, version) = match api_version.split_once('/') {
        None => ("", api_version),
        Some((g, v)) if !v.contains('/') => (g, v),
        Some(_) => ("", ""),
    };
    let (want_group, want_version) = match r.api_version().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), r.api_version().to_string()),
    };
    if group == want_group && version == want_version && kind == r.kind {
        return Ok(());
    }
    Err(ApiError::bad_request(format!("invalid object type: {group}/{version}, Kind={kind}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_false_only_for_false_and_zero() {
        for v in ["false", "False", "FALSE", "fAlSe", "0"] {
            assert!(!query_bool(v), "{v}");
        }
        for v in ["true", "1", "t", "T", "True", "yes", "", "2", "no"] {
            assert!(query_bool(v), "{v}");
        }
    }

    #[test]
    fn integers_fail_with_go_text() {
        assert_eq!(go_parse_int("+12"), Ok(12));
        assert_eq!(go_parse_int("-3"), Ok(-3));
        assert_eq!(go_parse_int("abc").unwrap_err(), "strconv.ParseInt: parsing \"abc\": invalid syntax");
        assert_eq!(go_parse_int("").unwrap_err(), "strconv.ParseInt: parsing \"\": invalid syntax");
        assert_eq!(go_parse_int("1_0").unwrap_err(), "strconv.ParseInt: parsing \"1_0\": invalid syntax");
        assert_eq!(
            go_parse_int("99999999999999999999").unwrap_err(),
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"
        );
    }

    #[test]
    fn list_options_messages() {
        let p = Params { resource_version_match: Some("Exact".into()), ..Default::default() };
        let e = options_invalid("ListOptions", &validate_list(&p));
        assert_eq!(e.message, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided");
        let p = Params {
            resource_version: Some("0".into()),
            resource_version_match: Some("Exact".into()),
            ..Default::default()
        };
        assert_eq!(
            options_invalid("ListOptions", &validate_list(&p)).message,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
        );
        let p = Params { watch: true, send_initial_events: Some(true), ..Default::default() };
        assert_eq!(
            options_invalid("ListOptions", &validate_list(&p)).message,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        );
    }

    #[test]
    fn dry_run_and_field_validation_messages() {
        let p =
            Params { dry_run_values: vec!["Foo".into()], field_validation: Some("Loud".into()), ..Default::default() };
        assert_eq!(
            options_invalid("CreateOptions", &validate_write(&p, None)).message,
            "CreateOptions.meta.k8s.io \"\" is invalid: [dryRun: Unsupported value: [\"Foo\"]: supported values: \"All\", fieldValidation: Unsupported value: \"Loud\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"]"
        );
    }
}
