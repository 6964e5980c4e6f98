//! Field sets as structured-merge-diff models them, with the `FieldsV1` wire encoding
//! (`f:<name>`, `k:<json keys>`, `v:<json value>`, `i:<index>`, `.` for the node itself).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// One step of a field path. Ordered as upstream: field names, then keys, values, indexes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A struct field or map key.
    Field(String),
    /// An item of an associative list, by its key fields (canonical JSON object, sorted keys).
    Key(String),
    /// An item of a set, by its value (canonical JSON).
    Value(String),
    /// An item of a list by position (lists without keys).
    Index(usize),
}

/// Canonical JSON: objects with sorted keys, no whitespace.
pub(crate) fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).unwrap_or_default()
}

impl PathElement {
    /// Encoding used as a key in `fieldsV1`.
    pub fn encode(&self) -> String {
        let (tag, body) = match self {
            PathElement::Field(f) => ("f:", f.as_str()),
            PathElement::Key(k) => ("k:", k.as_str()),
            PathElement::Value(v) => ("v:", v.as_str()),
            PathElement::Index(i) => return format!("i:{i}"),
        };
        let mut s = String::with_capacity(2 + body.len());
        s.push_str(tag);
        s.push_str(body);
        s
    }

    /// Parse a `fieldsV1` key (not `.`).
    pub fn decode(s: &str) -> Option<PathElement> {
        let (kind, rest) = s.split_at_checked(2)?;
        match kind {
            "f:" => Some(PathElement::Field(rest.to_string())),
            "k:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                v.is_object().then(|| PathElement::Key(canonical_json(&v)))
            }
            "v:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                Some(PathElement::Value(canonical_json(&v)))
            }
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }
}

impl fmt::Display for PathElement {
    /// Upstream `fieldpath.PathElement.String()`: `.name`, `[k=v,...]`, `[=v]`, `[i]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(n) => write!(f, ".{n}"),
            PathElement::Key(k) => {
                let v: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let parts: Vec<String> = match v {
                    Value::Object(m) => m.iter().map(|(k, v)| format!("{k}={}", canonical_json(v))).collect(),
                    _ => Vec::new(),
                };
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the object root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FieldPath(pub Vec<PathElement>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

/// A set of field paths as a tree. `member` says the node's own path is in the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    pub(crate) member: bool,
    pub(crate) children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        FieldSet::default()
    }

    /// Whether no path is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub(crate) fn child_mut(&mut self, pe: PathElement) -> &mut FieldSet {
        self.children.entry(pe).or_default()
    }

    pub(crate) fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// Insert one path.
    pub fn insert(&mut self, path: &[PathElement]) {
        self.node_mut(path).member = true;
    }

    /// The node at `path`, made (as a non-member) where missing.
    pub(crate) fn node_mut(&mut self, path: &[PathElement]) -> &mut FieldSet {
        let mut cur = self;
        for pe in path {
            // Elements are cloned only for nodes that do not exist yet.
            if !cur.children.contains_key(pe) {
                cur.children.insert(pe.clone(), FieldSet::default());
            }
            cur = cur.children.get_mut(pe).expect("just inserted");
        }
        cur
    }

    /// Whether the path is in the set.
    pub fn has(&self, path: &[PathElement]) -> bool {
        let mut cur = self;
        for pe in path {
            match cur.children.get(pe) {
                Some(c) => cur = c,
                None => return false,
            }
        }
        cur.member
    }

    /// Drop empty branches.
    pub(crate) fn prune_empty(&mut self) {
        self.children.retain(|_, c| {
            c.prune_empty();
            c.member || !c.children.is_empty()
        });
    }

    /// Set union.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other.clone());
        out
    }

    /// [`FieldSet::union`] in place, of a set the caller is done with: subtrees absent here are
    /// moved, not copied.
    pub(crate) fn union_with(&mut self, other: FieldSet) {
        self.member |= other.member;
        for (pe, c) in other.children {
            match self.children.entry(pe) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(c);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().union_with(c),
            }
        }
    }

    /// Set intersection.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Set difference: the paths of `self` not in `other` (exact paths, not subtrees).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.difference_in(other);
        out
    }

    /// [`FieldSet::difference`] in place (empty subtrees are dropped).
    pub(crate) fn difference_in(&mut self, other: &FieldSet) {
        self.member &= !other.member;
        self.children.retain(|pe, c| {
            if let Some(o) = other.children.get(pe) {
                c.difference_in(o);
            }
            !c.is_empty()
        });
    }

    /// [`FieldSet::recursive_difference`] in place.
    pub(crate) fn recursive_difference_in(&mut self, other: &FieldSet) {
        if other.member {
            *self = FieldSet::new();
            return;
        }
        self.children.retain(|pe, c| {
            if let Some(o) = other.children.get(pe) {
                c.recursive_difference_in(o);
            }
            !c.is_empty()
        });
    }

    /// Remove every path of `self` that is in `other` or below a path of `other`.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.recursive_difference_in(other);
        out
    }

    /// Every path in the set, in order.
    pub fn paths(&self) -> Vec<FieldPath> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    /// Upstream `Set.Iterate` order: the members directly below a node first, then the
    /// subtrees of its children.
    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<FieldPath>) {
        for (pe, c) in &self.children {
            if c.member {
                prefix.push(pe.clone());
                out.push(FieldPath(prefix.clone()));
                prefix.pop();
            }
        }
        for (pe, c) in &self.children {
            if !c.children.is_empty() {
                prefix.push(pe.clone());
                c.collect(prefix, out);
                prefix.pop();
            }
        }
    }

    /// Leaf paths only (members with no member below them), as upstream `Set.Leaves()`.
    pub fn leaves(&self) -> Vec<FieldPath> {
        self.paths()
            .into_iter()
            .filter(|p| {
                let mut cur = self;
                for pe in &p.0 {
                    cur = &cur.children[pe];
                }
                cur.children.values().all(FieldSet::is_empty)
            })
            .collect()
    }

    /// The `fieldsV1` JSON encoding.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, c) in &self.children {
            if c.is_empty() {
                continue;
            }
            m.insert(pe.encode(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Decode a `fieldsV1` JSON object.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        Self::decode_node(v, true)
    }

    fn decode_node(v: &Value, root: bool) -> Result<FieldSet, String> {
        let Value::Object(m) = v else {
            return Err(format!("expected an object in fieldsV1, got {v}"));
        };
        let mut out = FieldSet { member: !root && m.is_empty(), children: BTreeMap::new() };
        for (k, c) in m {
            if k == "." {
                out.member = true;
                continue;
            }
            let pe = PathElement::decode(k).ok_or_else(|| format!("invalid fieldsV1 key {k:?}"))?;
            out.children.insert(pe, Self::decode_node(c, false)?);
        }
        Ok(out)
    }
}
