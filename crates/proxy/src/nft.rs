//! nftables backend (the default). Everything lives in one table of its own, `inet yard-proxy`
//! (both families in one table; per-family maps), programmed with `nft -f -` batches.
//!
//! Layout:
//! - `nat-prerouting` / `nat-output` (hook nat, priority dstnat) jump `services`, which dispatches
//!   through the verdict maps `service-ips{,6}` keyed by `daddr . l4proto . dport` and, for
//!   destinations that are local addresses (`fib daddr type local`), `service-nodeports{,6}` keyed by
//!   `l4proto . dport`. Lookup cost does not grow with the number of Services.
//! - Balancing is data, not rules: each endpoint list in use is a *group* whose id travels in packet
//!   mark bits 15..31, and whose endpoints are elements `group . slot : addr . port` of the maps
//!   `endpoints{,6}`. The shared chain `pick*-N` (one per endpoint count N) DNATs through
//!   `meta mark & 0xffff8000 . numgen random mod N`. Per-service anonymous sets or per-chain map
//!   bindings would each cost the kernel a walk of the commit list or of the whole map; here
//!   `endpoints{,6}` is bound from the few `pick*-N` chains only.
//! - A plain cluster-IP port (no external access, affinity or internal policy Local) has no chain:
//!   `services` first sets the mark from `service-groups{,6}` (same key as `service-ips`), and its
//!   `service-ips` element is `goto plain*-N` (masquerade off-cluster sources, `goto pick*-N`). An
//!   endpoint change only rewrites map elements. (This replaces the whole mark of such packets;
//!   the other paths keep bits 0..14.)
//! - Other ports have `svc-*` (cluster-IP traffic: masquerade mark for off-cluster sources, then
//!   group into the mark keeping bits 0..14, `goto pick*-N`), `ext-*` (NodePort / externalIPs / LB
//!   IPs, honouring externalTrafficPolicy), `cluster-*` / `local-*` (all / node-local endpoints);
//!   with ClientIP affinity the balancing rules instead look up per-endpoint dynamic sets `aff-*`
//!   and jump to one `ep-*` chain per endpoint (affinity update, DNAT).
//! - `filter-prerouting` / `filter-output` (hook filter, priority dstnat-10) send new connections to
//!   Services without usable endpoints through `no-endpoint-*` maps: `reject-chain` (TCP reset /
//!   ICMP port unreachable) or `drop` (externalTrafficPolicy Local without local endpoints).
//! - `nat-postrouting` masquerades packets carrying mark 0x4000, and hairpin traffic (a pod reaching
//!   itself: `saddr . daddr` in `hairpin{,6}`, which holds the endpoints that may be on this node).
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
use crate::{conntrack, nl, Error};

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
    /// (map, key) -> verdict or data.
    pub elements: BTreeMap<(&'static str, String), String>,
    /// Endpoint IPs this service port DNATs to that may be on this node (hairpin masquerade set;
    /// shared, refcounted).
    pub hairpin: Vec<std::net::IpAddr>,
    /// Balancing groups this port uses (their slots are elements of `endpoints{,6}`).
    pub groups: Vec<(Role, u32)>,
    /// Shared `pick*-N` chains the rules jump to.
    pub picks: Vec<(Family, usize)>,
}

/// Which endpoint list of a service port a balancing group holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// What `svc-*` spreads over (cluster endpoints, or usable ones for external-only traffic).
    Svc,
    /// `cluster-*` (all usable endpoints when the cluster IP itself is policy Local).
    Cluster,
    /// `local-*` (node-local endpoints).
    Local,
}

/// Balancing group ids live in packet mark bits 15..31 (bit 14, 0x4000, is the masquerade mark,
/// bits 0..14 are left as they were).
pub const GROUP_SHIFT: u32 = 15;
/// Number of balancing groups the mark can carry.
pub const MAX_GROUPS: u32 = 1 << (32 - GROUP_SHIFT);
const GROUP_MASK: u32 = !((1u32 << GROUP_SHIFT) - 1);
/// `pick*-N` / `plain*-N` chains created with the table, for N in 1..=PRESET_PICKS (larger ones
/// on demand).
pub const PRESET_PICKS: usize = 64;

/// Name of the shared chain that DNATs to slot `numgen random mod n` of the group in the mark.
pub fn pick_chain(f: Family, n: usize) -> String {
    format!("pick{}-{n}", suffix(f))
}

/// Name of the shared chain plain cluster-IP ports with `n` endpoints are dispatched to.
pub fn plain_chain(f: Family, n: usize) -> String {
    format!("plain{}-{n}", suffix(f))
}

/// The rules of `plain*-N`: masquerade sources outside the cluster CIDR, then `pick*-N`.
fn plain_rules(f: Family, n: usize, cluster_cidrs: &[IpNet]) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(c) = cidr_for(cluster_cidrs, f) {
        v.push(format!("{} saddr != {c} jump mark-for-masquerade", ipk(f)));
    }
    v.push(format!("goto {}", pick_chain(f, n)));
    v
}

/// `add chain` / `add rule` lines creating the shared `pick*-N` and `plain*-N` chains.
fn shared_chains(out: &mut String, f: Family, n: usize, cluster_cidrs: &[IpNet]) {
    let (pick, plain) = (pick_chain(f, n), plain_chain(f, n));
    let _ = writeln!(out, "add chain {T} {pick}");
    for rule in pick_rules(f, n) {
        let _ = writeln!(out, "add rule {T} {pick} {rule}");
    }
    let _ = writeln!(out, "add chain {T} {plain}");
    for rule in plain_rules(f, n, cluster_cidrs) {
        let _ = writeln!(out, "add rule {T} {plain} {rule}");
    }
}

/// The rules of a `pick*-N` chain: one DNAT for the transport protocols (a port mapping needs a
/// protocol match). One rule, not one per protocol: every rule that looks up `endpoints{,6}` is
/// a binding of the map, and the kernel checks each new element against every binding.
fn pick_rules(f: Family, n: usize) -> Vec<String> {
    let (ip, map) = match f {
        Family::V4 => ("ip", "endpoints"),
        Family::V6 => ("ip6", "endpoints6"),
    };
    vec![format!(
        "meta l4proto {{ tcp, udp, sctp }} dnat {ip} to meta mark & 0x{GROUP_MASK:08x} . numgen random mod {n} map @{map}"
    )]
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
        ("service-groups", Family::V4) => "service-groups",
        ("service-groups", Family::V6) => "service-groups6",
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

/// Render one service port's chains, sets and map elements. `group` hands out the balancing
/// group id for a role (stable across renders of the same port; `None` when none is left).
pub fn render(
    sp: &ServicePort,
    cluster_cidrs: &[IpNet],
    group: &mut dyn FnMut(Role) -> Option<u32>,
) -> Result<Rendered, Error> {
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
    // Only a pod on this node can reach itself through this node's rules: remote endpoints
    // never need the hairpin masquerade (endpoints without a node name might be local).
    if !(cluster.is_empty() && (!has_ext || usable.is_empty())) {
        for e in eps.iter().filter(|e| e.local || e.node_name.is_none()) {
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

    // The common case, a cluster-IP-only port without affinity or internal policy Local, has no
    // chain of its own: `service-groups` puts its group into the mark and `service-ips` sends it
    // to the shared `plain*-N` chain (masquerade off-cluster sources, then `pick*-N`).
    if !has_ext && sp.affinity_timeout.is_none() && !sp.internal_policy_local && !cluster.is_empty() {
        let g = group(Role::Svc).ok_or_else(|| Error::Other(format!("more than {MAX_GROUPS} balancing groups")))?;
        r.groups.push((Role::Svc, g));
        let mark = g << GROUP_SHIFT;
        let map = match sp.family {
            Family::V4 => "endpoints",
            Family::V6 => "endpoints6",
        };
        for (i, e) in cluster.iter().enumerate() {
            r.elements.insert((map, format!("0x{mark:08x} . {i}")), format!("{} . {}", e.ip, e.port));
        }
        r.picks.push((sp.family, cluster.len()));
        for cip in &sp.cluster_ips {
            let key = format!("{cip} . {proto} . {}", sp.port);
            r.elements.insert((map_name("service-groups", sp.family), key.clone()), format!("0x{mark:08x}"));
            r.elements.insert(
                (map_name("service-ips", sp.family), key),
                format!("goto {}", plain_chain(sp.family, cluster.len())),
            );
        }
        return Ok(r);
    }

    // Spread over `eps`: affinity lookups then a numgen verdict map over endpoint chains, or
    // (without affinity) the group id into the mark and a jump to the shared `pick*-N` chain,
    // whose one rule DNATs through the `endpoints{,6}` map: no per-endpoint objects but map
    // elements, and no set bound per service (binding a map walks all of its elements).
    let family = sp.family;
    let affinity = sp.affinity_timeout;
    let mut balance = |r: &mut Rendered, role: Role, eps: &[&Endpoint]| -> Result<Vec<String>, Error> {
        let mut rules = Vec::with_capacity(eps.len() + 1);
        if let Some(t) = affinity {
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
            let g = group(role).ok_or_else(|| Error::Other(format!("more than {MAX_GROUPS} balancing groups")))?;
            r.groups.push((role, g));
            let mark = g << GROUP_SHIFT;
            let map = match family {
                Family::V4 => "endpoints",
                Family::V6 => "endpoints6",
            };
            for (i, e) in eps.iter().enumerate() {
                r.elements.insert((map, format!("0x{mark:08x} . {i}")), format!("{} . {}", e.ip, e.port));
            }
            if !r.picks.contains(&(family, eps.len())) {
                r.picks.push((family, eps.len()));
            }
            rules.push(format!(
                "meta mark set meta mark & 0x{:08x} | 0x{mark:08x} goto {}",
                !GROUP_MASK,
                pick_chain(family, eps.len())
            ));
        }
        Ok(rules)
    };
    if separate_cluster {
        let rules = balance(&mut r, Role::Cluster, &usable)?;
        r.chains.insert(n.cluster.clone(), rules);
    }
    if need_local_chain {
        let rules = balance(&mut r, Role::Local, &local)?;
        r.chains.insert(n.local.clone(), rules);
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
            rules.extend(balance(&mut r, Role::Svc, &svc_eps)?);
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
            r.elements
                .insert((map_name(svc_map, sp.family), format!("{vip} . {proto} . {}", sp.port)), verdict.clone());
        }
        if let Some(np) = sp.node_port {
            let m = if usable.is_empty() { "no-endpoint-nodeports" } else { "service-nodeports" };
            r.elements.insert((map_name(m, sp.family), format!("{proto} . {np}")), verdict.clone());
        }
    }
    Ok(r)
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
        line(&format!("add map {T} service-groups{sfx} {{ type {ty} . inet_proto . inet_service : mark ; }}"));
        // Balancing slots: (group id in the mark, slot) -> endpoint address and port.
        line(&format!(
            "add map {T} endpoints{sfx} {{ typeof meta mark . numgen random mod 1 : {} daddr . th dport ; }}",
            ipk(f)
        ));
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
    line(&format!("add rule {T} services meta mark set ip daddr . meta l4proto . th dport map @service-groups"));
    line(&format!("add rule {T} services meta mark set ip6 daddr . meta l4proto . th dport map @service-groups6"));
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
    /// The element changes again, structured (for a netlink batch when nothing else changes).
    el_dels: Vec<(&'static str, String)>,
    el_adds: Vec<(&'static str, String, Option<String>)>,
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
                self.el_dels.push((map, key.clone()));
            }
        }
        for ((map, key), v) in &new.elements {
            if old.elements.get(&(*map, key.clone())) != Some(v) {
                let _ = writeln!(self.add_elements, "add element {T} {map} {{ {key} : {v} }}");
                self.el_adds.push((map, key.clone(), Some(v.clone())));
            }
        }
    }
    /// Shared `pick*-N` / `plain*-N` chains that do not exist yet.
    pub fn shared(&mut self, f: Family, n: usize, cluster_cidrs: &[IpNet]) {
        shared_chains(&mut self.add_chains, f, n, cluster_cidrs);
    }
    /// Hairpin set membership changes (decided by the backend's reference counts).
    pub fn hairpin(&mut self, ip: &std::net::IpAddr, add: bool) {
        let (set, el) = hairpin_element(ip);
        if add {
            let _ = writeln!(self.add_elements, "add element {T} {set} {{ {el} }}");
            self.el_adds.push((set, el, None));
        } else {
            let _ = writeln!(self.del_elements, "delete element {T} {set} {{ {el} }}");
            self.el_dels.push((set, el));
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
    /// Only map/set elements change (no sets, chains or rules).
    pub fn elements_only(&self) -> bool {
        self.add_sets.is_empty()
            && self.add_chains.is_empty()
            && self.rules.is_empty()
            && self.flush_removed.is_empty()
            && self.del_chains.is_empty()
            && self.del_sets.is_empty()
    }
    /// The element changes as one netlink batch (deletions first, as in the text batch).
    fn netlink_batch(&self) -> Result<nl::Batch, Error> {
        let mut b = nl::Batch::new(TABLE);
        for (set, key) in &self.el_dels {
            b.delete(set, key)?;
        }
        for (set, key, v) in &self.el_adds {
            b.add(set, key, v.as_deref())?;
        }
        Ok(b)
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

/// Balancing group ids: a free list over `0..MAX_GROUPS`.
#[derive(Default)]
struct Groups {
    next: u32,
    free: Vec<u32>,
}

impl Groups {
    fn alloc(&mut self) -> Option<u32> {
        if let Some(g) = self.free.pop() {
            return Some(g);
        }
        if self.next >= MAX_GROUPS {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }
}

/// Render `sp`, keeping the group ids `old` had for the same roles.
fn render_with(
    sp: &ServicePort,
    cidrs: &[IpNet],
    old: Option<&Rendered>,
    groups: &mut Groups,
) -> Result<Rendered, Error> {
    let mut taken: Vec<u32> = Vec::new();
    let r = render(sp, cidrs, &mut |role| {
        if let Some(g) = old.and_then(|o| o.groups.iter().find(|(r, _)| *r == role)).map(|(_, g)| *g) {
            return Some(g);
        }
        let g = groups.alloc()?;
        taken.push(g);
        Some(g)
    });
    if r.is_err() {
        groups.free.extend(taken);
    }
    r
}

/// The nftables backend.
pub struct NftBackend {
    netns: Netns,
    cluster_cidrs: Vec<IpNet>,
    /// What is programmed, per service port; `None` before the first successful (full) sync.
    programmed: Option<Programmed>,
    /// Endpoint IP -> number of service ports using it (membership of the hairpin sets).
    hairpin_refs: BTreeMap<std::net::IpAddr, usize>,
    groups: Groups,
    /// `pick*-N` chains that exist.
    picks: std::collections::BTreeSet<(Family, usize)>,
    /// nf_tables netlink socket in the node's namespace (`None` until first needed, or when it
    /// cannot be opened: then everything goes through `nft`).
    sock: Option<nl::Socket>,
}

impl NftBackend {
    pub fn new(netns: Netns, cluster_cidrs: Vec<IpNet>) -> Self {
        NftBackend {
            netns,
            cluster_cidrs,
            programmed: None,
            hairpin_refs: BTreeMap::new(),
            groups: Groups::default(),
            picks: Default::default(),
            sock: None,
        }
    }

    fn sock(&mut self) -> Option<&nl::Socket> {
        if self.sock.is_none() {
            match nl::Socket::open(&self.netns) {
                Ok(s) => self.sock = Some(s),
                Err(e) => tracing::debug!("nf_tables netlink unavailable ({e}); using nft"),
            }
        }
        self.sock.as_ref()
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
        let t = std::time::Instant::now();
        let r = self.netns.run("nft", &["-f", "-"], Some(batch)).map(|_| ());
        tracing::debug!(bytes = batch.len(), elapsed = ?t.elapsed(), "nft -f");
        r
    }

    fn full_sync(&mut self, desired: &DesiredState) -> Result<usize, Error> {
        self.programmed = None;
        self.groups = Groups::default();
        let mut programmed = BTreeMap::new();
        let mut refs: BTreeMap<std::net::IpAddr, usize> = BTreeMap::new();
        let mut picks: std::collections::BTreeSet<(Family, usize)> =
            (1..=PRESET_PICKS).flat_map(|n| [(Family::V4, n), (Family::V6, n)]).collect();
        for (k, sp) in &desired.services {
            let r = Arc::new(render_with(sp, &self.cluster_cidrs, None, &mut self.groups)?);
            for ip in &r.hairpin {
                *refs.entry(*ip).or_default() += 1;
            }
            picks.extend(r.picks.iter().copied());
            programmed.insert(k.clone(), (sp.clone(), r));
        }
        // Order: table and maps, the pick chains (their rules bind `endpoints{,6}` while still
        // empty), service sets/chains/rules, then every element.
        //
        // Where the table does not exist yet (first start, after `cleanup`, after someone deleted
        // it) the structure goes in with `nft -f` and the elements (one per endpoint: the bulk)
        // in one netlink batch right after it, which skips nft's parser. Over an existing table
        // everything is one `nft -f` batch, so the replacement is atomic for traffic.
        let t0 = std::time::Instant::now();
        let sock = self.sock.take().or_else(|| nl::Socket::open(&self.netns).ok());
        let fresh = sock.as_ref().is_some_and(|s| matches!(s.table_exists(TABLE), Ok(false)));
        let mut out = String::with_capacity(200 * desired.services.len() + 100 * refs.len() + 16384);
        if fresh {
            let _ = writeln!(out, "add table {T}");
        } else {
            let _ = writeln!(out, "add table {T}");
            let _ = writeln!(out, "delete table {T}");
            let _ = writeln!(out, "add table {T}");
        }
        out.push_str(&skeleton(&self.cluster_cidrs));
        for (f, n) in &picks {
            shared_chains(&mut out, *f, *n, &self.cluster_cidrs);
        }
        let mut elements: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for (_, r) in programmed.values() {
            emit_full(&mut out, r, &mut elements);
        }
        for ip in refs.keys() {
            let (set, el) = hairpin_element(ip);
            elements.entry(set).or_default().push(el);
        }
        let render_time = t0.elapsed();
        match (fresh, &sock) {
            (true, Some(sock)) => {
                let mut batch = nl::Batch::new(TABLE);
                for (map, els) in &elements {
                    for el in els {
                        match el.split_once(" : ") {
                            Some((k, v)) => batch.add(map, k, Some(v))?,
                            None => batch.add(map, el, None)?,
                        }
                    }
                }
                let t1 = std::time::Instant::now();
                self.apply(&out)?;
                let t2 = std::time::Instant::now();
                if let Err(e) = sock.commit(batch) {
                    // Leave no half-programmed table behind: the next sync starts over.
                    let _ = self.netns.run("nft", &["delete", "table", "inet", TABLE], None);
                    self.sock = None;
                    return Err(e);
                }
                tracing::debug!(
                    render = ?render_time,
                    encode = ?(t1 - t0 - render_time),
                    nft = ?(t2 - t1),
                    netlink = ?t2.elapsed(),
                    "nftables full sync (structure via nft, elements via netlink)"
                );
            }
            _ => {
                for (map, els) in elements {
                    for chunk in els.chunks(1000) {
                        let _ = writeln!(out, "add element {T} {map} {{ {} }}", chunk.join(", "));
                    }
                }
                let t1 = std::time::Instant::now();
                self.apply(&out)?;
                tracing::debug!(render = ?render_time, nft = ?t1.elapsed(), "nftables full sync (one nft batch)");
            }
        }
        self.sock = sock;
        self.hairpin_refs = refs;
        self.picks = picks;
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
        // Changed hairpin reference counts (the whole map is not copied: it has one entry per
        // endpoint IP).
        let base_refs = &self.hairpin_refs;
        let mut refs: std::collections::HashMap<std::net::IpAddr, usize> = std::collections::HashMap::new();
        // Group ids to release once the batch is in (never reused within one batch).
        let mut released: Vec<u32> = Vec::new();
        let mut new_picks: Vec<(Family, usize)> = Vec::new();
        let mut groups = std::mem::take(&mut self.groups);
        let mut ref_delta = |old: Option<&Rendered>, new: Option<&Rendered>, phases: &mut Phases| {
            for ip in old.map(|r| r.hairpin.as_slice()).unwrap_or(&[]) {
                if new.is_some_and(|n| n.hairpin.contains(ip)) {
                    continue;
                }
                let c = refs.entry(*ip).or_insert_with(|| base_refs.get(ip).copied().unwrap_or(0));
                if *c > 0 {
                    *c -= 1;
                    if *c == 0 {
                        phases.hairpin(ip, false);
                    }
                }
            }
            for ip in new.map(|r| r.hairpin.as_slice()).unwrap_or(&[]) {
                if old.is_some_and(|o| o.hairpin.contains(ip)) {
                    continue;
                }
                let c = refs.entry(*ip).or_insert_with(|| base_refs.get(ip).copied().unwrap_or(0));
                *c += 1;
                if *c == 1 {
                    phases.hairpin(ip, true);
                }
            }
        };
        let mut group_delta = |old: Option<&Rendered>, new: Option<&Rendered>| {
            for (_, g) in old.map(|r| r.groups.as_slice()).unwrap_or(&[]) {
                if !new.is_some_and(|n| n.groups.iter().any(|(_, x)| x == g)) {
                    released.push(*g);
                }
            }
            for p in new.map(|r| r.picks.as_slice()).unwrap_or(&[]) {
                if !self.picks.contains(p) && !new_picks.contains(p) {
                    new_picks.push(*p);
                }
            }
        };
        let mut failed = None;
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
                    group_delta(Some(r), None);
                    deletions.extend(conntrack::stale(Some(sp), None));
                    changes.push((k.clone(), None));
                }
                std::cmp::Ordering::Greater => {
                    let (k, sp) = b.next().unwrap();
                    let r = match render_with(sp, &self.cluster_cidrs, None, &mut groups) {
                        Ok(r) => Arc::new(r),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    };
                    phases.diff(None, Some(&r));
                    ref_delta(None, Some(&r), &mut phases);
                    group_delta(None, Some(&r));
                    deletions.extend(conntrack::stale(None, Some(sp)));
                    changes.push((k.clone(), Some((sp.clone(), r))));
                }
                std::cmp::Ordering::Equal => {
                    let (k, (osp, or)) = a.next().unwrap();
                    let (_, sp) = b.next().unwrap();
                    if Arc::ptr_eq(osp, sp) || **osp == **sp {
                        continue;
                    }
                    let r = match render_with(sp, &self.cluster_cidrs, Some(or), &mut groups) {
                        Ok(r) => Arc::new(r),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    };
                    phases.diff(Some(or), Some(&r));
                    ref_delta(Some(or), Some(&r), &mut phases);
                    group_delta(Some(or), Some(&r));
                    deletions.extend(conntrack::stale(Some(osp), Some(sp)));
                    changes.push((k.clone(), Some((sp.clone(), r))));
                }
            }
        }
        self.groups = groups;
        if let Some(e) = failed {
            tracing::warn!("nftables sync: {e}; doing a full sync");
            return self.full_sync(desired);
        }
        for (f, n) in &new_picks {
            phases.shared(*f, *n, &self.cluster_cidrs);
        }
        let n = changes.len();
        // Element-only changes (endpoints, plain cluster-IP ports coming and going) go in as one
        // netlink batch: no `nft` process, no parsing. Anything else through `nft -f`.
        let mut done = phases.is_empty();
        if !done && phases.elements_only() {
            let batch = phases.netlink_batch();
            if let (Ok(batch), Some(sock)) = (batch, self.sock()) {
                match sock.commit(batch) {
                    Ok(()) => done = true,
                    Err(e) => {
                        tracing::warn!("incremental nftables sync over netlink failed, doing a full sync: {e}");
                        self.sock = None;
                        return self.full_sync(desired);
                    }
                }
            }
        }
        if !done {
            if let Err(e) = self.apply(&phases.into_batch()) {
                tracing::warn!("incremental nftables sync failed, doing a full sync: {e}");
                return self.full_sync(desired);
            }
        }
        for (ip, c) in refs {
            if c == 0 {
                self.hairpin_refs.remove(&ip);
            } else {
                self.hairpin_refs.insert(ip, c);
            }
        }
        self.picks.extend(new_picks);
        self.groups.free.extend(released);
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
        // The dispatch chain must still hold its rules. Asked over netlink: `nft list chain`
        // would fetch every map element of the table (seconds at 10,000 Services).
        let expected =
            skeleton(&self.cluster_cidrs).lines().filter(|l| l.starts_with(&format!("add rule {T} services "))).count();
        let ok = match self.sock().map(|s| s.rule_count(TABLE, "services")) {
            Some(Ok(n)) => n == expected,
            Some(Err(_)) => false,
            None => match self.netns.run("nft", &["list", "chain", "inet", TABLE, "services"], None) {
                Ok(out) => out.contains("@service-ips") && out.contains("@service-nodeports"),
                Err(_) => false,
            },
        };
        if !ok {
            self.programmed = None;
        }
        Ok(ok)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        self.programmed = None;
        self.sock = None;
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

    /// Render with group ids 7 (Svc), 8 (Cluster), 9 (Local).
    fn rend(sp: &ServicePort, cidrs: &[IpNet]) -> Rendered {
        render(sp, cidrs, &mut |role| {
            Some(match role {
                Role::Svc => 7,
                Role::Cluster => 8,
                Role::Local => 9,
            })
        })
        .unwrap()
    }

    fn cidrs() -> Vec<IpNet> {
        vec!["10.244.0.0/16".parse().unwrap()]
    }

    #[test]
    fn render_plain_cluster_ip() {
        let s = sp(&[("10.244.1.2", true, false), ("10.244.2.2", true, false), ("10.244.3.2", false, false)]);
        let r = rend(&s, &cidrs());
        // No chain of its own: group 7 into the mark, dispatch to the shared plain-2 chain.
        assert!(r.chains.is_empty(), "{:?}", r.chains);
        let key = "10.96.0.50 . tcp . 80".to_string();
        assert_eq!(r.elements[&("service-groups", key.clone())], "0x00038000");
        assert_eq!(r.elements[&("service-ips", key)], "goto plain-2");
        assert_eq!(r.elements[&("endpoints", "0x00038000 . 0".to_string())], "10.244.1.2 . 9376");
        assert_eq!(r.elements[&("endpoints", "0x00038000 . 1".to_string())], "10.244.2.2 . 9376");
        assert_eq!(r.elements.len(), 4);
        assert_eq!(r.groups, vec![(Role::Svc, 7)]);
        assert_eq!(r.picks, vec![(Family::V4, 2)]);
        assert_eq!(
            plain_rules(Family::V4, 2, &cidrs()),
            vec!["ip saddr != 10.244.0.0/16 jump mark-for-masquerade".to_string(), "goto pick-2".to_string(),]
        );
        assert_eq!(plain_rules(Family::V6, 3, &cidrs()), vec!["goto pick6-3".to_string()]);
        assert_eq!(pick_rules(Family::V4, 2), vec!["meta l4proto { tcp, udp, sctp } dnat ip to meta mark & 0xffff8000 . numgen random mod 2 map @endpoints".to_string()]);
        assert_eq!(pick_rules(Family::V6, 3), vec!["meta l4proto { tcp, udp, sctp } dnat ip6 to meta mark & 0xffff8000 . numgen random mod 3 map @endpoints6".to_string()]);
        // Endpoints with no node name may be local: they join the hairpin set; remote ones do not.
        assert_eq!(r.hairpin, vec!["10.244.1.2".parse::<std::net::IpAddr>().unwrap(), "10.244.2.2".parse().unwrap()]);
        let mut remote = s.clone();
        remote.endpoints[0].node_name = Some("other".into());
        remote.endpoints[1].node_name = Some("other".into());
        remote.endpoints[1].local = true;
        assert_eq!(rend(&remote, &cidrs()).hairpin, vec!["10.244.2.2".parse::<std::net::IpAddr>().unwrap()]);
    }

    #[test]
    fn render_cluster_ip_with_node_port() {
        let mut s = sp(&[("10.244.1.2", true, false), ("10.244.2.2", true, false)]);
        s.node_port = Some(30080);
        let r = rend(&s, &cidrs());
        let n = Names::of(&s);
        assert!(n.svc.starts_with("svc-") && n.svc.ends_with("-default/hostnames/tcp/default"), "{}", n.svc);
        // svc-* masquerades off-cluster sources, puts group 7 into the mark (keeping the
        // masquerade bit), then the shared pick chain for two endpoints; no per-endpoint chains.
        assert_eq!(r.chains.len(), 2, "{:?}", r.chains);
        assert_eq!(
            r.chains[&n.svc],
            vec![
                "ip saddr != 10.244.0.0/16 jump mark-for-masquerade".to_string(),
                "meta mark set meta mark & 0x00007fff | 0x00038000 goto pick-2".to_string(),
            ]
        );
        assert_eq!(r.chains[&n.ext], vec!["jump mark-for-masquerade".to_string(), format!("goto {}", n.svc)]);
        assert_eq!(r.elements[&("endpoints", "0x00038000 . 1".to_string())], "10.244.2.2 . 9376");
        assert_eq!(r.elements[&("service-ips", "10.96.0.50 . tcp . 80".to_string())], format!("goto {}", n.svc));
        assert_eq!(r.elements[&("service-nodeports", "tcp . 30080".to_string())], format!("goto {}", n.ext));
        assert!(!r.elements.keys().any(|(m, _)| *m == "service-groups"));
        assert!(r.sets.is_empty());
        // A single endpoint: plain DNAT.
        let mut s1 = sp(&[("10.244.1.2", true, false)]);
        s1.node_port = Some(30080);
        let r = rend(&s1, &cidrs());
        assert_eq!(r.chains[&n.svc][1], "meta l4proto tcp dnat ip to 10.244.1.2:9376");
        assert!(r.groups.is_empty());
    }

    #[test]
    fn render_no_endpoints_rejects() {
        let mut s = sp(&[]);
        s.node_port = Some(30080);
        let r = rend(&s, &cidrs());
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
        let r = rend(&s, &cidrs());
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
        let r2 = rend(&s2, &cidrs());
        assert_eq!(r2.chains[&n.ext].last().unwrap(), "drop");
        // internalTrafficPolicy Local with external access: a separate cluster-wide chain.
        let mut s3 = s.clone();
        s3.internal_policy_local = true;
        s3.affinity_timeout = None;
        let r3 = rend(&s3, &cidrs());
        assert_eq!(r3.chains[&n.svc].last().unwrap(), &format!("goto {}", n.local));
        assert_eq!(
            r3.chains[&n.cluster][0], "meta mark set meta mark & 0x00007fff | 0x00040000 goto pick-2",
            "{:?}",
            r3.chains
        );
        assert_eq!(r3.groups, vec![(Role::Cluster, 8)]);
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
        s.node_port = Some(30080);
        let r = rend(&s, &["10.244.0.0/16".parse().unwrap(), "fd00:244::/56".parse().unwrap()]);
        let n = Names::of(&s);
        assert!(n.endpoint(&s.endpoints[0]).ends_with("__fd00.244..2/8080"));
        assert_eq!(r.chains[&n.svc][0], "ip6 saddr != fd00:244::/56 jump mark-for-masquerade");
        assert_eq!(r.chains[&n.svc][1], "meta l4proto tcp dnat ip6 to [fd00:244::2]:8080");
        assert!(r.elements.contains_key(&("service-ips6", "fd00:96::5 . tcp . 80".to_string())));
        assert!(r.elements.contains_key(&("service-nodeports6", "tcp . 30080".to_string())));
        let mut s2 = s.clone();
        s2.endpoints.push(Endpoint { ip: "fd00:244::3".parse().unwrap(), ..s.endpoints[0].clone() });
        let r2 = rend(&s2, &[]);
        assert_eq!(r2.chains[&n.svc][0], "meta mark set meta mark & 0x00007fff | 0x00038000 goto pick6-2");
        assert_eq!(r2.elements[&("endpoints6", "0x00038000 . 1".to_string())], "fd00:244::3 . 8080");
        // Without the NodePort: the plain path, through the v6 maps.
        s2.node_port = None;
        let r3 = rend(&s2, &[]);
        assert!(r3.chains.is_empty());
        assert_eq!(r3.elements[&("service-groups6", "fd00:96::5 . tcp . 80".to_string())], "0x00038000");
        assert_eq!(r3.elements[&("service-ips6", "fd00:96::5 . tcp . 80".to_string())], "goto plain6-2");
    }

    #[test]
    fn incremental_diff_touches_only_changes() {
        let a = rend(&sp(&[("10.244.1.2", true, false), ("10.244.2.2", true, false)]), &cidrs());
        let b = rend(&sp(&[("10.244.1.2", true, false)]), &cidrs());
        let mut p = Phases::default();
        p.diff(Some(&a), Some(&b));
        let batch = p.into_batch();
        let lines: Vec<&str> = batch.lines().collect();
        // Map elements only: slot 1 goes, the dispatch moves to plain-1; no chain is touched.
        assert_eq!(
            lines,
            vec![
                "delete element inet yard-proxy endpoints { 0x00038000 . 1 }",
                "delete element inet yard-proxy service-ips { 10.96.0.50 . tcp . 80 }",
                "add element inet yard-proxy service-ips { 10.96.0.50 . tcp . 80 : goto plain-1 }",
            ],
            "{batch}"
        );
        // Three endpoints to two (the middle one gone): slot 1 is rewritten, slot 2 deleted;
        // slot 0 and the group are untouched.
        let a3 = rend(
            &sp(&[("10.244.1.2", true, false), ("10.244.2.2", true, false), ("10.244.3.2", true, false)]),
            &cidrs(),
        );
        let a2 = rend(&sp(&[("10.244.1.2", true, false), ("10.244.3.2", true, false)]), &cidrs());
        let mut p = Phases::default();
        p.diff(Some(&a3), Some(&a2));
        let batch = p.into_batch();
        assert!(!batch.contains("0x00038000 . 0") && !batch.contains("service-groups"), "{batch}");
        let del1 = batch.find("delete element inet yard-proxy endpoints { 0x00038000 . 1 }").unwrap();
        let add1 = batch.find("add element inet yard-proxy endpoints { 0x00038000 . 1 : 10.244.3.2 . 9376 }").unwrap();
        assert!(del1 < add1, "{batch}");
        assert!(batch.contains("delete element inet yard-proxy endpoints { 0x00038000 . 2 }"), "{batch}");
        assert!(
            batch.contains("add element inet yard-proxy service-ips { 10.96.0.50 . tcp . 80 : goto plain-2 }"),
            "{batch}"
        );
        // A port with a chain (NodePort), one endpoint to none: its elements move to the
        // no-endpoint maps before its chains go.
        let mut one = sp(&[("10.244.1.2", true, false)]);
        one.node_port = Some(30080);
        let mut none = sp(&[]);
        none.node_port = Some(30080);
        let (b, c) = (rend(&one, &cidrs()), rend(&none, &cidrs()));
        let mut p = Phases::default();
        p.diff(Some(&b), Some(&c));
        let batch = p.into_batch();
        let del_el = batch.find("delete element inet yard-proxy service-ips { 10.96.0.50 . tcp . 80 }").unwrap();
        let add_el = batch
            .find("add element inet yard-proxy no-endpoint-services { 10.96.0.50 . tcp . 80 : goto reject-chain }")
            .unwrap();
        let del_chain = batch.find("delete chain inet yard-proxy svc-").unwrap();
        assert!(del_el < del_chain && add_el < del_chain, "{batch}");
        let mut p = Phases::default();
        p.diff(Some(&c), Some(&c));
        assert!(p.is_empty());
    }
}
