use serde_json::{json, Value};

use super::*;

fn pod() -> PatchSchema {
    schema_for("v1", "Pod")
}

fn deploy() -> PatchSchema {
    schema_for("apps/v1", "Deployment")
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap_or_default().to_string()).collect()
}

// ----------------------------------------------------------------------------- strategic merge

#[test]
fn smp_merges_containers_by_name() {
    // The kubectl "update-api-object-kubectl-patch" task: a second container is merged in,
    // the first one kept; new patch items come first (upstream ordering without
    // $setElementOrder).
    let live = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"patch-demo"},
        "spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"patch-demo-ctr","image":"nginx"}]}}}});
    let patch = json!({"spec":{"template":{"spec":{"containers":[{"name":"patch-demo-ctr-2","image":"redis"}]}}}});
    let out = strategic_merge(&live, &patch, &deploy()).unwrap();
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs), vec!["patch-demo-ctr-2", "patch-demo-ctr"]);
    assert_eq!(cs[1]["image"], "nginx");
    assert_eq!(out["spec"]["replicas"], 2);

    // Patching a field of an existing container merges into it.
    let patch = json!({"spec":{"template":{"spec":{"containers":[{"name":"patch-demo-ctr","image":"nginx:1.25"}]}}}});
    let out = strategic_merge(&live, &patch, &deploy()).unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name":"patch-demo-ctr","image":"nginx:1.25"}]));
}

#[test]
fn smp_replaces_lists_without_patch_strategy() {
    // tolerations has no patchStrategy: the patch list replaces the live one.
    let live = json!({"spec":{"tolerations":[{"effect":"NoSchedule","key":"dedicated","value":"test-team"}]}});
    let patch = json!({"spec":{"tolerations":[{"effect":"NoSchedule","key":"disktype","value":"ssd"}]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["spec"]["tolerations"], patch["spec"]["tolerations"]);
}

#[test]
fn smp_nested_lists_merge_by_their_keys() {
    let live = json!({"spec":{"containers":[{"name":"a","image":"x",
        "ports":[{"containerPort":80,"protocol":"TCP"}],
        "env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]}]}});
    let patch = json!({"spec":{"containers":[{"name":"a",
        "ports":[{"containerPort":443}],
        "env":[{"name":"B","value":"3"}]}]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    let c = &out["spec"]["containers"][0];
    assert_eq!(c["image"], "x");
    assert_eq!(c["ports"], json!([{"containerPort":443},{"containerPort":80,"protocol":"TCP"}]));
    assert_eq!(c["env"], json!([{"name":"A","value":"1"},{"name":"B","value":"3"}]));
}

#[test]
fn smp_set_element_order() {
    let live = json!({"spec":{"containers":[{"name":"a","env":[
        {"name":"A","value":"1"},{"name":"B","value":"2"},{"name":"C","value":"3"}]}]}});
    let patch = json!({"spec":{"containers":[{"name":"a",
        "$setElementOrder/env":[{"name":"C"},{"name":"A"},{"name":"B"}],
        "env":[{"name":"A","value":"new"}]}]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([{"name":"C","value":"3"},{"name":"A","value":"new"},{"name":"B","value":"2"}])
    );
    assert!(out["spec"]["containers"][0].get("$setElementOrder/env").is_none());

    // Server-only items keep their place relative to the live order.
    let live = json!({"spec":{"containers":[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"}]}});
    let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"},{"name":"c"}],
        "containers":[{"name":"b","image":"x"}]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(names(&out["spec"]["containers"]), vec!["b", "a", "c", "d"]);
    assert_eq!(out["spec"]["containers"][0]["image"], "x");

    // Primitive lists: kubectl sends the order of the finalizers too.
    let live = json!({"metadata":{"finalizers":["a","b"]}});
    let patch = json!({"metadata":{"$setElementOrder/finalizers":["b","c","a"],"finalizers":["c"]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "c", "a"]));
}

#[test]
fn smp_set_element_order_mismatch_is_an_error() {
    let live = json!({"spec":{"containers":[{"name":"a"},{"name":"b"}]}});
    let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"a"}],
        "containers":[{"name":"b","image":"x"}]}});
    let err = strategic_merge(&live, &patch, &pod()).unwrap_err();
    assert!(err.to_string().contains("doesn't match $setElementOrder list"), "{err}");
}

#[test]
fn smp_patch_delete_and_replace_in_lists() {
    let live = json!({"spec":{"containers":[{"name":"a","image":"x"},{"name":"b","image":"y"}]}});
    let patch = json!({"spec":{"containers":[{"name":"a","$patch":"delete"}]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["spec"]["containers"], json!([{"name":"b","image":"y"}]));

    let patch = json!({"spec":{"containers":[{"name":"c","image":"z"},{"$patch":"replace"}]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["spec"]["containers"], json!([{"name":"c","image":"z"}]));

    let patch = json!({"spec":{"containers":[{"$patch":"delete"}]}});
    let err = strategic_merge(&live, &patch, &pod()).unwrap_err();
    assert!(err.to_string().contains("does not contain declared merge key: name"), "{err}");

    let patch = json!({"spec":{"containers":[{"name":"a","$patch":"merge"}]}});
    let err = strategic_merge(&live, &patch, &pod()).unwrap_err();
    assert_eq!(err.to_string(), "merging lists cannot yet be specified in the patch");
}

#[test]
fn smp_patch_directives_in_maps() {
    let live = json!({"metadata":{"labels":{"a":"1","b":"2"},"annotations":{"x":"y"}}});
    let patch = json!({"metadata":{"labels":{"$patch":"replace","c":"3"}}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"c":"3"}));
    assert_eq!(out["metadata"]["annotations"], json!({"x":"y"}));

    let patch = json!({"metadata":{"labels":{"$patch":"delete"}}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({}));

    let patch = json!({"metadata":{"labels":{"$patch":"bogus"}}});
    let err = strategic_merge(&live, &patch, &pod()).unwrap_err();
    assert!(err.to_string().starts_with("unknown patch type: bogus in map:"), "{err}");
}

#[test]
fn smp_null_deletes_key() {
    let live = json!({"metadata":{"labels":{"a":"1","b":"2"}}});
    let patch = json!({"metadata":{"labels":{"a":null,"z":null}}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"b":"2"}));
}

#[test]
fn smp_retain_keys() {
    // The kubectl docs' Recreate example: switch strategy type and drop rollingUpdate.
    let live = json!({"spec":{"strategy":{"type":"RollingUpdate",
        "rollingUpdate":{"maxSurge":"25%","maxUnavailable":"25%"}}}});
    let patch = json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}});
    let out = strategic_merge(&live, &patch, &deploy()).unwrap();
    assert_eq!(out["spec"]["strategy"], json!({"type":"Recreate"}));

    let bad = json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":{"maxSurge":1}}}});
    let err = strategic_merge(&live, &bad, &deploy()).unwrap_err();
    assert_eq!(err, PatchError::BadRequest("invalid patch format of retainKeys".into()));
    assert_eq!(err.code(), 400);

    // Volumes use retainKeys to switch the volume source.
    let live = json!({"spec":{"volumes":[{"name":"v","emptyDir":{}}]}});
    let patch = json!({"spec":{"volumes":[{"name":"v","$retainKeys":["name","hostPath"],"hostPath":{"path":"/tmp"}}]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["spec"]["volumes"], json!([{"name":"v","hostPath":{"path":"/tmp"}}]));
}

#[test]
fn smp_primitive_lists() {
    let live = json!({"metadata":{"finalizers":["a","b","c"]}});
    let patch = json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["b"]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));

    let patch = json!({"metadata":{"finalizers":["c","d"]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c", "d"]));

    let bad = json!({"metadata":{"$deleteFromPrimitiveList":["b"]}});
    let err = strategic_merge(&live, &bad, &pod()).unwrap_err();
    assert_eq!(err.to_string(), "invalid patch format of primitive list");

    // Delete list for an absent field changes nothing.
    let patch = json!({"spec":{"$deleteFromPrimitiveList/podCIDRs":["10.0.0.0/24"]}});
    let out = strategic_merge(&json!({"spec":{}}), &patch, &schema_for("v1", "Node")).unwrap();
    assert_eq!(out, json!({"spec":{}}));
}

#[test]
fn smp_service_ports_and_status_conditions() {
    let svc = schema_for("v1", "Service");
    let live = json!({"spec":{"selector":{"app":"a"},"ports":[{"port":80,"targetPort":8080,"protocol":"TCP"}]}});
    let patch = json!({"spec":{"ports":[{"port":80,"targetPort":9090}],"selector":{"tier":"web"}}});
    let out = strategic_merge(&live, &patch, &svc).unwrap();
    assert_eq!(out["spec"]["ports"], json!([{"port":80,"targetPort":9090,"protocol":"TCP"}]));
    // Strategic merge patch merges maps even when apply treats them as atomic.
    assert_eq!(out["spec"]["selector"], json!({"app":"a","tier":"web"}));

    let node = schema_for("v1", "Node");
    let live =
        json!({"status":{"conditions":[{"type":"Ready","status":"False"},{"type":"MemoryPressure","status":"False"}]}});
    let patch = json!({"status":{"conditions":[{"type":"Ready","status":"True"}]}});
    let out = strategic_merge(&live, &patch, &node).unwrap();
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type":"Ready","status":"True"},{"type":"MemoryPressure","status":"False"}])
    );

    // Endpoints subsets have no merge key: replaced.
    let ep = schema_for("v1", "Endpoints");
    let live = json!({"subsets":[{"addresses":[{"ip":"10.0.0.1"}]}]});
    let patch = json!({"subsets":[{"addresses":[{"ip":"10.0.0.2"}]}]});
    assert_eq!(strategic_merge(&live, &patch, &ep).unwrap(), patch);
}

#[test]
fn smp_unknown_kind_is_merge_patch() {
    let s = schema_for("example.com/v1", "Widget");
    assert!(!s.is_known());
    let live = json!({"spec":{"items":[{"name":"a"}],"x":1}});
    let patch = json!({"spec":{"items":[{"name":"b"}],"x":null}});
    assert_eq!(strategic_merge(&live, &patch, &s).unwrap(), json!({"spec":{"items":[{"name":"b"}]}}));
}

#[test]
fn smp_non_object_patch_is_bad_request() {
    let err = strategic_merge(&json!({}), &json!([1]), &pod()).unwrap_err();
    assert_eq!(err.code(), 400);
    assert_eq!(err.to_string(), "json: cannot unmarshal array into Go value of type map[string]interface {}");
}

#[test]
fn smp_new_list_without_merge_keys_is_taken_verbatim() {
    let patch = json!({"spec":{"containers":[{"image":"x"}]}});
    let out = strategic_merge(&json!({"spec":{}}), &patch, &pod()).unwrap();
    assert_eq!(out, patch);
}

#[test]
fn smp_new_field_with_directives_is_cleaned() {
    let live = json!({"spec":{}});
    let patch = json!({"spec":{"containers":[{"name":"a","env":[{"name":"X","value":"1"}],
        "$setElementOrder/env":[{"name":"X"}]}]}});
    let out = strategic_merge(&live, &patch, &pod()).unwrap();
    assert_eq!(out, json!({"spec":{"containers":[{"name":"a","env":[{"name":"X","value":"1"}]}]}}));
}

// ------------------------------------------------------------------------------- JSON patches

#[test]
fn json_merge_patch_rfc7386() {
    // RFC 7386 section 3 example.
    let target = json!({"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},
        "tags":["example","sample"],"content":"This will be unchanged"});
    let patch =
        json!({"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]});
    let out = json_merge_patch(&target, &patch);
    assert_eq!(
        out,
        json!({"title":"Hello!","author":{"givenName":"John"},"tags":["example"],
            "content":"This will be unchanged","phoneNumber":"+01-123-456-7890"})
    );
    assert_eq!(json_merge_patch(&json!({"a":"b"}), &json!({"a":{"b":"c"}})), json!({"a":{"b":"c"}}));
    assert_eq!(json_merge_patch(&json!(["a"]), &json!({"a":"c"})), json!({"a":"c"}));
}

#[test]
fn json_patch_rfc6902() {
    let doc = json!({"metadata":{"labels":{"a":"1"}},"spec":{"ports":[{"port":80}]}});
    let ops = json!([
        {"op":"add","path":"/metadata/labels/b","value":"2"},
        {"op":"replace","path":"/metadata/labels/a","value":"x"},
        {"op":"add","path":"/spec/ports/-","value":{"port":443}},
        {"op":"test","path":"/spec/ports/1/port","value":443},
        {"op":"copy","from":"/metadata/labels/b","path":"/metadata/labels/c"},
        {"op":"move","from":"/metadata/labels/c","path":"/metadata/labels/d"},
        {"op":"remove","path":"/spec/ports/0"},
        {"op":"add","path":"/metadata/annotations","value":{"k~/":"v"}},
        {"op":"remove","path":"/metadata/annotations/k~0~1"}
    ]);
    let out = json_patch(&doc, &ops).unwrap();
    assert_eq!(
        out,
        json!({"metadata":{"labels":{"a":"x","b":"2","d":"2"},"annotations":{}},"spec":{"ports":[{"port":443}]}})
    );
}

#[test]
fn json_patch_errors() {
    let doc = json!({"spec":{"replicas":1}});
    let e = json_patch(&doc, &json!([{"op":"test","path":"/spec/replicas","value":2}])).unwrap_err();
    assert_eq!(e.to_string(), "testing value /spec/replicas failed: test failed");
    assert_eq!(e.code(), 422);
    let e = json_patch(&doc, &json!([{"op":"remove","path":"/spec/missing"}])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "error in remove for path: '/spec/missing': Unable to remove nonexistent key: missing: missing value"
    );
    let e = json_patch(&doc, &json!([{"op":"remove","path":"/a/b"}])).unwrap_err();
    assert_eq!(e.to_string(), "remove operation does not apply: doc is missing path: \"/a/b\": missing value");
    let e = json_patch(&doc, &json!([{"op":"test","path":"/a/b","value":1}])).unwrap_err();
    assert_eq!(e.to_string(), "test operation does not apply: is missing path: /a/b: missing value");
    assert!(json_patch(&doc, &json!([{"op":"test","path":"/spec/absent","value":null}])).is_ok());
    let e = json_patch(&doc, &json!([{"op":"add","path":"/a/b/c","value":1}])).unwrap_err();
    assert_eq!(e.to_string(), "add operation does not apply: doc is missing path: \"/a/b/c\": missing value");
    let e = json_patch(&doc, &json!([{"op":"replace","path":"/spec/x","value":1}])).unwrap_err();
    assert_eq!(e.to_string(), "replace operation does not apply: doc is missing key: /spec/x: missing value");
    let e = json_patch(&doc, &json!([{"op":"frob","path":"/spec"}])).unwrap_err();
    assert_eq!(e.to_string(), "Unexpected kind: frob");
    let e = json_patch(&doc, &json!({"op":"add"})).unwrap_err();
    assert_eq!(e.code(), 400);
    assert_eq!(e.to_string(), "json: cannot unmarshal object into Go value of type jsonpatch.Patch");
    let e = json_patch(&json!({"l":[1]}), &json!([{"op":"add","path":"/l/5","value":1}])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "error in add for path: '/l/5': Unable to access invalid index: 5: invalid index referenced"
    );
    let many: Vec<Value> = (0..10_001).map(|_| json!({"op":"test","path":"","value":null})).collect();
    assert_eq!(json_patch(&doc, &Value::Array(many)).unwrap_err().code(), 413);
}

// -------------------------------------------------------------------------- server-side apply

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-01-01T00:01:00Z";
const T3: &str = "2026-01-01T00:02:00Z";

fn nginx_config(replicas: i64, image: &str) -> Value {
    json!({"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"nginx","namespace":"demo","labels":{"app":"nginx"}},
        "spec":{"replicas":replicas,"selector":{"matchLabels":{"app":"nginx"}},
            "template":{"metadata":{"labels":{"app":"nginx"}},
                "spec":{"containers":[{"name":"nginx","image":image,"ports":[{"containerPort":80}]}]}}}})
}

fn entries(obj: &Value) -> Vec<ManagedFieldsEntry> {
    decode_managed_fields(obj).unwrap()
}

fn entry<'a>(es: &'a [ManagedFieldsEntry], manager: &str) -> &'a ManagedFieldsEntry {
    es.iter().find(|e| e.manager == manager).unwrap_or_else(|| panic!("no entry for {manager}"))
}

#[test]
fn apply_creates_with_upstream_fields_v1() {
    let out = apply(None, &nginx_config(2, "nginx:1.25"), "kubectl", false, T1).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
    let mf = out["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf.len(), 1);
    let e = &mf[0];
    assert_eq!(e["manager"], "kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T1);
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e.get("subresource").is_none());
    assert_eq!(
        e["fieldsV1"],
        json!({"f:metadata":{"f:labels":{"f:app":{}}},
            "f:spec":{"f:replicas":{},"f:selector":{},
                "f:template":{"f:metadata":{"f:labels":{"f:app":{}}},
                    "f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{},
                        "f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}}})
    );
}

#[test]
fn apply_reapply_unchanged_is_identical() {
    let first = apply(None, &nginx_config(2, "nginx:1.25"), "kubectl", false, T1).unwrap();
    let mut stored = first.clone();
    stored["metadata"]["resourceVersion"] = json!("5");
    stored["metadata"]["uid"] = json!("u-1");
    let again = apply(Some(&stored), &nginx_config(2, "nginx:1.25"), "kubectl", false, T2).unwrap();
    assert_eq!(again, stored);
    // A change moves the time.
    let changed = apply(Some(&stored), &nginx_config(3, "nginx:1.25"), "kubectl", false, T2).unwrap();
    assert_eq!(changed["spec"]["replicas"], 3);
    assert_eq!(changed["metadata"]["managedFields"][0]["time"], T2);
    assert_eq!(changed["metadata"]["uid"], "u-1");
}

#[test]
fn apply_two_managers_conflict_and_force() {
    let a = apply(None, &nginx_config(2, "nginx:1.25"), "alice", false, T1).unwrap();
    let bob_cfg = json!({"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"nginx","namespace":"demo"},"spec":{"replicas":5}});
    let err = apply(Some(&a), &bob_cfg, "bob", false, T2).unwrap_err();
    assert_eq!(err.code(), 409);
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas");
    let ApplyError::Conflict { conflicts, .. } = &err else { panic!() };
    assert_eq!(conflicts[0].field, ".spec.replicas");
    assert_eq!(conflicts[0].cause_message(), "conflict with \"alice\"");

    // Same value: no conflict, shared ownership.
    let same = json!({"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"nginx","namespace":"demo"},"spec":{"replicas":2}});
    let shared = apply(Some(&a), &same, "bob", false, T2).unwrap();
    let es = entries(&shared);
    let replicas = [PathElement::Field("spec".into()), PathElement::Field("replicas".into())];
    assert!(entry(&es, "alice").fields.has(&replicas));
    assert!(entry(&es, "bob").fields.has(&replicas));

    // Force takes the field over.
    let forced = apply(Some(&a), &bob_cfg, "bob", true, T2).unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    let es = entries(&forced);
    assert!(!entry(&es, "alice").fields.has(&replicas));
    assert!(entry(&es, "bob").fields.has(&replicas));
    // Alice now conflicts when she re-applies her old value.
    let err = apply(Some(&forced), &nginx_config(2, "nginx:1.25"), "alice", false, T3).unwrap_err();
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"bob\": .spec.replicas");
}

#[test]
fn apply_conflicts_with_several_fields_lists_them() {
    let a = apply(None, &nginx_config(2, "nginx:1.25"), "alice", false, T1).unwrap();
    let err = apply(Some(&a), &nginx_config(4, "nginx:1.26"), "bob", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn apply_removing_a_field_deletes_it() {
    let mut cfg = nginx_config(2, "nginx:1.25");
    cfg["metadata"]["labels"]["tier"] = json!("web");
    cfg["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name":"sidecar","image":"busybox"}));
    let first = apply(None, &cfg, "kubectl", false, T1).unwrap();
    assert_eq!(first["metadata"]["labels"]["tier"], "web");
    assert_eq!(names(&first["spec"]["template"]["spec"]["containers"]), vec!["nginx", "sidecar"]);

    let second = apply(Some(&first), &nginx_config(2, "nginx:1.25"), "kubectl", false, T2).unwrap();
    assert_eq!(second["metadata"]["labels"], json!({"app":"nginx"}));
    assert_eq!(names(&second["spec"]["template"]["spec"]["containers"]), vec!["nginx"]);

    // Dropping the only annotation removes the emptied map too.
    let mut with_ann = nginx_config(2, "nginx:1.25");
    with_ann["metadata"]["annotations"] = json!({"note":"x"});
    let a = apply(None, &with_ann, "kubectl", false, T1).unwrap();
    let b = apply(Some(&a), &nginx_config(2, "nginx:1.25"), "kubectl", false, T2).unwrap();
    assert!(b["metadata"].get("annotations").is_none(), "{b}");
}

#[test]
fn apply_keeps_fields_other_appliers_own() {
    let mut cfg = nginx_config(2, "nginx:1.25");
    cfg["metadata"]["labels"]["tier"] = json!("web");
    let a = apply(None, &cfg, "alice", false, T1).unwrap();
    let bob = json!({"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"nginx","namespace":"demo","labels":{"tier":"web"}}});
    let b = apply(Some(&a), &bob, "bob", false, T2).unwrap();
    let c = apply(Some(&b), &nginx_config(2, "nginx:1.25"), "alice", false, T3).unwrap();
    assert_eq!(c["metadata"]["labels"], json!({"app":"nginx","tier":"web"}));
}

#[test]
fn apply_does_not_remove_fields_it_never_owned() {
    let mut live = nginx_config(2, "nginx:1.25");
    track_update(None, &mut live, "kubectl-create", "Update", None, T1);
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
    let out = apply(Some(&live), &nginx_config(2, "nginx:1.25"), "kubectl", false, T2).unwrap();
    let out2 = apply(Some(&out), &nginx_config(2, "nginx:1.25"), "kubectl", false, T3).unwrap();
    assert_eq!(out2["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
}

#[test]
fn apply_after_create_conflicts_like_upstream() {
    let mut live = nginx_config(2, "nginx:1.25");
    track_update(None, &mut live, "kubectl-create", "Update", None, T1);
    // Same manifest: no conflict, the applier shares ownership.
    let ok = apply(Some(&live), &nginx_config(2, "nginx:1.25"), "kubectl", false, T2).unwrap();
    assert_eq!(entries(&ok).len(), 2);
    // Changed replicas: conflict with the creator.
    let err = apply(Some(&live), &nginx_config(3, "nginx:1.25"), "kubectl", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1 at {T1}: .spec.replicas")
    );
}

#[test]
fn apply_upgrades_from_client_side_apply() {
    // kubectl apply (client-side) stores the last-applied annotation; a later
    // `kubectl apply --server-side` with an edited manifest does not conflict on fields the
    // client-side apply set.
    let mut manifest = nginx_config(2, "nginx:1.25");
    let mut live = manifest.clone();
    live["metadata"]["annotations"] = json!({
        LAST_APPLIED_ANNOTATION: serde_json::to_string(&manifest).unwrap()});
    track_update(None, &mut live, "kubectl-client-side-apply", "Update", None, T1);
    manifest["spec"]["replicas"] = json!(3);
    let out = apply(Some(&live), &manifest, "kubectl", false, T2).unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    let ann = out["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].as_str().unwrap();
    let last: Value = serde_json::from_str(ann).unwrap();
    assert_eq!(last["spec"]["replicas"], 3);
    // Another manager name gets the conflict.
    let err = apply(Some(&live), &manifest, "other", false, T2).unwrap_err();
    assert!(err.to_string().contains("conflict with \"kubectl-client-side-apply\" using apps/v1"), "{err}");
}

#[test]
fn apply_last_applied_only_excuses_fields_it_still_matches() {
    let manifest = nginx_config(2, "nginx:1.25");
    let mut live = manifest.clone();
    live["metadata"]["annotations"] = json!({
        LAST_APPLIED_ANNOTATION: serde_json::to_string(&manifest).unwrap()});
    track_update(None, &mut live, "kubectl-client-side-apply", "Update", None, T1);
    // Someone scaled the deployment since: replicas no longer match the annotation.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(7);
    track_update(Some(&live), &mut scaled, "kubectl-client-side-apply", "Update", None, T2);
    let mut edited = manifest.clone();
    edited["spec"]["replicas"] = json!(3);
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    let err = apply(Some(&scaled), &edited, "kubectl", false, T3).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1 at {T2}: .spec.replicas")
    );
}

#[test]
fn update_managers_are_capped() {
    let mut obj = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{}});
    track_update(None, &mut obj, "creator", "Update", None, "2026-01-01T00:00:00Z");
    for i in 0..12 {
        let mut next = obj.clone();
        next["data"][format!("k{i}")] = json!("v");
        track_update(
            Some(&obj),
            &mut next,
            &format!("m{i:02}"),
            "Update",
            None,
            &format!("2026-01-01T00:{:02}:00Z", i + 1),
        );
        obj = next;
    }
    let es = entries(&obj);
    assert_eq!(es.len(), 10, "{es:?}");
    let ancient = entry(&es, "ancient-changes");
    assert!(ancient.fields.has(&[PathElement::Field("data".into()), PathElement::Field("k0".into())]));
    assert!(ancient.fields.has(&[PathElement::Field("data".into()), PathElement::Field("k2".into())]));
    assert!(es.iter().any(|e| e.manager == "m11"));
}

#[test]
fn apply_service_ports_keyed_by_port_and_protocol() {
    let cfg = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},
        "spec":{"selector":{"app":"web"},"ports":[{"port":80,"targetPort":8080},{"port":53,"protocol":"UDP","name":"dns"}]}});
    let out = apply(None, &cfg, "kubectl", false, T1).unwrap();
    assert_eq!(
        out["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"],
        json!({"f:ports":{
            "k:{\"port\":53,\"protocol\":\"UDP\"}":{".":{},"f:name":{},"f:port":{},"f:protocol":{}},
            "k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:targetPort":{}}},
            "f:selector":{}})
    );
    // Selector is atomic: another applier changing one key conflicts on the whole map.
    let other = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},
        "spec":{"selector":{"app":"web","tier":"x"}}});
    let err = apply(Some(&out), &other, "x", false, T2).unwrap_err();
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.selector");
}

#[test]
fn apply_rejects_bad_configs() {
    let mut cfg = nginx_config(1, "x");
    cfg["metadata"]["managedFields"] = json!([]);
    let e = apply(None, &cfg, "kubectl", false, T1).unwrap_err();
    assert_eq!(e.to_string(), "metadata.managedFields must be nil");
    let bad = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},
        "spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}});
    let e = apply(None, &bad, "kubectl", false, T1).unwrap_err();
    assert_eq!(e.code(), 500);
    assert!(e.to_string().contains("omits key field \"name\""), "{e}");
    let dup = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},
        "spec":{"containers":[{"name":"a","image":"x"},{"name":"a","image":"y"}]}});
    let e = apply(None, &dup, "kubectl", false, T1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to create typed patch object (/v1, Kind=Pod): .spec.containers: duplicate entries for key [name=\"a\"]"
    );
    let e = apply(None, &json!({"apiVersion":"v1","metadata":{"name":"x"}}), "kubectl", false, T1).unwrap_err();
    assert_eq!(e.code(), 400);
}

#[test]
fn apply_status_is_not_owned_on_main_resource() {
    let mut cfg = nginx_config(1, "x");
    cfg["status"] = json!({"replicas": 1});
    let out = apply(None, &cfg, "kubectl", false, T1).unwrap();
    assert!(out["metadata"]["managedFields"][0]["fieldsV1"].get("f:status").is_none());
}

// ------------------------------------------------------------------------------- track_update

#[test]
fn track_update_create_owns_everything_set() {
    let mut obj = json!({"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"d","namespace":"default","uid":"u","resourceVersion":"1",
            "creationTimestamp":T1,"generation":1,"labels":{"app":"d"}},
        "spec":{"replicas":1,"selector":{"matchLabels":{"app":"d"}},
            "strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%","maxUnavailable":"25%"}},
            "template":{"metadata":{"labels":{"app":"d"}},"spec":{"containers":[{"name":"c","image":"nginx",
                "ports":[{"containerPort":80,"protocol":"TCP"}],"resources":{}}],"restartPolicy":"Always"}}},
        "status":{}});
    track_update(None, &mut obj, "kubectl-create", "Update", None, T1);
    let mf = obj["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0]["manager"], "kubectl-create");
    assert_eq!(mf[0]["operation"], "Update");
    assert_eq!(mf[0]["time"], T1);
    assert_eq!(
        mf[0]["fieldsV1"],
        json!({"f:metadata":{"f:labels":{".":{},"f:app":{}}},
            "f:spec":{"f:replicas":{},"f:selector":{},
                "f:strategy":{"f:rollingUpdate":{".":{},"f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},
                "f:template":{"f:metadata":{"f:labels":{".":{},"f:app":{}}},
                    "f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"f:image":{},"f:name":{},
                        "f:ports":{".":{},"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:protocol":{}}},
                        "f:resources":{}}},
                        "f:restartPolicy":{}}}}})
    );
}

#[test]
fn track_update_create_owns_items_with_a_repeated_key_as_a_whole() {
    // Two env entries named A: the item is owned, not its fields (a key can not tell them apart).
    let mut obj = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"c","image":"i","env":[{"name":"A","value":"1"},{"name":"A","value":"2"},{"name":"B","value":"3"}]}]}});
    track_update(None, &mut obj, "m", "Update", None, T1);
    assert_eq!(
        obj["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"A\"}":{},
            "k:{\"name\":\"B\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:name":{}}}}})
    );
}

#[test]
fn track_update_moves_ownership_of_changed_fields() {
    let mut v1 = nginx_config(2, "nginx:1.25");
    track_update(None, &mut v1, "kubectl-create", "Update", None, T1);
    let mut v2 = v1.clone();
    v2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    v2["metadata"]["labels"]["edited"] = json!("yes");
    track_update(Some(&v1), &mut v2, "kubectl-edit", "Update", None, T2);
    let es = entries(&v2);
    assert_eq!(es.len(), 2);
    let image = FieldPath(vec![
        PathElement::Field("spec".into()),
        PathElement::Field("template".into()),
        PathElement::Field("spec".into()),
        PathElement::Field("containers".into()),
        PathElement::Key("{\"name\":\"nginx\"}".into()),
        PathElement::Field("image".into()),
    ]);
    assert_eq!(image.to_string(), ".spec.template.spec.containers[name=\"nginx\"].image");
    assert!(entry(&es, "kubectl-edit").fields.has(&image.0));
    assert!(!entry(&es, "kubectl-create").fields.has(&image.0));
    assert_eq!(entry(&es, "kubectl-edit").time.as_deref(), Some(T2));
    assert_eq!(entry(&es, "kubectl-create").time.as_deref(), Some(T1));

    // An update that changes nothing leaves managedFields alone.
    let mut v3 = v2.clone();
    track_update(Some(&v2), &mut v3, "kubectl-edit", "Update", None, T3);
    assert_eq!(v3, v2);

    // Removing a field removes it from every manager.
    let mut v4 = v2.clone();
    v4["metadata"]["labels"].as_object_mut().unwrap().remove("edited");
    track_update(Some(&v2), &mut v4, "kubectl-label", "Update", None, T3);
    let es = entries(&v4);
    assert!(es.iter().all(|e| e.manager != "kubectl-label"));
    let edited = [
        PathElement::Field("metadata".into()),
        PathElement::Field("labels".into()),
        PathElement::Field("edited".into()),
    ];
    assert!(!entry(&es, "kubectl-edit").fields.has(&edited));
    assert!(entry(&es, "kubectl-edit").fields.has(&image.0));
}

#[test]
fn track_update_clears_managed_fields_with_single_empty_entry() {
    let mut v1 = nginx_config(2, "nginx:1.25");
    track_update(None, &mut v1, "kubectl-create", "Update", None, T1);
    let mut v2 = v1.clone();
    v2["metadata"]["managedFields"] = json!([{}]);
    track_update(Some(&v1), &mut v2, "kubectl-patch", "Update", None, T2);
    assert!(v2["metadata"].get("managedFields").is_none(), "{v2}");
    // An empty list does not reset anything.
    let mut v3 = v1.clone();
    v3["metadata"]["managedFields"] = json!([]);
    track_update(Some(&v1), &mut v3, "kubectl-patch", "Update", None, T2);
    assert_eq!(v3, v1);
}

#[test]
fn track_update_status_subresource() {
    let mut v1 = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"c","image":"x"}]},"status":{"phase":"Pending"}});
    track_update(None, &mut v1, "kubectl-create", "Update", None, T1);
    let e = entries(&v1);
    assert!(e[0].fields.child(&PathElement::Field("status".into())).is_none());
    let mut v2 = v1.clone();
    v2["status"] = json!({"phase":"Running","conditions":[{"type":"Ready","status":"True"}]});
    track_update(Some(&v1), &mut v2, "yard-agent", "Update", Some("status"), T2);
    let es = entries(&v2);
    let agent = entry(&es, "yard-agent");
    assert_eq!(agent.subresource, "status");
    assert_eq!(
        agent.fields.to_fields_v1(),
        json!({"f:status":{"f:conditions":{".":{},"k:{\"type\":\"Ready\"}":{".":{},"f:status":{},"f:type":{}}},"f:phase":{}}})
    );
    assert_eq!(v2["metadata"]["managedFields"][1]["subresource"], "status");
}

#[test]
fn managed_fields_roundtrip_and_order() {
    let mut v = nginx_config(1, "x");
    track_update(None, &mut v, "z-updater", "Update", None, T1);
    let v = apply(
        Some(&v),
        &json!({"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"nginx","namespace":"demo","annotations":{"a":"b"}}}),
        "applier",
        false,
        T2,
    )
    .unwrap();
    let mf = v["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf[0]["operation"], "Apply");
    assert_eq!(mf[1]["operation"], "Update");
    let es = entries(&v);
    assert_eq!(encode_managed_fields(&es), v["metadata"]["managedFields"]);
    assert_eq!(default_manager("kubectl/v1.37.0 (linux/amd64) kubernetes/abc"), "kubectl");
}

// ------------------------------------------------------------------- never panics on garbage

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: &[&str] = &[
    "spec",
    "metadata",
    "containers",
    "name",
    "image",
    "ports",
    "containerPort",
    "protocol",
    "env",
    "value",
    "finalizers",
    "labels",
    "status",
    "conditions",
    "type",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$setElementOrder/finalizers",
    "$deleteFromPrimitiveList/finalizers",
    "$setElementOrder",
    "replace",
    "delete",
    "volumes",
    "template",
    "apiVersion",
    "kind",
];

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    let pick = if depth == 0 { rng.below(5) } else { rng.below(8) };
    match pick {
        0 => Value::Null,
        1 => json!(rng.below(3) == 0),
        2 => json!(rng.below(100)),
        3 => json!(["replace", "delete", "merge", "a", "b", "TCP"][rng.below(6) as usize]),
        4 => json!(KEYS[rng.below(KEYS.len() as u64) as usize]),
        5 | 6 => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(5) {
                let k = KEYS[rng.below(KEYS.len() as u64) as usize];
                m.insert(k.to_string(), random_value(rng, depth - 1));
            }
            Value::Object(m)
        }
        _ => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth - 1)).collect()),
    }
}

#[test]
fn never_panics_on_random_input() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let schemas = [pod(), deploy(), schema_for("v1", "Service"), schema_for("v1", "Node"), PatchSchema::unknown()];
    for i in 0..4000 {
        let original = random_value(&mut rng, 4);
        let patch = random_value(&mut rng, 4);
        let s = &schemas[i % schemas.len()];
        let _ = strategic_merge(&original, &patch, s);
        let _ = json_merge_patch(&original, &patch);
        let _ = json_patch(&original, &patch);
        let mut applied = patch.clone();
        if let Value::Object(m) = &mut applied {
            m.insert("apiVersion".into(), json!(["v1", "apps/v1"][i % 2]));
            m.insert("kind".into(), json!(["Pod", "Deployment", "Service"][i % 3]));
        }
        let _ = apply(Some(&original), &applied, "m", i % 2 == 0, T1);
        let mut new = applied.clone();
        track_update(Some(&original), &mut new, "m", "Update", None, T1);
    }
}

// ------------------------------------------------------------------------ kubectl-shaped flows

#[test]
fn patch_type_from_content_type() {
    assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), Some(PatchType::Apply));
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
        Some(PatchType::Strategic)
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);
    assert_eq!(PatchType::Merge.content_type(), "application/merge-patch+json");
}

#[test]
fn kubectl_client_side_apply_then_server_side_apply() {
    let svc = schema_for("v1", "Service");
    let manifest = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"hostnames"},
        "spec":{"selector":{"app":"hostnames"},"ports":[{"name":"default","protocol":"TCP","port":80,"targetPort":9376}]}});
    // kubectl apply: create with the annotation, fieldManager=kubectl-client-side-apply.
    let mut live = manifest.clone();
    live["metadata"]["annotations"] = json!({LAST_APPLIED_ANNOTATION: serde_json::to_string(&manifest).unwrap()});
    live["spec"]["clusterIP"] = json!("10.96.0.20");
    live["spec"]["type"] = json!("ClusterIP");
    track_update(None, &mut live, "kubectl-client-side-apply", "Update", None, T1);

    // Edited manifest: kubectl sends a three-way strategic merge patch.
    let patch = json!({"metadata":{"annotations":{LAST_APPLIED_ANNOTATION:"{}"}},
        "spec":{"$setElementOrder/ports":[{"port":80},{"port":8080}],
            "ports":[{"name":"alt","port":8080,"protocol":"TCP","targetPort":9376}]}});
    let mut patched = strategic_merge(&live, &patch, &svc).unwrap();
    assert_eq!(
        patched["spec"]["ports"],
        json!([{"name":"default","protocol":"TCP","port":80,"targetPort":9376},
               {"name":"alt","port":8080,"protocol":"TCP","targetPort":9376}])
    );
    assert_eq!(patched["spec"]["clusterIP"], "10.96.0.20");
    track_update(Some(&live), &mut patched, "kubectl-client-side-apply", "Update", None, T2);
    let es = entries(&patched);
    assert_eq!(es.len(), 1);
    assert_eq!(es[0].time.as_deref(), Some(T2));

    // Then a port is removed with a delete directive.
    let patch = json!({"spec":{"$setElementOrder/ports":[{"port":8080}],"ports":[{"$patch":"delete","port":80}]}});
    let after = strategic_merge(&patched, &patch, &svc).unwrap();
    assert_eq!(after["spec"]["ports"], json!([{"name":"alt","port":8080,"protocol":"TCP","targetPort":9376}]));

    // kubectl apply --server-side of the original manifest changes no value: no conflict,
    // and the port the manifest does not mention stays (apply never removes what it did
    // not own).
    let out = apply(Some(&patched), &manifest, "kubectl", false, T3).unwrap();
    assert_eq!(out["spec"], patched["spec"]);
    // But changing a port's targetPort conflicts with the client-side applier.
    let mut edited = manifest.clone();
    edited["spec"]["ports"][0]["targetPort"] = json!(9999);
    let err = apply(Some(&patched), &edited, "kubectl", false, T3).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1 at {T2}: .spec.ports[port=80,protocol=\"TCP\"].targetPort")
    );

    // Re-applying server-side what is there shares ownership and changes nothing.
    let mut same = manifest.clone();
    same["spec"]["ports"] = patched["spec"]["ports"].clone();
    let out = apply(Some(&patched), &same, "kubectl", false, T3).unwrap();
    assert_eq!(out["spec"], patched["spec"]);
    let es = entries(&out);
    assert_eq!(entry(&es, "kubectl").operation, "Apply");
    assert!(entry(&es, "kubectl-client-side-apply")
        .fields
        .has(&[PathElement::Field("spec".into()), PathElement::Field("clusterIP".into())]));
    // The annotation follows the server-side applied configuration.
    let ann: Value =
        serde_json::from_str(out["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].as_str().unwrap()).unwrap();
    assert_eq!(ann, same);
}

fn random_deployment_config(rng: &mut Rng) -> Value {
    let mut cfg = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","namespace":"ns"}});
    if rng.below(2) == 0 {
        let mut labels = serde_json::Map::new();
        for k in ["a", "b", "c"] {
            if rng.below(2) == 0 {
                labels.insert(k.into(), json!(format!("v{}", rng.below(3))));
            }
        }
        cfg["metadata"]["labels"] = Value::Object(labels);
    }
    let mut spec = serde_json::Map::new();
    if rng.below(2) == 0 {
        spec.insert("replicas".into(), json!(rng.below(4)));
    }
    if rng.below(2) == 0 {
        let mut containers = Vec::new();
        for name in ["web", "side", "log"] {
            if rng.below(2) == 0 {
                let mut c = json!({"name": name});
                if rng.below(2) == 0 {
                    c["image"] = json!(format!("img:{}", rng.below(3)));
                }
                if rng.below(2) == 0 {
                    let ports: Vec<Value> = (0..rng.below(3))
                        .map(|i| json!({"containerPort": 80 + i, "name": format!("p{}", rng.below(2))}))
                        .collect();
                    c["ports"] = Value::Array(ports);
                }
                if rng.below(3) == 0 {
                    c["args"] = json!(["x", format!("{}", rng.below(3))]);
                }
                containers.push(c);
            }
        }
        spec.insert("template".into(), json!({"spec":{"containers": containers}}));
    }
    if rng.below(3) == 0 {
        spec.insert("selector".into(), json!({"matchLabels":{"app": format!("a{}", rng.below(2))}}));
    }
    cfg["spec"] = Value::Object(spec);
    cfg
}

#[test]
fn apply_sequences_keep_invariants() {
    let schema = deploy();
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for round in 0..150 {
        let mut live: Option<Value> = None;
        for step in 0..12 {
            let cfg = random_deployment_config(&mut rng);
            let manager = ["alice", "bob", "kubectl"][rng.below(3) as usize];
            let force = rng.below(3) == 0;
            let now = format!("2026-01-01T00:{:02}:{:02}Z", round % 60, step);
            if rng.below(4) == 0 {
                // An Update by someone else in between.
                if let Some(old) = &live {
                    let mut new = old.clone();
                    new["spec"]["replicas"] = json!(rng.below(5));
                    track_update(Some(old), &mut new, "editor", "Update", None, &now);
                    live = Some(new);
                }
                continue;
            }
            match apply(live.as_ref(), &cfg, manager, force, &now) {
                Ok(out) => {
                    // Everything applied is in the result.
                    let body = super::ssa::merge(&out, &cfg, "", &schema);
                    let strip = |v: &Value| {
                        let mut v = v.clone();
                        v["metadata"].as_object_mut().unwrap().remove("managedFields");
                        v
                    };
                    let loose = |v: &Value| super::ssa::without_empty(&strip(v));
                    assert!(json_eq_loose(&loose(&body), &loose(&out)), "config not in result\ncfg={cfg}\nout={out}");
                    // Managed fields decode and hold no empty entry.
                    let es = decode_managed_fields(&out).unwrap();
                    assert!(es.iter().all(|e| !e.fields.is_empty()));
                    // Re-applying the same configuration at once is a no-op.
                    let again = apply(Some(&out), &cfg, manager, false, "2030-01-01T00:00:00Z").unwrap();
                    assert_eq!(again, out, "re-apply changed the object\ncfg={cfg}");
                    live = Some(out);
                }
                Err(ApplyError::Conflict { conflicts, .. }) => {
                    assert!(!force);
                    assert!(!conflicts.is_empty());
                }
                Err(e) => panic!("unexpected error {e} for {cfg}"),
            }
        }
    }
}

fn json_eq_loose(a: &Value, b: &Value) -> bool {
    super::value::json_eq(a, b)
}
