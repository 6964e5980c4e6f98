//! Issue 24, the pod sandbox: each container's PID namespace and filesystem view (`pivot_root` onto a tmpfs with
//! the host's system directories read-only) keeps the admin kubeconfig, the host's /tmp and
//! other pods' files out of reach and gives the pod its own /etc/hostname; capabilities are the
//! runtime default set (add/drop, privileged), `seccompProfile: RuntimeDefault` refuses
//! `unshare`, `readOnlyRootFilesystem` holds; volumes (emptyDir on disk and in memory, configMap
//! with an update that reaches the running pod, secret with its mode, downwardAPI, hostPath in
//! this test's directory, subPath, readOnly) have the right content; the Pulled event names the
//! host program that runs for the image; a missing configMap keeps
//! the pod in ContainerCreating with `FailedMount` until it appears. Real kubectl on `yard up`.
//! Write access to host paths is probed with `test -w`, never by writing; the only host writes
//! are into this test's own directory.

mod common;

use std::time::Duration;

use common::*;

fn manifest(host_dir: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{greeting: hello, other: x}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, labels: {{app: sandbox, tier: "one"}}}}
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'echo main > /shared/from-c; sleep 3600']
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: cfg, mountPath: /etc/app/greeting.txt, subPath: greeting}}
    - {{name: creds, mountPath: /secret}}
    - {{name: info, mountPath: /info}}
    - {{name: shared, mountPath: /shared}}
    - {{name: mem, mountPath: /cache}}
    - {{name: host, mountPath: /host}}
    - {{name: host, mountPath: /host-ro, readOnly: true}}
  - name: side
    image: busybox:1.28
    command: ['sleep', '3600']
    volumeMounts:
    - {{name: shared, mountPath: /data}}
  volumes:
  - {{name: cfg, configMap: {{name: cfg}}}}
  - {{name: creds, secret: {{secretName: creds, defaultMode: 0400}}}}
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
  - {{name: shared, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
  - {{name: host, hostPath: {{path: "{host_dir}", type: Directory}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: other}}
spec:
  containers:
  - {{name: c, image: busybox:1.28, command: ['sh', '-c', 'echo mine > /tmp/other-file; sleep 3600']}}
---
apiVersion: v1
kind: Pod
metadata: {{name: shared-pid}}
spec:
  shareProcessNamespace: true
  containers:
  - {{name: a, image: busybox:1.28, command: ['sleep', '3600']}}
  - {{name: b, image: busybox:1.28, command: ['sleep', '7200']}}
---
apiVersion: v1
kind: Pod
metadata: {{name: locked}}
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: ['sleep', '3600']
    securityContext:
      readOnlyRootFilesystem: true
      capabilities: {{add: [SYS_ADMIN], drop: [KILL]}}
      seccompProfile: {{type: RuntimeDefault}}
---
apiVersion: v1
kind: Pod
metadata: {{name: admin}}
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: ['sleep', '3600']
    securityContext: {{capabilities: {{add: [SYS_ADMIN]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: priv}}
spec:
  containers:
  - {{name: c, image: busybox:1.28, command: ['sleep', '3600'], securityContext: {{privileged: true}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hostipc}}
spec:
  hostIPC: true
  containers:
  - {{name: c, image: busybox:1.28, command: ['sleep', '3600']}}
---
apiVersion: v1
kind: Pod
metadata: {{name: waits}}
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: ['sleep', '3600']
    volumeMounts: [{{name: late, mountPath: /late}}]
  volumes:
  - {{name: late, configMap: {{name: late}}}}
"#
    )
}

/// containerd's default capability set (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
/// SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP).
const DEFAULT_CAPS: &str = "00000000a80425fb";

fn cap_line(up: &Up, pod: &str, field: &str) -> String {
    let st = up.k(&["exec", pod, "--", "cat", "/proc/self/status"]);
    st.lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// Whether the mount at `path` (the last one listed there) is read-only.
fn read_only(mounts: &str, path: &str) -> bool {
    mounts
        .lines()
        .rfind(|l| l.split(' ').nth(1) == Some(path))
        .is_some_and(|l| l.split(' ').nth(3).is_some_and(|o| o.split(',').any(|f| f == "ro")))
}

fn sh(up: &Up, pod: &str, script: &str) -> std::process::Output {
    up.kubectl(&["exec", pod, "--", "sh", "-c", script])
}

#[test]
fn a_pod_sees_only_itself_and_its_volumes() {
    yard_test_support::require_root("sandbox_e2e (yard up)");
    let dir = TempDir::new("sandbox");
    let host_dir = dir.0.join("hostpath");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("from-host"), "host data").unwrap();
    let marker = dir.0.join("marker-in-host-tmp");
    std::fs::write(&marker, "x").unwrap();
    let up = Up::start("e2esbx", &dir.0.join("data"), &[]);
    let o = kubectl_with(&up.kubeconfig, &["apply", "-f", "-"], Some(&manifest(&host_dir.display().to_string())));
    assert!(o.status.success(), "apply: {}", String::from_utf8_lossy(&o.stderr));
    up.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "pod/other",
        "pod/locked",
        "pod/admin",
        "pod/priv",
        "pod/hostipc",
        "--timeout=60s",
    ]);

    // The host's data is out of reach: the admin kubeconfig, the host's /tmp (this test's
    // directory is in it), /root; the system directories are there but read-only.
    let kc = up.kubeconfig.display().to_string();
    let o = up.kubectl(&["exec", "client", "-c", "c", "--", "cat", &kc]);
    assert!(!o.status.success(), "a pod read the admin kubeconfig: {}", stdout_of(&o));
    let o = up.kubectl(&["exec", "client", "-c", "c", "--", "test", "-e", marker.to_str().unwrap()]);
    assert!(!o.status.success(), "a pod sees the host's /tmp");
    // (busybox's `test -w` is always true for root, so the mount options say it.)
    let mounts = up.k(&["exec", "client", "-c", "c", "--", "cat", "/proc/mounts"]);
    for path in ["/usr", "/etc/passwd", "/cfg", "/host-ro"] {
        assert!(read_only(&mounts, path), "root in a pod may write {path}:\n{mounts}");
    }
    assert!(!read_only(&mounts, "/") && !read_only(&mounts, "/host"), "{mounts}");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "readlink", "/bin"]).trim(), "usr/bin");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", "/etc/hostname"]).trim(), "client");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "hostname"]).trim(), "client");
    // One IPC and one UTS namespace per pod, shared by its containers; the host's IPC with hostIPC.
    let ns = |pod: &str, c: &str, n: &str| {
        up.k(&["exec", pod, "-c", c, "--", "readlink", &format!("/proc/self/ns/{n}")]).trim().to_string()
    };
    let host_ns = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap().display().to_string();
    for n in ["ipc", "uts"] {
        assert_eq!(ns("client", "c", n), ns("client", "side", n), "{n}");
        assert_ne!(ns("client", "c", n), ns("other", "c", n), "{n}");
        assert_ne!(ns("client", "c", n), host_ns(n), "{n}");
    }
    assert_eq!(ns("hostipc", "c", "ipc"), host_ns("ipc"));
    assert_ne!(ns("hostipc", "c", "uts"), host_ns("uts"));
    assert_eq!(up.k(&["exec", "client", "-c", "side", "--", "hostname"]).trim(), "client");
    // Its own PID namespace: PID 1 is the container's command (sh execs its last command), no host process is listed (so
    // none can be signalled), and an exec is inside it too.
    let ps = up.k(&["exec", "client", "-c", "c", "--", "ps", "-o", "pid,comm"]);
    let rows: Vec<(String, String)> = ps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect();
    assert_eq!(rows.first().map(|r| (r.0.as_str(), r.1.as_str())), Some(("1", "sleep")), "{ps}");
    assert!(rows.len() <= 4 && rows.iter().any(|r| r.1 == "ps"), "{ps}");
    assert!(!rows.iter().any(|r| r.1.starts_with("yard")), "{ps}");
    let side = up.k(&["exec", "client", "-c", "side", "--", "ps", "-o", "pid,comm"]);
    assert!(side.lines().nth(1).is_some_and(|l| l.split_whitespace().eq(["1", "sleep"])), "{side}");
    // shareProcessNamespace: one namespace for the pod, PID 1 is its pause process, each
    // container sees the other's.
    let ps = up.k(&["exec", "shared-pid", "-c", "a", "--", "ps", "-o", "pid,args"]);
    assert!(ps.lines().nth(1).is_some_and(|l| l.split_whitespace().take(1).eq(["1"]) && l.contains("pause")), "{ps}");
    assert!(ps.contains("sleep 3600") && ps.contains("sleep 7200"), "{ps}");
    // Each pod has its own /tmp: another pod's file is not there, kubectl cp lands in the pod.
    assert_eq!(up.k(&["exec", "other", "--", "cat", "/tmp/other-file"]).trim(), "mine");
    assert!(!up.kubectl(&["exec", "client", "-c", "c", "--", "test", "-e", "/tmp/other-file"]).status.success());
    let local = dir.0.join("to-copy");
    std::fs::write(&local, "copied").unwrap();
    let in_pod = format!("/tmp/yard-cp-{}", std::process::id());
    up.k(&["cp", local.to_str().unwrap(), &format!("client:{in_pod}"), "-c", "c"]);
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", &in_pod]), "copied");
    assert!(!std::path::Path::new(&in_pod).exists(), "kubectl cp wrote the host's /tmp");
    // Writable root and /tmp of the pod's own.
    assert!(sh(&up, "client", "echo x > /written && test -w /tmp").status.success());

    // Volumes.
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", "/cfg/greeting"]), "hello");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", "/etc/app/greeting.txt"]), "hello");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", "/secret/password"]), "s3cret");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "stat", "-L", "-c", "%a", "/secret/password"]).trim(), "400");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", "/info/labels"]), "app=\"sandbox\"\ntier=\"one\"");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", "/info/name"]), "client");
    assert_eq!(
        up.k(&["exec", "client", "-c", "side", "--", "cat", "/data/from-c"]).trim(),
        "main",
        "emptyDir is shared"
    );
    let cache = mounts.lines().find(|l| l.split(' ').nth(1) == Some("/cache")).unwrap_or_default().to_string();
    assert!(cache.starts_with("tmpfs ") && cache.contains("size=8192k"), "{mounts}");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", "/host/from-host"]), "host data");
    assert!(sh(&up, "client", "echo from-pod > /host/written-by-pod").status.success());
    assert_eq!(std::fs::read_to_string(host_dir.join("written-by-pod")).unwrap().trim(), "from-pod");
    // A configMap update reaches the running pod (the ..data swap); the subPath copy does not
    // change, as upstream.
    up.k(&["patch", "configmap", "cfg", "-p", r#"{"data":{"greeting":"updated"}}"#]);
    let arrived = yard_test_support::eventually(Duration::from_secs(30), || {
        (up.k(&["exec", "client", "-c", "c", "--", "cat", "/cfg/greeting"]) == "updated").then_some(())
    });
    assert!(arrived.is_some(), "the configMap update never reached the pod");
    assert_eq!(up.k(&["exec", "client", "-c", "c", "--", "cat", "/etc/app/greeting.txt"]), "hello");

    // The events say what runs in place of the image.
    let pulled = up.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=client,reason=Pulled",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        pulled.contains("No image pulled: container image \"busybox:1.28\" runs as the host's BusyBox v1."),
        "{pulled}"
    );
    assert!(!pulled.contains("already present"), "{pulled}");

    // Capabilities and seccomp.
    assert_eq!(cap_line(&up, "client", "CapEff:"), DEFAULT_CAPS);
    assert_eq!(cap_line(&up, "client", "CapBnd:"), DEFAULT_CAPS);
    let o = sh(&up, "client", "mount -t tmpfs none /mnt");
    assert!(!o.status.success(), "a default pod may mount");
    assert!(
        sh(&up, "priv", "mount -t tmpfs none /mnt && grep ' /mnt ' /proc/mounts").status.success(),
        "privileged may mount"
    );
    assert_eq!(cap_line(&up, "priv", "CapEff:"), cap_line(&up, "priv", "CapBnd:"));
    // SYS_ADMIN added: unshare works unconfined, and RuntimeDefault refuses it.
    assert!(
        sh(&up, "admin", "unshare -m true").status.success(),
        "{}",
        String::from_utf8_lossy(&sh(&up, "admin", "unshare -m true").stderr)
    );
    let o = sh(&up, "locked", "unshare -m true");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let locked = u64::from_str_radix(&cap_line(&up, "locked", "CapEff:"), 16).unwrap();
    assert_eq!(locked & (1 << 5), 0, "KILL dropped");
    assert_ne!(locked & (1 << 21), 0, "SYS_ADMIN added");
    // readOnlyRootFilesystem: / (and so /tmp) is read-only.
    let m = up.k(&["exec", "locked", "--", "cat", "/proc/mounts"]);
    assert!(read_only(&m, "/"), "{m}");
    assert!(!sh(&up, "locked", "echo x > /tmp/x").status.success(), "readOnlyRootFilesystem let /tmp be written");

    // A missing configMap: ContainerCreating with FailedMount, then Running once it exists.
    let failed = yard_test_support::eventually(Duration::from_secs(20), || {
        let ev = up.k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=waits,reason=FailedMount",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        ev.contains("MountVolume.SetUp failed for volume \"late\" : configmap \"late\" not found").then_some(ev)
    });
    assert!(failed.is_some(), "no FailedMount event");
    let reason = up.k(&["get", "pod", "waits", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}"]);
    assert_eq!(reason, "ContainerCreating");
    up.k(&["create", "configmap", "late", "--from-literal=k=v"]);
    up.k(&["wait", "--for=condition=Ready", "pod/waits", "--timeout=60s"]);
    assert_eq!(up.k(&["exec", "waits", "--", "cat", "/late/k"]), "v");

    // Teardown: no mount of the pods is left on the host.
    up.k(&["delete", "pod", "--all", "--grace-period=1", "--wait=true"]);
    let data = up.data_dir.display().to_string();
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&data))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");

    // PID 1 ignores SIGTERM (as upstream): a pod deleted with the default 30 s grace is still
    // stopping when the cluster shuts down, which shortens the grace to 0: nothing is left.
    let stubborn = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"stubborn"},"spec":{"containers":[{"name":"c","image":"busybox:1.28","command":["sh","-c","while true; do sleep 1; done # stubborn-marker"]}]}}"#;
    let o = kubectl_with(&up.kubeconfig, &["apply", "-f", "-"], Some(stubborn));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    up.k(&["wait", "--for=condition=Ready", "pod/stubborn", "--timeout=60s"]);
    up.k(&["delete", "pod", "stubborn", "--wait=false"]);
    std::thread::sleep(Duration::from_millis(500));
    let t = std::time::Instant::now();
    let mut up = up;
    up.stop();
    assert!(t.elapsed() < Duration::from_secs(15), "shutdown waited out the grace period: {:?}", t.elapsed());
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout).into_owned();
    assert!(!netns.contains("yard-e2esbx-"), "namespaces left behind: {netns}");
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("stubborn-marker"))
        .collect();
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
}

/// Host processes whose command line holds `marker`.
fn procs_with(marker: &str) -> Vec<(u32, String)> {
    let mut v: Vec<(u32, String)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, std::fs::read(e.path().join("cmdline")).ok()?)))
        .map(|(pid, c): (u32, Vec<u8>)| (pid, String::from_utf8_lossy(&c).replace('\0', " ")))
        .filter(|(_, c)| c.contains(marker))
        .collect();
    v.sort();
    v
}

/// Directories of the v1 (or v2) cgroup hierarchies whose path names `pod<uid>`.
fn pod_cgroups(uid: &str) -> Vec<String> {
    let o = std::process::Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name", &format!("pod{uid}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect()
}

/// `kill -9` of `yard up` (agent, API server and all in one process) leaves the pods running; a
/// new `yard up` on the same data directory adopts them (same processes, no restart, the memory
/// emptyDir's content kept, configMap updates arrive again, exec works), and deleting them then
/// leaves no process, mount, cgroup or namespace behind.
#[test]
fn kill9_of_yard_up_then_restart_adopts_and_cleans_up() {
    yard_test_support::require_root("sandbox_e2e (yard up, kill -9)");
    let dir = TempDir::new("sandbox-k9");
    let data = dir.0.join("data");
    let mut up = Up::start("e2ek9", &data, &[]);
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: before}
---
apiVersion: v1
kind: Pod
metadata: {name: keeper}
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'while true; do sleep 1; done # k9-marker-keeper']
    resources: {limits: {memory: 64Mi}}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: cfg, mountPath: /cfg}
  volumes:
  - {name: scratch, emptyDir: {medium: Memory}}
  - {name: cfg, configMap: {name: cfg}}
---
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  shareProcessNamespace: true
  containers:
  - {name: c, image: busybox:1.28, command: ['sh', '-c', 'while true; do sleep 1; done # k9-marker-shared']}
"#;
    let o = kubectl_with(&up.kubeconfig, &["apply", "-f", "-"], Some(manifest));
    assert!(o.status.success(), "apply: {}", String::from_utf8_lossy(&o.stderr));
    up.k(&["wait", "--for=condition=Ready", "pod/keeper", "pod/shared", "--timeout=60s"]);
    up.k(&["exec", "keeper", "--", "sh", "-c", "echo kept > /scratch/f"]);
    let uids: Vec<String> =
        ["keeper", "shared"].iter().map(|p| up.k(&["get", "pod", p, "-o", "jsonpath={.metadata.uid}"])).collect();
    let ids = |up: &Up| {
        up.k(&["get", "pod", "keeper", "shared", "-o", "jsonpath={.items[*].status.containerStatuses[0].containerID}"])
    };
    let ids_before = ids(&up);
    let before = procs_with("k9-marker");
    assert_eq!(before.len(), 2, "{before:?}");
    let cgroups_before: Vec<String> = uids.iter().flat_map(|u| pod_cgroups(u)).collect();
    assert!(!cgroups_before.is_empty(), "the pods have no cgroup");

    up.kill9();
    std::thread::sleep(Duration::from_millis(500));
    // Observed before the new `yard up` (which must run on failure too, to clean up), asserted after.
    let after_kill = procs_with("k9-marker");
    let up = Up::start("e2ek9", &data, &[]);
    assert_eq!(after_kill, before, "the pods did not outlive the agent");

    up.k(&["wait", "--for=condition=Ready", "pod/keeper", "pod/shared", "--timeout=60s"]);
    assert_eq!(procs_with("k9-marker"), before, "the new agent did not adopt the running containers");
    assert_eq!(ids(&up), ids_before);
    let restarts = up.k(&[
        "get",
        "pod",
        "keeper",
        "shared",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
    ]);
    assert_eq!(restarts, "0 0");
    assert_eq!(up.k(&["exec", "keeper", "--", "cat", "/scratch/f"]).trim(), "kept");
    // The shared PID namespace is still the pause's: PID 1 is not the container's shell.
    let comm = up.k(&["exec", "shared", "--", "cat", "/proc/1/cmdline"]);
    assert!(!comm.contains("k9-marker"), "PID 1 of the shared namespace is {comm:?}");
    up.k(&["patch", "configmap", "cfg", "-p", r#"{"data":{"greeting":"after"}}"#]);
    let updated = eventually(Duration::from_secs(60), || {
        let g = up.kubectl(&["exec", "keeper", "--", "cat", "/cfg/greeting"]);
        (stdout_of(&g) == "after").then_some(())
    });
    assert!(updated.is_some(), "a configMap update did not reach the adopted pod");

    up.k(&["delete", "pod", "keeper", "shared", "--grace-period=1", "--wait=true"]);
    assert_eq!(procs_with("k9-marker"), vec![], "processes left behind");
    let d = data.display().to_string();
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&d))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    let cg: Vec<String> = uids.iter().flat_map(|u| pod_cgroups(u)).collect();
    assert!(cg.is_empty(), "cgroups left behind: {cg:?}");
    let mut up = up;
    up.stop();
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout).into_owned();
    assert!(!netns.contains("yard-e2ek9-"), "namespaces left behind: {netns}");
}
