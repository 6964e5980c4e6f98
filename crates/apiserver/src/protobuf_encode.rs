//! Encoding of JSON API objects into Kubernetes protobuf (`application/vnd.kubernetes.protobuf`),
//! the inverse of [`crate::protobuf::decode`], driven by the same wire schema.
//!
//! [`encode`] gives a whole response body: the magic `k8s\0` and a `runtime.Unknown` envelope
//! (`typeMeta {apiVersion, kind}`, `raw` = the typed message, empty `contentEncoding` and
//! `contentType`). [`watch_frame`] gives one frame of a protobuf watch stream: a 4-byte big-endian
//! length, then a bare `metav1.WatchEvent {type, object: RawExtension{raw = encode(object)}}` (the
//! stream serializer writes the event without envelope; the embedded object has one). Fields are
//! written in tag order; a JSON field the schema does not know is not part of the protobuf type and
//! is left out, as a typed Go object would have no place for it. The special messages get their
//! wire forms back from their JSON forms: RFC 3339 strings -> `Time`/`MicroTime`, numbers or
//! strings -> `IntOrString`, strings -> `Quantity`, JSON values -> `RawExtension`/`FieldsV1` bytes,
//! Go duration strings -> `Duration`, base64 strings -> `bytes`.

use base64::Engine;
use serde_json::{Map, Value};

use crate::protobuf::{
    message_for, scalar_wire, schema, Label, Schema, WireKind, DURATION, FIELDS_V1, INT_OR_STRING, MAGIC, MAX_DEPTH,
    MICRO_TIME, QUANTITY, RAW_EXTENSION, TIME,
};

/// The message of a `metav1.WatchEvent`.
const WATCH_EVENT: &str = "apimachinery.pkg.apis.meta.v1.WatchEvent";

/// Encode the API object `v` (with `apiVersion` and `kind`) as a protobuf response body.
pub fn encode(v: &Value) -> Result<Vec<u8>, String> {
    let schema = schema()?;
    let obj = v.as_object().ok_or("protobuf: not an object")?;
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let msg = message_for(schema, api_version, kind)?;
    let raw = encode_message(schema, msg, obj, 0)?;
    let mut type_meta = Vec::new();
    put_str(&mut type_meta, 1, api_version);
    put_str(&mut type_meta, 2, kind);
    let mut out = MAGIC.to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    put_str(&mut out, 3, "");
    put_str(&mut out, 4, "");
    Ok(out)
}

/// One length-prefixed frame of a protobuf watch: the event `ty` of `object`.
pub fn watch_frame(ty: &str, object: &Value) -> Result<Vec<u8>, String> {
    let schema = schema()?;
    let embedded = encode(object)?;
    let mut ev = Map::new();
    ev.insert("type".into(), Value::String(ty.to_string()));
    let event = {
        let fields = schema.messages.get(WATCH_EVENT).ok_or("protobuf: no WatchEvent message")?;
        let mut out = Vec::new();
        for f in fields {
            match f.name.as_str() {
                "type" => put_str(&mut out, f.tag, ty),
                _ => {
                    let mut raw = Vec::new();
                    put_bytes(&mut raw, 1, &embedded);
                    put_bytes(&mut out, f.tag, &raw);
                }
            }
        }
        out
    };
    let len = u32::try_from(event.len()).map_err(|_| "protobuf: watch event too large")?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&event);
    Ok(frame)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, tag: u32, s: &str) {
    put_bytes(out, tag, s.as_bytes());
}

fn encode_message(schema: &Schema, msg: &str, obj: &Map<String, Value>, depth: usize) -> Result<Vec<u8>, String> {
    if depth > MAX_DEPTH {
        return Err("protobuf: nesting too deep".into());
    }
    let fields = schema.messages.get(msg).ok_or_else(|| format!("protobuf: no schema for {msg}"))?;
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&i| fields[i].tag);
    let mut out = Vec::new();
    for i in order {
        let f = &fields[i];
        if f.label == Label::Inline {
            // A Go embedded struct: its fields sit in this JSON object.
            let inner = encode_message(schema, &f.ty, obj, depth + 1)?;
            put_bytes(&mut out, f.tag, &inner);
            continue;
        }
        let Some(v) = obj.get(&f.name).filter(|v| !v.is_null()) else { continue };
        let at = |e: String| format!("{msg}.{}: {e}", f.name);
        match f.label {
            Label::Singular => put_value(schema, &mut out, f.tag, &f.ty, v, depth).map_err(at)?,
            Label::Repeated => {
                let items = v.as_array().ok_or_else(|| at("not an array".into()))?;
                for item in items {
                    put_value(schema, &mut out, f.tag, &f.ty, item, depth).map_err(at)?;
                }
            }
            Label::Map => {
                let m = v.as_object().ok_or_else(|| at("not an object".into()))?;
                for (k, val) in m {
                    let mut entry = Vec::new();
                    put_str(&mut entry, 1, k);
                    if !val.is_null() {
                        put_value(schema, &mut entry, 2, &f.ty, val, depth).map_err(at)?;
                    }
                    put_bytes(&mut out, f.tag, &entry);
                }
            }
            Label::Inline => unreachable!("handled above"),
        }
    }
    Ok(out)
}

fn int_of(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| format!("{n} is not an integer")),
        Value::Bool(b) => Ok(i64::from(*b)),
        other => Err(format!("{other} is not a number")),
    }
}

/// Write one occurrence of a field of type `ty` with tag `tag`.
fn put_value(schema: &Schema, out: &mut Vec<u8>, tag: u32, ty: &str, v: &Value, depth: usize) -> Result<(), String> {
    match ty {
        "bool" => {
            let b = v.as_bool().ok_or_else(|| format!("{v} is not a boolean"))?;
            put_key(out, tag, 0);
            put_varint(out, u64::from(b));
        }
        "int32" => {
            let n = int_of(v)?;
            let n = i32::try_from(n).map_err(|_| format!("{n} does not fit int32"))?;
            put_key(out, tag, 0);
            // Negative int32 values are sign-extended to ten bytes, as protobuf requires.
            put_varint(out, i64::from(n) as u64);
        }
        "int64" => {
            let n = int_of(v)?;
            put_key(out, tag, 0);
            put_varint(out, n as u64);
        }
        "string" => {
            let s = v.as_str().ok_or_else(|| format!("{v} is not a string"))?;
            put_str(out, tag, s);
        }
        "bytes" => {
            let s = v.as_str().ok_or_else(|| format!("{v} is not a base64 string"))?;
            let b = base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("base64: {e}"))?;
            put_bytes(out, tag, &b);
        }
        t if scalar_wire(t).is_some() => {
            return Err(match scalar_wire(t) {
                Some(WireKind::Fixed32 | WireKind::Fixed64) => format!("unsupported fixed-width type {t}"),
                _ => format!("unsupported scalar type {t}"),
            })
        }
        TIME | MICRO_TIME => {
            let s = v.as_str().ok_or_else(|| format!("{v} is not a timestamp"))?;
            let ts: jiff::Timestamp = s.parse().map_err(|e| format!("timestamp {s:?}: {e}"))?;
            let mut m = Vec::new();
            put_key(&mut m, 1, 0);
            put_varint(&mut m, ts.as_second() as u64);
            let nanos = if ty == TIME { 0 } else { ts.subsec_nanosecond() };
            if nanos != 0 {
                put_key(&mut m, 2, 0);
                put_varint(&mut m, i64::from(nanos) as u64);
            }
            put_bytes(out, tag, &m);
        }
        DURATION => {
            let s = v.as_str().ok_or_else(|| format!("{v} is not a duration"))?;
            let mut m = Vec::new();
            put_key(&mut m, 1, 0);
            put_varint(&mut m, parse_go_duration(s)? as u64);
            put_bytes(out, tag, &m);
        }
        QUANTITY => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return Err(format!("{other} is not a quantity")),
            };
            let mut m = Vec::new();
            put_str(&mut m, 1, &s);
            put_bytes(out, tag, &m);
        }
        INT_OR_STRING => {
            let mut m = Vec::new();
            match v {
                Value::String(s) => {
                    put_key(&mut m, 1, 0);
                    put_varint(&mut m, 1);
                    put_key(&mut m, 2, 0);
                    put_varint(&mut m, 0);
                    put_str(&mut m, 3, s);
                }
                n => {
                    let n = i32::try_from(int_of(n)?).map_err(|_| format!("{n} does not fit int32"))?;
                    put_key(&mut m, 1, 0);
                    put_varint(&mut m, 0);
                    put_key(&mut m, 2, 0);
                    put_varint(&mut m, i64::from(n) as u64);
                    put_str(&mut m, 3, "");
                }
            }
            put_bytes(out, tag, &m);
        }
        RAW_EXTENSION | FIELDS_V1 => {
            let raw = serde_json::to_vec(v).map_err(|e| e.to_string())?;
            let mut m = Vec::new();
            put_bytes(&mut m, 1, &raw);
            put_bytes(out, tag, &m);
        }
        msg => {
            let obj = v.as_object().ok_or_else(|| format!("{v} is not an object"))?;
            let inner = encode_message(schema, msg, obj, depth + 1)?;
            put_bytes(out, tag, &inner);
        }
    }
    Ok(())
}

/// Go's `time.ParseDuration` for the forms `time.Duration.String()` prints (`1h2m3.5s`, `1.5ms`).
fn parse_go_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
        let mut part = int.checked_mul(scale).ok_or_else(bad)?;
        let mut div = 1i128;
        for d in frac.bytes().take(18) {
            div *= 10;
            part += i128::from(d - b'0') * scale / div;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = next;
    }
    let total = if neg { -total } else { total };
    i64::try_from(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::decode;
    use serde_json::json;

    fn round_trip(v: Value) {
        let body = encode(&v).unwrap_or_else(|e| panic!("encode {v}: {e}"));
        let back = decode(&body).unwrap_or_else(|e| panic!("decode {v}: {e}"));
        assert_eq!(back, v);
    }

    #[test]
    fn objects_round_trip_through_the_decoder() {
        round_trip(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default", "resourceVersion": "12", "uid": "u-1",
                         "creationTimestamp": "2023-11-14T22:13:20Z", "labels": {"a": "b", "empty": ""}},
            "data": {"k": "v", "": "x"}}));
        round_trip(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"k": "dgD/"}, "type": "Opaque"}));
        round_trip(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"},
                               {"protocol": "TCP", "port": 81, "targetPort": 8081}],
                     "selector": {"app": "web"}, "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
                     "type": "ClusterIP", "allocateLoadBalancerNodePorts": false},
            "status": {}}));
        round_trip(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n"},
            "spec": {"holderIdentity": "n", "leaseDurationSeconds": 40,
                     "renewTime": "2023-11-14T22:13:20.005678Z", "leaseTransitions": 0}}));
        round_trip(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1"],
                                     "resources": {"limits": {"cpu": "100m"}}}],
                     "volumes": [{"name": "cfg", "configMap": {"name": "my-config", "defaultMode": 420}}],
                     "terminationGracePeriodSeconds": 0,
                     "securityContext": {"runAsUser": -1, "supplementalGroups": [1000, 2000]}}}));
        round_trip(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": "configmaps \"x\" not found", "reason": "NotFound",
            "details": {"name": "x", "kind": "configmaps"}, "code": 404}));
    }

    #[test]
    fn lists_and_partial_metadata_round_trip() {
        round_trip(json!({"apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "7", "continue": "abc"},
            "items": [{"metadata": {"name": "a"}, "data": {"x": "1"}}, {"metadata": {"name": "b"}}]}));
        round_trip(json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "1"},
            "items": []}));
        round_trip(json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "s", "namespace": "default"}}));
        round_trip(json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {"resourceVersion": "3"}, "items": [{"metadata": {"name": "s"}}]}));
    }

    #[test]
    fn envelope_and_watch_frame_layout() {
        let body = encode(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})).unwrap();
        // magic, then field 1 (typeMeta) = {1: "v1", 2: "ConfigMap"}.
        assert_eq!(&body[..4], b"k8s\0");
        assert_eq!(&body[4..8], &[0x0a, 15, 0x0a, 2]);
        let frame =
            watch_frame("ADDED", &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})).unwrap();
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        // The event itself has no magic: field 1 is the type string.
        assert_eq!(&frame[4..11], &[0x0a, 5, b'A', b'D', b'D', b'E', b'D']);
        // Field 2 is a RawExtension whose raw (field 1) is a whole enveloped object.
        let ev = &frame[11..];
        assert_eq!(ev[0], 0x12);
        let raw_start = ev.windows(4).position(|w| w == b"k8s\0").expect("embedded magic");
        assert_eq!(decode(&ev[raw_start..]).unwrap()["kind"], "ConfigMap");
    }

    /// kubectl's own protobuf bodies (the decoder's fixtures): decoding, encoding and decoding
    /// again gives the same object.
    #[test]
    fn kubectl_fixtures_round_trip() {
        let dir = format!("{}/tests/fixtures/protobuf", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("fixtures dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "pb") {
                let v = decode(&std::fs::read(&p).expect("read")).unwrap_or_else(|e| panic!("{p:?}: {e}"));
                let again = decode(&encode(&v).unwrap_or_else(|e| panic!("{p:?}: {e}"))).expect("decode");
                assert_eq!(again, v, "{p:?}");
                n += 1;
            }
        }
        assert!(n >= 6);
    }

    #[test]
    fn durations_parse_like_go() {
        for (s, n) in [("0s", 0), ("1.5ms", 1_500_000), ("1m30s", 90_000_000_000), ("-1h2m3.5s", -3_723_500_000_000)] {
            assert_eq!(parse_go_duration(s), Ok(n), "{s}");
        }
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("99999999999h").is_err());
    }

    #[test]
    fn unencodable_values_are_errors() {
        assert!(encode(&json!({"apiVersion": "v1", "kind": "NoSuchKind"})).is_err());
        assert!(encode(&json!({"apiVersion": "v1", "kind": "ConfigMap", "data": "not a map"})).is_err());
        assert!(encode(&json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "!!!"}})).is_err());
        assert!(encode(&json!([1, 2])).is_err());
    }
}
