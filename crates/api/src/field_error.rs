//! Field-level validation errors printed exactly like upstream's `field.Error`
//! (`k8s.io/apimachinery/pkg/util/validation/field`), their aggregate messages and the `Invalid`
//! Status text and causes built from them. Shared by validation and the selector parsers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Map, Value};

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
