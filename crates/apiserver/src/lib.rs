//! The Kubernetes REST API over Yard's store: discovery, OpenAPI v2 and v3, CRUD with optimistic
//! concurrency, JSON/merge/strategic/apply patches, watches with bookmarks and watch-list,
//! server-side Tables, `Status` errors, HTTPS with bearer-token authentication (the admin token,
//! `--token-auth-file`, ServiceAccount JWTs: TokenRequest, ServiceAccount admission, OIDC
//! discovery; impersonation) and RBAC authorization (`auth::rbac`: the authorizer over a watched
//! policy index, escalation prevention, the bootstrap policy), Service address allocation, and the
//! forwarding of pod exec/log streams to node agents. Everything else in
//! Yard is a client of this API.

#![forbid(unsafe_code)]
// `ApiError` is a whole upstream Status (message, details, a list's continue token): it is built
// once per failed request, so its size on the error path costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

pub mod auth;
mod codec;
pub mod consistency;
mod delete_result;
mod discovery;
pub mod events;
mod handlers;
mod managed;
pub mod metrics;
pub mod mirror;
pub mod negotiate;
pub mod nodeproxy;
pub mod objects;
mod openapi;
mod openapi_v2;
pub mod protected;
mod protobuf;
mod protobuf_encode;
pub mod registry;
mod render;
pub mod request;
pub mod rest;
pub mod sa_admission;
pub mod server;
pub mod services;
pub mod status;
#[cfg(test)]
mod testutil;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use yard_store::DynStore;

pub use nodeproxy::AGENT_ENDPOINT_ANNOTATION;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("setup: {0}")]
    Setup(String),
    #[error("store: {0}")]
    Store(#[from] yard_store::StoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared state of one API server process.
pub struct State {
    pub store: DynStore,
    pub tokens: Vec<String>,
    /// Who a request's bearer token belongs to.
    pub authn: Box<dyn auth::Authenticator>,
    /// This cluster's ServiceAccount tokens: issued by TokenRequest, accepted after `authn`.
    pub sa: auth::serviceaccount::ServiceAccountAuthenticator,
    /// The cluster CA (PEM) that `kube-root-ca.crt` publishes.
    pub root_ca: String,
    /// What each user may do; every resource and non-resource request consults it.
    pub authz: Box<dyn auth::Authorizer>,
    pub alloc: Arc<services::Allocator>,
    pub metrics: metrics::Metrics,
    /// Namespaces by key, each as "being terminated", for the create path's namespace check.
    pub namespaces: mirror::Mirror<bool>,
}

impl State {
    /// The user of a bearer token and the audiences it was accepted for (`requested`, or the API
    /// server's audiences when empty): the static tokens first, then ServiceAccount tokens.
    pub async fn authenticate_token(
        &self,
        token: &str,
        requested: &[String],
    ) -> Result<(auth::UserInfo, Vec<String>), auth::serviceaccount::TokenError> {
        if let Some(u) = self.authn.authenticate_token(token) {
            let auds = if requested.is_empty() { self.sa.issuer.api_audiences.clone() } else { requested.to_vec() };
            return Ok((u, auds));
        }
        self.sa.authenticate(token, requested).await
    }
}

/// `yard apiserver` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Directory for the store, certificates and the kubeconfig.
    #[arg(long, default_value = "/var/lib/yard")]
    pub data_dir: PathBuf,
    /// HTTPS port (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Address published in the `kubernetes` Service's endpoints (defaults to --bind).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Service ClusterIP ranges (one per family, comma-separated).
    #[arg(long, default_value = "10.96.0.0/12", value_delimiter = ',')]
    pub service_cidr: Vec<ipnet::IpNet>,
    /// NodePort range.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Pool for LoadBalancer ingress IPs.
    #[arg(long, default_value = "172.18.255.0/24")]
    pub lb_cidr: ipnet::Ipv4Net,
    /// Storage backend: omitted (or `embedded`) for the embedded store in the data dir, or
    /// `etcd://host:port[,host:port...]` for an etcd v3 cluster that several API servers may share.
    #[arg(long)]
    pub store: Option<String>,
    /// CA bundle to verify etcd members (turns on TLS to etcd).
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd (mutual TLS).
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd (mutual TLS).
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// Prefix prepended to every etcd key (Yard's keys already start with /registry/).
    #[arg(long, default_value = "")]
    pub etcd_prefix: String,
    /// How often to compact etcd history, in seconds (0: never; kube-apiserver's default is 300).
    #[arg(long, default_value_t = 300)]
    pub etcd_compaction_interval: u64,
    /// Extra names or IPs for the serving certificate.
    #[arg(long, value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Cluster name used in the kubeconfig.
    #[arg(long, default_value = "yard")]
    pub cluster_name: String,
    /// Static bearer tokens, as kube-apiserver's flag: a CSV file of `token,user,uid` and
    /// optionally `"group1,group2"`.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// The `iss` of ServiceAccount tokens (and the OIDC discovery issuer).
    #[arg(long, default_value = auth::serviceaccount::DEFAULT_ISSUER)]
    pub service_account_issuer: String,
    /// Audiences the API server accepts tokens for (default: the issuer).
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/yard"),
            port: 6443,
            bind: "127.0.0.1".parse().expect("ip"),
            advertise_address: None,
            service_cidr: vec!["10.96.0.0/12".parse().expect("cidr")],
            service_node_port_range: "30000-32767".into(),
            lb_cidr: "172.18.255.0/24".parse().expect("cidr"),
            store: None,
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            etcd_prefix: String::new(),
            etcd_compaction_interval: 300,
            tls_san: Vec::new(),
            cluster_name: "yard".into(),
            token_auth_file: None,
            service_account_issuer: auth::serviceaccount::DEFAULT_ISSUER.into(),
            api_audiences: Vec::new(),
        }
    }
}

/// A running API server.
pub struct Running {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub state: Arc<State>,
    pub identity: tls::Identity,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop accepting connections.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
    /// Serve the same API over another (already bound) listener, e.g. one inside a node namespace.
    pub fn serve_also(&self, listener: std::net::TcpListener) -> Result<(), Error> {
        let l = tokio::net::TcpListener::from_std(listener)?;
        let tls = tls::server_config(&self.identity)?;
        tokio::spawn(server::serve(self.state.clone(), l, tls, std::future::pending()));
        Ok(())
    }
}

fn parse_range(s: &str) -> Result<(u16, u16), Error> {
    let (a, b) = s.split_once('-').ok_or_else(|| Error::Setup(format!("bad port range {s}")))?;
    let a: u16 = a.trim().parse().map_err(|_| Error::Setup(format!("bad port range {s}")))?;
    let b: u16 = b.trim().parse().map_err(|_| Error::Setup(format!("bad port range {s}")))?;
    if a > b {
        return Err(Error::Setup(format!("bad port range {s}")));
    }
    Ok((a, b))
}

/// Open the store named by `--store` (embedded redb in the data dir by default, or etcd).
pub async fn open_store(args: &Args) -> Result<DynStore, Error> {
    match args.store.as_deref() {
        None | Some("") | Some("embedded") => {
            std::fs::create_dir_all(&args.data_dir)?;
            Ok(Arc::new(yard_store::RedbStore::open(&args.data_dir.join("store.redb"))?))
        }
        Some(url) if url.starts_with("etcd://") || url.starts_with("etcds://") => {
            let mut cfg = yard_store::EtcdConfig::from_url(url)?;
            if args.etcd_cafile.is_some() {
                cfg.ca_file = args.etcd_cafile.clone();
            }
            cfg.cert_file = args.etcd_certfile.clone();
            cfg.key_file = args.etcd_keyfile.clone();
            cfg.prefix = args.etcd_prefix.clone();
            cfg.compaction_interval = (args.etcd_compaction_interval > 0)
                .then(|| std::time::Duration::from_secs(args.etcd_compaction_interval));
            Ok(Arc::new(yard_store::EtcdStore::connect(cfg).await?))
        }
        Some(other) => {
            Err(Error::Setup(format!("unsupported store {other}: use `embedded` or etcd://host:port[,host:port...]")))
        }
    }
}

/// Start serving; returns once the listener is bound, bootstrap objects exist and the kubeconfig is written.
pub async fn start(args: Args) -> Result<Running, Error> {
    let store = open_store(&args).await?;
    start_with_store(args, store).await
}

pub async fn start_with_store(args: Args, store: DynStore) -> Result<Running, Error> {
    std::fs::create_dir_all(&args.data_dir)?;
    let mut sans = args.tls_san.clone();
    sans.push(args.bind.to_string());
    if let Some(a) = args.advertise_address {
        sans.push(a.to_string());
    }
    let first_ip = args.service_cidr.first().map(|n| services::nth_ip(n, 1).to_string());
    if let Some(ip) = &first_ip {
        sans.push(ip.clone());
    }
    let identity = tls::load_or_create(&args.data_dir, &sans)?;
    let alloc = services::Allocator::new(
        store.clone(),
        services::AllocConfig {
            service_cidrs: args.service_cidr.clone(),
            node_ports: parse_range(&args.service_node_port_range)?,
            lb_cidr: Some(args.lb_cidr),
        },
    );
    let namespaces = mirror::Mirror::start(
        store.clone(),
        &registry::find("", "v1", "namespaces").expect("namespaces").prefix(),
        rest::namespace_terminating,
    );
    let tokens = vec![identity.token.clone()];
    let mut authenticators: Vec<Box<dyn auth::Authenticator>> =
        vec![Box::new(auth::TokenAuthenticator::new(tokens.clone()))];
    if let Some(f) = &args.token_auth_file {
        authenticators.push(Box::new(auth::tokenfile::TokenFile::load(f).map_err(|e| Error::Setup(e.to_string()))?));
    }
    let authz = Box::new(auth::rbac::RbacAuthorizer::start(store.clone()));
    let sa_key = auth::serviceaccount::SigningKey::load_or_create(&args.data_dir).map_err(Error::Setup)?;
    let sa = auth::serviceaccount::ServiceAccountAuthenticator::new(
        auth::serviceaccount::Issuer::new(sa_key, &args.service_account_issuer, args.api_audiences.clone()),
        store.clone(),
    );
    let state = Arc::new(State {
        sa,
        root_ca: identity.ca_pem.clone(),
        store,
        authn: Box::new(auth::Chain { authenticators }),
        authz,
        tokens,
        alloc,
        metrics: Default::default(),
        namespaces,
    });
    // Allocations of stored Services are recorded; leaks from a crash are freed.
    tracing::debug!("adopting allocations");
    state.alloc.adopt_existing().await?;
    let freed = state.alloc.repair(60).await?;
    if freed > 0 {
        tracing::info!(freed, "repaired leaked service allocations");
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let addr = listener.local_addr()?;
    tracing::debug!(%addr, "bootstrapping");
    bootstrap(&state, &args, addr).await?;
    tracing::debug!("bootstrapped");
    let tls = tls::server_config(&identity)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(state.clone(), listener, tls, async move {
        let _ = stop_rx.await;
    }));
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let kubeconfig = args.data_dir.join("kubeconfig");
    tls::write_kubeconfig(
        &kubeconfig,
        &tls::kubeconfig(&identity, &format!("https://{host}:{}", addr.port()), &args.cluster_name),
    )?;
    Ok(Running { addr, kubeconfig, state, identity, stop: Some(stop_tx), task: Some(task) })
}

/// Create an object through the normal create path unless it exists.
pub async fn ensure(
    state: &Arc<State>,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    obj: Value,
) -> Result<(), Error> {
    let r = registry::by_kind(api_version, kind)
        .ok_or_else(|| Error::Setup(format!("unknown kind {api_version}/{kind}")))?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if state.store.get(&r.key(ns, &name)).await?.is_some() {
        return Ok(());
    }
    let body = serde_json::to_vec(&obj).unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static("kube-apiserver"));
    let t = server::Target { resource: r, namespace: ns.map(String::from), name: None, sub: None };
    let resp =
        rest::dispatch(state.clone(), http::Method::POST, t, rest::Params::default(), headers, body.into()).await;
    if !resp.status().is_success() && resp.status() != http::StatusCode::CONFLICT {
        let b = http_body_util::BodyExt::collect(resp.into_body()).await.map(|c| c.to_bytes()).unwrap_or_default();
        return Err(Error::Setup(format!("bootstrap {kind} {name}: {}", String::from_utf8_lossy(&b))));
    }
    Ok(())
}

/// The objects every cluster starts with: the four system namespaces and the `kubernetes` Service
/// (first service IP, 443) with endpoints at this API server.
async fn bootstrap(state: &Arc<State>, args: &Args, addr: SocketAddr) -> Result<(), Error> {
    tracing::debug!("namespaces");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(state, "v1", "Namespace", None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}})).await?;
    }
    tracing::debug!("rbac");
    auth::rbac::bootstrap::reconcile(state).await?;
    wait_for_policy(state).await?;
    let first = args.service_cidr.first().map(|n| services::nth_ip(n, 1).to_string()).unwrap_or_default();
    ensure(
        state,
        "v1",
        "Service",
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"clusterIP": first, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": addr.port()}], "sessionAffinity": "None", "type": "ClusterIP"}}),
    )
    .await?;
    let ip = args.advertise_address.unwrap_or(if addr.ip().is_unspecified() {
        "127.0.0.1".parse().expect("ip")
    } else {
        addr.ip()
    });
    tracing::debug!("endpoints");
    set_kubernetes_endpoints(state, ip, addr.port()).await
}

/// Wait (at most 10 s) until the authorizer's policy holds every RBAC object stored now, so the
/// first requests are decided on the bootstrap policy.
async fn wait_for_policy(state: &State) -> Result<(), Error> {
    let page = state.store.list(auth::rbac::PREFIX, None, None).await?;
    let want = page.items.iter().map(|kv| kv.mod_revision).max().unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state.authz.applied_revision().is_some_and(|r| r < want) {
        if std::time::Instant::now() > deadline {
            tracing::warn!(want, "rbac policy not indexed in time; serving anyway");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Point `default/kubernetes` Endpoints and EndpointSlice at `ip:port`.
pub async fn set_kubernetes_endpoints(state: &State, ip: IpAddr, port: u16) -> Result<(), Error> {
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                     "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    let fam = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                       "addressType": fam, "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    for (r, obj) in [
        (registry::find("", "v1", "endpoints"), eps),
        (registry::find("discovery.k8s.io", "v1", "endpointslices"), slice),
    ] {
        let r = r.expect("known resource");
        let key = r.key(Some("default"), "kubernetes");
        match state.store.get(&key).await? {
            Some(kv) => {
                let mut cur: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                let want_sub = if r.kind == "Endpoints" { obj["subsets"].clone() } else { obj["endpoints"].clone() };
                let field = if r.kind == "Endpoints" { "subsets" } else { "endpoints" };
                if cur[field] != want_sub || (r.kind == "EndpointSlice" && cur["ports"] != obj["ports"]) {
                    cur[field] = want_sub;
                    if r.kind == "EndpointSlice" {
                        cur["ports"] = obj["ports"].clone();
                    }
                    let _ = state
                        .store
                        .write(yard_store::Op::Update {
                            key,
                            value: serde_json::to_vec(&cur).unwrap_or_default().into(),
                            expect: Some(kv.mod_revision),
                        })
                        .await;
                }
            }
            None => {
                // Written by the API server itself, as upstream's endpoint reconciler does: a
                // loopback-only server is allowed to advertise itself here.
                let mut obj = obj;
                obj["metadata"]["uid"] = json!(crate::objects::new_uid());
                obj["metadata"]["creationTimestamp"] = json!(objects::now_rfc3339());
                let _ = state
                    .store
                    .write(yard_store::Op::Create { key, value: serde_json::to_vec(&obj).unwrap_or_default().into() })
                    .await;
            }
        }
    }
    Ok(())
}

/// `yard apiserver`: serve until SIGINT/SIGTERM.
pub async fn run(args: Args) -> Result<(), Error> {
    let running = start(args).await?;
    tracing::info!(addr = %running.addr, kubeconfig = %running.kubeconfig.display(), "serving");
    eprintln!("yard apiserver serving on https://{} (kubeconfig: {})", running.addr, running.kubeconfig.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    running.shutdown().await;
    Ok(())
}
