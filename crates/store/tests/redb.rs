//! The shared store behaviour suite on the embedded redb backend.

mod suite;

use std::sync::Arc;

use yard_store::{RedbStore, Store};

struct Fresh {
    // Dropped after the store (fields drop in order): the database is closed before its dir goes.
    store: Arc<RedbStore>,
    _dir: yard_test_support::TempDir,
}

impl Fresh {
    fn new(name: &str) -> Self {
        let dir = yard_test_support::TempDir::new(&format!("store-suite-{name}"));
        let store = Arc::new(RedbStore::open(&dir.join("db")).unwrap());
        Self { store, _dir: dir }
    }
    fn dyn_store(&self) -> Arc<dyn Store> {
        self.store.clone()
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
