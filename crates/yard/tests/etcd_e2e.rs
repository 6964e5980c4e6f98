//! Issue 8 acceptance: several `yard apiserver` processes on one real 3-member etcd cluster, with
//! leader-elected controllers (in an API server's process and standalone `yard controllers`); failures of an etcd member, an API server and the leading
//! controller manager; watches across an etcd compaction.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Node, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use yard_store::local_etcd::LocalEtcd;

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// A `yard controllers` child, killed by PID on drop.
struct Controllers {
    child: Option<Child>,
    identity: String,
}

impl Controllers {
    fn start(kubeconfig: &Path, identity: &str, log: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_yard"))
            .args(["controllers", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--controllers", "endpoint,endpointslice", "--leader-elect-identity", identity])
            .args([
                "--leader-elect-lease-duration",
                "2",
                "--leader-elect-renew-deadline",
                "1.5",
                "--leader-elect-retry-period",
                "0.25",
            ])
            .env("YARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn yard controllers");
        Self { child: Some(child), identity: identity.to_string() }
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    f: impl FnMut() -> F,
) -> T {
    yard_test_support::until_async(within, what, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apiservers_share_objects_watches_and_allocations() {
    let etcd = LocalEtcd::start(3).expect("start etcd");
    let (da, db) = (TempDir::new("etcd-a"), TempDir::new("etcd-b"));
    let a = ApiServer::start(&da.0, &["--store", &etcd.url()]);
    let b = ApiServer::start(&db.0, &["--store", &etcd.url()]);

    // kubectl against either server sees the same objects.
    a.k(&["create", "configmap", "shared", "--from-literal=k=v"]);
    assert_eq!(b.k(&["get", "configmap", "shared", "-o", "jsonpath={.data.k}"]), "v");
    b.k(&["label", "configmap", "shared", "by=b"]);
    let rv_a = a.k(&["get", "configmap", "shared", "-o", "jsonpath={.metadata.resourceVersion}"]);
    let rv_b = b.k(&["get", "configmap", "shared", "-o", "jsonpath={.metadata.resourceVersion}"]);
    assert_eq!(rv_a, rv_b);
    assert_eq!(a.k(&["get", "configmap", "shared", "-o", "jsonpath={.metadata.labels.by}"]), "b");

    // A watch on one server sees writes through the other.
    let (ca, cb) = (client(&a.kubeconfig).await, client(&b.kubeconfig).await);
    let cms_b: Api<ConfigMap> = Api::namespaced(cb.clone(), "default");
    let list = cms_b.list(&ListParams::default()).await.unwrap();
    let mut w =
        cms_b.watch(&WatchParams::default(), list.metadata.resource_version.as_deref().unwrap()).await.unwrap().boxed();
    let cms_a: Api<ConfigMap> = Api::namespaced(ca.clone(), "default");
    cms_a.create(&PostParams::default(), &obj(serde_json::json!({"metadata": {"name": "via-a"}}))).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.try_next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&ev, WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("via-a")), "{ev:?}");

    // 1,000 Services created concurrently through both servers get 1,000 distinct ClusterIPs.
    let t = Instant::now();
    let svc_a: Api<Service> = Api::namespaced(ca, "default");
    let svc_b: Api<Service> = Api::namespaced(cb, "default");
    let ips: Vec<String> = futures::stream::iter(0..1000)
        .map(|i| {
            let api = if i % 2 == 0 { svc_a.clone() } else { svc_b.clone() };
            async move {
                let s: Service =
                    obj(serde_json::json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}}));
                let created =
                    api.create(&PostParams::default(), &s).await.unwrap_or_else(|e| panic!("create s{i}: {e}"));
                created.spec.unwrap().cluster_ip.unwrap()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let created_in = t.elapsed();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 1000, "duplicate ClusterIPs");
    // And what is stored agrees, seen through either server.
    let stored: BTreeSet<String> = svc_a
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.metadata.name.as_deref() != Some("kubernetes"))
        .map(|s| s.spec.unwrap().cluster_ip.unwrap())
        .collect();
    assert_eq!(stored.len(), 1000);
    assert_eq!(stored, ips.iter().cloned().collect::<BTreeSet<_>>());
    eprintln!("1000 Services through 2 API servers on 3-member etcd: {created_in:?}");
}

/// Two API servers with the same extra flags on a one-member etcd (stopped in that order).
struct TwoServers {
    clients: [kube::Client; 2],
    _servers: [ApiServer; 2],
    _dirs: [TempDir; 2],
    _etcd: LocalEtcd,
}

impl TwoServers {
    async fn start(tag: &str, flags: &[&str]) -> Self {
        let etcd = LocalEtcd::start(1).expect("start etcd");
        let dirs = [TempDir::new(&format!("{tag}-a")), TempDir::new(&format!("{tag}-b"))];
        let url = etcd.url();
        let mut args = vec!["--store", url.as_str()];
        args.extend(flags);
        let servers = [ApiServer::start(&dirs[0].0, &args), ApiServer::start(&dirs[1].0, &args)];
        let clients = [client(&servers[0].kubeconfig).await, client(&servers[1].kubeconfig).await];
        Self { clients, _servers: servers, _dirs: dirs, _etcd: etcd }
    }

    /// Services of `default`, through each server.
    fn services(&self) -> [Api<Service>; 2] {
        [Api::namespaced(self.clients[0].clone(), "default"), Api::namespaced(self.clients[1].clone(), "default")]
    }
}

/// Two API servers racing for the 29 free ClusterIPs of a /27 (.1 is the `kubernetes`
/// Service's): each often picks an address the other is writing, so creates go through the retry
/// that restores the Service's spec and picks again. No address is given twice, no failed attempt
/// leaves a key behind (the range then fills to exactly 29), and no retry sees its own earlier
/// pick as a requested address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apiservers_racing_for_a_small_range_allocate_each_address_once() {
    let two = TwoServers::start("race", &["--service-cidr", "10.97.0.0/27"]).await;
    let apis = two.services();
    let create = |api: Api<Service>, name: String| async move {
        let s: Service = obj(serde_json::json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}));
        api.create(&PostParams::default(), &s).await.map(|c| c.spec.unwrap().cluster_ip.unwrap())
    };
    let burst: Vec<_> = futures::stream::iter(0..40)
        .map(|i| create(apis[i % 2].clone(), format!("r{i}")))
        .buffer_unordered(40)
        .collect()
        .await;
    let mut ips = BTreeSet::new();
    let mut failed = 0;
    for r in burst {
        match r {
            Ok(ip) => assert!(ips.insert(ip.clone()), "{ip} given twice"),
            Err(kube::Error::Api(e)) => {
                assert!(!e.message.contains("already allocated"), "a retry kept its earlier pick: {}", e.message);
                assert!(
                    (e.code == 422 && e.message.contains("range is full")) || e.code == 409,
                    "{} {}",
                    e.code,
                    e.message
                );
                failed += 1;
            }
            Err(e) => panic!("create: {e}"),
        }
    }
    assert_eq!(ips.len() + failed, 40);
    eprintln!("burst of 40 through 2 API servers: {} created, {failed} refused", ips.len());
    // One at a time, the rest of the range fills up, to exactly 29 addresses.
    for i in 0.. {
        match create(apis[i % 2].clone(), format!("f{i}")).await {
            Ok(ip) => assert!(ips.insert(ip.clone()), "{ip} given twice"),
            Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("range is full") => break,
            Err(e) => panic!("sequential create: {e}"),
        }
        assert!(i < 40, "more addresses than a /27 has");
    }
    assert_eq!(ips.len(), 29, "{ips:?}");
    // Hosts of 10.97.0.0/27 other than the `kubernetes` Service's .1: .2 to .30.
    assert!(
        ips.iter()
            .all(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| matches!(ip.octets(), [10, 97, 0, 2..=30]))),
        "{ips:?}"
    );
    let stored: BTreeSet<String> = apis[1]
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.metadata.name.as_deref() != Some("kubernetes"))
        .map(|s| s.spec.unwrap().cluster_ip.unwrap())
        .collect();
    assert_eq!(stored, ips);
}

/// Two API servers turning ClusterIP Services into NodePort ones at once, in a range of 10 ports.
/// Neither watches the other's allocations, so many picks are already taken: the update picks
/// again from a fresh listing instead of answering 409, every update succeeds, each port is given
/// once (the lower ports too, which dynamic picks use last), and the eleventh finds the range full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apiservers_changing_services_to_nodeport_in_a_small_range() {
    let two = TwoServers::start("np", &["--service-node-port-range", "30000-30009"]).await;
    let apis = two.services();
    for i in 0..11 {
        let s: Service =
            obj(serde_json::json!({"metadata": {"name": format!("np{i}")}, "spec": {"ports": [{"port": 80}]}}));
        apis[0].create(&PostParams::default(), &s).await.unwrap();
    }
    // A PUT of the whole object (as `kubectl replace` or `kubectl edit`), which the server does
    // not retry on a conflict the way it retries a PATCH.
    let to_nodeport = |api: Api<Service>, name: String| async move {
        let mut s = api.get(&name).await?;
        s.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        api.replace(&name, &PostParams::default(), &s)
            .await
            .map(|s| s.spec.unwrap().ports.unwrap()[0].node_port.unwrap())
    };
    let all: Vec<_> = futures::stream::iter(0..10)
        .map(|i| to_nodeport(apis[i % 2].clone(), format!("np{i}")))
        .buffer_unordered(10)
        .collect()
        .await;
    let mut ports = BTreeSet::new();
    for r in all {
        let p = r.unwrap_or_else(|e| panic!("update to NodePort: {e}"));
        assert!((30000..=30009).contains(&p), "{p}");
        assert!(ports.insert(p), "{p} given twice");
    }
    assert_eq!(ports.len(), 10);
    for api in &apis {
        match to_nodeport(api.clone(), "np10".into()).await {
            Err(kube::Error::Api(e)) => {
                assert!(e.code == 422 && e.message.contains("range is full"), "{} {}", e.code, e.message)
            }
            other => panic!("an eleventh NodePort in a range of 10: {other:?}"),
        }
    }
    let stored: BTreeSet<i32> = apis[1]
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.spec?.ports?.first()?.node_port)
        .collect();
    assert_eq!(stored, ports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_of_etcd_member_apiserver_and_leader_lose_nothing() {
    let mut etcd = LocalEtcd::start(3).expect("start etcd");
    let (da, db) = (TempDir::new("fo-a"), TempDir::new("fo-b"));
    // Server A also runs the controllers in-process (`yard apiserver --controllers`); it starts
    // first, so they lead. Standalone managers "x" and "y" wait on server B.
    let lease_flags = [
        "--leader-elect-lease-duration",
        "2",
        "--leader-elect-renew-deadline",
        "1.5",
        "--leader-elect-retry-period",
        "0.25",
    ];
    let url = etcd.url();
    let mut a_args = vec!["--store", url.as_str(), "--controllers"];
    a_args.extend(lease_flags);
    let mut a = ApiServer::start(&da.0, &a_args);
    let b = ApiServer::start(&db.0, &["--store", &etcd.url()]);
    let (ca, cb) = (client(&a.kubeconfig).await, client(&b.kubeconfig).await);
    let leases: Api<Lease> = Api::namespaced(cb.clone(), "kube-system");
    let holder = |leases: Api<Lease>| async move {
        leases.get_opt("yard-controller-manager").await.ok().flatten().and_then(|l| l.spec?.holder_identity)
    };
    let first = wait_for("server A's controllers to lead", Duration::from_secs(20), || {
        let l = leases.clone();
        async move { holder(l).await }
    })
    .await;
    let mut cms = [
        Controllers::start(&b.kubeconfig, "x", &db.0.join("cm-x.log")),
        Controllers::start(&b.kubeconfig, "y", &db.0.join("cm-y.log")),
    ];

    // A node, a Service and three pods whose status a node agent would write.
    let nodes: Api<Node> = Api::all(cb.clone());
    nodes.create(&PostParams::default(), &obj(serde_json::json!({"metadata": {"name": "node-1"}}))).await.unwrap();
    let svcs: Api<Service> = Api::namespaced(cb.clone(), "default");
    svcs.create(&PostParams::default(), &obj(serde_json::json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}))).await.unwrap();
    let pods_b: Api<Pod> = Api::namespaced(cb.clone(), "default");
    for i in 0..3 {
        pods_b
            .create(&PostParams::default(), &obj(serde_json::json!({"metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}}, "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}})))
            .await
            .unwrap();
    }
    let set_ready = |pods: Api<Pod>, i: usize, ready: bool| async move {
        let st = if ready { "True" } else { "False" };
        let ip = format!("10.244.0.{}", 10 + i);
        let patch = serde_json::json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "172.18.0.2",
            "conditions": [{"type": "ContainersReady", "status": st}, {"type": "Ready", "status": st}]}});
        pods.patch_status(&format!("web-{i}"), &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    };
    let eps: Api<Endpoints> = Api::namespaced(cb.clone(), "default");
    let ready_ips = |eps: Api<Endpoints>| async move {
        let ep = eps.get_opt("web").await.ok().flatten()?;
        let mut ips: Vec<String> =
            ep.subsets.iter().flatten().flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone())).collect();
        ips.sort();
        Some(ips)
    };
    let expect = |want: &[usize]| want.iter().map(|i| format!("10.244.0.{}", 10 + i)).collect::<Vec<_>>();
    async fn follow(
        what: &str,
        eps: &Api<Endpoints>,
        want: Vec<String>,
        ready_ips: impl Fn(
            Api<Endpoints>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<String>>> + Send>>,
    ) {
        let t = Instant::now();
        wait_for(what, Duration::from_secs(20), || {
            let f = ready_ips(eps.clone());
            let want = want.clone();
            async move { (f.await? == want).then_some(()) }
        })
        .await;
        eprintln!("{what}: endpoints followed in {:?}", t.elapsed());
    }
    let ready_ips =
        move |e: Api<Endpoints>| -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<String>>> + Send>> {
            Box::pin(ready_ips(e))
        };
    for i in 0..3 {
        set_ready(pods_b.clone(), i, true).await.unwrap();
    }
    follow("start", &eps, expect(&[0, 1, 2]), &ready_ips).await;

    // A writer through both servers for the whole run; every acknowledged write must survive.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (ca, cb, stop) = (ca.clone(), cb.clone(), stop.clone());
        tokio::spawn(async move {
            let apis: [Api<ConfigMap>; 2] = [Api::namespaced(ca, "default"), Api::namespaced(cb, "default")];
            let mut acked = Vec::new();
            let mut failed_on_b = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("w-{i}");
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    apis[i % 2].create(
                        &PostParams::default(),
                        &obj(serde_json::json!({"metadata": {"name": name}, "data": {"i": i.to_string()}})),
                    ),
                )
                .await;
                match r {
                    Ok(Ok(cm)) => acked.push((name, cm.metadata.resource_version.unwrap())),
                    Ok(Err(e)) if i % 2 == 1 => failed_on_b.push(format!("{name}: {e}")),
                    Err(_) if i % 2 == 1 => failed_on_b.push(format!("{name}: timed out")),
                    _ => {}
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acked, i, failed_on_b)
        })
    };

    // 1. An etcd member dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.kill(0);
    set_ready(pods_b.clone(), 1, false).await.unwrap();
    follow("etcd member killed", &eps, expect(&[0, 2]), &ready_ips).await;

    // 2. API server A dies, and with it the leader's connection: x or y takes over.
    a.kill9();
    let t = Instant::now();
    let new_leader = wait_for("a standby to lead", Duration::from_secs(10), || {
        let (l, first) = (leases.clone(), first.clone());
        async move { holder(l).await.filter(|h| *h != first) }
    })
    .await;
    eprintln!("leadership moved {first} -> {new_leader} in {:?}", t.elapsed());
    set_ready(pods_b.clone(), 1, true).await.unwrap();
    set_ready(pods_b.clone(), 0, false).await.unwrap();
    follow("API server killed", &eps, expect(&[1, 2]), &ready_ips).await;

    // 3. The leading controller manager dies (SIGKILL: no release); the other standby takes over.
    let idx = cms.iter().position(|c| c.identity == new_leader).unwrap();
    cms[idx].kill9();
    let t = Instant::now();
    let third = wait_for("the last standby to lead", Duration::from_secs(10), || {
        let (l, nl, first) = (leases.clone(), new_leader.clone(), first.clone());
        async move { holder(l).await.filter(|h| *h != nl && *h != first) }
    })
    .await;
    eprintln!("leadership moved {new_leader} -> {third} in {:?} (lease 2 s)", t.elapsed());
    set_ready(pods_b.clone(), 0, true).await.unwrap();
    set_ready(pods_b.clone(), 2, false).await.unwrap();
    follow("leader killed", &eps, expect(&[0, 1]), &ready_ips).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, tried, failed_on_b) = writer.await.unwrap();
    let cms_b: Api<ConfigMap> = Api::namespaced(cb.clone(), "default");
    let stored: std::collections::BTreeMap<String, String> = cms_b
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| (c.metadata.name.unwrap(), c.metadata.resource_version.unwrap()))
        .collect();
    for (name, rv) in &acked {
        assert_eq!(stored.get(name), Some(rv), "acknowledged write {name} lost or changed");
    }
    eprintln!(
        "{} of {tried} writes acknowledged, all present; failed through the surviving server B: {failed_on_b:?}",
        acked.len()
    );
    assert!(acked.len() > tried / 3, "too few writes succeeded: {} of {tried}", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_across_compaction_gets_410_and_relists() {
    let etcd = LocalEtcd::start(1).expect("start etcd");
    let d = TempDir::new("compact");
    let api = ApiServer::start(&d.0, &["--store", &etcd.url()]);
    let c = client(&api.kubeconfig).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    cms.create(&PostParams::default(), &obj(serde_json::json!({"metadata": {"name": "before"}}))).await.unwrap();
    let old_rv = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    for i in 0..5 {
        cms.create(&PostParams::default(), &obj(serde_json::json!({"metadata": {"name": format!("c{i}")}})))
            .await
            .unwrap();
    }
    // Compact etcd with its own tool, to the current revision.
    let head = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoints().join(","), "compact", &head])
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl compact: {}", String::from_utf8_lossy(&out.stderr));

    // Resuming the watch from before the compaction: 410 Gone.
    let gone = match cms.watch(&WatchParams::default(), &old_rv).await {
        Err(kube::Error::Api(s)) => s.code,
        Ok(s) => match s.boxed().try_next().await {
            Ok(Some(WatchEvent::Error(e))) => e.code,
            other => panic!("expected 410, got {other:?}"),
        },
        Err(e) => panic!("{e}"),
    };
    assert_eq!(gone, 410);
    // The client re-lists and watches on from the new list's revision.
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 6);
    let mut w =
        cms.watch(&WatchParams::default(), list.metadata.resource_version.as_deref().unwrap()).await.unwrap().boxed();
    cms.create(&PostParams::default(), &obj(serde_json::json!({"metadata": {"name": "after"}}))).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.try_next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&ev, WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("after")), "{ev:?}");
    // kube-rs's watcher (what every Yard component uses) handles it the same way end to end.
    let mut stream = kube::runtime::watcher(cms.clone(), kube::runtime::watcher::Config::default()).boxed();
    let mut names = BTreeSet::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap() {
        match ev {
            kube::runtime::watcher::Event::InitApply(cm) => {
                names.insert(cm.metadata.name.unwrap());
            }
            kube::runtime::watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names.len(), 7);
}
