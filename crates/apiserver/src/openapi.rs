//! OpenAPI v3: the `/openapi/v3` index and one document per group-version, with real schemas
//! (from k8s-openapi's schemars support), `x-kubernetes-group-version-kind` on operations and
//! schemas, and the query parameters (`fieldValidation`, `dryRun`, `fieldManager`, `force`) that
//! tell kubectl to leave validation to the server.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::body::Body;
use axum::response::Response;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::registry::{Resource, RESOURCES};

fn ok(v: &[u8]) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(v.to_vec()))
        .expect("response")
}

fn gv_path(gv: &str) -> String {
    if gv.contains('/') {
        format!("apis/{gv}")
    } else {
        format!("api/{gv}")
    }
}

fn gvs() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in RESOURCES {
        let gv = r.api_version();
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

fn docs() -> &'static BTreeMap<String, (String, Vec<u8>)> {
    static DOCS: OnceLock<BTreeMap<String, (String, Vec<u8>)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        gvs()
            .into_iter()
            .map(|gv| {
                let doc = serde_json::to_vec(&build(&gv)).unwrap_or_default();
                let hash = format!("{:016X}", fnv(&doc));
                (gv_path(&gv), (hash, doc))
            })
            .collect()
    })
}

pub(crate) fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ *x as u64).wrapping_mul(0x100000001b3))
}

pub fn root() -> Response {
    let paths: Map<String, Value> = docs()
        .iter()
        .map(|(p, (h, _))| (p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={h}")})))
        .collect();
    ok(&serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default())
}

pub fn group_version(path: &str) -> Response {
    match docs().get(path.trim_end_matches('/')) {
        Some((_, d)) => ok(d),
        None => crate::status::ApiError::new(404, "NotFound", "the server could not find the requested resource")
            .into_response_owned(),
    }
}

fn gvk(r: &Resource) -> Value {
    json!([{"group": r.group, "version": r.version, "kind": r.kind}])
}

fn qp(name: &str, desc: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "description": desc, "schema": {"type": ty, "uniqueItems": true}})
}

/// The group's short name upstream uses in schema names and operation tags: `core` for the
/// core group, else its first label (`apps`, `discovery`, `coordination`).
pub(crate) fn group_short(r: &Resource) -> &'static str {
    if r.group.is_empty() {
        "core"
    } else {
        r.group.split('.').next().unwrap_or(r.group)
    }
}

pub(crate) fn schema_name(r: &Resource) -> String {
    format!("io.k8s.api.{}.{}.{}", group_short(r), r.version, r.kind)
}

/// The path of `r`'s collection, e.g. `/api/v1/namespaces/{namespace}/pods`.
pub(crate) fn collection_path(r: &Resource) -> String {
    let gv = gv_path(&r.api_version());
    if r.namespaced {
        format!("/{gv}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("/{gv}/{}", r.plural)
    }
}

/// The schemas of `resources`' kinds and of everything they reference (plus the types `extra`
/// adds to the generator), in OpenAPI v3 form: each kind under its upstream name, with
/// `x-kubernetes-group-version-kind`; a kind without a schema gets a bare object schema.
pub(crate) fn kind_schemas<'a>(
    resources: impl IntoIterator<Item = &'a Resource>,
    extra: impl FnOnce(&mut schemars::SchemaGenerator),
) -> Map<String, Value> {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let top: Vec<(&Resource, String)> = resources.into_iter().map(|r| (r, schema_of(r, &mut gen))).collect();
    extra(&mut gen);
    let mut schemas: Map<String, Value> = gen.take_definitions(true).into_iter().collect();
    // Two versions of one kind may share a generated schema (SelfSubjectReview v1 and v1beta1):
    // each takes a copy under its own name.
    let named: Vec<(String, Value)> = top
        .iter()
        .map(|(r, generated)| {
            let mut v = schemas.get(generated).cloned().unwrap_or_else(|| json!({"type": "object"}));
            v["x-kubernetes-group-version-kind"] = gvk(r);
            (schema_name(r), v)
        })
        .collect();
    for (_, generated) in &top {
        schemas.remove(generated);
    }
    schemas.extend(named);
    schemas
}

fn build(gv: &str) -> Value {
    let mut paths = Map::new();
    for r in RESOURCES.iter().filter(|r| r.api_version() == gv) {
        let base = collection_path(r);
        let reference = json!({"$ref": format!("#/components/schemas/{}", schema_name(r))});
        let body = |types: &[&str]| -> Value {
            let content: Map<String, Value> =
                types.iter().map(|t| (t.to_string(), json!({"schema": reference.clone()}))).collect();
            json!({"required": true, "content": content})
        };
        let resp =
            json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference.clone()}}}});
        let write_params = vec![
            qp("dryRun", "When present, indicates that modifications should not be persisted.", "string"),
            qp("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes.", "string"),
            qp("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.", "string"),
        ];
        let mut patch_params = write_params.clone();
        patch_params.push(qp("force", "Force is going to \"force\" Apply requests.", "boolean"));
        let op = |action: &str, id: &str, params: Vec<Value>, request: Option<Value>| -> Value {
            let mut o = json!({"operationId": format!("{id}{}", r.kind), "responses": resp.clone(), "x-kubernetes-action": action, "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind}});
            if !params.is_empty() {
                o["parameters"] = Value::Array(params);
            }
            if let Some(b) = request {
                o["requestBody"] = b;
            }
            o
        };
        if r.create_only() {
            paths.insert(base.clone(), json!({
                "post": op("post", "create", write_params.clone(), Some(body(&["application/json", "application/yaml"]))),
            }));
            continue;
        }
        paths.insert(base.clone(), json!({
            "get": op("list", "list", vec![], None),
            "post": op("post", "create", write_params.clone(), Some(body(&["application/json", "application/yaml"]))),
            "delete": op("deletecollection", "deletecollection", vec![], None),
        }));
        paths.insert(format!("{base}/{{name}}"), json!({
            "get": op("get", "read", vec![], None),
            "put": op("put", "replace", write_params.clone(), Some(body(&["application/json", "application/yaml"]))),
            "patch": op("patch", "patch", patch_params.clone(), Some(body(&["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]))),
            "delete": op("delete", "delete", vec![], None),
        }));
        if r.has_sub("status") {
            paths.insert(format!("{base}/{{name}}/status"), json!({
                "get": op("get", "readStatus", vec![], None),
                "put": op("put", "replaceStatus", write_params.clone(), Some(body(&["application/json"]))),
                "patch": op("patch", "patchStatus", patch_params.clone(), Some(body(&["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]))),
            }));
        }
    }
    let schemas = kind_schemas(RESOURCES.iter().filter(|r| r.api_version() == gv), |_| {});
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Adds `T`'s schema (and what it references) to `gen`; returns the definition name schemars used.
pub(crate) fn add_schema<T: JsonSchema>(gen: &mut schemars::SchemaGenerator) -> String {
    let _ = gen.subschema_for::<T>();
    T::schema_name().to_string()
}

/// Generate the schema of a resource's type (its strategy's, else the kind's here); returns the
/// definition name schemars used.
fn schema_of(r: &Resource, gen: &mut schemars::SchemaGenerator) -> String {
    use k8s_openapi::api::{
        apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz, coordination::v1 as coord,
        core::v1 as core, discovery::v1 as disc,
    };
    if let Some(name) = r.strategy.openapi_schema(gen) {
        return name;
    }
    match r.kind {
        "Namespace" => add_schema::<core::Namespace>(gen),
        "Pod" => add_schema::<core::Pod>(gen),
        "Service" => add_schema::<core::Service>(gen),
        "Endpoints" => add_schema::<core::Endpoints>(gen),
        "Event" if r.group == "events.k8s.io" => add_schema::<k8s_openapi::api::events::v1::Event>(gen),
        "Event" => add_schema::<core::Event>(gen),
        "Node" => add_schema::<core::Node>(gen),
        "ConfigMap" => add_schema::<core::ConfigMap>(gen),
        "Secret" => add_schema::<core::Secret>(gen),
        "ServiceAccount" => add_schema::<core::ServiceAccount>(gen),
        "Deployment" => add_schema::<apps::Deployment>(gen),
        "ReplicaSet" => add_schema::<apps::ReplicaSet>(gen),
        "EndpointSlice" => add_schema::<disc::EndpointSlice>(gen),
        "Lease" => add_schema::<coord::Lease>(gen),
        "SelfSubjectAccessReview" => add_schema::<authz::SelfSubjectAccessReview>(gen),
        "SelfSubjectRulesReview" => add_schema::<authz::SelfSubjectRulesReview>(gen),
        "SubjectAccessReview" => add_schema::<authz::SubjectAccessReview>(gen),
        "LocalSubjectAccessReview" => add_schema::<authz::LocalSubjectAccessReview>(gen),
        // v1beta1's SelfSubjectReview has v1's shape.
        "SelfSubjectReview" => add_schema::<authn::SelfSubjectReview>(gen),
        "TokenReview" => add_schema::<authn::TokenReview>(gen),
        _ => String::new(),
    }
}
