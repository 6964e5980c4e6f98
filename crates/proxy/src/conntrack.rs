//! Conntrack hygiene for UDP services (kubernetes#19029, #48370, #59368): when an endpoint goes
//! away its NATed entries are deleted so the next datagram is load-balanced again; when a service
//! gets its first endpoint, the un-NATed entries left by earlier rejected datagrams are deleted.
//! Entries of live, NATed flows to endpoints that still exist are never touched, so a proxy restart
//! does not disturb them (#122740).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::exec::Netns;
use crate::model::{Family, Protocol, ServicePort};

/// One `conntrack -D` invocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deletion {
    pub args: Vec<String>,
}

fn base(family: Family) -> Vec<String> {
    let mut v = vec!["-D".to_string()];
    if family == Family::V6 {
        v.extend(["-f".into(), "ipv6".into()]);
    }
    v.extend(["-p".into(), "udp".into()]);
    v
}

fn reachable(sp: &ServicePort) -> BTreeSet<(IpAddr, u16)> {
    let mut s: BTreeSet<(IpAddr, u16)> = sp.cluster_endpoints().iter().map(|e| (e.ip, e.port)).collect();
    if sp.has_external() {
        s.extend(sp.external_endpoints().iter().map(|e| (e.ip, e.port)));
    }
    s
}

/// The deletions needed when a service port changes from `old` to `new`. `old == None` means the
/// previous state is unknown (first sync after start): only un-NATed entries are cleared then.
pub fn stale(old: Option<&ServicePort>, new: Option<&ServicePort>) -> Vec<Deletion> {
    let proto_udp = |sp: Option<&ServicePort>| sp.is_some_and(|s| s.protocol == Protocol::Udp);
    if !proto_udp(old) && !proto_udp(new) {
        return Vec::new();
    }
    let mut out = BTreeSet::new();
    let old_eps = old.map(reachable).unwrap_or_default();
    let new_eps = new.map(reachable).unwrap_or_default();
    // Endpoints that went away: their NATed entries for every VIP and the NodePort.
    if let Some(o) = old.filter(|o| o.protocol == Protocol::Udp) {
        for (ip, _) in old_eps.difference(&new_eps) {
            if new_eps.iter().any(|(nip, _)| nip == ip) {
                continue; // same IP still an endpoint (port change handled by the kernel's reply tuple)
            }
            for vip in o.all_vips() {
                let mut a = base(o.family);
                a.extend([
                    "--orig-dst".into(),
                    vip.to_string(),
                    "--orig-port-dst".into(),
                    o.port.to_string(),
                    "--reply-src".into(),
                    ip.to_string(),
                ]);
                out.insert(Deletion { args: a });
            }
            if let Some(np) = o.node_port {
                let mut a = base(o.family);
                a.extend(["--orig-port-dst".into(), np.to_string(), "--reply-src".into(), ip.to_string()]);
                out.insert(Deletion { args: a });
            }
        }
    }
    // First endpoints: clear un-NATed entries (reply source == the VIP itself) so rejected or
    // blackholed datagrams' entries do not keep the flow away from the new endpoints.
    if let Some(n) = new.filter(|n| n.protocol == Protocol::Udp) {
        if old_eps.is_empty() && !new_eps.is_empty() {
            for vip in n.all_vips() {
                let mut a = base(n.family);
                a.extend([
                    "--orig-dst".into(),
                    vip.to_string(),
                    "--orig-port-dst".into(),
                    n.port.to_string(),
                    "--reply-src".into(),
                    vip.to_string(),
                ]);
                out.insert(Deletion { args: a });
            }
            if let Some(np) = n.node_port {
                let mut a = base(n.family);
                a.extend(["--orig-port-dst".into(), np.to_string(), "--reply-port-src".into(), np.to_string()]);
                out.insert(Deletion { args: a });
            }
        }
    }
    out.into_iter().collect()
}

/// Run the deletions in `netns`. "0 flow entries" is not an error; a missing `conntrack` binary is
/// logged once per call.
pub fn execute(netns: &Netns, deletions: &[Deletion]) {
    for d in deletions {
        let args: Vec<&str> = d.args.iter().map(|s| s.as_str()).collect();
        match netns.run_raw("conntrack", &args, None) {
            Ok(out) => {
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr);
                    if !err.contains("0 flow entries") {
                        tracing::debug!(args = ?d.args, "conntrack: {}", err.trim());
                    }
                }
            }
            Err(e) => {
                tracing::warn!("conntrack: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, ServicePortName};

    fn sp(eps: &[&str]) -> ServicePort {
        ServicePort {
            name: ServicePortName { namespace: "d".into(), name: "dns".into(), port: "u".into() },
            family: Family::V4,
            protocol: Protocol::Udp,
            port: 53,
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            node_port: Some(30053),
            affinity_timeout: None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
            endpoints: eps
                .iter()
                .map(|ip| Endpoint {
                    ip: ip.parse().unwrap(),
                    port: 5353,
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: None,
                    local: false,
                })
                .collect(),
        }
    }

    #[test]
    fn removed_endpoint() {
        let d = stale(Some(&sp(&["10.244.0.2", "10.244.0.3"])), Some(&sp(&["10.244.0.2"])));
        let s: Vec<String> = d.iter().map(|d| d.args.join(" ")).collect();
        assert_eq!(
            s,
            vec![
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.0.3",
                "-D -p udp --orig-port-dst 30053 --reply-src 10.244.0.3",
            ]
        );
    }

    #[test]
    fn first_endpoint_and_restart() {
        let d = stale(Some(&sp(&[])), Some(&sp(&["10.244.0.2"])));
        let s: Vec<String> = d.iter().map(|d| d.args.join(" ")).collect();
        assert!(
            s.contains(&"-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.96.0.10".to_string()),
            "{s:?}"
        );
        // After a restart (old unknown) only un-NATed entries are touched, never --reply-src of an endpoint.
        let d = stale(None, Some(&sp(&["10.244.0.2"])));
        assert!(d.iter().all(|d| !d.args.join(" ").contains("10.244.0.2")));
        // Unchanged: nothing.
        assert!(stale(Some(&sp(&["10.244.0.2"])), Some(&sp(&["10.244.0.2"]))).is_empty());
        // Deleted service: entries of all its endpoints.
        assert_eq!(stale(Some(&sp(&["10.244.0.2"])), None).len(), 2);
    }
}
