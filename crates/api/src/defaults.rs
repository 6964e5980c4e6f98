//! Upstream defaulting (`pkg/apis/core/v1/defaults.go`, `pkg/apis/apps/v1/defaults.go`,
//! `pkg/apis/discovery/v1/defaults.go`) over JSON objects, plus the few create-time
//! normalisations upstream's registries apply before validation that every Yard writer needs
//! (Service clusterIP/clusterIPs and IP families, Namespace finalizers, Secret stringData).

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Applies upstream's defaults for `resource` (plural name) to `obj` in place. Idempotent.
pub fn apply_defaults(resource: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match resource {
        "services" => default_service(obj),
        "pods" => default_pod(obj),
        "deployments" => default_deployment(obj),
        "replicasets" => default_replicaset(obj),
        "namespaces" => default_namespace(obj),
        "secrets" => default_secret(obj),
        "endpoints" => default_endpoints(obj),
        "endpointslices" => default_endpoint_slice(obj),
        "nodes" => default_node(obj),
        _ => {}
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let m = v.as_object_mut().expect("object");
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("object")
}

fn is_unset(m: &Map<String, Value>, k: &str) -> bool {
    match m.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

fn set_default(m: &mut Map<String, Value>, k: &str, v: Value) {
    if is_unset(m, k) {
        m.insert(k.to_string(), v);
    }
}

fn is_zero_number(m: &Map<String, Value>, k: &str) -> bool {
    match m.get(k) {
        None | Some(Value::Null) => true,
        Some(v) => v.as_i64() == Some(0),
    }
}

fn for_each_in_array(m: &mut Map<String, Value>, k: &str, mut f: impl FnMut(&mut Map<String, Value>)) {
    if let Some(Value::Array(items)) = m.get_mut(k) {
        for it in items.iter_mut() {
            if let Some(o) = it.as_object_mut() {
                f(o);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Services

fn default_service(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    set_default(spec, "sessionAffinity", json!("None"));
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("None") {
        spec.remove("sessionAffinityConfig");
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        let has_timeout = spec
            .get("sessionAffinityConfig")
            .and_then(|c| c.get("clientIP"))
            .and_then(|c| c.get("timeoutSeconds"))
            .is_some_and(|t| !t.is_null());
        if !has_timeout {
            spec.insert("sessionAffinityConfig".into(), json!({"clientIP": {"timeoutSeconds": 10800}}));
        }
    }
    set_default(spec, "type", json!("ClusterIP"));
    for_each_in_array(spec, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(v) => v.as_i64() == Some(0),
        };
        if unset {
            let port = p.get("port").cloned().unwrap_or(json!(0));
            p.insert("targetPort".into(), port);
        }
    });
    let stype = spec.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    let has_external_ips = spec.get("externalIPs").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let externally_accessible =
        stype == "LoadBalancer" || stype == "NodePort" || (stype == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(stype.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") && is_unset(spec, "internalTrafficPolicy") {
        spec.insert("internalTrafficPolicy".into(), json!("Cluster"));
    }
    if stype == "LoadBalancer" && is_unset(spec, "allocateLoadBalancerNodePorts") {
        spec.insert("allocateLoadBalancerNodePorts".into(), json!(true));
    }
    if stype == "LoadBalancer" {
        if let Some(ingress) = obj
            .get_mut("status")
            .and_then(|s| s.get_mut("loadBalancer"))
            .and_then(|l| l.get_mut("ingress"))
            .and_then(Value::as_array_mut)
        {
            for ing in ingress {
                if let Some(o) = ing.as_object_mut() {
                    if !is_unset(o, "ip") && is_unset(o, "ipMode") {
                        o.insert("ipMode".into(), json!("VIP"));
                    }
                }
            }
        }
    }
    // Registry normalisation on create: an old client's `clusterIP` alone fills `clusterIPs`.
    normalize_service_cluster_ips(obj, None);
    set_service_ip_families(obj, &["IPv4"]);
}

fn str_list_of(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// The registry's `normalizeClusterIPs`: keeps `spec.clusterIP` and `spec.clusterIPs` in step the
/// way upstream guesses what a client meant (an old client sends only `clusterIP`; a patch that
/// changes only `clusterIP` moves `clusterIPs[0]` too, so validation reports "may not change
/// once set"). Call it before validation with the stored object on update.
pub fn normalize_service_cluster_ips(new: &mut Value, old: Option<&Value>) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let new_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
    let mut new_ips = spec.get("clusterIPs").map(str_list_of).unwrap_or_default();
    match old {
        None => {
            if !new_ip.is_empty() && new_ips.is_empty() {
                spec.insert("clusterIPs".into(), json!([new_ip]));
            }
        }
        Some(old) => {
            let old_ip =
                old.get("spec").and_then(|s| s.get("clusterIP")).and_then(Value::as_str).unwrap_or("").to_string();
            let old_ips = old.get("spec").and_then(|s| s.get("clusterIPs")).map(str_list_of).unwrap_or_default();
            if !old_ips.is_empty() && new_ips.is_empty() && old_ip == new_ip {
                new_ips = old_ips.clone();
                spec.insert("clusterIPs".into(), json!(new_ips));
            }
            if old_ip != new_ip {
                let same = old_ips == new_ips;
                if !old_ip.is_empty() && new_ip.is_empty() && same {
                    spec.remove("clusterIPs");
                }
                if same {
                    spec.insert("clusterIPs".into(), json!([new_ip]));
                }
            }
        }
    }
}

fn family_of(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// The registry's `initIPFamilyFields` for a cluster serving `cluster_families` (primary
/// first, e.g. `["IPv4"]` or `["IPv4", "IPv6"]`): ExternalName Services carry no families;
/// headless selector-less Services default to RequireDualStack with every cluster family;
/// others default to SingleStack, families inferred from `clusterIPs` or the primary family
/// (plus the secondary for dual-stack policies on a dual-stack cluster).
pub fn set_service_ip_families(obj: &mut Value, cluster_families: &[&str]) {
    let primary = cluster_families.first().copied().unwrap_or("IPv4");
    let spec = obj_mut(obj, "spec");
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        spec.remove("ipFamilies");
        spec.remove("ipFamilyPolicy");
        return;
    }
    let ips: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let mut families: Vec<String> = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let headless = ips.len() == 1 && ips[0] == "None";
    let no_selector = spec.get("selector").and_then(Value::as_object).is_none_or(|m| m.is_empty());
    if headless && no_selector {
        if is_unset(spec, "ipFamilyPolicy") {
            spec.insert("ipFamilyPolicy".into(), json!("RequireDualStack"));
        }
        if families.is_empty() {
            families = cluster_families.iter().map(|f| f.to_string()).collect();
            if families.is_empty() {
                families.push(primary.to_string());
            }
        }
        spec.insert("ipFamilies".into(), json!(families));
        return;
    }
    if is_unset(spec, "ipFamilyPolicy") {
        let policy = if ips.len() == 2 || families.len() == 2 { "RequireDualStack" } else { "SingleStack" };
        spec.insert("ipFamilyPolicy".into(), json!(policy));
    }
    if !headless {
        for (i, ip) in ips.iter().enumerate() {
            if i >= families.len() {
                families.push(family_of(ip).to_string());
            }
        }
    }
    if families.is_empty() {
        families.push(primary.to_string());
    }
    let policy = spec.get("ipFamilyPolicy").and_then(Value::as_str).unwrap_or("SingleStack").to_string();
    if policy != "SingleStack" && families.len() == 1 && cluster_families.len() > 1 {
        if let Some(other) = cluster_families.iter().find(|f| **f != families[0]) {
            families.push(other.to_string());
        }
    }
    spec.insert("ipFamilies".into(), json!(families));
}

// ---------------------------------------------------------------------------------------------
// Pods and pod templates

/// The pull policy upstream defaults for an image: Always for `:latest` or no tag (and no
/// digest), IfNotPresent otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, d),
        None => (image, ""),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t).unwrap_or("");
    let tag = if tag.is_empty() && digest.is_empty() { "latest" } else { tag };
    if tag == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn default_probe(p: &mut Map<String, Value>) {
    for (k, d) in [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)] {
        if is_zero_number(p, k) {
            p.insert(k.into(), json!(d));
        }
    }
    default_handler(p);
}

fn default_handler(h: &mut Map<String, Value>) {
    if let Some(Value::Object(g)) = h.get_mut("httpGet") {
        set_default(g, "path", json!("/"));
        set_default(g, "scheme", json!("HTTP"));
    }
}

fn default_container(c: &mut Map<String, Value>, host_network_ports: bool) {
    if is_unset(c, "imagePullPolicy") {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
        c.insert("imagePullPolicy".into(), json!(default_pull_policy(&image)));
    }
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    for_each_in_array(c, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        if host_network_ports && is_zero_number(p, "hostPort") {
            if let Some(cp) = p.get("containerPort").cloned() {
                p.insert("hostPort".into(), cp);
            }
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            default_probe(p);
        }
    }
    if let Some(Value::Object(l)) = c.get_mut("lifecycle") {
        for h in ["postStart", "preStop"] {
            if let Some(Value::Object(h)) = l.get_mut(h) {
                default_handler(h);
            }
        }
    }
    for_each_in_array(c, "env", |e| {
        if let Some(Value::Object(fr)) = e.get_mut("valueFrom").and_then(|v| v.get_mut("fieldRef")) {
            set_default(fr, "apiVersion", json!("v1"));
        }
    });
}

fn default_volume(v: &mut Map<String, Value>) {
    if !crate::validation::VOLUME_SOURCES.iter().any(|s| v.get(*s).is_some_and(|x| !x.is_null())) {
        v.insert("emptyDir".into(), json!({}));
    }
    for s in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(Value::Object(src)) = v.get_mut(s) {
            if is_unset(src, "defaultMode") {
                src.insert("defaultMode".into(), json!(420));
            }
        }
    }
    if let Some(Value::Array(sources)) = v.get_mut("projected").and_then(|p| p.get_mut("sources")) {
        for src in sources {
            if let Some(Value::Object(t)) = src.get_mut("serviceAccountToken") {
                if t.get("expirationSeconds").is_none_or(Value::is_null) {
                    t.insert("expirationSeconds".into(), json!(3600));
                }
            }
        }
    }
    if let Some(Value::Object(hp)) = v.get_mut("hostPath") {
        if !hp.contains_key("type") {
            hp.insert("type".into(), json!(""));
        }
    }
}

/// SetDefaults_PodSpec and the defaults of everything inside it (containers, probes, ports,
/// volumes). `is_pod` adds the Pod-only defaults (host-network ports).
pub fn default_pod_spec(spec: &mut Map<String, Value>, is_pod: bool) {
    // v1's deprecated `serviceAccount` is an alias of `serviceAccountName` (which wins), and is
    // written back as a copy of it.
    let sa_name = spec.get("serviceAccountName").and_then(Value::as_str).unwrap_or("").to_string();
    let sa_alias = spec.get("serviceAccount").and_then(Value::as_str).unwrap_or("").to_string();
    match (sa_name.is_empty(), sa_alias.is_empty()) {
        (true, false) => {
            spec.insert("serviceAccountName".into(), json!(sa_alias));
        }
        (false, _) => {
            spec.insert("serviceAccount".into(), json!(sa_name));
        }
        (true, true) => {}
    }
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    if spec.get("securityContext").is_none_or(Value::is_null) {
        spec.insert("securityContext".into(), json!({}));
    }
    if spec.get("terminationGracePeriodSeconds").is_none_or(Value::is_null) {
        spec.insert("terminationGracePeriodSeconds".into(), json!(30));
    }
    set_default(spec, "schedulerName", json!("default-scheduler"));
    let host_network = is_pod && spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for_each_in_array(spec, list, |c| default_container(c, host_network && list != "ephemeralContainers"));
    }
    for_each_in_array(spec, "volumes", default_volume);
}

fn default_pod(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    for list in ["containers", "initContainers"] {
        for_each_in_array(spec, list, |c| {
            let limits = c.get("resources").and_then(|r| r.get("limits")).and_then(Value::as_object).cloned();
            if let Some(limits) = limits {
                let res = c.entry("resources").or_insert_with(|| json!({}));
                if let Some(res) = res.as_object_mut() {
                    let req = res.entry("requests").or_insert_with(|| json!({}));
                    if !req.is_object() {
                        *req = json!({});
                    }
                    let req = req.as_object_mut().expect("object");
                    for (k, v) in limits {
                        req.entry(k).or_insert(v);
                    }
                }
            }
        });
    }
    // InPlacePodVerticalScaling: containers requesting cpu or memory get a NotRequired resize policy.
    for_each_in_array(spec, "containers", |c| {
        let requests = c.get("resources").and_then(|r| r.get("requests")).and_then(Value::as_object).cloned();
        let Some(requests) = requests else { return };
        let mut policies: Vec<Value> = c.get("resizePolicy").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut changed = false;
        for res in ["cpu", "memory"] {
            let specified = policies.iter().any(|p| p.get("resourceName").and_then(Value::as_str) == Some(res));
            if requests.contains_key(res) && !specified {
                policies.push(json!({"resourceName": res, "restartPolicy": "NotRequired"}));
                changed = true;
            }
        }
        if changed {
            c.insert("resizePolicy".into(), Value::Array(policies));
        }
    });
    if spec.get("enableServiceLinks").is_none_or(Value::is_null) {
        spec.insert("enableServiceLinks".into(), json!(true));
    }
    default_pod_spec(spec, true);
}

fn default_template(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    let tmpl = spec.entry("template").or_insert_with(|| json!({}));
    if !tmpl.is_object() {
        *tmpl = json!({});
    }
    let tspec = obj_mut(tmpl, "spec");
    default_pod_spec(tspec, false);
}

fn default_deployment(obj: &mut Value) {
    {
        let spec = obj_mut(obj, "spec");
        if spec.get("replicas").is_none_or(Value::is_null) {
            spec.insert("replicas".into(), json!(1));
        }
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if !strategy.is_object() {
            *strategy = json!({});
        }
        let st = strategy.as_object_mut().expect("object");
        set_default(st, "type", json!("RollingUpdate"));
        if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
            if !ru.is_object() {
                *ru = json!({});
            }
            let ru = ru.as_object_mut().expect("object");
            if ru.get("maxUnavailable").is_none_or(Value::is_null) {
                ru.insert("maxUnavailable".into(), json!("25%"));
            }
            if ru.get("maxSurge").is_none_or(Value::is_null) {
                ru.insert("maxSurge".into(), json!("25%"));
            }
        }
        if spec.get("revisionHistoryLimit").is_none_or(Value::is_null) {
            spec.insert("revisionHistoryLimit".into(), json!(10));
        }
        if spec.get("progressDeadlineSeconds").is_none_or(Value::is_null) {
            spec.insert("progressDeadlineSeconds".into(), json!(600));
        }
    }
    default_template(obj);
}

fn default_replicaset(obj: &mut Value) {
    {
        let spec = obj_mut(obj, "spec");
        if spec.get("replicas").is_none_or(Value::is_null) {
            spec.insert("replicas".into(), json!(1));
        }
    }
    default_template(obj);
}

// ---------------------------------------------------------------------------------------------
// Namespaces, Secrets, Endpoints, EndpointSlices, Nodes

fn default_namespace(obj: &mut Value) {
    let name = obj.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("").to_string();
    if !name.is_empty() {
        let meta = obj_mut(obj, "metadata");
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        labels.as_object_mut().expect("object").insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    let spec = obj_mut(obj, "spec");
    if spec.get("finalizers").is_none_or(Value::is_null) {
        spec.insert("finalizers".into(), json!(["kubernetes"]));
    }
    let status = obj_mut(obj, "status");
    set_default(status, "phase", json!("Active"));
}

fn default_secret(obj: &mut Value) {
    let m = obj.as_object_mut().expect("object");
    set_default(m, "type", json!("Opaque"));
    // v1 -> internal conversion: stringData entries overwrite data, then stringData is dropped.
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        let data = data.as_object_mut().expect("object");
        for (k, v) in sd {
            let s = v.as_str().unwrap_or("").to_string();
            data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())));
        }
    }
}

fn default_endpoints(obj: &mut Value) {
    if let Some(Value::Array(subsets)) = obj.get_mut("subsets") {
        for ss in subsets {
            if let Some(ss) = ss.as_object_mut() {
                for_each_in_array(ss, "ports", |p| set_default(p, "protocol", json!("TCP")));
            }
        }
    }
}

fn default_endpoint_slice(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        for_each_in_array(m, "ports", |p| {
            if p.get("name").is_none_or(Value::is_null) {
                p.insert("name".into(), json!(""));
            }
            if p.get("protocol").is_none_or(Value::is_null) {
                p.insert("protocol".into(), json!("TCP"));
            }
        });
    }
}

fn default_node(obj: &mut Value) {
    if let Some(Value::Object(status)) = obj.get_mut("status") {
        if status.get("allocatable").is_none_or(Value::is_null) {
            if let Some(cap) = status.get("capacity").cloned() {
                status.insert("allocatable".into(), cap);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_defaults() {
        let mut s = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply_defaults("services", &mut s);
        assert_eq!(
            s["spec"],
            json!({
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}],
                "sessionAffinity": "None",
                "type": "ClusterIP",
                "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"]
            })
        );
        let before = s.clone();
        apply_defaults("services", &mut s);
        assert_eq!(s, before, "idempotent");

        let mut lb = json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 443, "targetPort": 0}]}});
        apply_defaults("services", &mut lb);
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(lb["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
        assert_eq!(lb["spec"]["ports"][0]["targetPort"], 443);

        let mut headless = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        apply_defaults("services", &mut headless);
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(headless["spec"]["ipFamilies"], json!(["IPv4"]));

        let mut en = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        apply_defaults("services", &mut en);
        assert_eq!(
            en["spec"],
            json!({"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "None"})
        );

        let mut v6 = json!({"spec": {"clusterIP": "fd00::10", "selector": {"a": "b"}, "ports": [{"port": 80}]}});
        apply_defaults("services", &mut v6);
        assert_eq!(v6["spec"]["ipFamilies"], json!(["IPv6"]));
        let mut dual =
            json!({"spec": {"ipFamilyPolicy": "PreferDualStack", "selector": {"a": "b"}, "ports": [{"port": 80}]}});
        set_service_ip_families(&mut dual, &["IPv4", "IPv6"]);
        assert_eq!(dual["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        let mut ext = json!({"spec": {"externalIPs": ["1.2.3.4"], "ports": [{"port": 80}]}});
        apply_defaults("services", &mut ext);
        assert_eq!(ext["spec"]["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn pod_defaults() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}},
             "resources": {"limits": {"cpu": "1"}}},
            {"name": "b", "image": "registry:5000/app:1.2"},
            {"name": "c", "image": "busybox:latest"},
            {"name": "d", "image": "busybox@sha256:abcd"}
        ], "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}});
        apply_defaults("pods", &mut p);
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        let c = &spec["containers"];
        assert_eq!(c[0]["imagePullPolicy"], "Always");
        assert_eq!(c[1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c[2]["imagePullPolicy"], "Always");
        assert_eq!(c[3]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c[0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c[0]["terminationMessagePolicy"], "File");
        assert_eq!(c[0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            c[0]["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c[0]["resources"]["requests"], json!({"cpu": "1"}));
        assert_eq!(c[0]["resizePolicy"], json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}]));
        assert!(c[1].get("resizePolicy").is_none());
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
    }

    #[test]
    fn workload_defaults() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}}});
        apply_defaults("deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(d["spec"]["template"]["spec"].get("enableServiceLinks").is_none());
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        let mut r = json!({"spec": {"replicas": 0, "template": {"spec": {"containers": []}}}});
        apply_defaults("replicasets", &mut r);
        assert_eq!(r["spec"]["replicas"], 0);
        assert_eq!(r["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}, "template": {"spec": {}}}});
        apply_defaults("deployments", &mut recreate);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn other_defaults() {
        let mut ns = json!({"metadata": {"name": "demo"}});
        apply_defaults("namespaces", &mut ns);
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "demo");
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"user": "admin"}, "data": {"x": "eQ=="}});
        apply_defaults("secrets", &mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"], json!({"x": "eQ==", "user": "YWRtaW4="}));
        assert!(s.get("stringData").is_none());
        let mut ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
        apply_defaults("endpoints", &mut ep);
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        let mut es = json!({"addressType": "IPv4", "ports": [{"port": 80}]});
        apply_defaults("endpointslices", &mut es);
        assert_eq!(es["ports"][0], json!({"port": 80, "name": "", "protocol": "TCP"}));
        let mut node = json!({"status": {"capacity": {"cpu": "2"}}});
        apply_defaults("nodes", &mut node);
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "2"}));
    }
}
