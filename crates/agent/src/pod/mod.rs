//! The pod runtime: one worker task per pod that builds the sandbox, runs init and app containers
//! with restart policy and back-off, runs probes, computes the PodStatus, and tears everything
//! down on termination. It is independent of the API server: status goes out on a watch channel,
//! events on an mpsc channel.
//!
//! Here: the runtime, the pod handle and the pod worker (sandbox, volumes, init then app
//! containers, teardown). `container.rs` runs one container for its life, `stop.rs` stops one,
//! `restart.rs` holds the restart and phase decisions as pure functions, `state.rs` the saved
//! state a restarted agent adopts pods from, `objects.rs` what env and volumes read from the API,
//! `setup.rs` the volumes and pause, `probe.rs` the probes, `status.rs` the PodStatus.

mod container;
mod eviction;
mod objects;
mod probe;
mod restart;
mod setup;
mod state;
mod status;
mod stop;

use container::*;
pub use probe::connect_in;
use probe::*;
use restart::*;
use setup::*;
pub use state::{SavedContainer, SavedPod};
use status::*;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stop::*;

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
    /// ServiceAccount tokens issued for pods' projected volumes, by pod uid, audience and
    /// lifetime (see `objects.rs`).
    tokens: Mutex<HashMap<String, objects::IssuedToken>>,
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
    /// The IPC and UTS namespaces the pod's containers share.
    pod_ns: crate::sandbox::podns::PodNs,
    /// Evicted by this node (the kubelet's eviction manager): the message. Its containers are
    /// killed and not restarted; the pod is Failed with reason Evicted until it is deleted.
    evicted: Option<String>,
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
    /// Set once when the node evicts the pod (see [`PodInner::evict`]).
    evict_tx: watch::Sender<bool>,
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

/// The hostname a pod's containers get: the node's with `hostNetwork`, else the pod's.
fn hostname_of(p: &PodInner, pod: &Pod) -> String {
    if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
        p.rt.cfg.node_name.clone()
    } else {
        dns::pod_hostname(pod)
    }
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
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// What resolves the containers' images: the node's image table (an image service that
    /// pulls images would be chosen here).
    pub fn images(&self) -> &dyn crate::image::ImageService {
        &self.cfg.images
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
            .map(|s| s.start_time)
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
            pod_ns: Default::default(),
            evicted: None,
        };
        let (status_tx, _) = watch::channel(PodStatus::default());
        let (stop_tx, _) = watch::channel(None);
        let (done_tx, _) = watch::channel(false);
        let (evict_tx, _) = watch::channel(false);
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
            evict_tx,
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

    fn evicted(&self) -> bool {
        *self.evict_tx.borrow()
    }

    /// Evict the pod as the kubelet does: a Warning `Evicted` event, its containers killed now
    /// (grace 0) and never restarted, phase Failed with reason Evicted and `message`.
    fn evict(self: &Arc<Self>, message: String) {
        if self.evicted() {
            return;
        }
        tracing::info!(pod = %self.name, "evicted: {message}");
        self.with(|st| st.evicted = Some(message.clone()));
        self.rt.event(self, true, "Evicted", message, None);
        self.save();
        publish(self);
        self.evict_tx.send_replace(true);
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
            let d = sandbox_retry(attempt);
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
            st.evicted = s.evicted.clone();
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
    if p.with(|st| st.evicted.is_some()) {
        p.evict_tx.send_replace(true);
    }
    let _ = std::fs::create_dir_all(&p.dir);
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let dns = DnsSettings { host_resolv_conf: host_resolv, ..p.rt.cfg.dns.clone() };
    let _ = std::fs::write(p.dir.join("resolv.conf"), dns::resolv_conf(&pod_snapshot, &dns));
    let _ = std::fs::write(
        p.dir.join("hosts"),
        dns::hosts_file(&pod_snapshot, &sandbox.ip.to_string(), &p.rt.cfg.dns.cluster_domain),
    );
    let hostname = hostname_of(&p, &pod_snapshot);
    let _ = std::fs::write(p.dir.join("hostname"), format!("{hostname}\n"));
    // The IPC and UTS namespaces the containers share (found again when adopted).
    let host_ipc = pod_snapshot.spec.as_ref().and_then(|s| s.host_ipc).unwrap_or(false);
    let dir = p.dir.clone();
    match tokio::task::spawn_blocking(move || crate::sandbox::podns::ensure(&dir, &hostname, host_ipc)).await {
        Ok(Ok(ns)) => p.with(|st| st.pod_ns = ns),
        Ok(Err(e)) => {
            let msg = format!("Failed to create pod sandbox: IPC and UTS namespaces: {e}");
            p.rt.event(&p, true, "FailedCreatePodSandBox", msg, None);
            finish(&p).await;
            return;
        }
        Err(e) => {
            tracing::warn!("pod namespaces task: {e}");
            finish(&p).await;
            return;
        }
    }
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
        crate::sandbox::podns::remove(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&logs);
    })
    .await;
    p.rt.pods.lock().expect("pods lock").remove(&p.uid);
    p.done_tx.send_replace(true);
}
