//! Field selectors as apimachinery's `fields` package parses them (`a=b`, `a==b`, `a!=b`,
//! comma-separated, `\` escapes), the field labels each resource supports (the field label
//! conversion functions of `pkg/apis/core/v1` and friends, with their error messages) and the
//! selectable field values of a JSON object (the registries' `ToSelectableFields`).

use std::fmt;

use serde_json::Value;

/// A field selector parse or conversion error; `Display` is upstream's message. The API server
/// answers these with 400 BadRequest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldSelectorError(pub String);

/// One term: `field=value` (or `==`), or `field!=value` when `negated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

/// A conjunction of field terms; empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if rest.starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// Undoes `\\`, `\,` and `\=` (`fields.UnescapeValue`).
pub fn unescape_value(s: &str) -> Result<String, FieldSelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => return Err(FieldSelectorError(format!("invalid field selector: invalid escape sequence: \\{c}"))),
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(FieldSelectorError(format!("invalid field selector: unescaped character in value: {c}")))
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(FieldSelectorError("invalid field selector: invalid escape sequence: \\".to_string()));
    }
    Ok(out)
}

/// Escapes `\`, `,` and `=` (`fields.EscapeValue`).
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl FieldSelector {
    /// Parses a field selector string (`fields.ParseSelector`).
    pub fn parse(s: &str) -> Result<Self, FieldSelectorError> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(FieldSelectorError(format!("invalid selector: '{s}'; can't understand '{part}'")));
            };
            let value = unescape_value(rhs)?;
            terms.push(FieldTerm { field: lhs.to_string(), value, negated: op == "!=" });
        }
        Ok(FieldSelector { terms })
    }

    /// Checks every field against what `resource` supports and applies upstream's label
    /// conversions (pods' `spec.host` is `spec.nodeName`). The error is upstream's.
    pub fn convert_for(&self, resource: &str) -> Result<Self, FieldSelectorError> {
        let mut terms = Vec::with_capacity(self.terms.len());
        for t in &self.terms {
            let field = convert_field_label(resource, &t.field)?;
            terms.push(FieldTerm { field, value: t.value.clone(), negated: t.negated });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the object satisfies every term (a missing field counts as "").
    pub fn matches(&self, resource: &str, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let eq = field_matches(resource, obj, &t.field, &t.value);
            eq != t.negated
        })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// The value an `=` term requires for `field` (`RequiresExactMatch`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms.iter().find(|t| t.field == field && !t.negated).map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| format!("{}{}{}", t.field, if t.negated { "!=" } else { "=" }, escape_value(&t.value)))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = FieldSelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];
const NODE_FIELDS: &[&str] = &["metadata.name", "spec.unschedulable"];
const NAMESPACE_FIELDS: &[&str] = &["status.phase", "metadata.name"];
const SECRET_FIELDS: &[&str] = &["type", "metadata.namespace", "metadata.name"];
const SERVICE_FIELDS: &[&str] = &["metadata.namespace", "metadata.name", "spec.clusterIP", "spec.type"];
const REPLICASET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.replicas"];
const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The field labels a resource (plural name) accepts in a field selector.
pub fn supported_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "pods" => POD_FIELDS,
        "events" => EVENT_FIELDS,
        "nodes" => NODE_FIELDS,
        "namespaces" => NAMESPACE_FIELDS,
        "secrets" => SECRET_FIELDS,
        "services" => SERVICE_FIELDS,
        "replicasets" => REPLICASET_FIELDS,
        _ => META_FIELDS,
    }
}

/// Upstream's field label conversion for `resource`: the (possibly renamed) label, or the error
/// the API server returns as 400 BadRequest.
pub fn convert_field_label(resource: &str, label: &str) -> Result<String, FieldSelectorError> {
    if resource == "pods" && label == "spec.host" {
        return Ok("spec.nodeName".to_string());
    }
    let supported = supported_fields(resource);
    if supported.contains(&label) {
        return Ok(label.to_string());
    }
    match resource {
        "pods" | "events" | "nodes" | "namespaces" | "secrets" | "services" | "replicasets" => {
            Err(FieldSelectorError(format!("field label not supported: {label}")))
        }
        _ => Err(FieldSelectorError(format!(
            "\"{label}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        ))),
    }
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = obj;
    for p in path {
        match cur.get(*p) {
            Some(v) => cur = v,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn matches_pod_ips(obj: &Value, value: &str) -> bool {
    obj.get("status")
        .and_then(|s| s.get("podIPs"))
        .and_then(Value::as_array)
        .is_some_and(|ips| ips.iter().any(|ip| ip.get("ip").and_then(Value::as_str) == Some(value)))
}

fn field_matches(resource: &str, obj: &Value, field: &str, value: &str) -> bool {
    if resource == "pods" && field == "status.podIPs" {
        return matches_pod_ips(obj, value);
    }
    field_value(resource, obj, field).unwrap_or_default() == value
}

/// The selectable value of `field` for a JSON object of `resource` (`ToSelectableFields`), or
/// `None` when the resource has no such field.
pub fn field_value(resource: &str, obj: &Value, field: &str) -> Option<String> {
    let namespaced = !matches!(resource, "nodes" | "namespaces");
    let v = match field {
        "metadata.name" => str_at(obj, &["metadata", "name"]).to_string(),
        "metadata.namespace" if namespaced => str_at(obj, &["metadata", "namespace"]).to_string(),
        _ => match (resource, field) {
            ("pods", "spec.nodeName" | "spec.restartPolicy" | "spec.schedulerName" | "spec.serviceAccountName") => {
                let f = field.strip_prefix("spec.").unwrap_or(field);
                str_at(obj, &["spec", f]).to_string()
            }
            ("pods", "spec.hostNetwork") => {
                obj.get("spec").and_then(|s| s.get("hostNetwork")).and_then(Value::as_bool).unwrap_or(false).to_string()
            }
            ("pods", "status.phase") => str_at(obj, &["status", "phase"]).to_string(),
            ("pods", "status.nominatedNodeName") => str_at(obj, &["status", "nominatedNodeName"]).to_string(),
            ("pods", "status.podIP") => obj
                .get("status")
                .and_then(|s| s.get("podIPs"))
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|ip| ip.get("ip"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            ("events", f) if f.starts_with("involvedObject.") => {
                let sub = &f["involvedObject.".len()..];
                if !matches!(
                    sub,
                    "kind" | "namespace" | "name" | "uid" | "apiVersion" | "resourceVersion" | "fieldPath"
                ) {
                    return None;
                }
                str_at(obj, &["involvedObject", sub]).to_string()
            }
            ("events", "reason") => str_at(obj, &["reason"]).to_string(),
            ("events", "type") => str_at(obj, &["type"]).to_string(),
            ("events", "reportingComponent") => str_at(obj, &["reportingComponent"]).to_string(),
            ("events", "source") => {
                let c = str_at(obj, &["source", "component"]);
                if c.is_empty() {
                    str_at(obj, &["reportingComponent"]).to_string()
                } else {
                    c.to_string()
                }
            }
            ("secrets", "type") => str_at(obj, &["type"]).to_string(),
            ("nodes", "spec.unschedulable") => obj
                .get("spec")
                .and_then(|s| s.get("unschedulable"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
            ("namespaces", "status.phase") => str_at(obj, &["status", "phase"]).to_string(),
            ("services", "spec.clusterIP") => str_at(obj, &["spec", "clusterIP"]).to_string(),
            ("services", "spec.type") => str_at(obj, &["spec", "type"]).to_string(),
            ("replicasets", "status.replicas") => {
                obj.get("status").and_then(|s| s.get("replicas")).and_then(Value::as_i64).unwrap_or(0).to_string()
            }
            _ => return None,
        },
    };
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_string() {
        let s = FieldSelector::parse("status.phase=Running,spec.nodeName!=n1").unwrap();
        assert_eq!(s.to_string(), "spec.nodeName!=n1,status.phase=Running");
        assert_eq!(FieldSelector::parse("a==b").unwrap().to_string(), "a=b");
        assert_eq!(FieldSelector::parse("a=b\\,c").unwrap().terms()[0].value, "b,c");
        assert_eq!(FieldSelector::parse("a=b\\,c").unwrap().to_string(), "a=b\\,c");
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert_eq!(
            FieldSelector::parse("abc").unwrap_err().to_string(),
            "invalid selector: 'abc'; can't understand 'abc'"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err().to_string(),
            "invalid field selector: unescaped character in value: ="
        );
        assert_eq!(
            FieldSelector::parse("a=b\\x").unwrap_err().to_string(),
            "invalid field selector: invalid escape sequence: \\x"
        );
        assert_eq!(FieldSelector::parse("metadata.name=x").unwrap().requires_exact_match("metadata.name"), Some("x"));
    }

    #[test]
    fn conversion_errors() {
        let s = FieldSelector::parse("status.hostIP=1.2.3.4").unwrap();
        assert_eq!(s.convert_for("pods").unwrap_err().to_string(), "field label not supported: status.hostIP");
        let s = FieldSelector::parse("spec.replicas=1").unwrap();
        assert_eq!(
            s.convert_for("deployments").unwrap_err().to_string(),
            "\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        let s = FieldSelector::parse("spec.host=n1").unwrap().convert_for("pods").unwrap();
        assert_eq!(s.to_string(), "spec.nodeName=n1");
        assert!(FieldSelector::parse("metadata.namespace=x").unwrap().convert_for("nodes").is_err());
        assert!(FieldSelector::parse("spec.unschedulable=true").unwrap().convert_for("nodes").is_ok());
        assert!(FieldSelector::parse("spec.clusterIP!=None").unwrap().convert_for("services").is_ok());
        assert!(FieldSelector::parse("involvedObject.name=x,type=Normal").unwrap().convert_for("events").is_ok());
    }

    #[test]
    fn matching_objects() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}]}
        });
        let m = |s: &str| FieldSelector::parse(s).unwrap().convert_for("pods").unwrap().matches("pods", &pod);
        assert!(m("spec.nodeName=n1"));
        assert!(m("status.phase=Running,metadata.namespace=ns"));
        assert!(!m("status.phase!=Running"));
        assert!(m("spec.hostNetwork=true"));
        assert!(m("status.podIP=10.244.0.5"));
        assert!(m("status.podIPs=fd00::5"));
        assert!(m("status.nominatedNodeName="));
        assert!(!m("spec.nodeName=n2"));
        let ev = json!({"metadata": {"name": "e", "namespace": "ns"}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started", "source": {"component": "kubelet"}, "type": "Normal"});
        let s = FieldSelector::parse("involvedObject.kind=Pod,involvedObject.name=p,source=kubelet").unwrap();
        assert!(s.matches("events", &ev));
        let rs = json!({"metadata": {"name": "r"}, "status": {"replicas": 3}});
        assert!(FieldSelector::parse("status.replicas=3").unwrap().matches("replicasets", &rs));
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(FieldSelector::parse("spec.unschedulable=false").unwrap().matches("nodes", &node));
    }
}
