//! Informers: one watcher per resource type feeding an in-memory cache (indexed by namespace) and
//! synchronous change handlers `(old, new)` that enqueue work. Handlers run on the informer task, in
//! event order, after the cache has been updated.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// Objects by namespace ("" for cluster-scoped) then name.
pub struct Cache<K> {
    map: RwLock<HashMap<String, HashMap<String, Arc<K>>>>,
}

impl<K: Resource> Default for Cache<K> {
    fn default() -> Self {
        Cache { map: RwLock::new(HashMap::new()) }
    }
}

fn ns_name<K: Resource>(obj: &K) -> (String, String) {
    let m = obj.meta();
    (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
}

impl<K: Resource> Cache<K> {
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(ns)?.get(name).cloned()
    }

    pub fn list_ns(&self, ns: &str) -> Vec<Arc<K>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ns)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).values().flat_map(|m| m.values().cloned()).collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).values().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, obj: Arc<K>) -> Option<Arc<K>> {
        let (ns, name) = ns_name(obj.as_ref());
        self.map.write().unwrap_or_else(|e| e.into_inner()).entry(ns).or_default().insert(name, obj)
    }

    fn remove(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        let inner = m.get_mut(ns)?;
        let old = inner.remove(name);
        if inner.is_empty() {
            m.remove(ns);
        }
        old
    }

    /// Inserts directly (used by tests and by controllers that want to build a cache by hand).
    pub fn apply(&self, obj: K) {
        self.insert(Arc::new(obj));
    }
}

pub type Handler<K> = Box<dyn Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync>;
/// Trims an object before it is cached and handed to handlers (client-go's SetTransform): what no
/// consumer reads need not be kept for every object of a large cluster.
pub type Transform<K> = Box<dyn Fn(&mut K) + Send + Sync>;

pub struct Informer<K: Resource> {
    api: Api<K>,
    cache: Arc<Cache<K>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
    name: String,
    transform: std::sync::OnceLock<Transform<K>>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new(api: Api<K>, name: impl Into<String>) -> Arc<Self> {
        Arc::new(Informer {
            api,
            cache: Arc::new(Cache::default()),
            handlers: RwLock::new(Vec::new()),
            synced: tokio::sync::watch::channel(false).0,
            name: name.into(),
            transform: std::sync::OnceLock::new(),
        })
    }

    /// Sets the transform applied to every received object (before `run`; only the first call counts).
    pub fn set_transform(&self, f: impl Fn(&mut K) + Send + Sync + 'static) {
        let _ = self.transform.set(Box::new(f));
    }

    fn trim(&self, mut obj: K) -> K {
        if let Some(f) = self.transform.get() {
            f(&mut obj);
        }
        obj
    }

    pub fn cache(&self) -> Arc<Cache<K>> {
        self.cache.clone()
    }

    pub fn add_handler(&self, h: impl Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync + 'static) {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).push(Box::new(h));
    }

    /// Resolves once the first full list has been loaded into the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    fn notify(&self, old: Option<&Arc<K>>, new: Option<&Arc<K>>) {
        for h in self.handlers.read().unwrap_or_else(|e| e.into_inner()).iter() {
            h(old, new);
        }
    }

    /// Runs the watch loop forever (re-lists with backoff on errors).
    pub async fn run(self: Arc<Self>) {
        let stream = watcher::watcher(self.api.clone(), watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut init: Option<HashMap<(String, String), Arc<K>>> = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Apply(obj)) => {
                    let new = Arc::new(self.trim(obj));
                    let old = self.cache.insert(new.clone());
                    self.notify(old.as_ref(), Some(&new));
                }
                Ok(Event::Delete(obj)) => {
                    let (ns, name) = ns_name(&obj);
                    let old = self.cache.remove(&ns, &name).unwrap_or_else(|| Arc::new(self.trim(obj)));
                    self.notify(Some(&old), None);
                }
                Ok(Event::Init) => init = Some(HashMap::new()),
                Ok(Event::InitApply(obj)) => {
                    let k = ns_name(&obj);
                    init.get_or_insert_with(HashMap::new).insert(k, Arc::new(self.trim(obj)));
                }
                Ok(Event::InitDone) => {
                    let listed = init.take().unwrap_or_default();
                    // Deletions first: objects we had that the fresh list no longer holds.
                    for old in self.cache.list() {
                        let k = ns_name(old.as_ref());
                        if !listed.contains_key(&k) {
                            self.cache.remove(&k.0, &k.1);
                            self.notify(Some(&old), None);
                        }
                    }
                    for (_, new) in listed {
                        let old = self.cache.insert(new.clone());
                        let same = old.as_ref().is_some_and(|o| {
                            o.meta().resource_version.is_some()
                                && o.meta().resource_version == new.meta().resource_version
                        });
                        if !same {
                            self.notify(old.as_ref(), Some(&new));
                        }
                    }
                    self.synced.send_replace(true);
                    tracing::debug!(informer = %self.name, objects = self.cache.len(), "informer synced");
                }
                Err(e) => tracing::warn!(informer = %self.name, error = %e, "watch error"),
            }
        }
    }
}
