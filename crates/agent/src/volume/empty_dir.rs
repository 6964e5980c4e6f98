//! `emptyDir` volumes: a directory in the pod's directory, or with `medium: Memory` a tmpfs of
//! `sizeLimit` (unmounted by [`super::teardown`]). A disk `sizeLimit` is refused: this node cannot
//! enforce it.

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
            // The kubelet evicts a pod whose disk emptyDir outgrows sizeLimit; this node
            // cannot watch disk usage, so it refuses rather than ignore the limit.
            return Err(fail(format!(
                "sizeLimit {:?} on a disk emptyDir is not enforced by this node; use medium: Memory",
                l.0
            )));
        }
        Ok(())
    }
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
