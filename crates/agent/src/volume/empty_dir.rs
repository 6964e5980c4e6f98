//! `emptyDir` volumes: a directory in the pod's directory, or with `medium: Memory` a tmpfs of
//! `sizeLimit` (unmounted by [`super::teardown`]). A disk `sizeLimit` is enforced as the kubelet
//! does, by eviction: [`over_limit`] measures the directory and the pod worker evicts the pod.

use std::path::Path;

use k8s_openapi::api::core::v1::Volume;

use super::{Ctx, VolumeError, VolumePlugin};

pub(super) struct EmptyDir;

impl VolumePlugin for EmptyDir {
    fn name(&self) -> &'static str {
        "emptyDir"
    }

    fn is_of(&self, v: &Volume) -> bool {
        v.empty_dir.is_some()
    }

    fn setup(&self, ctx: &Ctx, v: &Volume) -> Result<(), VolumeError> {
        let Some(e) = &v.empty_dir else { return Ok(()) };
        let fail = VolumeError;
        let d = ctx.dir(v);
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
            bytes(&l.0).map_err(fail)?;
        }
        Ok(())
    }
}

/// The first disk `emptyDir` of `pod` whose usage exceeds its `sizeLimit`: upstream's eviction
/// message (`emptyDirMessageFmt`) for it.
pub fn over_limit(pod: &k8s_openapi::api::core::v1::Pod, pod_dir: &Path) -> Option<String> {
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or(&[]);
    for v in vols {
        let Some(e) = &v.empty_dir else { continue };
        let (Some(limit), None | Some("")) = (&e.size_limit, e.medium.as_deref()) else { continue };
        let Ok(max) = bytes(&limit.0) else { continue };
        if super::usage(&super::dir(pod_dir, &v.name)) > max {
            return Some(format!("Usage of EmptyDir volume {:?} exceeds the limit {:?}. ", v.name, limit.0));
        }
    }
    None
}

/// Parse a size quantity (`sizeLimit`, an `ephemeral-storage` limit) into bytes.
pub fn bytes(q: &str) -> Result<u64, String> {
    yard_api::quantity::Quantity::parse(q)
        .map(|v| v.value().max(0) as u64)
        .map_err(|e| format!("invalid sizeLimit {q:?}: {e}"))
}

fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}
