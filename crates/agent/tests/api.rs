//! The agent against the real API server (in-process, its own data dir): Node registration and
//! Lease, pod start from the API with status written through pods/status, Service environment
//! variables (the pod's namespace plus default/kubernetes, only the latter without service links),
//! logs and exec forwarded by the API server, and graceful deletion finished by the agent's
//! grace-0 DELETE once the sandbox is gone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{AttachParams, DeleteParams, LogParams, Patch, PatchParams, PostParams};
use kube::Api;
use tokio::io::AsyncReadExt;
use yard_agent::{Agent, AgentConfig};
use yard_test_support::{until_async, TempDir};

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[test]
fn agent_with_api_server() {
    yard_test_support::require_root("network namespaces, pod sandboxes");
    let dir = TempDir::new("agent-api");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(run(dir.path().to_path_buf()))));
    // The runtime goes first: after a failure the agent's tasks would otherwise still be writing
    // under `dir` while it is removed.
    rt.shutdown_timeout(Duration::from_secs(10));
    drop(dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn run(dir: PathBuf) {
    let (api, client) = yard_test_support::apiserver::start_in(&dir.join("api")).await;

    let node_ns = yard_test_support::TempNetns::new("yat-api").expect("node netns");
    let mut cfg = AgentConfig::new("node-a");
    cfg.netns = Some(node_ns.path().to_path_buf());
    cfg.state_dir = dir.join("agent");
    cfg.node_ip = Some("192.0.2.10".parse().unwrap());
    cfg.netns_prefix = format!("yatapi{}", std::process::id() % 10000);
    cfg.exe = PathBuf::from(env!("CARGO_BIN_EXE_yard-agent-builtin"));
    cfg.kill_pods_on_exit = true;
    let prefix = cfg.netns_prefix.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(Agent::new(client.clone(), cfg).run(async {
        let _ = stop_rx.await;
    }));
    struct Guard(String, PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.1);
            for e in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&self.0) {
                    yard_agent::net::kill_processes_in_netns(&e.path());
                    let _ = yard_netns::delete(&n);
                }
            }
        }
    }
    let _guard = Guard(prefix.clone(), dir.clone());

    // Node and Lease.
    let nodes: Api<Node> = Api::all(client.clone());
    let node =
        until_async(Duration::from_secs(10), "node", || async { nodes.get_opt("node-a").await.ok().flatten() }).await;
    let ann = node.metadata.annotations.clone().unwrap_or_default();
    assert!(ann.get("yard.dev/agent-endpoint").is_some_and(|e| e.starts_with("127.0.0.1:")), "{ann:?}");
    let st = node.status.clone().unwrap();
    assert!(st.addresses.unwrap().iter().any(|a| a.type_ == "InternalIP" && a.address == "192.0.2.10"));
    assert!(st.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert_eq!(st.capacity.unwrap()["pods"].0, "110");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease =
        until_async(Duration::from_secs(10), "lease", || async { leases.get_opt("node-a").await.ok().flatten() }).await;
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("node-a"));

    // What node IPAM would do.
    nodes
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"podCIDR": "10.244.11.0/24", "podCIDRs": ["10.244.11.0/24"]}})),
        )
        .await
        .unwrap();

    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({"metadata": {"name": "web-svc"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9376}]}}))
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let svc_ip = svc.spec.unwrap().cluster_ip.unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hostnames-x"},
        "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 5, "containers": [{
            "name": "serve", "image": "registry.k8s.io/serve_hostname",
            "readinessProbe": {"httpGet": {"port": 9376}, "periodSeconds": 1}}]}
    }))
    .unwrap();
    let t0 = Instant::now();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let p = until_async(Duration::from_secs(30), "pod ready", || async {
        pods.get("hostnames-x").await.ok().filter(ready)
    })
    .await;
    eprintln!("pod ready after {:?}", t0.elapsed());
    let st = p.status.clone().unwrap();
    let ip: std::net::Ipv4Addr = st.pod_ip.clone().unwrap().parse().unwrap();
    assert!("10.244.11.0/24".parse::<ipnet::Ipv4Net>().unwrap().contains(&ip));
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.host_ip.as_deref(), Some("192.0.2.10"));
    let out = node_ns.sh(&format!("curl -sS --max-time 3 http://{ip}:9376/")).unwrap();
    assert_eq!(out, "hostnames-x");

    // Env vars (the pod was created after the Service) via exec through the API server.
    let mut ap = AttachParams::default().stderr(false);
    ap.container = Some("serve".into());
    let mut proc =
        pods.exec("hostnames-x", ["sh", "-c", "env | grep WEB_SVC | sort; exit 7"], &ap).await.expect("exec");
    let mut out = String::new();
    proc.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let status = proc.take_status().unwrap().await.unwrap();
    let want = format!(
        "WEB_SVC_PORT=tcp://{svc_ip}:80\nWEB_SVC_PORT_80_TCP=tcp://{svc_ip}:80\nWEB_SVC_PORT_80_TCP_ADDR={svc_ip}\n\
         WEB_SVC_PORT_80_TCP_PORT=80\nWEB_SVC_PORT_80_TCP_PROTO=tcp\nWEB_SVC_SERVICE_HOST={svc_ip}\n\
         WEB_SVC_SERVICE_PORT=80\nWEB_SVC_SERVICE_PORT_HTTP=80\n"
    );
    assert_eq!(out, want);
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(status.details.unwrap().causes.unwrap()[0].message.as_deref(), Some("7"));

    // The kubelet's rule for which Services a pod sees: those of its own namespace, plus the
    // master Service default/kubernetes always; with enableServiceLinks false, only the latter.
    let kube_ip = svcs.get("kubernetes").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    let other_svcs: Api<Service> = Api::namespaced(client.clone(), "other");
    let other_svc: Service = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "other-svc"}, "spec": {"ports": [{"port": 81}]}}),
    )
    .unwrap();
    let other_ip =
        other_svcs.create(&PostParams::default(), &other_svc).await.unwrap().spec.unwrap().cluster_ip.unwrap();
    let hosts_of = |ns: &'static str, name: &'static str, links: bool| {
        let client = client.clone();
        async move {
            let api: Api<Pod> = Api::namespaced(client, ns);
            let p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"nodeName": "node-a", "enableServiceLinks": links, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "registry.k8s.io/serve_hostname"}]}
            }))
            .unwrap();
            api.create(&PostParams::default(), &p).await.unwrap();
            until_async(Duration::from_secs(30), "pod running", || async {
                api.get(name)
                    .await
                    .ok()
                    .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            })
            .await;
            let mut proc = api
                .exec(name, ["sh", "-c", "env | grep _SERVICE_HOST= | sort"], &AttachParams::default().stderr(false))
                .await
                .expect("exec");
            let mut out = String::new();
            proc.stdout().unwrap().read_to_string(&mut out).await.unwrap();
            let _ = proc.join().await;
            api.delete(name, &DeleteParams::default()).await.unwrap();
            out
        }
    };
    assert_eq!(
        hosts_of("other", "in-other", true).await,
        format!("KUBERNETES_SERVICE_HOST={kube_ip}\nOTHER_SVC_SERVICE_HOST={other_ip}\n")
    );
    assert_eq!(hosts_of("default", "no-links", false).await, format!("KUBERNETES_SERVICE_HOST={kube_ip}\n"));

    // Events.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let evs = until_async(Duration::from_secs(10), "events", || async {
        let l = events.list(&Default::default()).await.ok()?;
        l.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Started") && e.involved_object.name.as_deref() == Some("hostnames-x"))
            .then_some(l)
    })
    .await;
    assert!(evs.items.iter().any(|e| e.reason.as_deref() == Some("Created")));

    // Logs through the API server.
    let logs =
        pods.logs("hostnames-x", &LogParams { container: Some("serve".into()), ..Default::default() }).await.unwrap();
    assert!(logs.contains("Serving on port 9376."), "{logs:?}");

    // Graceful delete: the agent stops the pod and removes the object with grace 0.
    let sb_ns = format!("{prefix}-{}", &p.metadata.uid.clone().unwrap()[..8]);
    assert!(yard_netns::exists(&sb_ns));
    pods.delete("hostnames-x", &DeleteParams::default()).await.unwrap();
    until_async(Duration::from_secs(20), "pod gone", || async {
        pods.get_opt("hostnames-x").await.ok().and_then(|p| p.is_none().then_some(()))
    })
    .await;
    if yard_netns::exists(&sb_ns) {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let lines: Vec<&str> = mi.lines().filter(|l| l.contains(&sb_ns)).collect();
        panic!(
            "netns {sb_ns} left after the pod was deleted; mounts: {lines:?}; dir: {:?}",
            std::fs::read_dir("/run/netns").unwrap().flatten().map(|e| e.file_name()).collect::<Vec<_>>()
        );
    }

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    api.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
