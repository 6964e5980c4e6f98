//! The API side of the agent: Node registration and status, the node Lease, routes to other nodes'
//! pod CIDRs, the pod and Service watches that drive the runtime, status writes through
//! `pods/status`, Events, and the final `DELETE` (grace 0, uid precondition) of terminated pods.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;

use crate::dns::DnsSettings;
use crate::image::{parse_table, ImageTable};
use crate::net::NodeNet;
use crate::pod::{ObjectSource, PodEvent, PodHandle, Runtime, RuntimeConfig};
use crate::{Args, Error};

/// Annotation carrying the exec/log server address.
pub const ENDPOINT_ANNOTATION: &str = "yard.dev/agent-endpoint";

/// Settings of one agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// Node network namespace (None = the agent's own).
    pub netns: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub cluster_domain: String,
    pub cluster_dns: Ipv4Addr,
    pub node_ip: Option<Ipv4Addr>,
    pub listen: SocketAddr,
    pub image_table: Option<PathBuf>,
    /// Pod namespaces are `<prefix>-<uid[..8]>`.
    pub netns_prefix: String,
    /// Executable that provides `builtin <name>`.
    pub exe: PathBuf,
    /// Stop every pod when the agent stops (default: leave them for the next agent to adopt).
    pub kill_pods_on_exit: bool,
}

impl AgentConfig {
    pub fn from_args(a: &Args) -> Result<AgentConfig, Error> {
        Ok(AgentConfig {
            node_name: a.node_name.clone(),
            netns: a.netns.clone(),
            state_dir: a.state_dir.clone(),
            cluster_domain: a.cluster_domain.clone(),
            cluster_dns: a.cluster_dns,
            node_ip: a.node_ip,
            listen: a.listen,
            image_table: a.image_table.clone(),
            netns_prefix: a.netns_prefix.clone().unwrap_or_else(|| format!("yard-{}", a.node_name)),
            exe: a.builtin_exe.clone().unwrap_or_else(|| PathBuf::from("/proc/self/exe")),
            kill_pods_on_exit: false,
        })
    }

    /// Defaults for a node name (state under /var/lib/yard/agent/<node>).
    pub fn new(node_name: &str) -> AgentConfig {
        AgentConfig {
            node_name: node_name.into(),
            netns: None,
            state_dir: PathBuf::from("/var/lib/yard/agent").join(node_name),
            cluster_domain: "cluster.local".into(),
            cluster_dns: Ipv4Addr::new(10, 96, 0, 10),
            node_ip: None,
            listen: "127.0.0.1:0".parse().expect("literal"),
            image_table: None,
            netns_prefix: format!("yard-{node_name}"),
            exe: PathBuf::from("/proc/self/exe"),
            kill_pods_on_exit: false,
        }
    }
}

/// The node agent.
pub struct Agent {
    client: kube::Client,
    cfg: AgentConfig,
    runtime: tokio::sync::OnceCell<Arc<Runtime>>,
}

fn node_capacity() -> (String, String) {
    let cpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "0".into());
    (cpu, format!("{mem_kb}Ki"))
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("PRETTY_NAME="))
                .map(|l| l.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

impl Agent {
    pub fn new(client: kube::Client, cfg: AgentConfig) -> Agent {
        Agent { client, cfg, runtime: tokio::sync::OnceCell::new() }
    }

    /// The pod runtime, once the node has its pod CIDR.
    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        self.runtime.get().cloned()
    }

    fn node_ns(&self) -> PathBuf {
        self.cfg.netns.clone().unwrap_or_else(|| PathBuf::from("/proc/self/ns/net"))
    }

    fn node_status(&self, ip: Ipv4Addr, port: u16, since: &Time) -> serde_json::Value {
        let (cpu, mem) = node_capacity();
        let now = Time(jiff::Timestamp::now());
        let cond = |t: &str, s: &str, reason: &str, msg: &str| {
            serde_json::json!({"type": t, "status": s, "reason": reason, "message": msg,
                "lastHeartbeatTime": now, "lastTransitionTime": since})
        };
        let uname = nix::sys::utsname::uname().ok();
        serde_json::json!({
            "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": self.cfg.node_name}],
            "capacity": {"cpu": cpu, "memory": mem, "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": {
                "machineID": read_trim("/etc/machine-id"),
                "systemUUID": read_trim("/etc/machine-id"),
                "bootID": read_trim("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
                "osImage": os_image(),
                "containerRuntimeVersion": format!("yard://{}", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": "v1.37.0",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            }
        })
    }

    async fn register(&self, ip: Ipv4Addr, port: u16, since: &Time) -> Result<(), Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let endpoint = format!("127.0.0.1:{port}");
        let arch = std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64");
        let labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname", self.cfg.node_name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", arch.as_str()),
            ("beta.kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/arch", arch.as_str()),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let status = self.node_status(ip, port, since);
        match nodes.get_opt(&self.cfg.node_name).await? {
            None => {
                let node: Node = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": self.cfg.node_name, "labels": labels,
                        "annotations": {ENDPOINT_ANNOTATION: endpoint}},
                    "spec": {},
                    "status": status,
                }))
                .map_err(|e| Error::Invalid(e.to_string()))?;
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(_) => {
                let patch =
                    serde_json::json!({"metadata": {"labels": labels, "annotations": {ENDPOINT_ANNOTATION: endpoint}}});
                nodes.patch(&self.cfg.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
        }
        nodes
            .patch_status(
                &self.cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"status": status})),
            )
            .await?;
        Ok(())
    }

    async fn renew_lease(&self, node_uid: Option<String>) -> Result<(), Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let spec = LeaseSpec {
            holder_identity: Some(self.cfg.node_name.clone()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..Default::default()
        };
        match leases.get_opt(&self.cfg.node_name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.node_name.clone()),
                        namespace: Some("kube-node-lease".into()),
                        owner_references: node_uid.map(|uid| {
                            vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: self.cfg.node_name.clone(),
                                uid,
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                match leases.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Some(mut l) => {
                l.spec = Some(spec);
                leases.replace(&self.cfg.node_name, &PostParams::default(), &l).await?;
                Ok(())
            }
        }
    }

    /// Run until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let agent = Arc::new(self);
        let listener =
            tokio::net::TcpListener::bind(agent.cfg.listen).await.map_err(|e| Error::Server(e.to_string()))?;
        let port = listener.local_addr().map_err(|e| Error::Server(e.to_string()))?.port();
        let node_ns = agent.node_ns();
        let ip = match agent.cfg.node_ip {
            Some(ip) => ip,
            None => {
                let ns = node_ns.clone();
                tokio::task::spawn_blocking(move || crate::net::first_ipv4(&ns))
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(Ipv4Addr::LOCALHOST)
            }
        };
        let since = Time(jiff::Timestamp::now());
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = vec![];
        let main = async {
            // Register (retrying while the API server comes up).
            let mut tries = 0;
            loop {
                match agent.register(ip, port, &since).await {
                    Ok(()) => break,
                    Err(e) => {
                        tries += 1;
                        if tries % 10 == 1 {
                            tracing::warn!(node = %agent.cfg.node_name, "register node: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            // Lease and node status heartbeats.
            {
                let a = agent.clone();
                let since = since.clone();
                tasks.push(tokio::spawn(async move {
                    let nodes: Api<Node> = Api::all(a.client.clone());
                    let mut n = 0u64;
                    loop {
                        let uid = nodes.get_opt(&a.cfg.node_name).await.ok().flatten().and_then(|n| n.metadata.uid);
                        if let Err(e) = a.renew_lease(uid).await {
                            tracing::warn!("renew lease: {e}");
                        }
                        if n % 6 == 5 {
                            let st = a.node_status(ip, port, &since);
                            let _ = nodes
                                .patch_status(
                                    &a.cfg.node_name,
                                    &PatchParams::default(),
                                    &Patch::Merge(&serde_json::json!({"status": st})),
                                )
                                .await;
                        }
                        n += 1;
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                }));
            }
            // Pod CIDR from node IPAM.
            let cidr: Ipv4Net = loop {
                let nodes: Api<Node> = Api::all(agent.client.clone());
                if let Ok(Some(n)) = nodes.get_opt(&agent.cfg.node_name).await {
                    if let Some(c) = n.spec.and_then(|s| s.pod_cidr).and_then(|c| c.parse().ok()) {
                        break c;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let net = NodeNet { netns: node_ns.clone(), cidr, ipam_dir: agent.cfg.state_dir.join("ipam") };
            let n2 = net.clone();
            tokio::task::spawn_blocking(move || n2.ensure_bridge())
                .await
                .map_err(|e| Error::Sandbox(e.to_string()))??;
            let extra = match &agent.cfg.image_table {
                Some(p) => parse_table(&std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?),
                None => vec![],
            };
            let rcfg = RuntimeConfig {
                node_name: agent.cfg.node_name.clone(),
                netns_prefix: agent.cfg.netns_prefix.clone(),
                state_dir: agent.cfg.state_dir.clone(),
                dns: DnsSettings {
                    cluster_domain: agent.cfg.cluster_domain.clone(),
                    cluster_dns: vec![agent.cfg.cluster_dns.to_string()],
                    host_resolv_conf: String::new(),
                },
                node_ip: ip,
                images: ImageTable { exe: agent.cfg.exe.clone(), state_dir: agent.cfg.state_dir.clone(), extra },
                capacity: node_capacity(),
            };
            let rt = Runtime::new(rcfg, net, ObjectSource::Api(agent.client.clone()));
            let _ = agent.runtime.set(rt.clone());
            // Exec/log server.
            {
                let rt = rt.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = crate::server::serve(listener, rt).await {
                        tracing::warn!("agent server: {e}");
                    }
                }));
            }
            // Events.
            if let Some(rx) = rt.take_events() {
                let a = agent.clone();
                tasks.push(tokio::spawn(event_writer(a.client.clone(), a.cfg.node_name.clone(), rx)));
            }
            // Routes to other nodes' pod CIDRs.
            {
                let a = agent.clone();
                let rt = rt.clone();
                tasks.push(tokio::spawn(async move {
                    let nodes: Api<Node> = Api::all(a.client.clone());
                    let mut last: Vec<(Ipv4Net, Ipv4Addr)> = vec![];
                    loop {
                        if let Ok(list) = nodes.list(&ListParams::default()).await {
                            let mut want = vec![];
                            for n in list.items {
                                if n.metadata.name.as_deref() == Some(a.cfg.node_name.as_str()) {
                                    continue;
                                }
                                let cidr = n
                                    .spec
                                    .as_ref()
                                    .and_then(|s| s.pod_cidr.as_ref())
                                    .and_then(|c| c.parse::<Ipv4Net>().ok());
                                let nip = n.status.as_ref().and_then(|s| s.addresses.as_ref()).and_then(|a| {
                                    a.iter()
                                        .find(|x| x.type_ == "InternalIP")
                                        .and_then(|x| x.address.parse::<Ipv4Addr>().ok())
                                });
                                if let (Some(c), Some(nip)) = (cidr, nip) {
                                    if nip != ip {
                                        want.push((c, nip));
                                    }
                                }
                            }
                            want.sort();
                            if want != last {
                                let net = rt.net.clone();
                                let w = want.clone();
                                let _ = tokio::task::spawn_blocking(move || net.sync_routes(&w)).await;
                                last = want;
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                }));
            }
            // Pods.
            let pods: Api<Pod> = Api::all(agent.client.clone());
            let selector = format!("spec.nodeName={}", agent.cfg.node_name);
            let listed = loop {
                match pods.list(&ListParams::default().fields(&selector)).await {
                    Ok(l) => break l.items,
                    Err(e) => {
                        tracing::warn!("list pods: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            let by_uid: HashMap<String, Pod> =
                listed.iter().filter_map(|p| p.metadata.uid.clone().map(|u| (u, p.clone()))).collect();
            let rt2 = rt.clone();
            let adopted = tokio::task::spawn_blocking(move || {
                let h = tokio::runtime::Handle::current();
                let _g = h.enter();
                rt2.recover(|uid| by_uid.get(uid).cloned())
            })
            .await
            .unwrap_or_default();
            let latest: Arc<Mutex<HashMap<String, Pod>>> = Arc::new(Mutex::new(HashMap::new()));
            let tracked: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
            for h in adopted {
                spawn_pod_api(agent.client.clone(), h, latest.clone(), tracked.clone());
            }
            let mut w = std::pin::pin!(watcher(pods, watcher::Config::default().fields(&selector)).default_backoff());
            let mut seen: Option<HashSet<String>> = None;
            while let Some(ev) = w.next().await {
                let apply = |pod: Pod| {
                    let Some(uid) = pod.metadata.uid.clone() else { return };
                    latest.lock().expect("latest").insert(uid.clone(), pod.clone());
                    let terminal = matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded") | Some("Failed")
                    );
                    match rt.get(&uid) {
                        Some(h) => h.update(pod),
                        None if terminal && pod.metadata.deletion_timestamp.is_none() => {}
                        None if pod.metadata.deletion_timestamp.is_some()
                            && !tracked.lock().expect("tracked").contains(&uid) =>
                        {
                            // Never ran here: nothing to stop, just finish the deletion.
                            let api: Api<Pod> = Api::namespaced(
                                agent.client.clone(),
                                pod.metadata.namespace.as_deref().unwrap_or("default"),
                            );
                            let name = pod.metadata.name.clone().unwrap_or_default();
                            tokio::spawn(async move {
                                let _ = api
                                    .delete(
                                        &name,
                                        &DeleteParams {
                                            grace_period_seconds: Some(0),
                                            preconditions: Some(Preconditions {
                                                uid: Some(uid),
                                                resource_version: None,
                                            }),
                                            ..Default::default()
                                        },
                                    )
                                    .await;
                            });
                        }
                        None => {
                            if tracked.lock().expect("tracked").contains(&uid) {
                                return; // finished here already
                            }
                            tracing::debug!(pod = ?pod.metadata.name, "pod seen");
                            match rt.sync_pod(pod) {
                                Ok(h) => spawn_pod_api(agent.client.clone(), h, latest.clone(), tracked.clone()),
                                Err(e) => tracing::warn!("start pod: {e}"),
                            }
                        }
                    }
                };
                match ev {
                    Ok(watcher::Event::Init) => seen = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(p)) => {
                        if let (Some(s), Some(u)) = (seen.as_mut(), p.metadata.uid.clone()) {
                            s.insert(u);
                        }
                        apply(p);
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(s) = seen.take() {
                            for h in rt.pods() {
                                if !s.contains(h.uid()) {
                                    gone(&latest, &h);
                                }
                            }
                        }
                    }
                    Ok(watcher::Event::Apply(p)) => apply(p),
                    Ok(watcher::Event::Delete(p)) => {
                        if let Some(h) = p.metadata.uid.as_deref().and_then(|u| rt.get(u)) {
                            gone(&latest, &h);
                        }
                    }
                    Err(e) => tracing::debug!("pod watch: {e}"),
                }
            }
            Ok::<(), Error>(())
        };
        let res = tokio::select! {
            r = main => r,
            _ = shutdown => Ok(()),
        };
        for t in &tasks {
            t.abort();
        }
        if agent.cfg.kill_pods_on_exit {
            if let Some(rt) = agent.runtime() {
                let hs = rt.pods();
                for h in &hs {
                    h.terminate(0);
                }
                for h in hs {
                    let _ = tokio::time::timeout(Duration::from_secs(10), h.wait_done()).await;
                }
            }
        }
        res
    }
}

/// The pod object is gone from the API: stop it without deleting anything there.
fn gone(latest: &Arc<Mutex<HashMap<String, Pod>>>, h: &PodHandle) {
    latest.lock().expect("latest").remove(h.uid());
    h.terminate(0);
}

fn spawn_pod_api(
    client: kube::Client,
    h: PodHandle,
    latest: Arc<Mutex<HashMap<String, Pod>>>,
    tracked: Arc<Mutex<HashSet<String>>>,
) {
    tracked.lock().expect("tracked").insert(h.uid().to_string());
    tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, h.namespace());
        let mut rx = h.status();
        let mut last_sent: Option<serde_json::Value> = None;
        let write = |status: serde_json::Value| {
            let api = api.clone();
            let name = h.name().to_string();
            async move {
                let patch = serde_json::json!({ "status": status });
                let t = std::time::Instant::now();
                let res = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                tracing::debug!(pod = %name, took = ?t.elapsed(), "status patch");
                match res {
                    Ok(_) => true,
                    Err(kube::Error::Api(e)) if e.code == 404 => false,
                    Err(e) => {
                        tracing::debug!("pod status {name}: {e}");
                        true
                    }
                }
            }
        };
        loop {
            let status = serde_json::to_value(&*rx.borrow_and_update()).unwrap_or_default();
            if last_sent.as_ref() != Some(&status) {
                if !write(status.clone()).await {
                    // The pod is gone.
                }
                last_sent = Some(status);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = h.wait_done() => break,
            }
        }
        // Final status, then finish the deletion the API asked for.
        let status = serde_json::to_value(&*rx.borrow()).unwrap_or_default();
        if last_sent.as_ref() != Some(&status) {
            write(status).await;
        }
        h.wait_done().await;
        let pod = latest.lock().expect("latest").remove(h.uid());
        if let Some(pod) = pod {
            if pod.metadata.deletion_timestamp.is_some() {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions { uid: Some(h.uid().to_string()), resource_version: None }),
                    ..Default::default()
                };
                if let Err(e) = api.delete(h.name(), &dp).await {
                    tracing::debug!("delete pod {}: {e}", h.name());
                }
            }
        }
    });
}

async fn event_writer(client: kube::Client, node: String, mut rx: tokio::sync::mpsc::UnboundedReceiver<PodEvent>) {
    // (uid, reason, message, fieldPath) -> (event name, namespace, count)
    type Seen = HashMap<(String, String, String, String), (String, String, i32)>;
    let mut seen: Seen = HashMap::new();
    while let Some(ev) = rx.recv().await {
        let api: Api<Event> = Api::namespaced(client.clone(), &ev.namespace);
        let now = Time(jiff::Timestamp::now());
        let key = (ev.uid.clone(), ev.reason.clone(), ev.message.clone(), ev.field_path.clone().unwrap_or_default());
        if let Some((name, ns, count)) = seen.get_mut(&key) {
            *count += 1;
            let patch = serde_json::json!({"count": *count, "lastTimestamp": now});
            let api: Api<Event> = Api::namespaced(client.clone(), ns);
            if api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                continue;
            }
        }
        let name = format!("{}.{:x}", ev.pod, jiff::Timestamp::now().as_nanosecond());
        let e = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ev.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(ev.pod.clone()),
                namespace: Some(ev.namespace.clone()),
                uid: Some(ev.uid.clone()),
                field_path: ev.field_path.clone(),
                ..Default::default()
            },
            reason: Some(ev.reason.clone()),
            message: Some(ev.message.clone()),
            type_: Some(if ev.warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource { component: Some("kubelet".into()), host: Some(node.clone()) }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.clone()),
            ..Default::default()
        };
        if api.create(&PostParams::default(), &e).await.is_ok() {
            if seen.len() > 4096 {
                seen.clear();
            }
            seen.insert(key, (name, ev.namespace.clone(), 1));
        }
    }
}
