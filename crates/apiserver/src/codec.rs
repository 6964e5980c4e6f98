//! The storage codec: stored values decoded with their resourceVersion stamped (whole, spliced
//! into the stored bytes, or without managedFields) and objects encoded for the store.

use bytes::Bytes;
use serde_json::{json, Value};
use yard_store::KeyValue;

use crate::objects::meta_mut;
use crate::status::{ApiError, ApiResult};

/// Decode a stored value and stamp its resourceVersion.
pub fn from_kv(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("stored object {}: {e}", kv.key)))?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

/// The stored JSON of `kv` with `"resourceVersion"` first in its top-level metadata: what
/// `from_kv` would print, without building the object. (Falls back to `from_kv` for a value
/// without a metadata object, which the API server never stores.)
pub(crate) fn stored_with_revision(kv: &KeyValue) -> Vec<u8> {
    let b = &kv.value[..];
    let Some(at) = metadata_body_offset(b) else {
        return from_kv(kv).map(|v| serde_json::to_vec(&v).unwrap_or_default()).unwrap_or_else(|_| b.to_vec());
    };
    let rv = kv.mod_revision.to_string();
    let mut out = Vec::with_capacity(b.len() + rv.len() + 22);
    out.extend_from_slice(&b[..at]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.as_bytes());
    out.push(b'"');
    if b[at..].iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&b[at..]);
    out
}

/// The offset just inside the `{` of the top-level `"metadata"` member of a JSON object.
pub(crate) fn metadata_body_offset(b: &[u8]) -> Option<usize> {
    let (mut depth, mut i) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                // Only a key is followed by ':'.
                if depth == 1 && b.get(start..i) == Some(b"metadata".as_slice()) {
                    let mut j = i + 1;
                    let skip = |j: &mut usize| {
                        while b.get(*j).is_some_and(|c| c.is_ascii_whitespace()) {
                            *j += 1;
                        }
                    };
                    skip(&mut j);
                    if b.get(j) == Some(&b':') {
                        j += 1;
                        skip(&mut j);
                        return (b.get(j) == Some(&b'{')).then_some(j + 1);
                    }
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// A stored object without `metadata.managedFields`, skipped while parsing: what a Table row
/// needs (its printers never read them, and they are a large share of each object's bytes).
pub(crate) fn from_kv_lean(kv: &KeyValue) -> ApiResult<Value> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Obj {
        top: bool,
    }
    impl<'de> Visitor<'de> for Obj {
        type Value = serde_json::Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(k) = m.next_key::<String>()? {
                if self.top && k == "metadata" {
                    let meta = m.next_value_seed(Obj { top: false })?;
                    out.insert(k, Value::Object(meta));
                } else if !self.top && k == "managedFields" {
                    m.next_value::<IgnoredAny>()?;
                } else {
                    out.insert(k, m.next_value()?);
                }
            }
            Ok(out)
        }
    }
    impl<'de> DeserializeSeed<'de> for Obj {
        type Value = serde_json::Map<String, Value>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(&kv.value);
    let map = Obj { top: true }
        .deserialize(&mut de)
        .map_err(|e| ApiError::internal(format!("stored object {}: {e}", kv.key)))?;
    let mut v = Value::Object(map);
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

/// What a client gets back for an object just written as `encode(obj)` at `revision`: the same
/// as `from_kv` of the stored bytes, without parsing them again.
pub(crate) fn with_revision(obj: &Value, revision: i64) -> Value {
    into_revision(obj.clone(), revision)
}

/// [`with_revision`] of an object the caller is done with (no copy).
pub(crate) fn into_revision(mut v: Value, revision: i64) -> Value {
    let m = meta_mut(&mut v);
    m.remove("selfLink");
    m.insert("resourceVersion".into(), json!(revision.to_string()));
    v
}

pub(crate) fn encode(v: &Value) -> Bytes {
    let stamped = v
        .get("metadata")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key("resourceVersion") || m.contains_key("selfLink"));
    if !stamped {
        // Nothing to strip (a create's object): serialized as it is.
        return Bytes::from(serde_json::to_vec(v).expect("json"));
    }
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    Bytes::from(serde_json::to_vec(&v).expect("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_with_revision_prints_what_from_kv_prints() {
        let values = [
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"ports":[{"port":80}]}}"#,
            // A nested "metadata" (a pod template) and a string holding `"metadata":{` come first.
            r#"{"spec":{"template":{"metadata":{"labels":{"a":"b"}}},"note":"\"metadata\":{ [ } \\"},"metadata":{"name":"d"},"kind":"Deployment"}"#,
            r#"{"kind":"ConfigMap","metadata":{},"data":{"metadata":"{"}}"#,
            r#"{ "kind" : "ConfigMap" , "metadata" : { } }"#,
        ];
        for v in values {
            let kv = KeyValue { key: "/k".into(), value: Bytes::from(v), create_revision: 3, mod_revision: 42 };
            let spliced: Value =
                serde_json::from_slice(&stored_with_revision(&kv)).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(spliced, from_kv(&kv).unwrap(), "{v}");
            assert_eq!(spliced["metadata"]["resourceVersion"], "42");
        }
        // No metadata object: the slow path adds one, as from_kv does.
        let kv = KeyValue {
            key: "/k".into(),
            value: Bytes::from(r#"{"kind":"X","metadata":null}"#),
            create_revision: 1,
            mod_revision: 7,
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&stored_with_revision(&kv)).unwrap()["metadata"]["resourceVersion"],
            "7"
        );
    }
}
