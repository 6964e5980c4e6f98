//! yard-controllers owns the controller manager: the EndpointSlice and Endpoints controllers, the
//! EndpointSlice mirroring controller (selector-less Services with hand-written Endpoints), the
//! Deployment and ReplicaSet controllers, the scheduler, node IPAM, the garbage collector and the
//! namespace controller, the `default` ServiceAccount and `kube-root-ca.crt` publishers, plus Lease-based leader election. Every controller is a plain API client:
//! it lists and watches through kube-rs, keeps in-memory caches, and writes through `kube::Api`.

#![forbid(unsafe_code)]

pub mod claim;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod gc;
pub mod informer;
pub mod leader;
pub mod mirroring;
pub mod namespace;
pub mod nodeipam;
pub mod queue;
pub mod replicaset;
pub mod scheduler;
pub mod serviceaccount;
pub mod slice_tracker;
pub mod svcindex;
pub mod util;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use tokio::task::JoinSet;

use crate::informer::Informer;
use crate::queue::{spawn_workers, WorkQueue};

/// Controller names accepted by `--controllers` (upstream's names where one exists).
pub const CONTROLLERS: &[&str] = &[
    "endpointslice",
    "endpointslicemirroring",
    "endpoint",
    "replicaset",
    "deployment",
    "scheduler",
    "nodeipam",
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "root-ca-certificate-publisher",
];

/// Command-line flags of `yard controllers`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Path to a kubeconfig; without it the usual inference applies (KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// CIDR from which node pod CIDRs are allocated.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: IpNet,
    /// Run only while holding the kube-system/yard-controller-manager Lease.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Controllers to run: `*` for all, `name` to enable, `-name` to disable. Names: endpointslice,
    /// endpointslicemirroring, endpoint, replicaset, deployment, scheduler, nodeipam, garbagecollector, namespace, serviceaccount, root-ca-certificate-publisher.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// How long a standby waits after the leader's last renewal before taking the Lease over (seconds).
    #[arg(long, default_value_t = 15.0)]
    pub leader_elect_lease_duration: f64,
    /// How long the leader keeps trying to renew before it gives leadership up (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub leader_elect_renew_deadline: f64,
    /// Interval between acquire/renew attempts (seconds).
    #[arg(long, default_value_t = 2.0)]
    pub leader_elect_retry_period: f64,
    /// Holder identity in the Lease (default: hostname_random).
    #[arg(long)]
    pub leader_elect_identity: Option<String>,
    /// The cluster CA bundle to publish as `kube-root-ca.crt` in every namespace (without it the
    /// root-ca-certificate-publisher does not run).
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
}

/// Controller manager settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster_cidr: IpNet,
    pub leader_elect: bool,
    pub controllers: Vec<String>,
    /// Holder identity for leader election.
    pub identity: String,
    /// Workers per controller for the endpoint controllers.
    pub endpoint_workers: usize,
    /// Lease timings (kube-controller-manager's --leader-elect-* flags).
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// The CA bundle (PEM) that `kube-root-ca.crt` publishes.
    pub root_ca: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_cidr: "10.244.0.0/16".parse().expect("valid default CIDR"),
            leader_elect: true,
            controllers: vec!["*".into()],
            identity: default_identity(),
            endpoint_workers: 4,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            root_ca: None,
        }
    }
}

impl Config {
    pub fn from_args(args: &Args) -> Self {
        Config {
            cluster_cidr: args.cluster_cidr,
            leader_elect: args.leader_elect,
            controllers: args.controllers.clone(),
            identity: args.leader_elect_identity.clone().unwrap_or_else(default_identity),
            lease_duration: Duration::from_secs_f64(args.leader_elect_lease_duration.max(0.001)),
            renew_deadline: Duration::from_secs_f64(args.leader_elect_renew_deadline.max(0.001)),
            retry_period: Duration::from_secs_f64(args.leader_elect_retry_period.max(0.001)),
            root_ca: args.root_ca_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok()),
            ..Default::default()
        }
    }

    /// Upstream's `--controllers` semantics: `-name` wins, then `name`, then `*`.
    pub fn enabled(&self, name: &str) -> bool {
        let alias = |c: &str| -> String {
            let (neg, n) = match c.strip_prefix('-') {
                Some(n) => ("-", n),
                None => ("", c),
            };
            let n = if n == "endpoints" { "endpoint" } else { n };
            format!("{neg}{n}")
        };
        let names: Vec<String> = self.controllers.iter().flat_map(|c| c.split(',')).map(|c| alias(c.trim())).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if names.iter().any(|c| c.strip_prefix('-') == Some(name)) {
            return false;
        }
        names.contains(&name) || names.contains(&"*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_selection() {
        let c = |v: &[&str]| Config { controllers: v.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        assert!(c(&["*"]).enabled("scheduler"));
        assert!(!c(&["*", "-scheduler"]).enabled("scheduler"));
        assert!(c(&["*,-scheduler"]).enabled("endpoint"));
        assert!(c(&["endpoints"]).enabled("endpoint"));
        assert!(!c(&["endpointslice"]).enabled("endpoint"));
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "yard".into());
    let suffix: String = {
        use rand::Rng;
        let mut r = rand::rng();
        (0..8).map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[r.random_range(0..27)])).collect()
    };
    format!("{host}_{suffix}")
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Runs with `client` (the binary builds it from `--kubeconfig`) until Ctrl-C.
pub async fn run(client: Client, args: Args) -> Result<(), Error> {
    let config = Config::from_args(&args);
    run_with_client(client, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Runs the controller manager with an existing client until `shutdown` resolves. With leader
/// election the controllers only run while this instance holds the Lease; losing it stops them and
/// the instance campaigns again.
pub async fn run_with_client(client: Client, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    for c in config.controllers.iter().flat_map(|c| c.split(',')) {
        let n = c.trim().trim_start_matches('-');
        if n != "*" && n != "endpoints" && !CONTROLLERS.contains(&n) {
            return Err(Error::Invalid(format!("unknown controller {n:?}; known: {}", CONTROLLERS.join(", "))));
        }
    }
    let lcfg = leader_config(&config);
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        r = manager(client.clone(), config.clone()) => r,
    };
    if config.leader_elect {
        // Hand the Lease over at once instead of making a standby wait for it to expire.
        leader::release(&client, &lcfg).await;
    }
    result
}

fn leader_config(config: &Config) -> leader::LeaderConfig {
    let mut lcfg = leader::LeaderConfig::new(config.identity.clone());
    lcfg.lease_duration = config.lease_duration;
    lcfg.renew_deadline = config.renew_deadline.min(config.lease_duration);
    lcfg.retry_period = config.retry_period;
    lcfg
}

async fn manager(client: Client, config: Config) -> Result<(), Error> {
    let lcfg = leader_config(&config);
    loop {
        if config.leader_elect {
            leader::acquire(&client, &lcfg).await;
        }
        // Dropping `run` drops the JoinSet, which aborts every controller task.
        let starter = {
            let client = client.clone();
            let config = config.clone();
            async move { start_controllers(client, config).await }
        };
        let run = async {
            let mut inner = starter.await;
            while inner.join_next().await.is_some() {}
        };
        if config.leader_elect {
            tokio::select! {
                _ = leader::hold(&client, &lcfg) => {
                    tracing::warn!("stopping controllers after losing leadership");
                }
                _ = run => {}
            }
            // Pause before campaigning again.
            tokio::time::sleep(lcfg.retry_period).await;
        } else {
            run.await;
            return Err(Error::Invalid("controllers stopped".into()));
        }
    }
}

fn informer<K>(client: &Client, name: &str) -> Arc<Informer<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    Informer::new(Api::<K>::all(client.clone()), name)
}

/// Creates the informers and controllers that are enabled, waits for the caches, starts workers.
/// Every task lives in the returned JoinSet; dropping it stops everything.
pub async fn start_controllers(client: Client, config: Config) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let on = |n: &str| config.enabled(n);
    let need_pods = ["endpointslice", "endpoint", "replicaset", "deployment", "scheduler"].iter().any(|n| on(n));
    let pods = need_pods.then(|| {
        // Controllers only patch pods (never replace them from the cache), so managedFields, the
        // largest part of a stored pod, are dropped from the cache.
        let i = informer::<Pod>(&client, "pods");
        i.set_transform(|p: &mut Pod| p.metadata.managed_fields = None);
        i
    });
    let mirroring = on("endpointslicemirroring");
    let services =
        (on("endpointslice") || on("endpoint") || mirroring).then(|| informer::<Service>(&client, "services"));
    let nodes = (on("endpointslice") || on("scheduler") || on("nodeipam")).then(|| informer::<Node>(&client, "nodes"));
    let slices = (on("endpointslice") || mirroring).then(|| informer::<EndpointSlice>(&client, "endpointslices"));
    let endpoints = (on("endpoint") || mirroring).then(|| informer::<Endpoints>(&client, "endpoints"));
    let rs = (on("replicaset") || on("deployment")).then(|| informer::<ReplicaSet>(&client, "replicasets"));
    let deps = on("deployment").then(|| informer::<Deployment>(&client, "deployments"));
    let publish_ca = on("root-ca-certificate-publisher") && config.root_ca.is_some();
    let nss =
        (on("namespace") || on("serviceaccount") || publish_ca).then(|| informer::<Namespace>(&client, "namespaces"));
    let sas = on("serviceaccount").then(|| informer::<ServiceAccount>(&client, "serviceaccounts"));
    let cms = publish_ca.then(|| informer::<ConfigMap>(&client, "configmaps"));

    type Start = Box<dyn FnOnce(&mut JoinSet<()>) + Send>;
    let mut starts: Vec<Start> = Vec::new();

    if let (Some(pods), Some(services)) = (&pods, &services) {
        let mut consumers = Vec::new();
        let es_q = WorkQueue::new();
        let es_t = Arc::new(svcindex::TriggerTimes::default());
        let ep_q = WorkQueue::new();
        let ep_t = Arc::new(svcindex::TriggerTimes::default());
        if on("endpointslice") {
            consumers.push(svcindex::Consumer { queue: es_q.clone(), triggers: es_t.clone() });
        }
        if on("endpoint") {
            consumers.push(svcindex::Consumer { queue: ep_q.clone(), triggers: ep_t.clone() });
        }
        let index = svcindex::ServiceIndex::new(pods.cache(), consumers);
        index.attach(services, pods);
        let workers = config.endpoint_workers.max(1);
        if let (true, Some(slices), Some(nodes)) = (on("endpointslice"), &slices, &nodes) {
            let c = endpointslice::EndpointSliceController::new(
                client.clone(),
                services.cache(),
                pods.cache(),
                nodes.cache(),
                index.clone(),
                es_q,
                es_t,
            );
            c.attach(slices);
            starts.push(Box::new(move |set| {
                spawn_workers(set, c.queue.clone(), workers, "endpointslice", move |k| c.clone().sync(k))
            }));
        }
        if let (true, Some(endpoints)) = (on("endpoint"), &endpoints) {
            let c = endpoints::EndpointsController::new(
                client.clone(),
                services.cache(),
                pods.cache(),
                index.clone(),
                ep_q,
                ep_t,
            );
            c.attach(endpoints);
            starts.push(Box::new(move |set| {
                spawn_workers(set, c.queue.clone(), workers, "endpoint", move |k| c.clone().sync(k))
            }));
        }
    }
    if let (true, Some(eps), Some(services), Some(slices)) = (mirroring, &endpoints, &services, &slices) {
        let c = mirroring::MirroringController::new(client.clone(), eps.cache(), services.cache());
        c.attach(eps, services, slices);
        let workers = config.endpoint_workers.max(1);
        starts.push(Box::new(move |set| {
            spawn_workers(set, c.queue.clone(), workers, "endpointslicemirroring", move |k| c.clone().sync(k))
        }));
    }
    if let (true, Some(rs), Some(pods)) = (on("replicaset"), &rs, &pods) {
        let c = replicaset::ReplicaSetController::new(client.clone(), rs.cache(), pods.cache());
        c.attach(rs, pods);
        starts.push(Box::new(move |set| {
            spawn_workers(set, c.queue.clone(), 4, "replicaset", move |k| c.clone().sync(k))
        }));
    }
    if let (Some(d), Some(rs), Some(pods)) = (&deps, &rs, &pods) {
        let c = deployment::DeploymentController::new(client.clone(), d.cache(), rs.cache(), pods.cache());
        c.attach(d, rs, pods);
        starts.push(Box::new(move |set| {
            spawn_workers(set, c.queue.clone(), 4, "deployment", move |k| c.clone().sync(k))
        }));
    }
    if let (true, Some(pods), Some(nodes)) = (on("scheduler"), &pods, &nodes) {
        let c = scheduler::Scheduler::new(client.clone(), pods.cache(), nodes.cache());
        c.attach(pods, nodes);
        starts
            .push(Box::new(move |set| spawn_workers(set, c.queue.clone(), 1, "scheduler", move |k| c.clone().sync(k))));
    }
    if let (true, Some(nodes)) = (on("nodeipam"), &nodes) {
        let c = nodeipam::NodeIpam::new(client.clone(), nodes.cache(), config.cluster_cidr);
        c.attach(nodes);
        starts
            .push(Box::new(move |set| spawn_workers(set, c.queue.clone(), 1, "nodeipam", move |k| c.clone().sync(k))));
    }
    if let (Some(nss), Some(sas)) = (&nss, &sas) {
        let c = serviceaccount::ServiceAccountsController::new(client.clone(), nss.cache(), sas.cache());
        c.attach(nss, sas);
        starts.push(Box::new(move |set| {
            spawn_workers(set, c.queue.clone(), 2, "serviceaccount", move |k| c.clone().sync(k))
        }));
    }
    if let (Some(nss), Some(cms), Some(ca)) = (&nss, &cms, config.root_ca.clone().filter(|_| publish_ca)) {
        let c = serviceaccount::RootCaPublisher::new(client.clone(), nss.cache(), cms.cache(), ca);
        c.attach(nss, cms);
        starts.push(Box::new(move |set| {
            spawn_workers(set, c.queue.clone(), 2, "root-ca-certificate-publisher", move |k| c.clone().sync(k))
        }));
    }
    if let (true, Some(nss)) = (on("namespace"), &nss) {
        let c = namespace::NamespaceController::new(client.clone(), nss.cache());
        c.attach(nss);
        starts
            .push(Box::new(move |set| spawn_workers(set, c.queue.clone(), 2, "namespace", move |k| c.clone().sync(k))));
    }
    let mut gc_informers = Vec::new();
    if on("garbagecollector") {
        let g = gc::GarbageCollector::new(client.clone());
        gc_informers = g.informers();
        let g2 = g.clone();
        starts.push(Box::new(move |set| {
            spawn_workers(set, g.delete_queue.clone(), 4, "garbagecollector", move |k| g.clone().attempt_to_delete(k));
            spawn_workers(set, g2.orphan_queue.clone(), 2, "garbagecollector-orphan", move |k| {
                g2.clone().attempt_to_orphan(k)
            });
        }));
    }

    // Start the watches, wait for the caches (bounded), then the workers.
    let mut waits: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
    macro_rules! start {
        ($inf:expr) => {
            if let Some(i) = $inf.clone() {
                set.spawn(i.clone().run());
                waits.push(Box::pin(async move { i.wait_synced().await }));
            }
        };
    }
    start!(pods);
    start!(services);
    start!(nodes);
    start!(slices);
    start!(endpoints);
    start!(rs);
    start!(deps);
    start!(nss);
    start!(sas);
    start!(cms);
    for i in gc_informers {
        set.spawn(i.clone().run());
        waits.push(Box::pin(async move { i.wait_synced().await }));
    }
    if tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(waits)).await.is_err() {
        tracing::warn!("some caches did not sync within 30s; starting controllers anyway");
    }
    for s in starts {
        s(&mut set);
    }
    tracing::info!("controllers started");
    set
}
