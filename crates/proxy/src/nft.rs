//! nftables backend (the default). Everything lives in one table of its own, `inet yard-proxy`
//! (both families in one table; per-family maps), programmed with `nft -f -` batches.
//!
//! Layout:
//! - `nat-prerouting` / `nat-output` (hook nat, priority dstnat) jump `services`, which dispatches
//!   through the verdict maps `service-ips{,6}` keyed by `daddr . l4proto . dport` and, for
//!   destinations that are local addresses (`fib daddr type local`), `service-nodeports{,6}` keyed by
//!   `l4proto . dport`. Lookup cost does not grow with the number of Services.
//! - Per service port: `svc-*` (cluster-IP traffic: marks off-cluster sources for masquerade),
//!   `ext-*` (NodePort / externalIPs / LB IPs, honouring externalTrafficPolicy), `cluster-*` and
//!   `local-*` (`numgen random mod N vmap` over all / node-local endpoints, after ClientIP affinity
//!   lookups in the per-endpoint dynamic sets `aff-*`), and one `ep-*` chain per endpoint (hairpin
//!   masquerade mark, affinity update, DNAT).
//! - `filter-prerouting` / `filter-output` (hook filter, priority dstnat-10) send new connections to
//!   Services without usable endpoints through `no-endpoint-*` maps: `reject-chain` (TCP reset /
//!   ICMP port unreachable) or `drop` (externalTrafficPolicy Local without local endpoints).
//! - `nat-postrouting` masquerades packets carrying mark 0x4000.
//!
//! Sync is incremental: the rendered rules of every service port are cached, and only changed
//! chains, sets and map elements are written. The first sync (and any after a failure or after the
//! table vanished) replaces the whole table atomically (`add table; delete table; ...` in one batch),
//! which never touches conntrack entries.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::exec::Netns;
use crate::model::{DesiredState, Endpoint, Family, ServicePort, ServicePortKey};
use crate::{conntrack, Error};

/// The table this backend owns.
pub const TABLE: &str = "yard-proxy";
const T: &str = "inet yard-proxy";
/// Packet mark meaning "masquerade in postrouting" (kube-proxy's value).
pub const MASQ_MARK: &str = "0x00004000";

/// Rendered nftables objects of one service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Set name -> declaration body (`{ type ...; }`).
    pub sets: BTreeMap<String, String>,
    /// Chain name -> rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// (map, key) -> verdict.
    pub elements: BTreeMap<(&'static str, String), String>,
    /// Endpoint IPs this service port DNATs to (hairpin masquerade set; shared, refcounted).
    pub hairpin: Vec<std::net::IpAddr>,
}

/// RFC 4648 base32 (with the standard alphabet), as Go's `base32.StdEncoding` without padding
/// concerns (callers truncate).
pub fn base32(data: &[u8]) -> String {
    const ALPHA: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut buf: u64 = 0;
    let mut bits = 0u32;
    for &b in data {
        buf = (buf << 8) | b as u64;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHA[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHA[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// First `n` characters of base32(sha256(s)).
pub fn hash(s: &str, n: usize) -> String {
    let mut h = base32(&Sha256::digest(s.as_bytes()));
    h.truncate(n);
    h
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '/' { c } else { '.' })
        .collect()
}

fn ipk(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn suffix(f: Family) -> &'static str {
    match f {
        Family::V4 => "",
        Family::V6 => "6",
    }
}

fn map_name(kind: &'static str, f: Family) -> &'static str {
    match (kind, f) {
        ("service-ips", Family::V4) => "service-ips",
        ("service-ips", Family::V6) => "service-ips6",
        ("service-nodeports", Family::V4) => "service-nodeports",
        ("service-nodeports", Family::V6) => "service-nodeports6",
        ("no-endpoint-services", Family::V4) => "no-endpoint-services",
        ("no-endpoint-services", Family::V6) => "no-endpoint-services6",
        ("no-endpoint-nodeports", Family::V4) => "no-endpoint-nodeports",
        _ => "no-endpoint-nodeports6",
    }
}

/// Chain names of one service port.
pub struct Names {
    pub svc: String,
    pub ext: String,
    pub cluster: String,
    pub local: String,
    base: String,
    h: String,
}

impl Names {
    pub fn of(sp: &ServicePort) -> Names {
        let base = sanitize(&format!(
            "{}/{}/{}/{}",
            sp.name.namespace,
            sp.name.name,
            sp.protocol.lower(),
            if sp.name.port.is_empty() { "-" } else { &sp.name.port }
        ));
        let h = hash(&format!("{}{:?}", base, sp.family), 8);
        Names {
            svc: format!("svc-{h}-{base}"),
            ext: format!("ext-{h}-{base}"),
            cluster: format!("cluster-{h}-{base}"),
            local: format!("local-{h}-{base}"),
            base,
            h,
        }
    }
    pub fn endpoint(&self, ep: &Endpoint) -> String {
        format!("ep-{}-{}__{}/{}", self.h, self.base, sanitize(&ep.ip.to_string()), ep.port)
    }
    pub fn affinity(&self, ep: &Endpoint, timeout: u32) -> String {
        format!("aff-{}", hash(&format!("{}{}{}", self.h, ep.addr(), timeout), 16))
    }
}

fn cidr_for(cidrs: &[IpNet], f: Family) -> Option<&IpNet> {
    cidrs.iter().find(|c| matches!((c, f), (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)))
}

/// Render one service port's chains, sets and map elements.
pub fn render(sp: &ServicePort, cluster_cidrs: &[IpNet]) -> Rendered {
    let mut r = Rendered::default();
    let n = Names::of(sp);
    let ip = ipk(sp.family);
    let proto = sp.protocol.lower();
    let cidr = cidr_for(cluster_cidrs, sp.family);
    let cluster = sp.cluster_endpoints();
    let usable = sp.usable_endpoints();
    let local = sp.local_endpoints();
    let has_ext = sp.has_external();

    // `cluster-*` exists only when it differs from the cluster-IP chain (internal policy Local
    // with external access); otherwise external Cluster traffic reuses `svc-*`.
    let separate_cluster = sp.internal_policy_local && has_ext && !usable.is_empty();
    let need_local_chain = !local.is_empty() && (sp.internal_policy_local || (has_ext && sp.external_policy_local));
    let cluster_target = if separate_cluster { &n.cluster } else { &n.svc };

    // Endpoints any balancing rule uses: their IPs join the hairpin set; with ClientIP affinity
    // each also gets a chain and a dynamic set.
    let mut eps: Vec<&Endpoint> = Vec::new();
    for e in cluster.iter().chain(if has_ext { usable.iter() } else { [].iter() }).chain(local.iter()) {
        if !eps.iter().any(|x| x.ip == e.ip && x.port == e.port) {
            eps.push(e);
        }
    }
    if !(cluster.is_empty() && (!has_ext || usable.is_empty())) {
        for e in &eps {
            if !r.hairpin.contains(&e.ip) {
                r.hairpin.push(e.ip);
            }
        }
    }
    if let Some(t) = sp.affinity_timeout {
        for e in &eps {
            let set = n.affinity(e, t);
            let ty = if sp.family == Family::V4 { "ipv4_addr" } else { "ipv6_addr" };
            r.sets.insert(set.clone(), format!("{{ type {ty} ; flags dynamic,timeout ; timeout {t}s ; }}"));
            r.chains.insert(
                n.endpoint(e),
                vec![
                    format!("update @{set} {{ {ip} saddr }}"),
                    format!("meta l4proto {proto} dnat {ip} to {}", e.addr()),
                ],
            );
        }
    }

    // Spread over `eps`: affinity lookups then a numgen verdict map over endpoint chains, or
    // (without affinity) one DNAT through a numgen map, with no per-endpoint chains at all.
    let balance = |eps: &[&Endpoint]| -> Vec<String> {
        let mut rules = Vec::with_capacity(eps.len() + 1);
        if let Some(t) = sp.affinity_timeout {
            for e in eps {
                rules.push(format!("{ip} saddr @{} goto {}", n.affinity(e, t), n.endpoint(e)));
            }
            if eps.len() == 1 {
                rules.push(format!("goto {}", n.endpoint(eps[0])));
            } else {
                let mut s = format!("numgen random mod {} vmap {{ ", eps.len());
                for (i, e) in eps.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    let _ = write!(s, "{i} : goto {}", n.endpoint(e));
                }
                s.push_str(" }");
                rules.push(s);
            }
        } else if eps.len() == 1 {
            rules.push(format!("meta l4proto {proto} dnat {ip} to {}", eps[0].addr()));
        } else {
            // One DNAT through an anonymous numgen map (no per-endpoint chains).
            let mut s = format!("meta l4proto {proto} dnat {ip} to numgen random mod {} map {{ ", eps.len());
            for (i, e) in eps.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                match e.ip {
                    std::net::IpAddr::V4(a) => {
                        let _ = write!(s, "{i} : {a} . {}", e.port);
                    }
                    std::net::IpAddr::V6(a) => {
                        let _ = write!(s, "{i} : [{a}] . {}", e.port);
                    }
                }
            }
            s.push_str(" }");
            rules.push(s);
        }
        rules
    };
    if separate_cluster {
        r.chains.insert(n.cluster.clone(), balance(&usable));
    }
    if need_local_chain {
        r.chains.insert(n.local.clone(), balance(&local));
    }

    // Cluster-IP traffic (and external Cluster-policy traffic, which reuses `svc-*`).
    let reject = |usable_empty: bool| if usable_empty { "goto reject-chain".to_string() } else { "drop".to_string() };
    let svc_eps: Vec<&Endpoint> = if !cluster.is_empty() {
        cluster.clone()
    } else if has_ext && !separate_cluster && !usable.is_empty() {
        usable.clone()
    } else {
        Vec::new()
    };
    if !svc_eps.is_empty() {
        let mut rules = Vec::new();
        if let Some(c) = cidr {
            rules.push(format!("{ip} saddr != {c} jump mark-for-masquerade"));
        }
        if sp.internal_policy_local && !cluster.is_empty() {
            rules.push(format!("goto {}", n.local));
        } else {
            rules.extend(balance(&svc_eps));
        }
        r.chains.insert(n.svc.clone(), rules);
    }
    for cip in &sp.cluster_ips {
        let key = format!("{cip} . {proto} . {}", sp.port);
        if !cluster.is_empty() {
            r.elements.insert((map_name("service-ips", sp.family), key), format!("goto {}", n.svc));
        } else {
            r.elements.insert((map_name("no-endpoint-services", sp.family), key), reject(usable.is_empty()));
        }
    }

    // External traffic.
    if has_ext {
        if !usable.is_empty() {
            let mut rules = Vec::new();
            if !sp.external_policy_local {
                rules.push("jump mark-for-masquerade".to_string());
                rules.push(format!("goto {}", cluster_target));
            } else {
                // Pods and the node itself reaching an external address use the cluster-wide set.
                if let Some(c) = cidr {
                    rules.push(format!("{ip} saddr {c} goto {}", cluster_target));
                }
                rules.push("fib saddr type local jump mark-for-masquerade".to_string());
                rules.push(format!("fib saddr type local goto {}", cluster_target));
                if need_local_chain {
                    rules.push(format!("goto {}", n.local));
                } else {
                    rules.push("drop".to_string());
                }
            }
            r.chains.insert(n.ext.clone(), rules);
        }
        let verdict = if usable.is_empty() { reject(true) } else { format!("goto {}", n.ext) };
        let (svc_map, ne_map) = if usable.is_empty() {
            ("no-endpoint-services", "no-endpoint-services")
        } else {
            ("service-ips", "service-ips")
        };
        let _ = ne_map;
        for vip in sp.external_ips.iter().chain(sp.load_balancer_ips.iter()) {
            r.elements.insert((map_name(svc_map, sp.family), format!("{vip} . {proto} . {}", sp.port)), verdict.clone());
        }
        if let Some(np) = sp.node_port {
            let m = if usable.is_empty() { "no-endpoint-nodeports" } else { "service-nodeports" };
            r.elements.insert((map_name(m, sp.family), format!("{proto} . {np}")), verdict.clone());
        }
    }
    r
}

/// The fixed part of the table.
pub fn skeleton(cluster_cidrs: &[IpNet]) -> String {
    let _ = cluster_cidrs;
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    for (f, ty) in [(Family::V4, "ipv4_addr"), (Family::V6, "ipv6_addr")] {
        let sfx = suffix(f);
        line(&format!("add map {T} service-ips{sfx} {{ type {ty} . inet_proto . inet_service : verdict ; }}"));
        line(&format!("add map {T} service-nodeports{sfx} {{ type inet_proto . inet_service : verdict ; }}"));
        line(&format!("add map {T} no-endpoint-services{sfx} {{ type {ty} . inet_proto . inet_service : verdict ; }}"));
        line(&format!("add map {T} no-endpoint-nodeports{sfx} {{ type inet_proto . inet_service : verdict ; }}"));
    }
    line(&format!("add chain {T} mark-for-masquerade"));
    line(&format!("add rule {T} mark-for-masquerade meta mark set meta mark | {MASQ_MARK}"));
    line(&format!("add set {T} hairpin {{ type ipv4_addr . ipv4_addr ; }}"));
    line(&format!("add set {T} hairpin6 {{ type ipv6_addr . ipv6_addr ; }}"));
    line(&format!("add chain {T} masquerading"));
    // A pod reaching itself through a Service: after DNAT, source == destination.
    line(&format!("add rule {T} masquerading ct status dnat ip saddr . ip daddr @hairpin masquerade fully-random"));
    line(&format!("add rule {T} masquerading ct status dnat ip6 saddr . ip6 daddr @hairpin6 masquerade fully-random"));
    line(&format!("add rule {T} masquerading meta mark & {MASQ_MARK} == 0 return"));
    line(&format!("add rule {T} masquerading meta mark set meta mark ^ {MASQ_MARK}"));
    line(&format!("add rule {T} masquerading masquerade fully-random"));
    line(&format!("add chain {T} reject-chain"));
    line(&format!("add rule {T} reject-chain meta l4proto tcp reject with tcp reset"));
    line(&format!("add rule {T} reject-chain reject"));
    line(&format!("add chain {T} services"));
    line(&format!("add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips"));
    line(&format!("add rule {T} services ip6 daddr . meta l4proto . th dport vmap @service-ips6"));
    line(&format!(
        "add rule {T} services ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports"
    ));
    line(&format!(
        "add rule {T} services ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @service-nodeports6"
    ));
    line(&format!("add chain {T} endpoints-check"));
    line(&format!("add rule {T} endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services"));
    line(&format!("add rule {T} endpoints-check ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services6"));
    line(&format!(
        "add rule {T} endpoints-check ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports"
    ));
    line(&format!(
        "add rule {T} endpoints-check ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports6"
    ));
    line(&format!("add chain {T} filter-prerouting {{ type filter hook prerouting priority -110 ; }}"));
    line(&format!("add rule {T} filter-prerouting ct state new jump endpoints-check"));
    line(&format!("add chain {T} filter-output {{ type filter hook output priority -110 ; }}"));
    line(&format!("add rule {T} filter-output ct state new jump endpoints-check"));
    line(&format!("add chain {T} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}"));
    line(&format!("add rule {T} nat-prerouting jump services"));
    line(&format!("add chain {T} nat-output {{ type nat hook output priority -100 ; }}"));
    line(&format!("add rule {T} nat-output jump services"));
    line(&format!("add chain {T} nat-postrouting {{ type nat hook postrouting priority srcnat ; }}"));
    line(&format!("add rule {T} nat-postrouting jump masquerading"));
    s
}

/// Append the objects of `r` to a full-sync batch (sets, chains, rules; elements collected aside).
fn emit_full(out: &mut String, r: &Rendered, elements: &mut BTreeMap<&'static str, Vec<String>>) {
    for (name, decl) in &r.sets {
        let _ = writeln!(out, "add set {T} {name} {decl}");
    }
    for name in r.chains.keys() {
        let _ = writeln!(out, "add chain {T} {name}");
    }
    for (name, rules) in &r.chains {
        for rule in rules {
            let _ = writeln!(out, "add rule {T} {name} {rule}");
        }
    }
    for ((map, key), v) in &r.elements {
        elements.entry(map).or_default().push(format!("{key} : {v}"));
    }
}

fn hairpin_element(ip: &std::net::IpAddr) -> (&'static str, String) {
    match ip {
        std::net::IpAddr::V4(a) => ("hairpin", format!("{a} . {a}")),
        std::net::IpAddr::V6(a) => ("hairpin6", format!("{a} . {a}")),
    }
}

/// Batch text for a transition of one service port from `old` to `new`, split in phases so that
/// every object exists before it is referenced and is unreferenced before it is deleted.
#[derive(Default)]
pub struct Phases {
    add_sets: String,
    add_chains: String,
    del_elements: String,
    rules: String,
    add_elements: String,
    flush_removed: String,
    del_chains: String,
    del_sets: String,
}

impl Phases {
    pub fn diff(&mut self, old: Option<&Rendered>, new: Option<&Rendered>) {
        let empty = Rendered::default();
        let old = old.unwrap_or(&empty);
        let new = new.unwrap_or(&empty);
        for name in new.sets.keys() {
            if !old.sets.contains_key(name) {
                let _ = writeln!(self.add_sets, "add set {T} {name} {}", new.sets[name]);
            }
        }
        for name in old.sets.keys() {
            if !new.sets.contains_key(name) {
                let _ = writeln!(self.del_sets, "delete set {T} {name}");
            }
        }
        for (name, rules) in &new.chains {
            match old.chains.get(name) {
                None => {
                    let _ = writeln!(self.add_chains, "add chain {T} {name}");
                }
                Some(o) if o == rules => continue,
                Some(_) => {
                    let _ = writeln!(self.rules, "flush chain {T} {name}");
                }
            }
            for rule in rules {
                let _ = writeln!(self.rules, "add rule {T} {name} {rule}");
            }
        }
        for name in old.chains.keys() {
            if !new.chains.contains_key(name) {
                let _ = writeln!(self.flush_removed, "flush chain {T} {name}");
                let _ = writeln!(self.del_chains, "delete chain {T} {name}");
            }
        }
        for ((map, key), v) in &old.elements {
            if new.elements.get(&(*map, key.clone())) != Some(v) {
                let _ = writeln!(self.del_elements, "delete element {T} {map} {{ {key} }}");
            }
        }
        for ((map, key), v) in &new.elements {
            if old.elements.get(&(*map, key.clone())) != Some(v) {
                let _ = writeln!(self.add_elements, "add element {T} {map} {{ {key} : {v} }}");
            }
        }
    }
    /// Hairpin set membership changes (decided by the backend's reference counts).
    pub fn hairpin(&mut self, ip: &std::net::IpAddr, add: bool) {
        let (set, el) = hairpin_element(ip);
        if add {
            let _ = writeln!(self.add_elements, "add element {T} {set} {{ {el} }}");
        } else {
            let _ = writeln!(self.del_elements, "delete element {T} {set} {{ {el} }}");
        }
    }
    pub fn is_empty(&self) -> bool {
        self.add_sets.is_empty()
            && self.add_chains.is_empty()
            && self.del_elements.is_empty()
            && self.rules.is_empty()
            && self.add_elements.is_empty()
            && self.flush_removed.is_empty()
            && self.del_chains.is_empty()
            && self.del_sets.is_empty()
    }
    pub fn into_batch(self) -> String {
        [
            self.add_sets,
            self.add_chains,
            self.del_elements,
            self.rules,
            self.add_elements,
            self.flush_removed,
            self.del_chains,
            self.del_sets,
        ]
        .concat()
    }
}

/// What is programmed per service port: the model it came from and its rendering.
type Programmed = BTreeMap<ServicePortKey, (Arc<ServicePort>, Arc<Rendered>)>;

/// The nftables backend.
pub struct NftBackend {
    netns: Netns,
    cluster_cidrs: Vec<IpNet>,
    /// What is programmed, per service port; `None` before the first successful (full) sync.
    programmed: Option<Programmed>,
    /// Endpoint IP -> number of service ports using it (membership of the hairpin sets).
    hairpin_refs: BTreeMap<std::net::IpAddr, usize>,
}

impl NftBackend {
    pub fn new(netns: Netns, cluster_cidrs: Vec<IpNet>) -> Self {
        NftBackend { netns, cluster_cidrs, programmed: None, hairpin_refs: BTreeMap::new() }
    }

    fn apply(&self, batch: &str) -> Result<(), Error> {
        // Debugging aid: keep a copy of the last batch.
        if let Some(path) = std::env::var_os("YARD_PROXY_NFT_DUMP") {
            let mut path = std::path::PathBuf::from(path);
            if batch.starts_with("add table") {
                path.set_extension("full");
            }
            let _ = std::fs::write(path, batch);
        }
        self.netns.run("nft", &["-f", "-"], Some(batch)).map(|_| ())
    }

    fn full_sync(&mut self, desired: &DesiredState) -> Result<usize, Error> {
        let mut out = String::with_capacity(256 * desired.services.len() + 4096);
        let _ = writeln!(out, "add table {T}");
        let _ = writeln!(out, "delete table {T}");
        let _ = writeln!(out, "add table {T}");
        out.push_str(&skeleton(&self.cluster_cidrs));
        let mut programmed = BTreeMap::new();
        let mut elements: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut refs: BTreeMap<std::net::IpAddr, usize> = BTreeMap::new();
        for (k, sp) in &desired.services {
            let r = Arc::new(render(sp, &self.cluster_cidrs));
            emit_full(&mut out, &r, &mut elements);
            for ip in &r.hairpin {
                *refs.entry(*ip).or_default() += 1;
            }
            programmed.insert(k.clone(), (sp.clone(), r));
        }
        for ip in refs.keys() {
            let (set, el) = hairpin_element(ip);
            elements.entry(set).or_default().push(el);
        }
        for (map, els) in elements {
            for chunk in els.chunks(1000) {
                let _ = writeln!(out, "add element {T} {map} {{ {} }}", chunk.join(", "));
            }
        }
        self.apply(&out)?;
        self.hairpin_refs = refs;
        let mut deletions = Vec::new();
        for sp in desired.services.values() {
            deletions.extend(conntrack::stale(None, Some(sp)));
        }
        conntrack::execute(&self.netns, &deletions);
        self.programmed = Some(programmed);
        Ok(desired.services.len())
    }
}

impl crate::Backend for NftBackend {
    fn sync(&mut self, desired: &DesiredState) -> Result<usize, Error> {
        let Some(programmed) = &self.programmed else {
            return self.full_sync(desired);
        };
        let mut phases = Phases::default();
        #[allow(clippy::type_complexity)]
        let mut changes: Vec<(ServicePortKey, Option<(Arc<ServicePort>, Arc<Rendered>)>)> = Vec::new();
        let mut deletions = Vec::new();
        let mut refs = self.hairpin_refs.clone();
        let mut ref_delta = |old: Option<&Rendered>, new: Option<&Rendered>, phases: &mut Phases| {
            for ip in old.map(|r| r.hairpin.as_slice()).unwrap_or(&[]) {
                if new.is_some_and(|n| n.hairpin.contains(ip)) {
                    continue;
                }
                if let Some(c) = refs.get_mut(ip) {
                    *c -= 1;
                    if *c == 0 {
                        refs.remove(ip);
                        phases.hairpin(ip, false);
                    }
                }
            }
            for ip in new.map(|r| r.hairpin.as_slice()).unwrap_or(&[]) {
                if old.is_some_and(|o| o.hairpin.contains(ip)) {
                    continue;
                }
                let c = refs.entry(*ip).or_default();
                *c += 1;
                if *c == 1 {
                    phases.hairpin(ip, true);
                }
            }
        };
        // Merge-join the two sorted maps.
        let mut a = programmed.iter().peekable();
        let mut b = desired.services.iter().peekable();
        loop {
            let ord = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
            };
            match ord {
                std::cmp::Ordering::Less => {
                    let (k, (sp, r)) = a.next().unwrap();
                    phases.diff(Some(r), None);
                    ref_delta(Some(r), None, &mut phases);
                    deletions.extend(conntrack::stale(Some(sp), None));
                    changes.push((k.clone(), None));
                }
                std::cmp::Ordering::Greater => {
                    let (k, sp) = b.next().unwrap();
                    let r = Arc::new(render(sp, &self.cluster_cidrs));
                    phases.diff(None, Some(&r));
                    ref_delta(None, Some(&r), &mut phases);
                    deletions.extend(conntrack::stale(None, Some(sp)));
                    changes.push((k.clone(), Some((sp.clone(), r))));
                }
                std::cmp::Ordering::Equal => {
                    let (k, (osp, or)) = a.next().unwrap();
                    let (_, sp) = b.next().unwrap();
                    if Arc::ptr_eq(osp, sp) || **osp == **sp {
                        continue;
                    }
                    let r = Arc::new(render(sp, &self.cluster_cidrs));
                    phases.diff(Some(or), Some(&r));
                    ref_delta(Some(or), Some(&r), &mut phases);
                    deletions.extend(conntrack::stale(Some(osp), Some(sp)));
                    changes.push((k.clone(), Some((sp.clone(), r))));
                }
            }
        }
        let n = changes.len();
        if !phases.is_empty() {
            if let Err(e) = self.apply(&phases.into_batch()) {
                tracing::warn!("incremental nftables sync failed, doing a full sync: {e}");
                self.programmed = None;
                return self.full_sync(desired);
            }
        }
        self.hairpin_refs = refs;
        let programmed = self.programmed.as_mut().expect("programmed");
        for (k, v) in changes {
            match v {
                Some(v) => {
                    programmed.insert(k, v);
                }
                None => {
                    programmed.remove(&k);
                }
            }
        }
        conntrack::execute(&self.netns, &deletions);
        Ok(n)
    }

    fn check(&mut self) -> Result<bool, Error> {
        if self.programmed.is_none() {
            return Ok(false);
        }
        let ok = match self.netns.run("nft", &["list", "chain", "inet", TABLE, "services"], None) {
            Ok(out) => out.contains("@service-ips") && out.contains("@service-nodeports"),
            Err(_) => false,
        };
        if !ok {
            self.programmed = None;
        }
        Ok(ok)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        self.programmed = None;
        let out = self.netns.run_raw("nft", &["delete", "table", "inet", TABLE], None)?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("No such file") {
                return Err(Error::Command { command: "nft delete table".into(), message: err.trim().into() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServicePortName};

    pub(crate) fn sp(eps: &[(&str, bool, bool)]) -> ServicePort {
        ServicePort {
            name: ServicePortName { namespace: "default".into(), name: "hostnames".into(), port: "default".into() },
            family: Family::V4,
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ips: vec!["10.96.0.50".parse().unwrap()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            node_port: None,
            affinity_timeout: None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
            endpoints: eps
                .iter()
                .map(|(ip, ready, local)| Endpoint {
                    ip: ip.parse().unwrap(),
                    port: 9376,
                    ready: *ready,
                    serving: *ready,
                    terminating: false,
                    node_name: None,
                    local: *local,
                })
                .collect(),
        }
    }

    #[test]
    fn base32_matches_go() {
        // Go: base32.StdEncoding.EncodeToString([]byte("foobar")) == "MZXW6YTBOI======"
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    fn cidrs() -> Vec<IpNet> {
        vec!["10.244.0.0/16".parse().unwrap()]
    }

    #[test]
    fn render_cluster_ip() {
        let s = sp(&[("10.244.1.2", true, false), ("10.244.2.2", true, false), ("10.244.3.2", false, false)]);
        let r = render(&s, &cidrs());
        let n = Names::of(&s);
        assert!(n.svc.starts_with("svc-") && n.svc.ends_with("-default/hostnames/tcp/default"), "{}", n.svc);
        // One chain, no per-endpoint chains: masquerade off-cluster sources, DNAT via numgen map.
        assert_eq!(r.chains.len(), 1, "{:?}", r.chains);
        assert_eq!(r.chains[&n.svc], vec![
            "ip saddr != 10.244.0.0/16 jump mark-for-masquerade".to_string(),
            "meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.244.1.2 . 9376, 1 : 10.244.2.2 . 9376 }".to_string(),
        ]);
        assert_eq!(r.hairpin, vec!["10.244.1.2".parse::<std::net::IpAddr>().unwrap(), "10.244.2.2".parse().unwrap()]);
        assert_eq!(r.elements[&("service-ips", "10.96.0.50 . tcp . 80".to_string())], format!("goto {}", n.svc));
        assert!(r.sets.is_empty());
        // A single endpoint: plain DNAT.
        let r = render(&sp(&[("10.244.1.2", true, false)]), &cidrs());
        assert_eq!(r.chains[&n.svc][1], "meta l4proto tcp dnat ip to 10.244.1.2:9376");
    }

    #[test]
    fn render_no_endpoints_rejects() {
        let mut s = sp(&[]);
        s.node_port = Some(30080);
        let r = render(&s, &cidrs());
        assert!(r.chains.is_empty());
        assert_eq!(r.elements[&("no-endpoint-services", "10.96.0.50 . tcp . 80".to_string())], "goto reject-chain");
        assert_eq!(r.elements[&("no-endpoint-nodeports", "tcp . 30080".to_string())], "goto reject-chain");
    }

    #[test]
    fn render_affinity_and_local() {
        let mut s = sp(&[("10.244.1.2", true, true), ("10.244.2.2", true, false)]);
        s.affinity_timeout = Some(60);
        s.node_port = Some(30080);
        s.external_ips = vec!["192.0.2.1".parse().unwrap()];
        s.external_policy_local = true;
        let r = render(&s, &cidrs());
        let n = Names::of(&s);
        assert_eq!(r.sets.len(), 2);
        assert!(r.sets.values().all(|d| d.contains("timeout 60s") && d.contains("ipv4_addr")));
        let ep = &r.chains[&n.endpoint(&s.endpoints[0])];
        assert!(ep[0].starts_with("update @aff-") && ep[0].ends_with("{ ip saddr }"), "{ep:?}");
        assert_eq!(ep[1], "meta l4proto tcp dnat ip to 10.244.1.2:9376");
        let svc = &r.chains[&n.svc];
        assert!(svc[1].starts_with("ip saddr @aff-") && svc[3].starts_with("numgen random mod 2 vmap"), "{svc:?}");
        let local = &r.chains[&n.local];
        assert_eq!(local.last().unwrap(), &format!("goto {}", n.endpoint(&s.endpoints[0])));
        let ext = &r.chains[&n.ext];
        assert!(!ext.iter().any(|r| r == "jump mark-for-masquerade"), "Local must not masquerade: {ext:?}");
        assert_eq!(ext[0], format!("ip saddr 10.244.0.0/16 goto {}", n.svc));
        assert_eq!(ext.last().unwrap(), &format!("goto {}", n.local));
        assert_eq!(r.elements[&("service-nodeports", "tcp . 30080".to_string())], format!("goto {}", n.ext));
        assert_eq!(r.elements[&("service-ips", "192.0.2.1 . tcp . 80".to_string())], format!("goto {}", n.ext));
        // No local endpoints: external traffic from outside is dropped at the end of ext-*.
        let mut s2 = s.clone();
        s2.endpoints[0].local = false;
        let r2 = render(&s2, &cidrs());
        assert_eq!(r2.chains[&n.ext].last().unwrap(), "drop");
        // internalTrafficPolicy Local with external access: a separate cluster-wide chain.
        let mut s3 = s.clone();
        s3.internal_policy_local = true;
        s3.affinity_timeout = None;
        let r3 = render(&s3, &cidrs());
        assert_eq!(r3.chains[&n.svc].last().unwrap(), &format!("goto {}", n.local));
        assert!(r3.chains[&n.cluster][0].contains("numgen random mod 2 map {"), "{:?}", r3.chains);
        assert_eq!(r3.chains[&n.ext][0], format!("ip saddr 10.244.0.0/16 goto {}", n.cluster));
    }

    #[test]
    fn render_ipv6() {
        let mut s = sp(&[]);
        s.family = Family::V6;
        s.cluster_ips = vec!["fd00:96::5".parse().unwrap()];
        s.endpoints = vec![Endpoint {
            ip: "fd00:244::2".parse().unwrap(),
            port: 8080,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
            local: false,
        }];
        let r = render(&s, &["10.244.0.0/16".parse().unwrap(), "fd00:244::/56".parse().unwrap()]);
        let n = Names::of(&s);
        assert!(n.endpoint(&s.endpoints[0]).ends_with("__fd00.244..2/8080"));
        assert_eq!(r.chains[&n.svc][0], "ip6 saddr != fd00:244::/56 jump mark-for-masquerade");
        assert_eq!(r.chains[&n.svc][1], "meta l4proto tcp dnat ip6 to [fd00:244::2]:8080");
        let mut s2 = s.clone();
        s2.endpoints.push(Endpoint { ip: "fd00:244::3".parse().unwrap(), ..s.endpoints[0].clone() });
        let r2 = render(&s2, &[]);
        assert_eq!(r2.chains[&n.svc][0], "meta l4proto tcp dnat ip6 to numgen random mod 2 map { 0 : [fd00:244::2] . 8080, 1 : [fd00:244::3] . 8080 }");
        assert!(r.elements.contains_key(&("service-ips6", "fd00:96::5 . tcp . 80".to_string())));
    }

    #[test]
    fn incremental_diff_touches_only_changes() {
        let a = render(&sp(&[("10.244.1.2", true, false), ("10.244.2.2", true, false)]), &cidrs());
        let b = render(&sp(&[("10.244.1.2", true, false)]), &cidrs());
        let mut p = Phases::default();
        p.diff(Some(&a), Some(&b));
        let batch = p.into_batch();
        let lines: Vec<&str> = batch.lines().collect();
        // Only the service chain is rewritten; the dispatch map
        // element is unchanged.
        assert!(lines[0].starts_with("flush chain inet yard-proxy svc-"), "{batch}");
        assert!(lines[2].ends_with("dnat ip to 10.244.1.2:9376"), "{batch}");
        assert_eq!(lines.len(), 3, "{batch}");
        assert!(!lines.iter().any(|l| l.contains("service-ips")), "{batch}");
        // To zero endpoints: element moves from service-ips to no-endpoint-services.
        let c = render(&sp(&[]), &cidrs());
        let mut p = Phases::default();
        p.diff(Some(&b), Some(&c));
        let batch = p.into_batch();
        let del_el = batch.find("delete element inet yard-proxy service-ips { 10.96.0.50 . tcp . 80 }").unwrap();
        let add_el = batch.find("add element inet yard-proxy no-endpoint-services { 10.96.0.50 . tcp . 80 : goto reject-chain }").unwrap();
        let del_chain = batch.find("delete chain inet yard-proxy svc-").unwrap();
        assert!(del_el < del_chain && add_el < del_chain, "{batch}");
        let mut p = Phases::default();
        p.diff(Some(&c), Some(&c));
        assert!(p.is_empty());
    }
}
