//! OpenAPI v2 (`GET /openapi/v2`): one Swagger 2.0 document for every served kind, as JSON or as
//! the gnostic `openapi.v2.Document` protobuf message client-go's `OpenAPISchema()` asks for.
//!
//! kubectl reads it when it validates on the client side: a `v1/List` is not a served kind, so its
//! field-validation verifier cannot leave the List to the server and instead checks every item
//! against the v2 definition that names the item's kind in `x-kubernetes-group-version-kind`.
//!
//! The definitions are the schemas `/openapi/v3` serves (k8s-openapi's schemars output), rewritten
//! for v2: `#/components/schemas/X` becomes `#/definitions/X`, a `$ref` wrapped in a one-element
//! `allOf` is unwrapped (v2 tolerates siblings of `$ref`), v3-only keywords (`nullable`, `oneOf`,
//! `anyOf`, `not`, ...) are dropped, and a schema that only says `x-kubernetes-int-or-string`
//! gets v2's `type: string, format: int-or-string`. kube-openapi's v2 parser insists that a `$ref`
//! has no `type`, that every array has exactly one `items` schema, and that every reference names
//! a definition; the tests below hold the document to those rules.
//!
//! The paths carry each resource's operations with `x-kubernetes-action`, the operation's
//! `x-kubernetes-group-version-kind`, the body and query parameters (`fieldValidation` among them,
//! so the v2 verifier agrees with v3 that the server validates). PATCH operations do not list
//! `application/strategic-merge-patch+json`: the schemas lack `x-kubernetes-patch-*` metadata, and
//! listing it would make `kubectl apply` build strategic merge patches from the v2 schema instead
//! of from its compiled-in types (which it does, correctly, when v2 offers no strategic merge).
//!
//! The JSON document is the single source; the protobuf is converted from it. Both are built
//! once, each with an ETag (`If-None-Match` answers 304).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::body::Body;
use axum::response::Response;
use http::HeaderMap;
use prost::Message;
use serde_json::{json, Map, Value};

use crate::openapi::{collection_path, fnv, group_short, kind_schemas, schema_name};
use crate::registry::{Resource, RESOURCES};

/// The media type client-go's discovery client asks for.
pub const MIME_PB: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The spelling kube-openapi also accepts and answers with: `@` is no token character, so Go's
/// `mime.ParseMediaType` (which client-go runs on every response's Content-Type) rejects the other.
pub const MIME_PB_DOT: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const V3_REF: &str = "#/components/schemas/";
const V2_REF: &str = "#/definitions/";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";

struct Rendered {
    json: Vec<u8>,
    json_etag: String,
    pb: Vec<u8>,
    pb_etag: String,
}

fn rendered() -> &'static Rendered {
    static DOC: OnceLock<Rendered> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = build();
        let json = serde_json::to_vec(&doc).unwrap_or_default();
        let pb = to_proto(&doc).encode_to_vec();
        Rendered { json_etag: format!("\"{:016X}\"", fnv(&json)), pb_etag: format!("\"{:016X}\"", fnv(&pb)), json, pb }
    })
}

/// Whether the Accept header prefers protobuf: the first media range that names either form.
fn wants_protobuf(headers: &HeaderMap) -> bool {
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for range in accept.split(',') {
        let mt = range.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match mt.as_str() {
            MIME_PB | MIME_PB_DOT => return true,
            "application/json" | "application/*" | "*/*" => return false,
            _ => {}
        }
    }
    false
}

/// `GET /openapi/v2`.
pub fn document(headers: &HeaderMap) -> Response {
    let r: &'static Rendered = rendered();
    let (ctype, body, etag): (&str, &'static [u8], &str) = if wants_protobuf(headers) {
        (MIME_PB_DOT, r.pb.as_slice(), r.pb_etag.as_str())
    } else {
        ("application/json", r.json.as_slice(), r.json_etag.as_str())
    };
    let matched = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let b = Response::builder().header("etag", etag).header("vary", "Accept");
    if matched {
        return b.status(304).body(Body::empty()).expect("response");
    }
    b.status(200).header("content-type", ctype).body(Body::from(bytes::Bytes::from_static(body))).expect("response")
}

// ---------------------------------------------------------------------------------------------
// The JSON document.

fn build() -> Value {
    let defs = definitions();
    let mut paths: BTreeMap<String, Value> = BTreeMap::new();
    for r in RESOURCES {
        resource_paths(r, &mut paths);
    }
    let paths: Map<String, Value> = paths.into_iter().collect();
    let definitions: Map<String, Value> = defs.into_iter().collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::GIT_VERSION},
        "paths": paths,
        "definitions": definitions,
    })
}

/// Every served kind's schema and everything it references, plus Status and DeleteOptions (the
/// delete operations' response and body), in v2 form.
fn definitions() -> BTreeMap<String, Value> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let schemas = kind_schemas(RESOURCES, |gen| {
        let _ = gen.subschema_for::<meta::Status>();
        let _ = gen.subschema_for::<meta::DeleteOptions>();
    });
    let mut defs: BTreeMap<String, Value> = schemas.into_iter().collect();
    for v in defs.values_mut() {
        to_v2_schema(v);
    }
    defs
}

/// Rewrite one OpenAPI v3 schema (as schemars emits it) into its Swagger 2.0 equivalent.
fn to_v2_schema(v: &mut Value) {
    if !v.is_object() {
        // A boolean schema (`true`: anything goes), which v2 spells `{}`.
        *v = json!({});
    }
    let Some(o) = v.as_object_mut() else { return };
    // `{"allOf": [{"$ref": X}], ...siblings}` -> `{"$ref": X, ...siblings}`.
    if !o.contains_key("$ref") {
        let single_ref = match o.get("allOf") {
            Some(Value::Array(a)) if a.len() == 1 => {
                a[0].as_object().filter(|r| r.len() == 1).and_then(|r| r.get("$ref")).cloned()
            }
            _ => None,
        };
        if let Some(r) = single_ref {
            o.remove("allOf");
            o.insert("$ref".into(), r);
        }
    }
    for k in ["nullable", "oneOf", "anyOf", "not", "writeOnly", "deprecated", "$schema", "$id", "const", "examples"] {
        o.remove(k);
    }
    if let Some(Value::String(r)) = o.get_mut("$ref") {
        if let Some(name) = r.strip_prefix(V3_REF) {
            *r = format!("{V2_REF}{name}");
        }
    }
    if o.contains_key("$ref") {
        // kube-openapi rejects a reference that also has a type or properties.
        o.remove("type");
        o.remove("properties");
    } else if o.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) && !o.contains_key("type") {
        o.insert("type".into(), json!("string"));
        o.insert("format".into(), json!("int-or-string"));
    }
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        for p in props.values_mut() {
            to_v2_schema(p);
        }
    }
    if let Some(items) = o.remove("items") {
        // Tuple validation has no form kube-openapi accepts; keep the first item's schema.
        let mut items = match items {
            Value::Array(a) => a.into_iter().next().unwrap_or_else(|| json!({})),
            x => x,
        };
        to_v2_schema(&mut items);
        o.insert("items".into(), items);
    } else if o.get("type") == Some(&json!("array")) {
        // An array schema must name its items for kube-openapi's parser.
        o.insert("items".into(), json!({}));
    }
    if let Some(ap) = o.get_mut("additionalProperties").filter(|a| a.is_object()) {
        to_v2_schema(ap);
    }
    if let Some(Value::Array(all)) = o.get_mut("allOf") {
        for s in all.iter_mut() {
            to_v2_schema(s);
        }
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{V2_REF}{name}")})
}

/// `core_v1`, `apps_v1`, `discovery_v1`: upstream's operation tags.
fn tag(r: &Resource) -> String {
    format!("{}_{}", group_short(r), r.version)
}

/// `CoreV1`, `AppsV1`, `DiscoveryV1`: the group-version part of upstream's operation ids.
fn gv_camel(r: &Resource) -> String {
    let cap = |s: &str| -> String {
        let mut c = s.chars();
        c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
    };
    format!("{}{}", cap(group_short(r)), cap(r.version))
}

fn query(name: &str, ty: &str, desc: &str) -> Value {
    json!({"uniqueItems": true, "type": ty, "description": desc, "name": name, "in": "query"})
}

fn path_param(name: &str, desc: &str) -> Value {
    json!({"uniqueItems": true, "type": "string", "description": desc, "name": name, "in": "path", "required": true})
}

fn resource_paths(r: &Resource, paths: &mut BTreeMap<String, Value>) {
    let base = collection_path(r);
    let kind_ref = reference(&schema_name(r));
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let produces = json!(["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]);
    let gvk_one = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let pretty = query("pretty", "string", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).");
    let dry_run = query("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed");
    let field_manager = query("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.");
    let field_validation = query("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.");
    let force = query("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.");
    let body = |schema: Value| json!({"name": "body", "in": "body", "required": true, "schema": schema});
    let ok_kind = json!({"description": "OK", "schema": kind_ref.clone()});
    let ok_status = json!({"description": "OK", "schema": reference(STATUS)});
    let unauthorized = json!({"description": "Unauthorized"});
    let write_params = |b: Value| json!([b, dry_run.clone(), field_manager.clone(), field_validation.clone()]);
    let patch_params = json!([
        body(json!({"type": "object"})),
        dry_run.clone(),
        field_manager.clone(),
        field_validation.clone(),
        force.clone()
    ]);
    let delete_params = json!([{"name": "body", "in": "body", "schema": reference(DELETE_OPTIONS)}, dry_run.clone(), query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."), query("propagationPolicy", "string", "Whether and how garbage collection will be performed.")]);
    let patch_consumes =
        json!(["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]);
    let op = |action: &str, id: String, desc: String, consumes: Value, params: Value, responses: Value| -> Value {
        let mut o = json!({
            "description": desc,
            "consumes": consumes,
            "produces": produces.clone(),
            "schemes": ["https"],
            "tags": [tag(r)],
            "operationId": id,
            "responses": responses,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk_one.clone(),
        });
        if params.as_array().is_some_and(|a| !a.is_empty()) {
            o["parameters"] = params;
        }
        o
    };
    let gvc = gv_camel(r);
    let kind = r.kind;
    let mut common = vec![];
    if r.namespaced {
        common.push(path_param("namespace", "object name and auth scope, such as for teams and projects"));
    }
    common.push(pretty.clone());

    let list_params = json!([
        query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        query("limit", "integer", "limit is a maximum number of responses to return for a list call."),
        query("continue", "string", "The continue option should be set when retrieving more results from the server."),
        query("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
        query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
    ]);
    if r.create_only() {
        paths.insert(base.clone(), json!({
            "post": op("post", format!("create{gvc}{scope}{kind}"), format!("create a {kind}"), json!(["*/*"]), write_params(body(kind_ref.clone())), json!({"200": ok_kind, "201": {"description": "Created", "schema": kind_ref.clone()}, "202": {"description": "Accepted", "schema": kind_ref.clone()}, "401": unauthorized})),
            "parameters": common.clone(),
        }));
        return;
    }
    paths.insert(base.clone(), json!({
        "get": op("list", format!("list{gvc}{scope}{kind}"), format!("list or watch objects of kind {kind}"), json!(["*/*"]), list_params, json!({"200": {"description": "OK"}, "401": unauthorized})),
        "post": op("post", format!("create{gvc}{scope}{kind}"), format!("create a {kind}"), json!(["*/*"]), write_params(body(kind_ref.clone())), json!({"200": ok_kind, "201": {"description": "Created", "schema": kind_ref.clone()}, "202": {"description": "Accepted", "schema": kind_ref.clone()}, "401": unauthorized})),
        "delete": op("deletecollection", format!("delete{gvc}Collection{scope}{kind}"), format!("delete collection of {kind}"), json!(["*/*"]), delete_params.clone(), json!({"200": ok_status, "401": unauthorized})),
        "parameters": common.clone(),
    }));

    let mut named = vec![path_param("name", &format!("name of the {kind}"))];
    named.extend(common.iter().cloned());
    paths.insert(format!("{base}/{{name}}"), json!({
        "get": op("get", format!("read{gvc}{scope}{kind}"), format!("read the specified {kind}"), json!(["*/*"]), json!([]), json!({"200": ok_kind, "401": unauthorized})),
        "put": op("put", format!("replace{gvc}{scope}{kind}"), format!("replace the specified {kind}"), json!(["*/*"]), write_params(body(kind_ref.clone())), json!({"200": ok_kind, "201": {"description": "Created", "schema": kind_ref.clone()}, "401": unauthorized})),
        "patch": op("patch", format!("patch{gvc}{scope}{kind}"), format!("partially update the specified {kind}"), patch_consumes.clone(), patch_params.clone(), json!({"200": ok_kind, "201": {"description": "Created", "schema": kind_ref.clone()}, "401": unauthorized})),
        "delete": op("delete", format!("delete{gvc}{scope}{kind}"), format!("delete a {kind}"), json!(["*/*"]), delete_params.clone(), json!({"200": ok_status, "202": {"description": "Accepted", "schema": reference(STATUS)}, "401": unauthorized})),
        "parameters": named.clone(),
    }));
    if r.has_sub("status") {
        paths.insert(format!("{base}/{{name}}/status"), json!({
            "get": op("get", format!("read{gvc}{scope}{kind}Status"), format!("read status of the specified {kind}"), json!(["*/*"]), json!([]), json!({"200": ok_kind, "401": unauthorized})),
            "put": op("put", format!("replace{gvc}{scope}{kind}Status"), format!("replace status of the specified {kind}"), json!(["*/*"]), write_params(body(kind_ref.clone())), json!({"200": ok_kind, "201": {"description": "Created", "schema": kind_ref.clone()}, "401": unauthorized})),
            "patch": op("patch", format!("patch{gvc}{scope}{kind}Status"), format!("partially update status of the specified {kind}"), patch_consumes, patch_params, json!({"200": ok_kind, "201": {"description": "Created", "schema": kind_ref.clone()}, "401": unauthorized})),
            "parameters": named,
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// The protobuf form: gnostic's `openapi.v2` messages (github.com/google/gnostic-models,
// openapiv2/OpenAPIv2.proto), declared by hand with the same field numbers. Only the fields this
// server fills are declared; a `oneof` is declared as a message whose alternatives are optional
// fields, which is the same wire format when one alternative is set.

mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "2")]
        pub info: Option<Info>,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
        #[prost(message, repeated, tag = "16")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Info {
        #[prost(string, tag = "1")]
        pub title: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(message, repeated, tag = "7")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// `Any`: field 1 (a `google.protobuf.Any`) is never used; the value travels as YAML text.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "2")]
        pub yaml: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Properties {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemsItem {
        #[prost(message, repeated, tag = "1")]
        pub schema: Vec<Schema>,
    }

    /// oneof { Schema schema = 1; bool boolean = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AdditionalPropertiesItem {
        #[prost(message, optional, boxed, tag = "1")]
        pub schema: Option<Box<Schema>>,
        #[prost(bool, optional, tag = "2")]
        pub boolean: Option<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "1")]
        pub xref: String,
        #[prost(string, tag = "2")]
        pub format: String,
        #[prost(string, tag = "3")]
        pub title: String,
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(message, optional, tag = "5")]
        pub default: Option<Any>,
        #[prost(double, tag = "6")]
        pub multiple_of: f64,
        #[prost(double, tag = "7")]
        pub maximum: f64,
        #[prost(bool, tag = "8")]
        pub exclusive_maximum: bool,
        #[prost(double, tag = "9")]
        pub minimum: f64,
        #[prost(bool, tag = "10")]
        pub exclusive_minimum: bool,
        #[prost(int64, tag = "11")]
        pub max_length: i64,
        #[prost(int64, tag = "12")]
        pub min_length: i64,
        #[prost(string, tag = "13")]
        pub pattern: String,
        #[prost(int64, tag = "14")]
        pub max_items: i64,
        #[prost(int64, tag = "15")]
        pub min_items: i64,
        #[prost(bool, tag = "16")]
        pub unique_items: bool,
        #[prost(int64, tag = "17")]
        pub max_properties: i64,
        #[prost(int64, tag = "18")]
        pub min_properties: i64,
        #[prost(string, repeated, tag = "19")]
        pub required: Vec<String>,
        #[prost(message, repeated, tag = "20")]
        pub enum_values: Vec<Any>,
        #[prost(message, optional, tag = "21")]
        pub additional_properties: Option<AdditionalPropertiesItem>,
        #[prost(message, optional, tag = "22")]
        pub ty: Option<TypeItem>,
        #[prost(message, optional, tag = "23")]
        pub items: Option<ItemsItem>,
        #[prost(message, repeated, tag = "24")]
        pub all_of: Vec<Schema>,
        #[prost(message, optional, tag = "25")]
        pub properties: Option<Properties>,
        #[prost(string, tag = "26")]
        pub discriminator: String,
        #[prost(bool, tag = "27")]
        pub read_only: bool,
        #[prost(message, optional, tag = "30")]
        pub example: Option<Any>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {
        #[prost(message, repeated, tag = "1")]
        pub vendor_extension: Vec<NamedAny>,
        #[prost(message, repeated, tag = "2")]
        pub path: Vec<NamedPathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedPathItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<PathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathItem {
        #[prost(string, tag = "1")]
        pub xref: String,
        #[prost(message, optional, tag = "2")]
        pub get: Option<Operation>,
        #[prost(message, optional, tag = "3")]
        pub put: Option<Operation>,
        #[prost(message, optional, tag = "4")]
        pub post: Option<Operation>,
        #[prost(message, optional, tag = "5")]
        pub delete: Option<Operation>,
        #[prost(message, optional, tag = "6")]
        pub options: Option<Operation>,
        #[prost(message, optional, tag = "7")]
        pub head: Option<Operation>,
        #[prost(message, optional, tag = "8")]
        pub patch: Option<Operation>,
        #[prost(message, repeated, tag = "9")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, repeated, tag = "10")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Operation {
        #[prost(string, repeated, tag = "1")]
        pub tags: Vec<String>,
        #[prost(string, tag = "2")]
        pub summary: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "5")]
        pub operation_id: String,
        #[prost(string, repeated, tag = "6")]
        pub produces: Vec<String>,
        #[prost(string, repeated, tag = "7")]
        pub consumes: Vec<String>,
        #[prost(message, repeated, tag = "8")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, optional, tag = "9")]
        pub responses: Option<Responses>,
        #[prost(string, repeated, tag = "10")]
        pub schemes: Vec<String>,
        #[prost(bool, tag = "11")]
        pub deprecated: bool,
        #[prost(message, repeated, tag = "13")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// oneof { Parameter parameter = 1; JsonReference json_reference = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParametersItem {
        #[prost(message, optional, tag = "1")]
        pub parameter: Option<Parameter>,
        #[prost(message, optional, tag = "2")]
        pub json_reference: Option<JsonReference>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JsonReference {
        #[prost(string, tag = "1")]
        pub xref: String,
        #[prost(string, tag = "2")]
        pub description: String,
    }

    /// oneof { BodyParameter body_parameter = 1; NonBodyParameter non_body_parameter = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(message, optional, tag = "1")]
        pub body_parameter: Option<BodyParameter>,
        #[prost(message, optional, tag = "2")]
        pub non_body_parameter: Option<NonBodyParameter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BodyParameter {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub in_: String,
        #[prost(bool, tag = "4")]
        pub required: bool,
        #[prost(message, optional, tag = "5")]
        pub schema: Option<Schema>,
        #[prost(message, repeated, tag = "6")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// oneof { HeaderParameterSubSchema header = 1; FormDataParameterSubSchema form_data = 2;
    /// QueryParameterSubSchema query = 3; PathParameterSubSchema path = 4; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NonBodyParameter {
        #[prost(message, optional, tag = "1")]
        pub header_parameter_sub_schema: Option<SimpleParameter>,
        #[prost(message, optional, tag = "3")]
        pub query_parameter_sub_schema: Option<QueryParameter>,
        #[prost(message, optional, tag = "4")]
        pub path_parameter_sub_schema: Option<SimpleParameter>,
    }

    /// QueryParameterSubSchema (it has `allow_empty_value` = 5, so the later fields are shifted).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryParameter {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub in_: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(bool, tag = "5")]
        pub allow_empty_value: bool,
        #[prost(string, tag = "6")]
        pub ty: String,
        #[prost(string, tag = "7")]
        pub format: String,
        #[prost(bool, tag = "20")]
        pub unique_items: bool,
        #[prost(message, repeated, tag = "23")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// PathParameterSubSchema and HeaderParameterSubSchema, which share their field numbers.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SimpleParameter {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub in_: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "5")]
        pub ty: String,
        #[prost(string, tag = "6")]
        pub format: String,
        #[prost(bool, tag = "19")]
        pub unique_items: bool,
        #[prost(message, repeated, tag = "22")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Responses {
        #[prost(message, repeated, tag = "1")]
        pub response_code: Vec<NamedResponseValue>,
        #[prost(message, repeated, tag = "2")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedResponseValue {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<ResponseValue>,
    }

    /// oneof { Response response = 1; JsonReference json_reference = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseValue {
        #[prost(message, optional, tag = "1")]
        pub response: Option<Response>,
        #[prost(message, optional, tag = "2")]
        pub json_reference: Option<JsonReference>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(message, optional, tag = "2")]
        pub schema: Option<SchemaItem>,
        #[prost(message, repeated, tag = "5")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// oneof { Schema schema = 1; FileSchema file_schema = 2; }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchemaItem {
        #[prost(message, optional, tag = "1")]
        pub schema: Option<Schema>,
    }
}

/// A value as gnostic carries it: YAML text (JSON text if YAML rendering fails; JSON is YAML).
fn any(v: &Value) -> pb::Any {
    let yaml = serde_yaml::to_string(v).unwrap_or_else(|_| v.to_string());
    pb::Any { yaml }
}

fn extensions(o: &Map<String, Value>) -> Vec<pb::NamedAny> {
    o.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| pb::NamedAny { name: k.clone(), value: Some(any(v)) })
        .collect()
}

fn s(o: &Map<String, Value>, k: &str) -> String {
    o.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn strings(o: &Map<String, Value>, k: &str) -> Vec<String> {
    o.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn b(o: &Map<String, Value>, k: &str) -> bool {
    o.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn f(o: &Map<String, Value>, k: &str) -> f64 {
    o.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn i(o: &Map<String, Value>, k: &str) -> i64 {
    o.get(k).and_then(Value::as_i64).unwrap_or(0)
}

fn to_proto(doc: &Value) -> pb::Document {
    let empty = Map::new();
    let o = doc.as_object().unwrap_or(&empty);
    let info = o.get("info").and_then(Value::as_object).map(|i| pb::Info {
        title: s(i, "title"),
        version: s(i, "version"),
        description: s(i, "description"),
        vendor_extension: extensions(i),
    });
    let paths = o.get("paths").and_then(Value::as_object).map(|p| pb::Paths {
        vendor_extension: extensions(p),
        path: p
            .iter()
            .filter(|(k, _)| !k.starts_with("x-"))
            .map(|(k, v)| pb::NamedPathItem { name: k.clone(), value: Some(path_item(v)) })
            .collect(),
    });
    let definitions = o
        .get("definitions")
        .and_then(Value::as_object)
        .map(|d| pb::Definitions { additional_properties: named_schemas(d) });
    pb::Document { swagger: s(o, "swagger"), info, paths, definitions, vendor_extension: extensions(o) }
}

fn named_schemas(m: &Map<String, Value>) -> Vec<pb::NamedSchema> {
    m.iter().map(|(k, v)| pb::NamedSchema { name: k.clone(), value: Some(schema(v)) }).collect()
}

fn schema(v: &Value) -> pb::Schema {
    let empty = Map::new();
    let o = v.as_object().unwrap_or(&empty);
    let ty = match o.get("type") {
        Some(Value::String(t)) => Some(pb::TypeItem { value: vec![t.clone()] }),
        Some(Value::Array(ts)) => {
            Some(pb::TypeItem { value: ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect() })
        }
        _ => None,
    };
    let items = match o.get("items") {
        Some(Value::Array(a)) => Some(pb::ItemsItem { schema: a.iter().map(schema).collect() }),
        Some(x @ Value::Object(_)) => Some(pb::ItemsItem { schema: vec![schema(x)] }),
        _ => None,
    };
    let additional_properties = match o.get("additionalProperties") {
        Some(x @ Value::Object(_)) => {
            Some(pb::AdditionalPropertiesItem { schema: Some(Box::new(schema(x))), boolean: None })
        }
        Some(Value::Bool(x)) => Some(pb::AdditionalPropertiesItem { schema: None, boolean: Some(*x) }),
        _ => None,
    };
    pb::Schema {
        xref: s(o, "$ref"),
        format: s(o, "format"),
        title: s(o, "title"),
        description: s(o, "description"),
        default: o.get("default").map(any),
        multiple_of: f(o, "multipleOf"),
        maximum: f(o, "maximum"),
        exclusive_maximum: b(o, "exclusiveMaximum"),
        minimum: f(o, "minimum"),
        exclusive_minimum: b(o, "exclusiveMinimum"),
        max_length: i(o, "maxLength"),
        min_length: i(o, "minLength"),
        pattern: s(o, "pattern"),
        max_items: i(o, "maxItems"),
        min_items: i(o, "minItems"),
        unique_items: b(o, "uniqueItems"),
        max_properties: i(o, "maxProperties"),
        min_properties: i(o, "minProperties"),
        required: strings(o, "required"),
        enum_values: o.get("enum").and_then(Value::as_array).map(|a| a.iter().map(any).collect()).unwrap_or_default(),
        additional_properties,
        ty,
        items,
        all_of: o.get("allOf").and_then(Value::as_array).map(|a| a.iter().map(schema).collect()).unwrap_or_default(),
        properties: o
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| pb::Properties { additional_properties: named_schemas(p) }),
        discriminator: s(o, "discriminator"),
        read_only: b(o, "readOnly"),
        example: o.get("example").map(any),
        vendor_extension: extensions(o),
    }
}

fn path_item(v: &Value) -> pb::PathItem {
    let empty = Map::new();
    let o = v.as_object().unwrap_or(&empty);
    let op = |k: &str| o.get(k).map(operation);
    pb::PathItem {
        xref: s(o, "$ref"),
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        options: op("options"),
        head: op("head"),
        patch: op("patch"),
        parameters: parameters(o),
        vendor_extension: extensions(o),
    }
}

fn operation(v: &Value) -> pb::Operation {
    let empty = Map::new();
    let o = v.as_object().unwrap_or(&empty);
    let responses = o.get("responses").and_then(Value::as_object).map(|r| pb::Responses {
        response_code: r
            .iter()
            .filter(|(k, _)| !k.starts_with("x-"))
            .map(|(code, rv)| {
                let ro = rv.as_object().unwrap_or(&empty);
                let value = if ro.contains_key("$ref") {
                    pb::ResponseValue {
                        response: None,
                        json_reference: Some(pb::JsonReference {
                            xref: s(ro, "$ref"),
                            description: s(ro, "description"),
                        }),
                    }
                } else {
                    let schema = ro.get("schema").map(|x| pb::SchemaItem { schema: Some(schema(x)) });
                    pb::ResponseValue {
                        response: Some(pb::Response {
                            description: s(ro, "description"),
                            schema,
                            vendor_extension: extensions(ro),
                        }),
                        json_reference: None,
                    }
                };
                pb::NamedResponseValue { name: code.clone(), value: Some(value) }
            })
            .collect(),
        vendor_extension: extensions(r),
    });
    pb::Operation {
        tags: strings(o, "tags"),
        summary: s(o, "summary"),
        description: s(o, "description"),
        operation_id: s(o, "operationId"),
        produces: strings(o, "produces"),
        consumes: strings(o, "consumes"),
        parameters: parameters(o),
        responses,
        schemes: strings(o, "schemes"),
        deprecated: b(o, "deprecated"),
        vendor_extension: extensions(o),
    }
}

fn parameters(o: &Map<String, Value>) -> Vec<pb::ParametersItem> {
    let Some(list) = o.get("parameters").and_then(Value::as_array) else { return Vec::new() };
    list.iter()
        .filter_map(Value::as_object)
        .filter_map(|p| {
            if p.contains_key("$ref") {
                return Some(pb::ParametersItem {
                    parameter: None,
                    json_reference: Some(pb::JsonReference { xref: s(p, "$ref"), description: s(p, "description") }),
                });
            }
            let parameter = match p.get("in").and_then(Value::as_str)? {
                "body" => pb::Parameter {
                    body_parameter: Some(pb::BodyParameter {
                        description: s(p, "description"),
                        name: s(p, "name"),
                        in_: "body".into(),
                        required: b(p, "required"),
                        schema: p.get("schema").map(schema),
                        vendor_extension: extensions(p),
                    }),
                    non_body_parameter: None,
                },
                "query" => pb::Parameter {
                    body_parameter: None,
                    non_body_parameter: Some(pb::NonBodyParameter {
                        query_parameter_sub_schema: Some(pb::QueryParameter {
                            required: b(p, "required"),
                            in_: "query".into(),
                            description: s(p, "description"),
                            name: s(p, "name"),
                            allow_empty_value: b(p, "allowEmptyValue"),
                            ty: s(p, "type"),
                            format: s(p, "format"),
                            unique_items: b(p, "uniqueItems"),
                            vendor_extension: extensions(p),
                        }),
                        ..Default::default()
                    }),
                },
                place @ ("path" | "header") => {
                    let sp = pb::SimpleParameter {
                        required: b(p, "required"),
                        in_: place.into(),
                        description: s(p, "description"),
                        name: s(p, "name"),
                        ty: s(p, "type"),
                        format: s(p, "format"),
                        unique_items: b(p, "uniqueItems"),
                        vendor_extension: extensions(p),
                    };
                    let nb = if place == "path" {
                        pb::NonBodyParameter { path_parameter_sub_schema: Some(sp), ..Default::default() }
                    } else {
                        pb::NonBodyParameter { header_parameter_sub_schema: Some(sp), ..Default::default() }
                    };
                    pb::Parameter { body_parameter: None, non_body_parameter: Some(nb) }
                }
                _ => return None,
            };
            Some(pb::ParametersItem { parameter: Some(parameter), json_reference: None })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded() -> pb::Document {
        pb::Document::decode(rendered().pb.as_slice()).expect("decode")
    }

    /// The checks kube-openapi's `proto.NewOpenAPIData` makes while parsing a definition: a
    /// reference names a definition and has no type or properties; an array has one type and
    /// exactly one items schema; an object without properties is a map; a primitive has a
    /// known type.
    fn check(s: &pb::Schema, names: &std::collections::HashSet<String>, path: &str, errs: &mut Vec<String>) {
        let types = s.ty.as_ref().map(|t| t.value.clone()).unwrap_or_default();
        if !s.xref.is_empty() {
            match s.xref.strip_prefix(V2_REF) {
                Some(n) if names.contains(n) => {}
                _ => errs.push(format!("{path}: bad reference {}", s.xref)),
            }
            if !types.is_empty() || s.properties.as_ref().is_some_and(|p| !p.additional_properties.is_empty()) {
                errs.push(format!("{path}: reference with a type or properties"));
            }
            return;
        }
        let kids = |errs: &mut Vec<String>| {
            if let Some(p) = &s.properties {
                for n in &p.additional_properties {
                    check(n.value.as_ref().unwrap(), names, &format!("{path}.{}", n.name), errs);
                }
            }
            if let Some(ap) = s.additional_properties.as_ref().and_then(|a| a.schema.as_ref()) {
                check(ap, names, &format!("{path}[*]"), errs);
            }
        };
        match types.as_slice() {
            [] => kids(errs),
            [t] if t == "object" => kids(errs),
            [t] if t == "array" => match s.items.as_ref().map(|i| i.schema.as_slice()) {
                Some([one]) => check(one, names, &format!("{path}[]"), errs),
                _ => errs.push(format!("{path}: array without exactly one items schema")),
            },
            [t] if ["string", "number", "integer", "boolean"].contains(&t.as_str()) => {}
            other => errs.push(format!("{path}: unsupported type {other:?}")),
        }
    }

    #[test]
    fn every_definition_parses_as_kube_openapi_requires() {
        let doc = decoded();
        assert_eq!(doc.swagger, "2.0");
        let defs = &doc.definitions.as_ref().expect("definitions").additional_properties;
        let names: std::collections::HashSet<String> = defs.iter().map(|d| d.name.clone()).collect();
        let mut errs = Vec::new();
        for d in defs {
            check(d.value.as_ref().expect("schema"), &names, &d.name, &mut errs);
        }
        assert!(errs.is_empty(), "{errs:#?}");
        for want in [
            "io.k8s.api.core.v1.ServiceSpec",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            STATUS,
        ] {
            assert!(names.contains(want), "missing {want}");
        }
    }

    #[test]
    fn served_kinds_carry_their_group_version_kind_as_yaml() {
        let doc = decoded();
        let defs = &doc.definitions.as_ref().unwrap().additional_properties;
        for r in RESOURCES {
            let name = schema_name(r);
            let d = defs.iter().find(|d| d.name == name).unwrap_or_else(|| panic!("no definition {name}"));
            let ext = d
                .value
                .as_ref()
                .unwrap()
                .vendor_extension
                .iter()
                .find(|e| e.name == "x-kubernetes-group-version-kind")
                .expect("gvk extension");
            let v: Value = serde_yaml::from_str(&ext.value.as_ref().unwrap().yaml).expect("yaml");
            assert_eq!(v, json!([{"group": r.group, "version": r.version, "kind": r.kind}]), "{name}");
        }
        // A nested type is no kind.
        let spec = defs.iter().find(|d| d.name == "io.k8s.api.core.v1.ServiceSpec").unwrap();
        assert!(spec
            .value
            .as_ref()
            .unwrap()
            .vendor_extension
            .iter()
            .all(|e| e.name != "x-kubernetes-group-version-kind"));
    }

    #[test]
    fn refs_are_v2_and_int_or_string_is_a_string() {
        let text = String::from_utf8(rendered().json.clone()).unwrap();
        assert!(!text.contains(V3_REF) && !text.contains("\"nullable\""));
        let doc: Value = serde_json::from_str(&text).unwrap();
        let ios = &doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(ios["type"], "string");
        assert_eq!(ios["format"], "int-or-string");
        let meta = &doc["definitions"]["io.k8s.api.core.v1.Service"]["properties"]["metadata"];
        assert_eq!(meta["$ref"], "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
        assert!(meta.get("allOf").is_none() && meta.get("type").is_none(), "{meta}");
    }

    #[test]
    fn operations_declare_field_validation_and_no_strategic_merge() {
        let doc = decoded();
        let paths = &doc.paths.as_ref().unwrap().path;
        let svc = paths
            .iter()
            .find(|p| p.name == "/api/v1/namespaces/{namespace}/services")
            .expect("services path")
            .value
            .as_ref()
            .unwrap();
        let post = svc.post.as_ref().unwrap();
        let gvk = post.vendor_extension.iter().find(|e| e.name == "x-kubernetes-group-version-kind").unwrap();
        let m: BTreeMap<String, String> = serde_yaml::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
        assert_eq!((m["group"].as_str(), m["version"].as_str(), m["kind"].as_str()), ("", "v1", "Service"));
        let names: Vec<String> = post
            .parameters
            .iter()
            .filter_map(|p| {
                p.parameter
                    .as_ref()?
                    .non_body_parameter
                    .as_ref()?
                    .query_parameter_sub_schema
                    .as_ref()
                    .map(|q| q.name.clone())
            })
            .collect();
        assert!(names.contains(&"fieldValidation".to_string()), "{names:?}");
        let body = post.parameters.iter().find_map(|p| p.parameter.as_ref()?.body_parameter.as_ref()).unwrap();
        assert_eq!(body.schema.as_ref().unwrap().xref, "#/definitions/io.k8s.api.core.v1.Service");
        let named = paths
            .iter()
            .find(|p| p.name == "/api/v1/namespaces/{namespace}/services/{name}")
            .unwrap()
            .value
            .as_ref()
            .unwrap();
        let consumes = &named.patch.as_ref().unwrap().consumes;
        assert!(
            consumes.contains(&"application/merge-patch+json".to_string())
                && !consumes.iter().any(|c| c.contains("strategic")),
            "{consumes:?}"
        );
        assert!(paths.iter().any(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"));
    }

    #[test]
    fn accept_header_picks_the_representation() {
        let mut h = HeaderMap::new();
        assert!(!wants_protobuf(&h));
        h.insert(http::header::ACCEPT, MIME_PB.parse().unwrap());
        assert!(wants_protobuf(&h));
        let r = document(&h);
        assert_eq!(r.headers()["content-type"], MIME_PB_DOT);
        h.insert(http::header::ACCEPT, format!("{MIME_PB_DOT}, application/json").parse().unwrap());
        assert!(wants_protobuf(&h));
        h.insert(http::header::ACCEPT, format!("application/json;q=0.9, {MIME_PB}").parse().unwrap());
        assert!(!wants_protobuf(&h));
        h.insert(http::header::ACCEPT, "application/json, */*".parse().unwrap());
        assert!(!wants_protobuf(&h));
        let r = document(&h);
        assert_eq!(r.status(), 200);
        let etag = r.headers()["etag"].clone();
        h.insert(http::header::IF_NONE_MATCH, etag);
        assert_eq!(document(&h).status(), 304);
    }
}
