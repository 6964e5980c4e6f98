//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902), with the error messages of the
//! library upstream uses (evanphx/json-patch).

use serde_json::{Map, Value};

use super::value::{json_eq, json_kind};
use super::PatchError;

/// Upstream's limit on the number of operations in one JSON patch.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Apply an RFC 7386 JSON merge patch.
pub fn json_merge_patch(original: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut target = match original {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    target.remove(k);
                } else {
                    let merged = json_merge_patch(target.get(k).unwrap_or(&Value::Null), v);
                    target.insert(k.clone(), merged);
                }
            }
            Value::Object(target)
        }
        other => other.clone(),
    }
}

fn missing(msg: String) -> PatchError {
    PatchError::Unprocessable(format!("{msg}: missing value"))
}

/// Split a JSON pointer into unescaped reference tokens.
fn parse_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError::Unprocessable(format!("JSON pointer must be empty or start with a \"/\": {path:?}")));
    };
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn get_path<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(parse_index(t)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_path_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i = parse_index(t)?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn parse_index(t: &str) -> Option<usize> {
    if t.is_empty() || (t.len() > 1 && t.starts_with('0')) || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

fn invalid_index(t: &str) -> PatchError {
    PatchError::Unprocessable(format!("Unable to access invalid index: {t}: invalid index referenced"))
}

fn wrap(op: &str, path: &str, e: PatchError) -> PatchError {
    PatchError::Unprocessable(format!("error in {op} for path: '{path}': {e}"))
}

fn op_add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = parse_pointer(path)?;
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let Some(con) = get_path_mut(doc, parent) else {
        return Err(missing(format!("add operation does not apply: doc is missing path: {path:?}")));
    };
    match con {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i = parse_index(last).ok_or_else(|| wrap("add", path, invalid_index(last)))?;
            if i > a.len() {
                return Err(wrap("add", path, invalid_index(last)));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing(format!("add operation does not apply: doc is missing path: {path:?}"))),
    }
}

fn op_remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let tokens = parse_pointer(path)?;
    let Some((last, parent)) = tokens.split_last() else {
        return Ok(std::mem::take(doc));
    };
    let Some(con) = get_path_mut(doc, parent) else {
        return Err(missing(format!("remove operation does not apply: doc is missing path: {path:?}")));
    };
    match con {
        Value::Object(m) => m
            .shift_remove(last)
            .ok_or_else(|| wrap("remove", path, missing(format!("Unable to remove nonexistent key: {last}")))),
        Value::Array(a) => {
            let i = parse_index(last).ok_or_else(|| wrap("remove", path, invalid_index(last)))?;
            if i >= a.len() {
                return Err(wrap("remove", path, invalid_index(last)));
            }
            Ok(a.remove(i))
        }
        _ => Err(missing(format!("remove operation does not apply: doc is missing path: {path:?}"))),
    }
}

fn op_replace(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = parse_pointer(path)?;
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let Some(con) = get_path_mut(doc, parent) else {
        return Err(missing(format!("replace operation does not apply: doc is missing path: {path}")));
    };
    match con {
        Value::Object(m) => match m.get_mut(last) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(missing(format!("replace operation does not apply: doc is missing key: {path}"))),
        },
        Value::Array(a) => {
            let i = parse_index(last).ok_or_else(|| invalid_index(last))?;
            match a.get_mut(i) {
                Some(slot) => {
                    *slot = value;
                    Ok(())
                }
                None => Err(invalid_index(last)),
            }
        }
        _ => Err(missing(format!("replace operation does not apply: doc is missing path: {path}"))),
    }
}

fn str_field<'a>(op: &'a Map<String, Value>, name: &str, kind: &str) -> Result<&'a str, PatchError> {
    match op.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(PatchError::Unprocessable(format!("{kind} operation missing {name} field"))),
    }
}

fn value_field(op: &Map<String, Value>, kind: &str) -> Result<Value, PatchError> {
    op.get("value").cloned().ok_or_else(|| PatchError::Unprocessable(format!("{kind} operation missing value field")))
}

/// Apply an RFC 6902 JSON patch (`ops` is the decoded patch document).
pub fn json_patch(original: &Value, ops: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = ops else {
        return Err(PatchError::BadRequest(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            json_kind(ops)
        )));
    };
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let mut doc = original.clone();
    for op in ops {
        let Value::Object(op) = op else {
            return Err(PatchError::BadRequest(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
                json_kind(op)
            )));
        };
        let kind = match op.get("op") {
            Some(Value::String(s)) => s.as_str(),
            _ => "unknown",
        };
        match kind {
            "add" => {
                let path = str_field(op, "path", kind)?;
                op_add(&mut doc, path, value_field(op, kind)?)?;
            }
            "remove" => {
                let path = str_field(op, "path", kind)?;
                op_remove(&mut doc, path)?;
            }
            "replace" => {
                let path = str_field(op, "path", kind)?;
                op_replace(&mut doc, path, value_field(op, kind)?)?;
            }
            "move" => {
                let from = str_field(op, "from", kind)?;
                let path = str_field(op, "path", kind)?;
                if get_path(&doc, &parse_pointer(from)?).is_none() {
                    return Err(missing(format!("move operation does not apply: doc is missing from path: {from}")));
                }
                let v = op_remove(&mut doc, from)?;
                op_add(&mut doc, path, v).map_err(|_| {
                    missing(format!("move operation does not apply: doc is missing destination path: {path}"))
                })?;
            }
            "copy" => {
                let from = str_field(op, "from", kind)?;
                let path = str_field(op, "path", kind)?;
                let Some(v) = get_path(&doc, &parse_pointer(from)?).cloned() else {
                    return Err(missing(format!("copy operation does not apply: doc is missing from path: {from}")));
                };
                op_add(&mut doc, path, v).map_err(|_| {
                    missing(format!("copy operation does not apply: doc is missing destination path: {path}"))
                })?;
            }
            "test" => {
                let path = str_field(op, "path", kind)?;
                let expected = op.get("value").cloned().unwrap_or(Value::Null);
                let tokens = parse_pointer(path)?;
                if let Some((_, parent)) = tokens.split_last() {
                    if get_path(&doc, parent).is_none_or(|p| !p.is_object() && !p.is_array()) {
                        return Err(missing(format!("test operation does not apply: is missing path: {path}")));
                    }
                }
                let actual = get_path(&doc, &tokens);
                let ok = match actual {
                    Some(a) => json_eq(a, &expected),
                    None => expected.is_null(),
                };
                if !ok {
                    return Err(PatchError::Unprocessable(format!("testing value {path} failed: test failed")));
                }
            }
            other => {
                return Err(PatchError::Unprocessable(format!("Unexpected kind: {other}")));
            }
        }
    }
    Ok(doc)
}
