//! ServiceAccounts on a `yard up` cluster: every namespace has the `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap; a pod gets the `kube-api-access-*` projected volume (token,
//! ca.crt, namespace) and, from inside it, the host's curl with that token and CA reaches
//! https://kubernetes.default.svc and gets upstream's 403 (no RBAC yet); `kubectl auth whoami`
//! names the ServiceAccount; `kubectl create token` works; the pod's token is refused (401) once
//! the pod is deleted; 1,000 malformed, forged or foreign tokens get 401 and the server keeps
//! serving; `automountServiceAccountToken: false` gives no volume. (Expiry is checked with a forged
//! clock in the apiserver's unit tests: the shortest token upstream issues lives 10 minutes.)

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: bb
spec:
  containers:
  - name: bb
    image: busybox
    command: ['sh', '-c', 'sleep 3600']
---
apiVersion: v1
kind: Pod
metadata:
  name: noauto
spec:
  automountServiceAccountToken: false
  containers:
  - name: bb
    image: busybox
    command: ['sh', '-c', 'sleep 3600']
"#;

fn exec(up: &Up, pod: &str, script: &str) -> Output {
    up.kubectl(&["exec", pod, "--", "sh", "-c", script])
}

fn server_url(up: &Up) -> String {
    let kc = std::fs::read_to_string(&up.kubeconfig).expect("kubeconfig");
    kc.lines().find_map(|l| l.trim().strip_prefix("server: ")).expect("server in kubeconfig").trim().to_string()
}

/// `curl` from the host with `token`; returns (HTTP code, body).
fn curl(url: &str, token: &str) -> (String, String) {
    let o = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .expect("curl");
    let out = stdout_of(&o);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

fn whoami(up: &Up, token: &str) -> Output {
    kubectl_with(&up.kubeconfig, &["auth", "whoami", "--token", token, "-o", "json"], None)
}

#[test]
fn service_accounts_in_a_cluster() {
    yard_test_support::require_root("serviceaccount_e2e (yard up)");
    let dir = TempDir::new("satoken");
    let up = Up::start("e2esa", &dir.0.join("data"), &[]);
    let api = server_url(&up);

    // Every namespace, old and new, gets the default ServiceAccount and the root CA.
    up.k(&["create", "namespace", "sa-e2e"]);
    let ca = std::fs::read_to_string(dir.0.join("data/apiserver/pki/ca.crt")).expect("cluster CA");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease", "sa-e2e"] {
        let got = eventually(Duration::from_secs(30), || {
            let sa = up.kubectl(&["get", "sa", "default", "-n", ns, "-o", "name"]);
            let cm = up.kubectl(&["get", "cm", "kube-root-ca.crt", "-n", ns, "-o", "jsonpath={.data.ca\\.crt}"]);
            (sa.status.success() && cm.status.success() && stdout_of(&cm) == ca).then_some(())
        });
        assert!(got.is_some(), "namespace {ns} has no default ServiceAccount or kube-root-ca.crt");
    }
    // Deleted, they come back.
    up.k(&["delete", "sa", "default", "-n", "sa-e2e"]);
    up.k(&["delete", "cm", "kube-root-ca.crt", "-n", "sa-e2e"]);
    let back = eventually(Duration::from_secs(30), || {
        let sa = up.kubectl(&["get", "sa", "default", "-n", "sa-e2e"]);
        let cm = up.kubectl(&["get", "cm", "kube-root-ca.crt", "-n", "sa-e2e"]);
        (sa.status.success() && cm.status.success()).then_some(())
    });
    assert!(back.is_some(), "default ServiceAccount or kube-root-ca.crt not recreated");

    let o = kubectl_with(&up.kubeconfig, &["apply", "-f", "-"], Some(PODS));
    assert!(o.status.success(), "apply: {}", String::from_utf8_lossy(&o.stderr));
    up.k(&["wait", "--for=condition=Ready", "pod", "bb", "noauto", "--timeout=90s"]);

    // The admission plugin's volume and mounts; none with automount off.
    let vols = up.k(&["get", "pod", "bb", "-o", "jsonpath={.spec.volumes[*].name}"]);
    assert!(vols.starts_with("kube-api-access-") && vols.len() == "kube-api-access-".len() + 5, "{vols}");
    let mount = up.k(&["get", "pod", "bb", "-o", "jsonpath={.spec.containers[0].volumeMounts[0].mountPath}"]);
    assert_eq!(mount, SA_DIR);
    assert_eq!(
        up.k(&["get", "pod", "bb", "-o", "jsonpath={.spec.serviceAccountName}/{.spec.serviceAccount}"]),
        "default/default"
    );
    assert_eq!(up.k(&["get", "pod", "noauto", "-o", "jsonpath={.spec.volumes}"]), "");
    let o = exec(&up, "noauto", &format!("ls {SA_DIR}"));
    assert!(!o.status.success(), "noauto has {SA_DIR}");

    // What the pod sees.
    assert_eq!(stdout_of(&exec(&up, "bb", &format!("cat {SA_DIR}/namespace"))), "default");
    assert_eq!(stdout_of(&exec(&up, "bb", &format!("cat {SA_DIR}/ca.crt"))), ca);
    let token = stdout_of(&exec(&up, "bb", &format!("cat {SA_DIR}/token")));
    assert!(token.starts_with("eyJ") && token.split('.').count() == 3, "{token}");
    let o = exec(&up, "bb", &format!("touch {SA_DIR}/x"));
    assert!(!o.status.success(), "the token volume is writable");

    // In-cluster access: the mounted token and CA against kubernetes.default.svc, upstream's 403.
    let script = format!(
        "curl -s --cacert {SA_DIR}/ca.crt -H \"Authorization: Bearer $(cat {SA_DIR}/token)\" https://kubernetes.default.svc/api/v1/namespaces/default/pods"
    );
    let got = eventually(Duration::from_secs(30), || {
        let out = stdout_of(&exec(&up, "bb", &script));
        out.contains("\"code\":403").then_some(out)
    })
    .expect("no 403 from kubernetes.default.svc inside the pod");
    assert_eq!(
        got.trim_end(),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#
    );

    // kubectl auth whoami with the pod's token.
    let o = whoami(&up, &token);
    assert!(o.status.success(), "whoami: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o)).expect("json");
    let ui = &v["status"]["userInfo"];
    assert_eq!(ui["username"], "system:serviceaccount:default:default");
    assert_eq!(ui["uid"], up.k(&["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]).as_str());
    assert_eq!(
        ui["groups"],
        serde_json::json!(["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"])
    );
    assert_eq!(ui["extra"]["authentication.kubernetes.io/pod-name"], serde_json::json!(["bb"]));

    // kubectl create token.
    let t = up.k(&["create", "token", "default", "--duration=10m"]).trim().to_string();
    let o = whoami(&up, &t);
    assert!(o.status.success() && stdout_of(&o).contains("system:serviceaccount:default:default"));
    let o = up.kubectl(&["create", "token", "default", "--duration=1m"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("may not specify a duration less than 10 minutes"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // OIDC discovery for authenticated users.
    let (code, body) = curl(&format!("{api}/.well-known/openid-configuration"), &t);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"issuer\":\"https://kubernetes.default.svc.cluster.local\""), "{body}");
    let (code, body) = curl(&format!("{api}/openid/v1/jwks"), &t);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"kty\":\"EC\""), "{body}");

    // 1,000 bad tokens in a row: each is a 401, and the server keeps serving.
    let mut bad: Vec<String> = Vec::new();
    let parts: Vec<&str> = token.split('.').collect();
    let other: Vec<&str> = t.split('.').collect();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..1000 {
        let tok = match i % 8 {
            // Random text.
            0 => (0..(1 + next() % 300)).map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char).collect(),
            // A real token with one signature character changed.
            1 => {
                let mut sig: Vec<u8> = parts[2].bytes().collect();
                let at = (next() as usize) % sig.len();
                sig[at] = if sig[at] == b'A' { b'B' } else { b'A' };
                format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).unwrap())
            }
            // Another token's claims under this one's signature.
            2 => format!("{}.{}.{}", parts[0], other[1], parts[2]),
            // alg none.
            3 => format!("eyJhbGciOiJub25lIn0.{}.", parts[1]),
            // Truncated.
            4 => token[..(next() as usize) % token.len()].to_string(),
            // Extra segments and junk around a real token.
            5 => format!("{token}.{}", i),
            6 => format!("x{token}"),
            _ => format!("{}..{}", parts[0], parts[2]),
        };
        bad.push(tok);
    }
    let cfg: String = bad
        .iter()
        .map(|t| format!("url = \"{api}/api/v1/namespaces\"\ninsecure\nsilent\nheader = \"Authorization: Bearer {t}\"\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}}\\n\"\nnext\n"))
        .collect();
    let cfg_path = dir.0.join("curl.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let o = Command::new("curl").arg("-K").arg(&cfg_path).output().expect("curl");
    let codes: Vec<String> = stdout_of(&o).lines().map(String::from).collect();
    assert_eq!(codes.len(), 1000, "{}", String::from_utf8_lossy(&o.stderr));
    let not_401: Vec<(usize, &String)> = codes.iter().enumerate().filter(|(_, c)| *c != "401").collect();
    assert!(
        not_401.is_empty(),
        "not 401: {:?}",
        not_401.iter().map(|(i, c)| (c, &bad[*i])).take(5).collect::<Vec<_>>()
    );
    assert_eq!(curl(&format!("{api}/api/v1/namespaces"), &t).0, "403", "a good token after the bad ones");
    up.k(&["get", "ns"]);
    let log = std::fs::read_to_string(dir.0.join("data").with_extension("stderr.log")).unwrap_or_default();
    assert!(log.contains("Unable to authenticate the request"), "no log line for refused tokens");

    // The pod's token stops working once the pod is deleted.
    assert_eq!(curl(&format!("{api}/api"), &token).0, "200");
    up.k(&["delete", "pod", "bb", "--grace-period=0", "--force"]);
    let refused =
        eventually(Duration::from_secs(10), || (curl(&format!("{api}/api"), &token).0 == "401").then_some(()));
    assert!(refused.is_some(), "the deleted pod's token still works");
    assert_eq!(curl(&format!("{api}/api"), &t).0, "200", "an unbound token still works");
}
