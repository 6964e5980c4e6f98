//! The pure desired-state model: Services + EndpointSlices + the local node name -> one
//! [`ServicePort`] per (service, port, IP family), each carrying its VIPs, policies and endpoints.
//! No I/O; every backend consumes this.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label an EndpointSlice carries naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Default ClientIP affinity timeout (3 hours), as the API defaults it.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// `namespace/name:port`, formatted as kube-proxy's `ServicePortName.String()`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    /// The Service port's name (may be empty for single-port Services).
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
    /// Lower-case name, as nft, iptables and kube-proxy's chain hashes use it.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    /// The EndpointSlice `addressType` of this family.
    pub fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// Identity of one programmed service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortKey {
    pub name: ServicePortName,
    pub protocol: Protocol,
    pub family: Family,
}

/// One backend of a service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
    /// Whether `node_name` is the local node.
    pub local: bool,
}

impl Endpoint {
    /// `ip:port` (`[ip]:port` for IPv6), the form kube-proxy hashes and DNATs to.
    pub fn addr(&self) -> String {
        match self.ip {
            IpAddr::V4(ip) => format!("{ip}:{}", self.port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.port),
        }
    }
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.ip, self.port)
    }
}

/// Everything a backend needs to program one (service, port, family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub family: Family,
    pub protocol: Protocol,
    /// The Service port (`spec.ports[].port`).
    pub port: u16,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    pub node_port: Option<u16>,
    /// ClientIP session affinity timeout in seconds; `None` without affinity.
    pub affinity_timeout: Option<u32>,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    pub health_check_node_port: Option<u16>,
    /// Every endpoint known for this port and family, sorted by (ip, port), deduplicated.
    pub endpoints: Vec<Endpoint>,
}

/// kube-proxy's rule: ready endpoints; if none is ready, the ones that are serving and terminating.
fn select<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

impl ServicePort {
    pub fn key(&self) -> ServicePortKey {
        ServicePortKey { name: self.name.clone(), protocol: self.protocol, family: self.family }
    }

    /// Endpoints for traffic to the cluster IPs (internalTrafficPolicy applied).
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        if self.internal_policy_local {
            self.local_endpoints()
        } else {
            select(self.endpoints.iter())
        }
    }

    /// Endpoints for traffic to NodePorts, externalIPs and load-balancer IPs (externalTrafficPolicy
    /// applied).
    pub fn external_endpoints(&self) -> Vec<&Endpoint> {
        if self.external_policy_local {
            self.local_endpoints()
        } else {
            select(self.endpoints.iter())
        }
    }

    /// Usable endpoints on this node.
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        select(self.endpoints.iter().filter(|e| e.local))
    }

    /// All endpoints that any traffic may reach (used for "has no endpoints at all" -> reject).
    pub fn usable_endpoints(&self) -> Vec<&Endpoint> {
        select(self.endpoints.iter())
    }

    /// Whether the port is reachable from outside the cluster IP (NodePort, externalIPs, LB IPs).
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }

    /// Cluster IPs first, then externalIPs, then load-balancer IPs.
    pub fn all_vips(&self) -> impl Iterator<Item = &IpAddr> {
        self.cluster_ips.iter().chain(self.external_ips.iter()).chain(self.load_balancer_ips.iter())
    }

    /// Local, ready endpoints: what the healthCheckNodePort reports.
    pub fn local_ready_count(&self) -> usize {
        self.endpoints.iter().filter(|e| e.local && e.ready).count()
    }
}

/// The whole desired state: every programmable service port, keyed for cheap diffing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    pub services: BTreeMap<ServicePortKey, Arc<ServicePort>>,
}

impl DesiredState {
    pub fn insert(&mut self, sp: ServicePort) {
        self.services.insert(sp.key(), Arc::new(sp));
    }
    pub fn get(&self, key: &ServicePortKey) -> Option<&Arc<ServicePort>> {
        self.services.get(key)
    }
    /// Remove every port of the Service `namespace/name`.
    pub fn remove_service(&mut self, namespace: &str, name: &str) {
        self.services.retain(|k, _| !(k.name.namespace == namespace && k.name.name == name));
    }
    /// Replace every port of the Service `namespace/name` with `ports`.
    pub fn replace_service(&mut self, namespace: &str, name: &str, ports: Vec<ServicePort>) {
        // Keep unchanged ports' Arcs so backends can skip them by pointer.
        let mut old: BTreeMap<ServicePortKey, Arc<ServicePort>> = BTreeMap::new();
        let keys: Vec<ServicePortKey> = self
            .services
            .range(
                ServicePortKey {
                    name: ServicePortName { namespace: namespace.into(), name: name.into(), port: String::new() },
                    protocol: Protocol::Tcp,
                    family: Family::V4,
                }..,
            )
            .take_while(|(k, _)| k.name.namespace == namespace && k.name.name == name)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(v) = self.services.remove(&k) {
                old.insert(k, v);
            }
        }
        for p in ports {
            let k = p.key();
            match old.remove(&k) {
                Some(prev) if *prev == p => {
                    self.services.insert(k, prev);
                }
                _ => {
                    self.services.insert(k, Arc::new(p));
                }
            }
        }
    }
}

fn parse_ips<'a>(it: impl Iterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = it.filter_map(|s| s.trim().parse().ok()).collect();
    v.dedup();
    v
}

/// The service ports of one Service, with endpoints from its EndpointSlices. Headless and
/// ExternalName Services yield none.
pub fn service_ports(svc: &Service, slices: &[&EndpointSlice], local_node: &str) -> Vec<ServicePort> {
    let Some(spec) = &svc.spec else { return Vec::new() };
    let namespace = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ips: Vec<IpAddr> = match &spec.cluster_ips {
        Some(v) if !v.is_empty() => parse_ips(v.iter()),
        _ => parse_ips(spec.cluster_ip.iter()),
    };
    if cluster_ips.is_empty() {
        return Vec::new(); // headless ("None") or not yet allocated
    }
    let external_ips = parse_ips(spec.external_ips.iter().flatten());
    let lb_ips: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_deref().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    let node_ports_enabled = matches!(spec.type_.as_deref(), Some("NodePort") | Some("LoadBalancer"));
    let affinity_timeout = if spec.session_affinity.as_deref() == Some("ClientIP") {
        Some(
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .filter(|t| *t > 0)
                .map(|t| t as u32)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT),
        )
    } else {
        None
    };
    let external_policy_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let health_check_node_port = if external_policy_local && spec.type_.as_deref() == Some("LoadBalancer") {
        spec.health_check_node_port.filter(|p| *p > 0 && *p < 65536).map(|p| p as u16)
    } else {
        None
    };

    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else { continue };
        if p.port <= 0 || p.port > 65535 {
            continue;
        }
        let port_name = p.name.clone().unwrap_or_default();
        for family in [Family::V4, Family::V6] {
            let cips: Vec<IpAddr> = cluster_ips.iter().filter(|ip| Family::of(ip) == family).copied().collect();
            if cips.is_empty() {
                continue;
            }
            let mut endpoints = slice_endpoints(slices, family, &port_name, protocol, local_node);
            endpoints.sort_by_key(|e| (e.ip, e.port));
            // Deduplicate the same ip:port appearing in several slices, keeping the readiest.
            let mut dedup: Vec<Endpoint> = Vec::with_capacity(endpoints.len());
            for e in endpoints {
                match dedup.last_mut() {
                    Some(last) if last.ip == e.ip && last.port == e.port => {
                        if e.ready && !last.ready {
                            *last = e;
                        }
                    }
                    _ => dedup.push(e),
                }
            }
            out.push(ServicePort {
                name: ServicePortName { namespace: namespace.clone(), name: name.clone(), port: port_name.clone() },
                family,
                protocol,
                port: p.port as u16,
                cluster_ips: cips,
                external_ips: external_ips.iter().filter(|ip| Family::of(ip) == family).copied().collect(),
                load_balancer_ips: lb_ips.iter().filter(|ip| Family::of(ip) == family).copied().collect(),
                node_port: if node_ports_enabled {
                    p.node_port.filter(|n| *n > 0 && *n < 65536).map(|n| n as u16)
                } else {
                    None
                },
                affinity_timeout,
                external_policy_local,
                internal_policy_local,
                health_check_node_port,
                endpoints: dedup,
            });
        }
    }
    out
}

fn slice_endpoints(
    slices: &[&EndpointSlice],
    family: Family,
    port_name: &str,
    protocol: Protocol,
    local_node: &str,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for s in slices {
        if s.address_type != family.address_type() {
            continue;
        }
        // Resolve the target port from the slice's port of the same name and protocol.
        let Some(port) = s.ports.iter().flatten().find_map(|sp| {
            let n = sp.name.as_deref().unwrap_or("");
            let proto = Protocol::parse(sp.protocol.as_deref());
            if n == port_name && proto == Some(protocol) {
                sp.port.filter(|p| *p > 0 && *p < 65536).map(|p| p as u16)
            } else {
                None
            }
        }) else {
            continue;
        };
        for e in s.endpoints.iter().flatten() {
            let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            if Family::of(&ip) != family {
                continue;
            }
            let c = e.conditions.as_ref();
            // API semantics: nil ready means ready; nil serving means "same as ready"; nil
            // terminating means not terminating.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = e.node_name.as_deref().is_some_and(|n| !local_node.is_empty() && n == local_node);
            out.push(Endpoint { ip, port, ready, serving, terminating, node_name: e.node_name.clone(), local });
        }
    }
    out
}

/// Build the whole desired state from lists of Services and EndpointSlices.
pub fn build(services: &[Service], slices: &[EndpointSlice], local_node: &str) -> DesiredState {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            by_service.entry((ns, svc.clone())).or_default().push(s);
        }
    }
    let mut state = DesiredState::default();
    for svc in services {
        let key = (
            svc.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let slices = by_service.get(&key).map(|v| v.as_slice()).unwrap_or(&[]);
        for sp in service_ports(svc, slices, local_node) {
            state.insert(sp);
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }
    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }
    fn hostnames() -> Service {
        svc(json!({
            "metadata": {"namespace": "default", "name": "hostnames"},
            "spec": {"clusterIP": "10.0.91.192", "clusterIPs": ["10.0.91.192"],
                     "ports": [{"name": "default", "port": 80, "protocol": "TCP", "targetPort": 9376}]}
        }))
    }
    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool, node: &str) -> serde_json::Value {
        json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}, "nodeName": node})
    }
    fn hostnames_slice(eps: Vec<serde_json::Value>) -> EndpointSlice {
        slice(json!({
            "metadata": {"namespace": "default", "name": "hostnames-abc", "labels": {"kubernetes.io/service-name": "hostnames"}},
            "addressType": "IPv4",
            "ports": [{"name": "default", "port": 9376, "protocol": "TCP"}],
            "endpoints": eps
        }))
    }

    #[test]
    fn name_display() {
        let n = ServicePortName { namespace: "default".into(), name: "hostnames".into(), port: "default".into() };
        assert_eq!(n.to_string(), "default/hostnames:default");
        let n = ServicePortName { namespace: "a".into(), name: "b".into(), port: String::new() };
        assert_eq!(n.to_string(), "a/b");
    }

    #[test]
    fn basic_cluster_ip() {
        let s = build(
            &[hostnames()],
            &[hostnames_slice(vec![
                ep("10.1.161.47", true, true, false, "n1"),
                ep("10.1.166.146", true, true, false, "n2"),
                ep("10.1.166.166", true, true, false, "n2"),
            ])],
            "n1",
        );
        assert_eq!(s.services.len(), 1);
        let sp = s.services.values().next().unwrap();
        assert_eq!(sp.name.to_string(), "default/hostnames:default");
        assert_eq!(sp.port, 80);
        assert_eq!(sp.protocol, Protocol::Tcp);
        assert_eq!(sp.cluster_ips, vec!["10.0.91.192".parse::<IpAddr>().unwrap()]);
        assert_eq!(sp.endpoints.len(), 3);
        assert!(sp.endpoints.iter().all(|e| e.port == 9376));
        assert_eq!(sp.endpoints.iter().filter(|e| e.local).count(), 1);
        assert_eq!(sp.cluster_endpoints().len(), 3);
        assert_eq!(sp.node_port, None);
        assert_eq!(sp.affinity_timeout, None);
    }

    #[test]
    fn named_port_resolution_and_protocol_match() {
        let s = svc(json!({
            "metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "metrics", "port": 9153, "protocol": "TCP"}]}
        }));
        let sl = slice(json!({
            "metadata": {"namespace": "kube-system", "name": "kube-dns-x", "labels": {"kubernetes.io/service-name": "kube-dns"}},
            "addressType": "IPv4",
            "ports": [{"name": "dns-tcp", "port": 5353, "protocol": "TCP"}, {"name": "dns", "port": 5300, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["10.244.0.5"]}]
        }));
        let st = build(&[s], &[sl], "n");
        let ports: Vec<_> = st
            .services
            .values()
            .map(|p| (p.name.port.clone(), p.protocol, p.endpoints.len(), p.endpoints.first().map(|e| e.port)))
            .collect();
        assert!(ports.contains(&("dns".into(), Protocol::Udp, 1, Some(5300))), "{ports:?}");
        assert!(ports.contains(&("dns-tcp".into(), Protocol::Tcp, 1, Some(5353))), "{ports:?}");
        // No slice port named "metrics": no endpoints for it.
        assert!(ports.contains(&("metrics".into(), Protocol::Tcp, 0, None)), "{ports:?}");
        // nil conditions mean ready.
        let dns = st.services.values().find(|p| p.name.port == "dns").unwrap();
        assert!(dns.endpoints[0].ready && dns.endpoints[0].serving && !dns.endpoints[0].terminating);
    }

    #[test]
    fn terminating_fallback() {
        let st = build(
            &[hostnames()],
            &[hostnames_slice(vec![
                ep("10.1.0.1", false, true, true, "n1"),
                ep("10.1.0.2", false, false, true, "n1"),
                ep("10.1.0.3", false, false, false, "n1"),
            ])],
            "n1",
        );
        let sp = st.services.values().next().unwrap();
        let c: Vec<String> = sp.cluster_endpoints().iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(c, vec!["10.1.0.1"]);
        // With a ready one present, the terminating one is not used.
        let st = build(
            &[hostnames()],
            &[hostnames_slice(vec![ep("10.1.0.1", false, true, true, "n1"), ep("10.1.0.9", true, true, false, "n2")])],
            "n1",
        );
        let sp = st.services.values().next().unwrap();
        let c: Vec<String> = sp.cluster_endpoints().iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(c, vec!["10.1.0.9"]);
    }

    #[test]
    fn policies_local() {
        let s = svc(json!({
            "metadata": {"namespace": "default", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "externalIPs": ["192.0.2.10"],
                     "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                     "sessionAffinity": "ClientIP",
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.1"}, {"ip": "172.18.255.2", "ipMode": "Proxy"}, {"hostname": "x"}]}}
        }));
        let sl = slice(json!({
            "metadata": {"namespace": "default", "name": "lb-1", "labels": {"kubernetes.io/service-name": "lb"}},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [ep("10.244.1.2", true, true, false, "n1"), ep("10.244.2.2", true, true, false, "n2"),
                          ep("10.244.1.3", false, true, true, "n1")]
        }));
        let st = build(&[s], &[sl], "n1");
        let sp = st.services.values().next().unwrap();
        assert_eq!(sp.node_port, Some(30080));
        assert_eq!(sp.health_check_node_port, Some(32000));
        assert_eq!(sp.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert_eq!(sp.external_ips, vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(sp.load_balancer_ips, vec!["172.18.255.1".parse::<IpAddr>().unwrap()]);
        let ext: Vec<String> = sp.external_endpoints().iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(ext, vec!["10.244.1.2"]);
        let int: Vec<String> = sp.cluster_endpoints().iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(int, vec!["10.244.1.2"]);
        assert_eq!(sp.usable_endpoints().len(), 2);
        assert_eq!(sp.local_ready_count(), 1);
        // On another node without local endpoints: nothing local.
        let st = build(&[svc(serde_json::to_value(st_svc()).unwrap())], &[], "n3");
        assert!(st.services.values().next().unwrap().external_endpoints().is_empty());
    }

    fn st_svc() -> Service {
        svc(json!({"metadata": {"namespace": "d", "name": "x"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.21", "externalTrafficPolicy": "Local",
                     "ports": [{"port": 80, "nodePort": 30081}]}}))
    }

    #[test]
    fn local_fallback_to_terminating_local() {
        let sl = slice(json!({
            "metadata": {"namespace": "d", "name": "x-1", "labels": {"kubernetes.io/service-name": "x"}},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [ep("10.244.1.3", false, true, true, "n1"), ep("10.244.2.2", true, true, false, "n2")]
        }));
        let st = build(&[st_svc()], &[sl], "n1");
        let sp = st.services.values().next().unwrap();
        let ext: Vec<String> = sp.external_endpoints().iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(ext, vec!["10.244.1.3"]);
        // Health check counts ready local endpoints only; NodePort type has no health check port.
        assert_eq!(sp.local_ready_count(), 0);
        assert_eq!(sp.health_check_node_port, None);
        // Cluster traffic still uses the ready remote one.
        let c: Vec<String> = sp.cluster_endpoints().iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(c, vec!["10.244.2.2"]);
    }

    #[test]
    fn dual_stack_and_affinity_timeout_and_headless() {
        let s = svc(json!({
            "metadata": {"namespace": "d", "name": "ds"},
            "spec": {"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30", "fd00:10:96::30"],
                     "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                     "ports": [{"name": "u", "port": 53, "protocol": "UDP"}, {"name": "s", "port": 99, "protocol": "SCTP"}]}
        }));
        let s4 = slice(
            json!({"metadata": {"namespace": "d", "name": "ds-4", "labels": {"kubernetes.io/service-name": "ds"}},
            "addressType": "IPv4", "ports": [{"name": "u", "port": 5353, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["10.244.0.9"]}, {"addresses": ["10.244.0.9"], "conditions": {"ready": false}}]}),
        );
        let s6 = slice(
            json!({"metadata": {"namespace": "d", "name": "ds-6", "labels": {"kubernetes.io/service-name": "ds"}},
            "addressType": "IPv6", "ports": [{"name": "u", "port": 5353, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["fd00:244::9"]}]}),
        );
        let fqdn = slice(
            json!({"metadata": {"namespace": "d", "name": "ds-f", "labels": {"kubernetes.io/service-name": "ds"}},
            "addressType": "FQDN", "ports": [{"name": "u", "port": 5353, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["example.com"]}]}),
        );
        let headless = svc(json!({"metadata": {"namespace": "d", "name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        let ext = svc(json!({"metadata": {"namespace": "d", "name": "e"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        let st = build(&[s, headless, ext], &[s4, s6, fqdn], "n");
        assert_eq!(st.services.len(), 4, "{:?}", st.services.keys().collect::<Vec<_>>());
        let u4 = st.services.values().find(|p| p.name.port == "u" && p.family == Family::V4).unwrap();
        assert_eq!(u4.endpoints.len(), 1, "dedup");
        assert!(u4.endpoints[0].ready);
        assert_eq!(u4.affinity_timeout, Some(60));
        let u6 = st.services.values().find(|p| p.name.port == "u" && p.family == Family::V6).unwrap();
        assert_eq!(u6.cluster_ips, vec!["fd00:10:96::30".parse::<IpAddr>().unwrap()]);
        assert_eq!(u6.endpoints[0].addr(), "[fd00:244::9]:5353");
        let s = st.services.values().find(|p| p.name.port == "s" && p.family == Family::V4).unwrap();
        assert_eq!(s.protocol, Protocol::Sctp);
        assert!(s.endpoints.is_empty());
    }

    #[test]
    fn replace_service_keeps_unchanged_arcs() {
        let mut st = build(&[hostnames()], &[hostnames_slice(vec![ep("10.1.0.1", true, true, false, "n")])], "n");
        let before = st.services.values().next().unwrap().clone();
        let ports = service_ports(&hostnames(), &[&hostnames_slice(vec![ep("10.1.0.1", true, true, false, "n")])], "n");
        st.replace_service("default", "hostnames", ports);
        assert!(Arc::ptr_eq(&before, st.services.values().next().unwrap()));
        let ports = service_ports(&hostnames(), &[&hostnames_slice(vec![ep("10.1.0.2", true, true, false, "n")])], "n");
        st.replace_service("default", "hostnames", ports);
        assert!(!Arc::ptr_eq(&before, st.services.values().next().unwrap()));
        st.remove_service("default", "hostnames");
        assert!(st.services.is_empty());
    }
}
