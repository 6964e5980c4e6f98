//! Request parsing compared with upstream kube-apiserver 1.37, over raw HTTPS (curl) and kubectl
//! against the real `yard apiserver`: trailing slashes, legacy watch paths, query booleans and
//! integers, ListOptions / CreateOptions / DeleteOptions validation, dryRun, generateName and
//! request bodies that are too large or stall. Each expected text is upstream's.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ApiServer, TempDir};
use serde_json::{json, Value};

/// Raw HTTPS to the server with its admin token, through curl.
struct Http {
    base: String,
    token: String,
}

impl Http {
    fn new(api: &ApiServer) -> Self {
        let kc = std::fs::read_to_string(&api.kubeconfig).expect("kubeconfig");
        let token = kc
            .lines()
            .find_map(|l| l.trim().strip_prefix("token:").map(|t| t.trim().to_string()))
            .expect("token in kubeconfig");
        Http { base: format!("https://127.0.0.1:{}", api.port), token }
    }

    /// `(status code, body as JSON or Null)`.
    fn call(&self, method: &str, path: &str, body: Option<&str>, ct: &str) -> (u16, Value) {
        let (code, raw) = self.call_raw(method, path, body, ct);
        (code, serde_json::from_slice(&raw).unwrap_or(Value::Null))
    }

    fn call_raw(&self, method: &str, path: &str, body: Option<&str>, ct: &str) -> (u16, Vec<u8>) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-m", "20", "-X", method, "-w", "\n%{http_code}"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg("-H")
            .arg(format!("Content-Type: {ct}"));
        if body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        cmd.arg(format!("{}{path}", self.base)).stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("curl");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(b) = body {
            stdin.write_all(b.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = out.stdout;
        let at = text.iter().rposition(|c| *c == b'\n').expect("status line from curl");
        let code = String::from_utf8_lossy(&text[at + 1..]).trim().parse().unwrap_or(0);
        (code, text[..at].to_vec())
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, "application/json")
    }
}

fn status(v: &Value) -> (u64, &str, &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    (v["code"].as_u64().unwrap_or(0), v["reason"].as_str().unwrap_or(""), v["message"].as_str().unwrap_or(""))
}

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str, data: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": data}}).to_string()
}

#[test]
fn paths_with_trailing_slashes_and_legacy_watch_paths() {
    let dir = TempDir::new("compat-paths");
    let api = ApiServer::start(&dir.0, &[]);
    let h = Http::new(&api);

    // Upstream's router ignores trailing slashes: the same document with and without.
    for (p, kind) in [
        ("/version", None),
        ("/api", Some("APIVersions")),
        ("/apis", Some("APIGroupList")),
        ("/api/v1", Some("APIResourceList")),
        ("/apis/apps/v1", Some("APIResourceList")),
        ("/apis/apps", Some("APIGroup")),
        ("/api/v1/namespaces/default/configmaps", Some("ConfigMapList")),
        ("/api/v1/namespaces/default", Some("Namespace")),
    ] {
        let (c1, plain) = h.get(p);
        let (c2, slashed) = h.get(&format!("{p}/"));
        assert_eq!((c1, c2), (200, 200), "{p}: {plain} / {slashed}");
        if let Some(k) = kind {
            assert_eq!(slashed["kind"], k, "{p}/");
        }
        assert_eq!(plain["kind"], slashed["kind"], "{p}");
    }
    // /version/ is open, as /version is (system:public-info-viewer lists both).
    let out = Command::new("curl").args(["-sk", &format!("{}/version/", h.base)]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("version JSON");
    assert_eq!(v["major"], "1");
    // kubectl asks for the slash form too.
    let out = api.k(&["get", "--raw", "/version/"]);
    assert!(out.contains("\"gitVersion\""), "{out}");

    // A legacy watch path is a watch, even with watch=false in the query; by name, of that object.
    let (c, _) = h.call("POST", CM, Some(&cm("w1", "a")), "application/json");
    assert_eq!(c, 201);
    let (c, _) = h.call("POST", CM, Some(&cm("w2", "a")), "application/json");
    assert_eq!(c, 201);
    let out = Command::new("curl")
        .args(["-sk", "-N", "-m", "3", "-H"])
        .arg(format!("Authorization: Bearer {}", h.token))
        .arg(format!("{}/api/v1/watch/namespaces/default/configmaps/w2?watch=false", h.base))
        .output()
        .unwrap();
    let events: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "w2");
    let out = Command::new("curl")
        .args(["-sk", "-N", "-m", "3", "-H"])
        .arg(format!("Authorization: Bearer {}", h.token))
        .arg(format!("{}/api/v1/watch/namespaces/default/configmaps/", h.base))
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("\"ADDED\"")).count();
    assert_eq!(n, 2);
    // A field selector naming another object on a named watch is upstream's 400.
    let (c, v) = h.get("/api/v1/watch/namespaces/default/configmaps/w2?fieldSelector=metadata.name%3Dw1");
    assert_eq!(c, 400);
    assert_eq!(status(&v), (400, "BadRequest", "fieldSelector metadata.name doesn't match requested name"));
}

/// Open a watch with `query` and report whether the server answered with a stream (a watch) or
/// a list.
fn is_watch(h: &Http, query: &str) -> bool {
    let out = Command::new("curl")
        .args(["-sk", "-N", "-m", "2", "-H"])
        .arg(format!("Authorization: Bearer {}", h.token))
        .arg(format!("{}{CM}?{query}", h.base))
        .output()
        .unwrap();
    // curl's user agent gets pretty-printed JSON, as upstream gives it: compare without blanks.
    let text: String = String::from_utf8_lossy(&out.stdout).chars().filter(|c| !c.is_whitespace()).collect();
    assert!(!text.contains("\"kind\":\"Status\""), "{query}: {text}");
    !text.contains("\"kind\":\"ConfigMapList\"")
}

#[test]
fn query_parameters_convert_and_validate_as_upstream() {
    let dir = TempDir::new("compat-params");
    let api = ApiServer::start(&dir.0, &[]);
    let h = Http::new(&api);

    // Upstream's query booleans: false only for false/0 in any case; anything else is true.
    for q in ["watch=true", "watch=True", "watch=TRUE", "watch=t", "watch=1", "watch=yes", "watch="] {
        assert!(is_watch(&h, q), "{q}");
    }
    for q in ["watch=false", "watch=FALSE", "watch=False", "watch=0", "pretty=true"] {
        assert!(!is_watch(&h, q), "{q}");
    }

    // Integers go through strconv.ParseInt: a failure is a 400 with Go's text.
    for (q, msg) in [
        ("limit=abc", "strconv.ParseInt: parsing \"abc\": invalid syntax"),
        ("timeoutSeconds=1.5", "strconv.ParseInt: parsing \"1.5\": invalid syntax"),
        ("limit=99999999999999999999", "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"),
    ] {
        let (c, v) = h.get(&format!("{CM}?{q}"));
        assert_eq!(c, 400, "{q}");
        assert_eq!(status(&v), (400, "BadRequest", msg), "{q}");
    }
    // A resourceVersion that is not a number is a 400 on list and on get (was ignored: 200).
    for path in [CM.to_string(), format!("{CM}/kube-root-ca.crt")] {
        let (c, v) = h.get(&format!("{path}?resourceVersion=abc"));
        assert_eq!(status(&v), (400, "BadRequest", "invalid resource version: abc"), "{path}: {c}");
    }
    // limit=-1 is a number: no limit.
    assert_eq!(h.get(&format!("{CM}?limit=-1")).0, 200);

    // ValidateListOptions: 422 on ListOptions.meta.k8s.io.
    let inv = |q: &str, msg: &str| {
        let (c, v) = h.get(&format!("{CM}?{q}"));
        assert_eq!(c, 422, "{q}: {v}");
        assert_eq!(status(&v), (422, "Invalid", msg), "{q}");
        assert_eq!(v["details"]["group"], "meta.k8s.io");
        assert_eq!(v["details"]["kind"], "ListOptions");
        v
    };
    let v = inv(
        "resourceVersionMatch=NotOlderThan",
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
    );
    assert_eq!(
        v["details"]["causes"],
        json!([{"reason": "FieldValueForbidden", "message": "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided", "field": "resourceVersionMatch"}])
    );
    inv(
        "resourceVersion=0&resourceVersionMatch=Exact",
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
    );
    inv(
        "resourceVersion=5&resourceVersionMatch=Newest",
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\"",
    );
    inv(
        "sendInitialEvents=true",
        "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list",
    );
    inv(
        "watch=1&sendInitialEvents=true",
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
    );
    inv(
        "watch=1&resourceVersionMatch=NotOlderThan",
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
    );
    inv(
        "resourceVersionMatch=Exact&continue=abc",
        "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided, resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided]",
    );
    // kubectl shows the same message.
    let out = api.kubectl(&["get", "--raw", &format!("{CM}?resourceVersionMatch=Exact")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("resourceVersionMatch is forbidden unless resourceVersion is provided"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn write_options_dry_run_and_names_as_upstream() {
    let dir = TempDir::new("compat-writes");
    let api = ApiServer::start(&dir.0, &[]);
    let h = Http::new(&api);
    let json_ct = "application/json";

    // dryRun other than All: 422 on the verb's options kind and nothing written.
    for (q, shown) in
        [("dryRun=Foo", "[\"Foo\"]"), ("dryRun=true", "[\"true\"]"), ("dryRun=All&dryRun=x", "[\"All\",\"x\"]")]
    {
        let (c, v) = h.call("POST", &format!("{CM}?{q}"), Some(&cm("d1", "a")), json_ct);
        assert_eq!(c, 422, "{q}: {v}");
        let msg = format!(
            "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: {shown}: supported values: \"All\""
        );
        assert_eq!(status(&v), (422, "Invalid", msg.as_str()), "{q}");
        assert_eq!(h.get(&format!("{CM}/d1")).0, 404, "{q} wrote the object");
    }
    let (c, v) = h.call("POST", &format!("{CM}?fieldValidation=Loud"), Some(&cm("d1", "a")), json_ct);
    assert_eq!(c, 422);
    assert_eq!(
        status(&v).2,
        "CreateOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \"Loud\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
    );
    assert_eq!(h.get(&format!("{CM}/d1")).0, 404);

    // dryRun=All writes nothing for create, update, patch and delete.
    let (c, _) = h.call("POST", &format!("{CM}?dryRun=All"), Some(&cm("d1", "a")), json_ct);
    assert_eq!(c, 201);
    assert_eq!(h.get(&format!("{CM}/d1")).0, 404);
    let (c, _) = h.call("POST", CM, Some(&cm("d1", "a")), json_ct);
    assert_eq!(c, 201);
    let (_, before) = h.get(&format!("{CM}/d1"));
    let (c, v) = h.call("PUT", &format!("{CM}/d1?dryRun=Bar"), Some(&cm("d1", "b")), json_ct);
    assert_eq!((c, status(&v).2.starts_with("UpdateOptions.meta.k8s.io \"\" is invalid: dryRun")), (422, true), "{v}");
    let (c, _) = h.call("PUT", &format!("{CM}/d1?dryRun=All"), Some(&cm("d1", "b")), json_ct);
    assert_eq!(c, 200);
    let (c, v) =
        h.call("PATCH", &format!("{CM}/d1?dryRun=Baz"), Some(r#"{"data":{"k":"c"}}"#), "application/merge-patch+json");
    assert_eq!((c, status(&v).2.starts_with("PatchOptions.meta.k8s.io \"\" is invalid: dryRun")), (422, true), "{v}");
    let (c, _) =
        h.call("PATCH", &format!("{CM}/d1?dryRun=All"), Some(r#"{"data":{"k":"c"}}"#), "application/merge-patch+json");
    assert_eq!(c, 200);
    let (c, v) = h.call("DELETE", &format!("{CM}/d1?dryRun=Qux"), None, json_ct);
    assert_eq!(c, 422);
    assert_eq!(
        status(&v).2,
        "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: [\"Qux\"]: supported values: \"All\""
    );
    let (c, _) = h.call("DELETE", &format!("{CM}/d1?dryRun=All"), None, json_ct);
    assert_eq!(c, 200);
    let (_, after) = h.get(&format!("{CM}/d1"));
    assert_eq!(before, after, "a rejected or dry-run write changed the object");
    // kubectl's server-side dry run is dryRun=All.
    api.k(&["delete", "configmap", "d1", "--dry-run=server"]);
    assert_eq!(h.get(&format!("{CM}/d1")).0, 200);

    // Patch options: force only on apply, fieldManager required for apply.
    let (c, v) =
        h.call("PATCH", &format!("{CM}/d1?force=true"), Some(r#"{"data":{"k":"c"}}"#), "application/merge-patch+json");
    assert_eq!(c, 422);
    assert_eq!(
        status(&v).2,
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
    let (c, v) = h.call("PATCH", &format!("{CM}/d1"), Some(&cm("d1", "z")), "application/apply-patch+yaml");
    assert_eq!(c, 422);
    assert_eq!(
        status(&v).2,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );

    // DeleteOptions: orphanDependents with propagationPolicy, in the query or the body.
    let (c, v) =
        h.call("DELETE", &format!("{CM}/d1?orphanDependents=false&propagationPolicy=Foreground"), None, json_ct);
    assert_eq!(c, 422);
    let want = "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: \"Foreground\": orphanDependents and deletionPropagation cannot be both set";
    assert_eq!(status(&v), (422, "Invalid", want));
    let body = r#"{"kind":"DeleteOptions","apiVersion":"v1","orphanDependents":true,"propagationPolicy":"Foreground"}"#;
    let (c, v) = h.call("DELETE", &format!("{CM}/d1"), Some(body), json_ct);
    assert_eq!((c, status(&v).2), (422, want));
    let (c, v) = h.call("DELETE", &format!("{CM}/d1?propagationPolicy=Sometimes"), None, json_ct);
    assert_eq!(c, 422);
    assert_eq!(
        status(&v).2,
        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Sometimes\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
    );
    let (c, v) = h.call("DELETE", &format!("{CM}/d1?gracePeriodSeconds=soon"), None, json_ct);
    assert_eq!((c, status(&v).2), (400, "strconv.ParseInt: parsing \"soon\": invalid syntax"));
    assert_eq!(h.get(&format!("{CM}/d1")).0, 200, "a rejected delete deleted");

    // DELETE of a ConfigMap (ReturnDeletedObject=false upstream) answers with a Success Status;
    // of a ServiceAccount (true) with the object; an object a finalizer keeps with the object.
    let (_, before) = h.get(&format!("{CM}/d1"));
    let (c, v) = h.call("DELETE", &format!("{CM}/d1"), None, json_ct);
    assert_eq!(c, 200);
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "d1", "kind": "configmaps", "uid": before["metadata"]["uid"]}})
    );
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa1"}}).to_string();
    let (c, _) = h.call("POST", "/api/v1/namespaces/default/serviceaccounts", Some(&sa), json_ct);
    assert_eq!(c, 201);
    let (c, v) = h.call("DELETE", "/api/v1/namespaces/default/serviceaccounts/sa1", None, json_ct);
    assert_eq!((c, v["kind"].as_str()), (200, Some("ServiceAccount")), "{v}");
    let held = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
        .to_string();
    let (c, _) = h.call("POST", CM, Some(&held), json_ct);
    assert_eq!(c, 201);
    let (c, v) = h.call("DELETE", &format!("{CM}/held"), None, json_ct);
    assert_eq!((c, v["kind"].as_str()), (200, Some("ConfigMap")), "{v}");
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let (c, v) = h.call(
        "PATCH",
        &format!("{CM}/held"),
        Some(r#"{"metadata":{"finalizers":null}}"#),
        "application/merge-patch+json",
    );
    assert_eq!(c, 200, "{v}");
    assert_eq!(h.get(&format!("{CM}/held")).0, 404);
    // The Deployment apps group shows in the details.
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dp"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    .to_string();
    let (c, v) = h.call("POST", "/apis/apps/v1/namespaces/default/deployments", Some(&dep), json_ct);
    assert_eq!(c, 201, "{v}");
    let (c, v) = h.call("DELETE", "/apis/apps/v1/namespaces/default/deployments/dp", None, json_ct);
    assert_eq!(c, 200);
    assert_eq!(
        (v["status"].as_str(), v["details"]["group"].as_str(), v["details"]["kind"].as_str()),
        (Some("Success"), Some("apps"), Some("deployments")),
        "{v}"
    );

    // An apply patch without the resource's apiVersion/kind: the field manager's 400.
    for (body, shown) in [
        (r#"{"metadata":{"name":"d1"}}"#, "/, Kind="),
        (r#"{"apiVersion":"v1","metadata":{"name":"d1"}}"#, "/v1, Kind="),
        (r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"d1"}}"#, "apps/v1, Kind=ConfigMap"),
    ] {
        let (c, v) = h.call("PATCH", &format!("{CM}/d1?fieldManager=m"), Some(body), "application/apply-patch+yaml");
        assert_eq!(c, 400, "{body}: {v}");
        assert_eq!(status(&v), (400, "BadRequest", format!("invalid object type: {shown}").as_str()));
    }

    // A create carrying a resourceVersion: upstream storage's error (500, no reason); "0" is unset.
    let with_rv = |rv: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rv", "resourceVersion": rv}}).to_string()
    };
    let (c, v) = h.call("POST", CM, Some(&with_rv("12")), json_ct);
    assert_eq!(c, 500);
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "resourceVersion should not be set on objects to be created", "code": 500})
    );
    assert_eq!(h.get(&format!("{CM}/rv")).0, 404);
    assert_eq!(h.call("POST", CM, Some(&with_rv("0")), json_ct).0, 201);

    // PUT to a missing object: creates a Service (AllowCreateOnUpdate), 404 for a ConfigMap.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "put-svc"},
                     "spec": {"ports": [{"port": 80}]}})
    .to_string();
    let (c, v) = h.call("PUT", "/api/v1/namespaces/default/services/put-svc", Some(&svc), json_ct);
    assert_eq!(c, 201, "{v}");
    assert!(v["spec"]["clusterIP"].is_string(), "{v}");
    let (c, v) = h.call("PUT", &format!("{CM}/put-cm"), Some(&cm("put-cm", "a")), json_ct);
    assert_eq!(c, 404);
    assert_eq!(status(&v), (404, "NotFound", "configmaps \"put-cm\" not found"));

    // generateName: the prefix is cut to 58 characters before the 5 random ones.
    let prefix = "g".repeat(70);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": prefix}}).to_string();
    let (c, v) = h.call("POST", CM, Some(&body), json_ct);
    assert_eq!(c, 201, "{v}");
    let name = v["metadata"]["name"].as_str().unwrap();
    assert_eq!(name.len(), 63, "{name}");
    assert!(name.starts_with(&"g".repeat(58)));
    assert_eq!(v["metadata"]["generateName"], prefix.as_str());
}

#[test]
fn oversized_and_stalled_bodies_do_not_stop_the_server() {
    let dir = TempDir::new("compat-bodies");
    let api = ApiServer::start(&dir.0, &[]);
    let h = Http::new(&api);

    // A stalled chunked upload: curl reads the body from a pipe this test never writes to.
    let mut stalled = Command::new("curl")
        .args(["-sk", "-m", "60", "-X", "POST", "-T", "-", "-H"])
        .arg(format!("Authorization: Bearer {}", h.token))
        .args(["-H", "Content-Type: application/json"])
        .arg(format!("{}{CM}", h.base))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stalled_in = stalled.stdin.take().unwrap();
    stalled_in.write_all(b"{\"apiVersion\":\"v1\",").unwrap();
    stalled_in.flush().unwrap();

    // A 20 MB body with a Content-Length: upstream's 413 Status.
    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "x".repeat(20 << 20)
    );
    let file = dir.0.join("big.json");
    std::fs::write(&file, &big).unwrap();
    let big_req = {
        let (token, base, file) = (h.token.clone(), h.base.clone(), file.clone());
        std::thread::spawn(move || {
            Command::new("curl")
                // HTTP/1.1: curl 7.88 drops an HTTP/2 response that arrives while it still uploads
                // (kubectl, over HTTP/2, is checked below).
                .args(["-sk", "--http1.1", "-m", "60", "-X", "POST", "-w", "\n%{http_code}", "-H"])
                .arg(format!("Authorization: Bearer {token}"))
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", file.display()))
                .arg(format!("{base}{CM}"))
                .output()
                .unwrap()
        })
    };
    // Meanwhile everyone else is served.
    let started = Instant::now();
    let others: Vec<_> = (0..4)
        .map(|i| {
            let (token, base) = (h.token.clone(), h.base.clone());
            std::thread::spawn(move || {
                let h = Http { base, token };
                for j in 0..3 {
                    let (c, v) = h.call("POST", CM, Some(&cm(&format!("o-{i}-{j}"), "v")), "application/json");
                    assert_eq!(c, 201, "{v}");
                }
            })
        })
        .collect();
    for o in others {
        o.join().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(20), "others were held up: {:?}", started.elapsed());
    let out = big_req.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code.trim(), "413", "{text:.300}");
    let v: Value = serde_json::from_str(body).expect("Status JSON");
    assert_eq!(status(&v), (413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728"));
    assert_eq!(h.get(&format!("{CM}/big")).0, 404);
    let out = api.kubectl(&["create", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error from server (RequestEntityTooLarge)")
            && err.contains("Request entity too large: limit is 3145728"),
        "{err:.300}"
    );

    // The stalled upload is still pending and harmless; end it (our own child, by PID).
    assert!(stalled.try_wait().unwrap().is_none());
    drop(stalled_in);
    let _ = stalled.kill();
    let _ = stalled.wait();
    assert_eq!(h.get(CM).0, 200);
}
