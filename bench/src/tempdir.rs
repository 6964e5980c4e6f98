//! A scratch directory the benchmarks remove when they end, on failure too.

use std::path::PathBuf;

pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `$TMPDIR/<name>-<pid>`, with whatever an earlier run of the same PID left there removed.
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
