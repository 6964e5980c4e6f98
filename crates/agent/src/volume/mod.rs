//! Pod volumes. [`setup`] prepares every volume of a pod in the pod's directory before its
//! containers start: `emptyDir` (a directory, or with `medium: Memory` a tmpfs of `sizeLimit`),
//! `hostPath` (with upstream's type checks), and the API-data volumes `configMap`, `secret`,
//! `downwardAPI` and `projected` (written with [`atomic`], so [`refresh`] can bring updates to
//! running pods). A type Yard cannot provide is an error, so the pod stays in ContainerCreating
//! with a `FailedMount` event instead of running without it. [`container_binds`] turns a
//! container's `volumeMounts` (`subPath`, `subPathExpr`, `readOnly`) into binds of its
//! filesystem view; [`teardown`] unmounts what [`setup`] mounted.

pub mod atomic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

use crate::sandbox::rootfs::Bind;

/// ConfigMap and Secret contents a pod's volumes refer to, fetched by the caller:
/// name -> data, or `None` when the object does not exist.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

/// The ConfigMaps and Secrets the pod's volumes name.
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secs) = (vec![], vec![]);
    for v in volumes(pod) {
        if let Some(c) = &v.config_map {
            cms.push(c.name.clone());
        }
        if let Some(s) = &v.secret {
            secs.extend(s.secret_name.clone());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                cms.push(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secs.push(s.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secs.sort();
    secs.dedup();
    (cms, secs)
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or(&[])
}

/// Whether any volume's content comes from the API (and so is refreshed).
pub fn has_api_data(pod: &Pod) -> bool {
    volumes(pod)
        .iter()
        .any(|v| v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some())
}

/// The directory of volume `name` of the pod whose directory is `pod_dir`.
pub fn dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// A volume that could not be set up: its name and upstream's reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub volume: String,
    pub reason: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MountVolume.SetUp failed for volume {:?} : {}", self.volume, self.reason)
    }
}

/// The types Yard does not provide, by their field name.
fn unsupported(v: &Volume) -> Option<&'static str> {
    let checks: [(&'static str, bool); 21] = [
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
        ("csi", v.csi.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("rbd", v.rbd.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("cinder", v.cinder.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("storageos", v.storageos.is_some()),
        ("quobyte", v.quobyte.is_some()),
    ];
    checks.iter().find(|(_, set)| *set).map(|(n, _)| *n)
}

fn mode_of(m: Option<i32>, default: Option<i32>) -> u32 {
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

fn downward_files(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    capacity: (&str, &str),
    out: &mut atomic::Payload,
) -> Result<(), String> {
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            let path = f.field_path.as_str();
            match path {
                "metadata.labels" | "metadata.annotations" => {
                    let m = if path == "metadata.labels" { &pod.metadata.labels } else { &pod.metadata.annotations };
                    // As upstream: one `key="value"` line per entry, sorted, values quoted like Go's %q.
                    m.iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
                _ => crate::env::field_ref(pod, path).ok_or_else(|| format!("unsupported fieldPath: {path}"))?,
            }
        } else if let Some(r) = &it.resource_field_ref {
            let cname = r.container_name.clone().unwrap_or_default();
            let all = pod.spec.as_ref().map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
            let c = all
                .and_then(|mut it| it.find(|c| c.name == cname))
                .ok_or_else(|| format!("container {cname:?} not found for resourceFieldRef"))?;
            if r.divisor.as_ref().is_some_and(|d| d.0 != "1" && d.0 != "0") {
                return Err(format!("resourceFieldRef divisor {:?} is not supported", r.divisor.as_ref().unwrap().0));
            }
            crate::env::resource_field(c, &r.resource, capacity)
        } else {
            return Err(format!("downwardAPI item {:?} has neither fieldRef nor resourceFieldRef", it.path));
        };
        out.insert(it.path.clone(), atomic::File { content: value.into_bytes(), mode: mode_of(it.mode, default_mode) });
    }
    Ok(())
}

fn cm_missing_key(k: &str) -> String {
    format!("configmap references non-existent config key: {k}")
}

fn secret_missing_key(k: &str) -> String {
    format!("references non-existent secret key: {k}")
}

/// The files of a ConfigMap or Secret (`found`: its data, `None` when it does not exist) into
/// `out`; `what` names it as upstream's "not found" message does (`configmap "x"`).
fn object_files(
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

fn config_map_files(
    objs: &Objects,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
    mode: Option<i32>,
    out: &mut atomic::Payload,
) -> Result<(), String> {
    let found = objs.config_maps.get(name).cloned().flatten();
    object_files(found, &format!("configmap {name:?}"), items, optional, mode, &cm_missing_key, out)
}

fn secret_files(
    objs: &Objects,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
    mode: Option<i32>,
    out: &mut atomic::Payload,
) -> Result<(), String> {
    let found = objs.secrets.get(name).cloned().flatten();
    object_files(found, &format!("secret {name:?}"), items, optional, mode, &secret_missing_key, out)
}

/// The files an API-data volume holds now (`None` for other types).
fn payload(pod: &Pod, v: &Volume, objs: &Objects, capacity: (&str, &str)) -> Option<Result<atomic::Payload, String>> {
    let mut out = atomic::Payload::new();
    let res = if let Some(c) = &v.config_map {
        config_map_files(objs, &c.name, c.items.as_ref(), c.optional, c.default_mode, &mut out)
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        secret_files(objs, &name, s.items.as_ref(), s.optional, s.default_mode, &mut out)
    } else if let Some(d) = &v.downward_api {
        downward_files(pod, d.items.as_deref().unwrap_or(&[]), d.default_mode, capacity, &mut out)
    } else if let Some(p) = &v.projected {
        let mut r = Ok(());
        for src in p.sources.iter().flatten() {
            r = if let Some(c) = &src.config_map {
                config_map_files(objs, &c.name, c.items.as_ref(), c.optional, p.default_mode, &mut out)
            } else if let Some(s) = &src.secret {
                secret_files(objs, &s.name, s.items.as_ref(), s.optional, p.default_mode, &mut out)
            } else if let Some(d) = &src.downward_api {
                downward_files(pod, d.items.as_deref().unwrap_or(&[]), p.default_mode, capacity, &mut out)
            } else if src.service_account_token.is_some() {
                Err("serviceAccountToken projection is not available: this cluster issues no service account tokens"
                    .into())
            } else if src.cluster_trust_bundle.is_some() {
                Err("clusterTrustBundle projection is not supported".into())
            } else if src.pod_certificate.is_some() {
                Err("podCertificate projection is not supported".into())
            } else {
                Ok(())
            };
            if r.is_err() {
                break;
            }
        }
        r
    } else {
        return None;
    };
    Some(res.map(|()| out))
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
}

/// Parse a size limit (`sizeLimit`) into bytes.
fn bytes(q: &str) -> Result<u64, String> {
    yard_api::quantity::Quantity::parse(q)
        .map(|v| v.value().max(0) as u64)
        .map_err(|e| format!("invalid sizeLimit {q:?}: {e}"))
}

fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

fn host_path(v: &Volume) -> Option<Result<PathBuf, String>> {
    use std::os::unix::fs::FileTypeExt;
    let h = v.host_path.as_ref()?;
    let p = PathBuf::from(&h.path);
    let md = std::fs::metadata(&p);
    let t = h.type_.as_deref().unwrap_or("");
    let fail = |what: &str| Err(format!("hostPath type check failed: {} is not {what}", h.path));
    Some(match t {
        "" | "DirectoryOrCreate" if md.is_err() => std::fs::create_dir_all(&p)
            .map(|()| {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
                p
            })
            .map_err(|e| format!("mkdir {}: {e}", h.path)),
        "" => Ok(p),
        "DirectoryOrCreate" | "Directory" => match md {
            Ok(m) if m.is_dir() => Ok(p),
            _ => fail("a directory"),
        },
        "FileOrCreate" if md.is_err() => std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map(|_| p)
            .map_err(|e| format!("create {}: {e}", h.path)),
        "FileOrCreate" | "File" => match md {
            Ok(m) if m.is_file() => Ok(p),
            _ => fail("a file"),
        },
        "Socket" => match md {
            Ok(m) if m.file_type().is_socket() => Ok(p),
            _ => fail("a socket file"),
        },
        "CharDevice" => match md {
            Ok(m) if m.file_type().is_char_device() => Ok(p),
            _ => fail("a character device"),
        },
        "BlockDevice" => match md {
            Ok(m) if m.file_type().is_block_device() => Ok(p),
            _ => fail("a block device"),
        },
        other => Err(format!("invalid HostPathType {other:?}")),
    })
}

/// Prepare every volume of `pod` under `pod_dir` (idempotent: an adopted pod's volumes are
/// refreshed, not recreated). The first volume that fails stops it.
pub fn setup(pod: &Pod, pod_dir: &Path, objs: &Objects, capacity: (&str, &str)) -> Result<(), Failed> {
    for v in volumes(pod) {
        let fail = |reason: String| Failed { volume: v.name.clone(), reason };
        if let Some(t) = unsupported(v) {
            return Err(fail(format!("volume type {t} is not supported by this node")));
        }
        let d = dir(pod_dir, &v.name);
        if let Some(h) = host_path(v) {
            h.map_err(fail)?;
            continue;
        }
        if let Some(e) = &v.empty_dir {
            std::fs::create_dir_all(&d).map_err(|e| fail(format!("mkdir: {e}")))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777));
            if e.medium.as_deref() == Some("Memory") {
                if !is_mounted(&d) {
                    let mut opts = "mode=777".to_string();
                    if let Some(l) = &e.size_limit {
                        opts.push_str(&format!(",size={}", bytes(&l.0).map_err(fail)?));
                    }
                    nix::mount::mount(
                        Some("tmpfs"),
                        &d,
                        Some("tmpfs"),
                        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                        Some(opts.as_str()),
                    )
                    .map_err(|e| fail(format!("mount tmpfs: {e}")))?;
                }
            } else if let Some(m) = e.medium.as_deref().filter(|m| !m.is_empty()) {
                return Err(fail(format!("emptyDir medium {m:?} is not supported")));
            } else if let Some(l) = &e.size_limit {
                // The kubelet evicts a pod whose disk emptyDir outgrows sizeLimit; this node
                // cannot watch disk usage, so it refuses rather than ignore the limit.
                return Err(fail(format!(
                    "sizeLimit {:?} on a disk emptyDir is not enforced by this node; use medium: Memory",
                    l.0
                )));
            }
            continue;
        }
        match payload(pod, v, objs, capacity) {
            Some(Ok(files)) => {
                atomic::write(&d, &files, fs_group(pod)).map_err(|e| fail(format!("write: {e}")))?;
            }
            Some(Err(reason)) => return Err(fail(reason)),
            None => {
                return Err(fail(
                    "volume has no source (no emptyDir, hostPath, configMap, secret, downwardAPI or projected)".into(),
                ))
            }
        }
    }
    Ok(())
}

/// Rewrite the API-data volumes of a running pod whose sources changed. Returns the names of
/// the volumes that changed; errors (a source deleted meanwhile) keep the old content.
pub fn refresh(pod: &Pod, pod_dir: &Path, objs: &Objects, capacity: (&str, &str)) -> Vec<String> {
    let mut changed = vec![];
    for v in volumes(pod) {
        if let Some(Ok(files)) = payload(pod, v, objs, capacity) {
            if atomic::write(&dir(pod_dir, &v.name), &files, fs_group(pod)).unwrap_or(false) {
                changed.push(v.name.clone());
            }
        }
    }
    changed
}

/// Unmount what [`setup`] mounted under `pod_dir` (the Memory emptyDirs), so that removing the
/// directory cannot reach into a mount.
pub fn teardown(pod_dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let base = pod_dir.join("volumes");
    let mut points: Vec<PathBuf> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).map(PathBuf::from).filter(|m| m.starts_with(&base)).collect();
    points.sort();
    points.reverse();
    for m in points {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("unmount {}: {e}", m.display());
        }
    }
}

/// The binds of container `c`'s `volumeMounts`, in order. `env` expands `subPathExpr`. Errors
/// are CreateContainerConfigError messages.
pub fn container_binds(
    pod: &Pod,
    c: &Container,
    pod_dir: &Path,
    env: &[(String, String)],
) -> Result<Vec<Bind>, String> {
    let mut out = vec![];
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes(pod)
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("cannot find volume {:?} to mount into container {:?}", m.name, c.name))?;
        if let Some(p) = m.mount_propagation.as_deref().filter(|p| *p != "None") {
            return Err(format!("mountPropagation {p:?} of volume {:?} is not supported by this node", m.name));
        }
        if m.recursive_read_only.as_deref().is_some_and(|r| r != "Disabled") {
            return Err(format!("recursiveReadOnly of volume {:?} is not supported by this node", m.name));
        }
        let (base, api_data) = match v.host_path.as_ref() {
            Some(h) => (PathBuf::from(&h.path), false),
            None => (dir(pod_dir, &v.name), v.empty_dir.is_none()),
        };
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => {
                let lookup = |k: &str| env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                Some(crate::env::expand(e, &lookup))
            }
            _ => None,
        };
        let host = match sub {
            None => base,
            Some(s) => {
                let rel = Path::new(&s);
                if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                    return Err(format!("subPath {s:?} must be a relative path without '..'"));
                }
                let p = base.join(rel);
                if std::fs::symlink_metadata(&p).is_err() && !api_data {
                    std::fs::create_dir_all(&p).map_err(|e| {
                        format!(
                            "failed to create subPath directory for volumeMount {:?} of container {:?}: {e}",
                            m.name, c.name
                        )
                    })?;
                }
                // A symlink in the volume must not lead out of it.
                let real =
                    std::fs::canonicalize(&p).map_err(|e| format!("subPath {s:?} of volume {:?}: {e}", m.name))?;
                let real_base = std::fs::canonicalize(&base).map_err(|e| format!("volume {:?}: {e}", m.name))?;
                if !real.starts_with(&real_base) {
                    return Err(format!(
                        "subpath {:?} not within volume path {:?}",
                        real.display().to_string(),
                        real_base.display().to_string()
                    ));
                }
                real
            }
        };
        out.push(Bind {
            host,
            inner: PathBuf::from(&m.mount_path),
            read_only: m.read_only.unwrap_or(false) || api_data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1", "labels": {"app": "a", "tier": "b\"c"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}], "volumes": v}
        }))
        .unwrap()
    }

    #[test]
    fn payloads_and_errors() {
        let dir = std::env::temp_dir().join(format!("yard-vol-{}", std::process::id()));
        let mut objs = Objects::default();
        objs.config_maps.insert("cfg".into(), Some([("greeting".to_string(), b"hi".to_vec())].into()));
        objs.config_maps.insert("gone".into(), None);
        let p = pod(serde_json::json!([
            {"name": "a", "configMap": {"name": "cfg", "items": [{"key": "greeting", "path": "x/y", "mode": 0o600}]}},
            {"name": "d", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                                    {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory"}}]}},
            {"name": "o", "configMap": {"name": "gone", "optional": true}},
            {"name": "e", "emptyDir": {}}
        ]));
        setup(&p, &dir, &objs, ("2", "1Gi")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("volumes/a/x/y")).unwrap(), "hi");
        assert_eq!(std::fs::read_to_string(dir.join("volumes/d/labels")).unwrap(), "app=\"a\"\ntier=\"b\\\"c\"");
        assert_eq!(std::fs::read_to_string(dir.join("volumes/d/mem")).unwrap(), "64Mi");
        assert!(dir.join("volumes/e").is_dir());
        let missing = pod(serde_json::json!([{"name": "m", "configMap": {"name": "gone"}}]));
        let e = setup(&missing, &dir, &objs, ("2", "1Gi")).unwrap_err();
        assert_eq!(e.to_string(), "MountVolume.SetUp failed for volume \"m\" : configmap \"gone\" not found");
        let key = pod(
            serde_json::json!([{"name": "k", "configMap": {"name": "cfg", "items": [{"key": "nope", "path": "n"}]}}]),
        );
        assert_eq!(
            setup(&key, &dir, &objs, ("2", "1Gi")).unwrap_err().reason,
            "configmap references non-existent config key: nope"
        );
        let pvc = pod(serde_json::json!([{"name": "c", "persistentVolumeClaim": {"claimName": "x"}}]));
        assert!(setup(&pvc, &dir, &objs, ("2", "1Gi")).unwrap_err().reason.contains("persistentVolumeClaim"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
