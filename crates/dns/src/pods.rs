//! Pods by IP address, for server-side search-path completion ([`crate::Config::autopath`]):
//! which namespace the pod behind a query's source address lives in, for pods whose resolv.conf
//! search list starts with `<namespace>.svc.<zone> svc.<zone> <zone>` (DNS policy ClusterFirst
//! or ClusterFirstWithHostNet, not on the host network, not finished).
//!
//! Compact: addresses map to (namespace number, pod tag) pairs; namespaces are interned.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Copy, PartialEq)]
struct PodRef {
    ns: u32,
    /// Hash of namespace/name: a deleted pod only removes addresses it still holds.
    tag: u32,
}

#[derive(Debug, Default)]
struct Map {
    v4: FastMap<u32, PodRef>,
    v6: FastMap<u128, PodRef>,
}

impl Map {
    fn insert(&mut self, ip: IpAddr, r: PodRef) {
        match ip {
            IpAddr::V4(a) => self.v4.insert(a.to_bits(), r),
            IpAddr::V6(a) => self.v6.insert(a.to_bits(), r),
        };
    }

    fn remove(&mut self, ip: IpAddr, tag: u32) {
        match ip {
            IpAddr::V4(a) => {
                if self.v4.get(&a.to_bits()).is_some_and(|r| r.tag == tag) {
                    self.v4.remove(&a.to_bits());
                }
            }
            IpAddr::V6(a) => {
                if self.v6.get(&a.to_bits()).is_some_and(|r| r.tag == tag) {
                    self.v6.remove(&a.to_bits());
                }
            }
        }
    }

    fn get(&self, ip: IpAddr) -> Option<PodRef> {
        match ip {
            IpAddr::V4(a) => self.v4.get(&a.to_bits()).copied(),
            IpAddr::V6(a) => self.v6.get(&a.to_bits()).copied(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: Map,
    /// The map being filled by a (re)list, swapped in when it is complete.
    staging: Option<Map>,
    namespaces: Vec<Arc<str>>,
    ns_ids: FastMap<Arc<str>, u32>,
}

/// The pod address index.
#[derive(Debug, Default)]
pub struct PodIps {
    inner: RwLock<Inner>,
    tags: foldhash::fast::FixedState,
}

/// What the index needs of a Pod: namespace, tag, addresses, and whether it takes part.
fn summary(pod: &Pod, tags: &foldhash::fast::FixedState) -> Option<(String, u32, Vec<IpAddr>, bool)> {
    let ns = pod.metadata.namespace.as_deref()?.to_ascii_lowercase();
    let name = pod.metadata.name.as_deref()?;
    let tag = tags.hash_one((ns.as_str(), name)) as u32;
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let status = pod.status.as_ref();
    let finished = matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    let mut ips: Vec<IpAddr> =
        status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().filter_map(|p| p.ip.parse().ok()).collect();
    if let Some(ip) = status.and_then(|s| s.pod_ip.as_deref()).and_then(|s| s.parse().ok()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let eligible = !host_network && !finished && matches!(policy, "ClusterFirst" | "ClusterFirstWithHostNet");
    Some((ns, tag, ips, eligible))
}

impl Inner {
    fn ns_id(&mut self, ns: &str) -> u32 {
        if let Some(id) = self.ns_ids.get(ns) {
            return *id;
        }
        let ns: Arc<str> = ns.into();
        let id = self.namespaces.len() as u32;
        self.namespaces.push(ns.clone());
        self.ns_ids.insert(ns, id);
        id
    }
}

impl PodIps {
    /// Adds, updates or (when it no longer takes part) removes a Pod.
    pub fn upsert_pod(&self, pod: &Pod) {
        let Some((ns, tag, ips, eligible)) = summary(pod, &self.tags) else {
            return;
        };
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let id = inner.ns_id(&ns);
        let map = match inner.staging.as_mut() {
            Some(m) => m,
            None => &mut inner.map,
        };
        for ip in ips {
            if eligible {
                map.insert(ip, PodRef { ns: id, tag });
            } else {
                map.remove(ip, tag);
            }
        }
    }

    /// Removes a Pod's addresses.
    pub fn delete_pod(&self, pod: &Pod) {
        let Some((_, tag, ips, _)) = summary(pod, &self.tags) else {
            return;
        };
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for ip in ips {
            inner.map.remove(ip, tag);
        }
    }

    /// A (re)list starts: upserts go to a new map until [`PodIps::relist_done`].
    pub fn relist_start(&self) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).staging = Some(Map::default());
    }

    /// The (re)list is complete: its map replaces the old one.
    pub fn relist_done(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = inner.staging.take() {
            inner.map = m;
        }
    }

    /// The namespace of the pod at `ip`, if it takes part.
    pub fn namespace_of(&self, ip: IpAddr) -> Option<Arc<str>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let r = inner.map.get(ip)?;
        inner.namespaces.get(r.ns as usize).cloned()
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.map.v4.len() + inner.map.v6.len()
    }

    /// True when no address is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
