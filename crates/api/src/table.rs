//! Server-side Table output (`meta.k8s.io/v1` Table) as upstream's printers
//! (`pkg/printers/internalversion/printers.go`) produce it. The API server always prints with
//! `Wide: true`, so rows carry every column and kubectl hides priority-1 columns unless `-o wide`.
//! Resources without a printer get upstream's default convertor columns (Name, Created At).

use std::collections::BTreeMap;

use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Value};

use crate::selector::{format_labels, LabelSelector};

fn doc<T: JsonSchema>(prop: &str) -> String {
    let mut gen = SchemaGenerator::default();
    let schema = T::json_schema(&mut gen);
    schema
        .as_value()
        .get("properties")
        .and_then(|p| p.get(prop))
        .and_then(|p| p.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// One `TableColumnDefinition`; priority 1 columns show only with `-o wide`.
pub fn col(name: &str, ty: &str, format: &str, description: String, priority: i32) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

/// The `Name` column (format `name`) most printers start with.
pub fn name_col() -> Value {
    col("Name", "string", "name", doc::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>("name"), 0)
}

/// The `Age` column (creationTimestamp as a HumanDuration).
pub fn age_col() -> Value {
    col("Age", "string", "", doc::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>("creationTimestamp"), 0)
}

/// The Table's `columnDefinitions` for `resource` (plural name). Computed once per resource.
pub fn column_definitions(resource: &str) -> Vec<Value> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, Vec<Value>>>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(resource) {
        return v.clone();
    }
    let cols = build_column_definitions(resource);
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(resource.to_string(), cols.clone());
    cols
}

fn build_column_definitions(resource: &str) -> Vec<Value> {
    use k8s_openapi::api::apps::v1 as apps;
    use k8s_openapi::api::coordination::v1 as coord;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as disc;
    match resource {
        "pods" => vec![
            name_col(),
            col("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.".into(), 0),
            col("Status", "string", "", "The aggregate status of the containers in this pod.".into(), 0),
            col(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.".into(),
                0,
            ),
            age_col(),
            col("IP", "string", "", doc::<core::PodStatus>("podIP"), 1),
            col("Node", "string", "", doc::<core::PodSpec>("nodeName"), 1),
            col("Nominated Node", "string", "", doc::<core::PodStatus>("nominatedNodeName"), 1),
            col("Readiness Gates", "string", "", doc::<core::PodSpec>("readinessGates"), 1),
        ],
        "services" => vec![
            name_col(),
            col("Type", "string", "", doc::<core::ServiceSpec>("type"), 0),
            col("Cluster-IP", "string", "", doc::<core::ServiceSpec>("clusterIP"), 0),
            col("External-IP", "string", "", doc::<core::ServiceSpec>("externalIPs"), 0),
            col("Port(s)", "string", "", doc::<core::ServiceSpec>("ports"), 0),
            age_col(),
            col("Selector", "string", "", doc::<core::ServiceSpec>("selector"), 1),
        ],
        "endpoints" => vec![name_col(), col("Endpoints", "string", "", doc::<core::Endpoints>("subsets"), 0), age_col()],
        "endpointslices" => vec![
            name_col(),
            col("AddressType", "string", "", doc::<disc::EndpointSlice>("addressType"), 0),
            col("Ports", "string", "", doc::<disc::EndpointSlice>("ports"), 0),
            col("Endpoints", "string", "", doc::<disc::EndpointSlice>("endpoints"), 0),
            age_col(),
        ],
        "deployments" => vec![
            name_col(),
            col("Ready", "string", "", "Number of the pod with ready state".into(), 0),
            col("Up-to-date", "string", "", doc::<apps::DeploymentStatus>("updatedReplicas"), 0),
            col("Available", "string", "", doc::<apps::DeploymentStatus>("availableReplicas"), 0),
            age_col(),
            col("Containers", "string", "", "Names of each container in the template.".into(), 1),
            col("Images", "string", "", "Images referenced by each container in the template.".into(), 1),
            col("Selector", "string", "", doc::<apps::DeploymentSpec>("selector"), 1),
        ],
        "replicasets" => vec![
            name_col(),
            col("Desired", "integer", "", doc::<apps::ReplicaSetSpec>("replicas"), 0),
            col("Current", "integer", "", doc::<apps::ReplicaSetStatus>("replicas"), 0),
            col("Ready", "integer", "", doc::<apps::ReplicaSetStatus>("readyReplicas"), 0),
            age_col(),
            col("Containers", "string", "", "Names of each container in the template.".into(), 1),
            col("Images", "string", "", "Images referenced by each container in the template.".into(), 1),
            col("Selector", "string", "", doc::<apps::ReplicaSetSpec>("selector"), 1),
        ],
        "namespaces" => vec![name_col(), col("Status", "string", "", "The status of the namespace".into(), 0), age_col()],
        "nodes" => vec![
            name_col(),
            col("Status", "string", "", "The status of the node".into(), 0),
            col("Roles", "string", "", "The roles of the node".into(), 0),
            age_col(),
            col("Version", "string", "", doc::<core::NodeSystemInfo>("kubeletVersion"), 0),
            col("Internal-IP", "string", "", doc::<core::NodeStatus>("addresses"), 1),
            col("External-IP", "string", "", doc::<core::NodeStatus>("addresses"), 1),
            col("OS-Image", "string", "", doc::<core::NodeSystemInfo>("osImage"), 1),
            col("Kernel-Version", "string", "", doc::<core::NodeSystemInfo>("kernelVersion"), 1),
            col("Container-Runtime", "string", "", doc::<core::NodeSystemInfo>("containerRuntimeVersion"), 1),
        ],
        "events" => vec![
            col("Last Seen", "string", "", doc::<core::Event>("lastTimestamp"), 0),
            col("Type", "string", "", doc::<core::Event>("type"), 0),
            col("Reason", "string", "", doc::<core::Event>("reason"), 0),
            col("Object", "string", "", doc::<core::Event>("involvedObject"), 0),
            col("Subobject", "string", "", doc::<core::ObjectReference>("fieldPath"), 1),
            col("Source", "string", "", doc::<core::Event>("source"), 1),
            col("Message", "string", "", doc::<core::Event>("message"), 0),
            col("First Seen", "string", "", doc::<core::Event>("firstTimestamp"), 1),
            col("Count", "string", "", doc::<core::Event>("count"), 1),
            col(
                "Name",
                "string",
                "name",
                doc::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>("name"),
                1,
            ),
        ],
        "configmaps" => vec![name_col(), col("Data", "string", "", doc::<core::ConfigMap>("data"), 0), age_col()],
        "secrets" => vec![
            name_col(),
            col("Type", "string", "", doc::<core::Secret>("type"), 0),
            col("Data", "string", "", doc::<core::Secret>("data"), 0),
            age_col(),
        ],
        "leases" => vec![name_col(), col("Holder", "string", "", doc::<coord::LeaseSpec>("holderIdentity"), 0), age_col()],
        _ => vec![
            name_col(),
            col(
                "Created At",
                "date",
                "",
                doc::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>("creationTimestamp"),
                0,
            ),
        ],
    }
}

// ---------------------------------------------------------------------------------------------
// Durations

/// Upstream's `duration.HumanDuration` for a duration in nanoseconds.
pub fn human_duration_nanos(d: i128) -> String {
    const SEC: i128 = 1_000_000_000;
    let seconds = d / SEC;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d / (60 * SEC);
    if minutes < 10 {
        let s = (d / SEC) % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d / (3600 * SEC);
    if hours < 8 {
        let m = (d / (60 * SEC)) % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

/// `HumanDuration` of a `std::time::Duration`-like number of seconds.
pub fn human_duration_secs(secs: i64) -> String {
    human_duration_nanos(secs as i128 * 1_000_000_000)
}

fn parse_time(v: Option<&Value>) -> Option<jiff::Timestamp> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty()).and_then(|s| s.parse::<jiff::Timestamp>().ok())
}

/// `translateTimestampSince`: `<unknown>` for a missing time, else the HumanDuration since it.
pub fn translate_timestamp_since(ts: Option<&Value>, now: jiff::Timestamp) -> String {
    match parse_time(ts) {
        None => "<unknown>".to_string(),
        Some(t) => human_duration_nanos(now.as_nanosecond() - t.as_nanosecond()),
    }
}

// ---------------------------------------------------------------------------------------------
// Rows

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    if cur.is_null() {
        None
    } else {
        Some(cur)
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, path: &[&str]) -> i64 {
    get(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn age(obj: &Value, now: jiff::Timestamp) -> Value {
    Value::String(translate_timestamp_since(get(obj, &["metadata", "creationTimestamp"]), now))
}

fn name(obj: &Value) -> Value {
    Value::String(s(obj, &["metadata", "name"]).to_string())
}

/// The row's `cells` for `obj`, matching [`column_definitions`].
pub fn row_cells(resource: &str, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    match resource {
        "pods" => pod_cells(obj, now),
        "services" => service_cells(obj, now),
        "endpoints" => vec![name(obj), json!(format_endpoints(obj)), age(obj, now)],
        "endpointslices" => vec![
            name(obj),
            json!(s(obj, &["addressType"])),
            json!(format_discovery_ports(arr(obj, &["ports"]))),
            json!(format_discovery_endpoints(arr(obj, &["endpoints"]))),
            age(obj, now),
        ],
        "deployments" => deployment_cells(obj, now),
        "replicasets" => {
            let (names, images) = layout_container_cells(arr(obj, &["spec", "template", "spec", "containers"]));
            vec![
                name(obj),
                json!(i(obj, &["spec", "replicas"])),
                json!(i(obj, &["status", "replicas"])),
                json!(i(obj, &["status", "readyReplicas"])),
                age(obj, now),
                json!(names),
                json!(images),
                json!(format_selector_value(get(obj, &["spec", "selector"]), "<error>", true)),
            ]
        }
        "namespaces" => vec![name(obj), json!(s(obj, &["status", "phase"])), age(obj, now)],
        "nodes" => node_cells(obj, now),
        "events" => event_cells(obj, now),
        "configmaps" => {
            let n = get(obj, &["data"]).and_then(Value::as_object).map_or(0, |m| m.len())
                + get(obj, &["binaryData"]).and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name(obj), json!(n as i64), age(obj, now)]
        }
        "secrets" => {
            let n = get(obj, &["data"]).and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name(obj), json!(s(obj, &["type"])), json!(n as i64), age(obj, now)]
        }
        "leases" => vec![name(obj), json!(s(obj, &["spec", "holderIdentity"])), age(obj, now)],
        _ => vec![name(obj), json!(s(obj, &["metadata", "creationTimestamp"]))],
    }
}

/// The row's `conditions` (pods that finished are marked Completed), if any.
pub fn row_conditions(resource: &str, obj: &Value) -> Option<Vec<Value>> {
    if resource != "pods" {
        return None;
    }
    match s(obj, &["status", "phase"]) {
        "Succeeded" => Some(vec![
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}),
        ]),
        "Failed" => {
            Some(vec![json!({"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."})])
        }
        _ => None,
    }
}

/// A whole `TableRow`: `{"cells": [...], "object": object}` plus `conditions` when upstream sets them.
pub fn table_row(resource: &str, obj: &Value, now: jiff::Timestamp, object: Value) -> Value {
    let mut row = json!({"cells": row_cells(resource, obj, now), "object": object});
    if let Some(c) = row_conditions(resource, obj) {
        row["conditions"] = Value::Array(c);
    }
    row
}

fn format_selector_value(sel: Option<&Value>, err: &str, none_for_empty: bool) -> String {
    let parsed = match sel {
        None => Ok(LabelSelector::nothing()),
        Some(v) => LabelSelector::from_json(v),
    };
    match parsed {
        Err(_) => err.to_string(),
        Ok(s) => {
            let s = s.to_string();
            if s.is_empty() && none_for_empty {
                "<none>".to_string()
            } else {
                s
            }
        }
    }
}

/// Upstream's `layoutContainerCells`: the containers' names and images, each comma-joined.
pub fn layout_container_cells(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| s(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

fn deployment_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let desired = i(obj, &["spec", "replicas"]);
    let (names, images) = layout_container_cells(arr(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name(obj),
        json!(format!("{}/{}", i(obj, &["status", "readyReplicas"]), desired)),
        json!(i(obj, &["status", "updatedReplicas"])),
        json!(i(obj, &["status", "availableReplicas"])),
        age(obj, now),
        json!(names),
        json!(images),
        json!(format_selector_value(get(obj, &["spec", "selector"]), "<invalid>", false)),
    ]
}

fn service_external_ip(obj: &Value) -> String {
    let external: Vec<&str> = arr(obj, &["spec", "externalIPs"]).iter().filter_map(Value::as_str).collect();
    match s(obj, &["spec", "type"]) {
        "ClusterIP" | "NodePort" => {
            if !external.is_empty() {
                external.join(",")
            } else {
                "<none>".to_string()
            }
        }
        "LoadBalancer" => {
            let mut set = std::collections::BTreeSet::new();
            for ing in arr(obj, &["status", "loadBalancer", "ingress"]) {
                let ip = s(ing, &["ip"]);
                let host = s(ing, &["hostname"]);
                if !ip.is_empty() {
                    set.insert(ip.to_string());
                } else if !host.is_empty() {
                    set.insert(host.to_string());
                }
            }
            let lb: Vec<String> = set.into_iter().collect();
            if !external.is_empty() {
                let mut all = lb;
                all.extend(external.iter().map(|x| x.to_string()));
                all.join(",")
            } else if !lb.is_empty() {
                lb.join(",")
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => s(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `makePortString`: `80/TCP`, `80:30080/TCP`, comma-separated.
pub fn make_port_string(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let port = i(p, &["port"]);
            let proto = s(p, &["protocol"]);
            let np = i(p, &["nodePort"]);
            if np > 0 {
                format!("{port}:{np}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn service_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ips = arr(obj, &["spec", "clusterIPs"]);
    let internal = ips.first().and_then(Value::as_str).unwrap_or("<none>").to_string();
    let mut ports = make_port_string(arr(obj, &["spec", "ports"]));
    if ports.is_empty() {
        ports = "<none>".to_string();
    }
    let selector: BTreeMap<String, String> = get(obj, &["spec", "selector"])
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    vec![
        name(obj),
        json!(s(obj, &["spec", "type"])),
        json!(internal),
        json!(service_external_ip(obj)),
        json!(ports),
        age(obj, now),
        json!(format_labels(&selector)),
    ]
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `formatEndpoints`: up to 3 `ip:port` entries, then ` + N more...`; `<none>` without subsets.
pub fn format_endpoints(obj: &Value) -> String {
    let subsets = arr(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let max = 3usize;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addrs = arr(ss, &["addresses"]);
        let ports = arr(ss, &["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(s(a, &["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(join_host_port(s(a, &["ip"]), i(p, &["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    ret
}

fn list_with_more_string(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() {
        return "<unset>".to_string();
    }
    ret
}

fn format_discovery_ports(ports: &[Value]) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for p in ports {
        if list.len() < max {
            let n = if let Some(port) = get(p, &["port"]).and_then(Value::as_i64) {
                port.to_string()
            } else if let Some(name) = get(p, &["name"]).and_then(Value::as_str) {
                name.to_string()
            } else {
                "*".to_string()
            };
            list.push(n);
        } else if list.len() == max {
            more = true;
        }
        count += 1;
    }
    list_with_more_string(&list, more, count, max)
}

fn format_discovery_endpoints(endpoints: &[Value]) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for e in endpoints {
        for a in arr(e, &["addresses"]) {
            if list.len() < max {
                list.push(a.as_str().unwrap_or("").to_string());
            } else if list.len() == max {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more_string(&list, more, count, max)
}

fn node_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let mut status = Vec::new();
    if let Some(c) = arr(obj, &["status", "conditions"]).iter().rev().find(|c| s(c, &["type"]) == "Ready") {
        if s(c, &["status"]) == "True" {
            status.push("Ready".to_string());
        } else {
            status.push("NotReady".to_string());
        }
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if get(obj, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".to_string());
    }
    let mut roles = std::collections::BTreeSet::new();
    if let Some(labels) = get(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                let v = v.as_str().unwrap_or("");
                if !v.is_empty() {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.into_iter().collect::<Vec<_>>().join(",") };
    let addr = |t: &str| {
        arr(obj, &["status", "addresses"])
            .iter()
            .find(|a| s(a, &["type"]) == t)
            .map(|a| s(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let or_unknown = |v: &str| if v.is_empty() { "<unknown>".to_string() } else { v.to_string() };
    vec![
        name(obj),
        json!(status.join(",")),
        json!(roles),
        age(obj, now),
        json!(s(obj, &["status", "nodeInfo", "kubeletVersion"])),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(or_unknown(s(obj, &["status", "nodeInfo", "osImage"]))),
        json!(or_unknown(s(obj, &["status", "nodeInfo", "kernelVersion"]))),
        json!(or_unknown(s(obj, &["status", "nodeInfo", "containerRuntimeVersion"]))),
    ]
}

fn event_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let mut first = translate_timestamp_since(get(obj, &["firstTimestamp"]), now);
    if parse_time(get(obj, &["firstTimestamp"])).is_none() {
        first = translate_timestamp_since(get(obj, &["eventTime"]), now);
    }
    let mut last = translate_timestamp_since(get(obj, &["lastTimestamp"]), now);
    if parse_time(get(obj, &["lastTimestamp"])).is_none() {
        last = first.clone();
    }
    let mut count = i(obj, &["count"]);
    if let Some(series) = get(obj, &["series"]) {
        last = translate_timestamp_since(get(series, &["lastObservedTime"]), now);
        count = i(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let kind = s(obj, &["involvedObject", "kind"]).to_lowercase();
    let iname = s(obj, &["involvedObject", "name"]);
    let target = if iname.is_empty() { kind } else { format!("{kind}/{iname}") };
    let component = {
        let c = s(obj, &["source", "component"]);
        if c.is_empty() {
            s(obj, &["reportingComponent"])
        } else {
            c
        }
    };
    let instance = {
        let h = s(obj, &["source", "host"]);
        if h.is_empty() {
            s(obj, &["reportingInstance"])
        } else {
            h
        }
    };
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };
    vec![
        json!(last),
        json!(s(obj, &["type"])),
        json!(s(obj, &["reason"])),
        json!(target),
        json!(s(obj, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(s(obj, &["message"]).trim()),
        json!(first),
        json!(count),
        name(obj),
    ]
}

/// The STATUS column of a pod (`printPod`'s reason).
pub fn pod_status_reason(pod: &Value) -> String {
    pod_summary(pod, None).status
}

struct PodSummary {
    ready: i64,
    total: i64,
    status: String,
    restarts: i64,
    last_restart: Option<jiff::Timestamp>,
}

fn finished_at(cs: &Value) -> Option<jiff::Timestamp> {
    parse_time(get(cs, &["lastState", "terminated", "finishedAt"]))
}

fn pod_summary(pod: &Value, _now: Option<jiff::Timestamp>) -> PodSummary {
    let phase = s(pod, &["status", "phase"]);
    let mut reason = phase.to_string();
    let status_reason = s(pod, &["status", "reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    let conditions = arr(pod, &["status", "conditions"]);
    for c in conditions {
        if s(c, &["type"]) == "PodScheduled" && s(c, &["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }
    let init_specs = arr(pod, &["spec", "initContainers"]);
    let restartable =
        |name: &str| init_specs.iter().any(|c| s(c, &["name"]) == name && s(c, &["restartPolicy"]) == "Always");
    let mut total = arr(pod, &["spec", "containers"]).len() as i64;
    total += init_specs.iter().filter(|c| s(c, &["restartPolicy"]) == "Always").count() as i64;
    let mut ready = 0i64;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut last_restartable_restart: Option<jiff::Timestamp> = None;
    let later = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| match (a, b) {
        (Some(x), Some(y)) => Some(if y > x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    };

    let mut initializing = false;
    for (idx, cs) in arr(pod, &["status", "initContainerStatuses"]).iter().enumerate() {
        restarts += i(cs, &["restartCount"]);
        last_restart = later(last_restart, finished_at(cs));
        let cname = s(cs, &["name"]);
        if restartable(cname) {
            restartable_restarts += i(cs, &["restartCount"]);
            last_restartable_restart = later(last_restartable_restart, finished_at(cs));
        }
        let term = get(cs, &["state", "terminated"]);
        let waiting_reason = s(cs, &["state", "waiting", "reason"]);
        if term.is_some_and(|t| i(t, &["exitCode"]) == 0) {
            continue;
        }
        if restartable(cname) && get(cs, &["started"]).and_then(Value::as_bool) == Some(true) {
            if get(cs, &["ready"]).and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = term {
            let r = s(t, &["reason"]);
            reason = if r.is_empty() {
                let sig = i(t, &["signal"]);
                if sig != 0 {
                    format!("Init:Signal:{sig}")
                } else {
                    format!("Init:ExitCode:{}", i(t, &["exitCode"]))
                }
            } else {
                format!("Init:{r}")
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{}/{}", idx, init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized_true = conditions.iter().any(|c| s(c, &["type"]) == "Initialized" && s(c, &["status"]) == "True");
    if !initializing || initialized_true {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for cs in arr(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += i(cs, &["restartCount"]);
            last_restart = later(last_restart, finished_at(cs));
            let waiting = s(cs, &["state", "waiting", "reason"]);
            let term = get(cs, &["state", "terminated"]);
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = term.filter(|t| !s(t, &["reason"]).is_empty()) {
                reason = s(t, &["reason"]).to_string();
            } else if let Some(t) = term {
                let sig = i(t, &["signal"]);
                reason = if sig != 0 { format!("Signal:{sig}") } else { format!("ExitCode:{}", i(t, &["exitCode"])) };
            } else if get(cs, &["ready"]).and_then(Value::as_bool) == Some(true)
                && get(cs, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let ready_cond = conditions.iter().any(|c| s(c, &["type"]) == "Ready" && s(c, &["status"]) == "True");
            reason = if ready_cond { "Running".to_string() } else { "NotReady".to_string() };
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some();
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_string();
    }
    PodSummary { ready, total, status: reason, restarts, last_restart }
}

fn pod_cells(pod: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let sum = pod_summary(pod, Some(now));
    let mut restarts = sum.restarts.to_string();
    if sum.restarts != 0 {
        if let Some(t) = sum.last_restart {
            restarts =
                format!("{} ({} ago)", sum.restarts, human_duration_nanos(now.as_nanosecond() - t.as_nanosecond()));
        }
    }
    let mut ip = arr(pod, &["status", "podIPs"]).first().map(|p| s(p, &["ip"]).to_string()).unwrap_or_default();
    if ip.is_empty() {
        ip = "<none>".to_string();
    }
    let node = match s(pod, &["spec", "nodeName"]) {
        "" => "<none>".to_string(),
        n => n.to_string(),
    };
    let nominated = match s(pod, &["status", "nominatedNodeName"]) {
        "" => "<none>".to_string(),
        n => n.to_string(),
    };
    let gates = arr(pod, &["spec", "readinessGates"]);
    let readiness = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(pod, &["status", "conditions"]);
        let t = gates
            .iter()
            .filter(|g| {
                let ct = s(g, &["conditionType"]);
                conds.iter().find(|c| s(c, &["type"]) == ct).is_some_and(|c| s(c, &["status"]) == "True")
            })
            .count();
        format!("{t}/{}", gates.len())
    };
    vec![
        name(pod),
        json!(format!("{}/{}", sum.ready, sum.total)),
        json!(sum.status),
        json!(restarts),
        age(pod, now),
        json!(ip),
        json!(node),
        json!(nominated),
        json!(readiness),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2025-01-01T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> String {
        let t = now().as_second() - secs;
        jiff::Timestamp::from_second(t).unwrap().to_string()
    }

    #[test]
    fn human_durations() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (180, "3m"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 120, "3h2m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (71 * 3600, "2d23h"),
            (72 * 3600, "3d"),
            (8 * 86400, "8d"),
            (800 * 86400, "2y70d"),
            (3650 * 86400, "10y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration_secs(secs), want, "{secs}s");
        }
        assert_eq!(translate_timestamp_since(None, now()), "<unknown>");
        assert_eq!(translate_timestamp_since(Some(&json!(ago(150))), now()), "2m30s");
    }

    #[test]
    fn service_rows() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(600)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"], "selector": {"app": "web", "tier": "fe"},
                     "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}
        });
        assert_eq!(
            row_cells("services", &svc, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.12"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("10m"),
                json!("app=web,tier=fe")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.2"], "ports": []}});
        let cells = row_cells("services", &lb, now());
        assert_eq!(cells[3], "<pending>");
        assert_eq!(cells[4], "<none>");
        assert_eq!(cells[5], "<unknown>");
        assert_eq!(cells[6], "<none>");
        let lb2 = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.2"]},
                         "status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.1"}]}}});
        assert_eq!(row_cells("services", &lb2, now())[3], "172.18.255.1");
        let en = json!({"metadata": {"name": "en"}, "spec": {"type": "ExternalName", "externalName": "example.com"}});
        let cells = row_cells("services", &en, now());
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[3], "example.com");
        let cols = column_definitions("services");
        let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]);
        assert_eq!(cols[6]["priority"], 1);
        assert_eq!(cols[0]["format"], "name");
        assert!(cols[2]["description"].as_str().unwrap().starts_with("clusterIP is the IP address of the service"));
    }

    #[test]
    fn endpoints_rows() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.1.0.29"}, {"ip": "10.1.0.30"}], "ports": [{"port": 80}]}]});
        assert_eq!(row_cells("endpoints", &ep, now())[1], "10.1.0.29:80,10.1.0.30:80");
        let many = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}, {"ip": "10.0.0.5"}], "ports": [{"port": 9376}]}]});
        assert_eq!(format_endpoints(&many), "10.0.0.1:9376,10.0.0.2:9376,10.0.0.3:9376 + 2 more...");
        assert_eq!(format_endpoints(&json!({})), "<none>");
        assert_eq!(
            format_endpoints(
                &json!({"subsets": [{"notReadyAddresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]})
            ),
            ""
        );
        let es = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80, "name": "http"}],
                        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(
            row_cells("endpointslices", &es, now())[1..4],
            [json!("IPv4"), json!("80"), json!("10.0.0.1,10.0.0.2")]
        );
        let empty = json!({"metadata": {"name": "x"}, "addressType": "IPv4"});
        assert_eq!(row_cells("endpointslices", &empty, now())[2..4], [json!("<unset>"), json!("<unset>")]);
    }

    fn pod(status: Value) -> Value {
        json!({"metadata": {"name": "p", "creationTimestamp": ago(30)}, "spec": {"containers": [{"name": "c"}], "nodeName": "n1"}, "status": status})
    }

    #[test]
    fn pod_rows() {
        let running = pod(
            json!({"phase": "Running", "podIPs": [{"ip": "10.244.1.5"}], "conditions": [{"type": "Ready", "status": "True"}],
                                 "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        assert_eq!(
            row_cells("pods", &running, now()),
            vec![
                json!("p"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("30s"),
                json!("10.244.1.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let crash = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(5)}}}]}),
        );
        let cells = row_cells("pods", &crash, now());
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "5 (5s ago)");
        assert_eq!(cells[5], "<none>");
        let pending = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(pod_status_reason(&pending), "ContainerCreating");
        let pull = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ErrImagePull"}}}]}),
        );
        assert_eq!(pod_status_reason(&pull), "ErrImagePull");
        let done = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(pod_status_reason(&done), "Completed");
        assert!(row_conditions("pods", &done).is_some());
        let exit = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 2}}}]}),
        );
        assert_eq!(pod_status_reason(&exit), "ExitCode:2");
        let mut init = pod(
            json!({"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"running": {}}}],
                                  "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        init["spec"]["initContainers"] = json!([{"name": "i"}]);
        assert_eq!(pod_status_reason(&init), "Init:0/1");
        let mut term = running.clone();
        term["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(pod_status_reason(&term), "Terminating");
        assert_eq!(pod_status_reason(&pod(json!({"phase": "Pending"}))), "Pending");
        let cols = column_definitions("pods");
        assert_eq!(cols.len(), 9);
        assert_eq!(cols[5]["name"], "IP");
    }

    #[test]
    fn workload_and_other_rows() {
        let d = json!({"metadata": {"name": "nginx", "creationTimestamp": ago(86400 * 3)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "nginx"}}, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            row_cells("deployments", &d, now()),
            vec![
                json!("nginx"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3d"),
                json!("nginx,side"),
                json!("nginx:1.25,busybox"),
                json!("app=nginx")
            ]
        );
        let rs = json!({"metadata": {"name": "nginx-abc"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "nginx", "pod-template-hash": "abc"}}, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}, "status": {"replicas": 3, "readyReplicas": 1}});
        assert_eq!(
            row_cells("replicasets", &rs, now()),
            vec![
                json!("nginx-abc"),
                json!(3),
                json!(3),
                json!(1),
                json!("<unknown>"),
                json!("nginx"),
                json!("nginx"),
                json!("app=nginx,pod-template-hash=abc")
            ]
        );
        let ns = json!({"metadata": {"name": "demo", "creationTimestamp": ago(65)}, "status": {"phase": "Active"}});
        assert_eq!(row_cells("namespaces", &ns, now()), vec![json!("demo"), json!("Active"), json!("65s")]);
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
                       "nodeInfo": {"kubeletVersion": "v1.37.0", "kernelVersion": "6.1"}}});
        assert_eq!(
            row_cells("nodes", &node, now()),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane"),
                json!("<unknown>"),
                json!("v1.37.0"),
                json!("172.18.0.2"),
                json!("<none>"),
                json!("<unknown>"),
                json!("6.1"),
                json!("<unknown>")
            ]
        );
        let ev = json!({"metadata": {"name": "e1"}, "type": "Normal", "reason": "Scaled", "message": " Scaled up ",
            "involvedObject": {"kind": "Deployment", "name": "nginx"}, "source": {"component": "deployment-controller"},
            "firstTimestamp": ago(120), "lastTimestamp": ago(60), "count": 2});
        assert_eq!(
            row_cells("events", &ev, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Scaled"),
                json!("deployment/nginx"),
                json!(""),
                json!("deployment-controller"),
                json!("Scaled up"),
                json!("2m"),
                json!(2),
                json!("e1")
            ]
        );
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        assert_eq!(row_cells("configmaps", &cm, now())[1], 2);
        let sec = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "MQ=="}});
        assert_eq!(row_cells("secrets", &sec, now())[1..3], [json!("Opaque"), json!(1)]);
        let lease = json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}});
        assert_eq!(row_cells("leases", &lease, now())[1], "n1");
        let other = json!({"metadata": {"name": "x", "creationTimestamp": "2025-01-01T00:00:00Z"}});
        assert_eq!(row_cells("widgets", &other, now()), vec![json!("x"), json!("2025-01-01T00:00:00Z")]);
        assert_eq!(column_definitions("widgets")[1]["name"], "Created At");
        for r in [
            "pods",
            "services",
            "endpoints",
            "endpointslices",
            "deployments",
            "replicasets",
            "namespaces",
            "nodes",
            "events",
            "configmaps",
            "secrets",
            "leases",
        ] {
            assert_eq!(
                column_definitions(r).len(),
                row_cells(r, &json!({"metadata": {"name": "x"}}), now()).len(),
                "{r}"
            );
        }
    }
}
