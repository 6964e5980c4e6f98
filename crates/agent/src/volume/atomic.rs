//! The kubelet's atomic writer for API-data volumes (configMap, secret, downwardAPI, projected):
//! the files of one version live in a hidden timestamped directory, `..data` is a symlink to it,
//! and each visible top-level name is a symlink through `..data`. An update writes a new version
//! directory, swaps `..data` with one `rename` (a reader sees the old set or the new, never a
//! mix), then removes the old version and the names that left.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

/// One file of a payload: content, mode, and the group that owns it (`fsGroup`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Relative path (as `items[].path` gives it) -> file.
pub type Payload = BTreeMap<String, File>;

/// A relative path without `..` or a leading `/` (the API validates this; checked again here
/// because a bad one would write outside the volume).
fn check(path: &str) -> io::Result<()> {
    let p = Path::new(path);
    let ok = !path.is_empty() && !path.starts_with("..") && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid path {path:?}")))
    }
}

fn current(dir: &Path) -> Option<Payload> {
    let data = dir.join("..data");
    let target = std::fs::read_link(&data).ok()?;
    let base = dir.join(target);
    let mut out = Payload::new();
    fn walk(base: &Path, rel: &Path, out: &mut Payload) -> io::Result<()> {
        for e in std::fs::read_dir(base.join(rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let md = e.metadata()?;
            if md.is_dir() {
                walk(base, &r, out)?;
            } else {
                out.insert(
                    r.to_string_lossy().into_owned(),
                    File { content: std::fs::read(base.join(&r))?, mode: md.permissions().mode() & 0o7777 },
                );
            }
        }
        Ok(())
    }
    walk(&base, Path::new(""), &mut out).ok()?;
    Some(out)
}

/// Make `dir` hold `payload`; returns whether anything changed. `gid` (fsGroup) owns the files.
pub fn write(dir: &Path, payload: &Payload, gid: Option<u32>) -> io::Result<bool> {
    for p in payload.keys() {
        check(p)?;
    }
    std::fs::create_dir_all(dir)?;
    if current(dir).as_ref() == Some(payload) {
        return Ok(false);
    }
    let stamp = jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f").to_string();
    let version = format!("..{stamp}");
    let vdir = dir.join(&version);
    std::fs::create_dir(&vdir)?;
    std::fs::set_permissions(&vdir, std::fs::Permissions::from_mode(0o755))?;
    for (rel, f) in payload {
        let path = vdir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.content)?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&path, None, Some(g))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    // The visible names: one symlink per top-level element.
    let tops: BTreeSet<String> = payload.keys().map(|k| k.split('/').next().unwrap_or(k).to_string()).collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(t), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(o) = old {
        if o != Path::new(&version) {
            let _ = std::fs::remove_dir_all(dir.join(o));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> File {
        File { content: s.as_bytes().to_vec(), mode: 0o644 }
    }

    #[test]
    fn swap_keeps_one_version() {
        let dir = std::env::temp_dir().join(format!("yard-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut p = Payload::new();
        p.insert("greeting".into(), f("hello"));
        p.insert("sub/dir/x".into(), f("x"));
        assert!(write(&dir, &p, None).unwrap());
        assert!(!write(&dir, &p, None).unwrap(), "same payload: no new version");
        assert_eq!(std::fs::read_to_string(dir.join("greeting")).unwrap(), "hello");
        assert_eq!(std::fs::read_to_string(dir.join("sub/dir/x")).unwrap(), "x");
        p.remove("sub/dir/x");
        p.insert("greeting".into(), f("bye"));
        assert!(write(&dir, &p, None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("greeting")).unwrap(), "bye");
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err(), "a name that left is gone");
        let versions = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..2"))
            .count();
        assert_eq!(versions, 1);
        let mut bad = Payload::new();
        bad.insert("../escape".into(), f("x"));
        assert!(write(&dir, &bad, None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
