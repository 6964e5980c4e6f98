//! A scratch directory under `$TMPDIR`, unique in this machine, removed when dropped — also while
//! a failing test unwinds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh, empty directory `$TMPDIR/yard-<tag>-<pid>-<n>`; removed with everything in it on drop.
/// The path is the public field `.0` as well as [`TempDir::path`].
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates the directory (whatever an earlier process of the same PID left there is removed
    /// first). Panics when it cannot be made: a test without its directory cannot be honest.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "yard-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create temp dir {}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `path/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_and_removed_on_drop_and_on_panic() {
        let a = TempDir::new("ts-self");
        let b = TempDir::new("ts-self");
        assert_ne!(a.path(), b.path());
        std::fs::write(a.join("f"), "x").unwrap();
        let pa = a.path().to_path_buf();
        drop(a);
        assert!(!pa.exists());
        let pb = b.path().to_path_buf();
        let r = std::panic::catch_unwind(move || {
            let _b = b;
            panic!("test failure");
        });
        assert!(r.is_err());
        assert!(!pb.exists(), "removed while unwinding");
    }
}
