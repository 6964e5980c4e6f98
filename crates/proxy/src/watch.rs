//! The watch loop: kube-rs watchers on Services, EndpointSlices and this Node keep an index and
//! the desired state up to date (recomputing only the Services an event touches), publishing the
//! state once a burst of events has been absorbed; the sync loop applies published states to the
//! backend, at most once per minimum sync period, with a periodic consistency check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::health::{HealthChecks, Metrics};
use crate::model::{service_ports, DesiredState, SERVICE_NAME_LABEL};
use crate::{Backend, Error};

type Key = (String, String);

/// Annotation carrying the time of the change that produced an EndpointSlice.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Services and EndpointSlices by Service, and the desired state derived from them.
#[derive(Default)]
pub struct Index {
    node_name: String,
    services: HashMap<Key, Service>,
    /// Service key -> slice name -> slice.
    slices: HashMap<Key, BTreeMap<String, EndpointSlice>>,
    /// (namespace, slice name) -> owning Service key.
    slice_owner: HashMap<Key, Key>,
    pub state: DesiredState,
    /// Trigger times of changes not yet programmed.
    pub pending_triggers: Vec<jiff::Timestamp>,
}

fn key_of(meta: &kube::api::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_else(|| "default".into()), meta.name.clone().unwrap_or_default())
}

impl Index {
    pub fn new(node_name: &str) -> Self {
        Index { node_name: node_name.to_string(), ..Default::default() }
    }

    fn recompute(&mut self, k: &Key) {
        match self.services.get(k) {
            Some(svc) => {
                let slices: Vec<&EndpointSlice> = self.slices.get(k).map(|m| m.values().collect()).unwrap_or_default();
                let ports = service_ports(svc, &slices, &self.node_name);
                self.state.replace_service(&k.0, &k.1, ports);
            }
            None => self.state.remove_service(&k.0, &k.1),
        }
    }

    pub fn apply_service(&mut self, svc: Service) {
        let k = key_of(&svc.metadata);
        self.services.insert(k.clone(), svc);
        self.recompute(&k);
    }

    pub fn delete_service(&mut self, k: &Key) {
        self.services.remove(k);
        self.recompute(k);
    }

    pub fn apply_slice(&mut self, s: EndpointSlice) {
        let sk = key_of(&s.metadata);
        if let Some(t) = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            self.pending_triggers.push(t);
        }
        let owner =
            s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(|n| (sk.0.clone(), n.clone()));
        if let Some(prev) = self.slice_owner.get(&sk).cloned() {
            if Some(&prev) != owner.as_ref() {
                self.delete_slice(&sk);
            }
        }
        let Some(owner) = owner else { return };
        self.slice_owner.insert(sk.clone(), owner.clone());
        self.slices.entry(owner.clone()).or_default().insert(sk.1.clone(), s);
        self.recompute(&owner);
    }

    pub fn delete_slice(&mut self, sk: &Key) {
        if let Some(owner) = self.slice_owner.remove(sk) {
            if let Some(m) = self.slices.get_mut(&owner) {
                m.remove(&sk.1);
                if m.is_empty() {
                    self.slices.remove(&owner);
                }
            }
            self.recompute(&owner);
        }
    }

    fn service_keys(&self) -> BTreeSet<Key> {
        self.services.keys().cloned().collect()
    }
    fn slice_keys(&self) -> BTreeSet<Key> {
        self.slice_owner.keys().cloned().collect()
    }
}

/// Run the watchers until `shutdown`, publishing desired states on `tx` once both Services and
/// EndpointSlices have been listed.
pub async fn watch_loop(
    client: Client,
    node_name: String,
    tx: watch::Sender<Option<Arc<DesiredState>>>,
    triggers: Arc<Mutex<Vec<jiff::Timestamp>>>,
    shutdown: impl Future<Output = ()>,
) {
    let cfg = watcher::Config::default();
    let mut services = watcher::watcher(Api::<Service>::all(client.clone()), cfg.clone()).default_backoff().boxed();
    let mut slices = watcher::watcher(Api::<EndpointSlice>::all(client.clone()), cfg.clone()).default_backoff().boxed();
    let node_cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let mut nodes = watcher::watcher(Api::<Node>::all(client), node_cfg).default_backoff().boxed();
    let mut idx = Index::new(&node_name);
    let (mut svc_synced, mut slice_synced) = (false, false);
    let mut svc_seen: Option<BTreeSet<Key>> = None;
    let mut slice_seen: Option<BTreeSet<Key>> = None;
    let mut dirty = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return,
            ev = services.next() => match ev {
                Some(Ok(Event::Apply(s))) => { idx.apply_service(s); dirty = true; }
                Some(Ok(Event::Delete(s))) => { idx.delete_service(&key_of(&s.metadata)); dirty = true; }
                Some(Ok(Event::Init)) => svc_seen = Some(BTreeSet::new()),
                Some(Ok(Event::InitApply(s))) => {
                    if let Some(seen) = svc_seen.as_mut() { seen.insert(key_of(&s.metadata)); }
                    idx.apply_service(s);
                }
                Some(Ok(Event::InitDone)) => {
                    if let Some(seen) = svc_seen.take() {
                        for k in idx.service_keys().difference(&seen) { idx.delete_service(k); }
                    }
                    svc_synced = true; dirty = true;
                }
                Some(Err(e)) => tracing::warn!("proxy: service watch: {e}"),
                None => return,
            },
            ev = slices.next() => match ev {
                Some(Ok(Event::Apply(s))) => { idx.apply_slice(s); dirty = true; }
                Some(Ok(Event::Delete(s))) => { idx.delete_slice(&key_of(&s.metadata)); dirty = true; }
                Some(Ok(Event::Init)) => slice_seen = Some(BTreeSet::new()),
                Some(Ok(Event::InitApply(s))) => {
                    if let Some(seen) = slice_seen.as_mut() { seen.insert(key_of(&s.metadata)); }
                    idx.apply_slice(s);
                }
                Some(Ok(Event::InitDone)) => {
                    if let Some(seen) = slice_seen.take() {
                        for k in idx.slice_keys().difference(&seen) { idx.delete_slice(k); }
                    }
                    // Trigger times of the initial list predate this proxy: not programming latency.
                    idx.pending_triggers.clear();
                    slice_synced = true; dirty = true;
                }
                Some(Err(e)) => tracing::warn!("proxy: endpointslice watch: {e}"),
                None => return,
            },
            ev = nodes.next() => match ev {
                Some(Ok(Event::Apply(n))) | Some(Ok(Event::InitApply(n))) => {
                    tracing::debug!("proxy: node {} addresses {:?}", node_name,
                        n.status.as_ref().and_then(|s| s.addresses.as_ref()).map(|a| a.iter().map(|a| a.address.clone()).collect::<Vec<_>>()));
                }
                Some(Err(e)) => tracing::debug!("proxy: node watch: {e}"),
                Some(Ok(_)) => {}
                None => return,
            },
            _ = std::future::ready(()), if dirty && svc_synced && slice_synced => {
                dirty = false;
                triggers.lock().unwrap().append(&mut idx.pending_triggers);
                tx.send_replace(Some(Arc::new(idx.state.clone())));
            }
        }
    }
}

/// Apply published states to `backend` until `shutdown`, then clean up everything it programmed.
#[allow(clippy::too_many_arguments)]
pub async fn sync_loop(
    mut backend: Box<dyn Backend>,
    mut rx: watch::Receiver<Option<Arc<DesiredState>>>,
    triggers: Arc<Mutex<Vec<jiff::Timestamp>>>,
    mut health: HealthChecks,
    metrics: Arc<Metrics>,
    min_sync_period: Duration,
    check_period: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    let mut check = tokio::time::interval(check_period);
    check.tick().await;
    let mut last: Option<Arc<DesiredState>> = None;
    let mut last_sync = Instant::now() - min_sync_period;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let mut force = false;
        tokio::select! {
            _ = &mut shutdown => break,
            r = rx.changed() => { if r.is_err() { break; } }
            _ = check.tick() => {
                let (b, ok) = tokio::task::spawn_blocking(move || { let ok = backend.check(); (backend, ok) }).await
                    .map_err(|source| Error::Task { what: "sync", source })?;
                backend = b;
                match ok {
                    Ok(true) => continue,
                    Ok(false) => { tracing::warn!("proxy: programmed state vanished, resyncing"); force = true; }
                    Err(e) => { tracing::warn!("proxy: consistency check: {e}"); continue; }
                }
            }
            _ = async { match retry_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                retry_at = None; force = true;
            }
        }
        let wait = min_sync_period.saturating_sub(last_sync.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let Some(state) = rx.borrow_and_update().clone() else { continue };
        let pending = std::mem::take(&mut *triggers.lock().unwrap());
        if !force && last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &state)) {
            continue;
        }
        last_sync = Instant::now();
        let st = state.clone();
        let (b, res, took) = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let r = backend.sync(&st);
            (backend, r, t.elapsed())
        })
        .await
        .map_err(|source| Error::Task { what: "sync", source })?;
        backend = b;
        match res {
            Ok(n) => {
                tracing::debug!("proxy: synced {n} service ports in {took:?}");
                metrics.observe_sync(took);
                let now = jiff::Timestamp::now();
                for t in &pending {
                    if let Ok(d) = now.duration_since(*t).try_into() {
                        metrics.observe_programming(d);
                    }
                }
                health.update(&state);
                last = Some(state);
            }
            Err(e) => {
                tracing::warn!("proxy: sync failed: {e}");
                metrics.sync_failed();
                retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }
    health.stop();
    tokio::task::spawn_blocking(move || backend.cleanup())
        .await
        .map_err(|source| Error::Task { what: "cleanup", source })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn index_tracks_services_and_slices() {
        let mut idx = Index::new("n1");
        let svc: Service = serde_json::from_value(json!({"metadata": {"namespace": "d", "name": "a"},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}}))
        .unwrap();
        let sl = |name: &str, ip: &str| -> EndpointSlice {
            serde_json::from_value(json!({"metadata": {"namespace": "d", "name": name, "labels": {SERVICE_NAME_LABEL: "a"},
                "annotations": {TRIGGER_TIME_ANNOTATION: "2026-01-01T00:00:00Z"}},
                "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": [{"addresses": [ip], "nodeName": "n1"}]})).unwrap()
        };
        // Slice before its Service: kept and used once the Service arrives.
        idx.apply_slice(sl("a-1", "10.244.0.1"));
        assert!(idx.state.services.is_empty());
        idx.apply_service(svc.clone());
        idx.apply_slice(sl("a-2", "10.244.0.2"));
        let sp = idx.state.services.values().next().unwrap();
        assert_eq!(sp.endpoints.len(), 2);
        assert!(sp.endpoints.iter().all(|e| e.local));
        assert_eq!(idx.pending_triggers.len(), 2);
        idx.delete_slice(&("d".into(), "a-1".into()));
        assert_eq!(idx.state.services.values().next().unwrap().endpoints.len(), 1);
        // Relabelled slice moves away from the Service.
        let mut moved = sl("a-2", "10.244.0.2");
        moved.metadata.labels.as_mut().unwrap().insert(SERVICE_NAME_LABEL.into(), "b".into());
        idx.apply_slice(moved);
        assert!(idx.state.services.values().next().unwrap().endpoints.is_empty());
        idx.delete_service(&("d".into(), "a".into()));
        assert!(idx.state.services.is_empty());
    }
}
