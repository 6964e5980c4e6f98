//! The review APIs (authorization.k8s.io, authentication.k8s.io), the protected namespaces and
//! the request path's authorizer, against a real `yard apiserver` with the real kubectl (current
//! and the old releases kubectl users still run) and the Python client.

mod common;

use common::*;

const OLD_KUBECTLS: &[&str] = &["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"];

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn kubectl_auth_can_i_whoami_and_discovery() {
    let dir = TempDir::new("authrev");
    let api = ApiServer::start(&dir.0, &[]);
    assert_eq!(api.k(&["auth", "can-i", "create", "services"]).trim(), "yes");
    assert_eq!(api.k(&["auth", "can-i", "*", "*"]).trim(), "yes");
    assert_eq!(api.k(&["auth", "can-i", "delete", "namespaces", "--all-namespaces"]).trim(), "yes");
    assert_eq!(api.k(&["auth", "can-i", "get", "/healthz"]).trim(), "yes");
    let list = api.k(&["auth", "can-i", "--list", "-n", "default"]);
    assert!(list.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["*.*", "[]", "[]", "[*]"]), "{list}");
    let who = api.k(&["auth", "whoami"]);
    assert!(who.contains("kubernetes-admin"), "{who}");
    assert!(who.contains("system:authenticated"), "{who}");
    let yaml = api.k(&["auth", "whoami", "-o", "yaml"]);
    assert!(yaml.contains("apiVersion: authentication.k8s.io/v1\n"), "{yaml}");
    assert!(yaml.contains("kind: SelfSubjectReview"), "{yaml}");
    assert!(yaml.contains("username: kubernetes-admin"), "{yaml}");

    // Discovery and OpenAPI.
    let res = api.k(&["api-resources", "--verbs=create", "-o", "wide"]);
    for (name, gv) in [
        ("selfsubjectaccessreviews", "authorization.k8s.io/v1"),
        ("selfsubjectrulesreviews", "authorization.k8s.io/v1"),
        ("subjectaccessreviews", "authorization.k8s.io/v1"),
        ("localsubjectaccessreviews", "authorization.k8s.io/v1"),
        ("selfsubjectreviews", "authentication.k8s.io/v1"),
        ("tokenreviews", "authentication.k8s.io/v1"),
    ] {
        let line = res.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {res}"));
        assert!(line.contains(gv), "{line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.contains(&"create") && !words.contains(&"list"), "{line}");
    }
    let versions = api.k(&["api-versions"]);
    assert!(versions.contains("authentication.k8s.io/v1beta1"), "{versions}");
    let explain = api.k(&["explain", "selfsubjectaccessreview.spec"]);
    assert!(explain.contains("resourceAttributes"), "{explain}");
    let explain = api.k(&["explain", "tokenreview.status.user"]);
    assert!(explain.contains("username"), "{explain}");

    // Old kubectl: 1.27 asks authentication.k8s.io/v1beta1 for whoami, later ones v1.
    for v in OLD_KUBECTLS {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}");
        let run = |args: &[&str]| {
            std::process::Command::new(&bin).arg("--kubeconfig").arg(&api.kubeconfig).args(args).output().unwrap()
        };
        let who = run(&["auth", "whoami"]);
        assert!(who.status.success(), "kubectl {v} whoami: {}", stderr_of(&who));
        assert!(stdout_of(&who).contains("kubernetes-admin"), "kubectl {v}: {}", stdout_of(&who));
        let can = run(&["auth", "can-i", "create", "services"]);
        assert_eq!(stdout_of(&can).trim(), "yes", "kubectl {v} can-i: {}", stderr_of(&can));
    }

    // A request without a valid token is still refused before any authorization.
    let bad = std::process::Command::new(kubectl_bin())
        .args(["--kubeconfig"])
        .arg(&api.kubeconfig)
        .args(["--token", "bogus", "auth", "can-i", "get", "pods"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(stderr_of(&bad).contains("Unauthorized"), "{}", stderr_of(&bad));
}

#[test]
fn protected_namespaces_and_python_reviews() {
    let dir = TempDir::new("authns");
    let api = ApiServer::start(&dir.0, &[]);
    for ns in ["default", "kube-system", "kube-public"] {
        for extra in [&[][..], &["--dry-run=server"][..], &["--wait=false"][..]] {
            let mut args = vec!["delete", "namespace", ns];
            args.extend_from_slice(extra);
            let out = api.kubectl(&args);
            assert!(!out.status.success(), "deleting {ns} {extra:?} succeeded");
            assert_eq!(
                stderr_of(&out).trim(),
                format!("Error from server (Forbidden): namespaces \"{ns}\" is forbidden: this namespace may not be deleted"),
            );
        }
        let phase = api.k(&["get", "namespace", ns, "-o", "jsonpath={.status.phase}"]);
        assert_eq!(phase, "Active", "{ns}");
    }
    // kube-node-lease and ordinary namespaces may go.
    api.k(&["create", "namespace", "scratch"]);
    api.k(&["delete", "namespace", "scratch", "--wait=false"]);

    let script = repo_root().join("tests/python/auth_reviews_test.py");
    let out =
        std::process::Command::new(python_bin()).arg(&script).env("KUBECONFIG", &api.kubeconfig).output().unwrap();
    assert!(
        out.status.success(),
        "python review checks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("auth reviews: ok"));
}

#[test]
fn events_k8s_io_v1_shares_core_events() {
    let dir = TempDir::new("eventsv1");
    let api = ApiServer::start(&dir.0, &[]);
    let yaml = "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: kubectl-made\n  namespace: default\neventTime: \"2026-01-01T00:00:00.000000Z\"\ntype: Normal\nreason: Scheduled\naction: Bind\nnote: made by kubectl\nreportingController: example.com/sched\nreportingInstance: sched-0\nregarding:\n  kind: Pod\n  name: web\n  namespace: default\n";
    let out = api.k_stdin(&["create", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(api.k(&["get", "events", "kubectl-made", "-o", "jsonpath={.message}"]), "made by kubectl");
    assert_eq!(api.k(&["get", "events", "kubectl-made", "-o", "jsonpath={.reportingComponent}"]), "example.com/sched");
    let got = api.k(&[
        "get",
        "events.events.k8s.io",
        "kubectl-made",
        "-o",
        "jsonpath={.apiVersion} {.note} {.regarding.name}",
    ]);
    assert_eq!(got, "events.k8s.io/v1 made by kubectl web");
    let table = api.k(&["get", "events.events.k8s.io"]);
    assert!(table.contains("made by kubectl"), "{table}");
    let events = api.k(&["events", "-n", "default"]);
    assert!(events.contains("Scheduled") && events.contains("made by kubectl"), "{events}");
    let res = api.k(&["api-resources", "--api-group=events.k8s.io"]);
    assert!(res.lines().any(|l| l.starts_with("events ") && l.contains("events.k8s.io/v1")), "{res}");
    let explain = api.k(&["explain", "events.regarding", "--api-version=events.k8s.io/v1"]);
    assert!(explain.contains("ObjectReference"), "{explain}");
    // Invalid through the strict group: upstream's message.
    let bad = api.k_stdin(
        &["create", "-f", "-"],
        &yaml.replace("kubectl-made", "bad").replace("reportingInstance: sched-0\n", ""),
    );
    assert!(!bad.status.success());
    assert!(stderr_of(&bad).contains("reportingInstance: Required value"), "{}", stderr_of(&bad));

    let script = repo_root().join("tests/python/events_v1_test.py");
    let out =
        std::process::Command::new(python_bin()).arg(&script).env("KUBECONFIG", &api.kubeconfig).output().unwrap();
    assert!(
        out.status.success(),
        "python events checks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("events v1: ok"));
}
