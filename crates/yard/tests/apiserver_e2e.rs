//! Issue 2 acceptance: the real kubectl (v1.37, default validation) and the Python client against
//! a freshly started `yard apiserver`, on the embedded store and on a real etcd (issue 8).

mod common;

use std::time::{Duration, Instant};

use common::*;
use yard_store::local_etcd::LocalEtcd;

const EDITED_HOSTNAMES: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hostnames
spec:
  selector:
    matchLabels:
      app: hostnames
  replicas: 2
  template:
    metadata:
      labels:
        app: hostnames
    spec:
      containers:
      - name: hostnames
        image: k8s.gcr.io/serve_hostname
        ports:
        - containerPort: 9376
          protocol: TCP
"#;

#[test]
fn kubectl_session_against_apiserver() {
    let dir = TempDir::new("api");
    kubectl_session(ApiServer::start(&dir.0, &[]));
}

#[test]
fn kubectl_session_against_apiserver_on_etcd() {
    let etcd = LocalEtcd::start(1).expect("start etcd");
    let dir = TempDir::new("api-etcd");
    kubectl_session(ApiServer::start(&dir.0, &["--store", &etcd.url()]));
}

/// The kubectl scenario, run against each store backend.
fn kubectl_session(mut api: ApiServer) {
    let ex = examples_dir();
    let hostnames = ex.join("hostnames.yaml");
    let demo = ex.join("demo.yaml");

    // apply, re-apply, edit.
    let out = api.k(&["apply", "-f", hostnames.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/hostnames created"), "{out}");
    assert!(out.contains("service/hostnames created"), "{out}");
    let out = api.k(&["apply", "-f", hostnames.to_str().unwrap()]);
    assert!(
        out.contains("deployment.apps/hostnames unchanged") && out.contains("service/hostnames unchanged"),
        "{out}"
    );
    let out = api.k_stdin(&["apply", "-f", "-"], EDITED_HOSTNAMES);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment.apps/hostnames configured"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(api.k(&["get", "deploy", "hostnames", "-o", "jsonpath={.spec.replicas}"]), "2");

    let out = api.k(&["apply", "-f", demo.to_str().unwrap()]);
    for want in [
        "namespace/demo created",
        "deployment.apps/nginx-prod-deploy created",
        "service/nginx-prod-svc-demo created",
        "service/nginx-prod-demo-headless-svc created",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out}");
    }

    // Server-side apply.
    let out = api.k(&["apply", "--server-side", "-f", demo.to_str().unwrap()]);
    assert!(out.contains("serverside-applied"), "{out}");

    // Discovery is complete: kubectl caches it and has nothing to complain about.
    let out = api.kubectl(&["api-resources", "-v=6"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("empty response") && !log.contains("Error loading discovery"), "{log}");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in ["deployments ", "endpointslices ", "leases "] {
        assert!(out.contains(want), "api-resources lacks {want:?}: {out}");
    }

    // Tables.
    let out = api.k(&["get", "svc"]);
    let header = out.lines().next().unwrap();
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(cols, ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], "{out}");
    let row = out.lines().find(|l| l.starts_with("hostnames ")).expect("hostnames row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "ClusterIP");
    assert!(cells[2].starts_with("10.9") || cells[2].starts_with("10.1"), "{row}");
    assert_eq!(cells[3], "<none>");
    assert_eq!(cells[4], "80/TCP");
    let out = api.k(&["get", "svc", "-n", "demo", "-o", "wide"]);
    assert!(out.lines().next().unwrap().contains("SELECTOR"), "{out}");
    assert!(out.contains("None") && out.contains("app=nginx,env=prod"), "{out}");
    let out = api.k(&["get", "svc", "-n", "demo", "my-nodeport-service"]);
    assert!(out.contains("80:30000/TCP") && out.contains("NodePort"), "{out}");
    let out = api.k(&["get", "svc", "hostnames", "-o", "yaml"]);
    assert!(
        out.contains("kind: Service") && out.contains("targetPort: 9376") && out.contains("clusterIP: 10."),
        "{out}"
    );
    let out = api.k(&["get", "svc", "hostnames", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["sessionAffinity"], "None");
    assert_eq!(v["spec"]["type"], "ClusterIP");
    let ip = api.k(&["get", "svc", "hostnames", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(v["spec"]["clusterIP"], ip.as_str());
    let out = api.kubectl(&["get", "pods", "-o", "wide"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found in default namespace."), "{out:?}");
    let out = api.k(&["get", "deploy", "-n", "demo"]);
    assert_eq!(
        out.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );

    // get -w shows a change.
    let mut watch = std::process::Command::new(kubectl_bin())
        .env("KUBECONFIG", &api.kubeconfig)
        .args(["get", "svc", "hostnames", "-w", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    api.k(&["label", "svc", "hostnames", "tier=web"]);
    std::thread::sleep(Duration::from_millis(700));
    let _ = watch.kill();
    let wout = String::from_utf8_lossy(&watch.wait_with_output().unwrap().stdout).into_owned();
    assert!(wout.contains("ADDED") && wout.contains("MODIFIED"), "watch output: {wout}");

    // describe.
    let out = api.k(&["describe", "svc", "-n", "demo", "nginx-prod-svc-demo"]);
    for want in [
        "Name:",
        "nginx-prod-svc-demo",
        "Namespace:",
        "demo",
        "Selector:",
        "app=nginx,env=prod",
        "Type:",
        "ClusterIP",
        "IP:",
        "Port:",
        "http  80/TCP",
        "TargetPort:",
        "80/TCP",
        "Session Affinity:",
        "None",
    ] {
        assert!(out.contains(want), "describe lacks {want:?}: {out}");
    }

    // scale, label, annotate.
    let out = api.k(&["scale", "--replicas=2", "deploy", "-n", "demo", "nginx-prod-deploy"]);
    assert!(out.contains("deployment.apps/nginx-prod-deploy scaled"), "{out}");
    assert_eq!(api.k(&["get", "deploy", "-n", "demo", "nginx-prod-deploy", "-o", "jsonpath={.spec.replicas}"]), "2");
    assert!(api.k(&["label", "deploy", "hostnames", "team=a"]).contains("deployment.apps/hostnames labeled"));
    assert!(api.k(&["annotate", "svc", "hostnames", "note=hello"]).contains("service/hostnames annotated"));
    assert_eq!(api.k(&["get", "svc", "hostnames", "-o", "jsonpath={.metadata.annotations.note}"]), "hello");
    assert_eq!(api.k(&["get", "svc", "-l", "tier=web", "-o", "jsonpath={.items[*].metadata.name}"]), "hostnames");
    assert_eq!(api.k(&["get", "svc", "-l", "tier!=web", "-o", "jsonpath={.items[*].metadata.name}"]), "kubernetes");

    // Errors as kubectl prints them for upstream.
    let out = api.kubectl(&["get", "svc", "nope"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): services \"nope\" not found"
    );
    let out = api.kubectl(&["create", "-f", hostnames.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error from server (AlreadyExists): error when creating")
            && err.contains("services \"hostnames\" already exists"),
        "{err}"
    );
    let bad =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  ports:\n  - port: 0\n    targetPort: 80\n";
    let out = api.k_stdin(&["apply", "-f", "-"], bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("The Service \"bad\" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"), "{err}");
    let unknown =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: strict\nspec:\n  bogus: 1\n  ports:\n  - port: 80\n";
    let out = api.k_stdin(&["apply", "-f", "-"], unknown);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("strict decoding error: unknown field \"spec.bogus\""), "{err}");

    // Namespace lifecycle, as upstream's admission: an object may be created right after its
    // namespace, never in a missing one or one being terminated (a finalizer on the ConfigMap keeps
    // the namespace terminating even where a namespace controller runs).
    let nsdoc = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: lifecycle\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: lifecycle\n  finalizers: [example.com/hold]\n";
    let out = api.k_stdin(&["create", "-f", "-"], nsdoc);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("configmap/held created"), "{out:?}");
    let out = api.kubectl(&["create", "configmap", "c", "-n", "nowhere"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: failed to create configmap: namespaces \"nowhere\" not found"
    );
    api.k(&["delete", "ns", "lifecycle", "--wait=false"]);
    let out = api.kubectl(&["create", "configmap", "late", "-n", "lifecycle"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: failed to create configmap: configmaps \"late\" is forbidden: unable to create new content in namespace lifecycle because it is being terminated"
    );
    api.k(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "lifecycle",
        "--type=merge",
        "-p",
        "{\"metadata\":{\"finalizers\":null}}",
    ]);

    // Graceful deletion of a pod bound to a node: it stays, Terminating, through status writes
    // (its node agent reports the containers stopping) until a grace-0 delete; a finalizer holds
    // it after that until the finalizer is removed.
    let pods = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: grace-a\nspec:\n  nodeName: node-x\n  containers:\n  - name: c\n    image: busybox\n---\n\
                apiVersion: v1\nkind: Pod\nmetadata:\n  name: grace-b\n  finalizers: [example.com/hold]\nspec:\n  nodeName: node-x\n  containers:\n  - name: c\n    image: busybox\n";
    let out = api.k_stdin(&["create", "-f", "-"], pods);
    assert!(out.status.success(), "{out:?}");
    let grace = |name: &str| api.k(&["get", "pod", name, "-o", "jsonpath={.metadata.deletionGracePeriodSeconds}"]);
    api.k(&["delete", "pod", "grace-a", "grace-b", "--wait=false"]);
    assert_eq!(grace("grace-a"), "30");
    api.k(&[
        "patch",
        "pod",
        "grace-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        "{\"status\":{\"phase\":\"Running\"}}",
    ]);
    assert_eq!(api.k(&["get", "pod", "grace-a", "-o", "jsonpath={.status.phase}"]), "Running");
    assert!(api.k(&["get", "pod", "grace-a"]).contains("Terminating"));
    api.k(&["delete", "pod", "grace-a", "--grace-period=0", "--force"]);
    let out = api.kubectl(&["get", "pod", "grace-a"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "Error from server (NotFound): pods \"grace-a\" not found");
    api.k(&["delete", "pod", "grace-b", "--grace-period=0", "--force", "--wait=false"]);
    assert_eq!(grace("grace-b"), "0");
    api.k(&["patch", "pod", "grace-b", "--type=merge", "-p", "{\"metadata\":{\"finalizers\":null}}"]);
    let out = api.kubectl(&["get", "pod", "grace-b"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "Error from server (NotFound): pods \"grace-b\" not found");

    // A delete that does not remove the object at once answers 200, or 202 when the client set
    // orphanDependents=false (upstream's rule).
    api.k(&["create", "configmap", "held2"]);
    api.k(&[
        "patch",
        "configmap",
        "held2",
        "--type=merge",
        "-p",
        "{\"metadata\":{\"finalizers\":[\"example.com/hold\"]}}",
    ]);
    let code = |query: &str| {
        let out =
            api.kubectl(&["delete", "--raw", &format!("/api/v1/namespaces/default/configmaps/held2{query}"), "-v=6"]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        // kubectl's -v=6 line: `"Response" verb="DELETE" url="..." status="202 Accepted" ...`.
        let line = log.lines().find(|l| l.contains("verb=\"DELETE\"")).unwrap_or_else(|| panic!("{log}")).to_string();
        line.split("status=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_else(|| panic!("{line}")).to_string()
    };
    assert_eq!(code("?orphanDependents=false"), "202 Accepted");
    assert_eq!(code("?orphanDependents=false"), "202 Accepted");
    assert_eq!(code(""), "200 OK");
    api.k(&["patch", "configmap", "held2", "--type=merge", "-p", "{\"metadata\":{\"finalizers\":null}}"]);
    assert!(!api.kubectl(&["get", "configmap", "held2"]).status.success());

    // delete returns promptly.
    let t = Instant::now();
    let out = api.k(&["delete", "svc", "hostnames"]);
    assert!(out.contains("service \"hostnames\" deleted"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(5), "delete took {:?}", t.elapsed());
    let t = Instant::now();
    api.k(&["delete", "deploy", "hostnames"]);
    assert!(t.elapsed() < Duration::from_secs(5), "delete took {:?}", t.elapsed());

    // Survives kill -9 with the same resourceVersions.
    let before = api.k(&[
        "get",
        "svc,deploy",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
    ]);
    api.restart();
    let after = api.k(&[
        "get",
        "svc,deploy",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
    ]);
    assert_eq!(before, after);
    assert!(before.contains("demo/nginx-prod-svc-demo="), "{before}");
}

/// A file whose top-level kind is `List` (what `kubectl get -o json` prints) is no served kind, so
/// kubectl validates its items itself, against the OpenAPI v2 definitions (fetched as protobuf).
#[test]
fn kubectl_list_files_validate_against_openapi_v2() {
    let dir = TempDir::new("openapi-v2");
    let api = ApiServer::start(&dir.0, &[]);
    let svc = |name: &str, extra: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}"}},"spec":{{{extra}"ports":[{{"port":80,"targetPort":8080}}],"selector":{{"app":"{name}"}}}}}}"#
        )
    };
    let list = |items: &[String]| {
        format!(
            r#"{{"apiVersion":"v1","kind":"List","metadata":{{"resourceVersion":""}},"items":[{}]}}"#,
            items.join(",")
        )
    };
    let write = |name: &str, body: String| {
        let p = dir.0.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };

    // create -f: a List of two Services.
    let f = write("two.json", list(&[svc("list-a", ""), svc("list-b", "")]));
    let out = api.kubectl(&["create", "-f", &f, "-v=6"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("verb=\"GET\"") && l.contains("/openapi/v2?") && l.contains("200 OK")),
        "{stderr}"
    );
    assert!(stdout.contains("service/list-a created") && stdout.contains("service/list-b created"), "{stdout}");
    assert_eq!(api.k(&["get", "svc", "list-a", "list-b", "-o", "name"]), "service/list-a\nservice/list-b\n");

    // What `kubectl get -o json` prints for several objects goes back in as it came out.
    let dump = api.k(&["get", "svc", "list-a", "list-b", "-o", "json"]);
    assert!(dump.contains("\"kind\": \"List\""), "{dump}");
    let f = write("dump.json", dump);
    let out = api.kubectl(&["apply", "-f", &f]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // apply -f: a List of a ConfigMap and a Service; applying it again changes nothing.
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"list-cm"},"data":{"k":"v"}}"#.to_string();
    let f = write("mixed.json", list(&[cm, svc("list-c", "")]));
    let out = api.k(&["apply", "-f", &f]);
    assert!(out.contains("configmap/list-cm created") && out.contains("service/list-c created"), "{out}");
    let out = api.kubectl(&["apply", "-f", &f]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    assert!(stdout.contains("configmap/list-cm unchanged") && stdout.contains("service/list-c unchanged"), "{stdout}");
    assert_eq!(api.k(&["get", "cm", "list-cm", "-o", "jsonpath={.data.k}"]), "v");

    // An unknown field in an item: kubectl's own validation rejects the file, naming the field
    // and the definition, and nothing is created.
    let f = write("bad.json", list(&[svc("list-ok", ""), svc("list-bad", r#""bogus":1,"#)]));
    let out = api.kubectl(&["create", "-f", &f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("error validating \"{f}\": error validating data: ")), "{err}");
    assert!(
        err.contains("ValidationError(Service.spec): unknown field \"bogus\" in io.k8s.api.core.v1.ServiceSpec"),
        "{err}"
    );
    eprintln!("kubectl create -f bad.json: {}", err.trim());
    assert!(err.contains("if you choose to ignore these errors, turn validation off with --validate=false"), "{err}");
    assert!(!api.kubectl(&["get", "svc", "list-ok"]).status.success());
    // A wrongly typed field too.
    let f = write("badtype.json", list(&[svc("list-bad", r#""sessionAffinityConfig":"x","#)]));
    let err = String::from_utf8_lossy(&api.kubectl(&["create", "-f", &f]).stderr).into_owned();
    assert!(err.contains("ValidationError(Service.spec.sessionAffinityConfig): invalid type for io.k8s.api.core.v1.SessionAffinityConfig: got \"string\", expected \"map\""), "{err}");
    // With validation off the server decides (and its strict decoding drops nothing silently).
    let out = api.kubectl(&["create", "--validate=false", "-f", &f]);
    assert!(!out.status.success());

    // Served kinds keep server-side validation.
    let single = svc("single", r#""bogus":1,"#);
    let err = String::from_utf8_lossy(&api.k_stdin(&["create", "-f", "-"], &single).stderr).into_owned();
    assert!(err.contains("strict decoding error: unknown field \"spec.bogus\""), "{err}");

    // The document itself, as JSON (about half a megabyte).
    let out = api.kubectl(&["get", "--raw", "/openapi/v2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("OpenAPI v2 JSON");
    assert_eq!(v["swagger"], "2.0");
    assert_eq!(
        v["definitions"]["io.k8s.api.core.v1.Service"]["x-kubernetes-group-version-kind"],
        serde_json::json!([{"group": "", "version": "v1", "kind": "Service"}])
    );
    assert!(v["definitions"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"].is_object());
    assert_eq!(v["paths"]["/api/v1/namespaces/{namespace}/services"]["post"]["x-kubernetes-action"], "post");
}

#[test]
fn unauthenticated_requests_get_401_status() {
    let dir = TempDir::new("auth");
    let api = ApiServer::start(&dir.0, &[]);
    let out = std::process::Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{}/api/v1/namespaces", api.port)])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("Status JSON");
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["code"], 401);
    assert_eq!(v["reason"], "Unauthorized");
}

#[test]
fn python_client_crud_conflict_and_watch() {
    let dir = TempDir::new("py");
    python_client(ApiServer::start(&dir.0, &[]));
}

#[test]
fn python_client_crud_conflict_and_watch_on_etcd() {
    let etcd = LocalEtcd::start(1).expect("start etcd");
    let dir = TempDir::new("py-etcd");
    python_client(ApiServer::start(&dir.0, &["--store", &etcd.url()]));
}

fn python_client(api: ApiServer) {
    let script = repo_root().join("tests/python/client_test.py");
    let out =
        std::process::Command::new(python_bin()).arg(&script).env("KUBECONFIG", &api.kubeconfig).output().unwrap();
    assert!(
        out.status.success(),
        "python client test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client: ok"));
}
