//! Server-side apply and field ownership (`metadata.managedFields`), as upstream's
//! structured-merge-diff `Updater` plus the apiserver field manager wrappers (strip of
//! server-owned metadata, reset fields of status subresources, managed fields timestamps,
//! the client-side apply annotation interop).

use serde_json::{Map, Value};

use super::fieldpath::{canonical_json, FieldPath, FieldSet, PathElement};
use super::schema::{child_path, schema_for, PatchSchema, SsaType};
use super::value::json_eq;
use super::ApplyError;

/// `kubectl.kubernetes.io/last-applied-configuration`.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One `metadata.managedFields` entry, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedFieldsEntry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the fields were recorded in.
    pub api_version: String,
    /// RFC 3339 time of the last change by this manager.
    pub time: Option<String>,
    /// Subresource written (`""` for the main resource).
    pub subresource: String,
    /// The owned fields.
    pub fields: FieldSet,
}

impl ManagedFieldsEntry {
    fn same_identity(&self, other: &ManagedFieldsEntry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == "Apply" || self.api_version == other.api_version)
    }

    /// Upstream `printManager`: `"name"`, with `with subresource "s"` and, for updates,
    /// `using <apiVersion> at <time>`.
    pub fn display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            match &self.time {
                Some(t) => s = format!("{s} using {} at {t}", self.api_version),
                None => s = format!("{s} using {}", self.api_version),
            }
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), Value::String(self.subresource.clone()));
        }
        Value::Object(m)
    }
}

/// Decode `metadata.managedFields` of an object (missing = empty).
pub fn decode_managed_fields(obj: &Value) -> Result<Vec<ManagedFieldsEntry>, String> {
    let Some(list) = managed_fields_of(obj) else {
        return Ok(Vec::new());
    };
    let Value::Array(list) = list else {
        if list.is_null() {
            return Ok(Vec::new());
        }
        return Err("metadata.managedFields must be a list".into());
    };
    let mut out: Vec<ManagedFieldsEntry> = Vec::new();
    for e in list {
        let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(t) = s("fieldsType") {
            if t != "FieldsV1" {
                return Err(format!("invalid fieldsType {t:?}"));
            }
        }
        let fields = match e.get("fieldsV1") {
            Some(v) if !v.is_null() => FieldSet::from_fields_v1(v)?,
            _ => FieldSet::new(),
        };
        let entry = ManagedFieldsEntry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation").unwrap_or_default(),
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").unwrap_or_default(),
            fields,
        };
        if entry.operation != "Apply" && entry.operation != "Update" && !entry.fields.is_empty() {
            return Err(format!("invalid operation {:?}", entry.operation));
        }
        if out.iter().any(|o| o.same_identity(&entry)) {
            return Err(format!("duplicate entries for manager {:?}", entry.manager));
        }
        out.push(entry);
    }
    Ok(out)
}

/// Encode entries the way upstream sorts them: Apply before Update, then by time, manager,
/// apiVersion, subresource. Empty sets are dropped.
pub fn encode_managed_fields(entries: &[ManagedFieldsEntry]) -> Value {
    let mut sorted: Vec<&ManagedFieldsEntry> = entries.iter().filter(|e| !e.fields.is_empty()).collect();
    sorted.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| p.time.cmp(&q.time))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    Value::Array(sorted.into_iter().map(ManagedFieldsEntry::to_json).collect())
}

// ---------------------------------------------------------------------------------------------
// Typed walks.

fn ssa_type<'a>(schema: &'a PatchSchema, spath: &str) -> &'a SsaType {
    static DEFAULT: SsaType = SsaType::Default;
    schema.rule(spath).map(|r| &r.ssa).unwrap_or(&DEFAULT)
}

fn is_granular_list(t: &SsaType) -> bool {
    matches!(t, SsaType::ListMap { .. } | SsaType::ListSet)
}

/// The path element of a list item. `strict` makes a missing key an error (apply configs);
/// otherwise items fall back to their index.
fn item_pe(item: &Value, idx: usize, t: &SsaType, strict: bool, where_: &str) -> Result<PathElement, String> {
    match t {
        SsaType::ListMap { keys, defaults } => {
            let Some(m) = item.as_object() else {
                if strict {
                    return Err(format!("{where_}: element {idx}: expected map, got {item}"));
                }
                return Ok(PathElement::Index(idx));
            };
            let mut key = Map::new();
            for k in keys {
                match m.get(k) {
                    Some(v) if !v.is_null() => {
                        key.insert(k.clone(), v.clone());
                    }
                    _ => {
                        if let Some((_, d)) = defaults.iter().find(|(dk, _)| dk == k) {
                            key.insert(k.clone(), d.clone());
                        } else if strict {
                            return Err(format!(
                                "{where_}: element {idx}: associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                            ));
                        } else {
                            return Ok(PathElement::Index(idx));
                        }
                    }
                }
            }
            Ok(PathElement::Key(canonical_json(&Value::Object(key))))
        }
        SsaType::ListSet => {
            if item.is_object() || item.is_array() {
                if strict {
                    return Err(format!("{where_}: element {idx}: expected a scalar in a set"));
                }
                return Ok(PathElement::Index(idx));
            }
            Ok(PathElement::Value(canonical_json(item)))
        }
        _ => Ok(PathElement::Index(idx)),
    }
}

fn display_path(path: &[PathElement]) -> String {
    FieldPath(path.to_vec()).to_string()
}

/// Upstream `TypedValue.ToFieldSet()`.
pub(crate) fn to_field_set(v: &Value, schema: &PatchSchema, strict: bool) -> Result<FieldSet, String> {
    let mut set = FieldSet::new();
    let mut path = Vec::new();
    to_set(v, "", schema, strict, &mut path, &mut set)?;
    set.prune_empty();
    Ok(set)
}

fn to_set(
    v: &Value,
    spath: &str,
    schema: &PatchSchema,
    strict: bool,
    path: &mut Vec<PathElement>,
    node: &mut FieldSet,
) -> Result<(), String> {
    let t = ssa_type(schema, spath);
    match v {
        Value::Object(m) if *t != SsaType::Atomic => {
            for (k, c) in m {
                let cp = child_path(spath, k);
                path.push(PathElement::Field(k.clone()));
                let cn = node.child_mut(PathElement::Field(k.clone()));
                to_set(c, &cp, schema, strict, path, cn)?;
                if c.is_null() || c.as_object().is_some_and(Map::is_empty) {
                    cn.member = true;
                }
                path.pop();
            }
        }
        Value::Array(items) if is_granular_list(t) => {
            for (i, item) in items.iter().enumerate() {
                let pe = item_pe(item, i, t, strict, &display_path(path))?;
                if strict && node.children.get(&pe).is_some_and(|c| c.member) {
                    return Err(format!("{}: duplicate entries for key {pe}", display_path(path)));
                }
                path.push(pe.clone());
                let cn = node.child_mut(pe);
                to_set(item, spath, schema, strict, path, cn)?;
                cn.member = true;
                path.pop();
            }
        }
        _ => node.member = true,
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Map,
    List,
    Leaf,
}

fn shape(v: &Value, t: &SsaType) -> Shape {
    match v {
        Value::Object(_) if *t != SsaType::Atomic => Shape::Map,
        Value::Array(_) if is_granular_list(t) => Shape::List,
        _ => Shape::Leaf,
    }
}

/// Upstream `typed.Comparison`.
#[derive(Default, Debug)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

pub(crate) fn compare(l: Option<&Value>, r: Option<&Value>, schema: &PatchSchema) -> Comparison {
    let mut out = Comparison::default();
    let mut path = Vec::new();
    cmp(l, r, "", schema, &mut path, &mut out);
    out.added.prune_empty();
    out.modified.prune_empty();
    out.removed.prune_empty();
    out
}

fn cmp_leaf(l: Option<&Value>, r: Option<&Value>, path: &[PathElement], out: &mut Comparison) {
    if path.is_empty() {
        return;
    }
    match (l, r) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(a), Some(b)) if !json_eq(a, b) => out.modified.insert(path),
        _ => {}
    }
}

fn index_items<'a>(items: &'a [Value], t: &SsaType) -> Vec<(PathElement, &'a Value)> {
    items.iter().enumerate().map(|(i, v)| (item_pe(v, i, t, false, "").unwrap_or(PathElement::Index(i)), v)).collect()
}

fn cmp(
    l: Option<&Value>,
    r: Option<&Value>,
    spath: &str,
    schema: &PatchSchema,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    if let (None, Some(r), false) = (l, r, path.is_empty()) {
        let Comparison { added, modified, .. } = out;
        cmp_added(r, spath, schema, path, added.node_mut(path), modified);
        return;
    }
    let t = ssa_type(schema, spath);
    let ls = l.map(|v| shape(v, t));
    let rs = r.map(|v| shape(v, t));
    // A null on one side counts as an empty container of the other side's shape.
    let common = match (ls, rs, l, r) {
        (Some(a), Some(b), _, _) if a == b => a,
        (Some(Shape::Leaf), Some(b), Some(Value::Null), _) => b,
        (Some(a), Some(Shape::Leaf), _, Some(Value::Null)) => a,
        (Some(_), Some(_), _, _) => Shape::Leaf,
        (Some(a), None, _, _) => a,
        (None, Some(b), _, _) => b,
        (None, None, _, _) => return,
    };
    match common {
        Shape::Leaf => cmp_leaf(l, r, path, out),
        Shape::Map => {
            let empty = Map::new();
            let lm = l.and_then(Value::as_object).unwrap_or(&empty);
            let rm = r.and_then(Value::as_object).unwrap_or(&empty);
            if lm.is_empty() && rm.is_empty() {
                cmp_leaf(l, r, path, out);
                return;
            }
            for (k, lv) in lm {
                path.push(PathElement::Field(k.clone()));
                cmp(Some(lv), rm.get(k), &child_path(spath, k), schema, path, out);
                path.pop();
            }
            for (k, rv) in rm {
                if lm.contains_key(k) {
                    continue;
                }
                path.push(PathElement::Field(k.clone()));
                cmp(None, Some(rv), &child_path(spath, k), schema, path, out);
                path.pop();
            }
            if !path.is_empty() {
                if l.is_none() {
                    out.added.insert(path);
                } else if r.is_none() {
                    out.removed.insert(path);
                }
            }
        }
        Shape::List => {
            let empty: Vec<Value> = Vec::new();
            let la = l.and_then(Value::as_array).unwrap_or(&empty);
            let ra = r.and_then(Value::as_array).unwrap_or(&empty);
            let li = index_items(la, t);
            let ri = index_items(ra, t);
            let mut seen: Vec<&PathElement> = Vec::new();
            for (pe, _) in li.iter().chain(ri.iter()) {
                if seen.contains(&pe) {
                    continue;
                }
                seen.push(pe);
                let lv: Vec<&Value> = li.iter().filter(|(p, _)| p == pe).map(|(_, v)| *v).collect();
                let rv: Vec<&Value> = ri.iter().filter(|(p, _)| p == pe).map(|(_, v)| *v).collect();
                path.push(pe.clone());
                if lv.len() > 1 || rv.len() > 1 {
                    let same = lv.len() == rv.len() && lv.iter().zip(&rv).all(|(a, b)| json_eq(a, b));
                    if !same {
                        out.modified.insert(path);
                    }
                } else {
                    cmp(lv.first().copied(), rv.first().copied(), spath, schema, path, out);
                }
                path.pop();
            }
            if !path.is_empty() {
                if l.is_none() {
                    out.added.insert(path);
                } else if r.is_none() {
                    out.removed.insert(path);
                }
            }
        }
    }
}

/// [`cmp`] of a value with nothing on the left (below the root): everything in `r` is added,
/// written straight into `node`, the added set's node at `path`. Items of a list that share a
/// key are recorded as modified, as [`cmp`] does.
fn cmp_added(
    r: &Value,
    spath: &str,
    schema: &PatchSchema,
    path: &mut Vec<PathElement>,
    node: &mut FieldSet,
    modified: &mut FieldSet,
) {
    let t = ssa_type(schema, spath);
    match (shape(r, t), r) {
        (Shape::Map, Value::Object(rm)) => {
            for (k, rv) in rm {
                let pe = PathElement::Field(k.clone());
                path.push(pe.clone());
                cmp_added(rv, &child_path(spath, k), schema, path, node.child_mut(pe), modified);
                path.pop();
            }
        }
        (Shape::List, Value::Array(ra)) => {
            let ri = index_items(ra, t);
            for (i, (pe, v)) in ri.iter().enumerate() {
                if ri[..i].iter().any(|(p, _)| p == pe) {
                    continue;
                }
                path.push(pe.clone());
                if ri[i + 1..].iter().any(|(p, _)| p == pe) {
                    modified.insert(path);
                } else {
                    cmp_added(v, spath, schema, path, node.child_mut(pe.clone()), modified);
                }
                path.pop();
            }
        }
        _ => {}
    }
    node.member = true;
}

/// Upstream `TypedValue.Merge`: the applied configuration merged into the live object.
pub(crate) fn merge(l: &Value, r: &Value, spath: &str, schema: &PatchSchema) -> Value {
    let t = ssa_type(schema, spath);
    match (l, r) {
        (Value::Object(lm), Value::Object(rm)) if *t != SsaType::Atomic => {
            let mut out = lm.clone();
            for (k, rv) in rm {
                let cp = child_path(spath, k);
                let v = match lm.get(k) {
                    Some(lv) => merge(lv, rv, &cp, schema),
                    None => rv.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        (Value::Array(la), Value::Array(ra)) if is_granular_list(t) => {
            let li = index_items(la, t);
            let ri = index_items(ra, t);
            let in_r = |pe: &PathElement| ri.iter().position(|(p, _)| p == pe);
            let in_l = |pe: &PathElement| li.iter().position(|(p, _)| p == pe);
            let mut out = Vec::with_capacity(la.len() + ra.len());
            let mut l_done = vec![false; li.len()];
            let (mut a, mut b) = (0, 0);
            while a < li.len() || b < ri.len() {
                if a < li.len() && l_done[a] {
                    a += 1;
                    continue;
                }
                if a < li.len() && b < ri.len() {
                    if li[a].0 == ri[b].0 {
                        out.push(merge(li[a].1, ri[b].1, spath, schema));
                        l_done[a] = true;
                        a += 1;
                        b += 1;
                        continue;
                    }
                    if in_r(&li[a].0).is_none() {
                        out.push(li[a].1.clone());
                        l_done[a] = true;
                        a += 1;
                        continue;
                    }
                }
                if b < ri.len() {
                    match in_l(&ri[b].0) {
                        Some(j) if !l_done[j] => {
                            out.push(merge(li[j].1, ri[b].1, spath, schema));
                            l_done[j] = true;
                        }
                        _ => out.push(ri[b].1.clone()),
                    }
                    b += 1;
                    continue;
                }
                if a < li.len() {
                    out.push(li[a].1.clone());
                    l_done[a] = true;
                    a += 1;
                }
            }
            Value::Array(out)
        }
        _ => r.clone(),
    }
}

/// Remove the paths of `set` from `v`. As upstream's `RemoveItems`, a map or list whose
/// every entry is removed becomes null, which the typed object then omits: here the field is
/// dropped. Its parent keeps existing (upstream keeps the null entry in it). Returns whether
/// `v` had entries and all of them were removed.
fn remove_paths(v: &mut Value, spath: &str, set: &FieldSet, schema: &PatchSchema) -> bool {
    let t = ssa_type(schema, spath);
    match v {
        Value::Object(m) if *t != SsaType::Atomic => {
            if m.is_empty() {
                return false;
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            let total = keys.len();
            let mut removed = 0;
            for k in keys {
                let Some(c) = set.child(&PathElement::Field(k.clone())) else {
                    continue;
                };
                if c.member {
                    m.shift_remove(&k);
                    removed += 1;
                } else if !c.children.is_empty() {
                    let cp = child_path(spath, &k);
                    if let Some(cv) = m.get_mut(&k) {
                        if remove_paths(cv, &cp, c, schema) {
                            m.shift_remove(&k);
                        }
                    }
                }
            }
            removed == total
        }
        Value::Array(items) if is_granular_list(t) => {
            if items.is_empty() {
                return false;
            }
            let pes: Vec<PathElement> = index_items(items, t).into_iter().map(|(pe, _)| pe).collect();
            let old = std::mem::take(items);
            let total = old.len();
            let mut removed = 0;
            for (item, pe) in old.into_iter().zip(pes) {
                match set.child(&pe) {
                    Some(c) if c.member => removed += 1,
                    Some(c) if !c.children.is_empty() => {
                        let mut item = item;
                        // Key fields of an item that stays are never removed.
                        let c = strip_key_fields(c, t);
                        remove_paths(&mut item, spath, &c, schema);
                        items.push(item);
                    }
                    _ => items.push(item),
                }
            }
            removed == total
        }
        _ => false,
    }
}

fn strip_key_fields(set: &FieldSet, t: &SsaType) -> FieldSet {
    let mut out = set.clone();
    if let SsaType::ListMap { keys, .. } = t {
        for k in keys {
            out.children.remove(&PathElement::Field(k.clone()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Field manager.

/// Paths upstream strips from every manager's set (`stripMetaManager`).
/// [`build_strip_set`], built once.
fn strip_set() -> &'static FieldSet {
    static SET: std::sync::OnceLock<FieldSet> = std::sync::OnceLock::new();
    SET.get_or_init(build_strip_set)
}

fn build_strip_set() -> FieldSet {
    let mut s = FieldSet::new();
    let f = |n: &str| PathElement::Field(n.to_string());
    s.insert(&[f("apiVersion")]);
    s.insert(&[f("kind")]);
    s.insert(&[f("metadata")]);
    for m in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        s.insert(&[f("metadata"), f(m)]);
    }
    s
}

/// Fields a write does not own because the strategy resets them (`GetResetFields`).
fn reset_set(schema: &PatchSchema, subresource: &str) -> FieldSet {
    let mut s = FieldSet::new();
    let f = |n: &str| PathElement::Field(n.to_string());
    match subresource {
        "" if schema.has_status_subresource() => s.insert(&[f("status")]),
        "status" => s.insert(&[f("spec")]),
        _ => {}
    }
    // managedFields is never tracked, whatever it contains.
    s.insert(&[f("metadata"), f("managedFields")]);
    s
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    v
}

fn set_managed_fields(v: &mut Value, entries: &[ManagedFieldsEntry]) {
    let encoded = encode_managed_fields(entries);
    let Value::Object(obj) = v else { return };
    let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        if encoded.as_array().is_some_and(Vec::is_empty) {
            meta.shift_remove("managedFields");
        } else {
            meta.insert("managedFields".into(), encoded);
        }
    }
}

/// The string at a JSON pointer without escapes (`/a/b`), or "". Unlike `Value::pointer`, it
/// allocates nothing: this runs several times on every write.
fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    ptr.split('/').skip(1).try_fold(v, |cur, k| cur.get(k)).and_then(Value::as_str).unwrap_or("")
}

/// `metadata.managedFields`, if present.
fn managed_fields_of(v: &Value) -> Option<&Value> {
    v.get("metadata")?.get("managedFields")
}

/// The object a freshly allocated typed object of the kind would be (baseline of creates).
fn zero_object(schema: &PatchSchema, api_version: &str, kind: &str) -> Value {
    let mut obj = schema.zero_object().clone();
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), Value::String(api_version.into()));
        m.insert("kind".into(), Value::String(kind.into()));
    }
    obj
}

/// A field ownership conflict.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The other manager as upstream prints it (`"kubectl-client-side-apply" using apps/v1 at ...`).
    pub manager: String,
    /// The conflicting field, upstream path syntax (`.spec.replicas`).
    pub field: String,
}

impl Conflict {
    /// The `details.causes[].message` upstream uses (`conflict with "x" using v1`).
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager)
    }
}

fn conflict_message(conflicts: &[Conflict]) -> String {
    if conflicts.len() == 1 {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", conflicts[0].manager, conflicts[0].field);
    }
    let mut managers: Vec<&String> = conflicts.iter().map(|c| &c.manager).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| &c.manager == m) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// Options of [`apply_with`].
#[derive(Clone, Debug)]
pub struct ApplyOptions<'a> {
    /// Field manager (`fieldManager` query parameter; kubectl uses `kubectl`).
    pub manager: &'a str,
    /// `force=true`: take ownership of conflicting fields.
    pub force: bool,
    /// RFC 3339 timestamp recorded in the manager's entry.
    pub now: &'a str,
    /// Subresource applied to (`status`), if any.
    pub subresource: Option<&'a str>,
    /// Patch schema of the kind; `None` looks it up from the applied apiVersion/kind.
    pub schema: Option<&'a PatchSchema>,
}

/// Server-side apply of `applied` (an `application/apply-patch+yaml` body, decoded) onto
/// `live` (`None` when the object does not exist yet). Returns the new object with
/// `metadata.managedFields` updated; an unchanged re-apply returns `live` as it was.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    apply_with(live, applied, &ApplyOptions { manager, force, now, subresource: None, schema: None })
}

/// [`apply`] with every option.
pub fn apply_with(live: Option<&Value>, applied: &Value, opts: &ApplyOptions<'_>) -> Result<Value, ApplyError> {
    let Value::Object(applied_map) = applied else {
        return Err(ApplyError::BadRequest("error decoding YAML: the apply configuration must be an object".into()));
    };
    let api_version = str_at(applied, "/apiVersion").to_string();
    let kind = str_at(applied, "/kind").to_string();
    if kind.is_empty() {
        return Err(ApplyError::BadRequest(format!(
            "Object 'Kind' is missing in '{}'",
            serde_json::to_string(applied).unwrap_or_default()
        )));
    }
    if api_version.is_empty() {
        return Err(ApplyError::BadRequest(format!(
            "Object 'apiVersion' is missing in '{}'",
            serde_json::to_string(applied).unwrap_or_default()
        )));
    }
    if managed_fields_of(applied).is_some_and(|v| !v.is_null()) {
        return Err(ApplyError::BadRequest("metadata.managedFields must be nil".into()));
    }
    if let Some(live) = live {
        let live_kind = str_at(live, "/kind");
        if !live_kind.is_empty() && live_kind != kind {
            return Err(ApplyError::BadRequest(format!(
                "the kind in the data ({kind}) does not match the expected kind ({live_kind})"
            )));
        }
    }
    let owned_schema;
    let schema = match opts.schema {
        Some(s) => s,
        None => {
            owned_schema = schema_for(&api_version, &kind);
            &owned_schema
        }
    };
    let subresource = opts.subresource.unwrap_or("");
    let gvk = if api_version.contains('/') {
        let (g, v) = api_version.split_once('/').unwrap_or_default();
        format!("{g}/{v}, Kind={kind}")
    } else {
        format!("/{api_version}, Kind={kind}")
    };

    let mut managers = live.map(decode_managed_fields).transpose().ok().flatten().unwrap_or_default();
    let live_obj = live.map(without_managed_fields).unwrap_or_else(|| Value::Object(Map::new()));
    let config = Value::Object(applied_map.clone());

    let ignored = reset_set(schema, subresource);
    let strip = strip_set();
    let applied_set = to_field_set(&config, schema, true)
        .map_err(|e| ApplyError::TypedPatch(format!("failed to create typed patch object ({gvk}): {e}")))?
        .recursive_difference(&ignored)
        .difference(strip);

    let mut merged = merge(&live_obj, &config, "", schema);

    let me = ManagedFieldsEntry {
        manager: opts.manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.clone(),
        time: Some(opts.now.to_string()),
        subresource: subresource.to_string(),
        fields: applied_set,
    };
    let previous = managers.iter().position(|e| e.same_identity(&me));
    let last_set = previous.map(|i| managers.remove(i).fields);
    managers.push(me);
    let me_idx = managers.len() - 1;

    // Prune what this manager applied last time and no applier owns any more.
    if let Some(last) = &last_set {
        if !last.is_empty() {
            let mut appliers = FieldSet::new();
            for e in managers.iter().filter(|e| e.operation == "Apply") {
                appliers = appliers.union(&e.fields);
            }
            let merged_set = to_field_set(&merged, schema, false).unwrap_or_default();
            let mut to_remove = merged_set.intersection(last).difference(&appliers);
            to_remove.prune_empty();
            if !to_remove.is_empty() {
                remove_paths(&mut merged, "", &to_remove, schema);
            }
        }
    }

    let cmp = compare(Some(&live_obj), Some(&merged), schema);
    let changed = cmp.modified.union(&cmp.added).recursive_difference(&ignored);
    let removed = cmp.removed.recursive_difference(&ignored);

    let mut conflicts: Vec<(usize, FieldSet)> = Vec::new();
    for (i, e) in managers.iter().enumerate() {
        if i == me_idx {
            continue;
        }
        let c = e.fields.intersection(&changed);
        if !c.is_empty() {
            conflicts.push((i, c));
        }
    }
    if !conflicts.is_empty() && !opts.force {
        // Upstream `lastAppliedManager`: kubectl's server-side apply does not conflict on
        // fields whose live value is still the one the last client-side apply set.
        let allowed = match live {
            Some(l) if opts.manager == "kubectl" => allowed_by_last_applied(l, &api_version, schema),
            _ => None,
        };
        let remaining: Vec<(usize, FieldSet)> = conflicts
            .iter()
            .map(|(i, c)| {
                let rest = match &allowed {
                    Some(a) => c.difference(a),
                    None => c.clone(),
                };
                (*i, rest)
            })
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !remaining.is_empty() {
            let list = conflict_list(&managers, &remaining);
            return Err(ApplyError::Conflict { message: conflict_message(&list), conflicts: list });
        }
    }
    for (i, c) in &conflicts {
        managers[*i].fields = managers[*i].fields.difference(c);
    }
    for (i, e) in managers.iter_mut().enumerate() {
        if i != me_idx {
            e.fields = e.fields.difference(&removed);
        }
    }
    managers.retain(|e| !e.fields.is_empty());
    cap_update_managers(&mut managers);

    // Keep the client-side apply annotation in sync for kubectl's server-side apply.
    if opts.manager == "kubectl" && live.is_some_and(|l| l.pointer(&annotation_ptr()).is_some()) {
        let mut last_applied = config.clone();
        if let Some(ann) = last_applied.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            ann.shift_remove(LAST_APPLIED_ANNOTATION);
            if ann.is_empty() {
                if let Some(meta) = last_applied.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                    meta.shift_remove("annotations");
                }
            }
        }
        let text = serde_json::to_string(&last_applied).unwrap_or_default();
        if let Some(ann) = merged.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            ann.insert(LAST_APPLIED_ANNOTATION.into(), Value::String(text));
        }
    }

    // No-op apply: keep the live object as it was (upstream ignores timestamp-only changes).
    if let Some(live) = live {
        let old_entries = decode_managed_fields(live).unwrap_or_default();
        if json_eq(&without_empty(&merged), &without_empty(&live_obj)) && same_sets(&old_entries, &managers) {
            return Ok(live.clone());
        }
    }
    set_managed_fields(&mut merged, &managers);
    Ok(merged)
}

/// Upstream keeps at most this many `Update` entries; older ones are merged into
/// `ancient-changes` (one per apiVersion).
pub const MAX_UPDATE_MANAGERS: usize = 10;

fn cap_update_managers(managers: &mut Vec<ManagedFieldsEntry>) {
    let count = managers.iter().filter(|e| e.operation != "Apply").count();
    if count <= MAX_UPDATE_MANAGERS {
        return;
    }
    let mut updaters: Vec<usize> = (0..managers.len()).filter(|&i| managers[i].operation != "Apply").collect();
    updaters.sort_by(|&a, &b| {
        (managers[a].time.as_deref().unwrap_or(""), &managers[a].manager)
            .cmp(&(managers[b].time.as_deref().unwrap_or(""), &managers[b].manager))
    });
    let mut length = updaters.len();
    let mut first_of_version: Vec<(String, usize)> = Vec::new();
    let mut dropped = vec![false; managers.len()];
    for &i in &updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = managers[i].api_version.clone();
        match first_of_version.iter().find(|(v, _)| *v == version) {
            Some(&(_, bucket)) => {
                let fields = managers[i].fields.clone();
                let time = managers[i].time.clone();
                let b = &mut managers[bucket];
                b.manager = "ancient-changes".into();
                b.subresource = String::new();
                b.fields = b.fields.union(&fields);
                b.time = time;
                dropped[i] = true;
                length -= 1;
            }
            None => first_of_version.push((version, i)),
        }
    }
    let mut idx = 0;
    managers.retain(|_| {
        let keep = !dropped[idx];
        idx += 1;
        keep
    });
    // A bucket made now may meet one made by an earlier write: merge them.
    let mut i = 0;
    while i < managers.len() {
        if let Some(j) = (i + 1..managers.len()).find(|&j| managers[j].same_identity(&managers[i])) {
            let other = managers.remove(j);
            let e = &mut managers[i];
            e.fields = e.fields.union(&other.fields);
            if other.time > e.time {
                e.time = other.time;
            }
            continue;
        }
        i += 1;
    }
}

/// A copy of `v` without fields holding empty lists or maps (bottom-up): what Go's typed
/// objects drop (`omitempty`), so they count as absent when telling a no-op apply.
pub(crate) fn without_empty(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, c)| (k.clone(), without_empty(c)))
                .filter(|(_, c)| !c.as_array().is_some_and(Vec::is_empty) && !c.as_object().is_some_and(Map::is_empty))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_empty).collect()),
        other => other.clone(),
    }
}

fn annotation_ptr() -> String {
    format!("/metadata/annotations/{}", LAST_APPLIED_ANNOTATION.replace('~', "~0").replace('/', "~1"))
}

fn conflict_list(managers: &[ManagedFieldsEntry], conflicts: &[(usize, FieldSet)]) -> Vec<Conflict> {
    let mut out: Vec<Conflict> = Vec::new();
    let mut sorted: Vec<&(usize, FieldSet)> = conflicts.iter().collect();
    sorted.sort_by_key(|(i, _)| managers[*i].display());
    for (i, set) in sorted {
        let manager = managers[*i].display();
        for p in set.paths() {
            out.push(Conflict { manager: manager.clone(), field: p.to_string() });
        }
    }
    out
}

/// The fields of the client-side apply annotation whose values the live object still has.
fn allowed_by_last_applied(live: &Value, api_version: &str, schema: &PatchSchema) -> Option<FieldSet> {
    let text = live.pointer(&annotation_ptr()).and_then(Value::as_str)?;
    if text.is_empty() {
        return None;
    }
    let last: Value = serde_json::from_str(text).ok()?;
    if str_at(&last, "/apiVersion") != api_version {
        return None;
    }
    let last_set = to_field_set(&last, schema, false).ok()?;
    let live_obj = without_managed_fields(live);
    let cmp = compare(Some(&last), Some(&live_obj), schema);
    Some(last_set.difference(&cmp.modified).difference(&cmp.added).difference(&cmp.removed))
}

fn same_sets(a: &[ManagedFieldsEntry], b: &[ManagedFieldsEntry]) -> bool {
    let a: Vec<&ManagedFieldsEntry> = a.iter().filter(|e| !e.fields.is_empty()).collect();
    let b: Vec<&ManagedFieldsEntry> = b.iter().filter(|e| !e.fields.is_empty()).collect();
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| x.same_identity(y) && x.api_version == y.api_version && x.fields == y.fields))
}

/// Record field ownership for a non-apply write (create, update, patch) by `manager`.
///
/// `old` is the stored object (`None` for a create); `new` is the object about to be stored
/// (after defaulting) and gets its `metadata.managedFields` rewritten. `operation` is the
/// upstream operation name (`Update`), `subresource` e.g. `Some("status")`, `now` an RFC 3339
/// timestamp. If `new` carries managedFields different from `old`'s (a client edited them),
/// those are taken as the starting point, as upstream does.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    now: &str,
) {
    let api_version = str_at(new, "/apiVersion").to_string();
    let kind = str_at(new, "/kind").to_string();
    let schema = schema_for(&api_version, &kind);
    track_update_with(old, new, manager, operation, subresource, now, &schema);
}

/// [`track_update`] with an explicit schema.
pub fn track_update_with(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    now: &str,
    schema: &PatchSchema,
) {
    if !new.is_object() {
        return;
    }
    let api_version = str_at(new, "/apiVersion").to_string();
    let kind = str_at(new, "/kind").to_string();
    let subresource = subresource.unwrap_or("");
    // `managedFields: [{}]` is the documented way to clear every entry.
    let reset = subresource.is_empty()
        && managed_fields_of(new)
            .and_then(Value::as_array)
            .is_some_and(|l| l.len() == 1 && l[0].as_object().is_some_and(Map::is_empty));
    let from_new =
        if subresource.is_empty() { decode_managed_fields(new).ok().filter(|m| !m.is_empty() && !reset) } else { None };
    let mut managers = if reset {
        Vec::new()
    } else {
        match from_new {
            Some(m) => m,
            None => old.map(|o| decode_managed_fields(o).unwrap_or_default()).unwrap_or_default(),
        }
    };

    let old_obj = match old {
        Some(o) => without_managed_fields(o),
        None => zero_object(schema, &api_version, &kind),
    };
    // `new` without its managedFields (taken out in place; set_managed_fields puts the result
    // back at the end of metadata, where a copy without them would get it too).
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    let ignored = reset_set(schema, subresource);
    let cmp = compare(Some(&old_obj), Some(new), schema);
    let mut changed = cmp.modified;
    changed.union_with(cmp.added);
    changed.recursive_difference_in(&ignored);
    if !managers.is_empty() {
        let mut removed = cmp.removed;
        removed.recursive_difference_in(&ignored);
        for e in managers.iter_mut() {
            e.fields.difference_in(&changed);
            e.fields.difference_in(&removed);
        }
    }
    let mut mine = changed;
    mine.difference_in(strip_set());
    let me = ManagedFieldsEntry {
        manager: manager.to_string(),
        operation: if operation.is_empty() { "Update".into() } else { operation.to_string() },
        api_version,
        time: Some(now.to_string()),
        subresource: subresource.to_string(),
        fields: mine,
    };
    if !me.fields.is_empty() {
        match managers.iter_mut().find(|e| e.same_identity(&me)) {
            Some(prev) => {
                prev.fields.union_with(me.fields);
                prev.time = me.time;
            }
            None => managers.push(me),
        }
    }
    managers.retain(|e| !e.fields.is_empty());
    cap_update_managers(&mut managers);
    set_managed_fields(new, &managers);
}

/// The field manager upstream derives from a User-Agent when `fieldManager` is not given:
/// the part before the first `/`, at most 128 characters.
pub fn default_manager(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    prefix.chars().take(128).collect()
}
