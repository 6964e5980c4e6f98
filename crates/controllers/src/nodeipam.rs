//! Node IPAM: gives every Node without `spec.podCIDR` a unique subnet (/24 for IPv4, /64 for IPv6) of
//! the cluster CIDR. The used set is the Node list itself (rebuilt from the informer on start) plus
//! allocations in flight; one worker so two nodes never race for the same subnet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::events::Recorder;
use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;
use crate::util;

pub fn node_mask(cidr: &IpNet) -> u8 {
    match cidr {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 64,
    }
}

/// First subnet of `cidr` with prefix `mask` not in `used`.
pub fn next_free(cidr: &IpNet, mask: u8, used: &[IpNet]) -> Option<IpNet> {
    let mask = mask.max(cidr.prefix_len());
    cidr.subnets(mask).ok()?.find(|s| !used.iter().any(|u| u.contains(&s.network()) || s.contains(&u.network())))
}

fn node_cidrs(n: &Node) -> Vec<IpNet> {
    let Some(spec) = n.spec.as_ref() else {
        return vec![];
    };
    let mut v: Vec<IpNet> = spec.pod_cidrs.iter().flatten().filter_map(|c| c.parse().ok()).collect();
    if let Some(c) = spec.pod_cidr.as_ref().and_then(|c| c.parse().ok()) {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

pub struct NodeIpam {
    client: Client,
    nodes: Arc<Cache<Node>>,
    cidr: IpNet,
    mask: u8,
    pub queue: Arc<WorkQueue>,
    in_flight: Mutex<HashMap<String, IpNet>>,
    recorder: Recorder,
}

impl NodeIpam {
    pub fn new(client: Client, nodes: Arc<Cache<Node>>, cidr: IpNet) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "cidrAllocator");
        Arc::new(NodeIpam {
            client,
            nodes,
            mask: node_mask(&cidr),
            cidr,
            queue: WorkQueue::new(),
            in_flight: Mutex::new(HashMap::new()),
            recorder,
        })
    }

    pub fn attach(self: &Arc<Self>, nodes: &Informer<Node>) {
        let me = self.clone();
        nodes.add_handler(move |_old, new| {
            if let Some(n) = new {
                if node_cidrs(n).is_empty() {
                    me.queue.add(n.metadata.name.clone().unwrap_or_default());
                } else {
                    me.in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(n.metadata.name.as_deref().unwrap_or_default());
                }
            }
        });
    }

    pub async fn sync(self: Arc<Self>, name: String) -> Result<(), crate::Error> {
        let Some(node) = self.nodes.get("", &name) else {
            return Ok(());
        };
        if !node_cidrs(&node).is_empty() {
            return Ok(());
        }
        let cidr = {
            let mut inflight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&name) {
                Some(c) => Some(*c),
                None => {
                    let mut used: Vec<IpNet> = self.nodes.list().iter().flat_map(|n| node_cidrs(n)).collect();
                    used.extend(inflight.values().copied());
                    let c = next_free(&self.cidr, self.mask, &used);
                    if let Some(c) = c {
                        inflight.insert(name.clone(), c);
                    }
                    c
                }
            }
        };
        let Some(cidr) = cidr else {
            self.recorder.normal(
                util::object_ref(node.as_ref()),
                "CIDRNotAvailable",
                format!("Node {name} status is now: CIDRNotAvailable"),
            );
            return Err(crate::Error::Invalid(format!("no free /{} left in {}", self.mask, self.cidr)));
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(node = %name, cidr = %cidr, "assigned pod CIDR");
                Ok(())
            }
            Err(e) => {
                self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
                if util::is_not_found(&e) {
                    Ok(())
                } else {
                    Err(e.into())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_unique_subnets() {
        let cidr: IpNet = "10.244.0.0/16".parse().unwrap();
        let mut used = vec![];
        for i in 0..3 {
            let c = next_free(&cidr, 24, &used).unwrap();
            assert_eq!(c.to_string(), format!("10.244.{i}.0/24"));
            used.push(c);
        }
        used.remove(1);
        assert_eq!(next_free(&cidr, 24, &used).unwrap().to_string(), "10.244.1.0/24");
        let small: IpNet = "10.0.0.0/23".parse().unwrap();
        let used: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap(), "10.0.1.0/24".parse().unwrap()];
        assert_eq!(next_free(&small, 24, &used), None);
        let v6: IpNet = "fd00:10:244::/56".parse().unwrap();
        assert_eq!(next_free(&v6, 64, &[]).unwrap().to_string(), "fd00:10:244::/64");
    }
}
