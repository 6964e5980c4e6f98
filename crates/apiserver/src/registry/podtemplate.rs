//! The PodTemplate kind (upstream's `pkg/registry/core/podtemplate`), all of it in this file:
//! generation starts at 1; defaulting gives `template.spec` the pod-spec defaults a workload's
//! template gets; validation is `ValidatePodTemplate` / `ValidatePodTemplateUpdate` (the object
//! metadata, a DNS subdomain name, and the `template` as any pod template); the Table is
//! upstream's `podTemplateColumnDefinitions` (Name, Containers, Images, Pod Labels); the OpenAPI
//! schema is `io.k8s.api.core.v1.PodTemplate`; patches merge the template's lists by their keys.

use serde_json::{json, Map, Value};
use yard_api::defaults::default_pod_spec;
use yard_api::selector::{format_labels, labels_of};
use yard_api::table::{col, layout_container_cells, name_col};
use yard_api::validation::{validate_object_meta, validate_object_meta_update, validate_pod_template_spec, FieldError};

use super::{Resource, Strategy};
use crate::objects::meta_mut;

pub struct PodTemplate;
pub static POD_TEMPLATE: PodTemplate = PodTemplate;
impl Strategy for PodTemplate {
    fn prepare_for_create(&self, obj: &mut Value) {
        meta_mut(obj).insert("generation".into(), json!(1));
    }
    fn defaults(&self, _r: &Resource, obj: &mut Value) {
        let Some(mut cur) = obj.as_object_mut() else { return };
        for key in ["template", "spec"] {
            let e = cur.entry(key).or_insert_with(|| json!({}));
            if !e.is_object() {
                *e = json!({});
            }
            cur = e.as_object_mut().expect("object");
        }
        default_pod_spec(cur, false);
    }
    fn validate(&self, _r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let empty = Value::Object(Map::new());
        let meta = obj.get("metadata").unwrap_or(&empty);
        let mut errs = match old {
            None => validate_object_meta(meta, true, yard_api::naming::name_is_dns_subdomain, "metadata"),
            Some(old) => validate_object_meta_update(meta, old.get("metadata").unwrap_or(&empty), "metadata"),
        };
        errs.extend(validate_pod_template_spec(obj.get("template").unwrap_or(&empty), "template"));
        errs
    }
    fn table_columns(&self, _r: &Resource) -> Vec<Value> {
        vec![
            name_col(),
            col("Containers", "string", "", "Names of each container in the template.".into(), 0),
            col("Images", "string", "", "Images referenced by each container in the template.".into(), 0),
            col("Pod Labels", "string", "", "The labels for the pod template.".into(), 0),
        ]
    }
    fn table_cells(&self, _r: &Resource, obj: &Value, _now: jiff::Timestamp) -> Vec<Value> {
        let containers = obj.pointer("/template/spec/containers").and_then(Value::as_array);
        let (names, images) = layout_container_cells(containers.map_or(&[], Vec::as_slice));
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        vec![json!(name), json!(names), json!(images), json!(format_labels(&labels_of(&obj["template"])))]
    }
    fn openapi_schema(&self, gen: &mut schemars::SchemaGenerator) -> Option<String> {
        Some(crate::openapi::add_schema::<k8s_openapi::api::core::v1::PodTemplate>(gen))
    }
    fn patch_schema(&self, _r: &Resource) -> yard_api::patch::PatchSchema {
        static SCHEMA: std::sync::OnceLock<yard_api::patch::PatchSchema> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| yard_api::patch::pod_template_at("template")).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> &'static Resource {
        super::super::find("", "v1", "podtemplates").expect("podtemplates")
    }

    #[test]
    fn defaults_the_template_spec_as_a_workload_template() {
        let r = resource();
        let mut t =
            json!({"metadata": {"name": "t"}, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}});
        r.strategy.defaults(r, &mut t);
        let spec = &t["template"]["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][0]["terminationMessagePath"], "/dev/termination-log");
        assert!(spec.get("enableServiceLinks").is_none(), "no Pod-only defaults");
        let again = t.clone();
        r.strategy.defaults(r, &mut t);
        assert_eq!(t, again, "idempotent");
        // A missing or malformed template is defaulted into shape; a non-object is left alone.
        let mut bare = json!({"metadata": {"name": "b"}, "template": 3});
        r.strategy.defaults(r, &mut bare);
        assert_eq!(bare["template"]["spec"]["restartPolicy"], "Always");
        let mut scalar = json!("x");
        r.strategy.defaults(r, &mut scalar);
        assert_eq!(scalar, json!("x"));
    }

    #[test]
    fn table_is_upstreams_pod_template_printer() {
        let r = resource();
        let cols = r.strategy.table_columns(r);
        let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Containers", "Images", "Pod Labels"]);
        assert!(cols.iter().all(|c| c["priority"] == 0));
        assert_eq!(cols[0]["format"], "name");
        let t = json!({"metadata": {"name": "web"}, "template": {
            "metadata": {"labels": {"tier": "front", "app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "sidecar", "image": "busybox:1.28"}]},
        }});
        let now = jiff::Timestamp::now();
        assert_eq!(
            r.strategy.table_cells(r, &t, now),
            [json!("web"), json!("nginx,sidecar"), json!("nginx:1.25,busybox:1.28"), json!("app=web,tier=front")]
        );
        assert_eq!(
            r.strategy.table_cells(r, &json!({"metadata": {"name": "x"}}), now),
            [json!("x"), json!(""), json!(""), json!("<none>")]
        );
    }
}
