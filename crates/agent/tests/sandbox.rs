//! Pod sandboxes without an API server (root): a node namespace made by the test, pods with real
//! processes, curl across sandboxes, probes, restarts, exec and logs over the agent's HTTP server,
//! and a teardown that leaves nothing behind.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use yard_agent::dns::DnsSettings;
use yard_agent::image::ImageTable;
use yard_agent::net::NodeNet;
use yard_agent::pod::{ObjectSource, Runtime, RuntimeConfig};
use yard_agent::PodHandle;

struct Env {
    rt: Arc<Runtime>,
    node: yard_test_support::TempNetns,
    state: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        // On success the pods are gone already; on failure, kill and remove everything.
        for h in self.rt.pods() {
            if let Some(sb) = h.sandbox() {
                let _ = self.rt.net.delete_sandbox(&sb.netns, &sb.veth, h.uid());
            }
        }
        let prefix = format!("{}-", self.rt.cfg.netns_prefix);
        for e in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) {
                yard_agent::net::kill_processes_in_netns(&e.path());
                let _ = yard_netns::delete(&n);
            }
        }
        yard_agent::net::kill_processes_in_netns(self.node.path());
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn setup(tag: &str, cidr: &str) -> Env {
    yard_test_support::require_root("network namespaces, pod sandboxes");
    let node = yard_test_support::TempNetns::new(&format!("yat-{tag}")).expect("create node netns");
    let state = std::env::temp_dir().join(format!("yard-agent-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    let net = NodeNet { netns: node.path().to_path_buf(), cidr: cidr.parse().unwrap(), ipam_dir: state.join("ipam") };
    net.ensure_bridge().expect("bridge");
    let cfg = RuntimeConfig {
        node_name: "node-1".into(),
        netns_prefix: format!("yat{}{tag}", std::process::id() % 10000),
        state_dir: state.clone(),
        dns: DnsSettings {
            cluster_domain: "cluster.local".into(),
            cluster_dns: vec!["10.96.0.10".into()],
            host_resolv_conf: String::new(),
        },
        node_ip: net.gateway(),
        images: ImageTable {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_yard-agent-builtin")),
            state_dir: state.clone(),
            extra: vec![],
        },
        capacity: ("2".into(), "1Gi".into()),
    };
    let rt = Runtime::new(cfg, net, ObjectSource::Static(Default::default()));
    Env { rt, node, state }
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

async fn wait_status(h: &PodHandle, what: &str, secs: u64, f: impl Fn(&PodStatus) -> bool) -> PodStatus {
    let mut rx = h.status();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        {
            let s = rx.borrow_and_update().clone();
            if f(&s) {
                return s;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            panic!("timed out waiting for {what}; status: {}", serde_json::to_string_pretty(&*rx.borrow()).unwrap());
        }
    }
}

fn ready(s: &PodStatus) -> bool {
    s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn curl_in(ns: &std::path::Path, url: &str) -> String {
    yard_netns::output_in(ns, "curl", &["-sS", "--max-time", "3", url]).unwrap_or_else(|e| format!("ERR {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_lifecycle() {
    let env = setup("a", "10.244.7.0/24");
    let rt = env.rt.clone();
    let mk = |name: &str, uid: &str| {
        pod(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 2, "containers": [{
                "name": "serve", "image": "registry.k8s.io/serve_hostname:1.3",
                "readinessProbe": {"httpGet": {"path": "/", "port": 9376}, "periodSeconds": 1}
            }]}
        }))
    };
    let a = rt.sync_pod(mk("hostnames-a", "aaaaaaaa-1111-2222-3333-444444444444")).unwrap();
    let b = rt.sync_pod(mk("hostnames-b", "bbbbbbbb-1111-2222-3333-444444444444")).unwrap();
    let bad = rt
        .sync_pod(pod(serde_json::json!({
            "metadata": {"name": "unready", "namespace": "default", "uid": "cccccccc-1111-2222-3333-444444444444"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "readinessProbe": {"exec": {"command": ["sh", "-c", "exit 1"]}, "periodSeconds": 1},
            }]}
        })))
        .unwrap();
    let sa = wait_status(&a, "a ready", 20, ready).await;
    let sb = wait_status(&b, "b ready", 20, ready).await;
    let ip_a: Ipv4Addr = sa.pod_ip.clone().unwrap().parse().unwrap();
    let ip_b: Ipv4Addr = sb.pod_ip.clone().unwrap().parse().unwrap();
    let cidr: ipnet::Ipv4Net = "10.244.7.0/24".parse().unwrap();
    assert!(cidr.contains(&ip_a) && cidr.contains(&ip_b) && ip_a != ip_b);
    assert_eq!(sa.phase.as_deref(), Some("Running"));
    assert_eq!(sa.host_ip.as_deref(), Some("10.244.7.1"));
    let cs = &sa.container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready && cs.started == Some(true) && cs.container_id.as_deref().unwrap().starts_with("yard://"));

    // From the node namespace and from the other sandbox.
    assert_eq!(curl_in(env.node.path(), &format!("http://{ip_a}:9376/")), "hostnames-a");
    let b_ns = b.sandbox().unwrap().netns_path();
    assert_eq!(curl_in(&b_ns, &format!("http://{ip_a}:9376/")), "hostnames-a");
    let a_ns = a.sandbox().unwrap().netns_path();
    assert_eq!(curl_in(&a_ns, &format!("http://{ip_b}:9376/")), "hostnames-b");

    // Failing readiness probe: running but never Ready.
    wait_status(&bad, "unready running", 10, |s| s.phase.as_deref() == Some("Running")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = bad.status().borrow().clone();
    assert!(!ready(&s), "{s:?}");
    let c = s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "ContainersReady").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some("ContainersNotReady")));
    assert!(!s.container_statuses.as_ref().unwrap()[0].ready);

    // DNS files and hostname as the container sees them (exec joins its namespaces).
    let t = a.exec_target("serve").unwrap();
    let mut cmd = yard_agent::proc::exec_command(
        &t,
        &["sh".into(), "-c".into(), "hostname; cat /etc/resolv.conf; grep hostnames-a /etc/hosts".into()],
        false,
    )
    .unwrap();
    let out = cmd.output().await.unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.starts_with(
            "hostnames-a\nnameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local"
        ),
        "{out}"
    );
    assert!(out.contains(&format!("{ip_a}\thostnames-a")), "{out}");

    // SIGKILL: restarted, restartCount 1, serving again.
    let pid = a.pid("serve").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let s = wait_status(&a, "restart", 20, |s| {
        let c = &s.container_statuses.as_ref().unwrap()[0];
        c.restart_count == 1 && c.state.as_ref().unwrap().running.is_some() && c.ready
    })
    .await;
    let last = s.container_statuses.as_ref().unwrap()[0].last_state.as_ref().unwrap().terminated.clone().unwrap();
    assert_eq!((last.exit_code, last.signal), (137, Some(9)));
    assert_ne!(a.pid("serve"), Some(pid));
    let (prev, live) = a.log_file("serve", true).unwrap();
    assert!(!live && prev.ends_with("serve/0.log"), "{prev:?}");
    assert!(std::fs::read_to_string(&prev).unwrap().contains(" stderr F Serving on port 9376."));
    assert!(a.log_file("serve", false).unwrap().0.ends_with("serve/1.log"));
    assert_eq!(curl_in(env.node.path(), &format!("http://{ip_a}:9376/")), "hostnames-a");

    // The bridge keeps its own fixed address while ports come and go (a bridge left to itself
    // takes its lowest port's, which moves when that pod goes and strands its neighbours' ARP
    // entries for the gateway).
    let mac = yard_agent::net::bridge_mac("10.244.7.1".parse().unwrap());
    let bridge_mac = || env.node.sh("ip -o link show cni0").unwrap();
    assert!(bridge_mac().contains(&mac), "{} vs {mac}", bridge_mac());

    // Teardown leaves nothing.
    let pids: Vec<i32> = [&a, &b, &bad].iter().filter_map(|h| h.pid(&h.app_containers()[0])).collect();
    let names: Vec<String> = [&a, &b, &bad].iter().map(|h| h.sandbox().unwrap().netns).collect();
    let veths: Vec<String> = [&a, &b, &bad].iter().map(|h| h.sandbox().unwrap().veth).collect();
    for h in [&a, &b, &bad] {
        h.terminate(2);
    }
    for h in [&a, &b, &bad] {
        tokio::time::timeout(Duration::from_secs(15), h.wait_done()).await.expect("pod torn down");
    }
    for n in &names {
        assert!(!yard_netns::exists(n), "netns {n} left");
    }
    let links = env.node.sh("ip -o link show").unwrap();
    for v in &veths {
        assert!(!links.contains(v.as_str()), "veth {v} left: {links}");
    }
    assert!(rt.net.allocations().unwrap().is_empty(), "{:?}", rt.net.allocations());
    assert!(bridge_mac().contains(&mac), "bridge address moved: {}", bridge_mac());
    for p in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists() || yard_agent::proc::start_time(p).is_none(),
            "process {p} left"
        );
    }
    assert!(rt.pods().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_logs_and_images() {
    let env = setup("b", "10.244.8.0/24");
    let rt = env.rt.clone();
    let h = rt
        .sync_pod(pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "dddddddd-1111-2222-3333-444444444444"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "net", "image": "registry.k8s.io/e2e-test-images/agnhost:2.40",
                "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
                "env": [{"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
            }]}
        })))
        .unwrap();
    let missing = rt
        .sync_pod(pod(serde_json::json!({
            "metadata": {"name": "nope", "namespace": "ns1", "uid": "eeeeeeee-1111-2222-3333-444444444444"},
            "spec": {"containers": [{"name": "c", "image": "example.com/unknown:1"}]}
        })))
        .unwrap();
    let s = wait_status(&h, "netexec ready", 20, ready).await;
    let ip = s.pod_ip.unwrap();
    assert_eq!(curl_in(env.node.path(), &format!("http://{ip}:8080/hostname")), "web");
    assert_eq!(curl_in(env.node.path(), &format!("http://{ip}:8080/echo?msg=hi%20there")), "hi there");
    assert!(curl_in(env.node.path(), &format!("http://{ip}:8080/clientip")).starts_with("10.244.8.1:"));
    let web = rt
        .sync_pod(pod(serde_json::json!({
            "metadata": {"name": "nginx-0", "namespace": "ns1", "uid": "13131313-1111-2222-3333-444444444444"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "nginx", "image": "nginx:1.14.2",
                "ports": [{"containerPort": 80, "name": "http"}],
                "readinessProbe": {"httpGet": {"port": "http"}, "periodSeconds": 1}}]}
        })))
        .unwrap();
    let ws_ = wait_status(&web, "nginx ready", 20, ready).await;
    let page = curl_in(env.node.path(), &format!("http://{}/", ws_.pod_ip.unwrap()));
    assert!(page.contains("Welcome to nginx!"), "{page}");
    web.terminate(1);
    // hostNetwork: runs in the node namespace, hostname = node name, podIP = node IP.
    let hn = rt
        .sync_pod(pod(serde_json::json!({
            "metadata": {"name": "hostnet", "namespace": "ns1", "uid": "14141414-1111-2222-3333-444444444444"},
            "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1, "containers": [{"name": "n",
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.40", "args": ["netexec", "--http-port=18080", "--udp-port=0"],
                "readinessProbe": {"tcpSocket": {"port": 18080}, "periodSeconds": 1}}]}
        })))
        .unwrap();
    let hs = wait_status(&hn, "hostnet ready", 20, ready).await;
    assert_eq!(hs.pod_ip.as_deref(), Some("10.244.8.1"));
    assert_eq!(curl_in(env.node.path(), "http://127.0.0.1:18080/hostname"), "node-1");
    hn.terminate(1);
    tokio::time::timeout(Duration::from_secs(10), hn.wait_done()).await.expect("hostnet torn down");
    assert!(std::path::Path::new(env.node.path()).exists());
    assert!(env.node.sh("ip -o link show cni0").unwrap().contains("cni0"));
    assert!(std::fs::read_dir("/run/netns").is_ok());
    let ms = wait_status(&missing, "ErrImagePull", 10, |s| {
        s.container_statuses.iter().flatten().any(|c| {
            c.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                == Some("ErrImagePull")
        })
    })
    .await;
    assert_eq!(ms.phase.as_deref(), Some("Pending"));

    // Liveness failure restarts the container; init containers run first, in order.
    let mut events = rt.take_events().unwrap();
    let live = rt
        .sync_pod(pod(serde_json::json!({
            "metadata": {"name": "live", "namespace": "ns1", "uid": "12121212-1111-2222-3333-444444444444"},
            "spec": {"terminationGracePeriodSeconds": 1,
              "initContainers": [
                {"name": "i1", "image": "busybox", "command": ["sh", "-c", "echo one"]},
                {"name": "i2", "image": "busybox", "command": ["sh", "-c", "echo two"]}],
              "containers": [{
                "name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "livenessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1, "failureThreshold": 2}
            }]}
        })))
        .unwrap();
    let s = wait_status(&live, "liveness restart", 20, |s| {
        s.container_statuses.iter().flatten().any(|c| c.restart_count >= 1)
    })
    .await;
    let inits = s.init_container_statuses.clone().unwrap();
    assert!(
        inits.iter().all(|c| c
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .is_some_and(|t| t.exit_code == 0 && t.reason.as_deref() == Some("Completed"))),
        "{inits:?}"
    );
    assert!(s.conditions.unwrap().iter().any(|c| c.type_ == "Initialized" && c.status == "True"));
    let mut unhealthy = false;
    while let Ok(e) = events.try_recv() {
        if e.pod == "live" && e.reason == "Unhealthy" && e.message.starts_with("Liveness probe failed") {
            unhealthy = true;
        }
    }
    assert!(unhealthy, "no Unhealthy event");
    live.terminate(1);

    // The HTTP server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let srv = tokio::spawn(yard_agent::server::serve(listener, rt.clone()));
    let logs = String::from_utf8(
        yard_netns::output_in(
            std::path::Path::new("/proc/self/ns/net"),
            "curl",
            &["-sS", &format!("http://127.0.0.1:{port}/api/v1/namespaces/ns1/pods/web/log?timestamps=true")],
        )
        .unwrap()
        .into_bytes(),
    )
    .unwrap();
    assert!(logs.contains(" Started HTTP server on port 8080\n"), "{logs:?}");
    assert!(logs.starts_with("20"), "timestamps: {logs:?}");

    // Exec over WebSocket, v5: stdout, stderr, exit code.
    let url = format!(
        "ws://127.0.0.1:{port}/api/v1/namespaces/ns1/pods/web/exec?command=sh&command=-c&command=echo%20$MY_NAME;%20hostname;%20echo%20oops%20%3E%262;%20read%20x;%20echo%20got=$x;%20exit%203&stdin=true&stdout=true&stderr=true"
    );
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "v5.channel.k8s.io");
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Binary(b"\x00hello\n".to_vec().into())).await.unwrap();
    ws.send(Message::Binary(vec![255u8, 0].into())).await.unwrap();
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.next()).await
    {
        if let Message::Binary(b) = m {
            match b.first() {
                Some(1) => out.extend_from_slice(&b[1..]),
                Some(2) => err.extend_from_slice(&b[1..]),
                Some(3) => status.extend_from_slice(&b[1..]),
                _ => {}
            }
        }
    }
    assert_eq!(String::from_utf8_lossy(&out), "web\nweb\ngot=hello\n");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");
    let st: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "3");

    // Exec with a TTY.
    let url = format!("ws://127.0.0.1:{port}/api/v1/namespaces/ns1/pods/web/exec?command=sh&command=-c&command=tty%20%3E/dev/null%20%26%26%20echo%20isatty;%20stty%20size&stdin=true&stdout=true&tty=true");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
    ws.send(Message::Binary(b"\x04{\"Width\":100,\"Height\":30}".to_vec().into())).await.unwrap();
    let (mut out, mut status) = (Vec::new(), Vec::new());
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        if let Message::Binary(b) = m {
            match b.first() {
                Some(1) => out.extend_from_slice(&b[1..]),
                Some(3) => status.extend_from_slice(&b[1..]),
                _ => {}
            }
        }
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("isatty"), "{out:?}");
    let st: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(st["status"], "Success");

    srv.abort();
    for p in [&h, &missing] {
        p.terminate(1);
    }
    for p in [&h, &missing, &live, &web] {
        tokio::time::timeout(Duration::from_secs(15), p.wait_done()).await.expect("torn down");
    }
    assert!(rt.net.allocations().unwrap().is_empty());
}

/// A restarted agent adopts a live pod without restarting it and removes a pod that is gone.
#[test]
fn restart_adopts_live_pods() {
    let env = setup("c", "10.244.9.0/24");
    let keep_pod = pod(serde_json::json!({
        "metadata": {"name": "keeper", "namespace": "default", "uid": "ffffffff-1111-2222-3333-444444444444"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "s", "image": "k8s.gcr.io/serve_hostname"}]}
    }));
    let stale_pod = pod(serde_json::json!({
        "metadata": {"name": "stale", "namespace": "default", "uid": "99999999-1111-2222-3333-444444444444"},
        "spec": {"terminationGracePeriodSeconds": 1, "shareProcessNamespace": true,
                 "volumes": [{"name": "m", "emptyDir": {"medium": "Memory"}}],
                 "containers": [{"name": "s", "image": "busybox", "command": ["sleep", "3600"],
                                 "volumeMounts": [{"name": "m", "mountPath": "/m"}]}]}
    }));
    // (Of this run's state directory only: the pod's uid is fixed.)
    let state = env.rt.cfg.state_dir.display().to_string();
    let mounts_of = |uid: &str| -> usize {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        info.lines().filter(|l| l.contains(uid) && l.contains(&state)).count()
    };
    let first = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (pid, stale_pid, stale_ns, ip) = first.block_on(async {
        let k = env.rt.sync_pod(keep_pod.clone()).unwrap();
        let s = env.rt.sync_pod(stale_pod.clone()).unwrap();
        let st = wait_status(&k, "keeper ready", 20, ready).await;
        wait_status(&s, "stale ready", 20, ready).await;
        (k.pid("s").unwrap(), s.pid("s").unwrap(), s.sandbox().unwrap().netns, st.pod_ip.unwrap())
    });
    // The agent "crashes": its tasks are gone, the processes (and the memory volume) stay.
    first.shutdown_timeout(Duration::from_secs(1));
    let stale_uid = stale_pod.metadata.uid.clone().unwrap();
    // The Memory emptyDir, and the IPC and UTS namespace files.
    assert_eq!(mounts_of(&stale_uid), 3, "the stale pod's Memory emptyDir and namespaces are mounted");
    assert!(yard_agent::proc::start_time(pid).is_some());

    let second = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    second.block_on(async {
        let rt2 = Runtime::new(env.rt.cfg.clone(), env.rt.net.clone(), ObjectSource::Static(Default::default()));
        let kp = keep_pod.clone();
        let adopted = rt2.recover(move |uid| (uid == kp.metadata.uid.as_deref().unwrap()).then(|| kp.clone()));
        assert_eq!(adopted.len(), 1);
        let h = &adopted[0];
        let st = wait_status(h, "adopted ready", 10, ready).await;
        assert_eq!(st.pod_ip.as_deref(), Some(ip.as_str()));
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 0);
        assert_eq!(h.pid("s"), Some(pid), "not restarted");
        assert_eq!(curl_in(env.node.path(), &format!("http://{ip}:9376/")), "keeper");
        // The gone pod: namespace, address and process removed.
        assert!(!yard_netns::exists(&stale_ns));
        assert_eq!(rt2.net.allocations().unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stale_alive =
            std::fs::read_to_string(format!("/proc/{stale_pid}/stat")).map(|s| !s.contains(") Z")).unwrap_or(false);
        assert!(!stale_alive, "stale process survived");
        assert_eq!(mounts_of(&stale_uid), 0, "the gone pod's Memory emptyDir and namespaces are unmounted");
        // Killing the adopted process still restarts it (we cannot reap it, so exit code is unknown).
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        wait_status(h, "adopted restarted", 15, |s| {
            let c = &s.container_statuses.as_ref().unwrap()[0];
            c.restart_count == 1 && c.ready
        })
        .await;
        h.terminate(1);
        tokio::time::timeout(Duration::from_secs(10), h.wait_done()).await.expect("torn down");
        assert!(rt2.net.allocations().unwrap().is_empty());
    });
}
