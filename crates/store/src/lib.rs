//! The revisioned key-value store under the API server, with etcd's model: one global, monotonic
//! revision that every write advances and that becomes `metadata.resourceVersion`; create-if-absent,
//! update-if-revision-matches and delete as atomic compare-and-swap; prefix listing with limits;
//! and watches that resume from a revision within a bounded history window (older -> `Expired`,
//! which the API server turns into 410). The embedded backend (`RedbStore`) commits every
//! acknowledged write durably (group commit: one fsync per batch of concurrent writes). The etcd
//! v3 backend (`EtcdStore`) keeps the same keys in an etcd cluster that several API servers share:
//! etcd's revision is the revision, writes are etcd transactions, watches are etcd watches. Both
//! sit behind the object-safe `Store` trait.

#![forbid(unsafe_code)]

mod etcd_backend;
mod etcd_unary;
pub mod local_etcd;
mod memwatch;
mod redb_backend;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use etcd_backend::{EtcdConfig, EtcdStore};
pub use memwatch::{WatchHub, Watcher};
pub use redb_backend::RedbStore;

/// One stored key with its revisions, as etcd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key.
    pub create_revision: i64,
    /// Revision of the last write to this key (for a delete event: the delete's revision).
    pub mod_revision: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change, delivered to watchers in revision order.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put`, the new value; for `Delete`, the last value with `mod_revision` = the delete's revision.
    pub kv: KeyValue,
    /// The value before the change (absent for a create).
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("key not found: {0}")]
    NotFound(String),
    #[error("key already exists: {0}")]
    AlreadyExists(String),
    /// A compare-and-swap lost: the key's current state is returned (None if it is gone).
    #[error("revision mismatch on {key}")]
    Conflict { key: String, current: Option<Box<KeyValue>> },
    /// The requested revision is older than the history the store still holds.
    #[error("required revision {requested} has been compacted (oldest available {oldest})")]
    Expired { requested: i64, oldest: i64 },
    /// A read at a revision the store has not reached yet.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A page of a prefix listing.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The store revision the page was read at.
    pub revision: i64,
    /// Set when `limit` cut the listing: the last key returned, to pass as `start_after`.
    pub more: Option<String>,
    /// How many keys under the prefix follow this page, at `revision` (0 when `more` is unset).
    pub remaining: i64,
}

/// A compare-and-swap write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create `key`; fails with `AlreadyExists` if present.
    Create { key: String, value: Bytes },
    /// Replace `key`; with `expect`, only if its mod revision equals it. Fails with `NotFound` if absent.
    Update { key: String, value: Bytes, expect: Option<i64> },
    /// Delete `key`; with `expect`, only if its mod revision equals it.
    Delete { key: String, expect: Option<i64> },
}

/// A watch from `after` (exclusive): every event with revision > `after` under the prefix, in order.
pub type WatchStream = Watcher;

/// The storage interface the API server uses. Implementations must make every acknowledged write
/// durable and deliver events to watchers in revision order without gaps.
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>>;
    /// A read that may trail the latest acknowledged writes (on etcd: a serializable read answered
    /// by one member without a quorum round; the embedded store has nothing to trail, so this is
    /// `get`). Only for checks that a later compare-and-swap write or a fallback `get` makes safe,
    /// e.g. "is this allocation key free" before a transaction that creates it.
    fn get_stale(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        self.get(key)
    }
    /// Keys under `prefix` in key order, after `start_after` when given, at most `limit` when given.
    fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> BoxFuture<'_, Result<ListPage>>;
    /// As `list`, but the keys as they were at `revision` (the page's `revision` is it): the
    /// consistent snapshot a paged list continues from. A revision older than the history the
    /// store still holds is `Expired`; one it has not reached yet is `FutureRevision`.
    fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        revision: i64,
    ) -> BoxFuture<'_, Result<ListPage>>;
    /// Count keys under `prefix`.
    fn count(&self, prefix: &str) -> BoxFuture<'_, Result<i64>>;
    /// Apply one CAS write; returns the new state (for a delete: the deleted value at the delete's revision).
    fn write(&self, op: Op) -> BoxFuture<'_, Result<KeyValue>>;
    /// Apply several CAS writes atomically, as etcd does with one Txn: all succeed or none does (the
    /// first failing op's error is returned). They share one new revision and one durable commit;
    /// their events reach watchers in op order. Returns each op's result as `write` would. A key may
    /// appear only once; an empty list writes nothing.
    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<Vec<KeyValue>>>;
    /// Watch `prefix` for events with revision > `after`. `after` older than the history window -> Expired.
    fn watch(&self, prefix: &str, after: i64) -> BoxFuture<'_, Result<WatchStream>>;
    /// List `prefix` and watch it from the listing's revision, atomically.
    fn list_and_watch(&self, prefix: &str) -> BoxFuture<'_, Result<(ListPage, WatchStream)>>;
    /// As `list_and_watch`, for a follower that needs only each event's key and new value: events
    /// may come without `prev`, and a delete's `kv` may carry only its key and revision (on etcd
    /// the members then skip reading the previous value for every event they send).
    fn list_and_follow(&self, prefix: &str) -> BoxFuture<'_, Result<(ListPage, WatchStream)>> {
        self.list_and_watch(prefix)
    }
    /// The current revision.
    fn revision(&self) -> BoxFuture<'_, Result<i64>>;
    /// Forget history at or below `revision` (watches from older revisions get Expired).
    fn compact(&self, revision: i64) -> BoxFuture<'_, Result<()>>;
}

pub type DynStore = Arc<dyn Store>;

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// Reject a transaction naming one key twice (etcd refuses those too).
pub(crate) fn check_distinct(ops: &[Op]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::Backend(format!("duplicate key in transaction: {}", op.key())));
        }
    }
    Ok(())
}

impl KeyValue {
    pub fn is_under(&self, prefix: &str) -> bool {
        self.key.starts_with(prefix)
    }
}

#[cfg(test)]
mod tests;
