//! The in-memory index of cluster DNS records.
//!
//! Services and EndpointSlices are turned into precomputed resource records when they change; a
//! query is then a single hash-map lookup on the lower-cased query name (see [`name_key`]).
//! Every record of a name is owned by exactly one Service (its "contribution"), except reverse
//! (PTR) names, which several Services may share, so each name keeps a short list of
//! contributions tagged with the owning Service's id.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, RDataEncoding};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::Error;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Version of the Kubernetes DNS specification implemented, served as TXT at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// Writes the lookup key of `name` into `out`: its labels from the root down, each as a length
/// byte followed by the ASCII-lower-cased label. Unambiguous for any label content, and the key
/// of a zone is a prefix of the key of every name inside it.
pub fn name_key(name: &Name, out: &mut Vec<u8>) {
    out.clear();
    let labels: Vec<&[u8]> = name.iter().collect();
    for label in labels.iter().rev() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(|b| b.to_ascii_lowercase()));
    }
}

/// Same as [`name_key`] without an intermediate vector of labels (hot path).
pub(crate) fn name_key_fast(name: &Name, out: &mut Vec<u8>) {
    out.clear();
    // LabelIter is double-ended: walk from the root.
    for label in name.iter().rev() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(|b| b.to_ascii_lowercase()));
    }
}

/// A name as the index stores it: its [`name_key`] bytes, shared (`Arc`) between the map key,
/// the records owned by the name and the records pointing at it. About a third of the memory of a
/// hickory `Name`, which keeps up to 56 bytes inline and spills longer names to the heap.
pub(crate) type KeyName = Arc<[u8]>;

/// The hickory name of a key (see [`name_key`]): labels from the leaf up, fully qualified.
pub(crate) fn key_to_name(key: &[u8]) -> Name {
    // On the stack: this runs for every record written into an answer.
    let mut labels: [&[u8]; 128] = [&[]; 128];
    let mut n = 0;
    let mut rest = key;
    while n < labels.len() {
        let Some(Ok((label, tail))) = split_label(rest) else { break };
        labels[n] = label;
        n += 1;
        rest = tail;
    }
    let mut name = Name::from_labels(labels[..n].iter().rev().copied()).unwrap_or_else(|_| Name::root());
    name.set_fqdn(true);
    name
}

fn key_of(name: &Name) -> KeyName {
    let mut k = Vec::new();
    name_key(name, &mut k);
    k.into()
}

/// A label and the key bytes after it.
type LabelAndRest<'a> = (&'a [u8], &'a [u8]);

/// The first label of a key (or of its remainder) and what follows it: `None` at the end,
/// `Some(Err(()))` when the length byte runs past the end.
fn split_label(rest: &[u8]) -> Option<Result<LabelAndRest<'_>, ()>> {
    let (&len, tail) = rest.split_first()?;
    Some(tail.split_at_checked(usize::from(len)).ok_or(()))
}

/// Splits the remainder of a key (after a zone prefix) into labels, root side first.
pub(crate) fn key_labels(mut rest: &[u8]) -> Option<Vec<&[u8]>> {
    let mut labels = Vec::new();
    while let Some(next) = split_label(rest) {
        let (label, tail) = next.ok()?;
        labels.push(label);
        rest = tail;
    }
    Some(labels)
}

/// A record as the index stores it: the owner name shared between the records of a name, the
/// data without hickory's large `RData` enum (memory: about 40 bytes instead of 272 plus heap).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CRec {
    owner: KeyName,
    ttl: u32,
    data: CData,
}

#[derive(Debug, Clone, PartialEq)]
enum CData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(KeyName),
    Cname(KeyName),
    Srv {
        weight: u16,
        port: u16,
        target: KeyName,
    },
    /// Anything rare (SOA, NS, TXT) as a full record.
    Full(Box<Record>),
}

impl CRec {
    fn full(r: Record) -> Self {
        CRec { owner: key_of(&r.name), ttl: r.ttl, data: CData::Full(Box::new(r)) }
    }

    fn record_type(&self) -> RecordType {
        match &self.data {
            CData::A(_) => RecordType::A,
            CData::Aaaa(_) => RecordType::AAAA,
            CData::Ptr(_) => RecordType::PTR,
            CData::Cname(_) => RecordType::CNAME,
            CData::Srv { .. } => RecordType::SRV,
            CData::Full(r) => r.record_type(),
        }
    }

    /// The hickory record (for tests and tools; the query path encodes directly).
    pub(crate) fn to_record(&self) -> Record {
        let owner = key_to_name(&self.owner);
        let data = match &self.data {
            CData::A(ip) => RData::A(A(*ip)),
            CData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
            CData::Ptr(n) => RData::PTR(PTR(key_to_name(n))),
            CData::Cname(n) => RData::CNAME(CNAME(key_to_name(n))),
            CData::Srv { weight, port, target } => RData::SRV(SRV::new(0, *weight, *port, key_to_name(target))),
            CData::Full(r) => return (**r).clone(),
        };
        Record::from_rdata(owner, self.ttl, data)
    }
}

impl BinEncodable for CRec {
    /// Same bytes as hickory's `Record::emit` of [`CRec::to_record`], without building it.
    fn emit(&self, encoder: &mut BinEncoder<'_>) -> Result<(), hickory_proto::ProtoError> {
        if let CData::Full(r) = &self.data {
            return r.emit(encoder);
        }
        key_to_name(&self.owner).emit(encoder)?;
        self.record_type().emit(encoder)?;
        DNSClass::IN.emit(encoder)?;
        encoder.emit_u32(self.ttl)?;
        let place = encoder.place::<u16>()?;
        match &self.data {
            CData::A(ip) => A(*ip).emit(encoder)?,
            CData::Aaaa(ip) => AAAA(*ip).emit(encoder)?,
            CData::Ptr(n) | CData::Cname(n) => {
                let mut e = encoder.with_rdata_behavior(RDataEncoding::StandardRecord);
                key_to_name(n).emit(&mut e)?;
            }
            CData::Srv { weight, port, target } => {
                let mut e = encoder.with_rdata_behavior(RDataEncoding::Canonical);
                e.emit_u16(0)?;
                e.emit_u16(*weight)?;
                e.emit_u16(*port)?;
                key_to_name(target).emit(&mut e)?;
            }
            CData::Full(_) => {}
        }
        let len = encoder.len_since_place(&place);
        place.replace(encoder, len as u16)
    }
}

/// Records of one owner at one name, while a Service's records are being built.
#[derive(Debug, Default, Clone)]
struct RrsBuilder {
    a: Vec<CRec>,
    aaaa: Vec<CRec>,
    srv_extra: Vec<CRec>,
    other: Vec<CRec>,
}

/// Records of one owner at one name (compact: all types in one slice, grouped by type).
#[derive(Debug, Default, Clone)]
pub(crate) struct Rrs {
    records: Box<[CRec]>,
    /// Address records of SRV targets (additional section).
    srv_extra: Box<[CRec]>,
    /// Whether `records` holds a CNAME (saves a scan per query).
    has_cname: bool,
}

impl Rrs {
    fn of_type(&self, t: RecordType) -> impl Iterator<Item = &CRec> {
        self.records.iter().filter(move |r| r.record_type() == t)
    }

    fn cname(&self) -> Option<&CRec> {
        if !self.has_cname {
            return None;
        }
        self.of_type(RecordType::CNAME).next()
    }
}

impl RrsBuilder {
    fn build(self) -> Rrs {
        let mut records = self.a;
        records.extend(self.aaaa);
        records.extend(self.other);
        let has_cname = records.iter().any(|r| r.record_type() == RecordType::CNAME);
        Rrs { has_cname, records: records.into_boxed_slice(), srv_extra: self.srv_extra.into_boxed_slice() }
    }
}

/// A name in the index: the contributions of each owner (Service id; 0 = the zone itself).
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Almost always one entry: exact-size (a `Vec` would reserve room for four).
    contribs: Box<[(u64, Rrs)]>,
}

/// Summary of a Service, enough to build its records.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(String),
}

#[derive(Debug, Clone, PartialEq)]
struct PortSpec {
    name: String,
    proto: String,
    port: u16,
}

#[derive(Debug)]
struct SvcState {
    id: u64,
    kind: Kind,
    ports: Vec<PortSpec>,
    publish_not_ready: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct EndpointInfo {
    ip: IpAddr,
    hostname: Option<Box<str>>,
    ready: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct SliceInfo {
    endpoints: Box<[EndpointInfo]>,
    ports: Vec<PortSpec>,
    /// Endpoints dropped because the Service is not headless (only headless Services' records
    /// depend on endpoints); fetched again if it turns headless.
    stripped: bool,
}

impl SliceInfo {
    fn strip(&mut self) {
        if !self.stripped {
            self.endpoints = Box::new([]);
            self.stripped = true;
        }
    }
}

type SvcKey = (String, String);

/// The slices of one Service, by slice name (a handful: a vector beats a map).
#[derive(Debug, Default)]
struct SliceMap(Vec<(Box<str>, SliceInfo)>);

impl SliceMap {
    fn get(&self, name: &str) -> Option<&SliceInfo> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, i)| i)
    }

    fn insert(&mut self, name: String, info: SliceInfo) {
        match self.0.iter_mut().find(|(n, _)| **n == *name) {
            Some((_, i)) => *i = info,
            None => {
                // Exact size: a Service has one slice per 100 endpoints, rarely more.
                self.0.reserve_exact(1);
                self.0.push((name.into_boxed_str(), info));
            }
        }
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| &**n != name);
        self.0.shrink_to_fit();
    }

    fn values(&self) -> impl Iterator<Item = &SliceInfo> {
        self.0.iter().map(|(_, i)| i)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    services: FastMap<SvcKey, SvcState>,
    /// EndpointSlices by the Service they belong to, then by slice name.
    slices: FastMap<SvcKey, SliceMap>,
    /// Which Service a slice (namespace, slice name) currently belongs to.
    slice_owner: FastMap<SvcKey, SvcKey>,
    /// Keys each Service id contributed to.
    owned_names: FastMap<u64, Vec<KeyName>>,
    names: FastMap<KeyName, Node>,
    next_id: u64,
    /// Services that turned headless while their slices' endpoints were stripped: their slices
    /// must be read again from the API (see [`Index::take_refetch`]).
    refetch: Vec<SvcKey>,
}

/// One answer record: borrowed from the index or made for this query.
#[derive(Debug)]
pub(crate) enum Rec<'a> {
    B(&'a Record),
    C(&'a CRec),
    O(Box<Record>),
}

impl Rec<'_> {
    /// The target of a CNAME record.
    pub(crate) fn cname_target(&self) -> Option<Name> {
        match self {
            Rec::C(CRec { data: CData::Cname(n), .. }) => Some(key_to_name(n)),
            Rec::B(r) => match &r.data {
                RData::CNAME(c) => Some(c.0.clone()),
                _ => None,
            },
            Rec::O(r) => match &r.data {
                RData::CNAME(c) => Some(c.0.clone()),
                _ => None,
            },
            Rec::C(_) => None,
        }
    }

    /// An owned hickory record.
    pub(crate) fn to_record(&self) -> Record {
        match self {
            Rec::B(r) => (*r).clone(),
            Rec::C(c) => c.to_record(),
            Rec::O(r) => (**r).clone(),
        }
    }
}

impl hickory_proto::serialize::binary::BinEncodable for Rec<'_> {
    fn emit(
        &self,
        encoder: &mut hickory_proto::serialize::binary::BinEncoder<'_>,
    ) -> Result<(), hickory_proto::ProtoError> {
        match self {
            Rec::B(r) => r.emit(encoder),
            Rec::C(r) => r.emit(encoder),
            Rec::O(r) => r.emit(encoder),
        }
    }
}

/// The outcome of looking a name up in the index.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// The name is ours (cluster zone, or a reverse name we hold): answer authoritatively.
    /// `answers` empty with `nxdomain == false` means NODATA.
    Authoritative { nxdomain: bool, answers: Vec<Rec<'a>>, additionals: Vec<Rec<'a>> },
    /// Not ours: forward upstream.
    NotOurs,
}

/// The DNS index: a lock-protected map from names to records, plus the zone constants.
#[derive(Debug)]
pub struct Index {
    inner: RwLock<Inner>,
    synced: AtomicBool,
    generation: AtomicU64,
    zone: Name,
    zone_key: Box<[u8]>,
    ttl: u32,
    soa: Record,
}

fn ip_dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn addr_crec(name: &KeyName, ttl: u32, ip: IpAddr) -> CRec {
    let data = match ip {
        IpAddr::V4(v4) => CData::A(v4),
        IpAddr::V6(v6) => CData::Aaaa(v6),
    };
    CRec { owner: name.clone(), ttl, data }
}

fn addr_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

fn push_addr(rrs: &mut RrsBuilder, rec: CRec) {
    match rec.record_type() {
        RecordType::A => rrs.a.push(rec),
        _ => rrs.aaaa.push(rec),
    }
}

/// An SRV owner name and its (port, target) pairs.
type SrvSpec = (KeyName, Vec<(u16, KeyName)>);

/// Accumulates the records of one Service before they are merged into the index.
struct Builder {
    names: FastMap<KeyName, RrsBuilder>,
    /// SRV name key -> (owner name, [(port, target)]); weights are assigned at the end.
    srv: FastMap<KeyName, SrvSpec>,
}

impl Builder {
    fn new() -> Self {
        Builder { names: FastMap::default(), srv: FastMap::default() }
    }

    /// The shared key of `key`: one allocation per name, whoever refers to it.
    fn intern(&mut self, key: &[u8]) -> KeyName {
        if let Some((k, _)) = self.names.get_key_value(key) {
            return k.clone();
        }
        let k: KeyName = key.into();
        self.names.insert(k.clone(), RrsBuilder::default());
        k
    }

    fn at(&mut self, key: &KeyName) -> &mut RrsBuilder {
        self.names.entry(key.clone()).or_default()
    }

    fn at_name(&mut self, name: &Name) -> &mut RrsBuilder {
        let k = self.intern(&key_of(name));
        self.at(&k)
    }

    fn srv(&mut self, name: &KeyName, port: u16, target: KeyName) {
        self.srv.entry(name.clone()).or_insert_with(|| (name.clone(), Vec::new())).1.push((port, target));
    }

    /// Turns SRV specs into records (priority 0, weight split evenly like CoreDNS), with the
    /// address records of each target as additional records.
    fn finish(mut self, ttl: u32) -> FastMap<KeyName, Rrs> {
        let srv = std::mem::take(&mut self.srv);
        for (key, (name, mut targets)) in srv {
            // The same endpoint may be listed twice (across slices).
            let mut seen = HashSet::new();
            targets.retain(|t| seen.insert(t.clone()));
            let weight = (100 / targets.len().max(1)).max(1) as u16;
            let mut recs = Vec::with_capacity(targets.len());
            let mut extra = Vec::new();
            let mut seen_targets = HashSet::new();
            for (port, target) in targets {
                if seen_targets.insert(target.clone()) {
                    if let Some(t) = self.names.get(&target) {
                        extra.extend(t.a.iter().chain(t.aaaa.iter()).cloned());
                    }
                }
                recs.push(CRec { owner: name.clone(), ttl, data: CData::Srv { weight, port, target } });
            }
            let rrs = self.names.entry(key).or_default();
            rrs.other.extend(recs);
            rrs.srv_extra = extra;
        }
        self.names.into_iter().map(|(k, v)| (k, v.build())).collect()
    }
}

fn parse_ports(ports: impl Iterator<Item = (Option<String>, Option<String>, Option<i32>)>) -> Vec<PortSpec> {
    ports
        .filter_map(|(name, proto, port)| {
            let name = name.filter(|n| !n.is_empty())?.to_ascii_lowercase();
            let proto = proto.unwrap_or_else(|| "TCP".to_string()).to_ascii_lowercase();
            let port = u16::try_from(port?).ok()?;
            Some(PortSpec { name, proto, port })
        })
        .collect::<Vec<_>>()
        .into_boxed_slice()
        .into_vec()
}

impl Index {
    /// A new, empty, not yet synced index for `zone` (e.g. `cluster.local`) with record TTL `ttl`.
    pub fn new(zone: &str, ttl: u32) -> Result<Self, Error> {
        let zone_str = zone.trim_end_matches('.').to_ascii_lowercase();
        if zone_str.is_empty() {
            return Err(Error::Config("empty cluster domain".into()));
        }
        let zone = Name::from_ascii(format!("{zone_str}."))
            .map_err(|source| Error::ClusterDomain { domain: zone_str.clone(), source })?;
        let mut zone_key = Vec::new();
        name_key(&zone, &mut zone_key);
        let sub = |s: &str| -> Result<Name, Error> {
            Name::from_ascii(format!("{s}.{zone_str}."))
                .map_err(|source| Error::ClusterDomain { domain: zone_str.clone(), source })
        };
        let serial =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1);
        let mname = sub("ns.dns")?;
        let soa = Record::from_rdata(
            zone.clone(),
            ttl,
            RData::SOA(SOA::new(mname.clone(), sub("hostmaster")?, serial, 7200, 1800, 86400, ttl)),
        );
        let index = Index {
            inner: RwLock::new(Inner { next_id: 1, ..Default::default() }),
            synced: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            zone: zone.clone(),
            zone_key: zone_key.into_boxed_slice(),
            ttl,
            soa: soa.clone(),
        };
        // Static names of the zone (owner 0).
        let mut b = Builder::new();
        {
            let apex = b.at_name(&zone);
            apex.other.push(CRec::full(soa));
            apex.other.push(CRec::full(Record::from_rdata(zone.clone(), ttl, RData::NS(NS(mname.clone())))));
        }
        b.at_name(&sub("dns-version")?).other.push(CRec::full(Record::from_rdata(
            sub("dns-version")?,
            ttl,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        )));
        for s in ["svc", "pod", "dns", "ns.dns"] {
            b.at_name(&sub(s)?);
        }
        {
            let mut inner = index.inner.write().unwrap_or_else(|e| e.into_inner());
            merge(&mut inner, 0, b.finish(ttl));
        }
        Ok(index)
    }

    /// The cluster zone (fully qualified, lower case).
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// The lookup key of the zone (see [`name_key`]).
    pub(crate) fn zone_key(&self) -> &[u8] {
        &self.zone_key
    }

    /// Whether `key` (a [`name_key`]) has the shape of a search-list expansion of a pod's first
    /// search domain: `X.<ns>.svc.<zone>` with at least one label in X.
    pub(crate) fn search_shaped(&self, key: &[u8]) -> bool {
        key.strip_prefix(&*self.zone_key).and_then(key_labels).is_some_and(|l| l.len() >= 3 && l[0] == b"svc")
    }

    /// The TTL of every record served from the index.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The SOA record of the zone (authority section of negative answers).
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// True once the initial lists of every watched kind went in.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Marks the index as synced (answers instead of SERVFAIL).
    pub fn set_synced(&self, synced: bool) {
        // Under the write lock so that the generation moves with it (cached answers depend on it).
        let _w = self.write();
        self.synced.store(synced, Ordering::Release);
    }

    /// A counter bumped on every change, inside the write lock: an answer computed under a read
    /// guard together with the generation read under that same guard is current for exactly as
    /// long as the generation has not moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of names held (for tests and metrics).
    pub fn name_count(&self) -> usize {
        self.read().names.len()
    }

    /// Number of Services held.
    pub fn service_count(&self) -> usize {
        self.read().services.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> WriteGuard<'_> {
        WriteGuard { inner: self.inner.write().unwrap_or_else(|e| e.into_inner()), generation: &self.generation }
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&self, svc: &Service) {
        let (Some(ns), Some(name)) = (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()) else {
            return;
        };
        let key = (ns.to_ascii_lowercase(), name.to_ascii_lowercase());
        let spec = svc.spec.clone().unwrap_or_default();
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            match spec.external_name.as_deref().filter(|s| !s.is_empty()) {
                Some(t) => Kind::ExternalName(t.trim_end_matches('.').to_ascii_lowercase()),
                None => Kind::ClusterIp(Vec::new()),
            }
        } else if spec.cluster_ip.as_deref() == Some("None") {
            Kind::Headless
        } else {
            let mut ips: Vec<IpAddr> =
                spec.cluster_ips.clone().unwrap_or_default().iter().filter_map(|s| s.parse().ok()).collect();
            if ips.is_empty() {
                if let Some(ip) = spec.cluster_ip.as_deref().and_then(|s| s.parse().ok()) {
                    ips.push(ip);
                }
            }
            Kind::ClusterIp(ips)
        };
        let ports = parse_ports(spec.ports.unwrap_or_default().into_iter().map(|p| (p.name, p.protocol, Some(p.port))));
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let mut inner = self.write();
        let inner = &mut *inner;
        let id = match inner.services.get(&key) {
            Some(s) if s.kind == kind && s.ports == ports && s.publish_not_ready == publish_not_ready => {
                return;
            }
            Some(s) => s.id,
            None => {
                inner.next_id += 1;
                inner.next_id
            }
        };
        let headless = kind == Kind::Headless;
        inner.services.insert(key.clone(), SvcState { id, kind, ports, publish_not_ready });
        if let Some(slices) = inner.slices.get_mut(&key) {
            if !headless {
                slices.0.iter_mut().for_each(|(_, i)| i.strip());
            } else if slices.values().any(|i| i.stripped) && !inner.refetch.contains(&key) {
                inner.refetch.push(key.clone());
            }
        }
        self.rebuild(inner, &key);
    }

    /// Services (namespace, name) whose EndpointSlices the caller must read again and pass to
    /// [`Index::upsert_endpoint_slice`]: they turned headless after their endpoints were
    /// dropped as unused.
    pub fn take_refetch(&self) -> Vec<(String, String)> {
        // Called after every watch event: a shared lock answers the usual "nothing".
        if self.read().refetch.is_empty() {
            return Vec::new();
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut inner.refetch)
    }

    /// Asks for the slices of a Service to be read again (after a failed read).
    pub fn request_refetch(&self, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !inner.refetch.contains(&key) {
            inner.refetch.push(key);
        }
    }

    /// Removes a Service (by namespace and name).
    pub fn delete_service(&self, svc: &Service) {
        if let (Some(ns), Some(name)) = (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()) {
            self.delete_service_named(ns, name);
        }
    }

    /// Removes a Service by namespace and name.
    pub fn delete_service_named(&self, ns: &str, name: &str) {
        let key = (ns.to_ascii_lowercase(), name.to_ascii_lowercase());
        let mut inner = self.write();
        if let Some(state) = inner.services.remove(&key) {
            unmerge(&mut inner, state.id);
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_endpoint_slice(&self, slice: &EndpointSlice) {
        let (Some(ns), Some(name)) = (slice.metadata.namespace.as_deref(), slice.metadata.name.as_deref()) else {
            return;
        };
        let ns = ns.to_ascii_lowercase();
        let slice_id = (ns.clone(), name.to_string());
        let svc_name =
            slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(|s| s.to_ascii_lowercase());
        let info = match slice.address_type.as_str() {
            "IPv4" | "IPv6" => {
                let mut endpoints = Vec::new();
                for ep in slice.endpoints.iter().flatten() {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    let hostname = ep
                        .hostname
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(|h| h.to_ascii_lowercase().into_boxed_str());
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            endpoints.push(EndpointInfo { ip, hostname: hostname.clone(), ready });
                        }
                    }
                }
                let ports =
                    parse_ports(slice.ports.iter().flatten().map(|p| (p.name.clone(), p.protocol.clone(), p.port)));
                SliceInfo { endpoints: endpoints.into_boxed_slice(), ports, stripped: false }
            }
            _ => SliceInfo { endpoints: Box::new([]), ports: Vec::new(), stripped: false },
        };
        let mut info = info;
        let mut inner = self.write();
        let inner = &mut *inner;
        let old_owner = inner.slice_owner.get(&slice_id).cloned();
        let new_owner = svc_name.map(|s| (ns.clone(), s));
        // Endpoints only make records for headless Services: keep them for those (and for
        // slices whose Service is not known yet), not for the ClusterIP majority.
        if new_owner.as_ref().and_then(|o| inner.services.get(o)).is_some_and(|s| s.kind != Kind::Headless) {
            info.strip();
        }
        if old_owner == new_owner {
            if let Some(owner) = &new_owner {
                if inner.slices.get(owner).and_then(|m| m.get(name)) == Some(&info) {
                    return;
                }
            }
        }
        if let Some(old) = &old_owner {
            if old_owner != new_owner {
                remove_slice(inner, old, name);
                self.rebuild(inner, old);
            }
        }
        inner.slice_owner.remove(&slice_id);
        if let Some(owner) = new_owner {
            inner.slice_owner.insert(slice_id, owner.clone());
            inner.slices.entry(owner.clone()).or_default().insert(name.to_string(), info);
            self.rebuild(inner, &owner);
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&self, slice: &EndpointSlice) {
        let (Some(ns), Some(name)) = (slice.metadata.namespace.as_deref(), slice.metadata.name.as_deref()) else {
            return;
        };
        let slice_id = (ns.to_ascii_lowercase(), name.to_string());
        let mut inner = self.write();
        let inner = &mut *inner;
        if let Some(owner) = inner.slice_owner.remove(&slice_id) {
            remove_slice(inner, &owner, name);
            self.rebuild(inner, &owner);
        }
    }

    /// Replaces every Service with `list` (after a (re)list).
    pub fn replace_services(&self, list: &[Service]) {
        let keep: HashSet<(String, String)> = list.iter().filter_map(service_key).collect();
        self.retain_services(&keep);
        for s in list {
            self.upsert_service(s);
        }
    }

    /// Removes every Service whose (namespace, name) is not in `keep` (see [`service_key`]).
    pub fn retain_services(&self, keep: &HashSet<(String, String)>) {
        let gone: Vec<SvcKey> = self.read().services.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for (ns, name) in gone {
            self.delete_service_named(&ns, &name);
        }
    }

    /// Replaces every EndpointSlice with `list` (after a (re)list).
    pub fn replace_endpoint_slices(&self, list: &[EndpointSlice]) {
        let keep: HashSet<(String, String)> = list.iter().filter_map(endpoint_slice_key).collect();
        self.retain_endpoint_slices(&keep);
        for s in list {
            self.upsert_endpoint_slice(s);
        }
    }

    /// Removes every EndpointSlice whose (namespace, name) is not in `keep` (see
    /// [`endpoint_slice_key`]).
    pub fn retain_endpoint_slices(&self, keep: &HashSet<(String, String)>) {
        let gone: Vec<SvcKey> = self.read().slice_owner.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for (ns, name) in gone {
            let mut inner = self.write();
            let inner = &mut *inner;
            if let Some(owner) = inner.slice_owner.remove(&(ns, name.clone())) {
                remove_slice(inner, &owner, &name);
                self.rebuild(inner, &owner);
            }
        }
    }

    /// Recomputes the records of one Service from its state and slices.
    fn rebuild(&self, inner: &mut Inner, key: &SvcKey) {
        let Some(state) = inner.services.get(key) else {
            return;
        };
        let id = state.id;
        let built = self.build(key, state, inner.slices.get(key));
        unmerge(inner, id);
        if let Some(built) = built {
            merge(inner, id, built);
        }
    }

    fn build(&self, (ns, name): &SvcKey, state: &SvcState, slices: Option<&SliceMap>) -> Option<FastMap<KeyName, Rrs>> {
        let ttl = self.ttl;
        // Keys are built by appending labels to the zone's key (root first).
        let child = |parent: &[u8], label: &str| -> Option<Vec<u8>> {
            let len = u8::try_from(label.len()).ok().filter(|l| (1..=63).contains(l))?;
            let mut k = Vec::with_capacity(parent.len() + 1 + label.len());
            k.extend_from_slice(parent);
            k.push(len);
            k.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
            Some(k)
        };
        let svc_zone = child(&self.zone_key, "svc")?;
        let svc_key = child(&child(&svc_zone, ns)?, name)?;
        let mut b = Builder::new();
        let svc_name = b.intern(&svc_key);
        let srv_key = |b: &mut Builder, p: &PortSpec| -> Option<KeyName> {
            let proto_key = child(&svc_key, &format!("_{}", p.proto))?;
            // The `_proto` name exists (empty non-terminal), as for any name with children.
            b.intern(&proto_key);
            let k = child(&proto_key, &format!("_{}", p.name))?;
            Some(b.intern(&k))
        };
        match &state.kind {
            Kind::ClusterIp(ips) => {
                let rrs = b.at(&svc_name);
                for ip in ips {
                    push_addr(rrs, addr_crec(&svc_name, ttl, *ip));
                }
                for ip in ips {
                    let rev = b.intern(&key_of(&Name::from(*ip)));
                    b.at(&rev).other.push(CRec { owner: rev.clone(), ttl, data: CData::Ptr(svc_name.clone()) });
                }
                for p in &state.ports {
                    let Some(k) = srv_key(&mut b, p) else {
                        continue;
                    };
                    b.srv(&k, p.port, svc_name.clone());
                }
            }
            Kind::ExternalName(target) => {
                let Ok(t) = Name::from_ascii(format!("{target}.")) else {
                    return None;
                };
                let rrs = b.at(&svc_name);
                rrs.other.push(CRec { owner: svc_name.clone(), ttl, data: CData::Cname(key_of(&t)) });
            }
            Kind::Headless => {
                let mut any = false;
                let mut seen_ips = HashSet::new();
                let mut seen_hosts = HashSet::new();
                for slice in slices.into_iter().flat_map(|m| m.values()) {
                    for ep in &slice.endpoints {
                        if !(ep.ready || state.publish_not_ready) {
                            continue;
                        }
                        let label = ep.hostname.as_deref().map(str::to_string).unwrap_or_else(|| ip_dashed(&ep.ip));
                        let Some(host) = child(&svc_key, &label) else {
                            continue;
                        };
                        let host = b.intern(&host);
                        any = true;
                        if seen_ips.insert(ep.ip) {
                            push_addr(b.at(&svc_name), addr_crec(&svc_name, ttl, ep.ip));
                        }
                        if seen_hosts.insert((ep.ip, label)) {
                            push_addr(b.at(&host), addr_crec(&host, ttl, ep.ip));
                            let rev = b.intern(&key_of(&Name::from(ep.ip)));
                            let prec = CRec { owner: rev.clone(), ttl, data: CData::Ptr(host.clone()) };
                            b.at(&rev).other.push(prec);
                        }
                        for p in &slice.ports {
                            let Some(k) = srv_key(&mut b, p) else {
                                continue;
                            };
                            b.srv(&k, p.port, host.clone());
                        }
                    }
                }
                if !any {
                    return None;
                }
            }
        }
        let built = b.finish(ttl);
        Some(built)
    }

    /// Looks a query up. `key` is the [`name_key`] of `qname`.
    pub(crate) fn lookup<'a>(
        &self,
        inner: &'a InnerGuard<'_>,
        qname: &Name,
        key: &[u8],
        qtype: RecordType,
    ) -> Lookup<'a> {
        let inner: &'a Inner = &inner.0;
        let in_zone = key.starts_with(&self.zone_key);
        let mut answers: Vec<Rec<'a>> = Vec::new();
        let mut additionals: Vec<Rec<'a>> = Vec::new();
        if let Some(node) = inner.names.get(key) {
            let mut node = node;
            let mut depth = 0;
            loop {
                let cname = node.contribs.iter().find_map(|(_, r)| r.cname().map(|c| (c, r)));
                match cname {
                    Some((c, _)) if qtype != RecordType::CNAME => {
                        answers.push(Rec::C(c));
                        depth += 1;
                        if depth > 8 {
                            break;
                        }
                        let target = match &c.data {
                            CData::Cname(t) if t.starts_with(&self.zone_key) => Some(t),
                            _ => None,
                        };
                        match target.and_then(|t| inner.names.get(&**t)) {
                            Some(next) => node = next,
                            None => break,
                        }
                    }
                    _ => {
                        collect(node, qtype, &mut answers, &mut additionals);
                        break;
                    }
                }
            }
            return Lookup::Authoritative { nxdomain: false, answers, additionals };
        }
        if !in_zone {
            return Lookup::NotOurs;
        }
        let Some(labels) = key_labels(&key[self.zone_key.len()..]) else {
            return Lookup::Authoritative { nxdomain: true, answers, additionals };
        };
        let nodata = Lookup::Authoritative { nxdomain: false, answers: Vec::new(), additionals: Vec::new() };
        match labels.as_slice() {
            // <ns>.svc.<zone>, <ns>.pod.<zone>: namespace-only names exist (NODATA).
            [b"svc", _] | [b"pod", _] => nodata,
            [b"pod", _ns, ip] => {
                let Some(ip) = pod_ip(ip) else {
                    return Lookup::Authoritative { nxdomain: true, answers, additionals };
                };
                let want = match ip {
                    IpAddr::V4(_) => RecordType::A,
                    IpAddr::V6(_) => RecordType::AAAA,
                };
                if qtype == want || qtype == RecordType::ANY {
                    answers.push(Rec::O(Box::new(addr_record(qname, self.ttl, ip))));
                }
                Lookup::Authoritative { nxdomain: false, answers, additionals }
            }
            _ => Lookup::Authoritative { nxdomain: true, answers, additionals },
        }
    }

    /// Takes the read lock for a batch of lookups.
    pub(crate) fn guard(&self) -> InnerGuard<'_> {
        InnerGuard(self.read())
    }

    /// Convenience for tests and tools: resolves `name`/`qtype` and returns (rcode-ish, records).
    /// `None` means the name is outside the index and would be forwarded.
    pub fn query(&self, name: &str, qtype: RecordType) -> Option<(bool, Vec<Record>, Vec<Record>)> {
        let qname = Name::from_ascii(name).ok()?;
        let mut key = Vec::new();
        name_key(&qname, &mut key);
        let guard = self.guard();
        match self.lookup(&guard, &qname, &key, qtype) {
            Lookup::NotOurs => None,
            Lookup::Authoritative { nxdomain, answers, additionals } => {
                let own = |v: Vec<Rec<'_>>| {
                    v.into_iter()
                        .map(|r| match r {
                            Rec::B(r) => r.clone(),
                            Rec::C(r) => r.to_record(),
                            Rec::O(r) => *r,
                        })
                        .collect()
                };
                Some((nxdomain, own(answers), own(additionals)))
            }
        }
    }
}

/// Read guard over the index contents.
pub(crate) struct InnerGuard<'a>(std::sync::RwLockReadGuard<'a, Inner>);

/// Write guard that bumps the generation when the change is complete, before the lock is
/// released (readers holding the read lock therefore never see a generation that is newer than
/// the data they read).
struct WriteGuard<'a> {
    inner: std::sync::RwLockWriteGuard<'a, Inner>,
    generation: &'a AtomicU64,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}

/// The key under which [`Index::retain_services`] knows a Service.
pub fn service_key(s: &Service) -> Option<(String, String)> {
    Some((s.metadata.namespace.as_deref()?.to_ascii_lowercase(), s.metadata.name.as_deref()?.to_ascii_lowercase()))
}

/// The key under which [`Index::retain_endpoint_slices`] knows an EndpointSlice.
pub fn endpoint_slice_key(s: &EndpointSlice) -> Option<(String, String)> {
    Some((s.metadata.namespace.as_deref()?.to_ascii_lowercase(), s.metadata.name.clone()?))
}

fn pod_ip(label: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(label).ok()?;
    if s.contains('.') || s.contains(':') {
        return None;
    }
    if let Ok(v4) = s.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    s.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fn collect<'a>(node: &'a Node, qtype: RecordType, answers: &mut Vec<Rec<'a>>, additionals: &mut Vec<Rec<'a>>) {
    for (_, rrs) in &node.contribs {
        if qtype == RecordType::ANY {
            answers.extend(rrs.records.iter().map(Rec::C));
        } else {
            answers.extend(rrs.of_type(qtype).map(Rec::C));
            if qtype == RecordType::SRV {
                additionals.extend(rrs.srv_extra.iter().map(Rec::C));
            }
        }
    }
}

fn remove_slice(inner: &mut Inner, owner: &SvcKey, slice: &str) {
    if let Some(m) = inner.slices.get_mut(owner) {
        m.remove(slice);
        if m.is_empty() {
            inner.slices.remove(owner);
        }
    }
}

fn merge(inner: &mut Inner, id: u64, built: FastMap<KeyName, Rrs>) {
    let mut keys = Vec::with_capacity(built.len());
    for (key, rrs) in built {
        keys.push(key.clone());
        let node = inner.names.entry(key).or_default();
        let mut v = std::mem::take(&mut node.contribs).into_vec();
        v.reserve_exact(1);
        v.push((id, rrs));
        node.contribs = v.into_boxed_slice();
    }
    inner.owned_names.insert(id, keys);
}

fn unmerge(inner: &mut Inner, id: u64) {
    let Some(keys) = inner.owned_names.remove(&id) else {
        return;
    };
    for key in keys {
        if let Some(node) = inner.names.get_mut(&*key) {
            if node.contribs.iter().any(|(owner, _)| *owner == id) {
                let mut v = std::mem::take(&mut node.contribs).into_vec();
                v.retain(|(owner, _)| *owner != id);
                node.contribs = v.into_boxed_slice();
            }
            if node.contribs.is_empty() {
                inner.names.remove(&*key);
            }
        }
    }
}

#[cfg(test)]
mod crec_tests {
    use super::*;

    fn bytes(f: impl Fn(&mut BinEncoder<'_>)) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = BinEncoder::new(&mut out);
        // A name written first, so compression pointers are exercised as well.
        Name::from_ascii("x.default.svc.cluster.local.").unwrap().emit(&mut e).unwrap();
        f(&mut e);
        out
    }

    #[test]
    fn compact_records_encode_like_hickory_records() {
        let owner = key_of(&Name::from_ascii("web.default.svc.cluster.local.").unwrap());
        let target = key_of(&Name::from_ascii("db-0.db.default.svc.cluster.local.").unwrap());
        assert_eq!(key_to_name(&owner), Name::from_ascii("web.default.svc.cluster.local.").unwrap());
        let recs = [
            CRec { owner: owner.clone(), ttl: 5, data: CData::A("10.0.0.1".parse().unwrap()) },
            CRec { owner: owner.clone(), ttl: 5, data: CData::Aaaa("fd00::1".parse().unwrap()) },
            CRec { owner: owner.clone(), ttl: 7, data: CData::Ptr(target.clone()) },
            CRec { owner: owner.clone(), ttl: 7, data: CData::Cname(target.clone()) },
            CRec { owner: owner.clone(), ttl: 9, data: CData::Srv { weight: 50, port: 5432, target: target.clone() } },
            CRec::full(Record::from_rdata(key_to_name(&owner), 3, RData::TXT(TXT::new(vec!["1.1.0".into()])))),
        ];
        for r in &recs {
            let ours = bytes(|e| r.emit(e).unwrap());
            let theirs = bytes(|e| r.to_record().emit(e).unwrap());
            assert_eq!(ours, theirs, "{r:?}");
            assert_eq!(r.record_type(), r.to_record().record_type());
        }
    }
}
