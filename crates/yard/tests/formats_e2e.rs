//! Response formats against the real yard binary: protobuf objects, lists, errors and watch
//! streams (checked with `protoc --decode_raw` and by sending the protobuf back), YAML, 406
//! NotAcceptable, PartialObjectMetadata(List), Tables paged by `kubectl get --chunk-size`, the
//! meta.k8s.io/v1beta1 Table, and pretty printing.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{ApiServer, TempDir};
use serde_json::Value;

struct Client<'a> {
    api: &'a ApiServer,
    token: String,
    dir: &'a std::path::Path,
}

/// An answer: status code, content type, body.
struct Answer {
    code: u16,
    ct: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client<'_> {
    /// A request with curl; `extra` are more curl arguments (headers, method, body).
    fn req(&self, path: &str, accept: Option<&str>, extra: &[&str]) -> Answer {
        let out_file = self.dir.join("body.out");
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-o"]).arg(&out_file).args(["-w", "%{http_code} %{content_type}"]);
        cmd.args(["-H", &format!("Authorization: Bearer {}", self.token)]);
        if let Some(a) = accept {
            cmd.args(["-H", &format!("Accept: {a}")]);
        }
        cmd.args(extra).arg(format!("https://127.0.0.1:{}{path}", self.api.port));
        let out = cmd.output().expect("curl");
        let w = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, ct) = w.split_once(' ').unwrap_or((&w, ""));
        let body = std::fs::read(&out_file).unwrap_or_default();
        let _ = std::fs::remove_file(&out_file);
        Answer { code: code.parse().unwrap_or(0), ct: ct.to_string(), body }
    }
}

/// `protoc --decode_raw` of a protobuf message: the external decoder's text form.
fn decode_raw(msg: &[u8]) -> String {
    let mut child = Command::new("protoc")
        .arg("--decode_raw")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("protoc");
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "protoc --decode_raw failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The envelope of a protobuf body, decoded by protoc after the `k8s\0` magic.
fn decode_body(body: &[u8]) -> String {
    assert!(body.starts_with(b"k8s\0"), "no protobuf magic: {:?}", &body[..body.len().min(16)]);
    decode_raw(&body[4..])
}

#[test]
fn response_formats() {
    let dir = TempDir::new("formats");
    let api = ApiServer::start(&dir.0, &[]);
    let kc = std::fs::read_to_string(&api.kubeconfig).unwrap();
    let token = kc.lines().find_map(|l| l.trim().strip_prefix("token: ")).expect("token").to_string();
    let c = Client { api: &api, token, dir: &dir.0 };

    api.k(&["create", "namespace", "fmt"]);
    for i in 0..7 {
        api.k(&["-n", "fmt", "create", "configmap", &format!("cm-{i}"), &format!("--from-literal=k{i}=v{i}")]);
    }
    api.k(&["-n", "fmt", "create", "secret", "generic", "s1", "--from-literal=password=hunter2"]);
    api.k(&["-n", "fmt", "create", "service", "clusterip", "web", "--tcp=80:8080"]);
    api.k(&["-n", "fmt", "create", "serviceaccount", "robot"]);

    const PB: &str = "application/vnd.kubernetes.protobuf";

    // --- protobuf: one object, read by protoc, and sent back (the server's decoder).
    let a = c.req("/api/v1/namespaces/fmt/configmaps/cm-3", Some(PB), &[]);
    assert_eq!(a.code, 200);
    assert_eq!(a.ct, PB);
    let raw = decode_body(&a.body);
    assert!(raw.contains("\"v1\"") && raw.contains("\"ConfigMap\"") && raw.contains("\"cm-3\""), "{raw}");
    assert!(raw.contains("\"k3\"") && raw.contains("\"v3\""), "{raw}");
    let json = c.req("/api/v1/namespaces/fmt/configmaps/cm-3", Some("application/json"), &[]).json();
    let body_file = dir.0.join("cm.pb");
    std::fs::write(&body_file, &a.body).unwrap();
    let put = c.req(
        "/api/v1/namespaces/fmt/configmaps/cm-3",
        Some("application/json"),
        &["-X", "PUT", "-H", &format!("Content-Type: {PB}"), "--data-binary", &format!("@{}", body_file.display())],
    );
    assert_eq!(put.code, 200, "{}", put.text());
    let back = put.json();
    // The same object came back (only the resourceVersion of a no-op update may move).
    for k in ["name", "namespace", "uid", "creationTimestamp"] {
        assert_eq!(back["metadata"][k], json["metadata"][k], "{k}");
    }
    assert_eq!(back["data"], json["data"]);

    // Every kind Yard stores round-trips: GET as protobuf, PUT it back, same JSON.
    for path in [
        "/api/v1/namespaces/fmt/secrets/s1",
        "/api/v1/namespaces/fmt/services/web",
        "/api/v1/namespaces/fmt/serviceaccounts/robot",
        "/api/v1/namespaces/fmt",
    ] {
        let before = c.req(path, None, &[]).json();
        let pb = c.req(path, Some(PB), &[]);
        assert_eq!((pb.code, pb.ct.as_str()), (200, PB), "{path}");
        decode_body(&pb.body);
        std::fs::write(&body_file, &pb.body).unwrap();
        let put = c.req(
            path,
            None,
            &["-X", "PUT", "-H", &format!("Content-Type: {PB}"), "--data-binary", &format!("@{}", body_file.display())],
        );
        assert_eq!(put.code, 200, "{path}: {}", put.text());
        let mut after = put.json();
        let mut before = before;
        for v in [&mut before, &mut after] {
            v["metadata"].as_object_mut().unwrap().remove("resourceVersion");
            v["metadata"].as_object_mut().unwrap().remove("managedFields");
        }
        assert_eq!(after, before, "{path}");
    }

    // A list: ConfigMapList envelope, all seven items.
    let a = c.req("/api/v1/namespaces/fmt/configmaps", Some(&format!("{PB}, application/json")), &[]);
    assert_eq!((a.code, a.ct.as_str()), (200, PB));
    let raw = decode_body(&a.body);
    assert!(raw.contains("\"ConfigMapList\""), "{raw}");
    for i in 0..7 {
        assert!(raw.contains(&format!("\"cm-{i}\"")), "cm-{i} missing: {raw}");
    }

    // An error is a protobuf Status.
    let a = c.req("/api/v1/namespaces/fmt/configmaps/nope", Some(PB), &[]);
    assert_eq!((a.code, a.ct.as_str()), (404, PB));
    let raw = decode_body(&a.body);
    assert!(
        raw.contains("\"Status\"") && raw.contains("\"NotFound\"") && raw.contains("configmaps \\\"nope\\\" not found"),
        "{raw}"
    );

    // A protobuf watch: length-prefixed WatchEvent frames, each embedding an enveloped object.
    let a = c.req(
        "/api/v1/namespaces/fmt/configmaps?watch=true&timeoutSeconds=1",
        Some(&format!("{PB};stream=watch")),
        &[],
    );
    assert_eq!((a.code, a.ct.as_str()), (200, "application/vnd.kubernetes.protobuf;stream=watch"));
    let (mut at, mut frames) = (0, 0);
    while at < a.body.len() {
        let len = u32::from_be_bytes(a.body[at..at + 4].try_into().unwrap()) as usize;
        let frame = &a.body[at + 4..at + 4 + len];
        assert!(!frame.starts_with(b"k8s\0"), "the event itself has no envelope");
        let raw = decode_raw(frame);
        assert!(raw.starts_with("1: \"ADDED\""), "{raw}");
        let magic = frame.windows(4).position(|w| w == b"k8s\0").expect("embedded object");
        let obj = decode_raw(&frame[magic + 4..]);
        assert!(obj.contains("\"ConfigMap\""), "{obj}");
        at += 4 + len;
        frames += 1;
    }
    assert_eq!(frames, 7);

    // --- YAML.
    let a = c.req("/api/v1/namespaces/fmt/configmaps/cm-1", Some("application/yaml"), &[]);
    assert_eq!((a.code, a.ct.as_str()), (200, "application/yaml"));
    let y: Value = serde_yaml::from_slice(&a.body).expect("YAML");
    assert_eq!(y["data"]["k1"], "v1");
    assert!(a.text().starts_with("apiVersion: v1\ndata:\n"), "{}", a.text());
    let a = c.req("/api/v1/namespaces/fmt/configmaps", Some("application/yaml"), &[]);
    let y: Value = serde_yaml::from_slice(&a.body).expect("YAML");
    assert_eq!(y["kind"], "ConfigMapList");
    assert_eq!(y["items"].as_array().unwrap().len(), 7);

    // --- 406.
    for (path, accept, msg) in [
        (
            "/api/v1/namespaces/fmt/configmaps/cm-1",
            "text/html",
            "application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ),
        (
            "/api/v1/namespaces/fmt/configmaps",
            "application/xml;q=0.9, image/png",
            "application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ),
        (
            "/api/v1/namespaces/fmt/configmaps?watch=true",
            "application/yaml",
            "application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch",
        ),
        (
            "/api/v1/namespaces/fmt/configmaps",
            "application/json;as=Table;g=meta.k8s.io;v=v2",
            "application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ),
    ] {
        let a = c.req(path, Some(accept), &[]);
        assert_eq!(a.code, 406, "{accept}");
        let s = a.json();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["reason"], "NotAcceptable");
        assert_eq!(s["code"], 406);
        assert_eq!(s["message"], format!("only the following media types are accepted: {msg}"));
    }

    // --- PartialObjectMetadata: metadata only, never data.
    for v in ["v1", "v1beta1"] {
        let a = c.req(
            "/api/v1/namespaces/fmt/secrets/s1",
            Some(&format!("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v={v}")),
            &[],
        );
        assert_eq!(a.code, 200);
        let p = a.json();
        assert_eq!(p["kind"], "PartialObjectMetadata");
        assert_eq!(p["apiVersion"], format!("meta.k8s.io/{v}"));
        assert_eq!(p["metadata"]["name"], "s1");
        assert!(p.get("data").is_none() && p.get("type").is_none(), "{p}");
        assert!(!a.text().contains("aHVudGVyMg"), "secret data leaked");
        let a = c.req(
            "/api/v1/namespaces/fmt/secrets",
            Some(&format!("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v={v}")),
            &[],
        );
        let l = a.json();
        assert_eq!(l["kind"], "PartialObjectMetadataList");
        assert_eq!(l["apiVersion"], format!("meta.k8s.io/{v}"));
        assert!(l["metadata"]["resourceVersion"].is_string());
        let items = l["items"].as_array().unwrap();
        assert!(items.iter().any(|i| i["metadata"]["name"] == "s1"));
        assert!(items.iter().all(|i| i["kind"] == "PartialObjectMetadata" && i.get("data").is_none()));
    }
    // In protobuf too (client-go's metadata client asks for it).
    let a = c.req("/api/v1/namespaces/fmt/secrets", Some("application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"), &[]);
    assert_eq!((a.code, a.ct.as_str()), (200, PB));
    let raw = decode_body(&a.body);
    assert!(
        raw.contains("\"PartialObjectMetadataList\"") && raw.contains("\"s1\"") && !raw.contains("hunter2"),
        "{raw}"
    );
    // A list asked for as one object is 406, as upstream.
    let a = c.req(
        "/api/v1/namespaces/fmt/secrets",
        Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
        &[],
    );
    assert_eq!(a.code, 406);
    assert_eq!(a.json()["reason"], "NotAcceptable");
    // A metadata watch.
    let a = c.req(
        "/api/v1/namespaces/fmt/secrets?watch=true&timeoutSeconds=1",
        Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
        &[],
    );
    assert_eq!(a.code, 200);
    let events: Vec<Value> = a.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e["object"]["kind"], "PartialObjectMetadata", "{e}");
        assert!(e["object"].get("data").is_none());
    }

    // --- Tables: limit and continue, kubectl --chunk-size pages.
    let table = "application/json;as=Table;g=meta.k8s.io;v=v1";
    let a = c.req("/api/v1/namespaces/fmt/configmaps?limit=2", Some(table), &[]).json();
    assert_eq!(a["kind"], "Table");
    assert_eq!(a["rows"].as_array().unwrap().len(), 2);
    let cont = a["metadata"]["continue"].as_str().expect("continue in the Table").to_string();
    let b = c.req(&format!("/api/v1/namespaces/fmt/configmaps?limit=2&continue={cont}"), Some(table), &[]).json();
    assert_eq!(b["rows"].as_array().unwrap().len(), 2);
    assert_ne!(a["rows"][0]["cells"][0], b["rows"][0]["cells"][0]);
    let out = api.kubectl(&["-n", "fmt", "get", "configmaps", "--chunk-size=2", "-v=6", "-o", "name"]);
    assert!(out.status.success());
    let names: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("cm-")).map(String::from).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    let out = api.kubectl(&["-n", "fmt", "get", "configmaps", "--chunk-size=2", "-v=6"]);
    assert!(out.status.success());
    let rows = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("cm-")).count();
    assert_eq!(rows, 7);
    let log = String::from_utf8_lossy(&out.stderr);
    let pages = log.lines().filter(|l| l.contains("/configmaps?") && l.contains("limit=2")).count();
    assert!(pages >= 4, "kubectl should page by 2 over 7 objects: {log}");
    assert!(log.contains("continue="), "{log}");
    // v1beta1 Tables are still served.
    let t = c
        .req("/api/v1/namespaces/fmt/configmaps", Some("application/json;as=Table;g=meta.k8s.io;v=v1beta1"), &[])
        .json();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(t["rows"][0]["object"]["apiVersion"], "meta.k8s.io/v1beta1");

    // --- pretty.
    let path = "/api/v1/namespaces/fmt/configmaps/cm-0";
    for q in ["?pretty=true", "?pretty=1", "?pretty=T"] {
        let a = c.req(&format!("{path}{q}"), None, &["-A", "kubectl/v1.37.1"]);
        let t = a.text();
        // Go's MarshalIndent: two spaces a level, `": "` after keys.
        assert!(t.starts_with("{\n  \"") && t.contains("\n    \"name\": \"cm-0\",\n"), "{q}: {t}");
        assert!(t.contains("\n  \"kind\": \"ConfigMap\",\n") && t.ends_with("\n}"), "{q}: {t}");
        assert_eq!(serde_json::from_str::<Value>(&t).unwrap(), c.req(path, None, &[]).json());
    }
    let compact = c.req(path, None, &["-A", "kubectl/v1.37.1"]).text();
    assert!(!compact.contains('\n'), "{compact}");
    assert!(!c.req(&format!("{path}?pretty=false"), None, &["-A", "curl/8.5.0"]).text().contains('\n'));
    // curl and browsers get it pretty by default, as upstream gives it.
    assert!(c.req(path, None, &["-A", "curl/8.5.0"]).text().contains("\n  \"apiVersion\""));
    assert!(c.req(path, None, &["-A", "Mozilla/5.0 (X11)"]).text().contains("\n  \"apiVersion\""));
}
