//! Keeps an [`Index`] current from the API server with kube-rs watchers on Services and
//! EndpointSlices.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use crate::index::{endpoint_slice_key, service_key, Index};
use crate::pods::PodIps;
use crate::Error;

/// Applies events of one kind. A (re)list is applied object by object as it streams in (no
/// buffering of whole lists); objects not seen in it are removed at its end.
struct Kind {
    seen: HashSet<(String, String)>,
    listed: bool,
}

impl Kind {
    fn new() -> Self {
        Kind { seen: HashSet::new(), listed: false }
    }

    fn on<K>(
        &mut self,
        ev: Event<K>,
        key: impl Fn(&K) -> Option<(String, String)>,
        apply: impl Fn(&K),
        delete: impl Fn(&K),
        retain: impl Fn(&HashSet<(String, String)>),
    ) {
        match ev {
            Event::Apply(o) => apply(&o),
            Event::Delete(o) => delete(&o),
            Event::Init => self.seen.clear(),
            Event::InitApply(o) => {
                if let Some(k) = key(&o) {
                    self.seen.insert(k);
                }
                apply(&o);
            }
            Event::InitDone => {
                retain(&self.seen);
                self.seen = HashSet::new();
                self.listed = true;
            }
        }
    }
}

/// Watches Services and EndpointSlices in every namespace through `client` and keeps `index`
/// current; marks it synced once both initial lists went in. Runs until the streams end (never,
/// in practice: errors are retried with backoff).
pub async fn watch(client: Client, index: Arc<Index>) -> Result<(), Error> {
    let services =
        watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff().boxed();
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    enum Ev {
        Svc(Box<Result<Event<Service>, watcher::Error>>),
        Eps(Box<Result<Event<EndpointSlice>, watcher::Error>>),
    }
    let mut merged =
        futures::stream::select(services.map(|e| Ev::Svc(Box::new(e))), slices.map(|e| Ev::Eps(Box::new(e))));
    let mut svc = Kind::new();
    let mut eps = Kind::new();
    while let Some(ev) = merged.next().await {
        match ev {
            Ev::Svc(e) => match *e {
                Ok(e) => svc.on(
                    e,
                    service_key,
                    |o| index.upsert_service(o),
                    |o| index.delete_service(o),
                    |keep| index.retain_services(keep),
                ),
                Err(e) => tracing::warn!("service watch: {e}"),
            },
            Ev::Eps(e) => match *e {
                Ok(e) => eps.on(
                    e,
                    endpoint_slice_key,
                    |o| index.upsert_endpoint_slice(o),
                    |o| index.delete_endpoint_slice(o),
                    |keep| index.retain_endpoint_slices(keep),
                ),
                Err(e) => tracing::warn!("endpointslice watch: {e}"),
            },
        }
        for (ns, name) in index.take_refetch() {
            refetch_slices(&client, &index, &ns, &name).await;
        }
        if svc.listed && eps.listed && !index.is_synced() {
            tracing::info!("dns index synced: {} services", index.service_count());
            index.set_synced(true);
            release_free_heap();
        }
    }
    Err(Error::WatchEnded)
}

/// Reads the EndpointSlices of one Service again (it turned headless after the index had
/// dropped their endpoints). Read inline, before the next watch event: the list is at least as
/// new as everything applied so far. After three failed reads it is asked for again on the next event.
async fn refetch_slices(client: &Client, index: &Index, ns: &str, name: &str) {
    let api = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    let lp = kube::api::ListParams::default().labels(&format!("{}={name}", crate::index::SERVICE_NAME_LABEL));
    for attempt in 0..3 {
        match api.list(&lp).await {
            Ok(list) => {
                for s in &list.items {
                    index.upsert_endpoint_slice(s);
                }
                return;
            }
            Err(e) => {
                tracing::warn!("endpointslices of {ns}/{name} (attempt {}): {e}", attempt + 1);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    index.request_refetch(ns, name);
}

/// Watches Pods in every namespace and keeps `pods` (addresses -> namespace, for autopath)
/// current. Runs until dropped; errors are retried with backoff.
pub async fn watch_pods(client: Client, pods: Arc<PodIps>) {
    let mut stream = watcher::watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => pods.upsert_pod(&p),
            Ok(Event::Delete(p)) => pods.delete_pod(&p),
            Ok(Event::Init) => pods.relist_start(),
            Ok(Event::InitDone) => {
                pods.relist_done();
                release_free_heap();
                tracing::debug!("dns pod index: {} addresses", pods.len());
            }
            Err(e) => tracing::warn!("pod watch: {e}"),
        }
    }
}

static HEAP_RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets how to give freed heap pages back to the system after a first list (the binary knows
/// its allocator; without a hook, glibc's `malloc_trim`).
pub fn set_heap_release(f: fn()) {
    let _ = HEAP_RELEASE.set(f);
}

/// A first list decodes every object once; the allocator keeps the freed pages of that burst.
/// Give them back, so the resident size is the index, not the list it was built from.
fn release_free_heap() {
    if let Some(f) = HEAP_RELEASE.get() {
        f();
        return;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}
