//! The pod runtime: one worker task per pod that builds the sandbox, runs init and app containers
//! with restart policy and back-off, runs probes, computes the PodStatus, and tears everything
//! down on termination. It is independent of the API server: status goes out on a watch channel,
//! events on an mpsc channel.

mod probe;
mod setup;
mod status;

pub use probe::connect_in;
use probe::*;
use setup::*;
use status::*;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus, Probe, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::dns::{self, DnsSettings};
use crate::env;
use crate::image::ImageTable;
use crate::net::{NodeNet, Sandbox};
use crate::proc;
use crate::Error;

/// Where ConfigMaps and Secrets referenced by env come from.
#[derive(Clone)]
pub enum ObjectSource {
    /// Fixed objects (tests, or no API server).
    Static(env::Objects),
    /// Read through the API.
    Api(kube::Client),
}

/// Node-wide settings of the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub node_name: String,
    /// Pod namespaces are named `<prefix>-<first 8 chars of uid>`.
    pub netns_prefix: String,
    pub state_dir: PathBuf,
    pub dns: DnsSettings,
    pub node_ip: Ipv4Addr,
    pub images: ImageTable,
    /// (cpu, memory) capacity of the node, for resourceFieldRef without limits.
    pub capacity: (String, String),
}

/// An event about a pod, to be written as a core/v1 Event.
#[derive(Clone, Debug)]
pub struct PodEvent {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub warning: bool,
    pub reason: String,
    pub message: String,
    pub field_path: Option<String>,
}

/// The node's pod runtime.
pub struct Runtime {
    pub cfg: RuntimeConfig,
    pub net: NodeNet,
    objects: ObjectSource,
    events_tx: mpsc::UnboundedSender<PodEvent>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<PodEvent>>>,
    pods: Mutex<HashMap<String, PodHandle>>,
}

/// Persisted per-pod state (for adoption after an agent restart).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedPod {
    pub pod: serde_json::Value,
    pub sandbox: Option<Sandbox>,
    pub start_time: String,
    pub containers: Vec<SavedContainer>,
    #[serde(default)]
    pub init_done: bool,
    #[serde(default)]
    pub pause: Option<(i32, u64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedContainer {
    pub name: String,
    pub pid: i32,
    pub proc_start: u64,
    pub started_at: String,
    pub restart_count: i32,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

#[derive(Clone, Debug)]
enum CState {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: jiff::Timestamp },
    Terminated(Term),
}

#[derive(Clone, Debug)]
struct Term {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    message: Option<String>,
    started_at: Option<jiff::Timestamp>,
    finished_at: jiff::Timestamp,
    container_id: String,
}

#[derive(Clone, Debug)]
struct Ctr {
    spec: Container,
    init: bool,
    state: CState,
    last: Option<Term>,
    restart_count: i32,
    ready: bool,
    started: bool,
    pid: Option<i32>,
    proc_start: u64,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    /// Number of runs started (the current run's log is `<restart_count>.log`).
    runs: i32,
    container_id: String,
    /// The current run's stdio for `pods/attach`.
    attach: Option<Arc<crate::attach::Hub>>,
    /// The container's cgroup (limits; exec and probes join it too).
    cgroup: Option<crate::cgroup::Cgroup>,
    /// The current run's user (execs and exec probes run as it).
    identity: crate::security::Identity,
}

impl Ctr {
    /// What an exec into this container (whose current process is `pid`) joins.
    fn exec_target(&self, pid: i32, relay_exe: &Path) -> proc::ExecTarget {
        proc::ExecTarget {
            pid,
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            cgroup: self.cgroup.clone(),
            identity: self.identity.clone(),
            relay_exe: relay_exe.to_path_buf(),
        }
    }
}

struct PodState {
    pod: Pod,
    sandbox: Option<Sandbox>,
    start_time: jiff::Timestamp,
    ctrs: Vec<Ctr>,
    cond_times: HashMap<String, (bool, Time)>,
    init_done: bool,
    init_failed: bool,
    sandbox_ready: bool,
    /// `shareProcessNamespace`: the pause relay (PID, start time) whose namespace the pod's
    /// containers share.
    pause: Option<(i32, u64)>,
}

struct PodInner {
    rt: Arc<Runtime>,
    uid: String,
    namespace: String,
    name: String,
    dir: PathBuf,
    st: Mutex<PodState>,
    status_tx: watch::Sender<PodStatus>,
    /// Set to Some(grace seconds) when the pod must stop.
    stop_tx: watch::Sender<Option<i64>>,
    done_tx: watch::Sender<bool>,
}

/// A running pod.
#[derive(Clone)]
pub struct PodHandle {
    inner: Arc<PodInner>,
}

fn ts_time(t: jiff::Timestamp) -> Time {
    Time(t)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig, net: NodeNet, objects: ObjectSource) -> Arc<Runtime> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let _ = std::fs::create_dir_all(cfg.state_dir.join("pods"));
        Arc::new(Runtime {
            cfg,
            net,
            objects,
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
            pods: Mutex::new(HashMap::new()),
        })
    }

    /// Take the event stream (once).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<PodEvent>> {
        self.events_rx.lock().expect("events lock").take()
    }

    /// Name of a pod's network namespace.
    pub fn netns_name(&self, uid: &str) -> String {
        let short: String = uid.chars().take(8).collect();
        format!("{}-{short}", self.cfg.netns_prefix)
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.cfg.state_dir.join("pods").join(uid)
    }

    /// Directory holding a pod's logs (kubelet's /var/log/pods layout).
    pub fn log_dir(&self, ns: &str, name: &str, uid: &str) -> PathBuf {
        self.cfg.state_dir.join("logs").join(format!("{ns}_{name}_{uid}"))
    }

    /// All pods the runtime currently runs.
    pub fn pods(&self) -> Vec<PodHandle> {
        self.pods.lock().expect("pods lock").values().cloned().collect()
    }

    pub fn get(&self, uid: &str) -> Option<PodHandle> {
        self.pods.lock().expect("pods lock").get(uid).cloned()
    }

    pub fn find(&self, ns: &str, name: &str) -> Option<PodHandle> {
        self.pods.lock().expect("pods lock").values().find(|h| h.inner.namespace == ns && h.inner.name == name).cloned()
    }

    /// Start a pod, or pass an update to the running one (deletionTimestamp starts termination).
    pub fn sync_pod(self: &Arc<Self>, pod: Pod) -> Result<PodHandle, Error> {
        let uid = pod.metadata.uid.clone().ok_or_else(|| Error::Invalid("pod without uid".into()))?;
        if let Some(h) = self.get(&uid) {
            h.update(pod);
            return Ok(h);
        }
        let h = self.start_pod(pod, None)?;
        Ok(h)
    }

    fn start_pod(self: &Arc<Self>, pod: Pod, saved: Option<SavedPod>) -> Result<PodHandle, Error> {
        let uid = pod.metadata.uid.clone().ok_or_else(|| Error::Invalid("pod without uid".into()))?;
        let spec = pod.spec.clone().unwrap_or_default();
        let mut ctrs = vec![];
        for (c, init) in spec
            .init_containers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c, true))
            .chain(spec.containers.clone().into_iter().map(|c| (c, false)))
        {
            ctrs.push(Ctr {
                spec: c,
                init,
                state: CState::Waiting {
                    reason: if init { "PodInitializing".into() } else { "ContainerCreating".into() },
                    message: None,
                },
                last: None,
                restart_count: 0,
                ready: false,
                started: false,
                pid: None,
                proc_start: 0,
                env: vec![],
                cwd: None,
                runs: 0,
                container_id: String::new(),
                attach: None,
                cgroup: None,
                identity: Default::default(),
            });
        }
        // Non-init containers wait for init: kubelet shows PodInitializing for them too.
        if ctrs.iter().any(|c| c.init) {
            for c in ctrs.iter_mut().filter(|c| !c.init) {
                c.state = CState::Waiting { reason: "PodInitializing".into(), message: None };
            }
        }
        let mut cond_times = HashMap::new();
        for c in pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default() {
            if let Some(t) = c.last_transition_time {
                cond_times.insert(c.type_.clone(), (c.status == "True", t));
            }
        }
        let start_time = saved
            .as_ref()
            .and_then(|s| s.start_time.parse().ok())
            .or_else(|| pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0))
            .unwrap_or_else(now);
        let st = PodState {
            pod: pod.clone(),
            sandbox: None,
            start_time,
            ctrs,
            cond_times,
            init_done: false,
            init_failed: false,
            sandbox_ready: false,
            pause: None,
        };
        let (status_tx, _) = watch::channel(PodStatus::default());
        let (stop_tx, _) = watch::channel(None);
        let (done_tx, _) = watch::channel(false);
        let inner = Arc::new(PodInner {
            rt: self.clone(),
            uid: uid.clone(),
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            dir: self.pod_dir(&uid),
            st: Mutex::new(st),
            status_tx,
            stop_tx,
            done_tx,
        });
        let h = PodHandle { inner: inner.clone() };
        h.publish();
        self.pods.lock().expect("pods lock").insert(uid.clone(), h.clone());
        if pod.metadata.deletion_timestamp.is_some() && saved.is_none() {
            // Never started: nothing to stop.
            h.update(pod);
        }
        tokio::spawn(pod_main(inner, saved));
        Ok(h)
    }

    /// After a restart: adopt saved pods for which `keep(uid)` returns the current Pod object,
    /// tear down the others and any namespace with our prefix that no saved pod owns.
    pub fn recover(self: &Arc<Self>, keep: impl Fn(&str) -> Option<Pod>) -> Vec<PodHandle> {
        let mut adopted = vec![];
        let mut owned_ns = vec![];
        let dir = self.cfg.state_dir.join("pods");
        for ent in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let uid = ent.file_name().to_string_lossy().into_owned();
            let saved: Option<SavedPod> =
                std::fs::read(ent.path().join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
            match (keep(&uid), saved) {
                (Some(pod), Some(saved)) if pod.metadata.deletion_timestamp.is_none() => {
                    if let Some(sb) = &saved.sandbox {
                        owned_ns.push(sb.netns.clone());
                    }
                    match self.start_pod(pod, Some(saved)) {
                        Ok(h) => adopted.push(h),
                        Err(e) => tracing::warn!("adopt pod {uid}: {e}"),
                    }
                }
                (_, saved) => {
                    let (ns, name) = saved
                        .as_ref()
                        .and_then(|s| serde_json::from_value::<Pod>(s.pod.clone()).ok())
                        .map(|p| (p.metadata.namespace.unwrap_or_default(), p.metadata.name.unwrap_or_default()))
                        .unwrap_or_default();
                    if let Some((pid, start)) = saved.as_ref().and_then(|s| s.pause) {
                        if proc::alive(pid, start) {
                            proc::signal(pid, nix::sys::signal::Signal::SIGKILL);
                        }
                    }
                    if let Some(sb) = saved.and_then(|s| s.sandbox) {
                        let _ = self.net.delete_sandbox(&sb.netns, &sb.veth, &uid);
                    } else {
                        let _ = self.net.delete_sandbox(&self.netns_name(&uid), &crate::net::veth_name(&uid), &uid);
                    }
                    let _ = crate::cgroup::remove_pod(&uid);
                    crate::volume::teardown(&ent.path());
                    let _ = std::fs::remove_dir_all(ent.path());
                    if !ns.is_empty() {
                        let _ = std::fs::remove_dir_all(self.log_dir(&ns, &name, &uid));
                    }
                }
            }
        }
        // Namespaces with our prefix that nobody owns.
        let prefix = format!("{}-", self.cfg.netns_prefix);
        for ent in std::fs::read_dir(yard_netns::NETNS_RUN_DIR).into_iter().flatten().flatten() {
            let n = ent.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.len() == prefix.len() + 8 && !owned_ns.contains(&n) {
                crate::net::kill_processes_in_netns(&ent.path());
                let _ = yard_netns::delete(&n);
            }
        }
        // Allocations whose owner is not adopted.
        let owners: Vec<String> = adopted.iter().map(|h| h.inner.uid.clone()).collect();
        for (_, o) in self.net.allocations().unwrap_or_default() {
            if !owners.contains(&o) {
                let _ = self.net.release(&o);
            }
        }
        adopted
    }

    fn event(&self, p: &PodInner, warning: bool, reason: &str, message: String, field_path: Option<String>) {
        let _ = self.events_tx.send(PodEvent {
            namespace: p.namespace.clone(),
            pod: p.name.clone(),
            uid: p.uid.clone(),
            warning,
            reason: reason.into(),
            message,
            field_path,
        });
    }

    /// The ConfigMaps and Secrets the pod's volumes name (`None`: not found).
    async fn fetch_volume_objects(&self, pod: &Pod) -> Result<crate::volume::Objects, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let (cms, secs) = crate::volume::referenced(pod);
        let mut out = crate::volume::Objects::default();
        match &self.objects {
            ObjectSource::Static(o) => {
                for n in cms {
                    let d = o
                        .config_maps
                        .get(&n)
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect());
                    out.config_maps.insert(n, d);
                }
                for n in secs {
                    let d =
                        o.secrets.get(&n).map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect());
                    out.secrets.insert(n, d);
                }
            }
            ObjectSource::Api(client) => {
                let cm_api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                    kube::Api::namespaced(client.clone(), ns);
                for n in cms {
                    let cm = cm_api.get_opt(&n).await.map_err(|e| format!("failed to get configmap {n:?}: {e}"))?;
                    let d = cm.map(|cm| {
                        let mut m: BTreeMap<String, Vec<u8>> =
                            cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                        m.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                        m
                    });
                    out.config_maps.insert(n, d);
                }
                let s_api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), ns);
                for n in secs {
                    let s = s_api.get_opt(&n).await.map_err(|e| format!("failed to get secret {n:?}: {e}"))?;
                    let d = s.map(|s| {
                        let mut m: BTreeMap<String, Vec<u8>> =
                            s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                        m.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                        m
                    });
                    out.secrets.insert(n, d);
                }
            }
        }
        Ok(out)
    }

    /// What `c`'s environment is made from. The Services are read from the API at start (a
    /// consistent list), not from a watch-fed copy: a Service created before the pod must be in
    /// its environment even when the Service's watch event reaches the node after the pod's.
    async fn fetch_objects(&self, pod: &Pod, c: &Container) -> Result<env::Objects, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        match &self.objects {
            ObjectSource::Static(o) => Ok(o.clone()),
            ObjectSource::Api(client) => {
                let (cms, secs) = env::referenced(c);
                let mut out = env::Objects::default();
                let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
                if links {
                    let svc_api: kube::Api<Service> = kube::Api::namespaced(client.clone(), ns);
                    let list =
                        svc_api.list(&Default::default()).await.map_err(|e| format!("failed to list services: {e}"))?;
                    out.services = list.items;
                }
                if !links || ns != "default" {
                    let def: kube::Api<Service> = kube::Api::namespaced(client.clone(), "default");
                    let master = def
                        .get_opt("kubernetes")
                        .await
                        .map_err(|e| format!("failed to get service default/kubernetes: {e}"))?;
                    out.services.extend(master);
                }
                let cm_api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                    kube::Api::namespaced(client.clone(), ns);
                for n in cms {
                    if let Ok(Some(cm)) = cm_api.get_opt(&n).await {
                        let mut m: BTreeMap<String, String> = cm.data.unwrap_or_default();
                        for (k, v) in cm.binary_data.unwrap_or_default() {
                            m.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                        }
                        out.config_maps.insert(n, m);
                    }
                }
                let s_api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), ns);
                for n in secs {
                    if let Ok(Some(s)) = s_api.get_opt(&n).await {
                        let mut m: BTreeMap<String, String> = BTreeMap::new();
                        for (k, v) in s.data.unwrap_or_default() {
                            m.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                        }
                        for (k, v) in s.string_data.unwrap_or_default() {
                            m.insert(k, v);
                        }
                        out.secrets.insert(n, m);
                    }
                }
                Ok(out)
            }
        }
    }
}

impl PodHandle {
    pub fn uid(&self) -> &str {
        &self.inner.uid
    }
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The latest computed status.
    pub fn status(&self) -> watch::Receiver<PodStatus> {
        self.inner.status_tx.subscribe()
    }

    /// The sandbox, once created.
    pub fn sandbox(&self) -> Option<Sandbox> {
        self.inner.st.lock().expect("pod lock").sandbox.clone()
    }

    /// Whether termination was requested.
    pub fn terminating(&self) -> bool {
        self.inner.stop_tx.borrow().is_some()
    }

    /// Pass a newer Pod object.
    pub fn update(&self, pod: Pod) {
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30);
            self.terminate(grace);
        }
        let mut st = self.inner.st.lock().expect("pod lock");
        let status = st.pod.status.clone();
        st.pod = pod;
        st.pod.status = status;
    }

    /// Stop the pod: preStop, SIGTERM, SIGKILL after `grace` seconds, then tear down the sandbox.
    pub fn terminate(&self, grace: i64) {
        self.inner.stop_tx.send_modify(|g| {
            *g = Some(match *g {
                Some(old) => old.min(grace),
                None => grace,
            })
        });
    }

    /// Wait until the pod is fully torn down.
    pub async fn wait_done(&self) {
        let mut rx = self.inner.done_tx.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    pub fn is_done(&self) -> bool {
        *self.inner.done_tx.borrow()
    }

    /// Container names (init first).
    pub fn containers(&self) -> Vec<String> {
        self.inner.st.lock().expect("pod lock").ctrs.iter().map(|c| c.spec.name.clone()).collect()
    }

    /// App container names.
    pub fn app_containers(&self) -> Vec<String> {
        self.inner.st.lock().expect("pod lock").ctrs.iter().filter(|c| !c.init).map(|c| c.spec.name.clone()).collect()
    }

    /// PID of a running container.
    pub fn pid(&self, container: &str) -> Option<i32> {
        let st = self.inner.st.lock().expect("pod lock");
        st.ctrs.iter().find(|c| c.spec.name == container).and_then(|c| match c.state {
            CState::Running { .. } => c.pid,
            _ => None,
        })
    }

    /// Container `container` of this pod, or the kubelet's message for a name it does not have.
    fn ctr<'a>(&self, st: &'a PodState, container: &str) -> Result<&'a Ctr, String> {
        st.ctrs
            .iter()
            .find(|c| c.spec.name == container)
            .ok_or_else(|| format!("container {container} is not valid for pod {}", self.inner.name))
    }

    /// What an exec into `container` joins.
    pub fn exec_target(&self, container: &str) -> Result<proc::ExecTarget, String> {
        let st = self.inner.st.lock().expect("pod lock");
        let c = self.ctr(&st, container)?;
        match (&c.state, c.pid) {
            (CState::Running { .. }, Some(pid)) => Ok(c.exec_target(pid, &self.inner.rt.cfg.images.exe)),
            _ => Err(format!("container {container} is not running")),
        }
    }

    /// The stdio of `container`'s current run, for an attach.
    pub fn attach_target(&self, container: &str) -> Result<Arc<crate::attach::Hub>, String> {
        let st = self.inner.st.lock().expect("pod lock");
        let c = self.ctr(&st, container)?;
        match (&c.state, &c.attach) {
            (CState::Running { .. }, Some(h)) => Ok(h.clone()),
            _ => Err(format!("container {container} is not running")),
        }
    }

    /// Log file of a container's current (or previous) run, and whether that run is still running
    /// (kubelet's validateContainerLogStatus rules).
    pub fn log_file(&self, container: &str, previous: bool) -> Result<(PathBuf, bool), String> {
        let st = self.inner.st.lock().expect("pod lock");
        let pod = &self.inner.name;
        let c = self.ctr(&st, container)?;
        let dir = self.inner.rt.log_dir(&self.inner.namespace, &self.inner.name, &self.inner.uid).join(container);
        let run_of = |cid: &str| cid.rsplit('-').next().and_then(|n| n.parse::<i32>().ok());
        let file = |n: i32| dir.join(format!("{n}.log"));
        let last_run = c.last.as_ref().and_then(|t| run_of(&t.container_id));
        if previous {
            return match last_run {
                Some(n) => Ok((file(n), false)),
                None => Err(format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")),
            };
        }
        match &c.state {
            CState::Running { .. } => Ok((file(c.runs - 1), true)),
            CState::Terminated(t) => match run_of(&t.container_id).or(last_run) {
                Some(n) => Ok((file(n), false)),
                None => Err(format!("container \"{container}\" in pod \"{pod}\" is terminated")),
            },
            CState::Waiting { reason, .. } => match last_run {
                Some(n) => Ok((file(n), false)),
                None => Err(match reason.as_str() {
                    "ErrImagePull" => {
                        format!("container \"{container}\" in pod \"{pod}\" is waiting to start: image can't be pulled")
                    }
                    "ImagePullBackOff" => {
                        format!("container \"{container}\" in pod \"{pod}\" is waiting to start: trying and failing to pull image")
                    }
                    r => format!("container \"{container}\" in pod \"{pod}\" is waiting to start: {r}"),
                }),
            },
        }
    }

    /// Whether the given run of a container is the current one and still running.
    pub fn run_is_live(&self, container: &str, log: &Path) -> bool {
        matches!(self.log_file(container, false), Ok((p, true)) if p == log)
    }

    fn publish(&self) {
        publish(&self.inner);
    }
}

/// Recompute and send the status if it changed.
fn publish(p: &PodInner) {
    let status = {
        let mut st = p.st.lock().expect("pod lock");
        compute_status(&mut st, p.rt.cfg.node_ip)
    };
    p.status_tx.send_if_modified(|old| {
        if *old != status {
            *old = status;
            true
        } else {
            false
        }
    });
}

impl PodInner {
    fn with<T>(&self, f: impl FnOnce(&mut PodState) -> T) -> T {
        let mut st = self.st.lock().expect("pod lock");
        f(&mut st)
    }

    fn stopping(&self) -> Option<i64> {
        *self.stop_tx.borrow()
    }

    fn save(&self) {
        let saved = self.with(|st| SavedPod {
            pod: serde_json::to_value(&st.pod).unwrap_or_default(),
            sandbox: st.sandbox.clone(),
            start_time: st.start_time.to_string(),
            init_done: st.init_done,
            pause: st.pause,
            containers: st
                .ctrs
                .iter()
                .filter_map(|c| match c.state {
                    CState::Running { started_at } => Some(SavedContainer {
                        name: c.spec.name.clone(),
                        pid: c.pid.unwrap_or(0),
                        proc_start: c.proc_start,
                        started_at: started_at.to_string(),
                        restart_count: c.restart_count,
                        env: c.env.clone(),
                        cwd: c.cwd.clone(),
                    }),
                    _ => None,
                })
                .collect(),
        });
        let _ = std::fs::create_dir_all(&self.dir);
        let tmp = self.dir.join("state.json.tmp");
        if let Ok(b) = serde_json::to_vec(&saved) {
            if std::fs::write(&tmp, b).is_ok() {
                let _ = std::fs::rename(&tmp, self.dir.join("state.json"));
            }
        }
    }

    /// Sleep, returning false early if the pod is being stopped.
    async fn sleep_or_stop(&self, d: Duration) -> bool {
        let mut rx = self.stop_tx.subscribe();
        if rx.borrow().is_some() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = async { let _ = rx.wait_for(|g| g.is_some()).await; } => false,
        }
    }

    fn set_state(&self, idx: usize, s: CState) {
        self.with(|st| st.ctrs[idx].state = s);
        publish(self);
    }
}

/// The per-pod worker.
async fn pod_main(p: Arc<PodInner>, saved: Option<SavedPod>) {
    let t0 = std::time::Instant::now();
    // Sandbox.
    let mut attempt = 0u32;
    let adopted_sandbox = saved
        .as_ref()
        .and_then(|s| s.sandbox.clone())
        .filter(|sb| sb.host_netns.is_some() || yard_netns::exists(&sb.netns));
    let host_network = p.with(|st| st.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false));
    let sandbox = if let Some(sb) = adopted_sandbox {
        Some(sb)
    } else if host_network {
        let ip = p.rt.cfg.node_ip;
        Some(Sandbox {
            netns: String::new(),
            veth: String::new(),
            ip,
            gateway: ip,
            prefix_len: 32,
            host_netns: Some(p.rt.net.netns.clone()),
        })
    } else {
        loop {
            if p.stopping().is_some() {
                break None;
            }
            let rt = p.rt.clone();
            let (name, uid) = (rt.netns_name(&p.uid), p.uid.clone());
            let res = tokio::task::spawn_blocking(move || rt.net.create_sandbox(&name, &uid)).await;
            match res {
                Ok(Ok(sb)) => break Some(sb),
                Ok(Err(e)) => {
                    p.rt.event(&p, true, "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {e}"), None);
                    tracing::warn!(pod = %p.name, "sandbox: {e}");
                }
                Err(e) => tracing::warn!("sandbox task: {e}"),
            }
            attempt += 1;
            let d = Duration::from_millis((500u64 << attempt.min(5)).min(10_000));
            if !p.sleep_or_stop(d).await {
                break None;
            }
        }
    };
    let Some(sandbox) = sandbox else {
        finish(&p).await;
        return;
    };
    tracing::debug!(pod = %p.name, elapsed = ?t0.elapsed(), "sandbox ready");
    // DNS files.
    let pod_snapshot = p.with(|st| {
        st.sandbox = Some(sandbox.clone());
        st.sandbox_ready = true;
        if let Some(s) = saved.as_ref() {
            st.init_done = s.init_done;
        }
        let mut pod = st.pod.clone();
        let status = pod.status.get_or_insert_with(Default::default);
        status.pod_ip = Some(sandbox.ip.to_string());
        status.pod_ips = Some(vec![PodIP { ip: sandbox.ip.to_string() }]);
        status.host_ip = Some(p.rt.cfg.node_ip.to_string());
        status.host_ips = Some(vec![HostIP { ip: p.rt.cfg.node_ip.to_string() }]);
        st.pod.status = Some(status.clone());
        pod
    });
    let _ = std::fs::create_dir_all(&p.dir);
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let dns = DnsSettings { host_resolv_conf: host_resolv, ..p.rt.cfg.dns.clone() };
    let _ = std::fs::write(p.dir.join("resolv.conf"), dns::resolv_conf(&pod_snapshot, &dns));
    let _ = std::fs::write(
        p.dir.join("hosts"),
        dns::hosts_file(&pod_snapshot, &sandbox.ip.to_string(), &p.rt.cfg.dns.cluster_domain),
    );
    let _ = std::fs::write(p.dir.join("hostname"), format!("{}\n", hostname_of(&p, &pod_snapshot)));
    p.save();
    publish(&p);
    // Volumes: the containers wait (ContainerCreating) until every one is there.
    if !mount_volumes(&p).await {
        finish(&p).await;
        return;
    }
    if let Err(e) = start_pause(&p, saved.as_ref().and_then(|s| s.pause)) {
        p.rt.event(
            &p,
            true,
            "FailedCreatePodSandBox",
            format!("Failed to create pod sandbox: pause process: {e}"),
            None,
        );
        tracing::warn!(pod = %p.name, "pause: {e}");
    }

    let n = p.with(|st| st.ctrs.len());
    let adopt_of = |name: &str| saved.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == name).cloned());
    // Init containers, in order (skipped when adopted after they completed).
    let init_done = p.with(|st| st.init_done);
    if !init_done {
        for idx in 0..n {
            if !p.with(|st| st.ctrs[idx].init) {
                continue;
            }
            let ok = run_container(p.clone(), idx, None).await;
            if !ok {
                if p.stopping().is_none() {
                    p.with(|st| st.init_failed = true);
                    publish(&p);
                }
                let mut rx = p.stop_tx.subscribe();
                let _ = rx.wait_for(|g| g.is_some()).await;
                finish(&p).await;
                return;
            }
        }
        p.with(|st| {
            st.init_done = true;
            for c in st.ctrs.iter_mut().filter(|c| !c.init) {
                if matches!(&c.state, CState::Waiting { reason, .. } if reason == "PodInitializing") {
                    c.state = CState::Waiting { reason: "ContainerCreating".into(), message: None };
                }
            }
        });
        p.save();
        publish(&p);
    } else {
        p.with(|st| {
            for c in st.ctrs.iter_mut().filter(|c| c.init) {
                c.state = CState::Terminated(Term {
                    exit_code: 0,
                    signal: None,
                    reason: "Completed".into(),
                    message: None,
                    started_at: None,
                    finished_at: now(),
                    container_id: String::new(),
                });
            }
        });
    }
    tracing::debug!(pod = %p.name, elapsed = ?t0.elapsed(), "containers starting");
    let mut tasks = vec![];
    for idx in 0..n {
        let (init, name) = p.with(|st| (st.ctrs[idx].init, st.ctrs[idx].spec.name.clone()));
        if init {
            continue;
        }
        tasks.push(tokio::spawn(run_container(p.clone(), idx, adopt_of(&name))));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Everything exited for good (restartPolicy) or the pod is stopping: wait for the stop.
    let mut rx = p.stop_tx.subscribe();
    let _ = rx.wait_for(|g| g.is_some()).await;
    finish(&p).await;
}

/// Tear down the sandbox and the state.
async fn finish(p: &Arc<PodInner>) {
    if let Some((pid, start)) = p.with(|st| st.pause.take()) {
        if proc::alive(pid, start) {
            proc::signal(pid, Signal::SIGKILL);
        }
    }
    let sb = p.with(|st| st.sandbox.clone());
    let rt = p.rt.clone();
    let uid = p.uid.clone();
    let dir = p.dir.clone();
    let logs = rt.log_dir(&p.namespace, &p.name, &p.uid);
    let _ = tokio::task::spawn_blocking(move || {
        let (name, veth) = match sb {
            Some(sb) => (sb.netns, sb.veth),
            None => (rt.netns_name(&uid), crate::net::veth_name(&uid)),
        };
        if let Err(e) = rt.net.delete_sandbox(&name, &veth, &uid) {
            tracing::warn!("delete sandbox {name}: {e}");
        }
        if let Err(e) = crate::cgroup::remove_pod(&uid) {
            tracing::warn!("remove cgroups of pod {uid}: {e}");
        }
        crate::volume::teardown(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&logs);
    })
    .await;
    p.rt.pods.lock().expect("pods lock").remove(&p.uid);
    p.done_tx.send_replace(true);
}

/// How a running container is watched.
enum Proc {
    Child(tokio::process::Child),
    Adopted { pid: i32, start: u64 },
}

impl Proc {
    async fn wait(&mut self) -> (i32, Option<i32>) {
        match self {
            Proc::Child(c) => match c.wait().await {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (s.code(), s.signal()) {
                        (Some(code), _) => (code, None),
                        (None, Some(sig)) => (128 + sig, Some(sig)),
                        _ => (255, None),
                    }
                }
                Err(_) => (255, None),
            },
            Proc::Adopted { pid, start } => {
                loop {
                    if !proc::alive(*pid, *start) {
                        // Not our child: the exit status is gone with it.
                        return (137, None);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

fn back_off(n: i32) -> Duration {
    if n <= 0 {
        return Duration::ZERO;
    }
    let secs = 10u64.saturating_mul(1u64 << (n - 1).min(6) as u32).min(300);
    Duration::from_secs(secs)
}

fn pod_key(p: &PodInner) -> String {
    format!("{}_{}({})", p.name, p.namespace, p.uid)
}

/// Run one container for its whole life (restarts included). Returns whether it ended with
/// success (for init containers); app containers return when the pod stops or the restart policy
/// says no more.
/// The hostname a pod's containers get: the node's with `hostNetwork`, else the pod's.
fn hostname_of(p: &PodInner, pod: &Pod) -> String {
    if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
        p.rt.cfg.node_name.clone()
    } else {
        dns::pod_hostname(pod)
    }
}

/// The host paths a program needs in its view: the busybox applet directory and the agent's own
/// binary (the applet scripts and built-ins exec it by its path), read-only, then the program's.
fn program_binds(
    images: &crate::image::ImageTable,
    program: &crate::image::Program,
) -> Vec<crate::sandbox::rootfs::Bind> {
    use crate::sandbox::rootfs::Bind;
    let mut out = vec![];
    if let Ok(exe) = std::fs::canonicalize(&images.exe) {
        out.push(Bind { host: exe.clone(), inner: exe, read_only: true });
    }
    if let Some(dir) = &program.path_prefix {
        out.push(Bind { host: dir.clone(), inner: dir.clone(), read_only: true });
    }
    out.extend(program.binds.iter().cloned());
    out
}

async fn run_container(p: Arc<PodInner>, idx: usize, adopt: Option<SavedContainer>) -> bool {
    let mut adopt = adopt;
    let mut crashes: i32 = 0;
    let mut pull_failures: u32 = 0;
    loop {
        if p.stopping().is_some() {
            return false;
        }
        let (pod, c, init, runs) =
            p.with(|st| (st.pod.clone(), st.ctrs[idx].spec.clone(), st.ctrs[idx].init, st.ctrs[idx].runs));
        let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
        let field_path = Some(format!("spec.{}{{{}}}", if init { "initContainers" } else { "containers" }, c.name));
        let image = c.image.clone().unwrap_or_default();
        // The container's cgroup: its limits, and what an OOM kill is counted against.
        let cgroup = crate::cgroup::for_container(&p.uid, &c);
        let cg = cgroup.as_ref().ok().cloned().flatten();
        let oom_before = cg.as_ref().and_then(|g| g.oom_kills().ok()).unwrap_or(0);
        p.with(|st| st.ctrs[idx].cgroup = cg.clone());

        let (mut procw, started_at, pid, log_path, run_no) = if let Some(a) =
            adopt.take().filter(|a| proc::alive(a.pid, a.proc_start))
        {
            let started_at: jiff::Timestamp = a.started_at.parse().unwrap_or_else(|_| now());
            // Execs into it run as it does.
            if let Ok(id) = crate::security::identity(&pod, &c) {
                p.with(|st| st.ctrs[idx].identity = id);
            }
            let run_no = a.restart_count;
            let log_path = p.rt.log_dir(&p.namespace, &p.name, &p.uid).join(&c.name).join(format!("{run_no}.log"));
            let cid = format!("yard://{}-{}-{}", &p.uid.chars().take(8).collect::<String>(), c.name, run_no);
            p.with(|st| {
                let ct = &mut st.ctrs[idx];
                ct.pid = Some(a.pid);
                ct.proc_start = a.proc_start;
                ct.env = a.env.clone();
                ct.cwd = a.cwd.clone();
                ct.restart_count = a.restart_count;
                ct.runs = run_no + 1;
                ct.container_id = cid;
                ct.state = CState::Running { started_at };
            });
            // Keep copying its output. (Its stdin pipe or pty died with the previous agent.)
            let (hub, t_out, t_err) = crate::attach::Hub::new(false, false, None, None);
            p.with(|st| st.ctrs[idx].attach = Some(hub));
            if let Ok(log) = proc::LogFile::create(&log_path) {
                let (o, e) = proc::fifo_paths(&p.dir.join("fifo").join(&c.name));
                if let Ok(r) = proc::open_fifo_reader(&o) {
                    tokio::spawn(proc::pump(r, log.clone(), "stdout", Some(t_out)));
                }
                if let Ok(r) = proc::open_fifo_reader(&e) {
                    tokio::spawn(proc::pump(r, log, "stderr", Some(t_err)));
                }
            }
            publish(&p);
            (Proc::Adopted { pid: a.pid, start: a.proc_start }, started_at, a.pid, log_path, run_no)
        } else {
            // Environment.
            let cap = p.rt.cfg.capacity.clone();
            let mut volume_binds = vec![];
            let envv = match p
                .rt
                .fetch_objects(&pod, &c)
                .await
                .and_then(|objs| env::container_env(&pod, &c, &objs, (&cap.0, &cap.1)))
                .and_then(|e| crate::security::identity(&pod, &c).map(|id| (e, id)))
                .and_then(|(e, id)| crate::volume::container_binds(&pod, &c, &p.dir, &e).map(|b| (e, id, b)))
            {
                Ok((e, id, b)) => {
                    p.with(|st| st.ctrs[idx].identity = id);
                    volume_binds = b;
                    e
                }
                Err(msg) => {
                    p.set_state(
                        idx,
                        CState::Waiting { reason: "CreateContainerConfigError".into(), message: Some(msg.clone()) },
                    );
                    p.rt.event(&p, true, "Failed", format!("Error: {msg}"), field_path.clone());
                    if !p.sleep_or_stop(Duration::from_secs(5)).await {
                        return false;
                    }
                    continue;
                }
            };
            let (cmd, args) = env::expand_argv(&c, &envv);
            let program = match p.rt.cfg.images.resolve(&image, &cmd, &args, &c.name, &p.dir) {
                Ok(prog) => prog,
                Err(crate::image::Unmapped(msg)) => {
                    pull_failures += 1;
                    p.rt.event(
                        &p,
                        true,
                        "Failed",
                        format!("Failed to pull image \"{image}\": {msg}"),
                        field_path.clone(),
                    );
                    p.rt.event(&p, true, "Failed", "Error: ErrImagePull".into(), field_path.clone());
                    p.set_state(
                        idx,
                        CState::Waiting {
                            reason: if pull_failures > 1 { "ImagePullBackOff".into() } else { "ErrImagePull".into() },
                            message: Some(if pull_failures > 1 {
                                format!("Back-off pulling image \"{image}\": ErrImagePull: {msg}")
                            } else {
                                msg.clone()
                            }),
                        },
                    );
                    if pull_failures > 1 {
                        p.rt.event(
                            &p,
                            false,
                            "BackOff",
                            format!("Back-off pulling image \"{image}\""),
                            field_path.clone(),
                        );
                    }
                    let d = Duration::from_secs((5u64 << pull_failures.min(6)).min(300));
                    if !p.sleep_or_stop(d).await {
                        return false;
                    }
                    continue;
                }
            };
            if pull_failures > 0 || runs == 0 {
                p.rt.event(
                    &p,
                    false,
                    "Pulled",
                    {
                        let path =
                            envv.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
                        let path = match &program.path_prefix {
                            Some(pre) => format!("{}:{path}", pre.display()),
                            None => path,
                        };
                        format!(
                            "No image pulled: container image \"{image}\" runs as {}",
                            p.rt.cfg.images.describe(&program, &path)
                        )
                    },
                    field_path.clone(),
                );
            }
            pull_failures = 0;
            let mut envv = envv;
            let hostname = hostname_of(&p, &pod);
            let base_path = envv
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            let path = match &program.path_prefix {
                Some(pre) => format!("{}:{base_path}", pre.display()),
                None => base_path,
            };
            envv.retain(|(k, _)| k != "PATH");
            envv.insert(0, ("PATH".into(), path));
            if !envv.iter().any(|(k, _)| k == "HOSTNAME") {
                envv.insert(1, ("HOSTNAME".into(), hostname.clone()));
            }
            if !envv.iter().any(|(k, _)| k == "HOME") {
                envv.push(("HOME".into(), "/root".into()));
            }
            let cwd = c.working_dir.clone().filter(|w| !w.is_empty()).map(PathBuf::from);
            let netns = p.with(|st| st.sandbox.as_ref().map(|s| s.netns_path())).unwrap_or_default();
            let spec = proc::Spec {
                argv: program.argv.clone(),
                env: envv.clone(),
                cwd: cwd.clone(),
                netns,
                hostname,
                view: crate::sandbox::rootfs::View {
                    root: p.dir.join("root").join(&c.name),
                    hostname_file: p.dir.join("hostname"),
                    hosts: p.dir.join("hosts"),
                    resolv_conf: p.dir.join("resolv.conf"),
                    binds: program_binds(&p.rt.cfg.images, &program).into_iter().chain(volume_binds).collect(),
                    cwd: cwd.clone(),
                    privileged: p.with(|st| st.ctrs[idx].identity.privileged),
                },
                pid_ns: pid_ns_of(&pod, p.with(|st| st.pause)),
                relay_exe: p.rt.cfg.images.exe.clone(),
                fifo_dir: p.dir.join("fifo").join(&c.name),
                stdin: c.stdin.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
                cgroup: cg.clone(),
                identity: p.with(|st| st.ctrs[idx].identity.clone()),
            };
            let run_no = runs;
            let log_path = p.rt.log_dir(&p.namespace, &p.name, &p.uid).join(&c.name).join(format!("{run_no}.log"));
            let cid = format!("yard://{}-{}-{}", &p.uid.chars().take(8).collect::<String>(), c.name, run_no);
            let log = proc::LogFile::create(&log_path);
            tracing::debug!(pod = %p.name, container = %c.name, "container process spawning");
            let spawned = match (log, &cgroup) {
                (Err(e), _) => Err(e),
                (_, Err(msg)) => Err(std::io::Error::other(msg.clone())),
                (Ok(log), Ok(_)) => proc::spawn(&spec).map(|s| (s, log)),
            };
            tracing::debug!(pod = %p.name, container = %c.name, "container process started");
            match spawned {
                Ok((s, log)) => {
                    let started_at = now();
                    let proc_start = proc::start_time(s.pid).unwrap_or(0);
                    let tty = s.pty.is_some();
                    let master = s.pty.as_ref().and_then(|m| proc::dup_file(m.as_raw_fd()).ok());
                    let (hub, t_out, t_err) =
                        crate::attach::Hub::new(tty, c.stdin_once.unwrap_or(false), s.stdin, s.pty);
                    if let Some(m) = master {
                        // With a TTY the pod's log is what the terminal shows.
                        tokio::spawn(proc::pump(tokio::fs::File::from_std(m), log, "stdout", Some(t_out)));
                        drop(t_err);
                    } else {
                        if let Some(o) = s.stdout {
                            tokio::spawn(proc::pump(o, log.clone(), "stdout", Some(t_out)));
                        }
                        if let Some(e) = s.stderr {
                            tokio::spawn(proc::pump(e, log, "stderr", Some(t_err)));
                        }
                    }
                    p.with(|st| {
                        st.ctrs[idx].attach = Some(hub);
                        let ct = &mut st.ctrs[idx];
                        ct.pid = Some(s.pid);
                        ct.proc_start = proc_start;
                        ct.env = envv.clone();
                        ct.cwd = cwd.clone();
                        ct.restart_count = run_no;
                        ct.runs = run_no + 1;
                        ct.container_id = cid.clone();
                        ct.ready = false;
                        ct.started = false;
                        ct.state = CState::Running { started_at };
                    });
                    p.save();
                    publish(&p);
                    p.rt.event(&p, false, "Created", format!("Created container {}", c.name), field_path.clone());
                    p.rt.event(&p, false, "Started", format!("Started container {}", c.name), field_path.clone());
                    (Proc::Child(s.child), started_at, s.pid, log_path, run_no)
                }
                Err(e) => {
                    // Like a runtime's StartError: counts as a failed run.
                    let msg = e.to_string();
                    p.rt.event(&p, true, "Failed", format!("Error: {msg}"), field_path.clone());
                    let t = Term {
                        exit_code: 128,
                        signal: None,
                        reason: "StartError".into(),
                        message: Some(msg),
                        started_at: None,
                        finished_at: now(),
                        container_id: cid,
                    };
                    p.with(|st| {
                        let ct = &mut st.ctrs[idx];
                        ct.runs = run_no + 1;
                        ct.restart_count = run_no;
                        ct.state = CState::Terminated(t);
                    });
                    publish(&p);
                    if !after_exit(&p, idx, &policy, 128, init, &mut crashes, Duration::ZERO).await {
                        return false;
                    }
                    continue;
                }
            }
        };
        let _ = log_path;
        // Probes.
        let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
        let probe_task = tokio::spawn(probe_loop(p.clone(), idx, c.clone(), pid, kill_tx, started_at));
        let mut stop_rx = p.stop_tx.subscribe();
        let mut killed_for: Option<String> = None;
        let (code, signal) = tokio::select! {
            r = procw.wait() => r,
            Some(why) = kill_rx.recv() => {
                killed_for = Some(why);
                let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
                let g = c.liveness_probe.as_ref().and_then(|pr| pr.termination_grace_period_seconds).unwrap_or(grace);
                p.rt.event(&p, false, "Killing", format!("Container {} failed liveness probe, will be restarted", c.name), field_path.clone());
                stop_process(&p, &c, &mut procw, pid, g, false).await
            }
            _ = async { let _ = stop_rx.wait_for(|g| g.is_some()).await; } => {
                let g = p.stopping().unwrap_or(30);
                p.rt.event(&p, false, "Killing", format!("Stopping container {}", c.name), field_path.clone());
                stop_process(&p, &c, &mut procw, pid, g, true).await
            }
        };
        probe_task.abort();
        let finished = now();
        let ran_for = finished.duration_since(started_at);
        // The kernel's OOM killer ends a process with SIGKILL and counts it in the cgroup.
        let oom = code == 137 && cg.as_ref().and_then(|g| g.oom_kills().ok()).is_some_and(|n| n > oom_before);
        // What the run left behind in its cgroup goes with it (a runtime's container stop).
        if let Some(g) = &cg {
            if let Err(e) = g.remove() {
                tracing::warn!(pod = %p.name, container = %c.name, "remove cgroup: {e}");
            }
        }
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let t = Term {
            exit_code: code,
            signal,
            reason: reason.into(),
            message: None,
            started_at: Some(started_at),
            finished_at: finished,
            container_id: p.with(|st| st.ctrs[idx].container_id.clone()),
        };
        let _ = killed_for;
        p.with(|st| {
            let ct = &mut st.ctrs[idx];
            ct.ready = false;
            ct.started = false;
            ct.pid = None;
            ct.attach = None;
            ct.state = CState::Terminated(t);
        });
        p.save();
        publish(&p);
        if p.stopping().is_some() {
            return false;
        }
        if init && code == 0 {
            return true;
        }
        // Reset the back-off after a long healthy run (kubelet: 2x the max back-off).
        if ran_for.as_secs() > 600 {
            crashes = 0;
        }
        let _ = run_no;
        if !after_exit(&p, idx, &policy, code, init, &mut crashes, Duration::ZERO).await {
            return code == 0;
        }
    }
}

/// Decide about a restart after an exit; sleeps the back-off. Returns whether to run again.
async fn after_exit(
    p: &Arc<PodInner>,
    idx: usize,
    policy: &str,
    code: i32,
    init: bool,
    crashes: &mut i32,
    _min: Duration,
) -> bool {
    let restart = match policy {
        "Always" => !init || code != 0,
        "OnFailure" => code != 0,
        _ => false,
    };
    if !restart {
        return false;
    }
    let d = back_off(*crashes);
    *crashes += 1;
    if !d.is_zero() {
        let name = p.with(|st| {
            let ct = &mut st.ctrs[idx];
            if let CState::Terminated(t) = &ct.state {
                ct.last = Some(t.clone());
            }
            let msg =
                format!("back-off {}s restarting failed container={} pod={}", d.as_secs(), ct.spec.name, pod_key(p));
            ct.state = CState::Waiting { reason: "CrashLoopBackOff".into(), message: Some(msg) };
            ct.spec.name.clone()
        });
        publish(p);
        p.rt.event(
            p,
            true,
            "BackOff",
            "Back-off restarting failed container".into(),
            Some(format!("spec.containers{{{name}}}")),
        );
        if !p.sleep_or_stop(d).await {
            return false;
        }
    } else {
        p.with(|st| {
            let ct = &mut st.ctrs[idx];
            if let CState::Terminated(t) = &ct.state {
                ct.last = Some(t.clone());
            }
        });
    }
    true
}

/// preStop, SIGTERM, SIGKILL after the grace period. `pod_stop` tells a pod termination (the grace
/// covers preStop) from a liveness restart.
async fn stop_process(
    p: &Arc<PodInner>,
    c: &Container,
    procw: &mut Proc,
    pid: i32,
    grace: i64,
    _pod_stop: bool,
) -> (i32, Option<i32>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace.max(0) as u64);
    if grace > 0 {
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) {
            let fut = async {
                if let Some(e) = &h.exec {
                    let argv = e.command.clone().unwrap_or_default();
                    let _ = exec_probe(p, pid, &argv, Duration::from_secs(grace as u64)).await;
                } else if let Some(g) = &h.http_get {
                    let ip = p.with(|st| st.sandbox.as_ref().map(|s| s.ip));
                    if let Some(ip) = ip {
                        let _ = http_probe(p, c, g, ip, Duration::from_secs(grace as u64)).await;
                    }
                } else if let Some(s) = &h.sleep {
                    tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
                }
            };
            let _ = tokio::time::timeout_at(deadline, fut).await;
        }
    }
    proc::signal(pid, Signal::SIGTERM);
    let mut deadline =
        deadline.max(tokio::time::Instant::now() + Duration::from_millis(if grace > 0 { 100 } else { 0 }));
    // A shorter grace period given meanwhile (a second delete, the agent shutting down) moves
    // the deadline closer, as the kubelet does.
    let mut stop_rx = p.stop_tx.subscribe();
    let exited = {
        let wait = procw.wait();
        tokio::pin!(wait);
        let mut watching = true;
        loop {
            tokio::select! {
                r = &mut wait => break Some(r),
                _ = tokio::time::sleep_until(deadline) => break None,
                changed = stop_rx.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    if let Some(g) = *stop_rx.borrow() {
                        let shorter = tokio::time::Instant::now() + Duration::from_secs(g.max(0) as u64);
                        deadline = deadline.min(shorter);
                    }
                }
            }
        }
    };
    proc::signal(pid, Signal::SIGKILL);
    match exited {
        Some(r) => r,
        None => procw.wait().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_sequence() {
        let s: Vec<u64> = (0..8).map(|n| back_off(n).as_secs()).collect();
        assert_eq!(s, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    }
}
