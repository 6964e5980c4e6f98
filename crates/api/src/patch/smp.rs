//! Strategic merge patch, as upstream `apimachinery/pkg/util/strategicpatch` applies it on the
//! server (`MergeParallelList` and `IgnoreUnmatchedNulls` both on).

use serde_json::{Map, Value};

use super::json::json_merge_patch;
use super::schema::{child_path, PatchSchema, SmpList};
use super::value::{json_eq, json_kind};
use super::PatchError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList";
const SET_ORDER_PREFIX: &str = "$setElementOrder";

fn bad_retain_keys() -> PatchError {
    PatchError::BadRequest("invalid patch format of retainKeys".into())
}
fn bad_primitive_list() -> PatchError {
    PatchError::BadRequest("invalid patch format of primitive list".into())
}
fn bad_set_order() -> PatchError {
    PatchError::BadRequest("invalid patch format of setElementOrder list".into())
}
fn no_merge_key(m: &Value, key: &str) -> PatchError {
    PatchError::Internal(format!("map: {} does not contain declared merge key: {key}", go_fmt(m)))
}
fn bad_patch_type(t: &Value, m: &Map<String, Value>) -> PatchError {
    PatchError::Internal(format!("unknown patch type: {} in map: {}", go_fmt(t), go_fmt(&Value::Object(m.clone()))))
}
fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    PatchError::Internal(format!("expected a {expected}, but received a {}", go_type(actual)))
}

/// Go's reflect type name of a decoded JSON value (for error messages).
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Go's `%v` rendering of a decoded JSON value.
pub(crate) fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_fmt).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys.iter().map(|k| format!("{k}:{}", go_fmt(&m[*k]))).collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

fn same_kind(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Null, Value::Null)
            | (Value::Bool(_), Value::Bool(_))
            | (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Array(_), Value::Array(_))
            | (Value::Object(_), Value::Object(_))
    )
}

/// Apply a strategic merge patch to `original` using the patch metadata of its kind.
///
/// Kinds the schema does not know fall back to JSON merge patch (RFC 7386).
pub fn strategic_merge(original: &Value, patch: &Value, schema: &PatchSchema) -> Result<Value, PatchError> {
    let Value::Object(patch_map) = patch else {
        return Err(PatchError::BadRequest(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(patch)
        )));
    };
    if !schema.is_known() {
        return Ok(json_merge_patch(original, patch));
    }
    let orig = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let merged = merge_map(orig, patch_map.clone(), "", schema)?;
    Ok(Value::Object(merged))
}

/// Merge a patch value into "nothing": strips directives and nulls the way merging into an
/// empty value of the same type does.
fn clean(patch: Value, path: &str, schema: &PatchSchema) -> Result<Value, PatchError> {
    match patch {
        Value::Object(p) => Ok(Value::Object(merge_map(Map::new(), p, path, schema)?)),
        Value::Array(items) => {
            let strategy = schema.rule(path).map(|r| r.smp.clone()).unwrap_or(SmpList::Replace);
            match strategy {
                SmpList::Replace => Ok(Value::Array(items)),
                // Items without their merge key are taken as they are (validation reports
                // them later), as upstream takes a list absent from the original verbatim.
                SmpList::MergeByKey(k) => match merge_slice(Vec::new(), items.clone(), &k, false, path, schema) {
                    Ok(merged) => Ok(Value::Array(merged)),
                    Err(_) => Ok(Value::Array(items)),
                },
                SmpList::MergePrimitive => Ok(Value::Array(merge_slice(Vec::new(), items, "", false, path, schema)?)),
            }
        }
        other => Ok(other),
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    path: &str,
    schema: &PatchSchema,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(d) = patch.get(DIRECTIVE) {
        return match d.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                merge_map(Map::new(), patch, path, schema)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(bad_patch_type(d, &patch)),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, path, schema)?;

    for (k, patch_v) in patch {
        let (key, is_delete_list) = if k.starts_with(DELETE_PRIMITIVE_PREFIX) {
            (extract_key(&k, DELETE_PRIMITIVE_PREFIX)?, true)
        } else {
            (k, false)
        };
        if patch_v.is_null() {
            original.remove(&key);
            continue;
        }
        let cpath = child_path(path, &key);
        let Some(orig_v) = original.get_mut(&key) else {
            if !is_delete_list {
                let v = clean(patch_v, &cpath, schema)?;
                original.insert(key, v);
            }
            continue;
        };
        if !same_kind(orig_v, &patch_v) {
            if !is_delete_list {
                *orig_v = clean(patch_v, &cpath, schema)?;
            }
            continue;
        }
        match (orig_v, patch_v) {
            (Value::Object(o), Value::Object(p)) => {
                let o = std::mem::take(o);
                let merged = merge_map(o, p, &cpath, schema)?;
                original.insert(key, Value::Object(merged));
            }
            (Value::Array(o), Value::Array(p)) => {
                let strategy = schema.rule(&cpath).map(|r| r.smp.clone()).unwrap_or(SmpList::Replace);
                let merged = match strategy {
                    SmpList::Replace => p,
                    SmpList::MergeByKey(mk) => merge_slice(std::mem::take(o), p, &mk, is_delete_list, &cpath, schema)?,
                    SmpList::MergePrimitive => merge_slice(std::mem::take(o), p, "", is_delete_list, &cpath, schema)?,
                };
                original.insert(key, Value::Array(merged));
            }
            (slot, p) => {
                if !is_delete_list {
                    *slot = p;
                }
            }
        }
    }
    Ok(original)
}

fn extract_key(s: &str, prefix: &str) -> Result<String, PatchError> {
    match s.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest.to_string()),
        _ => Err(if prefix == DELETE_PRIMITIVE_PREFIX { bad_primitive_list() } else { bad_set_order() }),
    }
}

fn apply_retain_keys(original: &mut Map<String, Value>, patch: &mut Map<String, Value>) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = retain else {
        return Err(bad_retain_keys());
    };
    let keep: Vec<&str> = list.iter().filter_map(|v| v.as_str()).collect();
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_PRIMITIVE_PREFIX) || k.starts_with(SET_ORDER_PREFIX) {
            continue;
        }
        if !keep.contains(&k.as_str()) {
            return Err(bad_retain_keys());
        }
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

fn merge_key_of<'a>(v: &'a Value, mk: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| m.get(mk))
}

fn merge_key_equal(left: &Value, right: &Value, mk: &str) -> Result<bool, PatchError> {
    if mk.is_empty() {
        return Ok(json_eq(left, right));
    }
    if !left.is_object() {
        return Err(bad_arg_type("map[string]interface {}", left));
    }
    if !right.is_object() {
        return Err(bad_arg_type("map[string]interface {}", right));
    }
    let l = merge_key_of(left, mk).ok_or_else(|| no_merge_key(left, mk))?;
    let r = merge_key_of(right, mk).ok_or_else(|| no_merge_key(right, mk))?;
    Ok(json_eq(l, r))
}

fn contains_directive(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.contains_key(DIRECTIVE))
}

fn validate_patch_with_set_order(patch_list: &[Value], order: &[Value], mk: &str) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = if mk.is_empty() {
        patch_list.iter().collect()
    } else {
        patch_list.iter().filter(|v| !is_delete_item(v)).collect()
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        if contains_directive(non_delete[pi]) {
            pi += 1;
            continue;
        }
        if merge_key_equal(non_delete[pi], &order[oi], mk)? {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() && oi >= order.len() {
        return Err(PatchError::Internal(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ORDER_PREFIX} list:\n{}\n",
            go_fmt(&Value::Array(patch_list.to_vec())),
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn is_delete_item(v: &Value) -> bool {
    v.as_object().and_then(|m| m.get(DIRECTIVE)).and_then(|d| d.as_str()) == Some("delete")
}

fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    path: &str,
    schema: &PatchSchema,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ORDER_PREFIX)).cloned().collect();
    for key in keys {
        let Some(order_v) = patch.remove(&key) else {
            continue;
        };
        let Value::Array(order) = order_v else {
            return Err(bad_arg_type("[]interface {}", &order_v));
        };
        let okey = extract_key(&key, SET_ORDER_PREFIX)?;
        let orig_list = match original.get(&okey) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        let patch_list = match patch.get(&okey) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        let cpath = child_path(path, &okey);
        let strategy = schema.rule(&cpath).map(|r| r.smp.clone()).unwrap_or(SmpList::Replace);
        let mk = match &strategy {
            SmpList::MergeByKey(k) => k.clone(),
            _ => String::new(),
        };
        validate_patch_with_set_order(patch_list.as_deref().unwrap_or(&[]), &order, &mk)?;
        let merged = match (orig_list.clone(), patch_list.clone()) {
            (Some(o), None) => o,
            (None, Some(p)) => match clean(Value::Array(p), &cpath, schema)? {
                Value::Array(a) => a,
                _ => Vec::new(),
            },
            (Some(o), Some(p)) => match strategy {
                SmpList::Replace => p,
                SmpList::MergeByKey(_) | SmpList::MergePrimitive => merge_slice(o, p, &mk, false, &cpath, schema)?,
            },
            (None, None) => continue,
        };
        let is_map = merged.iter().chain(orig_list.iter().flatten()).any(|v| v.is_object());
        let (patch_items, server_only) = partition(&merged, &order, &mk, is_map)?;
        let both = normalize_element_order(
            patch_items,
            server_only,
            &order,
            orig_list.as_deref().unwrap_or(&[]),
            &mk,
            is_map,
        )?;
        original.insert(okey.clone(), Value::Array(both));
        patch.remove(&okey);
    }
    Ok(())
}

fn find_by_key(list: &[Value], mk: &str, value: &Value) -> Result<Option<usize>, PatchError> {
    for (i, v) in list.iter().enumerate() {
        let Some(m) = v.as_object() else {
            return Err(PatchError::Internal(format!("value for key {i} is not a map.")));
        };
        if m.get(mk).is_some_and(|x| json_eq(x, value)) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn partition(merged: &[Value], by: &[Value], mk: &str, is_map: bool) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut in_patch = Vec::new();
    let mut server_only = Vec::new();
    for v in merged {
        let found = if is_map && !mk.is_empty() {
            let kv = merge_key_of(v, mk).ok_or_else(|| no_merge_key(v, mk))?;
            find_by_key(by, mk, kv)?.is_some()
        } else {
            by.iter().any(|b| json_eq(b, v))
        };
        if found {
            in_patch.push(v.clone());
        } else {
            server_only.push(v.clone());
        }
    }
    Ok((in_patch, server_only))
}

fn index_of(list: &[Value], item: &Value, mk: &str, is_map: bool) -> Option<usize> {
    if is_map && !mk.is_empty() {
        let kv = merge_key_of(item, mk)?;
        list.iter().position(|v| merge_key_of(v, mk).is_some_and(|x| json_eq(x, kv)))
    } else {
        list.iter().position(|v| json_eq(v, item))
    }
}

fn normalize_slice_order(
    mut to_sort: Vec<Value>,
    order: &[Value],
    mk: &str,
    is_map: bool,
) -> Result<Vec<Value>, PatchError> {
    if is_map && !mk.is_empty() {
        for v in to_sort.iter().chain(order.iter()) {
            if merge_key_of(v, mk).is_none() {
                return Err(no_merge_key(v, mk));
            }
        }
    }
    to_sort.sort_by_key(|v| index_of(order, v, mk, is_map).unwrap_or(usize::MAX));
    Ok(to_sort)
}

fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    mk: &str,
    is_map: bool,
) -> Result<Vec<Value>, PatchError> {
    let patch = normalize_slice_order(patch, patch_order, mk, is_map)?;
    let server_only = normalize_slice_order(server_only, server_order, mk, is_map)?;
    // Insert server-only items (left) into the patch items (right), using the live order.
    let (left, right) = (server_only, patch);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        if i >= left.len() {
            out.push(right[j].clone());
            j += 1;
        } else if j >= right.len() {
            out.push(left[i].clone());
            i += 1;
        } else {
            let li = index_of(server_order, &left[i], mk, is_map);
            let ri = index_of(server_order, &right[j], mk, is_map);
            match (li, ri) {
                (Some(a), Some(b)) if a < b => {
                    out.push(left[i].clone());
                    i += 1;
                }
                _ => {
                    out.push(right[j].clone());
                    j += 1;
                }
            }
        }
    }
    Ok(out)
}

/// The common element kind of lists, as upstream's `sliceElementType`.
fn slice_element_kind(lists: &[&[Value]]) -> Result<Option<&'static str>, PatchError> {
    let mut prev: Option<&'static str> = None;
    for list in lists {
        for v in list.iter() {
            let k = json_kind(v);
            match prev {
                None => {
                    if k == "array" {
                        return Err(PatchError::Unprocessable("lists of lists are not supported".into()));
                    }
                    prev = Some(k);
                }
                Some(p) if p != k => {
                    let all: Vec<Value> = lists.iter().map(|l| Value::Array(l.to_vec())).collect();
                    return Err(PatchError::Internal(format!(
                        "list element types are not identical: {}",
                        go_fmt(&Value::Array(all))
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(prev)
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    mk: &str,
    is_delete_list: bool,
    path: &str,
    schema: &PatchSchema,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let Some(kind) = slice_element_kind(&[&original, &patch])? else {
        return Ok(original);
    };
    let is_map = kind == "object";
    let (server_order, patch_items_order, merged);
    if !is_map {
        if is_delete_list {
            return Ok(original.into_iter().filter(|v| !patch.iter().any(|d| json_eq(d, v))).collect());
        }
        let mut both: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !both.iter().any(|b| json_eq(b, v)) {
                both.push(v.clone());
            }
        }
        merged = both;
        server_order = original;
        patch_items_order = patch;
    } else {
        if mk.is_empty() {
            return Err(PatchError::Internal(format!("cannot merge lists without merge key for {path}")));
        }
        let (orig, p) = merge_slice_special(original, patch, mk)?;
        server_order = orig.clone();
        merged = merge_slice_plain(orig, p.clone(), mk, path, schema)?;
        patch_items_order = p;
    }
    let (patch_items, server_only) = partition(&merged, &patch_items_order, mk, is_map)?;
    normalize_element_order(patch_items, server_only, &patch_items_order, &server_order, mk, is_map)
}

fn merge_slice_special(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    mk: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::new();
    let mut replace = false;
    for v in patch {
        let Value::Object(m) = &v else {
            plain.push(v);
            continue;
        };
        let Some(d) = m.get(DIRECTIVE) else {
            plain.push(v);
            continue;
        };
        match d.as_str() {
            Some("delete") => {
                let Some(kv) = m.get(mk).cloned() else {
                    return Err(no_merge_key(&v, mk));
                };
                while let Some(i) = find_by_key(&original, mk, &kv)? {
                    original.remove(i);
                }
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(PatchError::Internal("merging lists cannot yet be specified in the patch".into()))
            }
            _ => return Err(bad_patch_type(d, m)),
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

fn merge_slice_plain(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    mk: &str,
    path: &str,
    schema: &PatchSchema,
) -> Result<Vec<Value>, PatchError> {
    for v in patch {
        let Value::Object(pm) = v else {
            return Err(bad_arg_type("map[string]interface {}", &v));
        };
        let Some(kv) = pm.get(mk).cloned() else {
            return Err(no_merge_key(&Value::Object(pm), mk));
        };
        match find_by_key(&original, mk, &kv)? {
            Some(i) => {
                let om = match std::mem::take(&mut original[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                original[i] = Value::Object(merge_map(om, pm, path, schema)?);
            }
            None => original.push(Value::Object(merge_map(Map::new(), pm, path, schema)?)),
        }
    }
    Ok(original)
}
