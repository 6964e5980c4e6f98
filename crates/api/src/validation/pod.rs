//! Pods and pod templates: `ValidatePodSpec` (containers, ports, policies, probes; volumes and
//! mounts in [`super::volume`]) and the pod update rule.

use super::*;

/// ValidatePodSpec (the parts Yard's runtime uses: containers, ports, policies, probes).
pub fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = get_arr(spec, &["containers"]);
    let init = get_arr(spec, &["initContainers"]);
    let mut names = BTreeSet::new();
    let (verrs, volumes) = super::volume::validate_volumes(spec, path);
    errs.extend(verrs);
    for (i, c) in init.iter().enumerate() {
        let cp = idx(&child(path, "initContainers"), i);
        errs.extend(validate_container(c, &cp, &mut names));
        errs.extend(super::volume::validate_volume_mounts(c, &cp, &volumes));
    }
    if containers.is_empty() {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        let cp = idx(&child(path, "containers"), i);
        errs.extend(validate_container(c, &cp, &mut names));
        errs.extend(super::volume::validate_volume_mounts(c, &cp, &volumes));
    }
    let rp = get_str(spec, &["restartPolicy"]);
    if rp.is_empty() {
        errs.push(FieldError::required(child(path, "restartPolicy"), ""));
    } else if !matches!(rp, "Always" | "OnFailure" | "Never") {
        errs.push(FieldError::not_supported(child(path, "restartPolicy"), rp, &["Always", "OnFailure", "Never"]));
    }
    let dp = get_str(spec, &["dnsPolicy"]);
    if dp.is_empty() {
        errs.push(FieldError::required(child(path, "dnsPolicy"), ""));
    } else if !matches!(dp, "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None") {
        errs.push(FieldError::not_supported(
            child(path, "dnsPolicy"),
            dp,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ));
    }
    if let Some(t) = get_i64(spec, &["terminationGracePeriodSeconds"]) {
        if t < 0 {
            errs.push(FieldError::invalid(child(path, "terminationGracePeriodSeconds"), t, IS_NEGATIVE));
        }
    }
    if let Some(t) = get_i64(spec, &["activeDeadlineSeconds"]) {
        if t <= 0 {
            errs.push(FieldError::invalid(
                child(path, "activeDeadlineSeconds"),
                t,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    let node = get_str(spec, &["nodeName"]);
    if !node.is_empty() {
        for m in naming::is_dns1123_subdomain(node) {
            errs.push(FieldError::invalid(child(path, "nodeName"), node, m));
        }
    }
    let sa = get_str(spec, &["serviceAccountName"]);
    if !sa.is_empty() {
        for m in naming::is_dns1123_subdomain(sa) {
            errs.push(FieldError::invalid(child(path, "serviceAccountName"), sa, m));
        }
    }
    let hostname = get_str(spec, &["hostname"]);
    if !hostname.is_empty() {
        for m in naming::is_dns1123_label(hostname) {
            errs.push(FieldError::invalid(child(path, "hostname"), hostname, m));
        }
    }
    let subdomain = get_str(spec, &["subdomain"]);
    if !subdomain.is_empty() {
        for m in naming::is_dns1123_label(subdomain) {
            errs.push(FieldError::invalid(child(path, "subdomain"), subdomain, m));
        }
    }
    if let Some(sel) = get_str_map(spec, &["nodeSelector"]) {
        errs.extend(validate_labels(&sel, &child(path, "nodeSelector")));
    }
    errs
}

pub(super) fn validate_container(c: &Value, path: &str, names: &mut BTreeSet<String>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = get_str(c, &["name"]);
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    } else {
        for m in naming::is_dns1123_label(name) {
            errs.push(FieldError::invalid(child(path, "name"), name, m));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(path, "name"), name));
        }
    }
    let image = get_str(c, &["image"]);
    if image.is_empty() {
        errs.push(FieldError::required(child(path, "image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(child(path, "image"), image, "must not have leading or trailing whitespace"));
    }
    errs.extend(super::resources::validate_resources(c, &child(path, "resources")));
    let mut port_names = BTreeSet::new();
    for (i, p) in get_arr(c, &["ports"]).iter().enumerate() {
        let pp = idx(&child(path, "ports"), i);
        let pname = get_str(p, &["name"]);
        if !pname.is_empty() {
            let msgs = naming::is_valid_port_name(pname);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(child(&pp, "name"), pname, m));
                }
            } else if !port_names.insert(pname.to_string()) {
                errs.push(FieldError::duplicate(child(&pp, "name"), pname));
            }
        }
        let cp = get_i64(p, &["containerPort"]).unwrap_or(0);
        if cp == 0 {
            errs.push(FieldError::required(child(&pp, "containerPort"), ""));
        } else {
            for m in naming::is_valid_port_num(cp) {
                errs.push(FieldError::invalid(child(&pp, "containerPort"), cp, m));
            }
        }
        let hp = get_i64(p, &["hostPort"]).unwrap_or(0);
        if hp != 0 {
            for m in naming::is_valid_port_num(hp) {
                errs.push(FieldError::invalid(child(&pp, "hostPort"), hp, m));
            }
        }
        let proto = get_str(p, &["protocol"]);
        if proto.is_empty() {
            errs.push(FieldError::required(child(&pp, "protocol"), ""));
        } else if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(child(&pp, "protocol"), proto, SUPPORTED_PORT_PROTOCOLS));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = get(c, &[probe]) {
            let pp = child(path, probe);
            for f in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"]
            {
                if let Some(v) = get_i64(p, &[f]) {
                    if v < 0 {
                        errs.push(FieldError::invalid(child(&pp, f), v, IS_NEGATIVE));
                    }
                }
            }
            if probe != "readinessProbe" {
                if let Some(v) = get_i64(p, &["successThreshold"]) {
                    if v != 1 {
                        errs.push(FieldError::invalid(child(&pp, "successThreshold"), v, "must be 1"));
                    }
                }
            }
            let handlers = ["exec", "httpGet", "tcpSocket", "grpc"].iter().filter(|h| get(p, &[**h]).is_some()).count();
            if handlers == 0 {
                errs.push(FieldError::required(pp.clone(), "must specify a handler type"));
            } else if handlers > 1 {
                errs.push(FieldError::forbidden(pp.clone(), "may not specify more than 1 handler type"));
            }
            for h in ["httpGet", "tcpSocket"] {
                if let Some(a) = get(p, &[h]) {
                    errs.extend(validate_port_num_or_name(
                        &int_or_string(get(a, &["port"])),
                        &format!("{pp}.{h}.port"),
                    ));
                }
            }
        }
    }
    for (i, e) in get_arr(c, &["env"]).iter().enumerate() {
        if get_str(e, &["name"]).is_empty() {
            errs.push(FieldError::required(child(&idx(&child(path, "env"), i), "name"), ""));
        }
    }
    errs
}

/// ValidatePodUpdate's spec rule: only images, activeDeadlineSeconds, tolerations (additions) and
/// terminationGracePeriodSeconds may change.
pub(super) fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let strip = |v: &Value| -> Value {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Object(Map::new()));
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = s.get_mut(list) {
                for c in cs.iter_mut() {
                    if let Some(o) = c.as_object_mut() {
                        o.remove("image");
                    }
                }
            }
        }
        if let Some(o) = s.as_object_mut() {
            o.remove("activeDeadlineSeconds");
            o.remove("tolerations");
            o.remove("terminationGracePeriodSeconds");
            o.remove("schedulingGates");
        }
        sorted_value(&s)
    };
    if strip(new) != strip(old) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    errs
}
