//! File helpers shared by the API-data volume types: file modes, and a ConfigMap's or Secret's
//! keys as files (all keys, or `items` with their paths and modes; `optional` sources and keys).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::KeyToPath;

use super::atomic;

pub(super) fn mode_of(m: Option<i32>, default: Option<i32>) -> u32 {
    (m.or(default).unwrap_or(0o644) as u32) & 0o777
}

/// Files of a configMap or secret (keys or `items`).
fn key_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    missing_key: &dyn Fn(&str) -> String,
    optional: bool,
    out: &mut atomic::Payload,
) -> Result<(), String> {
    match items {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), atomic::File { content: v.clone(), mode: mode_of(None, default_mode) });
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            it.path.clone(),
                            atomic::File { content: v.clone(), mode: mode_of(it.mode, default_mode) },
                        );
                    }
                    None if optional => {}
                    None => return Err(missing_key(&it.key)),
                }
            }
        }
    }
    Ok(())
}

/// The files of a ConfigMap or Secret (`found`: its data, `None` when it does not exist) into
/// `out`; `what` names it as upstream's "not found" message does (`configmap "x"`).
pub(super) fn object_files(
    found: Option<BTreeMap<String, Vec<u8>>>,
    what: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
    mode: Option<i32>,
    missing_key: &dyn Fn(&str) -> String,
    out: &mut atomic::Payload,
) -> Result<(), String> {
    let optional = optional.unwrap_or(false);
    match found {
        None if optional => Ok(()),
        None => Err(format!("{what} not found")),
        Some(d) => key_files(&d, items, mode, missing_key, optional, out),
    }
}
