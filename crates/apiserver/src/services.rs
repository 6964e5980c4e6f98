//! Service registry logic that upstream keeps inside the API server: ClusterIP, NodePort and
//! LoadBalancer address allocation. Every allocation is a store key created by compare-and-swap
//! (`/registry/yard/allocations/...`) in the same store transaction as the Service that holds it,
//! so it is unique across any number of API servers sharing the store, survives restarts, costs no
//! extra commit, and a repair pass frees what a crash leaked.
//!
//! Picks are checked against [`Held`], this API server's copy of the allocation keys. It is listed
//! at start and kept up to date by this server's own writes; what other API servers allocate or
//! free reaches it by listing again when a pick turns out taken or a range looks full. It has no
//! watch: a watch would cost the store one event per allocation for every API server, on the
//! write path of every Service, to spare a listing that only conflicts need.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use ipnet::{IpNet, Ipv4Net};
use serde_json::{json, Value};
use yard_api::validation::{ErrorKind, FieldError};
use yard_store::{DynStore, Op, StoreError};

use crate::mirror::Seen;
use crate::objects::{meta_str, name_of};

const PREFIX: &str = "/registry/yard/allocations/";

#[derive(Clone, Debug)]
pub struct AllocConfig {
    pub service_cidrs: Vec<IpNet>,
    pub node_ports: (u16, u16),
    pub lb_cidr: Option<Ipv4Net>,
}

impl Default for AllocConfig {
    fn default() -> Self {
        Self {
            service_cidrs: vec!["10.96.0.0/12".parse().expect("cidr")],
            node_ports: (30000, 32767),
            lb_cidr: Some("172.18.255.0/24".parse().expect("cidr")),
        }
    }
}

/// The n-th address of a CIDR (0 = network address).
pub fn nth_ip(net: &IpNet, n: u128) -> IpAddr {
    match net {
        IpNet::V4(n4) => IpAddr::V4(Ipv4Addr::from(u32::from(n4.network()).wrapping_add(n as u32))),
        IpNet::V6(n6) => IpAddr::V6(Ipv6Addr::from(u128::from(n6.network()).wrapping_add(n))),
    }
}

fn net_size(net: &IpNet) -> u128 {
    1u128 << (net.max_prefix_len() - net.prefix_len()).min(127)
}

pub struct Allocator {
    store: DynStore,
    pub cfg: AllocConfig,
    /// Keys picked by writes in flight in this process, so two of them do not pick the same one.
    pending: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The allocation keys in the store as this server knows them: a pick is checked here rather
    /// than with a store read (the transaction that creates the key settles any race).
    held: Held,
}

struct HeldKeys {
    /// Whether a listing has arrived (before that every question goes to the store).
    synced: bool,
    keys: std::collections::HashSet<String>,
    /// Keys added while a listing is in flight, kept when its result replaces `keys`.
    added_meanwhile: Option<Vec<String>>,
    /// How many listings have replaced `keys`.
    generation: u64,
}

/// The allocation keys in the store, as last listed plus this server's own writes since. Keys
/// another server took since the listing are missing (a pick of one fails its transaction, and
/// the caller lists again); keys another server freed are still here (a dynamic pick passes them
/// over; a requested one is confirmed in the store; a range that looks full is listed again).
pub struct Held {
    store: DynStore,
    state: std::sync::RwLock<HeldKeys>,
    /// One listing at a time.
    listing: tokio::sync::Mutex<()>,
}

impl Held {
    fn new(store: DynStore) -> Self {
        Self {
            store,
            state: std::sync::RwLock::new(HeldKeys {
                synced: false,
                keys: Default::default(),
                added_meanwhile: None,
                generation: 0,
            }),
            listing: tokio::sync::Mutex::new(()),
        }
    }

    fn get(&self, key: &str) -> Seen<()> {
        let s = self.state.read().expect("held");
        match (s.synced, s.keys.contains(key)) {
            (false, _) => Seen::Unknown,
            (true, true) => Seen::Present(()),
            (true, false) => Seen::Absent,
        }
    }

    /// Whether a listing has arrived.
    fn synced(&self) -> bool {
        self.state.read().expect("held").synced
    }

    /// The number of listings so far, to pass to [`Held::relist_after`].
    fn generation(&self) -> u64 {
        self.state.read().expect("held").generation
    }

    fn add<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        let mut s = self.state.write().expect("held");
        for k in keys {
            s.keys.insert(k.clone());
            if let Some(m) = s.added_meanwhile.as_mut() {
                m.push(k.clone());
            }
        }
    }

    fn remove(&self, key: &str) {
        self.state.write().expect("held").keys.remove(key);
    }

    /// List the keys again unless a listing finished since `generation` was read (that one
    /// already shows whatever made the caller ask).
    async fn relist_after(&self, generation: u64) -> Result<(), StoreError> {
        let _one = self.listing.lock().await;
        if self.generation() > generation {
            return Ok(());
        }
        self.state.write().expect("held").added_meanwhile = Some(Vec::new());
        let listed = self.store.list(PREFIX, None, None).await;
        let mut s = self.state.write().expect("held");
        let meanwhile = s.added_meanwhile.take().unwrap_or_default();
        let page = listed?;
        s.keys = page.items.into_iter().map(|kv| kv.key).chain(meanwhile).collect();
        s.synced = true;
        s.generation += 1;
        Ok(())
    }
}

/// Keys taken while preparing a write; released if the write fails.
#[derive(Default, Debug)]
pub struct Taken(pub Vec<String>);

fn fe(kind: ErrorKind, field: &str, value: Value, detail: &str) -> FieldError {
    FieldError { kind, field: field.to_string(), value: Some(value), detail: detail.to_string() }
}

impl Allocator {
    /// Must be called inside a Tokio runtime: the first listing of the allocation keys starts in
    /// the background (until it arrives, picks are checked in the store).
    pub fn new(store: DynStore, cfg: AllocConfig) -> std::sync::Arc<Self> {
        let a = std::sync::Arc::new(Self { held: Held::new(store.clone()), store, cfg, pending: Default::default() });
        let weak = std::sync::Arc::downgrade(&a);
        tokio::spawn(async move {
            // Retried until it succeeds or the allocator is gone.
            while let Some(a) = weak.upgrade() {
                match a.held.relist_after(0).await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(error = %e, "listing allocations failed; retrying"),
                }
                drop(a);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
        a
    }

    fn owner(svc: &Value) -> Bytes {
        let o = json!({"namespace": meta_str(svc, "namespace").unwrap_or(""), "name": name_of(svc), "time": crate::objects::now_rfc3339()});
        Bytes::from(o.to_string())
    }

    /// Pick `key` if it is free: neither stored nor picked by another write in flight here. Nothing
    /// is written: the caller's transaction creates the key (`create_ops`) with the object, and a
    /// concurrent pick by another API server makes that transaction fail with `AlreadyExists`.
    /// Whether it is stored comes from [`Held`]. For a pick the allocator chose itself (`dynamic`)
    /// a key held there is passed over without confirming it in the store, since any other pick
    /// will do; a key the user asked for is refused only when the store confirms it.
    async fn take(&self, key: String, dynamic: bool, taken: &mut Taken) -> Result<bool, StoreError> {
        let held = match self.held.get(&key) {
            Seen::Absent => false,
            Seen::Present(()) if dynamic => true,
            Seen::Present(()) | Seen::Unknown => self.store.get(&key).await?.is_some(),
        };
        if held {
            return Ok(false);
        }
        if !self.pending.lock().expect("pending").insert(key.clone()) {
            return Ok(false);
        }
        taken.0.push(key);
        Ok(true)
    }

    /// The store writes that record `taken` as held by `svc`, for the object's own transaction.
    pub fn create_ops(taken: &[String], svc: &Value) -> Vec<Op> {
        let owner = Self::owner(svc);
        taken.iter().map(|k| Op::Create { key: k.clone(), value: owner.clone() }).collect()
    }

    /// Forget picks whose transaction failed (or was never sent).
    pub fn unreserve(&self, taken: &[String]) {
        let mut p = self.pending.lock().expect("pending");
        for k in taken {
            p.remove(k);
        }
    }

    /// Record picks whose transaction committed: they are held now.
    pub fn committed(&self, taken: &[String]) {
        self.held.add(taken);
        self.unreserve(taken);
    }

    /// After a write lost allocation `key` to another API server: record it as held and list the
    /// allocations again, so that the next pick passes over it and every other key taken up to
    /// now. `generation` is [`Allocator::generation`] read before the write.
    pub async fn lost(&self, key: &str, generation: u64) -> Result<(), StoreError> {
        self.held.add([&key.to_string()]);
        self.held.relist_after(generation).await
    }

    /// The allocation listing's generation, read before a write whose pick may be lost.
    pub fn generation(&self) -> u64 {
        self.held.generation()
    }

    /// Whether a key is an allocation (a lost race on it is retried with another pick).
    pub fn is_allocation_key(key: &str) -> bool {
        key.starts_with(PREFIX)
    }

    pub async fn release(&self, keys: &[String]) {
        for k in keys {
            if matches!(
                self.store.write(Op::Delete { key: k.clone(), expect: None }).await,
                Ok(_) | Err(StoreError::NotFound(_))
            ) {
                self.held.remove(k);
            }
        }
    }

    /// Before a dynamic pick reports its range full: list the allocations again, since keys that
    /// other API servers (or the repair pass) freed since the last listing still look held here.
    /// Returns whether the caller should search again (the copy was listed, not only asked).
    async fn relist_for_full(&self) -> Result<bool, StoreError> {
        if !self.held.synced() {
            // Not listed yet: every pick was checked in the store already.
            return Ok(false);
        }
        self.held.relist_after(self.held.generation()).await?;
        Ok(true)
    }

    fn ip_key(ip: &IpAddr) -> String {
        format!("{PREFIX}clusterip/{ip}")
    }
    fn port_key(p: i64) -> String {
        format!("{PREFIX}nodeport/{p}")
    }
    fn lb_key(ip: &str) -> String {
        format!("{PREFIX}lb/{ip}")
    }

    /// Allocate a specific or a random ClusterIP from `net`.
    async fn alloc_ip(
        &self,
        net: &IpNet,
        requested: Option<&str>,
        field: &str,
        taken: &mut Taken,
    ) -> Result<Result<String, FieldError>, StoreError> {
        if let Some(req) = requested {
            let Ok(ip) = req.parse::<IpAddr>() else {
                return Ok(Err(fe(
                    ErrorKind::Invalid,
                    field,
                    json!(req),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )));
            };
            let size = net_size(net);
            if !net.contains(&ip) || ip == nth_ip(net, 0) || (net.max_prefix_len() == 32 && ip == nth_ip(net, size - 1))
            {
                return Ok(Err(fe(ErrorKind::Invalid, field, json!(req), &format!("failed to allocate IP {req}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {net}"))));
            }
            if !self.take(Self::ip_key(&ip), false, taken).await? {
                return Ok(Err(fe(
                    ErrorKind::Invalid,
                    field,
                    json!(req),
                    &format!("failed to allocate IP {req}: provided IP is already allocated"),
                )));
            }
            return Ok(Ok(ip.to_string()));
        }
        let size = net_size(net);
        // Upstream reserves a lower band for static allocation and prefers the upper band for
        // dynamic picks: min(max(16, size/16), 256) addresses.
        let band = (size / 16).clamp(16, 256).min(size / 2);
        let usable_hi = if net.max_prefix_len() == 32 { size - 1 } else { size };
        let dyn_lo = band.max(1);
        for pass in 0..2 {
            if pass == 1 && !self.relist_for_full().await? {
                break;
            }
            for attempt in 0..4096u128 {
                let span = usable_hi.saturating_sub(dyn_lo).max(1);
                let n = if attempt < 64 {
                    dyn_lo + rand::random_range(0..span)
                } else {
                    1 + (attempt - 64) % (usable_hi - 1).max(1)
                };
                let ip = nth_ip(net, n);
                if self.take(Self::ip_key(&ip), true, taken).await? {
                    return Ok(Ok(ip.to_string()));
                }
            }
        }
        Ok(Err(FieldError {
            kind: ErrorKind::Invalid,
            field: field.into(),
            value: None,
            detail: format!("range is full: {net}"),
        }))
    }

    async fn alloc_port(
        &self,
        requested: Option<i64>,
        field: &str,
        taken: &mut Taken,
        already: &BTreeSet<i64>,
    ) -> Result<Result<i64, FieldError>, StoreError> {
        let (lo, hi) = (self.cfg.node_ports.0 as i64, self.cfg.node_ports.1 as i64);
        if let Some(p) = requested {
            if p < lo || p > hi {
                return Ok(Err(fe(
                    ErrorKind::Invalid,
                    field,
                    json!(p),
                    &format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                )));
            }
            if already.contains(&p) {
                return Ok(Ok(p));
            }
            if !self.take(Self::port_key(p), false, taken).await? {
                return Ok(Err(fe(ErrorKind::Invalid, field, json!(p), "provided port is already allocated")));
            }
            return Ok(Ok(p));
        }
        let span = hi - lo + 1;
        // Dynamic picks prefer the upper part of the range (upstream's static band is the lower part).
        let band = (span / 32).clamp(16, 128).min(span / 2);
        for pass in 0..2 {
            if pass == 1 && !self.relist_for_full().await? {
                break;
            }
            // 64 random picks in the upper part, then every port in turn.
            for attempt in 0..(64 + span) {
                let p = if attempt < 64 {
                    lo + band + rand::random_range(0..(span - band).max(1))
                } else {
                    lo + (attempt - 64) % span
                };
                if already.contains(&p) {
                    continue;
                }
                if self.take(Self::port_key(p), true, taken).await? {
                    return Ok(Ok(p));
                }
            }
        }
        Ok(Err(FieldError {
            kind: ErrorKind::Invalid,
            field: field.into(),
            value: None,
            detail: format!("range is full: {lo}-{hi}"),
        }))
    }

    /// Allocate what a new (or type-changed) Service needs. `old` is the stored object on update.
    /// Returns the keys taken (to release if the write fails) and the keys to release once the
    /// write succeeds (what the old object held and the new one no longer does).
    pub async fn prepare(
        &self,
        old: Option<&Value>,
        svc: &mut Value,
    ) -> Result<(Taken, Vec<String>), Result<Vec<FieldError>, StoreError>> {
        let mut taken = Taken::default();
        let mut errs = Vec::new();
        let res = self.prepare_inner(old, svc, &mut taken, &mut errs).await;
        match res {
            Err(e) => {
                self.unreserve(&taken.0);
                Err(Err(e))
            }
            Ok(_) if !errs.is_empty() => {
                self.unreserve(&taken.0);
                Err(Ok(errs))
            }
            Ok(release) => Ok((taken, release)),
        }
    }

    async fn prepare_inner(
        &self,
        old: Option<&Value>,
        svc: &mut Value,
        taken: &mut Taken,
        errs: &mut Vec<FieldError>,
    ) -> Result<Vec<String>, StoreError> {
        let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP").to_string();
        let old_held = old.map(held_keys).unwrap_or_default();
        // ClusterIPs.
        if ty == "ExternalName" {
            if let Some(spec) = svc["spec"].as_object_mut() {
                if spec.get("clusterIP").and_then(Value::as_str).is_some_and(|s| !s.is_empty() && s != "None")
                    && old.is_none()
                {
                    errs.push(fe(
                        ErrorKind::Forbidden,
                        "spec.clusterIP",
                        Value::Null,
                        "may not be set for ExternalName services",
                    ));
                }
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
                spec.remove("ipFamilies");
                spec.remove("ipFamilyPolicy");
            }
        } else {
            let old_ips: Vec<String> = old
                .filter(|o| o["spec"]["type"].as_str() != Some("ExternalName"))
                .and_then(|o| o["spec"]["clusterIPs"].as_array().cloned())
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            // clusterIP and clusterIPs[0] must agree before anything is allocated for them.
            let one = svc["spec"]["clusterIP"].as_str().unwrap_or("");
            let listed = svc["spec"]["clusterIPs"].as_array().cloned().unwrap_or_default();
            if !one.is_empty() && listed.first().and_then(Value::as_str).is_some_and(|first| first != one) {
                errs.push(fe(
                    ErrorKind::Invalid,
                    "spec.clusterIPs",
                    Value::Array(listed),
                    "first value must match `clusterIP`",
                ));
                return Ok(Vec::new());
            }
            let requested: Vec<String> = match svc["spec"]["clusterIPs"].as_array() {
                Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                _ => svc["spec"]["clusterIP"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(|s| vec![s.to_string()])
                    .unwrap_or_default(),
            };
            let ips: Vec<String> = if !old_ips.is_empty() {
                // A changed request is left as asked: validation rejects it ("may not change once set").
                if !requested.is_empty() && requested.first() != old_ips.first() {
                    requested.clone()
                } else {
                    old_ips
                }
            } else if requested.first().map(String::as_str) == Some("None") {
                vec!["None".to_string()]
            } else {
                let families = self.families_for(svc);
                let mut out = Vec::new();
                for (i, net) in families.iter().enumerate() {
                    let field = if i == 0
                        && svc["spec"]["clusterIPs"].as_array().is_none_or(|a| a.is_empty())
                        && requested.len() <= 1
                    {
                        "spec.clusterIPs[0]".to_string()
                    } else {
                        format!("spec.clusterIPs[{i}]")
                    };
                    match self.alloc_ip(net, requested.get(i).map(String::as_str), &field, taken).await? {
                        Ok(ip) => out.push(ip),
                        Err(mut e) => {
                            // Allocation failures name the whole list, as upstream's allocator does.
                            if e.detail.starts_with("failed to allocate IP") {
                                e.field = "spec.clusterIPs".into();
                                e.value = Some(json!(requested));
                            }
                            errs.push(e);
                            return Ok(Vec::new());
                        }
                    }
                }
                out
            };
            let fams: Vec<Value> = ips
                .iter()
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
                .map(|ip| json!(if ip.is_ipv4() { "IPv4" } else { "IPv6" }))
                .collect();
            svc["spec"]["clusterIP"] = json!(ips.first().cloned().unwrap_or_default());
            svc["spec"]["clusterIPs"] = json!(ips);
            if !fams.is_empty() {
                svc["spec"]["ipFamilies"] = Value::Array(fams);
            } else if svc["spec"].get("ipFamilies").is_none() {
                svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            }
            if svc["spec"].get("ipFamilyPolicy").is_none() {
                svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            }
        }
        // NodePorts.
        let wants_np = ty == "NodePort"
            || (ty == "LoadBalancer" && svc["spec"]["allocateLoadBalancerNodePorts"].as_bool() != Some(false));
        let mut kept_ports: BTreeSet<i64> = BTreeSet::new();
        let old_ports: BTreeSet<i64> = old_held
            .iter()
            .filter_map(|k| k.strip_prefix(&format!("{PREFIX}nodeport/")).and_then(|p| p.parse().ok()))
            .collect();
        if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
            let mut assigned_this: BTreeSet<i64> = BTreeSet::new();
            for (i, p) in ports.iter_mut().enumerate() {
                let req = p.get("nodePort").and_then(Value::as_i64).filter(|v| *v != 0);
                if !wants_np {
                    // A nodePort left on a type without them is a validation error (updates that
                    // change the type drop unchanged ones first: `drop_type_dependent_fields`).
                    continue;
                }
                let field = format!("spec.ports[{i}].nodePort");
                // An update keeps the port a service already holds; the same port may serve two
                // protocols of one service.
                let mut already = old_ports.clone();
                already.extend(assigned_this.iter().copied());
                match self.alloc_port(req, &field, taken, &already).await? {
                    Ok(port) => {
                        p["nodePort"] = json!(port);
                        kept_ports.insert(port);
                        assigned_this.insert(port);
                    }
                    Err(e) => errs.push(e),
                }
            }
        }
        if svc["spec"]["externalTrafficPolicy"].as_str() == Some("Local") && ty == "LoadBalancer" {
            let req = svc["spec"]["healthCheckNodePort"].as_i64().filter(|v| *v != 0);
            let mut already = old_ports.clone();
            already.extend(kept_ports.iter().copied());
            match self.alloc_port(req, "spec.healthCheckNodePort", taken, &BTreeSet::new()).await? {
                Ok(port) => {
                    svc["spec"]["healthCheckNodePort"] = json!(port);
                    kept_ports.insert(port);
                }
                Err(e) => errs.push(e),
            }
        } else if let Some(o) = svc["spec"].as_object_mut() {
            if let Some(p) = o.get("healthCheckNodePort").and_then(Value::as_i64) {
                if old_ports.contains(&p) {
                    kept_ports.insert(p);
                }
            }
        }
        // LoadBalancer ingress from the built-in pool.
        if ty == "LoadBalancer" {
            let old_lb: Option<String> =
                old_held.iter().find_map(|k| k.strip_prefix(&format!("{PREFIX}lb/")).map(String::from));
            let requested = svc["spec"]["loadBalancerIP"].as_str().filter(|s| !s.is_empty()).map(String::from);
            let ip = match (&old_lb, &requested) {
                (Some(o), None) => Some(o.clone()),
                (Some(o), Some(r)) if o == r => Some(o.clone()),
                (_, Some(r)) => {
                    if self.take(Self::lb_key(r), false, taken).await? {
                        Some(r.clone())
                    } else {
                        errs.push(fe(
                            ErrorKind::Invalid,
                            "spec.loadBalancerIP",
                            json!(r),
                            "provided IP is already allocated",
                        ));
                        None
                    }
                }
                (None, None) => {
                    let mut got = None;
                    if let Some(pool) = self.cfg.lb_cidr {
                        for pass in 0..2 {
                            if got.is_some() || (pass == 1 && !self.relist_for_full().await?) {
                                break;
                            }
                            for h in pool.hosts() {
                                let s = h.to_string();
                                if self.take(Self::lb_key(&s), true, taken).await? {
                                    got = Some(s);
                                    break;
                                }
                            }
                        }
                    }
                    got
                }
            };
            if let Some(ip) = ip {
                svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}});
            }
        } else if svc.get("status").is_some() && old.is_some_and(|o| o["spec"]["type"].as_str() == Some("LoadBalancer"))
        {
            svc["status"] = json!({"loadBalancer": {}});
        }
        // What the old object held and the new one does not: release after the write.
        let new_held = held_keys(svc);
        Ok(old_held.into_iter().filter(|k| !new_held.contains(k)).collect())
    }

    fn families_for(&self, svc: &Value) -> Vec<IpNet> {
        let v4 = self.cfg.service_cidrs.iter().find(|n| matches!(n, IpNet::V4(_))).copied();
        let v6 = self.cfg.service_cidrs.iter().find(|n| matches!(n, IpNet::V6(_))).copied();
        let fams: Vec<String> = svc["spec"]["ipFamilies"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let policy = svc["spec"]["ipFamilyPolicy"].as_str().unwrap_or("SingleStack");
        let pick = |f: &str| if f == "IPv6" { v6 } else { v4 };
        let mut out: Vec<IpNet> = Vec::new();
        if fams.is_empty() {
            if let Some(n) = v4.or(v6) {
                out.push(n);
            }
            if policy != "SingleStack" {
                if let Some(n) = if out.first().is_some_and(|n| matches!(n, IpNet::V4(_))) { v6 } else { v4 } {
                    out.push(n);
                }
            }
        } else {
            for f in &fams {
                if let Some(n) = pick(f) {
                    out.push(n);
                }
            }
            if policy != "SingleStack" && out.len() == 1 {
                if let Some(n) = if matches!(out[0], IpNet::V4(_)) { v6 } else { v4 } {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Free everything a deleted Service held.
    pub async fn release_service(&self, svc: &Value) {
        self.release(&held_keys(svc)).await;
    }

    /// Free allocations whose Service no longer exists or no longer holds them. Run at start-up,
    /// before serving; allocations younger than `min_age_secs` are left alone (a create in flight
    /// on another API server).
    pub async fn repair(&self, min_age_secs: i64) -> Result<usize, StoreError> {
        let page = self.store.list(PREFIX, None, None).await?;
        let svcs = self.store.list("/registry/core/services/", None, None).await?;
        let mut held = BTreeSet::new();
        for kv in &svcs.items {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                held.extend(held_keys(&v));
            }
        }
        let now = jiff::Timestamp::now();
        let mut freed = 0;
        for kv in page.items {
            if held.contains(&kv.key) {
                continue;
            }
            let young = serde_json::from_slice::<Value>(&kv.value)
                .ok()
                .and_then(|v| v["time"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()))
                .is_some_and(|t| (now - t).get_seconds() < min_age_secs);
            if young {
                continue;
            }
            if self.store.write(Op::Delete { key: kv.key.clone(), expect: Some(kv.mod_revision) }).await.is_ok() {
                self.held.remove(&kv.key);
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// Make sure every stored Service's allocations are recorded (after a crash between writing an
    /// allocation-free old format or restoring a store).
    pub async fn adopt_existing(&self) -> Result<(), StoreError> {
        let svcs = self.store.list("/registry/core/services/", None, None).await?;
        for kv in svcs.items {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                for k in held_keys(&v) {
                    if matches!(
                        self.store.write(Op::Create { key: k.clone(), value: Self::owner(&v) }).await,
                        Ok(_) | Err(StoreError::AlreadyExists(_))
                    ) {
                        self.held.add([&k]);
                    }
                }
            }
        }
        Ok(())
    }
}

fn svc_type(svc: &Value) -> &str {
    svc["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

fn node_ports(svc: &Value) -> BTreeSet<i64> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .filter(|p| *p != 0)
        .collect()
}

fn externally_accessible(svc: &Value) -> bool {
    let t = svc_type(svc);
    t == "LoadBalancer"
        || t == "NodePort"
        || (t == "ClusterIP" && svc["spec"]["externalIPs"].as_array().is_some_and(|a| !a.is_empty()))
}

fn needs_hc_node_port(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer" && svc["spec"]["externalTrafficPolicy"].as_str() == Some("Local")
}

/// Services are a union discriminated by `type`: on an update that changes the type, fields the
/// new type cannot have are cleared when the user left them as they were (so they are released),
/// and kept, to fail validation, when the user changed them too. Upstream's registry does the same
/// on updates only; a create with such fields is simply invalid.
pub fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let same = |f: &str, new: &Value| old["spec"].get(f) == new["spec"].get(f);
    let remove = |new: &mut Value, f: &str| {
        if let Some(o) = new["spec"].as_object_mut() {
            o.remove(f);
        }
    };
    if svc_type(old) != "ExternalName" && svc_type(new) == "ExternalName" {
        if same("clusterIP", new) && same("clusterIPs", new) {
            remove(new, "clusterIP");
            remove(new, "clusterIPs");
        }
        if same("ipFamilies", new) {
            remove(new, "ipFamilies");
        }
        if same("ipFamilyPolicy", new) {
            remove(new, "ipFamilyPolicy");
        }
    }
    let needs_np = |s: &Value| matches!(svc_type(s), "NodePort" | "LoadBalancer");
    if needs_np(old) && !needs_np(new) && node_ports(new).is_subset(&node_ports(old)) {
        for p in new["spec"]["ports"].as_array_mut().into_iter().flatten() {
            if let Some(o) = p.as_object_mut() {
                o.remove("nodePort");
            }
        }
    }
    if needs_hc_node_port(old) && !needs_hc_node_port(new) && same("healthCheckNodePort", new) {
        remove(new, "healthCheckNodePort");
    }
    if svc_type(old) == "LoadBalancer" && svc_type(new) != "LoadBalancer" {
        if new["spec"].get("allocateLoadBalancerNodePorts").is_some() && same("allocateLoadBalancerNodePorts", new) {
            remove(new, "allocateLoadBalancerNodePorts");
        }
        if same("loadBalancerClass", new) {
            remove(new, "loadBalancerClass");
        }
    }
    if externally_accessible(old) && !externally_accessible(new) && same("externalTrafficPolicy", new) {
        remove(new, "externalTrafficPolicy");
    }
    if svc_type(new) != "LoadBalancer" {
        if let Some(st) = new.get_mut("status").and_then(Value::as_object_mut) {
            st.insert("loadBalancer".into(), json!({}));
        }
    }
}

/// The allocation keys a stored Service holds.
pub fn held_keys(svc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if ty != "ExternalName" {
        if let Some(a) = svc["spec"]["clusterIPs"].as_array() {
            for ip in a.iter().filter_map(Value::as_str) {
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    out.push(Allocator::ip_key(&ip));
                }
            }
        } else if let Some(ip) = svc["spec"]["clusterIP"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
            out.push(Allocator::ip_key(&ip));
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        if let Some(ports) = svc["spec"]["ports"].as_array() {
            for p in ports {
                if let Some(np) = p["nodePort"].as_i64() {
                    let k = Allocator::port_key(np);
                    if !out.contains(&k) {
                        out.push(k);
                    }
                }
            }
        }
        if let Some(h) = svc["spec"]["healthCheckNodePort"].as_i64() {
            out.push(Allocator::port_key(h));
        }
    }
    if ty == "LoadBalancer" {
        if let Some(ing) = svc["status"]["loadBalancer"]["ingress"].as_array() {
            for i in ing {
                if let Some(ip) = i["ip"].as_str() {
                    out.push(Allocator::lb_key(ip));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{until, TempStore};

    /// What the API server's create does with the allocator: pick, write the Service and its
    /// allocation keys in one transaction, and on a lost pick list again and pick again.
    async fn create(a: &Allocator, store: &DynStore, name: &str) -> Result<String, String> {
        for _ in 0..8 {
            let mut svc = json!({"metadata": {"namespace": "default", "name": name}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
            let generation = a.generation();
            let taken = match a.prepare(None, &mut svc).await {
                Ok((t, _)) => t.0,
                Err(Ok(errs)) => return Err(errs.into_iter().map(|e| e.detail).collect::<Vec<_>>().join("; ")),
                Err(Err(e)) => panic!("prepare: {e}"),
            };
            let mut ops = Allocator::create_ops(&taken, &svc);
            ops.push(Op::Create {
                key: format!("/registry/core/services/default/{name}"),
                value: svc.to_string().into(),
            });
            match store.txn(ops).await {
                Ok(_) => {
                    a.committed(&taken);
                    return Ok(svc["spec"]["clusterIP"].as_str().expect("allocated").to_string());
                }
                Err(StoreError::AlreadyExists(k)) if Allocator::is_allocation_key(&k) => {
                    a.unreserve(&taken);
                    a.lost(&k, generation).await.unwrap();
                }
                Err(e) => panic!("txn: {e}"),
            }
        }
        Err("conflict".into())
    }

    /// Two allocators on one store, neither watching it: each learns the other's picks only from
    /// lost transactions and listings. The 6 addresses of a /29 are each given once; addresses the
    /// other one freed are found again (a range that looks full is listed again before saying so).
    #[tokio::test]
    async fn two_allocators_without_a_watch_share_a_small_range() {
        let t = TempStore::new("alloc");
        let store = t.store.clone();
        let cfg = AllocConfig { service_cidrs: vec!["10.97.0.0/29".parse().unwrap()], ..Default::default() };
        let (a, b) = (Allocator::new(store.clone(), cfg.clone()), Allocator::new(store.clone(), cfg));
        until("the allocations were never listed", || a.generation() > 0 && b.generation() > 0).await;
        let mut ips = BTreeSet::new();
        for i in 0..6 {
            let (via, name) = if i % 2 == 0 { (&a, format!("a{i}")) } else { (&b, format!("b{i}")) };
            let ip = create(via, &store, &name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(ips.insert(ip.clone()), "{ip} given twice");
        }
        assert_eq!(ips.len(), 6);
        for via in [&a, &b] {
            let e = create(via, &store, "extra").await.expect_err("a /29 has 6 addresses");
            assert!(e.contains("range is full"), "{e}");
        }
        // B frees everything A allocated; A's copy still shows those addresses held.
        let page = store.list("/registry/core/services/default/a", None, None).await.unwrap();
        assert_eq!(page.items.len(), 3);
        for kv in page.items {
            let svc: Value = serde_json::from_slice(&kv.value).unwrap();
            store.write(Op::Delete { key: kv.key, expect: None }).await.unwrap();
            b.release_service(&svc).await;
        }
        let mut again = BTreeSet::new();
        for i in 0..3 {
            let ip = create(&a, &store, &format!("again{i}")).await.unwrap_or_else(|e| panic!("again{i}: {e}"));
            assert!(!again.contains(&ip) && ips.contains(&ip), "{ip}");
            again.insert(ip);
        }
        assert_eq!(store.list(PREFIX, None, None).await.unwrap().items.len(), 6, "one key per address held");
        drop((a, b, store));
    }
}
