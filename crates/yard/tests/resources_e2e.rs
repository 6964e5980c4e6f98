//! Issue 24, resource limits: `resources.limits` are kernel cgroup limits on `yard up`, checked with
//! real kubectl and the real kernel. A container over its memory limit is killed by the kernel's
//! OOM killer and reported as `OOMKilled` (exit code 137) with its restart policy applied; a cpu
//! limit is a CFS quota that throttles a busy loop; `kubectl exec` runs inside the container's
//! cgroup; a deleted pod leaves no cgroup behind; a disk emptyDir over its `sizeLimit` or a pod
//! over its `ephemeral-storage` limits is evicted with the kubelet's messages. One shared cluster.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: OnFailure
  containers:
  - name: hog
    image: busybox:1.28
    # dd reads into its 100 MiB buffer: past the 20Mi limit at once.
    command: ['sh', '-c', 'echo allocating; exec dd if=/dev/zero of=/dev/null bs=100M count=1']
    resources:
      limits: {memory: 20Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: hog-once}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox:1.28
    command: ['sh', '-c', 'exec dd if=/dev/zero of=/dev/null bs=100M count=1']
    resources:
      limits: {memory: 20Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: small}
spec:
  restartPolicy: Never
  containers:
  - name: small
    image: busybox:1.28
    # The same program under its limit runs to the end.
    command: ['sh', '-c', 'dd if=/dev/zero of=/dev/null bs=4M count=1 && echo fits']
    resources:
      limits: {memory: 20Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: spin}
spec:
  containers:
  - name: spin
    image: busybox:1.28
    command: ['sh', '-c', 'while :; do :; done']
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 100m, memory: 32Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: fill-dir}
spec:
  containers:
  - name: fill
    image: busybox:1.28
    command: ['sh', '-c', 'dd if=/dev/zero of=/scratch/f bs=1M count=4 && sleep 3600']
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes:
  - {name: scratch, emptyDir: {sizeLimit: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: fill-root}
spec:
  containers:
  - name: fill
    image: busybox:1.28
    command: ['sh', '-c', 'dd if=/dev/zero of=/tmp/f bs=1M count=4 && sleep 3600']
    resources:
      limits: {ephemeral-storage: 2Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: fits-storage}
spec:
  containers:
  - name: fill
    image: busybox:1.28
    command: ['sh', '-c', 'dd if=/dev/zero of=/scratch/f bs=1M count=1 && dd if=/dev/zero of=/tmp/f bs=1M count=1 && sleep 3600']
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    resources:
      limits: {ephemeral-storage: 8Mi}
  volumes:
  - {name: scratch, emptyDir: {sizeLimit: 4Mi}}
"#;

fn jsonpath(up: &Up, pod: &str, path: &str) -> String {
    up.k(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

/// The container's cgroup directories on this machine (the test runs in the same cgroup as the
/// `yard up` it started, so the agent's base is this process's own).
fn cgroup_dirs(uid: &str, container: &str) -> Vec<PathBuf> {
    let rel = format!("{}/{container}", yard_agent::cgroup::pod_rel(uid));
    match yard_agent::cgroup::hierarchy().expect("cgroups") {
        yard_agent::cgroup::Hierarchy::V1 { memory, cpu, pids } => {
            [memory, cpu, pids].into_iter().flatten().map(|b| b.join(&rel)).collect()
        }
        yard_agent::cgroup::Hierarchy::V2 { base, .. } => vec![base.join(&rel)],
    }
}

fn read_in(dirs: &[PathBuf], file: &str) -> String {
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .unwrap_or_else(|| panic!("{file} not in any of {dirs:?}"))
        .trim()
        .to_string()
}

#[test]
fn resource_limits_are_enforced() {
    yard_test_support::require_root("resources_e2e (yard up, cgroups)");
    let dir = TempDir::new("resources");
    let mut up = Up::start("e2eres", &dir.0.join("data"), &[]);
    let o = kubectl_with(&up.kubeconfig, &["apply", "-f", "-"], Some(MANIFEST));
    assert!(o.status.success(), "apply: {}", String::from_utf8_lossy(&o.stderr));

    // OOM with OnFailure: killed, reported, restarted.
    let last = eventually(Duration::from_secs(60), || {
        let r = jsonpath(&up, "hog", "{.status.containerStatuses[0].lastState.terminated.reason}");
        (r == "OOMKilled").then_some(r)
    });
    assert!(last.is_some(), "hog: lastState not OOMKilled: {}", jsonpath(&up, "hog", "{.status.containerStatuses[0]}"));
    assert_eq!(jsonpath(&up, "hog", "{.status.containerStatuses[0].lastState.terminated.exitCode}"), "137");
    let restarts: i32 = jsonpath(&up, "hog", "{.status.containerStatuses[0].restartCount}").parse().unwrap();
    assert!(restarts >= 1, "OnFailure restarts an OOM-killed container");
    assert!(up.k(&["logs", "hog"]).contains("allocating"));

    // OOM with Never: the pod fails with the container's state terminated OOMKilled.
    let failed = eventually(Duration::from_secs(60), || {
        (jsonpath(&up, "hog-once", "{.status.phase}") == "Failed").then_some(())
    });
    assert!(failed.is_some(), "hog-once: {}", jsonpath(&up, "hog-once", "{.status}"));
    assert_eq!(jsonpath(&up, "hog-once", "{.status.containerStatuses[0].state.terminated.reason}"), "OOMKilled");
    assert_eq!(jsonpath(&up, "hog-once", "{.status.containerStatuses[0].state.terminated.exitCode}"), "137");

    // Under the limit: completes.
    let done = eventually(Duration::from_secs(60), || {
        (jsonpath(&up, "small", "{.status.phase}") == "Succeeded").then_some(())
    });
    assert!(done.is_some(), "small: {}", jsonpath(&up, "small", "{.status}"));
    assert_eq!(jsonpath(&up, "small", "{.status.containerStatuses[0].state.terminated.reason}"), "Completed");
    assert!(up.k(&["logs", "small"]).contains("fits"));

    // CPU: a 100m limit is a 10 ms per 100 ms CFS quota that throttles the busy loop.
    up.k(&["wait", "--for=condition=Ready", "pod/spin", "--timeout=60s"]);
    assert_eq!(jsonpath(&up, "spin", "{.status.qosClass}"), "Guaranteed");
    let uid = jsonpath(&up, "spin", "{.metadata.uid}");
    let dirs = cgroup_dirs(&uid, "spin");
    match yard_agent::cgroup::hierarchy().unwrap() {
        yard_agent::cgroup::Hierarchy::V1 { .. } => {
            assert_eq!(read_in(&dirs, "cpu.cfs_quota_us"), "10000");
            assert_eq!(read_in(&dirs, "cpu.cfs_period_us"), "100000");
            assert_eq!(read_in(&dirs, "cpu.shares"), "102");
            assert_eq!(read_in(&dirs, "memory.limit_in_bytes"), (32u64 << 20).to_string());
        }
        yard_agent::cgroup::Hierarchy::V2 { .. } => {
            assert_eq!(read_in(&dirs, "cpu.max"), "10000 100000");
            assert_eq!(read_in(&dirs, "memory.max"), (32u64 << 20).to_string());
        }
    }
    let throttled = eventually(Duration::from_secs(10), || {
        let stat = read_in(&dirs, "cpu.stat");
        let n: u64 =
            stat.lines().find_map(|l| l.strip_prefix("nr_throttled ").and_then(|v| v.parse().ok())).unwrap_or(0);
        (n > 5).then_some(n)
    });
    assert!(throttled.is_some(), "the busy loop was never throttled: {}", read_in(&dirs, "cpu.stat"));

    // exec runs in the container's cgroup.
    let own = up.k(&["exec", "spin", "--", "cat", "/proc/self/cgroup"]);
    assert!(own.contains(&format!("pod{uid}/spin")), "exec outside the container's cgroup:\n{own}");

    // Local ephemeral storage: a disk emptyDir over its sizeLimit, or a pod over its containers'
    // ephemeral-storage limits, is evicted as the kubelet does (Failed, reason Evicted, upstream's
    // message, a Warning event, no restart); a pod within its limits keeps running.
    for (pod, msg) in [
        ("fill-dir", "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "),
        ("fill-root", "Pod ephemeral local storage usage exceeds the total limit of containers 2Mi. "),
    ] {
        let evicted =
            eventually(Duration::from_secs(60), || (jsonpath(&up, pod, "{.status.reason}") == "Evicted").then_some(()));
        assert!(evicted.is_some(), "{pod} not evicted: {}", jsonpath(&up, pod, "{.status}"));
        assert_eq!(jsonpath(&up, pod, "{.status.phase}"), "Failed");
        assert_eq!(jsonpath(&up, pod, "{.status.message}"), msg);
        let stopped = eventually(Duration::from_secs(30), || {
            let t = jsonpath(&up, pod, "{.status.containerStatuses[0].state.terminated.exitCode}");
            (!t.is_empty()).then_some(t)
        });
        assert_eq!(stopped.as_deref(), Some("137"), "{pod}: {}", jsonpath(&up, pod, "{.status}"));
        assert_eq!(jsonpath(&up, pod, "{.status.containerStatuses[0].restartCount}"), "0");
        let events = up.k(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=Evicted"),
            "-o",
            "jsonpath={.items[*].type}: {.items[*].message}",
        ]);
        assert_eq!(events, format!("Warning: {msg}"));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        jsonpath(&up, "fits-storage", "{.status.phase}"),
        "Running",
        "{}",
        jsonpath(&up, "fits-storage", "{.status}")
    );
    assert_eq!(jsonpath(&up, "fits-storage", "{.status.reason}"), "");

    // Deleting the pod removes its cgroups.
    up.k(&["delete", "pod", "spin", "--grace-period=1", "--wait=true", "--timeout=60s"]);
    for d in &dirs {
        let gone = eventually(Duration::from_secs(10), || (!d.exists()).then_some(()));
        assert!(gone.is_some(), "{} left behind", d.display());
    }
    // Limits the node cannot apply are refused by the API, with upstream's messages.
    let bad = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}}]}}"#;
    let o = kubectl_with(&up.kubeconfig, &["create", "-f", "-"], Some(bad));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "The Pod \"bad\" is invalid: spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let bad = bad
        .replace(r#""cpu": "2""#, r#""cpu": "-1""#)
        .replace(r#""limits": {"cpu": "1"}"#, r#""limits": {"memory": "lots"}"#);
    let o = kubectl_with(&up.kubeconfig, &["create", "-f", "-"], Some(&bad));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("must be greater than or equal to 0"), "{e}");

    up.k(&[
        "delete",
        "pod",
        "hog",
        "hog-once",
        "small",
        "fill-dir",
        "fill-root",
        "fits-storage",
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    let out = up.stop();
    assert!(!out.contains("panicked"), "{out}");
}
