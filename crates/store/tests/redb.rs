//! The shared store behaviour suite on the embedded redb backend.

mod suite;

use std::sync::Arc;

use yard_store::{RedbStore, Store};

struct Fresh {
    dir: std::path::PathBuf,
    store: Arc<RedbStore>,
}

impl Fresh {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("yard-store-suite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(RedbStore::open(&dir.join("db")).unwrap());
        Self { dir, store }
    }
    fn dyn_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn cas_semantics() {
    suite::cas_semantics(&*Fresh::new("cas").store).await;
}

#[tokio::test]
async fn list_pages_and_prefixes() {
    suite::list_pages_and_prefixes(&*Fresh::new("list").store).await;
}

#[tokio::test]
async fn watch_in_order_and_expired() {
    suite::watch_in_order_and_expired(&*Fresh::new("watch").store).await;
}

#[tokio::test]
async fn concurrent_writers_get_distinct_revisions() {
    suite::concurrent_writers_get_distinct_revisions(Fresh::new("conc").dyn_store()).await;
}

#[tokio::test]
async fn txn_all_or_nothing() {
    suite::txn_all_or_nothing(&*Fresh::new("txn").store).await;
}

#[tokio::test]
async fn concurrent_txns_and_writes() {
    suite::concurrent_txns_and_writes(Fresh::new("ctxn").dyn_store()).await;
}

#[tokio::test]
async fn list_at_revision() {
    suite::list_at_revision(&*Fresh::new("at").store).await;
}
