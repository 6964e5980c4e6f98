//! Pod volumes. [`setup`] prepares every volume of a pod in the pod's directory before its
//! containers start: `emptyDir` (a directory, or with `medium: Memory` a tmpfs of `sizeLimit`),
//! `hostPath` (with upstream's type checks), and the API-data volumes `configMap`, `secret`,
//! `downwardAPI` and `projected` (with `serviceAccountToken` sources from the tokens the caller
//! requested for the pod; written with [`atomic`], so [`refresh`] can bring updates to
//! running pods). A type Yard cannot provide is an error, so the pod stays in ContainerCreating
//! with a `FailedMount` event instead of running without it. [`container_binds`] turns a
//! container's `volumeMounts` (`subPath`, `subPathExpr`, `readOnly`) into binds of its
//! filesystem view; [`teardown`] unmounts what [`setup`] mounted.
//!
//! Each type is a [`VolumePlugin`] in its own file, listed once in [`PLUGINS`]; the functions
//! here find the plugin by the key set in the volume and call it.

pub mod atomic;
mod config_map;
mod downward_api;
mod empty_dir;
mod files;
mod host_path;
mod projected;
mod secret;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

use crate::sandbox::rootfs::Bind;

/// The volume types this node provides, by the key that names them in a pod's volume. Adding a
/// type is a file with its [`VolumePlugin`] and a line here.
pub static PLUGINS: &[&dyn VolumePlugin] = &[
    &empty_dir::EmptyDir,
    &host_path::HostPath,
    &config_map::ConfigMap,
    &secret::Secret,
    &downward_api::DownwardApi,
    &projected::Projected,
];

/// One volume type.
///
/// There is no teardown hook: [`teardown`] unmounts whatever is mounted under the pod's volume
/// directories (it also runs for a pod whose spec is gone, after an agent restart), and the
/// directories go with the pod's.
pub trait VolumePlugin: Sync {
    /// The key of the type in a pod's volume (`configMap`).
    fn name(&self) -> &'static str;

    /// Whether `v` is of this type (its key is set).
    fn is_of(&self, v: &Volume) -> bool;

    /// Add the ConfigMaps and Secrets `v` reads (the caller fetches them into [`Objects`]).
    fn references(&self, _v: &Volume, _config_maps: &mut Vec<String>, _secrets: &mut Vec<String>) {}

    /// Whether the content comes from the API, so that [`refresh`] brings updates to running
    /// pods (such volumes are also mounted read-only).
    fn refreshes(&self) -> bool {
        false
    }

    /// An API-data type's files as they should be now (`None`: not this type). The default
    /// [`setup`](VolumePlugin::setup) and [`refresh`](VolumePlugin::refresh) write them with
    /// [`atomic`].
    fn files(&self, _ctx: &Ctx, _v: &Volume) -> Option<Result<atomic::Payload, VolumeError>> {
        None
    }

    /// Prepare `v` before the containers start. Idempotent: an adopted pod's volumes are set up
    /// again. The error is upstream's reason, for the `FailedMount` event.
    fn setup(&self, ctx: &Ctx, v: &Volume) -> Result<(), VolumeError> {
        match self.files(ctx, v) {
            Some(files) => atomic::write(&ctx.dir(v), &files?, fs_group(ctx.pod))
                .map(|_| ())
                .map_err(|e| VolumeError(format!("write: {e}"))),
            None => Ok(()),
        }
    }

    /// Bring a running pod's `v` up to date; whether its content changed. Errors (a source
    /// deleted meanwhile) keep the old content.
    fn refresh(&self, ctx: &Ctx, v: &Volume) -> bool {
        match self.files(ctx, v) {
            Some(Ok(files)) => atomic::write(&ctx.dir(v), &files, fs_group(ctx.pod)).unwrap_or(false),
            _ => false,
        }
    }

    /// What a container's volumeMount of `v` binds: the volume's directory in the pod's
    /// (read-only for API data) unless the type says otherwise.
    fn mounted(&self, pod_dir: &Path, v: &Volume) -> Mounted {
        Mounted { host: dir(pod_dir, &v.name), read_only: self.refreshes() }
    }
}

/// What a plugin's setup and refresh work from.
pub struct Ctx<'a> {
    pub pod: &'a Pod,
    /// The pod's directory (volumes live under `volumes/<name>`).
    pub pod_dir: &'a Path,
    pub objects: &'a Objects,
    /// (cpu, memory) capacity of the node, for resourceFieldRef without limits.
    pub capacity: (&'a str, &'a str),
}

impl Ctx<'_> {
    /// The directory of volume `v`.
    pub fn dir(&self, v: &Volume) -> PathBuf {
        dir(self.pod_dir, &v.name)
    }
}

/// The host side of a container's bind of a volume.
#[derive(Clone, Debug, PartialEq)]
pub struct Mounted {
    pub host: PathBuf,
    /// Read-only whatever the volumeMount says.
    pub read_only: bool,
}

/// Why a volume could not be set up: upstream's reason.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeError(pub String);

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub use empty_dir::{bytes as size_bytes, over_limit as empty_dir_over_limit};

/// The plugin of `v`'s type, if this node provides it.
pub fn plugin_of(v: &Volume) -> Option<&'static dyn VolumePlugin> {
    PLUGINS.iter().copied().find(|p| p.is_of(v))
}

/// ConfigMap and Secret contents a pod's volumes refer to, fetched by the caller:
/// name -> data, or `None` when the object does not exist.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// ServiceAccount tokens for the pod's projected `serviceAccountToken` sources, by
    /// [`token_key`] of their audience and lifetime.
    pub tokens: BTreeMap<String, String>,
}

pub use projected::{token_key, token_sources};

/// The ConfigMaps and Secrets the pod's volumes name.
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secs) = (vec![], vec![]);
    for v in volumes(pod) {
        for p in PLUGINS {
            p.references(v, &mut cms, &mut secs);
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
    volumes(pod).iter().any(|v| PLUGINS.iter().any(|p| p.refreshes() && p.is_of(v)))
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
    // A type with a plugin in [`PLUGINS`] is provided after all.
    checks.iter().find(|(n, set)| *set && PLUGINS.iter().all(|p| p.name() != *n)).map(|(n, _)| *n)
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
}

/// "emptyDir, hostPath, configMap, secret, downwardAPI or projected": the types [`PLUGINS`] has.
fn provided() -> String {
    let names: Vec<&str> = PLUGINS.iter().map(|p| p.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.to_string(),
        None => String::new(),
    }
}

/// Prepare every volume of `pod` under `pod_dir` (idempotent: an adopted pod's volumes are
/// refreshed, not recreated). The first volume that fails stops it.
pub fn setup(pod: &Pod, pod_dir: &Path, objs: &Objects, capacity: (&str, &str)) -> Result<(), Failed> {
    let ctx = Ctx { pod, pod_dir, objects: objs, capacity };
    for v in volumes(pod) {
        let fail = |reason: String| Failed { volume: v.name.clone(), reason };
        if let Some(t) = unsupported(v) {
            return Err(fail(format!("volume type {t} is not supported by this node")));
        }
        match plugin_of(v) {
            Some(p) => p.setup(&ctx, v).map_err(|e| fail(e.0))?,
            None => return Err(fail(format!("volume has no source (no {})", provided()))),
        }
    }
    Ok(())
}

/// Rewrite the API-data volumes of a running pod whose sources changed. Returns the names of
/// the volumes that changed; errors (a source deleted meanwhile) keep the old content.
pub fn refresh(pod: &Pod, pod_dir: &Path, objs: &Objects, capacity: (&str, &str)) -> Vec<String> {
    let ctx = Ctx { pod, pod_dir, objects: objs, capacity };
    let mut changed = vec![];
    for v in volumes(pod) {
        if plugin_of(v).is_some_and(|p| p.refreshes() && p.refresh(&ctx, v)) {
            changed.push(v.name.clone());
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
        let Mounted { host: base, read_only: api_data } = match plugin_of(v) {
            Some(p) => p.mounted(pod_dir, v),
            None => Mounted { host: dir(pod_dir, &v.name), read_only: true },
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

/// Disk usage of a tree as `du` counts it: allocated blocks of every file and directory, each
/// inode once, without following symlinks or leaving the file system.
pub fn usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(root) else { return 0 };
    let mut seen = std::collections::HashSet::new();
    let (mut total, mut stack) = (0u64, vec![root.to_path_buf()]);
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for ent in rd.flatten() {
            let Ok(m) = ent.metadata() else { continue };
            if m.dev() != top.dev() || (m.nlink() > 1 && !seen.insert(m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(ent.path());
            }
        }
    }
    total + top.blocks() * 512
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

    #[test]
    fn registry_dispatch() {
        let mut names: Vec<&str> = PLUGINS.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected"]);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PLUGINS.len());
        let vols = pod(serde_json::json!([
            {"name": "a", "configMap": {"name": "cfg"}},
            {"name": "b", "secret": {"secretName": "s"}},
            {"name": "c", "projected": {"sources": [{"configMap": {"name": "pc"}}, {"secret": {"name": "ps"}}]}},
            {"name": "d", "hostPath": {"path": "/tmp"}},
            {"name": "e", "emptyDir": {}},
            {"name": "f", "downwardAPI": {}}
        ]));
        let kinds: Vec<&str> = volumes(&vols).iter().map(|v| plugin_of(v).unwrap().name()).collect();
        assert_eq!(kinds, ["configMap", "secret", "projected", "hostPath", "emptyDir", "downwardAPI"]);
        assert_eq!(referenced(&vols), (vec!["cfg".to_string(), "pc".into()], vec!["ps".to_string(), "s".into()]));
        assert!(has_api_data(&vols));
        assert!(!has_api_data(&pod(serde_json::json!([{"name": "e", "emptyDir": {}}]))));
        let binds: Vec<Mounted> =
            volumes(&vols).iter().map(|v| plugin_of(v).unwrap().mounted(Path::new("/p"), v)).collect();
        let ro: Vec<bool> = binds.iter().map(|m| m.read_only).collect();
        assert_eq!(ro, [true, true, true, false, false, true]);
        assert_eq!(binds[3].host, Path::new("/tmp"));
        assert_eq!(binds[4].host, Path::new("/p/volumes/e"));
        // Refused types and volumes without a source keep their messages.
        let dir = std::env::temp_dir().join(format!("yard-vol-reg-{}", std::process::id()));
        let objs = Objects::default();
        let nfs = pod(serde_json::json!([{"name": "n", "nfs": {"server": "s", "path": "/"}}]));
        assert_eq!(
            setup(&nfs, &dir, &objs, ("2", "1Gi")).unwrap_err().to_string(),
            "MountVolume.SetUp failed for volume \"n\" : volume type nfs is not supported by this node"
        );
        let none = pod(serde_json::json!([{"name": "x"}]));
        assert_eq!(
            setup(&none, &dir, &objs, ("2", "1Gi")).unwrap_err().reason,
            "volume has no source (no emptyDir, hostPath, configMap, secret, downwardAPI or projected)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
