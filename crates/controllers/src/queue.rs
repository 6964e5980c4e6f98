//! De-duplicating work queue with the client-go semantics: a key is queued at most once, a key being
//! processed is never handed to a second worker, and a key added while being processed is re-queued
//! when the worker calls [`WorkQueue::done`]. Failed keys are retried with per-key exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl WorkQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut st = self.lock();
        if st.dirty.contains(&key) {
            return;
        }
        st.dirty.insert(key.clone());
        if st.processing.contains(&key) {
            return;
        }
        st.queue.push_back(key);
        drop(st);
        self.notify.notify_one();
    }

    pub fn add_after(self: &Arc<Self>, key: impl Into<String>, after: Duration) {
        let key = key.into();
        if after.is_zero() {
            return self.add(key);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            q.add(key);
        });
    }

    /// Re-adds after 5 ms * 2^failures (capped at 60 s).
    pub fn add_rate_limited(self: &Arc<Self>, key: &str) {
        let n = {
            let mut st = self.lock();
            let n = st.failures.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = Duration::from_millis(5u64.saturating_mul(1u64 << n.min(14))).min(Duration::from_secs(60));
        self.add_after(key.to_string(), delay);
    }

    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    pub async fn get(&self) -> String {
        loop {
            let notified = self.notify.notified();
            {
                let mut st = self.lock();
                if let Some(k) = st.queue.pop_front() {
                    st.dirty.remove(&k);
                    st.processing.insert(k.clone());
                    let more = !st.queue.is_empty();
                    drop(st);
                    if more {
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &str) {
        let mut st = self.lock();
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.queue.push_back(key.to_string());
            drop(st);
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Spawns `n` workers running `f(key)` for each queued key; errors are logged and retried with backoff.
pub fn spawn_workers<F, Fut>(set: &mut JoinSet<()>, queue: Arc<WorkQueue>, n: usize, name: &'static str, f: F)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), crate::Error>> + Send + 'static,
{
    for _ in 0..n {
        let q = queue.clone();
        let f = f.clone();
        set.spawn(async move {
            loop {
                let key = q.get().await;
                match f(key.clone()).await {
                    Ok(()) => q.forget(&key),
                    Err(e) => {
                        // Conflicts come from a cache that is behind our own writes: normal, retried.
                        if matches!(&e, crate::Error::Kube(k) if crate::util::is_conflict(k)) {
                            tracing::debug!(controller = name, key = %key, error = %e, "conflict, retrying");
                        } else {
                            tracing::warn!(controller = name, key = %key, error = %e, "sync failed, retrying");
                        }
                        q.add_rate_limited(&key);
                    }
                }
                q.done(&key);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedup_and_requeue_while_processing() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.get().await;
        assert_eq!(k, "a");
        q.add("a"); // while processing: not handed out again until done
        assert_eq!(q.get().await, "b");
        assert_eq!(q.len(), 0);
        q.done("a");
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await, "a");
        q.done("a");
        q.done("b");
        assert!(q.is_empty());
    }
}
