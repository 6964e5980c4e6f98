//! Discovery documents: `/version`, `/api`, `/apis`, and each group-version's APIResourceList.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use serde_json::{json, Value};

use crate::registry::{self, Resource, RESOURCES};

fn ok(v: &Value) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .expect("response")
}

pub const GIT_VERSION: &str = "v1.37.0-yard";

pub fn version() -> Response {
    ok(&json!({
        "major": "1",
        "minor": "37",
        "emulationMajor": "1",
        "emulationMinor": "37",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-11-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64",
    }))
}

pub fn api_versions() -> Response {
    ok(
        &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
    )
}

/// The APIGroup object of `g` (every version it serves, the preferred one first).
fn api_group(g: &str, v: &str) -> Value {
    let versions: Vec<Value> = registry::versions_of(g)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": versions, "preferredVersion": preferred})
}

pub fn api_groups(_req: &Request) -> Response {
    let groups: Vec<Value> = registry::groups().into_iter().map(|(g, v)| api_group(g, v)).collect();
    ok(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

fn verbs(r: &Resource) -> Vec<&'static str> {
    if r.create_only() {
        return vec!["create"];
    }
    vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
}

fn entry(r: &Resource) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs(r),
        "shortNames": r.short_names,
        "categories": r.categories,
        "storageVersionHash": "",
    })];
    if r.short_names.is_empty() {
        out[0].as_object_mut().expect("object").remove("shortNames");
    }
    if r.categories.is_empty() {
        out[0].as_object_mut().expect("object").remove("categories");
    }
    for s in r.subresources {
        let (kind, verbs, group, version): (&str, Vec<&str>, Option<&str>, Option<&str>) = match *s {
            "status" => (r.kind, vec!["get", "patch", "update"], None, None),
            "scale" => ("Scale", vec!["get", "patch", "update"], Some("autoscaling"), Some("v1")),
            "binding" => ("Binding", vec!["create"], None, None),
            "exec" => ("PodExecOptions", vec!["create", "get"], None, None),
            "attach" => ("PodAttachOptions", vec!["create", "get"], None, None),
            "portforward" => ("PodPortForwardOptions", vec!["create", "get"], None, None),
            "log" => ("Pod", vec!["get"], None, None),
            "finalize" => ("Namespace", vec!["update"], None, None),
            "token" => ("TokenRequest", vec!["create"], Some("authentication.k8s.io"), Some("v1")),
            _ => continue,
        };
        let mut e = json!({"name": format!("{}/{s}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
        if let (Some(g), Some(v)) = (group, version) {
            e["group"] = json!(g);
            e["version"] = json!(v);
        }
        out.push(e);
    }
    out
}

/// `/api/v1` and `/apis/<group>/<version>`.
pub fn resource_list(path: &str) -> Option<Response> {
    let p = path.trim_end_matches('/');
    let gv = if p == "/api/v1" {
        "v1".to_string()
    } else {
        let rest = p.strip_prefix("/apis/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [g] => {
                let (_, v) = registry::groups().into_iter().find(|(gg, _)| gg == g)?;
                let mut group = api_group(g, v);
                group["kind"] = json!("APIGroup");
                group["apiVersion"] = json!("v1");
                return Some(ok(&group));
            }
            [g, v] => format!("{g}/{v}"),
            _ => return None,
        }
    };
    let resources: Vec<Value> = RESOURCES.iter().filter(|r| r.api_version() == gv).flat_map(entry).collect();
    if resources.is_empty() {
        return None;
    }
    Some(ok(&json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})))
}
