//! Issue 24, securityContext: `runAsUser`, `runAsGroup`, `supplementalGroups` and `fsGroup` set the
//! container's (and its execs') user and groups; `runAsNonRoot` refuses root with the kubelet's
//! messages (`CreateContainerConfigError`); `allowPrivilegeEscalation: false` is the kernel's
//! no_new_privs. Checked with real kubectl on `yard up`; nothing is written outside the test's dirs
//! (write access is probed with `test -w`, never by writing).

mod common;

use std::time::Duration;

use common::*;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: runas}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'id; sleep 3600']
    securityContext: {allowPrivilegeEscalation: false}
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  securityContext: {runAsNonRoot: true}
  containers:
  - {name: c, image: busybox:1.28, command: ['sleep', '3600']}
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot-zero}
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: ['sleep', '3600']
    securityContext: {runAsNonRoot: true, runAsUser: 0}
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot-ok}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65534}
  containers:
  - {name: c, image: busybox:1.28, command: ['sleep', '3600']}
"#;

fn jsonpath(up: &Up, pod: &str, path: &str) -> String {
    up.k(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

#[test]
fn security_context_sets_the_user_and_enforces_run_as_non_root() {
    yard_test_support::require_root("security_e2e (yard up)");
    let dir = TempDir::new("security");
    let mut up = Up::start("e2esec", &dir.0.join("data"), &[]);
    let o = kubectl_with(&up.kubeconfig, &["apply", "-f", "-"], Some(MANIFEST));
    assert!(o.status.success(), "apply: {}", String::from_utf8_lossy(&o.stderr));
    up.k(&["wait", "--for=condition=Ready", "pod/runas", "pod/nonroot-ok", "--timeout=60s"]);

    // The container and an exec into it run as the pod's user, with fsGroup and the supplemental
    // groups; the host's system directories and the admin kubeconfig are out of its reach.
    let id = up.k(&["exec", "runas", "--", "sh", "-c", "id -u; id -g; id -G"]);
    assert_eq!(id.split_whitespace().collect::<Vec<_>>(), ["1000", "3000", "3000", "2000", "4000"], "{id}");
    assert!(up.k(&["logs", "runas"]).contains("uid=1000"));
    let status = up.k(&["exec", "runas", "--", "cat", "/proc/self/status"]);
    assert!(status.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])), "{status}");
    assert!(status.lines().any(|l| l.starts_with("CapEff:") && l.ends_with("0000000000000000")), "{status}");
    for path in ["/usr/bin", "/etc"] {
        let o = up.kubectl(&["exec", "runas", "--", "test", "-w", path]);
        assert!(!o.status.success(), "uid 1000 may write {path}");
    }
    let kc = up.kubeconfig.display().to_string();
    let o = up.kubectl(&["exec", "runas", "--", "cat", &kc]);
    assert!(!o.status.success(), "uid 1000 read the admin kubeconfig: {}", stdout_of(&o));
    assert_eq!(up.k(&["exec", "nonroot-ok", "--", "id", "-u"]).trim(), "65534");

    // runAsNonRoot: the kubelet's refusals.
    let uid = jsonpath(&up, "nonroot", "{.metadata.uid}");
    let waiting = eventually(Duration::from_secs(30), || {
        let r = jsonpath(&up, "nonroot", "{.status.containerStatuses[0].state.waiting.reason}");
        (r == "CreateContainerConfigError").then_some(())
    });
    assert!(waiting.is_some(), "{}", jsonpath(&up, "nonroot", "{.status}"));
    assert_eq!(
        jsonpath(&up, "nonroot", "{.status.containerStatuses[0].state.waiting.message}"),
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: c)"
        )
    );
    let uid0 = jsonpath(&up, "nonroot-zero", "{.metadata.uid}");
    let msg = eventually(Duration::from_secs(30), || {
        let m = jsonpath(&up, "nonroot-zero", "{.status.containerStatuses[0].state.waiting.message}");
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(
        msg.as_deref(),
        Some(
            format!(
                "container's runAsUser breaks non-root policy (pod: \"nonroot-zero_default({uid0})\", container: c)"
            )
            .as_str()
        )
    );
    let events = up.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=nonroot",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("Error: container has runAsNonRoot and image will run as root"), "{events}");

    up.k(&["delete", "pod", "--all", "--grace-period=1", "--wait=true", "--timeout=60s"]);
    let out = up.stop();
    assert!(!out.contains("panicked"), "{out}");
}
