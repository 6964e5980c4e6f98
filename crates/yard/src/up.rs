//! `yard up`: a whole cluster in one process tree on an isolated network of namespaces, and
//! `yard shell`: a command inside one of its nodes.

use crate::client::{self, Component};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};

const BRIDGE: &str = "yardbr0";
const NODE_NET: &str = "172.18.0";
const DNS_IP: &str = "10.96.0.10";

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Data directory (store, certificates, kubeconfig, node state).
    #[arg(long, default_value = ".yard")]
    pub data_dir: PathBuf,
    /// Cluster name: prefixes its network namespaces, so two clusters can run side by side.
    #[arg(long, default_value = "yard")]
    pub name: String,
    /// Number of nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// API server port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,
    /// DNS port on 127.0.0.1 of the host (0 picks a free one), for `dig @127.0.0.1 -p PORT`.
    #[arg(long, default_value_t = 0)]
    pub dns_port: u16,
    #[arg(long, value_enum, default_value = "nftables")]
    pub proxy_mode: yard_proxy::Mode,
    /// Manifests to apply once the cluster is up (files or directories).
    #[arg(short = 'f', long = "filename")]
    pub manifests: Vec<PathBuf>,
    /// Make this host (its current network namespace) the single node, for real deployments: pods
    /// hang off a `cni0` bridge here and the proxy programs this namespace's kernel. What it
    /// changes (cni0, ip_forward, bridge-nf-call-iptables, its nftables table) is undone on exit.
    #[arg(long)]
    pub host_network: bool,
    /// With --host-network: the Node's name (default: the hostname).
    #[arg(long, requires = "host_network")]
    pub node_name: Option<String>,
    /// With --host-network: the Node's InternalIP (default: the first global IPv4 address here).
    #[arg(long, requires = "host_network")]
    pub node_ip: Option<Ipv4Addr>,
    /// Seconds to wait for the manifests' workloads to become Ready.
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
    /// Keep the cluster's objects in an existing etcd (`etcd://host:port[,host:port...]`) instead
    /// of the embedded store in the data directory.
    #[arg(long)]
    pub store: Option<String>,
    /// Static bearer tokens for the API server (kube-apiserver's `--token-auth-file` CSV:
    /// `token,user,uid,"group1,group2"`); their users are authorized by RBAC.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    #[arg(long, default_value = ".yard")]
    pub data_dir: PathBuf,
    /// Node to enter (default: the first).
    #[arg(long)]
    pub node: Option<String>,
    /// Command to run (default: an interactive shell).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct NodeInfo {
    name: String,
    /// A name under /run/netns, or (host network) an absolute path such as /proc/PID/ns/net.
    netns: String,
    ip: Ipv4Addr,
}

impl NodeInfo {
    fn netns_path(&self) -> PathBuf {
        if self.netns.starts_with('/') {
            PathBuf::from(&self.netns)
        } else {
            yard_netns::path_of(&self.netns)
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ClusterInfo {
    name: String,
    pid: u32,
    kubeconfig: PathBuf,
    nodes: Vec<NodeInfo>,
}

fn ip_in(ns: &Path, args: &[&str]) -> anyhow::Result<String> {
    yard_netns::output_in(ns, "ip", args).map_err(|e| anyhow::anyhow!("{e}"))
}

fn sysctl_in(ns: &Path, key: &str, val: &str) -> anyhow::Result<()> {
    yard_netns::output_in(ns, "sysctl", &["-qw", &format!("{key}={val}")]).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The cluster's namespaces; deleted on drop (which also removes every link inside them).
struct Network {
    names: Vec<String>,
    /// Held for this process's life: see [`claim_hub`].
    _owner: Option<std::os::unix::net::UnixListener>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = yard_netns::delete(n);
        }
    }
}

/// What `--host-network` changes in this namespace, recorded at start and put back on drop.
struct HostNet {
    had_bridge: bool,
    sysctls: Vec<(PathBuf, String)>,
}

impl HostNet {
    fn record() -> Self {
        let had_bridge = Path::new("/sys/class/net").join(yard_agent_bridge()).exists();
        let sysctls = ["net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"]
            .iter()
            .map(|k| Path::new("/proc/sys").join(k))
            .filter_map(|p| std::fs::read_to_string(&p).ok().map(|v| (p, v.trim().to_string())))
            .collect();
        HostNet { had_bridge, sysctls }
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        if !self.had_bridge {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", yard_agent_bridge()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        for (p, v) in &self.sysctls {
            if std::fs::read_to_string(p).map(|now| now.trim() != v).unwrap_or(false) {
                let _ = std::fs::write(p, v);
            }
        }
    }
}

fn yard_agent_bridge() -> &'static str {
    yard_agent::net::BRIDGE
}

/// Where the nodes live: namespaces of their own (default), or this host's namespace.
#[allow(dead_code)] // held for its Drop
enum Topology {
    Isolated(Network),
    Host(HostNet),
}

/// The first global IPv4 address of this namespace that is not on a bridge Yard makes.
fn first_global_ipv4() -> anyhow::Result<Ipv4Addr> {
    let out = std::process::Command::new("ip").args(["-o", "-4", "addr", "show", "scope", "global"]).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[1] == yard_agent_bridge() || f[2] != "inet" {
            continue;
        }
        if let Some(Ok(ip)) = f[3].split('/').next().map(str::parse::<Ipv4Addr>) {
            return Ok(ip);
        }
    }
    bail!("no global IPv4 address in this network namespace: pass --node-ip")
}

fn host_node(a: &UpArgs) -> anyhow::Result<(HostNet, NodeInfo)> {
    let name = match &a.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_lowercase(),
    };
    if name.is_empty()
        || name.len() > 253
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        bail!("node name {name:?} is not a DNS subdomain: pass --node-name");
    }
    let ip = match a.node_ip {
        Some(ip) => ip,
        None => first_global_ipv4()?,
    };
    let host = HostNet::record();
    Ok((host, NodeInfo { name, netns: format!("/proc/{}/ns/net", std::process::id()), ip }))
}

/// UDP and TCP sockets on one loopback port: `port`, or (0) one the kernel picks for UDP that is
/// also free for TCP (the UDP pick may be a port some TCP socket holds: then pick again).
fn bind_dns_pair(port: u16) -> anyhow::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..if port == 0 { 50 } else { 1 } {
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port))?;
        let picked = udp.local_addr()?.port();
        match std::net::TcpListener::bind(("127.0.0.1", picked)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!("DNS port on 127.0.0.1 (UDP and TCP): {}", last.map(|e| e.to_string()).unwrap_or_default()))
}

/// Each `yard up` binds, for its life, an abstract unix socket inside its cluster's hub namespace:
/// the kernel releases it when the process ends, `kill -9` included. `None`: a live `yard up`
/// holds it.
fn claim_hub(hub_path: &Path) -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    use std::os::linux::net::SocketAddrExt;
    let bound = yard_netns::run_in(hub_path, || {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"yard-up")?;
        std::os::unix::net::UnixListener::bind_addr(&addr)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    match bound {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(anyhow::anyhow!("claim {}: {e}", hub_path.display())),
    }
}

/// The node namespaces of a cluster and their addresses: node-1 is 10.x.0.2, and so on.
fn node_infos(cluster: &str, nodes: usize) -> anyhow::Result<Vec<NodeInfo>> {
    (1..=nodes)
        .map(|i| {
            let name = format!("node-{i}");
            let netns = format!("yard-{cluster}-{name}");
            Ok(NodeInfo { name, netns, ip: format!("{NODE_NET}.{}", i + 1).parse()? })
        })
        .collect()
}

/// Every named namespace of this cluster (hub, nodes, pods): `yard-<cluster>-...`.
fn cluster_namespaces(cluster: &str) -> Vec<String> {
    let prefix = format!("yard-{cluster}-");
    let Ok(rd) = std::fs::read_dir("/run/netns") else { return vec![] };
    rd.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect()
}

/// The network of a `yard up` that ended without cleaning up (`kill -9`, a crash). Kept when it
/// is this data directory's own, complete, with the same nodes: its pods are still running in
/// it and the agents adopt them. Otherwise everything of the cluster's name is removed (the
/// processes left in those namespaces killed) and made anew.
fn reuse_stale(cluster: &str, nodes: usize, data_dir: &Path) -> anyhow::Result<Option<Vec<NodeInfo>>> {
    let infos = node_infos(cluster, nodes)?;
    let ours = std::fs::read(data_dir.join("cluster.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["name"] == cluster && v["nodes"].as_array().is_some_and(|n| n.len() == nodes));
    if ours && infos.iter().all(|n| yard_netns::exists(&n.netns)) {
        eprintln!(
            "cluster {cluster:?}: taking over the network of a `yard up` that did not stop (its pods are adopted)"
        );
        return Ok(Some(infos));
    }
    eprintln!("cluster {cluster:?}: removing what a `yard up` that did not stop left behind");
    let mut names = cluster_namespaces(cluster);
    // Pods' namespaces first, then the nodes', the hub last.
    names.sort_by_key(|n| (n.ends_with("-net"), !n.contains("-p-"), n.clone()));
    for n in names {
        yard_agent::net::kill_processes_in_netns(&yard_netns::path_of(&n));
        yard_netns::delete(&n).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(None)
}

fn setup_network(cluster: &str, nodes: usize, data_dir: &Path) -> anyhow::Result<(Network, Vec<NodeInfo>)> {
    if nodes == 0 || nodes > 200 {
        bail!("--nodes must be between 1 and 200");
    }
    let hub = format!("yard-{cluster}-net");
    let busy = || {
        anyhow::anyhow!("network namespace {hub} exists: is another `yard up --name {cluster}` running? (stop it, or pick another --name)")
    };
    if yard_netns::exists(&hub) {
        let owner = claim_hub(&yard_netns::path_of(&hub))?.ok_or_else(busy)?;
        if let Some(infos) = reuse_stale(cluster, nodes, data_dir)? {
            let mut names = vec![hub.clone()];
            names.extend(infos.iter().map(|n| n.netns.clone()));
            return Ok((Network { names, _owner: Some(owner) }, infos));
        }
    }
    let mut net = Network { names: Vec::new(), _owner: None };
    let hub_path = yard_netns::create(&hub).map_err(|e| anyhow::anyhow!("{e}"))?;
    net.names.push(hub.clone());
    net._owner = Some(claim_hub(&hub_path)?.ok_or_else(busy)?);
    // A fixed address: a bridge left to itself takes its lowest port's, which moves as nodes come
    // and go (see the agent's pod bridge).
    let mac = yard_agent::net::bridge_mac(format!("{NODE_NET}.1").parse()?);
    ip_in(&hub_path, &["link", "add", BRIDGE, "address", &mac, "type", "bridge"])?;
    ip_in(&hub_path, &["addr", "add", &format!("{NODE_NET}.1/16"), "dev", BRIDGE])?;
    ip_in(&hub_path, &["link", "set", BRIDGE, "up"])?;
    let mut infos = Vec::new();
    for i in 1..=nodes {
        let name = format!("node-{i}");
        let ns = format!("yard-{cluster}-{name}");
        let path = yard_netns::create(&ns).map_err(|e| anyhow::anyhow!("{e}"))?;
        net.names.push(ns.clone());
        let ip: Ipv4Addr = format!("{NODE_NET}.{}", i + 1).parse()?;
        let host_end = format!("vn{i}");
        ip_in(
            &hub_path,
            &[
                "link",
                "add",
                &host_end,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                path.to_str().unwrap_or_default(),
            ],
        )?;
        ip_in(&hub_path, &["link", "set", &host_end, "master", BRIDGE, "up"])?;
        ip_in(&path, &["addr", "add", &format!("{ip}/16"), "dev", "eth0"])?;
        ip_in(&path, &["link", "set", "eth0", "up"])?;
        ip_in(&path, &["route", "add", "default", "via", &format!("{NODE_NET}.1")])?;
        sysctl_in(&path, "net.ipv4.ip_forward", "1")?;
        sysctl_in(&path, "net.ipv4.conf.all.route_localnet", "1")?;
        infos.push(NodeInfo { name, netns: ns, ip });
    }
    Ok((net, infos))
}

async fn ensure_kube_dns(client: &kube::Client, nodes: &[NodeInfo]) -> anyhow::Result<()> {
    let pp = PatchParams::apply("yard-up").force();
    let svcs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "kube-system",
        &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
    );
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": DNS_IP, "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}, {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}});
    svcs.patch("kube-dns", &pp, &Patch::Apply(svc)).await.context("kube-dns Service")?;
    let addrs: Vec<Value> = nodes.iter().map(|n| json!({"ip": n.ip.to_string(), "nodeName": n.name})).collect();
    let eps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "kube-system",
        &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Endpoints>(&()),
    );
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "subsets": [{"addresses": addrs, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}]});
    eps.patch("kube-dns", &pp, &Patch::Apply(ep)).await.context("kube-dns Endpoints")?;
    let slices: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "kube-system",
        &kube::api::ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&()),
    );
    let endpoints: Vec<Value> = nodes.iter().map(|n| json!({"addresses": [n.ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": n.name})).collect();
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "kube-dns-yard", "namespace": "kube-system", "labels": {"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "yard-up"}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]});
    slices.patch("kube-dns-yard", &pp, &Patch::Apply(slice)).await.context("kube-dns EndpointSlice")?;
    Ok(())
}

/// Read manifests (files or directories of .yaml/.yml/.json) into objects.
fn read_manifests(paths: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize_yaml(doc).with_context(|| format!("parsing {}", f.display()))?;
            if v.is_object() {
                out.push(v);
            }
        }
    }
    Ok(out)
}

trait DeYaml {
    fn deserialize_yaml(d: serde_yaml::Deserializer) -> Result<Value, serde_yaml::Error>;
}
impl DeYaml for Value {
    fn deserialize_yaml(d: serde_yaml::Deserializer) -> Result<Value, serde_yaml::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// Server-side apply each object, printing kubectl-style lines. Returns (namespace, kind, name).
async fn apply_all(client: &kube::Client, objs: &[Value]) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut applied = Vec::new();
    for obj in objs {
        let av = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let (group, version) = av.split_once('/').unwrap_or(("", av));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) =
            kube::discovery::pinned_kind(client, &gvk).await.with_context(|| format!("unknown kind {av}/{kind}"))?;
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), &ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let existed = api.get_opt(&name).await?.is_some();
        api.patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(obj))
            .await
            .with_context(|| format!("applying {kind} {name}"))?;
        let qual = if group.is_empty() { ar.plural.clone() } else { format!("{}.{group}", ar.plural) };
        let what = if qual == ar.plural { kind.to_lowercase() } else { format!("{}.{group}", kind.to_lowercase()) };
        println!("{what}/{name} {}", if existed { "configured" } else { "created" });
        applied.push((
            if caps.scope == kube::discovery::Scope::Namespaced { ns } else { String::new() },
            kind.to_string(),
            name,
        ));
    }
    Ok(applied)
}

/// Wait until applied Deployments and Pods are Ready, printing progress when it changes.
async fn wait_ready(
    client: &kube::Client,
    applied: &[(String, String, String)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let mut pending = Vec::new();
        let mut status = Vec::new();
        for (ns, kind, name) in applied {
            match kind.as_str() {
                "Deployment" => {
                    let d: Deployment = Api::namespaced(client.clone(), ns).get(name).await?;
                    let want = d.spec.replicas.unwrap_or(1);
                    let st = d.status.unwrap_or_default();
                    let ready = st.ready_replicas.unwrap_or(0);
                    let updated = st.updated_replicas.unwrap_or(0);
                    status.push(format!("deployment/{name} {ready}/{want}"));
                    if ready != want || updated != want || st.replicas.unwrap_or(0) != want {
                        pending.push(name.clone());
                    }
                }
                "Pod" => {
                    let p: Pod = Api::namespaced(client.clone(), ns).get(name).await?;
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    status.push(format!("pod/{name} {}", if ready { "Ready" } else { "not ready" }));
                    if !ready {
                        pending.push(name.clone());
                    }
                }
                _ => {}
            }
        }
        let line = status.join(", ");
        if line != last && !line.is_empty() {
            println!("waiting: {line}");
            last = line;
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not Ready after {}s: {}", timeout.as_secs(), pending.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Print the server's Table for a resource list, like `kubectl get -o wide`.
async fn print_table(client: &kube::Client, path: &str, title: &str) -> anyhow::Result<()> {
    let req =
        http::Request::get(path).header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").body(Vec::new())?;
    let t: Value = client.request(req).await?;
    let cols: Vec<(usize, String)> = t["columnDefinitions"]
        .as_array()
        .map(|a| {
            a.iter().enumerate().map(|(i, c)| (i, c["name"].as_str().unwrap_or_default().to_uppercase())).collect()
        })
        .unwrap_or_default();
    let mut rows: Vec<Vec<String>> =
        vec![std::iter::once("NAMESPACE".to_string()).chain(cols.iter().map(|(_, n)| n.clone())).collect()];
    for r in t["rows"].as_array().into_iter().flatten() {
        let ns = r["object"]["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let cells = r["cells"].as_array().cloned().unwrap_or_default();
        let mut row = vec![ns];
        for (i, _) in &cols {
            let c = cells.get(*i).cloned().unwrap_or(Value::Null);
            row.push(match c {
                Value::String(s) => s,
                Value::Null => "<none>".into(),
                other => other.to_string(),
            });
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    println!("{title}");
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

pub async fn up(a: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if !is_root() {
        bail!("yard up needs root: it creates network namespaces");
    }
    if a.host_network && a.nodes != 1 {
        bail!("--host-network makes this host the one node: --nodes must be 1");
    }
    std::fs::create_dir_all(&a.data_dir)?;
    let data_dir = a.data_dir.canonicalize()?;
    let (topology, nodes) = if a.host_network {
        let (host, node) = host_node(&a)?;
        (Topology::Host(host), vec![node])
    } else {
        let (net, nodes) = setup_network(&a.name, a.nodes, &data_dir)?;
        (Topology::Isolated(net), nodes)
    };
    let node1 = nodes[0].clone();

    // API server on the host's loopback, and inside node 1 for pods (the `kubernetes` Service).
    let api_args = yard_apiserver::Args {
        data_dir: data_dir.join("apiserver"),
        port: a.api_port,
        bind: "127.0.0.1".parse()?,
        advertise_address: Some(IpAddr::V4(node1.ip)),
        tls_san: nodes.iter().map(|n| n.ip.to_string()).collect(),
        cluster_name: a.name.clone(),
        store: a.store.clone(),
        token_auth_file: a.token_auth_file.clone(),
        ..Default::default()
    };
    let api = yard_apiserver::start(api_args).await?;
    let in_node = yard_netns::tcp_listener_in(&node1.netns_path(), SocketAddr::new(IpAddr::V4(node1.ip), 6443))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    api.serve_also(in_node)?;
    yard_apiserver::set_kubernetes_endpoints(&api.state, IpAddr::V4(node1.ip), 6443).await?;
    let kubeconfig = data_dir.join("kubeconfig");
    std::fs::copy(&api.kubeconfig, &kubeconfig)?;
    let info = ClusterInfo {
        name: a.name.clone(),
        pid: std::process::id(),
        kubeconfig: kubeconfig.clone(),
        nodes: nodes.clone(),
    };
    std::fs::write(data_dir.join("cluster.json"), serde_json::to_vec_pretty(&info)?)?;
    println!("API server: https://{} ({:?})", api.addr, started.elapsed());
    println!("export KUBECONFIG={}", kubeconfig.display());

    // One configuration; each component gets a client of its own that names it (field managers).
    let kcfg = client::config(Some(&kubeconfig)).await?;
    let client = client::client(kcfg.clone(), Component::Up)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let mut tasks: Vec<(String, tokio::task::JoinHandle<()>)> = Vec::new();

    // Controllers.
    let ccfg = yard_controllers::Config {
        leader_elect: false,
        root_ca: Some(api.identity.ca_pem.clone()),
        ..Default::default()
    };
    let (c2, s) = (client::client(kcfg.clone(), Component::ControllerManager)?, stopped());
    tasks.push((
        "controllers".into(),
        tokio::spawn(async move {
            if let Err(e) = yard_controllers::run_with_client(c2, ccfg, s).await {
                eprintln!("controllers: {e}");
            }
        }),
    ));

    // DNS: on every node's IP:53 inside its namespace, and on the host's loopback.
    ensure_kube_dns(&client, &nodes).await?;
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for n in &nodes {
        let p = n.netns_path();
        let addr = SocketAddr::new(IpAddr::V4(n.ip), 53);
        udp.push(yard_netns::udp_socket_in(&p, addr).map_err(|e| anyhow::anyhow!("{e}"))?);
        tcp.push(yard_netns::tcp_listener_in(&p, addr).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let (host_udp, host_tcp) = bind_dns_pair(a.dns_port)?;
    let dns_port = host_udp.local_addr()?.port();
    host_udp.set_nonblocking(true)?;
    host_tcp.set_nonblocking(true)?;
    udp.push(host_udp);
    tcp.push(host_tcp);
    let (c2, s) = (client::client(kcfg.clone(), Component::Dns)?, stopped());
    tasks.push(("dns".into(), tokio::spawn(async move {
        tokio::select! {
            r = yard_dns::serve(c2, yard_dns::Config::default(), udp, tcp) => if let Err(e) = r { eprintln!("dns: {e}"); },
            _ = s => {}
        }
    })));
    println!("DNS: {DNS_IP} in the cluster, 127.0.0.1:{dns_port} on the host");

    // Per node: agent and proxy.
    for n in &nodes {
        let mut acfg = yard_agent::AgentConfig::new(&n.name);
        acfg.netns = Some(n.netns_path());
        acfg.state_dir = data_dir.join("nodes").join(&n.name);
        acfg.node_ip = Some(n.ip);
        acfg.cluster_dns = DNS_IP.parse()?;
        acfg.netns_prefix =
            if a.host_network { format!("yard-{}-{}-p", a.name, n.name) } else { format!("{}-p", n.netns) };
        acfg.kill_pods_on_exit = true;
        acfg.exe = std::env::current_exe()?;
        let (c2, s, name) = (client::client(kcfg.clone(), Component::Kubelet)?, stopped(), n.name.clone());
        tasks.push((
            format!("agent {name}"),
            tokio::spawn(async move {
                if let Err(e) = yard_agent::Agent::new(c2, acfg).run(s).await {
                    eprintln!("agent {name}: {e}");
                }
            }),
        ));
        let mut pcfg = yard_proxy::ProxyConfig::new(n.name.clone());
        pcfg.netns = Some(n.netns_path());
        pcfg.mode = a.proxy_mode;
        let (c2, s, name) = (client::client(kcfg.clone(), Component::Proxy)?, stopped(), n.name.clone());
        tasks.push((
            format!("proxy {name}"),
            tokio::spawn(async move {
                if let Err(e) = yard_proxy::Proxy::new(c2, pcfg).run(s).await {
                    eprintln!("proxy {name}: {e}");
                }
            }),
        ));
    }

    // Nodes Ready.
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = nodes_api.list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                    && n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some()
            })
            .count();
        if ready == nodes.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("nodes not Ready after 30s ({ready}/{})", nodes.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{} node(s) Ready in {:.2}s", nodes.len(), started.elapsed().as_secs_f64());

    let result: anyhow::Result<()> = async {
        if !a.manifests.is_empty() {
            let objs = read_manifests(&a.manifests)?;
            let applied = apply_all(&client, &objs).await?;
            wait_ready(&client, &applied, Duration::from_secs(a.wait)).await?;
            println!("ready in {:.2}s", started.elapsed().as_secs_f64());
            print_table(&client, "/api/v1/services", "").await?;
            print_table(&client, "/api/v1/endpoints", "").await?;
            print_table(&client, "/api/v1/pods", "").await?;
        }
        println!(
            "cluster {:?} is up; `yard shell --data-dir {} -- CMD` runs CMD on a node; Ctrl-C stops it",
            a.name,
            data_dir.display()
        );
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        eprintln!("error: {e:#}");
    } else {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    println!("stopping cluster {:?}", a.name);
    let _ = stop_tx.send(true);
    // Everything stops at once; agents and proxies remove what they made as they go.
    let names: Vec<String> = tasks.iter().map(|(n, _)| n.clone()).collect();
    let handles: Vec<_> = tasks.into_iter().map(|(_, t)| t).collect();
    let mut all = futures::future::join_all(handles);
    if tokio::time::timeout(Duration::from_secs(45), &mut all).await.is_err() {
        eprintln!("some of {} did not stop within 45s", names.join(", "));
    }
    api.shutdown().await;
    drop(topology);
    let _ = std::fs::remove_file(data_dir.join("cluster.json"));
    println!("stopped");
    result
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn shell(a: ShellArgs) -> anyhow::Result<()> {
    let info: ClusterInfo = serde_json::from_slice(
        &std::fs::read(a.data_dir.join("cluster.json"))
            .with_context(|| format!("no running cluster in {}", a.data_dir.display()))?,
    )?;
    let node = match &a.node {
        Some(n) => info.nodes.iter().find(|x| &x.name == n).with_context(|| {
            format!("no node {n}; nodes: {}", info.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "))
        })?,
        None => &info.nodes[0],
    };
    let path = node.netns_path();
    let (prog, args): (String, Vec<String>) = match a.cmd.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()), Vec::new()),
    };
    let mut envs = BTreeMap::new();
    envs.insert("KUBECONFIG", info.kubeconfig.display().to_string());
    let st = yard_netns::command_in(&path, &prog)
        .args(&args)
        .envs(envs)
        .status()
        .with_context(|| format!("running {prog}"))?;
    std::process::exit(st.code().unwrap_or(1));
}
