//! Helpers for this crate's unit tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use yard_store::{DynStore, RedbStore};

/// An embedded store in a fresh directory, removed on drop (also when the test fails).
pub struct TempStore {
    pub store: DynStore,
    dir: PathBuf,
}

impl TempStore {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("yard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let store: DynStore = Arc::new(RedbStore::open(&dir.join("s.redb")).expect("open store"));
        Self { store, dir }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait (at most 2 s) until `f` holds; panics with `what` otherwise.
pub async fn until<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}");
}
