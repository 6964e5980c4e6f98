//! Watch-fed copies of small store prefixes (namespaces) that the write path
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
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + Send + Sync + 'static> Mirror<T> {
    /// List `prefix` and follow it, re-listing whenever the watch ends (e.g. after compaction).
    /// Must be called inside a Tokio runtime.
    pub fn start(store: DynStore, prefix: &str, summarize: fn(&KeyValue) -> T) -> Self {
        let shared = Arc::new(RwLock::new(Shared { synced: false, map: HashMap::new() }));
        let task = tokio::spawn(follow(store, prefix.to_string(), summarize, shared.clone()));
        Self { shared, task }
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

async fn follow<T>(store: DynStore, prefix: String, summarize: fn(&KeyValue) -> T, shared: Arc<RwLock<Shared<T>>>) {
    loop {
        match store.list_and_follow(&prefix).await {
            Ok((page, mut w)) => {
                {
                    let mut s = shared.write().expect("mirror");
                    s.map = page.items.iter().map(|kv| (kv.key.clone(), summarize(kv))).collect();
                    s.synced = true;
                }
                while let Some(ev) = w.next().await {
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
    use crate::testutil::{until, TempStore};
    use yard_store::Op;

    #[tokio::test]
    async fn follows_puts_and_deletes_under_its_prefix_only() {
        let t = TempStore::new("mirror");
        let store = t.store.clone();
        store.write(Op::Create { key: "/p/a".into(), value: "1".into() }).await.unwrap();
        let m = Mirror::start(store.clone(), "/p/", |kv| kv.value.len());
        until("mirror did not list", || m.synced()).await;
        assert_eq!(m.get("/p/a"), Seen::Present(1));
        assert_eq!(m.get("/p/b"), Seen::Absent);
        store.write(Op::Create { key: "/p/b".into(), value: "22".into() }).await.unwrap();
        store.write(Op::Create { key: "/q/c".into(), value: "333".into() }).await.unwrap();
        store.write(Op::Delete { key: "/p/a".into(), expect: None }).await.unwrap();
        until("mirror did not catch up", || m.get("/p/a") == Seen::Absent).await;
        assert_eq!(m.get("/p/b"), Seen::Present(2));
        assert_eq!(m.get("/q/c"), Seen::Absent, "outside the prefix");
        drop(m);
    }
}
