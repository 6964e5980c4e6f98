//! The embedded backend: redb tables on local disk. One writer thread applies batches of
//! concurrent compare-and-swap writes in a single durable transaction (group commit), then
//! publishes their events to the in-memory watch hub in revision order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::{Event, EventKind, KeyValue, ListPage, Op, Result, Store, StoreError, WatchHub, WatchStream};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// Events kept for watches to resume from.
const HISTORY: usize = 200_000;
/// Writes applied in one transaction at most.
const MAX_BATCH: usize = 512;

/// A write handed to the writer thread: one op, or an atomic transaction of several.
enum Job {
    One(Op, oneshot::Sender<Result<KeyValue>>),
    Txn(Vec<Op>, oneshot::Sender<Result<Vec<KeyValue>>>),
}

impl Job {
    fn ops(&self) -> &[Op] {
        match self {
            Job::One(op, _) => std::slice::from_ref(op),
            Job::Txn(ops, _) => ops,
        }
    }
    fn reply(self, res: Result<Vec<KeyValue>>) {
        match self {
            Job::One(_, tx) => {
                let _ = tx.send(res.map(|mut v| v.pop().expect("one op, one result")));
            }
            Job::Txn(_, tx) => {
                let _ = tx.send(res);
            }
        }
    }
}

/// The default store: durable, single-node, embedded.
pub struct RedbStore {
    db: Arc<Database>,
    hub: Arc<WatchHub>,
    writer: Option<std_mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it finishes its batch; joining it releases the
        // database file so the same path can be opened again.
        self.writer.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode(create: i64, modrev: i64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + value.len());
    v.extend_from_slice(&create.to_be_bytes());
    v.extend_from_slice(&modrev.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode(key: &str, raw: &[u8]) -> KeyValue {
    let create = i64::from_be_bytes(raw[0..8].try_into().expect("8 bytes"));
    let modrev = i64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
    KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(&raw[16..]),
        create_revision: create,
        mod_revision: modrev,
    }
}

impl RedbStore {
    /// Open (or create) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(backend)?;
        let revision = {
            let w = db.begin_write().map_err(backend)?;
            let rev = {
                let _ = w.open_table(KV).map_err(backend)?;
                let meta = w.open_table(META).map_err(backend)?;
                let r = meta.get(REVISION).map_err(backend)?.map(|g| g.value()).unwrap_or(1);
                r
            };
            w.commit().map_err(backend)?;
            rev
        };
        let db = Arc::new(db);
        let hub = Arc::new(WatchHub::new(revision, HISTORY));
        let (tx, rx) = std_mpsc::channel::<Job>();
        let (wdb, whub) = (db.clone(), hub.clone());
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(wdb, whub, rx, revision))
            .map_err(backend)?;
        Ok(Self { db, hub, writer: Some(tx), thread: Some(thread) })
    }

    fn read_page(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListPage> {
        let r = self.db.begin_read().map_err(backend)?;
        let revision = read_revision(&r)?;
        let kv = r.open_table(KV).map_err(backend)?;
        let mut items = Vec::new();
        let mut more = None;
        let mut remaining = 0i64;
        for entry in kv.range(start_after.unwrap_or(prefix)..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if start_after == Some(key) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                // The page is cut here: the rest are only counted (keys, never decoded).
                more = items.last().map(|kv: &KeyValue| kv.key.clone());
                remaining += 1;
                continue;
            }
            items.push(decode(key, v.value()));
        }
        Ok(ListPage { items, revision, more, remaining })
    }

    /// The page as it was at `at`: the current keys with every change after `at` undone, from the
    /// watch history (each event carries the value it replaced).
    async fn read_page_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        at: i64,
    ) -> Result<ListPage> {
        let mut waited = 0u32;
        loop {
            let r = self.db.begin_read().map_err(backend)?;
            let current = read_revision(&r)?;
            if at > current {
                return Err(StoreError::FutureRevision { requested: at, current });
            }
            if at == current {
                drop(r);
                let page = self.read_page(prefix, start_after, limit)?;
                if page.revision == at {
                    return Ok(page);
                }
                continue;
            }
            let Some(changes) = self.hub.changes_between(prefix, start_after, at, current)? else {
                // Committed but not yet handed to the hub: the writer does that next.
                waited += 1;
                if waited > 5_000 {
                    return Err(StoreError::Backend(format!("history did not reach revision {current}")));
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            };
            let kv = r.open_table(KV).map_err(backend)?;
            return undo_page(&kv, prefix, start_after, limit, at, &changes);
        }
    }
}

fn read_revision(r: &redb::ReadTransaction) -> Result<i64> {
    let meta = r.open_table(META).map_err(backend)?;
    Ok(meta.get(REVISION).map_err(backend)?.map(|g| g.value()).unwrap_or(1))
}

/// The page of `prefix` after `start_after` at revision `at`, from the current table and the
/// `changes` after `at` (in revision order).
fn undo_page(
    kv: &redb::ReadOnlyTable<&str, &[u8]>,
    prefix: &str,
    start_after: Option<&str>,
    limit: Option<usize>,
    at: i64,
    changes: &[Event],
) -> Result<ListPage> {
    // Each touched key's state at `at`: the value its oldest later change replaced.
    let mut then: BTreeMap<&str, Option<&KeyValue>> = BTreeMap::new();
    for ev in changes.iter().rev() {
        then.insert(ev.kv.key.as_str(), ev.prev.as_ref());
    }
    // Among the first limit + 1 + touched current keys at most `touched` differ, so they hold the
    // first limit + 1 keys at `at` that no change touched.
    let want = limit.map(|l| l.saturating_add(1).saturating_add(then.len()));
    let mut merged: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut read = 0usize;
    for entry in kv.range(start_after.unwrap_or(prefix)..).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        if start_after == Some(key) {
            continue;
        }
        if want.is_some_and(|w| read >= w) {
            break;
        }
        read += 1;
        if !then.contains_key(key) {
            merged.insert(key.to_string(), decode(key, v.value()));
        }
    }
    for (key, state) in &then {
        if let Some(kv) = state {
            merged.insert(key.to_string(), (*kv).clone());
        }
    }
    let mut items: Vec<KeyValue> = Vec::with_capacity(merged.len().min(limit.unwrap_or(usize::MAX)));
    let mut rest = merged.into_values();
    for kv in rest.by_ref() {
        if limit.is_some_and(|l| items.len() >= l) {
            break;
        }
        items.push(kv);
    }
    let Some(last) = items.last().map(|k| k.key.clone()).filter(|_| limit.is_some_and(|l| items.len() >= l)) else {
        return Ok(ListPage { items, revision: at, more: None, remaining: 0 });
    };
    // Keys after the page at `at`: the current ones after it, corrected for each touched key.
    let mut remaining = 0i64;
    for entry in kv.range(last.as_str()..).map_err(backend)? {
        let (k, _) = entry.map_err(backend)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        if k.value() != last {
            remaining += 1;
        }
    }
    for (key, state) in then.range::<str, _>((std::ops::Bound::Excluded(last.as_str()), std::ops::Bound::Unbounded)) {
        let now = kv.get(*key).map_err(backend)?.is_some();
        remaining += state.is_some() as i64 - now as i64;
    }
    let more = (remaining > 0).then_some(last);
    Ok(ListPage { items, revision: at, more, remaining })
}

fn writer_loop(db: Arc<Database>, hub: Arc<WatchHub>, rx: std_mpsc::Receiver<Job>, mut revision: i64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        let start_rev = revision;
        let mut results: Vec<Result<Vec<KeyValue>>> = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let outcome: std::result::Result<(), StoreError> = (|| {
            let mut w = db.begin_write().map_err(backend)?;
            w.set_durability(Durability::Immediate).map_err(backend)?;
            {
                let mut kv = w.open_table(KV).map_err(backend)?;
                for job in &batch {
                    let res = apply_job(&mut kv, job.ops(), &mut revision, &mut events)?;
                    results.push(res);
                }
                let mut meta = w.open_table(META).map_err(backend)?;
                meta.insert(REVISION, revision).map_err(backend)?;
            }
            w.commit().map_err(backend)?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                hub.publish(&events);
                for (job, res) in batch.into_iter().zip(results) {
                    job.reply(res);
                }
            }
            Err(e) => {
                revision = start_rev;
                for job in batch {
                    job.reply(Err(e.clone()));
                }
            }
        }
    }
    hub.close_all();
}

/// Check `op`'s precondition against the table; returns the key's current state.
fn check_op(kv: &redb::Table<&str, &[u8]>, op: &Op) -> Result<Option<KeyValue>> {
    let key = op.key();
    let cur = kv.get(key).map_err(backend)?.map(|g| decode(key, g.value()));
    match (op, cur) {
        (Op::Create { .. }, Some(_)) => Err(StoreError::AlreadyExists(key.to_string())),
        (Op::Create { .. }, None) => Ok(None),
        (Op::Update { .. } | Op::Delete { .. }, None) => Err(StoreError::NotFound(key.to_string())),
        (Op::Update { expect, .. } | Op::Delete { expect, .. }, Some(cur)) => match expect {
            Some(e) if *e != cur.mod_revision => {
                Err(StoreError::Conflict { key: key.to_string(), current: Some(Box::new(cur)) })
            }
            _ => Ok(Some(cur)),
        },
    }
}

/// Apply a checked `op` at revision `rev`, recording its event.
fn put_op(
    kv: &mut redb::Table<&str, &[u8]>,
    op: &Op,
    cur: Option<KeyValue>,
    rev: i64,
    events: &mut Vec<Event>,
) -> Result<KeyValue> {
    match op {
        Op::Create { key, value } | Op::Update { key, value, .. } => {
            let create = cur.as_ref().map(|c| c.create_revision).unwrap_or(rev);
            kv.insert(key.as_str(), encode(create, rev, value).as_slice()).map_err(backend)?;
            let new = KeyValue { key: key.clone(), value: value.clone(), create_revision: create, mod_revision: rev };
            events.push(Event { kind: EventKind::Put, kv: new.clone(), prev: cur });
            Ok(new)
        }
        Op::Delete { key, .. } => {
            let cur = cur.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            kv.remove(key.as_str()).map_err(backend)?;
            let gone = KeyValue { mod_revision: rev, ..cur.clone() };
            events.push(Event { kind: EventKind::Delete, kv: gone.clone(), prev: Some(cur) });
            Ok(gone)
        }
    }
}

/// One job of a batch: all of its ops at one new revision, or none of them. The outer error is a
/// table failure after some ops were written: the whole batch must then be aborted.
fn apply_job(
    kv: &mut redb::Table<&str, &[u8]>,
    ops: &[Op],
    revision: &mut i64,
    events: &mut Vec<Event>,
) -> Result<Result<Vec<KeyValue>>> {
    if ops.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    if let Err(e) = crate::check_distinct(ops) {
        return Ok(Err(e));
    }
    let mut current = Vec::with_capacity(ops.len());
    for op in ops {
        match check_op(kv, op) {
            Ok(c) => current.push(c),
            Err(e) => return Ok(Err(e)),
        }
    }
    *revision += 1;
    let rev = *revision;
    let mut out = Vec::with_capacity(ops.len());
    for (op, cur) in ops.iter().zip(current) {
        out.push(put_op(kv, op, cur, rev, events)?);
    }
    Ok(Ok(out))
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let res = (|| {
            let r = self.db.begin_read().map_err(backend)?;
            let kv = r.open_table(KV).map_err(backend)?;
            let v = kv.get(key).map_err(backend)?.map(|g| decode(key, g.value()));
            Ok(v)
        })();
        futures::future::ready(res).boxed()
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> BoxFuture<'_, Result<ListPage>> {
        futures::future::ready(self.read_page(prefix, start_after, limit)).boxed()
    }

    fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        revision: i64,
    ) -> BoxFuture<'_, Result<ListPage>> {
        let (prefix, start_after) = (prefix.to_string(), start_after.map(str::to_string));
        async move { self.read_page_at(&prefix, start_after.as_deref(), limit, revision).await }.boxed()
    }

    fn count(&self, prefix: &str) -> BoxFuture<'_, Result<i64>> {
        let res = (|| {
            let r = self.db.begin_read().map_err(backend)?;
            let kv = r.open_table(KV).map_err(backend)?;
            let mut n = 0i64;
            for entry in kv.range(prefix..).map_err(backend)? {
                let (k, _) = entry.map_err(backend)?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })();
        futures::future::ready(res).boxed()
    }

    fn write(&self, op: Op) -> BoxFuture<'_, Result<KeyValue>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.writer.as_ref().map(|w| w.send(Job::One(op, tx)).is_ok()).unwrap_or(false);
        async move {
            if !sent {
                return Err(StoreError::Backend("store writer stopped".into()));
            }
            rx.await.map_err(|_| StoreError::Backend("store writer stopped".into()))?
        }
        .boxed()
    }

    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<Vec<KeyValue>>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.writer.as_ref().map(|w| w.send(Job::Txn(ops, tx)).is_ok()).unwrap_or(false);
        async move {
            if !sent {
                return Err(StoreError::Backend("store writer stopped".into()));
            }
            rx.await.map_err(|_| StoreError::Backend("store writer stopped".into()))?
        }
        .boxed()
    }

    fn watch(&self, prefix: &str, after: i64) -> BoxFuture<'_, Result<WatchStream>> {
        futures::future::ready(self.hub.subscribe(prefix, after)).boxed()
    }

    fn list_and_watch(&self, prefix: &str) -> BoxFuture<'_, Result<(ListPage, WatchStream)>> {
        let res = (|| {
            let page = self.read_page(prefix, None, None)?;
            let w = self.hub.subscribe(prefix, page.revision)?;
            Ok((page, w))
        })();
        futures::future::ready(res).boxed()
    }

    fn revision(&self) -> BoxFuture<'_, Result<i64>> {
        let res = (|| {
            let r = self.db.begin_read().map_err(backend)?;
            let meta = r.open_table(META).map_err(backend)?;
            Ok(meta.get(REVISION).map_err(backend)?.map(|g| g.value()).unwrap_or(1))
        })();
        futures::future::ready(res).boxed()
    }

    fn compact(&self, revision: i64) -> BoxFuture<'_, Result<()>> {
        self.hub.compact(revision);
        futures::future::ready(Ok(())).boxed()
    }
}
