//! The embedded backend: redb tables on local disk. One writer thread applies batches of
//! concurrent compare-and-swap writes in a single durable transaction (group commit), then
//! publishes their events to the in-memory watch hub in revision order.

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

type Reply = oneshot::Sender<Result<KeyValue>>;

/// The default store: durable, single-node, embedded.
pub struct RedbStore {
    db: Arc<Database>,
    hub: Arc<WatchHub>,
    writer: Option<std_mpsc::Sender<(Op, Reply)>>,
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
    KeyValue { key: key.to_string(), value: Bytes::copy_from_slice(&raw[16..]), create_revision: create, mod_revision: modrev }
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
        let (tx, rx) = std_mpsc::channel::<(Op, Reply)>();
        let (wdb, whub) = (db.clone(), hub.clone());
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(wdb, whub, rx, revision))
            .map_err(backend)?;
        Ok(Self { db, hub, writer: Some(tx), thread: Some(thread) })
    }

    fn read_page(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListPage> {
        let r = self.db.begin_read().map_err(backend)?;
        let meta = r.open_table(META).map_err(backend)?;
        let revision = meta.get(REVISION).map_err(backend)?.map(|g| g.value()).unwrap_or(1);
        let kv = r.open_table(KV).map_err(backend)?;
        let start = start_after.unwrap_or(prefix);
        let mut items = Vec::new();
        let mut more = None;
        let mut remaining = 0i64;
        for entry in kv.range(start..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if start_after == Some(key) {
                continue;
            }
            if let Some(l) = limit {
                if items.len() >= l {
                    // One more key exists: the page is cut here. Counting the rest would make
                    // paging through N keys cost O(N^2), so `remaining` is a lower bound.
                    more = items.last().map(|kv: &KeyValue| kv.key.clone());
                    remaining = 1;
                    break;
                }
            }
            items.push(decode(key, v.value()));
        }
        Ok(ListPage { items, revision, more, remaining })
    }
}

fn writer_loop(db: Arc<Database>, hub: Arc<WatchHub>, rx: std_mpsc::Receiver<(Op, Reply)>, mut revision: i64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        let start_rev = revision;
        let mut results: Vec<Result<KeyValue>> = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let outcome: std::result::Result<(), StoreError> = (|| {
            let mut w = db.begin_write().map_err(backend)?;
            w.set_durability(Durability::Immediate).map_err(backend)?;
            {
                let mut kv = w.open_table(KV).map_err(backend)?;
                for (op, _) in &batch {
                    let res = apply_op(&mut kv, op, &mut revision, &mut events);
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
                for ((_, reply), res) in batch.into_iter().zip(results) {
                    let _ = reply.send(res);
                }
            }
            Err(e) => {
                revision = start_rev;
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
    hub.close_all();
}

fn apply_op(kv: &mut redb::Table<&str, &[u8]>, op: &Op, revision: &mut i64, events: &mut Vec<Event>) -> Result<KeyValue> {
    match op {
        Op::Create { key, value } => {
            if kv.get(key.as_str()).map_err(backend)?.is_some() {
                return Err(StoreError::AlreadyExists(key.clone()));
            }
            *revision += 1;
            let rev = *revision;
            kv.insert(key.as_str(), encode(rev, rev, value).as_slice()).map_err(backend)?;
            let new = KeyValue { key: key.clone(), value: value.clone(), create_revision: rev, mod_revision: rev };
            events.push(Event { kind: EventKind::Put, kv: new.clone(), prev: None });
            Ok(new)
        }
        Op::Update { key, value, expect } => {
            let cur = kv.get(key.as_str()).map_err(backend)?.map(|g| decode(key, g.value()));
            let Some(cur) = cur else { return Err(StoreError::NotFound(key.clone())) };
            if let Some(e) = expect {
                if *e != cur.mod_revision {
                    return Err(StoreError::Conflict { key: key.clone(), current: Some(Box::new(cur)) });
                }
            }
            *revision += 1;
            let rev = *revision;
            kv.insert(key.as_str(), encode(cur.create_revision, rev, value).as_slice()).map_err(backend)?;
            let new = KeyValue { key: key.clone(), value: value.clone(), create_revision: cur.create_revision, mod_revision: rev };
            events.push(Event { kind: EventKind::Put, kv: new.clone(), prev: Some(cur) });
            Ok(new)
        }
        Op::Delete { key, expect } => {
            let cur = kv.get(key.as_str()).map_err(backend)?.map(|g| decode(key, g.value()));
            let Some(cur) = cur else { return Err(StoreError::NotFound(key.clone())) };
            if let Some(e) = expect {
                if *e != cur.mod_revision {
                    return Err(StoreError::Conflict { key: key.clone(), current: Some(Box::new(cur)) });
                }
            }
            *revision += 1;
            let rev = *revision;
            kv.remove(key.as_str()).map_err(backend)?;
            let gone = KeyValue { mod_revision: rev, ..cur.clone() };
            events.push(Event { kind: EventKind::Delete, kv: gone.clone(), prev: Some(cur) });
            Ok(gone)
        }
    }
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
        let sent = self.writer.as_ref().map(|w| w.send((op, tx)).is_ok()).unwrap_or(false);
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
