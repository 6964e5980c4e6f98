//! The four rbac.authorization.k8s.io/v1 kinds (upstream's `pkg/registry/rbac/{role,clusterrole,
//! rolebinding,clusterrolebinding}` and `pkg/apis/rbac/validation`), all of them in this file:
//! defaulting (a binding's `roleRef.apiGroup` and its User/Group subjects' `apiGroup` default to
//! the RBAC group), validation with upstream's messages (names are path segments; a rule needs
//! verbs, and either non-resource URLs or API groups and resources; a namespaced Role may not
//! name non-resource URLs; a binding's roleRef is immutable and a ClusterRoleBinding may only
//! reference a ClusterRole; subjects are users, groups or service accounts), the Tables of
//! upstream's printers (roles: Name, Created At; bindings: Name, Role, Age and, wide, Users,
//! Groups, ServiceAccounts) and the OpenAPI schemas. Escalation prevention is not a strategy
//! matter: `crate::auth::rbac::escalation` checks writes against the writer's own rules.

use serde_json::{json, Map, Value};
use yard_api::naming::{name_is_dns_subdomain, name_is_path_segment};
use yard_api::table::{age_col, col, name_col, translate_timestamp_since};
use yard_api::validation::{validate_label_selector, validate_object_meta, validate_object_meta_update, FieldError};

use super::{Resource, Strategy};

/// The API group of the four kinds, and of User and Group subjects.
pub const GROUP: &str = "rbac.authorization.k8s.io";

pub struct Role;
pub static ROLE: Role = Role;
pub struct ClusterRole;
pub static CLUSTER_ROLE: ClusterRole = ClusterRole;
pub struct RoleBinding;
pub static ROLE_BINDING: RoleBinding = RoleBinding;
pub struct ClusterRoleBinding;
pub static CLUSTER_ROLE_BINDING: ClusterRoleBinding = ClusterRoleBinding;

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn str_values(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| json!(s)).collect())
}

fn meta_errors(obj: &Value, old: Option<&Value>, namespaced: bool) -> Vec<FieldError> {
    let empty = Value::Object(Map::new());
    let meta = obj.get("metadata").unwrap_or(&empty);
    match old {
        None => validate_object_meta(meta, namespaced, name_is_path_segment, "metadata"),
        Some(old) => {
            let mut errs = validate_object_meta(meta, namespaced, name_is_path_segment, "metadata");
            errs.extend(validate_object_meta_update(meta, old.get("metadata").unwrap_or(&empty), "metadata"));
            errs
        }
    }
}

/// upstream's ValidatePolicyRule.
fn validate_rule(rule: &Value, namespaced: bool, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if strs(rule.get("verbs")).is_empty() {
        errs.push(FieldError::required(format!("{path}.verbs"), "verbs must contain at least one value"));
    }
    let urls = strs(rule.get("nonResourceURLs"));
    if !urls.is_empty() {
        if namespaced {
            errs.push(FieldError::invalid(
                format!("{path}.nonResourceURLs"),
                str_values(&urls),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        let any = |k: &str| !strs(rule.get(k)).is_empty();
        if any("apiGroups") || any("resources") || any("resourceNames") {
            errs.push(FieldError::invalid(
                format!("{path}.nonResourceURLs"),
                str_values(&urls),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return errs;
    }
    if strs(rule.get("apiGroups")).is_empty() {
        errs.push(FieldError::required(
            format!("{path}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if strs(rule.get("resources")).is_empty() {
        errs.push(FieldError::required(
            format!("{path}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
    errs
}

fn validate_rules(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let rules = obj.get("rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    rules.iter().enumerate().flat_map(|(i, r)| validate_rule(r, namespaced, &format!("rules[{i}]"))).collect()
}

/// upstream's ValidateRoleBindingSubject.
fn validate_subject(s: &Value, namespaced: bool, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let get = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
    let (name, kind, group) = (get("name"), get("kind"), get("apiGroup"));
    if name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    }
    match kind {
        "ServiceAccount" => {
            if !name.is_empty() {
                for m in name_is_dns_subdomain(name, false) {
                    errs.push(FieldError::invalid(format!("{path}.name"), name, m));
                }
            }
            if !group.is_empty() {
                errs.push(FieldError::not_supported(format!("{path}.apiGroup"), group, &[""]));
            }
            if !namespaced && get("namespace").is_empty() {
                errs.push(FieldError::required(format!("{path}.namespace"), ""));
            }
        }
        "User" | "Group" => {
            if group != GROUP {
                errs.push(FieldError::not_supported(format!("{path}.apiGroup"), group, &[GROUP]));
            }
        }
        _ => errs.push(FieldError::not_supported(format!("{path}.kind"), kind, &["ServiceAccount", "User", "Group"])),
    }
    errs
}

/// Go's `%#v` of an internal `rbac.RoleRef`, as upstream prints the value of `cannot change roleRef`.
fn role_ref_go(r: &Value) -> String {
    let q = |k: &str| yard_api::validation::go_quote(r.get(k).and_then(Value::as_str).unwrap_or(""));
    format!("rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}", q("apiGroup"), q("kind"), q("name"))
}

/// upstream's ValidateRoleBinding / ValidateClusterRoleBinding (+ Update).
fn validate_binding(obj: &Value, old: Option<&Value>, namespaced: bool) -> Vec<FieldError> {
    let mut errs = meta_errors(obj, old, namespaced);
    let empty = json!({});
    let rr = obj.get("roleRef").unwrap_or(&empty);
    let get = |k: &str| rr.get(k).and_then(Value::as_str).unwrap_or("");
    if get("apiGroup") != GROUP {
        errs.push(FieldError::not_supported("roleRef.apiGroup", get("apiGroup"), &[GROUP]));
    }
    let kinds: &[&str] = if namespaced { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
    if !kinds.contains(&get("kind")) {
        errs.push(FieldError::not_supported("roleRef.kind", get("kind"), kinds));
    }
    if get("name").is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for m in name_is_path_segment(get("name"), false) {
            errs.push(FieldError::invalid("roleRef.name", get("name"), m));
        }
    }
    let subjects = obj.get("subjects").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for (i, s) in subjects.iter().enumerate() {
        errs.extend(validate_subject(s, namespaced, &format!("subjects[{i}]")));
    }
    if let Some(old) = old {
        let old_rr = old.get("roleRef").unwrap_or(&empty);
        let norm = |v: &Value| (v.get("apiGroup").cloned(), v.get("kind").cloned(), v.get("name").cloned());
        if norm(old_rr) != norm(rr) {
            errs.push(FieldError {
                kind: yard_api::validation::ErrorKind::Invalid,
                field: "roleRef".into(),
                value: None,
                detail: format!("{}: cannot change roleRef", role_ref_go(rr)),
            });
        }
    }
    errs
}

/// upstream's SetDefaults_RoleBinding / _ClusterRoleBinding / _Subject.
fn default_binding(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    if let Some(rr) = o.get_mut("roleRef").and_then(Value::as_object_mut) {
        if rr.get("apiGroup").and_then(Value::as_str).is_none_or(str::is_empty) {
            rr.insert("apiGroup".into(), json!(GROUP));
        }
    }
    if let Some(subjects) = o.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            let unset = s.get("apiGroup").and_then(Value::as_str).is_none_or(str::is_empty);
            if unset && (kind == "User" || kind == "Group") {
                s.insert("apiGroup".into(), json!(GROUP));
            }
        }
    }
}

fn binding_columns() -> Vec<Value> {
    vec![
        name_col(),
        col(
            "Role",
            "string",
            "",
            "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.".into(),
            0,
        ),
        age_col(),
        col("Users", "string", "", "Users in the roleBinding".into(), 1),
        col("Groups", "string", "", "Groups in the roleBinding".into(), 1),
        col("ServiceAccounts", "string", "", "ServiceAccounts in the roleBinding".into(), 1),
    ]
}

/// upstream's printRoleBinding / printClusterRoleBinding (with rbac.SubjectsStrings).
fn binding_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let rr = obj.get("roleRef").cloned().unwrap_or(json!({}));
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for sub in obj.get("subjects").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]) {
        match sub.get("kind").and_then(Value::as_str).unwrap_or("") {
            "ServiceAccount" => sas.push(format!("{}/{}", s(sub, "namespace"), s(sub, "name"))),
            "User" => users.push(s(sub, "name")),
            "Group" => groups.push(s(sub, "name")),
            _ => {}
        }
    }
    vec![
        json!(obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")),
        json!(format!("{}/{}", s(&rr, "kind"), s(&rr, "name"))),
        json!(translate_timestamp_since(obj.pointer("/metadata/creationTimestamp"), now)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
}

fn rbac_patch_schema(r: &Resource) -> yard_api::patch::PatchSchema {
    yard_api::patch::schema_for(&r.api_version(), r.kind)
}

impl Strategy for Role {
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn defaults(&self, _r: &Resource, _obj: &mut Value) {}
    fn validate(&self, _r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = meta_errors(obj, old, true);
        errs.extend(validate_rules(obj, true));
        errs
    }
    fn openapi_schema(&self, gen: &mut schemars::SchemaGenerator) -> Option<String> {
        Some(crate::openapi::add_schema::<k8s_openapi::api::rbac::v1::Role>(gen))
    }
    fn patch_schema(&self, r: &Resource) -> yard_api::patch::PatchSchema {
        rbac_patch_schema(r)
    }
}

impl Strategy for ClusterRole {
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn defaults(&self, _r: &Resource, _obj: &mut Value) {}
    fn validate(&self, _r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = meta_errors(obj, old, false);
        errs.extend(validate_rules(obj, false));
        if let Some(agg) = obj.get("aggregationRule").filter(|v| !v.is_null()) {
            let sels = agg.get("clusterRoleSelectors").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            if sels.is_empty() {
                errs.push(FieldError::required(
                    "aggregationRule.clusterRoleSelectors",
                    "at least one clusterRoleSelector required if aggregationRule is non-nil",
                ));
            }
            for (i, sel) in sels.iter().enumerate() {
                errs.extend(validate_label_selector(sel, &format!("aggregationRule.clusterRoleSelectors[{i}]")));
            }
        }
        errs
    }
    fn openapi_schema(&self, gen: &mut schemars::SchemaGenerator) -> Option<String> {
        Some(crate::openapi::add_schema::<k8s_openapi::api::rbac::v1::ClusterRole>(gen))
    }
    fn patch_schema(&self, r: &Resource) -> yard_api::patch::PatchSchema {
        rbac_patch_schema(r)
    }
}

impl Strategy for RoleBinding {
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn defaults(&self, _r: &Resource, obj: &mut Value) {
        default_binding(obj);
    }
    fn validate(&self, _r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate_binding(obj, old, true)
    }
    fn table_columns(&self, _r: &Resource) -> Vec<Value> {
        binding_columns()
    }
    fn table_cells(&self, _r: &Resource, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        binding_cells(obj, now)
    }
    fn openapi_schema(&self, gen: &mut schemars::SchemaGenerator) -> Option<String> {
        Some(crate::openapi::add_schema::<k8s_openapi::api::rbac::v1::RoleBinding>(gen))
    }
    fn patch_schema(&self, r: &Resource) -> yard_api::patch::PatchSchema {
        rbac_patch_schema(r)
    }
}

impl Strategy for ClusterRoleBinding {
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn defaults(&self, _r: &Resource, obj: &mut Value) {
        default_binding(obj);
    }
    fn validate(&self, _r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate_binding(obj, old, false)
    }
    fn table_columns(&self, _r: &Resource) -> Vec<Value> {
        binding_columns()
    }
    fn table_cells(&self, _r: &Resource, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        binding_cells(obj, now)
    }
    fn openapi_schema(&self, gen: &mut schemars::SchemaGenerator) -> Option<String> {
        Some(crate::openapi::add_schema::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(gen))
    }
    fn patch_schema(&self, r: &Resource) -> yard_api::patch::PatchSchema {
        rbac_patch_schema(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yard_api::validation::aggregate_message;

    fn res(plural: &str) -> &'static Resource {
        super::super::find(GROUP, "v1", plural).expect("rbac resource")
    }

    fn check(plural: &str, obj: Value, old: Option<&Value>) -> String {
        let r = res(plural);
        let mut obj = obj;
        r.strategy.defaults(r, &mut obj);
        let errs = r.strategy.validate(r, &obj, old);
        if errs.is_empty() {
            String::new()
        } else {
            aggregate_message(&errs)
        }
    }

    #[test]
    fn rules_are_validated_as_upstream() {
        let role = |rules: Value| json!({"metadata": {"name": "r", "namespace": "d"}, "rules": rules});
        assert_eq!(
            check("roles", role(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])), None),
            ""
        );
        assert_eq!(
            check("roles", role(json!([{"apiGroups": [""], "resources": ["pods"]}])), None),
            "rules[0].verbs: Required value: verbs must contain at least one value"
        );
        assert_eq!(
            check("roles", role(json!([{"verbs": ["get"]}])), None),
            "[rules[0].apiGroups: Required value: resource rules must supply at least one api group, rules[0].resources: Required value: resource rules must supply at least one resource]"
        );
        assert_eq!(
            check("roles", role(json!([{"nonResourceURLs": ["/x"], "verbs": ["get"]}])), None),
            r#"rules[0].nonResourceURLs: Invalid value: ["/x"]: namespaced rules cannot apply to non-resource URLs"#
        );
        let cr = json!({"metadata": {"name": "c"}, "rules": [{"nonResourceURLs": ["/x"], "resources": ["pods"], "verbs": ["get"]}]});
        assert_eq!(
            check("clusterroles", cr, None),
            r#"rules[0].nonResourceURLs: Invalid value: ["/x"]: rules cannot apply to both regular resources and non-resource URLs"#
        );
        let agg = json!({"metadata": {"name": "c"}, "aggregationRule": {"clusterRoleSelectors": []}});
        assert_eq!(
            check("clusterroles", agg, None),
            "aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"
        );
    }

    #[test]
    fn bindings_are_defaulted_and_validated_as_upstream() {
        let r = res("rolebindings");
        let mut b = json!({"metadata": {"name": "b", "namespace": "d"}, "roleRef": {"kind": "Role", "name": "r"},
                           "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "default"}]});
        r.strategy.defaults(r, &mut b);
        assert_eq!(b["roleRef"]["apiGroup"], GROUP);
        assert_eq!(b["subjects"][0]["apiGroup"], GROUP);
        assert!(b["subjects"][1].get("apiGroup").is_none());
        assert!(r.strategy.validate(r, &b, None).is_empty());
        let crb = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "r"},
                         "subjects": [{"kind": "ServiceAccount", "name": "default"}, {"kind": "Robot", "name": "x"}]});
        assert_eq!(
            check("clusterrolebindings", crb, None),
            r#"[roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole", subjects[0].namespace: Required value, subjects[1].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group"]"#
        );
        let mut changed = b.clone();
        changed["roleRef"]["name"] = json!("other");
        assert_eq!(
            aggregate_message(&r.strategy.validate(r, &changed, Some(&b))),
            r#"roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"other"}: cannot change roleRef"#
        );
    }

    #[test]
    fn binding_tables_are_upstreams_printer() {
        let r = res("clusterrolebindings");
        let cols = r.strategy.table_columns(r);
        let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]);
        let b = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"},
                       "subjects": [{"kind": "User", "name": "a"}, {"kind": "User", "name": "b"}, {"kind": "Group", "name": "g"},
                                    {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]});
        let cells = r.strategy.table_cells(r, &b, jiff::Timestamp::now());
        assert_eq!(cells[1], "ClusterRole/view");
        assert_eq!(cells[2], "<unknown>");
        assert_eq!(cells[3..], [json!("a, b"), json!("g"), json!("ns/sa")]);
        let roles = res("roles");
        let names: Vec<Value> = roles.strategy.table_columns(roles).iter().map(|c| c["name"].clone()).collect();
        assert_eq!(names, [json!("Name"), json!("Created At")]);
    }
}
