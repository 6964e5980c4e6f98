//! Object plumbing: decoding request bodies (JSON or YAML, with duplicate-field detection),
//! typed round trips through k8s-openapi (which drops unknown fields, as upstream's decoder
//! does), unknown-field reporting for `fieldValidation`, and metadata helpers.

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::registry::Resource;

/// Body size limit, as upstream's 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Decode a request body as JSON (strictly, recording duplicate fields) or YAML.
pub fn decode_body(body: &[u8], content_type: &str) -> Result<(Value, Vec<String>), String> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{' || *b == b'[');
    if ct.ends_with("yaml") && !looks_json {
        let v: Value = serde_yaml::from_slice(body).map_err(|e| format!("error converting YAML to JSON: {e}"))?;
        return Ok((v, Vec::new()));
    }
    let mut dups = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let v =
        StrictSeed { path: &mut String::new(), dups: &mut dups }.deserialize(&mut de).map_err(|e| json_error(&e))?;
    de.end().map_err(|e| json_error(&e))?;
    Ok((v, dups))
}

fn json_error(e: &serde_json::Error) -> String {
    format!("couldn't get version/kind; json parse error: {e}")
}

/// Decodes one JSON value, recording the paths of duplicate fields. `path` is the value's path,
/// extended and cut back in place as the decoder descends (a path string is made only for a
/// duplicate).
struct StrictSeed<'a> {
    path: &'a mut String,
    dups: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        use std::fmt::Write;
        let mut out = Vec::new();
        let base = self.path.len();
        loop {
            let _ = write!(self.path, "[{}]", out.len());
            let item = seq.next_element_seed(StrictSeed { path: &mut *self.path, dups: &mut *self.dups });
            self.path.truncate(base);
            match item? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let base = self.path.len();
        while let Some(k) = map.next_key::<String>()? {
            if base > 0 {
                self.path.push('.');
            }
            self.path.push_str(&k);
            let v = map.next_value_seed(StrictSeed { path: &mut *self.path, dups: &mut *self.dups });
            if v.is_ok() && out.contains_key(&k) {
                self.dups.push(self.path.clone());
            }
            self.path.truncate(base);
            out.insert(k, v?);
        }
        Ok(Value::Object(out))
    }
}

macro_rules! round_trip {
    ($v:expr, $($kind:literal => $t:ty),* $(,)?) => {
        |kind: &str, v: &Value| -> Result<Value, String> {
            match kind {
                $($kind => {
                    let o = <$t as serde::Deserialize>::deserialize(v).map_err(|e| e.to_string())?;
                    serde_json::to_value(o).map_err(|e| e.to_string())
                })*
                _ => Ok(v.clone()),
            }
        }
    };
}

/// Decode into the k8s-openapi type and encode again: unknown fields are dropped and types are
/// checked. The error text is serde's (field path and expected type).
pub fn normalize(r: &Resource, v: &Value) -> Result<Value, String> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc};
    let f = round_trip!(v,
        "Namespace" => core::Namespace,
        "Pod" => core::Pod,
        "Service" => core::Service,
        "Endpoints" => core::Endpoints,
        "Event" => core::Event,
        "Node" => core::Node,
        "ConfigMap" => core::ConfigMap,
        "Secret" => core::Secret,
        "ServiceAccount" => core::ServiceAccount,
        "Deployment" => apps::Deployment,
        "ReplicaSet" => apps::ReplicaSet,
        "EndpointSlice" => disc::EndpointSlice,
        "Lease" => coord::Lease,
    );
    f(r.kind, v)
}

/// Fields present (non-null) in `input` but absent from `normalized`: what the typed decoder dropped.
pub fn unknown_fields(input: &Value, normalized: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, normalized, &mut String::new(), &mut out);
    out
}

/// `path` is `input`'s path, extended and cut back in place while descending.
fn walk_unknown(input: &Value, norm: &Value, path: &mut String, out: &mut Vec<String>) {
    let base = path.len();
    match (input, norm) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() && !b.contains_key(k) {
                    continue;
                }
                if base > 0 {
                    path.push('.');
                }
                path.push_str(k);
                match b.get(k) {
                    Some(nv) => walk_unknown(v, nv, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(base);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            use std::fmt::Write;
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                let _ = write!(path, "[{i}]");
                walk_unknown(x, y, path, out);
                path.truncate(base);
            }
        }
        _ => {}
    }
}

/// `metadata` of an object (created if missing).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"].as_object_mut().expect("object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn labels_of(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

pub fn finalizers_of(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// RFC 3339 with second precision, as upstream's metav1.Time.
pub fn now_rfc3339() -> String {
    // Formatted once per second per thread: every write stamps one or two of these.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = jiff::Timestamp::now();
    LAST.with_borrow_mut(|(sec, text)| {
        if *sec != now.as_second() {
            *sec = now.as_second();
            *text = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        }
        text.clone()
    })
}

pub fn rfc3339_after(secs: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A new object's uid: a version 4 UUID from the thread's random generator (no system call
/// per object, unlike `Uuid::new_v4`).
pub fn new_uid() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

/// Random suffix for generateName, from upstream's alphabet (no vowels, no confusable digits).
pub fn random_suffix(n: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n).map(|_| ALPHA[rand::random_range(0..ALPHA.len())] as char).collect()
}

/// Whether anything but metadata and status differs (the "spec" that bumps generation).
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_distinct_version_4_uuids() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!((u.get_version_num(), u.get_variant()), (4, uuid::Variant::RFC4122));
    }

    #[test]
    fn storage_keys_are_the_namespace_prefix_and_the_name() {
        for (g, v, p) in [("", "v1", "services"), ("", "v1", "namespaces"), ("apps", "v1", "deployments")] {
            let r = crate::registry::find(g, v, p).unwrap();
            for ns in [Some("default"), None] {
                assert_eq!(r.key(ns, "x"), format!("{}x", r.ns_prefix(ns)));
            }
        }
        assert_eq!(
            crate::registry::find("", "v1", "services").unwrap().key(Some("d"), "s"),
            "/registry/core/services/d/s"
        );
    }

    #[test]
    fn duplicates_found_with_paths() {
        let (v, d) = decode_body(br#"{"a":1,"spec":{"replicas":1,"replicas":2},"a":3}"#, "application/json").unwrap();
        assert_eq!(v["a"], 3);
        assert_eq!(d, vec!["spec.replicas".to_string(), "a".to_string()]);
    }

    #[test]
    fn unknown_fields_listed() {
        let r = crate::registry::find("", "v1", "services").unwrap();
        let input = serde_json::json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"bogus":1,"ports":[{"port":80,"nope":true}]}});
        let n = normalize(r, &input).unwrap();
        assert_eq!(unknown_fields(&input, &n), vec!["spec.bogus".to_string(), "spec.ports[0].nope".to_string()]);
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(decode_body(b"{\"a\":", "application/json").is_err());
        assert!(decode_body(b"a: [", "application/yaml").is_err());
    }
}
