use super::*;

fn svc(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn defaulted_svc(spec: Value) -> Value {
    let mut s = svc(spec);
    crate::defaults::apply_defaults("services", &mut s);
    s
}

fn msgs(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

#[test]
fn display_matches_upstream() {
    assert_eq!(
        FieldError::invalid("spec.ports[0].nodePort", 30080, "provided port is already allocated").to_string(),
        "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    assert_eq!(
        FieldError::duplicate("spec.ports[1].name", "http").to_string(),
        "spec.ports[1].name: Duplicate value: \"http\""
    );
    assert_eq!(FieldError::required("spec.ports[0].name", "").to_string(), "spec.ports[0].name: Required value");
    assert_eq!(
        FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]).to_string(),
        "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
    );
    assert_eq!(
        FieldError::too_long("metadata.annotations", 262144).to_string(),
        "metadata.annotations: Too long: may not be more than 262144 bytes"
    );
    assert_eq!(
        FieldError::too_many("endpoints", 1001, 1000).to_string(),
        "endpoints: Too many: 1001: must have at most 1000 items"
    );
    let e = FieldError::invalid("x", json!({"b": "<", "a": 1}), "d");
    assert_eq!(e.to_string(), "x: Invalid value: {\"b\":\"\\u003c\",\"a\":1}: d");
    assert_eq!(e.reason(), "FieldValueInvalid");
    assert_eq!(FieldError::forbidden("a", "b").reason(), "FieldValueForbidden");
    assert_eq!(FieldError::required("a", "").message_without_field(), "Required value");
}

#[test]
fn status_message_forms() {
    let one = vec![FieldError::invalid("spec.ports[0].port", 0, "must be between 1 and 65535, inclusive")];
    assert_eq!(
        invalid_status_message("Service", "x", &one),
        "Service \"x\" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    );
    let two = vec![
        FieldError::required("spec.ports[0].name", ""),
        FieldError::required("spec.ports[1].name", ""),
        FieldError::required("spec.ports[1].name", ""),
    ];
    assert_eq!(
        invalid_status_message(&qualified_kind("apps", "Deployment"), "d", &two),
        "Deployment.apps \"d\" is invalid: [spec.ports[0].name: Required value, spec.ports[1].name: Required value]"
    );
    assert_eq!(invalid_status_message("Service", "x", &[]), "Service \"x\" is invalid");
}

#[test]
fn valid_service_has_no_errors() {
    let s = defaulted_svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 9376}]}));
    assert_eq!(msgs(&validate("services", &s, None)), Vec::<String>::new());
    let s = defaulted_svc(json!({"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}));
    assert_eq!(msgs(&validate("services", &s, None)), Vec::<String>::new());
    let s = defaulted_svc(json!({"type": "ExternalName", "externalName": "example.com."}));
    assert_eq!(msgs(&validate("services", &s, None)), Vec::<String>::new());
}

#[test]
fn service_port_rules() {
    let s = defaulted_svc(json!({"ports": [{"port": 80}, {"port": 0, "name": "http"}, {"port": 81, "name": "http"}]}));
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec![
            "spec.ports[0].name: Required value",
            "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[2].name: Duplicate value: \"http\"",
        ]
    );
    let s = defaulted_svc(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}));
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["spec.ports[1]: Duplicate value: {\"Name\":\"\",\"Protocol\":\"TCP\",\"AppProtocol\":null,\"Port\":80,\"TargetPort\":0,\"NodePort\":0}"]
    );
    let s = defaulted_svc(json!({"ports": [{"port": 80, "targetPort": "HTTP--", "name": "Web"}]}));
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec![
            "spec.ports[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.ports[0].targetPort: Invalid value: \"HTTP--\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.ports[0].targetPort: Invalid value: \"HTTP--\": must contain at least one letter (a-z)",
            "spec.ports[0].targetPort: Invalid value: \"HTTP--\": must not contain consecutive hyphens",
            "spec.ports[0].targetPort: Invalid value: \"HTTP--\": must not begin or end with a hyphen",
        ]
    );
    let s = defaulted_svc(json!({"ports": [{"port": 80, "protocol": "ICMP"}]}));
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""]
    );
}

#[test]
fn service_type_rules() {
    let s = defaulted_svc(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
    let s = defaulted_svc(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"]
    );
    let s = defaulted_svc(json!({"type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 80}]}));
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"]
    );
    let s = defaulted_svc(json!({"type": "Magic", "ports": [{"port": 80}]}));
    assert!(msgs(&validate("services", &s, None)).contains(
        &"spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_string()
    ));
    let s = defaulted_svc(json!({"type": "ExternalName"}));
    assert_eq!(msgs(&validate("services", &s, None)), vec!["spec.externalName: Required value"]);
    let s = defaulted_svc(json!({"type": "ExternalName", "externalName": "Bad_Name"}));
    let m = msgs(&validate("services", &s, None));
    assert_eq!(m.len(), 1);
    assert!(m[0].starts_with("spec.externalName: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
    let s = defaulted_svc(json!({"ports": [{"port": 80}], "selector": {"app": "a b"}}));
    assert_eq!(msgs(&validate("services", &s, None)).len(), 1);
    assert!(msgs(&validate("services", &s, None))[0]
        .starts_with("spec.selector: Invalid value: \"a b\": a valid label must be"));
}

#[test]
fn service_affinity_and_ips() {
    let mut s = defaulted_svc(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP"}));
    s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = json!(90000);
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 90000: must be greater than 0 and less than 86400"]
    );
    let s = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.300"}));
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["spec.clusterIPs[0]: Invalid value: \"10.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    );
    let mut s = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.5"}));
    s["spec"]["clusterIPs"] = json!(["10.96.0.6"]);
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["spec.clusterIPs: Invalid value: [\"10.96.0.6\"]: first value must match `clusterIP`"]
    );
    let mut s = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.5"}));
    s["spec"]["ipFamilies"] = json!(["IPv6"]);
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec![
            "spec.clusterIPs[0]: Invalid value: \"10.96.0.5\": expected an IPv6 value as indicated by `ipFamilies[0]`"
        ]
    );
}

#[test]
fn service_load_balancer_rules() {
    let mut s = defaulted_svc(
        json!({"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}], "loadBalancerSourceRanges": ["10.0.0.0/8", "bad"]}),
    );
    s["spec"].as_object_mut().unwrap().remove("allocateLoadBalancerNodePorts");
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec![
            "spec.LoadBalancerSourceRanges[1]: Invalid value: \"bad\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "allocateLoadBalancerNodePorts: Required value",
        ]
    );
    let s = defaulted_svc(
        json!({"ports": [{"port": 80}], "loadBalancerSourceRanges": ["10.0.0.0/8"], "externalTrafficPolicy": "Local"}),
    );
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec![
            "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
        ]
    );
    let mut s =
        defaulted_svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}], "externalTrafficPolicy": "Local"}));
    assert_eq!(msgs(&validate("services", &s, None)), vec!["spec.healthCheckNodePort: Required value"]);
    s["spec"]["healthCheckNodePort"] = json!(31000);
    assert!(validate("services", &s, None).is_empty());
    s["status"] = json!({"loadBalancer": {"ingress": [{"ip": "172.18.255.1"}]}});
    assert_eq!(
        msgs(&validate_service_status(&s)),
        vec!["status.loadBalancer.ingress[0].ipMode: Required value: must be specified when `ip` is set"]
    );
    crate::defaults::apply_defaults("services", &mut s);
    assert!(validate_service_status(&s).is_empty());
    let c = defaulted_svc(json!({"ports": [{"port": 80}]}));
    let mut with_status = c.clone();
    with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}});
    assert_eq!(
        msgs(&validate_service_status(&with_status)),
        vec!["status.loadBalancer.ingress: Forbidden: may only be used when `spec.type` is 'LoadBalancer'"]
    );
}

#[test]
fn update_validates_metadata_changes() {
    let old = defaulted_svc(json!({"ports": [{"port": 80}]}));
    let mut new = old.clone();
    new["metadata"]["labels"] = json!({"ok": "-bad-"});
    new["metadata"]["uid"] = json!("other");
    let m = msgs(&validate("services", &new, Some(&old)));
    assert_eq!(m.len(), 2);
    assert_eq!(m[0], "metadata.uid: Invalid value: \"other\": field is immutable");
    assert!(m[1].starts_with("metadata.labels: Invalid value: \"-bad-\": a valid label must be"));
}

#[test]
fn service_update_rules() {
    let old = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.5"}));
    let new = defaulted_svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.7"}));
    assert_eq!(
        msgs(&validate("services", &new, Some(&old))),
        vec!["spec.clusterIPs[0]: Invalid value: [\"10.96.0.7\"]: may not change once set"]
    );
    assert!(validate("services", &old, Some(&old)).is_empty());
    // A patch that changes only clusterIP (clusterIPs still the stored value).
    let mut patched = old.clone();
    patched["spec"]["clusterIP"] = json!("10.96.0.9");
    assert_eq!(
        msgs(&validate("services", &patched, Some(&old))),
        vec!["spec.clusterIPs[0]: Invalid value: [\"10.96.0.9\"]: may not change once set"]
    );
    // An old client that sends clusterIP without clusterIPs.
    let mut legacy = old.clone();
    legacy["spec"].as_object_mut().unwrap().remove("clusterIPs");
    assert!(validate("services", &legacy, Some(&old)).is_empty());
}

#[test]
fn metadata_rules() {
    let mut s = defaulted_svc(json!({"ports": [{"port": 80}]}));
    s["metadata"]["name"] = json!("Foo");
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["metadata.name: Invalid value: \"Foo\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"]
    );
    s["metadata"]["name"] = json!("");
    assert_eq!(
        msgs(&validate("services", &s, None)),
        vec!["metadata.name: Required value: name or generateName is required"]
    );
    let ns = json!({"metadata": {"name": "a.b"}, "spec": {"finalizers": ["kubernetes"]}});
    assert_eq!(
        msgs(&validate("namespaces", &ns, None)),
        vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]
    );
    let cm = json!({"metadata": {"name": "c", "namespace": "default", "labels": {"-x": "y"}}, "data": {"a b": "1"}});
    let m = msgs(&validate("configmaps", &cm, None));
    assert_eq!(m.len(), 2);
    assert!(m[0].starts_with("metadata.labels: Invalid value: \"-x\": name part must consist"));
    assert!(m[1].starts_with("data[a b]: Invalid value: \"a b\": a valid config key must consist"));
}

fn deployment(sel: Value, labels: Value) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {"selector": sel, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    });
    crate::defaults::apply_defaults("deployments", &mut d);
    d
}

#[test]
fn deployment_rules() {
    let d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
    assert_eq!(msgs(&validate("deployments", &d, None)), Vec::<String>::new());
    let d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"}));
    assert_eq!(
        msgs(&validate("deployments", &d, None)),
        vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"b\"}: `selector` does not match template `labels`"]
    );
    let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
    d["spec"]["replicas"] = json!(-1);
    assert_eq!(
        msgs(&validate("deployments", &d, None)),
        vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
    );
    let old = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a", "x": "y"}));
    let new = deployment(json!({"matchLabels": {"app": "a", "x": "y"}}), json!({"app": "a", "x": "y"}));
    assert_eq!(
        msgs(&validate("deployments", &new, Some(&old))),
        vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"a\",\"x\":\"y\"}}: field is immutable"]
    );
    let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
    d["spec"]["template"]["spec"]["containers"] = json!([{"name": "c"}, {"name": "c", "image": "x"}]);
    assert_eq!(
        msgs(&validate("deployments", &d, None)),
        vec![
            "spec.template.spec.containers[0].image: Required value",
            "spec.template.spec.containers[1].name: Duplicate value: \"c\""
        ]
    );
}

#[test]
fn pod_rules() {
    let mut p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}});
    crate::defaults::apply_defaults("pods", &mut p);
    assert_eq!(msgs(&validate("pods", &p, None)), vec!["spec.containers: Required value"]);
    let mut p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 70000}]}]}});
    crate::defaults::apply_defaults("pods", &mut p);
    assert_eq!(
        msgs(&validate("pods", &p, None)),
        vec!["spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"]
    );
}

#[test]
fn volume_rules() {
    let mut p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {
        "volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "configMap": {"name": "c"}},
                    {"name": "b", "emptyDir": {}, "hostPath": {"path": "/x"}}, {"name": "s", "secret": {"defaultMode": 1000}},
                    {"name": "i", "configMap": {"name": "c", "items": [{"key": "k", "path": "../x"}]}}],
        "containers": [{"name": "c", "image": "i", "volumeMounts": [
            {"name": "nope", "mountPath": "/n"}, {"name": "a", "mountPath": "/n"}, {"name": "a", "mountPath": "/s", "subPath": "/abs"}]}]}});
    crate::defaults::apply_defaults("pods", &mut p);
    assert_eq!(
        msgs(&validate("pods", &p, None)),
        vec![
            "spec.volumes[1].name: Duplicate value: \"a\"",
            "spec.volumes[2].emptyDir: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[3].secret.secretName: Required value",
            "spec.volumes[3].secret.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
            "spec.volumes[4].configMap.items[0].path: Invalid value: \"../x\": must not contain '..'",
            "spec.volumes[4].configMap.items[0].path: Invalid value: \"../x\": must not start with '..'",
            "spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/n\": must be unique",
            "spec.containers[0].volumeMounts[2].subPath: Invalid value: \"/abs\": must be a relative path",
        ]
    );
}

#[test]
fn event_rules() {
    let ev = json!({"metadata": {"name": "web.17a8b", "namespace": "default"}, "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "x"});
    assert!(validate("events", &ev, None).is_empty());
    let ev = json!({"metadata": {"name": "e", "namespace": "demo"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}});
    assert_eq!(
        msgs(&validate("events", &ev, None)),
        vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
    );
    let ev = json!({"metadata": {"name": "e", "namespace": "demo"}, "eventTime": "2025-01-01T00:00:00.000000Z",
                    "involvedObject": {"kind": "Pod", "name": "p", "namespace": "demo"}, "reason": "Started"});
    assert_eq!(
        msgs(&validate("events", &ev, None)),
        vec![
            "reportingComponent: Required value",
            "reportingComponent: Invalid value: \"\": name part must be non-empty",
            "reportingComponent: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            "reportingInstance: Required value",
            "action: Required value",
        ]
    );
}

#[test]
fn endpoints_and_slices() {
    let ep = json!({"metadata": {"name": "e", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80, "protocol": "TCP"}]}]});
    assert!(validate("endpoints", &ep, None).is_empty());
    let ep = json!({"metadata": {"name": "e", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 80, "protocol": "TCP"}]}]});
    assert_eq!(
        msgs(&validate("endpoints", &ep, None)),
        vec!["subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"]
    );
    let es = json!({"metadata": {"name": "e", "namespace": "default"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "", "port": 80, "protocol": "TCP"}]});
    assert!(validate("endpointslices", &es, None).is_empty());
    let es = json!({"metadata": {"name": "e", "namespace": "default"}, "addressType": "IPv4", "endpoints": [{"addresses": ["::1"]}]});
    assert_eq!(
        msgs(&validate("endpointslices", &es, None)),
        vec!["endpoints[0].addresses[0]: Invalid value: \"::1\": must be a valid IPv4 address"]
    );
}
