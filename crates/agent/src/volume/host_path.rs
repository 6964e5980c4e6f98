//! `hostPath` volumes: a host path bound as it is, with upstream's `type` checks (and the
//! `DirectoryOrCreate`/`FileOrCreate` creation).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Volume;

use super::{Ctx, Mounted, VolumeError, VolumePlugin};

pub(super) struct HostPath;

impl VolumePlugin for HostPath {
    fn name(&self) -> &'static str {
        "hostPath"
    }

    fn is_of(&self, v: &Volume) -> bool {
        v.host_path.is_some()
    }

    fn setup(&self, _ctx: &Ctx, v: &Volume) -> Result<(), VolumeError> {
        match host_path(v) {
            Some(Err(reason)) => Err(VolumeError(reason)),
            _ => Ok(()),
        }
    }

    fn mounted(&self, pod_dir: &Path, v: &Volume) -> Mounted {
        match &v.host_path {
            Some(h) => Mounted { host: PathBuf::from(&h.path), read_only: false },
            None => Mounted { host: super::dir(pod_dir, &v.name), read_only: false },
        }
    }
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
