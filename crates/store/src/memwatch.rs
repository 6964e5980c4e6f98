//! In-memory watch fan-out with a bounded history window, shared by every backend that does not
//! have its own watch (the embedded one). Events are published in revision order after they are
//! durable; subscribers receive the history after their start revision, then live events. A
//! backend with its own watch (etcd) feeds a `Watcher` through a `WatchFeed` instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::{Event, Result, StoreError};

/// A subscriber's queue may hold at most this many undelivered events; beyond it the watch ends
/// (the client re-watches from its last revision, as with upstream's watch cache).
const MAX_PENDING: usize = 100_000;

struct Sub {
    prefix: String,
    tx: mpsc::UnboundedSender<Event>,
    pending: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
}

struct Inner {
    history: VecDeque<Event>,
    /// Watches must start at or after this revision (everything after it is in `history`).
    floor: i64,
    /// The newest revision published.
    head: i64,
    subs: Vec<Sub>,
}

/// Bounded event history plus live subscribers.
pub struct WatchHub {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// One watch: events under a prefix with revision greater than its start, in order.
pub struct Watcher {
    rx: mpsc::UnboundedReceiver<Event>,
    pending: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
}

impl Watcher {
    /// The next event; `None` when the watch has ended (store closed, or this watcher fell too far behind).
    pub async fn next(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await?;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Some(ev)
    }
    /// Like `next` but never waits.
    pub fn try_next(&mut self) -> Option<Event> {
        let ev = self.rx.try_recv().ok()?;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Some(ev)
    }
    /// Whether the watch ended because the consumer fell behind.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// The sending half of a `Watcher` fed by a backend's own watch task.
pub(crate) struct WatchFeed {
    tx: mpsc::UnboundedSender<Event>,
    pending: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
}

impl WatchFeed {
    /// A connected feed and watcher.
    pub(crate) fn new() -> (WatchFeed, Watcher) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let overflowed = Arc::new(AtomicBool::new(false));
        (
            WatchFeed { tx, pending: pending.clone(), overflowed: overflowed.clone() },
            Watcher { rx, pending, overflowed },
        )
    }

    /// Queue one event; false when the watch is over (watcher dropped, or it fell too far behind).
    pub(crate) fn send(&self, ev: Event) -> bool {
        if self.pending.load(Ordering::Relaxed) >= MAX_PENDING {
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.tx.send(ev).is_ok()
    }

    /// Resolves when the watcher has been dropped.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

impl WatchHub {
    /// A hub whose history starts empty at `revision` and keeps the last `capacity` events.
    pub fn new(revision: i64, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner { history: VecDeque::new(), floor: revision, head: revision, subs: Vec::new() }),
            capacity: capacity.max(1),
        }
    }

    /// Deliver events (already durable, in revision order) to history and subscribers.
    pub fn publish(&self, events: &[Event]) {
        let mut inner = self.inner.lock().expect("watch hub lock");
        for ev in events {
            inner.subs.retain(|s| {
                if !ev.kv.key.starts_with(&s.prefix) {
                    return !s.tx.is_closed();
                }
                if s.pending.load(Ordering::Relaxed) >= MAX_PENDING {
                    s.overflowed.store(true, Ordering::Relaxed);
                    return false;
                }
                s.pending.fetch_add(1, Ordering::Relaxed);
                s.tx.send(ev.clone()).is_ok()
            });
            inner.head = inner.head.max(ev.revision());
            inner.history.push_back(ev.clone());
            while inner.history.len() > self.capacity {
                let old = inner.history.pop_front().expect("non-empty");
                inner.floor = inner.floor.max(old.revision());
            }
        }
    }

    /// Subscribe to `prefix` from `after` (exclusive).
    pub fn subscribe(&self, prefix: &str, after: i64) -> Result<Watcher> {
        let mut inner = self.inner.lock().expect("watch hub lock");
        if after < inner.floor {
            return Err(StoreError::Expired { requested: after, oldest: inner.floor });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let overflowed = Arc::new(AtomicBool::new(false));
        for ev in inner.history.iter().filter(|e| e.revision() > after && e.kv.key.starts_with(prefix)) {
            pending.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(ev.clone());
        }
        inner.subs.push(Sub {
            prefix: prefix.to_string(),
            tx,
            pending: pending.clone(),
            overflowed: overflowed.clone(),
        });
        Ok(Watcher { rx, pending, overflowed })
    }

    /// Drop history at or below `revision`.
    pub fn compact(&self, revision: i64) {
        let mut inner = self.inner.lock().expect("watch hub lock");
        while inner.history.front().is_some_and(|e| e.revision() <= revision) {
            inner.history.pop_front();
        }
        inner.floor = inner.floor.max(revision);
    }

    /// The changes under `prefix` to keys after `start_after` with revision in `(after, upto]`, in
    /// revision order, for undoing them: `Ok(None)` while the hub has not yet been handed every
    /// event up to `upto` (the writer publishes right after its commit), `Expired` when `after` is
    /// below the history floor.
    pub fn changes_between(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        after: i64,
        upto: i64,
    ) -> Result<Option<Vec<Event>>> {
        let inner = self.inner.lock().expect("watch hub lock");
        if after < inner.floor {
            return Err(StoreError::Expired { requested: after, oldest: inner.floor });
        }
        if inner.head < upto {
            return Ok(None);
        }
        let first = inner.history.partition_point(|e| e.revision() <= after);
        Ok(Some(
            inner
                .history
                .range(first..)
                .take_while(|e| e.revision() <= upto)
                .filter(|e| e.kv.key.starts_with(prefix) && start_after.is_none_or(|s| e.kv.key.as_str() > s))
                .cloned()
                .collect(),
        ))
    }

    /// The oldest revision a watch may start after.
    pub fn floor(&self) -> i64 {
        self.inner.lock().expect("watch hub lock").floor
    }

    /// End every watch (store shutting down).
    pub fn close_all(&self) {
        self.inner.lock().expect("watch hub lock").subs.clear();
    }

    /// Number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.inner.lock().expect("watch hub lock").subs.len()
    }
}
