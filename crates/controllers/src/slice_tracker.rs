//! The EndpointSlice tracker both slice controllers share (upstream's endpointSliceTracker): the
//! slices each owner (a Service, or an Endpoints object being mirrored) manages, fed by the slice
//! informer and by the controller's own writes, so a sync that follows a write never works from a
//! stale copy, and the controller's own writes do not trigger another sync while others' do.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::util::{self, key};

#[derive(Default)]
struct State {
    by_owner: HashMap<String, HashMap<String, Arc<EndpointSlice>>>,
    /// `ns/name` of slices this controller deleted whose delete event has not come yet.
    tombstones: HashSet<String>,
}

pub struct SliceTracker {
    /// The owner key of a slice this controller manages (`None`: not ours).
    owner_key: fn(&EndpointSlice) -> Option<String>,
    state: RwLock<State>,
}

fn full_name(s: &EndpointSlice) -> String {
    key(s.metadata.namespace.as_deref().unwrap_or_default(), s.metadata.name.as_deref().unwrap_or_default())
}

fn name_of(s: &EndpointSlice) -> &str {
    s.metadata.name.as_deref().unwrap_or_default()
}

impl SliceTracker {
    pub fn new(owner_key: fn(&EndpointSlice) -> Option<String>) -> Self {
        SliceTracker { owner_key, state: RwLock::new(State::default()) }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// An informer event; returns the owners to sync. A slice relabelled away from an owner leaves
    /// it (that owner resyncs); an update that only echoes our own write, or is older than what we
    /// hold, syncs nothing; a delete we made ourselves (tombstoned) syncs nothing.
    pub fn observe(&self, old: Option<&Arc<EndpointSlice>>, new: Option<&Arc<EndpointSlice>>) -> Vec<String> {
        let mut enqueue = Vec::new();
        let mut st = self.write();
        let ok = old.and_then(|o| (self.owner_key)(o));
        let nk = new.and_then(|n| (self.owner_key)(n));
        // (A delete is handled below: one this controller made itself must not resync.)
        if let (Some(o), Some(ok), Some(_)) = (old, ok.as_ref(), new) {
            if nk.as_ref() != Some(ok) {
                if let Some(m) = st.by_owner.get_mut(ok) {
                    m.remove(name_of(o));
                }
                enqueue.push(ok.clone());
            }
        }
        match (new, nk) {
            (Some(n), Some(nk)) => {
                if !st.tombstones.contains(&full_name(n)) {
                    let m = st.by_owner.entry(nk.clone()).or_default();
                    let cur = m.get(name_of(n));
                    let ours = cur.is_some_and(|c| c.metadata.resource_version == n.metadata.resource_version);
                    let stale = cur.is_some_and(|c| {
                        util::rv_older(n.metadata.resource_version.as_ref(), c.metadata.resource_version.as_ref())
                    });
                    if !stale {
                        m.insert(name_of(n).to_string(), n.clone());
                    }
                    if !ours && !stale {
                        enqueue.push(nk);
                    }
                }
            }
            (None, _) => {
                if let Some(o) = old {
                    let ours = st.tombstones.remove(&full_name(o));
                    if let Some(ok) = ok {
                        if let Some(m) = st.by_owner.get_mut(&ok) {
                            m.remove(name_of(o));
                            if m.is_empty() {
                                st.by_owner.remove(&ok);
                            }
                        }
                        if !ours {
                            enqueue.push(ok);
                        }
                    }
                }
            }
            (Some(_), None) => {}
        }
        enqueue
    }

    /// The slices `owner` manages now.
    pub fn existing(&self, owner: &str) -> Vec<Arc<EndpointSlice>> {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        st.by_owner.get(owner).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Our own create or update of `s` (unless we already hold a newer copy).
    pub fn remember(&self, owner: &str, s: EndpointSlice) {
        let mut st = self.write();
        let m = st.by_owner.entry(owner.to_string()).or_default();
        let stale = m.get(name_of(&s)).is_some_and(|c| {
            util::rv_older(s.metadata.resource_version.as_ref(), c.metadata.resource_version.as_ref())
        });
        if !stale {
            m.insert(name_of(&s).to_string(), Arc::new(s));
        }
    }

    /// Our own delete of `s`: gone now, and its delete event is ours.
    pub fn forget(&self, owner: &str, s: &EndpointSlice) {
        let mut st = self.write();
        if let Some(m) = st.by_owner.get_mut(owner) {
            m.remove(name_of(s));
            if m.is_empty() {
                st.by_owner.remove(owner);
            }
        }
        st.tombstones.insert(full_name(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn owner(s: &EndpointSlice) -> Option<String> {
        let o = s.metadata.labels.as_ref()?.get("owner")?;
        Some(key(s.metadata.namespace.as_deref().unwrap_or_default(), o))
    }

    fn slice(name: &str, owner: Option<&str>, rv: &str) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                labels: owner.map(|o| [("owner".to_string(), o.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ..Default::default()
        })
    }

    #[test]
    fn own_writes_do_not_resync_others_do() {
        let t = SliceTracker::new(owner);
        // Someone else's create: sync the owner.
        assert_eq!(t.observe(None, Some(&slice("a", Some("svc"), "5"))), vec!["ns/svc"]);
        // Our own update, then its echo from the informer: nothing to do.
        t.remember("ns/svc", (*slice("a", Some("svc"), "7")).clone());
        assert!(t.observe(None, Some(&slice("a", Some("svc"), "7"))).is_empty());
        // An older copy arriving late is ignored and does not replace ours.
        assert!(t.observe(None, Some(&slice("a", Some("svc"), "6"))).is_empty());
        assert_eq!(t.existing("ns/svc")[0].metadata.resource_version.as_deref(), Some("7"));
        // Relabelled to another owner: both resync.
        let moved = t.observe(Some(&slice("a", Some("svc"), "7")), Some(&slice("a", Some("other"), "8")));
        assert_eq!(moved, vec!["ns/svc", "ns/other"]);
        assert!(t.existing("ns/svc").is_empty());
        // Our own delete: its event is ours; a delete by someone else resyncs.
        t.forget("ns/other", &slice("a", Some("other"), "8"));
        assert!(t.observe(Some(&slice("a", Some("other"), "8")), None).is_empty());
        t.observe(None, Some(&slice("b", Some("other"), "9")));
        assert_eq!(t.observe(Some(&slice("b", Some("other"), "9")), None), vec!["ns/other"]);
        // Slices that are not ours are not tracked.
        assert!(t.observe(None, Some(&slice("c", None, "10"))).is_empty());
    }
}
