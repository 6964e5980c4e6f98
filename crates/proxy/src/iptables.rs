//! iptables backend in kube-proxy's layout, applied with `iptables-restore --noflush` (and
//! `ip6tables-restore` for IPv6 service ports):
//!
//! - nat `KUBE-SERVICES` (from PREROUTING and OUTPUT): per cluster IP a `KUBE-MARK-MASQ` rule for
//!   sources outside the cluster CIDR and a jump to `KUBE-SVC-<hash>`; externalIPs and LB IPs jump to
//!   `KUBE-EXT-<hash>`; the last rule sends local destinations to `KUBE-NODEPORTS`.
//! - `KUBE-SVC-<hash>` spreads with `-m statistic --mode random --probability 1/(n-i)` over
//!   `KUBE-SEP-<hash>` chains (after `-m recent --rcheck` affinity rules); `KUBE-SVL-<hash>` does the
//!   same over node-local endpoints; each `KUBE-SEP` marks hairpin traffic and DNATs.
//! - `KUBE-POSTROUTING` (from POSTROUTING) masquerades packets marked 0x4000 by `KUBE-MARK-MASQ`.
//! - filter `KUBE-SERVICES` / `KUBE-EXTERNAL-SERVICES` (from INPUT, FORWARD, OUTPUT for new
//!   connections) reject traffic to Services without endpoints (TCP reset / ICMP port unreachable)
//!   and drop external traffic of externalTrafficPolicy Local Services without local endpoints.
//!
//! Chain hashes are kube-proxy's: the first 16 characters of base32(sha256(servicePortName +
//! protocol [+ endpoint])). Syncs after the first rewrite only the top-level chains and the chains
//! of changed service ports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use ipnet::IpNet;

use crate::exec::Netns;
use crate::model::{DesiredState, Endpoint, Family, ServicePort, ServicePortKey};
use crate::nft::hash;
use crate::{conntrack, Error};

/// `KUBE-SVC-` + kube-proxy's portProtoHash.
pub fn svc_chain(sp: &ServicePort) -> String {
    format!("KUBE-SVC-{}", hash(&format!("{}{}", sp.name, sp.protocol.lower()), 16))
}
pub fn ext_chain(sp: &ServicePort) -> String {
    format!("KUBE-EXT-{}", hash(&format!("{}{}", sp.name, sp.protocol.lower()), 16))
}
pub fn svl_chain(sp: &ServicePort) -> String {
    format!("KUBE-SVL-{}", hash(&format!("{}{}", sp.name, sp.protocol.lower()), 16))
}
/// `KUBE-SEP-` + kube-proxy's servicePortEndpointChainName hash.
pub fn sep_chain(sp: &ServicePort, ep: &Endpoint) -> String {
    format!("KUBE-SEP-{}", hash(&format!("{}{}{}", sp.name, sp.protocol.lower(), ep.addr()), 16))
}

const TOP_NAT: [&str; 4] = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"];
const TOP_FILTER: [&str; 2] = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"];

/// Jumps from the built-in chains: (table, chain, rule spec).
fn builtin_jumps() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let portals = ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"];
    let ext = [
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-m",
        "comment",
        "--comment",
        "kubernetes externally-visible service portals",
        "-j",
        "KUBE-EXTERNAL-SERVICES",
    ];
    let new_portals = [&["-m", "conntrack", "--ctstate", "NEW"][..], &portals[..]].concat();
    let mut v = vec![
        ("nat", "PREROUTING", portals.to_vec()),
        ("nat", "OUTPUT", portals.to_vec()),
        (
            "nat",
            "POSTROUTING",
            vec!["-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"],
        ),
    ];
    for c in ["INPUT", "FORWARD", "OUTPUT"] {
        v.push(("filter", c, new_portals.clone()));
        v.push(("filter", c, ext.to_vec()));
    }
    v
}

/// Rendered rules of one service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub nat_services: String,
    pub nat_nodeports: String,
    pub filter_services: String,
    pub filter_external: String,
    /// Own nat chains: name -> rule lines.
    pub chains: BTreeMap<String, String>,
}

fn host(ip: &std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}/32"),
        std::net::IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn cidr_for(cidrs: &[IpNet], f: Family) -> Option<&IpNet> {
    cidrs.iter().find(|c| matches!((c, f), (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)))
}

/// Render the rules of one service port in kube-proxy's layout.
pub fn render(sp: &ServicePort, cluster_cidrs: &[IpNet]) -> Rendered {
    let mut r = Rendered::default();
    let p = sp.protocol.lower();
    let name = sp.name.to_string();
    let svc = svc_chain(sp);
    let ext = ext_chain(sp);
    let svl = svl_chain(sp);
    let cidr = cidr_for(cluster_cidrs, sp.family);
    let cluster = sp.cluster_endpoints();
    let usable = sp.usable_endpoints();
    let local = sp.local_endpoints();
    let has_ext = sp.has_external();
    let need_svc = !usable.is_empty() && (!sp.internal_policy_local || has_ext);
    let need_svl = !local.is_empty() && (sp.internal_policy_local || (has_ext && sp.external_policy_local));
    let reject = match (sp.protocol, sp.family) {
        (crate::model::Protocol::Tcp, _) => "REJECT --reject-with tcp-reset",
        (_, Family::V4) => "REJECT --reject-with icmp-port-unreachable",
        (_, Family::V6) => "REJECT --reject-with icmp6-port-unreachable",
    };

    let mut seps: Vec<&Endpoint> = Vec::new();
    if need_svc {
        seps.extend(usable.iter().copied());
    }
    if need_svl {
        for e in &local {
            if !seps.iter().any(|x| x.ip == e.ip && x.port == e.port) {
                seps.push(e);
            }
        }
    }
    for e in &seps {
        let sep = sep_chain(sp, e);
        let mut s = String::new();
        let _ = writeln!(s, "-A {sep} -s {} -j KUBE-MARK-MASQ", host(&e.ip));
        match sp.affinity_timeout {
            Some(_) => {
                let _ = writeln!(s, "-A {sep} -p {p} -m recent --set --name {sep} --mask {} --rsource -m {p} -j DNAT --to-destination {}",
                    if sp.family == Family::V4 { "255.255.255.255" } else { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" }, e.addr());
            }
            None => {
                let _ = writeln!(s, "-A {sep} -p {p} -m {p} -j DNAT --to-destination {}", e.addr());
            }
        }
        r.chains.insert(sep, s);
    }
    let balance = |chain: &str, eps: &[&Endpoint]| -> String {
        let mut s = String::new();
        if let Some(t) = sp.affinity_timeout {
            for e in eps {
                let sep = sep_chain(sp, e);
                let _ = writeln!(
                    s,
                    "-A {chain} -m comment --comment \"{name} -> {}\" -m recent --rcheck --seconds {t} --reap --name {sep} --mask {} --rsource -j {sep}",
                    e.addr(),
                    if sp.family == Family::V4 { "255.255.255.255" } else { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" }
                );
            }
        }
        let n = eps.len();
        for (i, e) in eps.iter().enumerate() {
            let sep = sep_chain(sp, e);
            if i + 1 < n {
                let _ = writeln!(
                    s,
                    "-A {chain} -m statistic --mode random --probability {:.11} -j {sep}",
                    1.0 / (n - i) as f64
                );
            } else {
                let _ = writeln!(s, "-A {chain} -j {sep}");
            }
        }
        s
    };
    if need_svc {
        r.chains.insert(svc.clone(), balance(&svc, &usable));
    }
    if need_svl {
        r.chains.insert(svl.clone(), balance(&svl, &local));
    }

    // Cluster IPs.
    for cip in &sp.cluster_ips {
        let c = format!("-m comment --comment \"{name} cluster IP\"");
        if !cluster.is_empty() {
            let target = if sp.internal_policy_local { &svl } else { &svc };
            if let Some(cidr) = cidr {
                let _ = writeln!(
                    r.nat_services,
                    "-A KUBE-SERVICES ! -s {cidr} -d {} -p {p} {c} -m {p} --dport {} -j KUBE-MARK-MASQ",
                    host(cip),
                    sp.port
                );
            }
            let _ = writeln!(
                r.nat_services,
                "-A KUBE-SERVICES -d {} -p {p} {c} -m {p} --dport {} -j {target}",
                host(cip),
                sp.port
            );
        } else {
            let (why, verdict) =
                if usable.is_empty() { ("has no endpoints", reject) } else { ("has no local endpoints", "DROP") };
            let _ = writeln!(
                r.filter_services,
                "-A KUBE-SERVICES -d {} -p {p} -m comment --comment \"{name} {why}\" -m {p} --dport {} -j {verdict}",
                host(cip),
                sp.port
            );
        }
    }

    // External destinations.
    if has_ext {
        if !usable.is_empty() {
            let mut s = String::new();
            if !sp.external_policy_local {
                let _ = writeln!(s, "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ");
                let _ = writeln!(s, "-A {ext} -j {svc}");
            } else {
                if let Some(cidr) = cidr {
                    let _ = writeln!(s, "-A {ext} -s {cidr} -m comment --comment \"pod traffic for {name} external destinations\" -j {svc}");
                }
                let _ = writeln!(s, "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ");
                let _ = writeln!(s, "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {svc}");
                if need_svl {
                    let _ = writeln!(s, "-A {ext} -j {svl}");
                }
            }
            r.chains.insert(ext.clone(), s);
        }
        let ext_ok = !sp.external_endpoints().is_empty();
        let (why, verdict) =
            if usable.is_empty() { ("has no endpoints", reject) } else { ("has no local endpoints", "DROP") };
        for (ip, kind) in sp
            .external_ips
            .iter()
            .map(|i| (i, "external IP"))
            .chain(sp.load_balancer_ips.iter().map(|i| (i, "loadbalancer IP")))
        {
            if !usable.is_empty() {
                let _ = writeln!(
                    r.nat_services,
                    "-A KUBE-SERVICES -d {} -p {p} -m comment --comment \"{name} {kind}\" -m {p} --dport {} -j {ext}",
                    host(ip),
                    sp.port
                );
            }
            if !ext_ok {
                let _ = writeln!(
                    r.filter_external,
                    "-A KUBE-EXTERNAL-SERVICES -d {} -p {p} -m comment --comment \"{name} {why}\" -m {p} --dport {} -j {verdict}",
                    host(ip),
                    sp.port
                );
            }
        }
        if let Some(np) = sp.node_port {
            if !usable.is_empty() {
                let _ = writeln!(
                    r.nat_nodeports,
                    "-A KUBE-NODEPORTS -p {p} -m comment --comment \"{name}\" -m {p} --dport {np} -j {ext}"
                );
            }
            if !ext_ok {
                let _ = writeln!(
                    r.filter_external,
                    "-A KUBE-EXTERNAL-SERVICES -m addrtype --dst-type LOCAL -p {p} -m comment --comment \"{name} {why}\" -m {p} --dport {np} -j {verdict}"
                );
            }
        }
    }
    r
}

/// What is programmed per service port: the model it came from and its rendering.
type Programmed = BTreeMap<ServicePortKey, (Arc<ServicePort>, Arc<Rendered>)>;

/// The iptables backend.
pub struct IptablesBackend {
    netns: Netns,
    cluster_cidrs: Vec<IpNet>,
    programmed: Option<Programmed>,
}

fn restore_cmd(f: Family) -> &'static str {
    match f {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    }
}
fn tables_cmd(f: Family) -> &'static str {
    match f {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

fn is_own_chain(c: &str) -> bool {
    ["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-SVL-"].iter().any(|p| c.starts_with(p))
}

impl IptablesBackend {
    pub fn new(netns: Netns, cluster_cidrs: Vec<IpNet>) -> Self {
        IptablesBackend { netns, cluster_cidrs, programmed: None }
    }

    fn ensure_jumps(&self, f: Family) -> Result<(), Error> {
        for (table, chain, spec) in builtin_jumps() {
            let mut check = vec!["-w", "-t", table, "-C", chain];
            check.extend(spec.iter());
            if self.netns.run_raw(tables_cmd(f), &check, None)?.status.success() {
                continue;
            }
            let mut ins = vec!["-w", "-t", table, "-I", chain];
            ins.extend(spec.iter());
            self.netns.run(tables_cmd(f), &ins, None)?;
        }
        Ok(())
    }

    /// Our chains present in the kernel (nat table), to delete leftovers at a full sync.
    fn existing_chains(&self, f: Family) -> BTreeSet<String> {
        match self.netns.run(&format!("{}-save", tables_cmd(f)), &["-t", "nat"], None) {
            Ok(out) => out
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| is_own_chain(c))
                .map(String::from)
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Build and apply the restore input for family `f`. `changed`: chains to (re)write;
    /// `removed`: chains to delete.
    fn write(
        &self,
        f: Family,
        state: &Programmed,
        changed: &BTreeMap<String, String>,
        removed: &BTreeSet<String>,
    ) -> Result<(), Error> {
        let mut filter_services = String::new();
        let mut filter_external = String::new();
        let mut nat_services = String::new();
        let mut nat_nodeports = String::new();
        for (k, (_, r)) in state {
            if k.family != f {
                continue;
            }
            filter_services.push_str(&r.filter_services);
            filter_external.push_str(&r.filter_external);
            nat_services.push_str(&r.nat_services);
            nat_nodeports.push_str(&r.nat_nodeports);
        }
        let mut s = String::with_capacity(nat_services.len() * 2 + 4096);
        s.push_str("*filter\n");
        for c in TOP_FILTER {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        s.push_str(&filter_services);
        s.push_str(&filter_external);
        s.push_str("COMMIT\n*nat\n");
        for c in TOP_NAT {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for c in changed.keys() {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for c in removed {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        s.push_str(&nat_services);
        s.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
        s.push_str(&nat_nodeports);
        s.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
        s.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
        s.push_str("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n");
        s.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
        for rules in changed.values() {
            s.push_str(rules);
        }
        for c in removed {
            let _ = writeln!(s, "-X {c}");
        }
        s.push_str("COMMIT\n");
        self.netns.run(restore_cmd(f), &["-w", "--noflush"], Some(&s)).map(|_| ())
    }

    fn families(state: &DesiredState) -> BTreeSet<Family> {
        let mut f: BTreeSet<Family> = state.services.keys().map(|k| k.family).collect();
        f.insert(Family::V4);
        f
    }

    fn full_sync(&mut self, desired: &DesiredState) -> Result<usize, Error> {
        let mut programmed = BTreeMap::new();
        for (k, sp) in &desired.services {
            programmed.insert(k.clone(), (sp.clone(), Arc::new(render(sp, &self.cluster_cidrs))));
        }
        for f in Self::families(desired) {
            let mut changed = BTreeMap::new();
            for (k, (_, r)) in &programmed {
                if k.family == f {
                    for (c, rules) in &r.chains {
                        changed.insert(c.clone(), rules.clone());
                    }
                }
            }
            let removed: BTreeSet<String> =
                self.existing_chains(f).into_iter().filter(|c| !changed.contains_key(c)).collect();
            self.write(f, &programmed, &changed, &removed)?;
            self.ensure_jumps(f)?;
        }
        let mut deletions = Vec::new();
        for sp in desired.services.values() {
            deletions.extend(conntrack::stale(None, Some(sp)));
        }
        conntrack::execute(&self.netns, &deletions);
        self.programmed = Some(programmed);
        Ok(desired.services.len())
    }
}

impl crate::Backend for IptablesBackend {
    fn sync(&mut self, desired: &DesiredState) -> Result<usize, Error> {
        let Some(old) = &self.programmed else { return self.full_sync(desired) };
        let mut next = old.clone();
        let mut changed: BTreeMap<Family, BTreeMap<String, String>> = BTreeMap::new();
        let mut removed: BTreeMap<Family, BTreeSet<String>> = BTreeMap::new();
        let mut deletions = Vec::new();
        let mut n = 0;
        for k in old.keys().filter(|k| !desired.services.contains_key(*k)) {
            let (sp, r) = &old[k];
            removed.entry(k.family).or_default().extend(r.chains.keys().cloned());
            deletions.extend(conntrack::stale(Some(sp), None));
            next.remove(k);
            n += 1;
        }
        for (k, sp) in &desired.services {
            let prev = old.get(k);
            if let Some((osp, _)) = prev {
                if Arc::ptr_eq(osp, sp) || **osp == **sp {
                    continue;
                }
            }
            n += 1;
            let r = Arc::new(render(sp, &self.cluster_cidrs));
            let ch = changed.entry(k.family).or_default();
            for (c, rules) in &r.chains {
                if prev.and_then(|(_, pr)| pr.chains.get(c)) != Some(rules) {
                    ch.insert(c.clone(), rules.clone());
                }
            }
            if let Some((osp, pr)) = prev {
                for c in pr.chains.keys() {
                    if !r.chains.contains_key(c) {
                        removed.entry(k.family).or_default().insert(c.clone());
                    }
                }
                deletions.extend(conntrack::stale(Some(osp), Some(sp)));
            } else {
                deletions.extend(conntrack::stale(None, Some(sp)));
            }
            next.insert(k.clone(), (sp.clone(), r));
        }
        if n == 0 {
            return Ok(0);
        }
        let empty_c = BTreeMap::new();
        let empty_r = BTreeSet::new();
        let mut fams: BTreeSet<Family> = changed.keys().copied().collect();
        fams.extend(removed.keys().copied());
        for f in fams {
            if let Err(e) =
                self.write(f, &next, changed.get(&f).unwrap_or(&empty_c), removed.get(&f).unwrap_or(&empty_r))
            {
                tracing::warn!("partial iptables sync failed, doing a full sync: {e}");
                self.programmed = None;
                return self.full_sync(desired);
            }
            if !old.keys().any(|k| k.family == f) {
                self.ensure_jumps(f)?;
            }
        }
        self.programmed = Some(next);
        conntrack::execute(&self.netns, &deletions);
        Ok(n)
    }

    fn check(&mut self) -> Result<bool, Error> {
        if self.programmed.is_none() {
            return Ok(false);
        }
        let ok = match self.netns.run("iptables", &["-w", "-t", "nat", "-S", "KUBE-SERVICES"], None) {
            Ok(out) => out.contains("KUBE-NODEPORTS"),
            Err(_) => false,
        } && self
            .netns
            .run_raw(
                "iptables",
                &[
                    "-w",
                    "-t",
                    "nat",
                    "-C",
                    "PREROUTING",
                    "-m",
                    "comment",
                    "--comment",
                    "kubernetes service portals",
                    "-j",
                    "KUBE-SERVICES",
                ],
                None,
            )
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            self.programmed = None;
        }
        Ok(ok)
    }

    fn cleanup(&mut self) -> Result<(), Error> {
        let fams: BTreeSet<Family> = match &self.programmed {
            Some(p) => p.keys().map(|k| k.family).chain([Family::V4]).collect(),
            None => [Family::V4].into(),
        };
        self.programmed = None;
        for f in fams {
            for (table, chain, spec) in builtin_jumps() {
                // Delete every copy (bounded).
                for _ in 0..8 {
                    let mut del = vec!["-w", "-t", table, "-D", chain];
                    del.extend(spec.iter());
                    if !self.netns.run_raw(tables_cmd(f), &del, None)?.status.success() {
                        break;
                    }
                }
            }
            let mut chains: Vec<String> = self.existing_chains(f).into_iter().collect();
            chains.extend(TOP_NAT.iter().map(|s| s.to_string()));
            let mut s = String::from("*nat\n");
            for c in &chains {
                let _ = writeln!(s, ":{c} - [0:0]");
            }
            for c in &chains {
                let _ = writeln!(s, "-X {c}");
            }
            s.push_str("COMMIT\n*filter\n");
            for c in TOP_FILTER {
                let _ = writeln!(s, ":{c} - [0:0]");
            }
            for c in TOP_FILTER {
                let _ = writeln!(s, "-X {c}");
            }
            s.push_str("COMMIT\n");
            self.netns.run(restore_cmd(f), &["-w", "--noflush"], Some(&s))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServicePortName};

    fn hostnames(ips: &[&str]) -> ServicePort {
        ServicePort {
            name: ServicePortName { namespace: "default".into(), name: "hostnames".into(), port: "default".into() },
            family: Family::V4,
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ips: vec!["10.0.91.192".parse().unwrap()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            node_port: None,
            affinity_timeout: None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    ip: ip.parse().unwrap(),
                    port: 9376,
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
    fn chain_names_match_kube_proxy() {
        // The seed document's `iptables-save` output for default/hostnames:default.
        let sp = hostnames(&["10.1.161.47", "10.1.166.146", "10.1.166.166"]);
        assert_eq!(svc_chain(&sp), "KUBE-SVC-ODX2UBAZM7RQWOIU");
    }

    #[test]
    fn render_like_the_seed() {
        let sp = hostnames(&["10.1.161.47", "10.1.166.146", "10.1.166.166"]);
        let r = render(&sp, &["10.1.0.0/16".parse().unwrap()]);
        let lines: Vec<&str> = r.nat_services.lines().collect();
        assert_eq!(lines, vec![
            "-A KUBE-SERVICES ! -s 10.1.0.0/16 -d 10.0.91.192/32 -p tcp -m comment --comment \"default/hostnames:default cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
            "-A KUBE-SERVICES -d 10.0.91.192/32 -p tcp -m comment --comment \"default/hostnames:default cluster IP\" -m tcp --dport 80 -j KUBE-SVC-ODX2UBAZM7RQWOIU",
        ]);
        let svc: Vec<&str> = r.chains["KUBE-SVC-ODX2UBAZM7RQWOIU"].lines().collect();
        assert_eq!(svc.len(), 3);
        assert!(svc[0].contains("--probability 0.33333333333 -j KUBE-SEP-"), "{}", svc[0]);
        assert!(svc[1].contains("--probability 0.50000000000 -j KUBE-SEP-"), "{}", svc[1]);
        assert!(svc[2].starts_with("-A KUBE-SVC-ODX2UBAZM7RQWOIU -j KUBE-SEP-"));
        let sep = sep_chain(&sp, &sp.endpoints[0]);
        assert_eq!(r.chains[&sep], format!(
            "-A {sep} -s 10.1.161.47/32 -j KUBE-MARK-MASQ\n-A {sep} -p tcp -m tcp -j DNAT --to-destination 10.1.161.47:9376\n"
        ));
        assert_eq!(r.chains.len(), 4);
    }

    #[test]
    fn render_no_endpoints_and_affinity() {
        let mut sp = hostnames(&[]);
        sp.protocol = Protocol::Udp;
        sp.node_port = Some(30053);
        let r = render(&sp, &[]);
        assert!(r.nat_services.is_empty() && r.chains.is_empty());
        assert!(
            r.filter_services
                .contains("has no endpoints\" -m udp --dport 80 -j REJECT --reject-with icmp-port-unreachable"),
            "{}",
            r.filter_services
        );
        assert!(r.filter_external.contains("--dst-type LOCAL -p udp"), "{}", r.filter_external);
        let mut sp = hostnames(&["10.1.0.1", "10.1.0.2"]);
        sp.affinity_timeout = Some(600);
        let r = render(&sp, &[]);
        let svc = &r.chains[&svc_chain(&sp)];
        assert_eq!(svc.matches("--rcheck --seconds 600 --reap").count(), 2, "{svc}");
        let sep = sep_chain(&sp, &sp.endpoints[0]);
        assert!(r.chains[&sep].contains(&format!("-m recent --set --name {sep}")));
    }
}
