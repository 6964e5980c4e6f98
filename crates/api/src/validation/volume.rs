//! Pod volumes and volume mounts (upstream's `ValidateVolumes` and `ValidateVolumeMounts`, the
//! rules a client can trip over): names, exactly one source, the sources' required fields, item
//! paths and modes, and each mount's volume, path and subPath.

use super::*;

/// The volume source fields upstream knows (exactly one must be set).
pub const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

const MODE_RANGE: &str = "must be a number between 0 and 0777 (octal), both inclusive";

fn check_mode(v: &Value, key: &str, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = get_i64(v, &[key]) {
        if !(0..=0o777).contains(&m) {
            errs.push(FieldError::invalid(child(path, key), m, MODE_RANGE));
        }
    }
}

/// A relative path without `..` elements (items' paths, subPath).
pub(super) fn relative_path_errors(p: &str, path: &str) -> Vec<FieldError> {
    let mut errs = vec![];
    if p.starts_with('/') {
        errs.push(FieldError::invalid(path, p, "must be a relative path"));
    }
    if p.split('/').any(|e| e == "..") {
        errs.push(FieldError::invalid(path, p, "must not contain '..'"));
    }
    errs
}

fn check_items(v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (i, it) in get_arr(v, &["items"]).iter().enumerate() {
        let ip = idx(&child(path, "items"), i);
        if get_str(it, &["key"]).is_empty()
            && get(it, &["fieldRef"]).is_none()
            && get(it, &["resourceFieldRef"]).is_none()
        {
            errs.push(FieldError::required(child(&ip, "key"), ""));
        }
        let p = get_str(it, &["path"]);
        if p.is_empty() {
            errs.push(FieldError::required(child(&ip, "path"), ""));
        } else {
            errs.extend(relative_path_errors(p, &child(&ip, "path")));
            if p.starts_with("..") {
                errs.push(FieldError::invalid(child(&ip, "path"), p, "must not start with '..'"));
            }
        }
        check_mode(it, "mode", &ip, errs);
    }
}

/// `spec.volumes`: returns the errors and the names declared.
pub(super) fn validate_volumes(spec: &Value, path: &str) -> (Vec<FieldError>, BTreeSet<String>) {
    let mut errs = vec![];
    let mut names = BTreeSet::new();
    for (i, v) in get_arr(spec, &["volumes"]).iter().enumerate() {
        let vp = idx(&child(path, "volumes"), i);
        let name = get_str(v, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(child(&vp, "name"), ""));
        } else {
            for m in naming::is_dns1123_label(name) {
                errs.push(FieldError::invalid(child(&vp, "name"), name, m));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&vp, "name"), name));
            }
        }
        let set: Vec<&str> = VOLUME_SOURCES.iter().copied().filter(|s| get(v, &[*s]).is_some()).collect();
        match set.len() {
            0 => errs.push(FieldError::required(vp.clone(), "must specify a volume type")),
            1 => {}
            _ => {
                errs.push(FieldError::forbidden(child(&vp, set[1]), "may not specify more than 1 volume type"));
                continue;
            }
        }
        if let Some(h) = get(v, &["hostPath"]) {
            let hp = child(&vp, "hostPath");
            let p = get_str(h, &["path"]);
            if p.is_empty() {
                errs.push(FieldError::required(child(&hp, "path"), ""));
            } else if p.split('/').any(|e| e == "..") {
                errs.push(FieldError::invalid(child(&hp, "path"), p, "must not contain '..'"));
            }
            let t = get_str(h, &["type"]);
            const TYPES: &[&str] =
                &["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"];
            if !TYPES.contains(&t) {
                errs.push(FieldError::not_supported(child(&hp, "type"), t, &TYPES[1..]));
            }
        }
        if let Some(c) = get(v, &["configMap"]) {
            let cp = child(&vp, "configMap");
            if get_str(c, &["name"]).is_empty() {
                errs.push(FieldError::required(child(&cp, "name"), ""));
            }
            check_mode(c, "defaultMode", &cp, &mut errs);
            check_items(c, &cp, &mut errs);
        }
        if let Some(s) = get(v, &["secret"]) {
            let sp = child(&vp, "secret");
            if get_str(s, &["secretName"]).is_empty() {
                errs.push(FieldError::required(child(&sp, "secretName"), ""));
            }
            check_mode(s, "defaultMode", &sp, &mut errs);
            check_items(s, &sp, &mut errs);
        }
        if let Some(d) = get(v, &["downwardAPI"]) {
            let dp = child(&vp, "downwardAPI");
            check_mode(d, "defaultMode", &dp, &mut errs);
            check_items(d, &dp, &mut errs);
        }
        if let Some(p) = get(v, &["projected"]) {
            let pp = child(&vp, "projected");
            check_mode(p, "defaultMode", &pp, &mut errs);
            for (j, src) in get_arr(p, &["sources"]).iter().enumerate() {
                let sp = idx(&child(&pp, "sources"), j);
                for k in ["configMap", "secret", "downwardAPI"] {
                    if let Some(s) = get(src, &[k]) {
                        check_items(s, &child(&sp, k), &mut errs);
                    }
                }
            }
        }
        if let Some(e) = get(v, &["emptyDir"]) {
            let m = get_str(e, &["medium"]);
            if !matches!(m, "" | "Memory" | "HugePages") && !m.starts_with("HugePages-") {
                errs.push(FieldError::not_supported(child(&child(&vp, "emptyDir"), "medium"), m, &["", "Memory"]));
            }
        }
    }
    (errs, names)
}

/// A container's `volumeMounts`.
pub(super) fn validate_volume_mounts(c: &Value, path: &str, volumes: &BTreeSet<String>) -> Vec<FieldError> {
    let mut errs = vec![];
    let mut paths = BTreeSet::new();
    for (i, m) in get_arr(c, &["volumeMounts"]).iter().enumerate() {
        let mp = idx(&child(path, "volumeMounts"), i);
        let name = get_str(m, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(child(&mp, "name"), ""));
        } else if !volumes.contains(name) {
            errs.push(FieldError::not_found(child(&mp, "name"), name));
        }
        let at = get_str(m, &["mountPath"]);
        if at.is_empty() {
            errs.push(FieldError::required(child(&mp, "mountPath"), ""));
        } else if !paths.insert(at.to_string()) {
            errs.push(FieldError::invalid(child(&mp, "mountPath"), at, "must be unique"));
        }
        let sub = get_str(m, &["subPath"]);
        if !sub.is_empty() {
            errs.extend(relative_path_errors(sub, &child(&mp, "subPath")));
            if !get_str(m, &["subPathExpr"]).is_empty() {
                errs.push(FieldError::invalid(
                    child(&mp, "subPathExpr"),
                    get_str(m, &["subPathExpr"]),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
        }
        let prop = get_str(m, &["mountPropagation"]);
        if !matches!(prop, "" | "None" | "HostToContainer" | "Bidirectional") {
            errs.push(FieldError::not_supported(
                child(&mp, "mountPropagation"),
                prop,
                &["Bidirectional", "HostToContainer", "None"],
            ));
        }
    }
    errs
}
