//! Watch-fed copies of small store prefixes (namespaces, allocation keys) that the write path
//! consults instead of reading the store before every create, as upstream's admission plugins
//! consult informer caches. A copy may trail the store by one watch delivery, so callers use it
//! only where a miss falls back to a live read and a compare-and-swap write settles races.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use yard_store::{DynStore, EventKind, KeyValue};

/// What a mirror knows about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen<T> {
    /// Not listed yet (or re-listing after the watch ended): ask the store.
    Unknown,
    Absent,
    Present(T),
}

struct Shared<T> {
    synced: bool,
    map: HashMap<String, T>,
}

/// A copy of every key under one prefix, each kept as the summary `T` that `summarize` makes of
/// its value. Stops when dropped.
pub struct Mirror<T> {
    shared: Arc<RwLock<Shared<T>>>,
    /// The store revision the copy reflects (of the listing, then of each event applied).
    revision: tokio::sync::watch::Receiver<i64>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + Send + Sync + 'static> Mirror<T> {
    /// List `prefix` and follow it, re-listing whenever the watch ends (e.g. after compaction).
    /// Must be called inside a Tokio runtime.
    pub fn start(store: DynStore, prefix: &str, summarize: fn(&KeyValue) -> T) -> Self {
        let shared = Arc::new(RwLock::new(Shared { synced: false, map: HashMap::new() }));
        let (seen, revision) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(follow(store, prefix.to_string(), summarize, shared.clone(), seen));
        Self { shared, revision, task }
    }

    /// Wait (at most `within`) until the copy reflects the store at `revision` or later: every
    /// write under the prefix up to that revision is in it. Returns whether it got there.
    pub async fn caught_up(&self, revision: i64, within: Duration) -> bool {
        let mut seen = self.revision.clone();
        tokio::time::timeout(within, seen.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    pub fn get(&self, key: &str) -> Seen<T> {
        let s = self.shared.read().expect("mirror");
        if !s.synced {
            return Seen::Unknown;
        }
        s.map.get(key).cloned().map_or(Seen::Absent, Seen::Present)
    }

    /// Whether the first listing has arrived and the watch is running.
    pub fn synced(&self) -> bool {
        self.shared.read().expect("mirror").synced
    }
}

impl<T> Drop for Mirror<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow<T>(store: DynStore, prefix: String, summarize: fn(&KeyValue) -> T, shared: Arc<RwLock<Shared<T>>>, seen: tokio::sync::watch::Sender<i64>) {
    loop {
        match store.list_and_follow(&prefix).await {
            Ok((page, mut w)) => {
                {
                    let mut s = shared.write().expect("mirror");
                    s.map = page.items.iter().map(|kv| (kv.key.clone(), summarize(kv))).collect();
                    s.synced = true;
                }
                seen.send_replace(page.revision);
                while let Some(ev) = w.next().await {
                    let revision = ev.kv.mod_revision;
                    {
                        let mut s = shared.write().expect("mirror");
                        match ev.kind {
                            EventKind::Put => {
                                let v = summarize(&ev.kv);
                                s.map.insert(ev.kv.key, v);
                            }
                            EventKind::Delete => {
                                s.map.remove(&ev.kv.key);
                            }
                        }
                    }
                    seen.send_replace(revision);
                }
                shared.write().expect("mirror").synced = false;
                tracing::debug!(%prefix, "mirror watch ended; re-listing");
            }
            Err(e) => tracing::warn!(%prefix, error = %e, "mirror listing failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yard_store::{Op, RedbStore};

    async fn until<F: Fn() -> bool>(f: F) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("mirror did not catch up");
    }

    #[tokio::test]
    async fn follows_puts_and_deletes_under_its_prefix_only() {
        let dir = std::env::temp_dir().join(format!("yard-mirror-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store: DynStore = Arc::new(RedbStore::open(&dir.join("s.redb")).unwrap());
        store.write(Op::Create { key: "/p/a".into(), value: "1".into() }).await.unwrap();
        let m = Mirror::start(store.clone(), "/p/", |kv| kv.value.len());
        until(|| m.synced()).await;
        assert_eq!(m.get("/p/a"), Seen::Present(1));
        assert_eq!(m.get("/p/b"), Seen::Absent);
        store.write(Op::Create { key: "/p/b".into(), value: "22".into() }).await.unwrap();
        store.write(Op::Create { key: "/q/c".into(), value: "333".into() }).await.unwrap();
        store.write(Op::Delete { key: "/p/a".into(), expect: None }).await.unwrap();
        until(|| m.get("/p/a") == Seen::Absent).await;
        assert_eq!(m.get("/p/b"), Seen::Present(2));
        assert_eq!(m.get("/q/c"), Seen::Absent, "outside the prefix");
        // Waiting for a revision: one it has applied answers at once, and then the key written
        // there is in the copy; a revision no write under the prefix has reached times out.
        let kv = store.write(Op::Create { key: "/p/d".into(), value: "4444".into() }).await.unwrap();
        assert!(m.caught_up(kv.mod_revision, Duration::from_secs(5)).await);
        assert_eq!(m.get("/p/d"), Seen::Present(4));
        assert!(!m.caught_up(kv.mod_revision + 1, Duration::from_millis(100)).await);
        drop(m);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
