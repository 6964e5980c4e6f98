//! Services: `ValidateService`, its update and status rules, ports, cluster IPs and IP families.

use super::*;

pub(super) fn is_headless(svc: &Value) -> bool {
    let ips = get_arr(svc, &["spec", "clusterIPs"]);
    ips.len() == 1 && ips[0].as_str() == Some("None")
}

pub(super) fn externally_accessible(svc: &Value) -> bool {
    let t = get_str(svc, &["spec", "type"]);
    t == "LoadBalancer" || t == "NodePort" || (t == "ClusterIP" && !get_arr(svc, &["spec", "externalIPs"]).is_empty())
}

pub(super) fn needs_health_check(svc: &Value) -> bool {
    get_str(svc, &["spec", "type"]) == "LoadBalancer" && get_str(svc, &["spec", "externalTrafficPolicy"]) == "Local"
}

/// The target port as Go's intstr: a number, or a string.
pub(super) fn int_or_string(v: Option<&Value>) -> Value {
    match v {
        None => Value::from(0),
        Some(v) => v.clone(),
    }
}

/// ValidateService (create and update).
pub fn validate_service(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let no_spec = Value::Object(Map::new());
    let spec = svc.get("spec").unwrap_or(&no_spec);
    let stype = get_str(spec, &["type"]);
    let ports = get_arr(spec, &["ports"]);
    let headless = is_headless(svc);
    let cluster_ips = str_list(get_arr(spec, &["clusterIPs"]));

    let topo_mode =
        get(svc, &["metadata", "annotations", "service.kubernetes.io/topology-mode"]).and_then(Value::as_str);
    let topo_hints =
        get(svc, &["metadata", "annotations", "service.kubernetes.io/topology-aware-hints"]).and_then(Value::as_str);
    if let (Some(mode), Some(hints)) = (topo_mode, topo_hints) {
        if mode != hints {
            errs.push(FieldError::invalid(
                "metadata.annotations[service.kubernetes.io/topology-mode]",
                mode,
                "must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
            ));
        }
    }
    if ports.is_empty() && !headless && stype != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match stype {
        "LoadBalancer" if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                cluster_ips[0].as_str(),
                "may not be set to 'None' for LoadBalancer services",
            ));
        }
        "NodePort" if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                cluster_ips[0].as_str(),
                "may not be set to 'None' for NodePort services",
            ));
        }
        "ExternalName" => {
            if !cluster_ips.is_empty() {
                errs.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
            }
            if !get_arr(spec, &["ipFamilies"]).is_empty() {
                errs.push(FieldError::forbidden("spec.ipFamilies", "may not be set for ExternalName services"));
            }
            if get(spec, &["ipFamilyPolicy"]).is_some() {
                errs.push(FieldError::forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"));
            }
            let en = get_str(spec, &["externalName"]);
            let cname = en.strip_suffix('.').unwrap_or(en);
            if !cname.is_empty() {
                for m in naming::is_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid("spec.externalName", cname, m));
                }
            } else {
                errs.push(FieldError::required("spec.externalName", ""));
            }
        }
        _ => {}
    }

    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(validate_service_port(p, ports.len() > 1, &mut names, &idx("spec.ports", i)));
    }

    if let Some(sel) = get_str_map(spec, &["selector"]) {
        errs.extend(validate_labels(&sel, "spec.selector"));
    }

    let affinity = get_str(spec, &["sessionAffinity"]);
    if affinity.is_empty() {
        errs.push(FieldError::required("spec.sessionAffinity", ""));
    } else if !matches!(affinity, "ClientIP" | "None") {
        errs.push(FieldError::not_supported("spec.sessionAffinity", affinity, &["ClientIP", "None"]));
    }
    if affinity == "ClientIP" {
        let p = "spec.sessionAffinityConfig";
        let detail = "when session affinity type is ClientIP";
        match get(spec, &["sessionAffinityConfig"]) {
            None => errs.push(FieldError::required(p, detail)),
            Some(cfg) => match get(cfg, &["clientIP"]) {
                None => errs.push(FieldError::required(child(p, "clientIP"), detail)),
                Some(cip) => match get(cip, &["timeoutSeconds"]) {
                    None => {
                        errs.push(FieldError::required("spec.sessionAffinityConfig.clientIP.timeoutSeconds", detail))
                    }
                    Some(t) => {
                        let tv = t.as_i64().unwrap_or(0);
                        if tv <= 0 || tv > 86400 {
                            errs.push(FieldError::invalid(
                                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                                t.clone(),
                                "must be greater than 0 and less than 86400",
                            ));
                        }
                    }
                },
            },
        }
    } else if affinity == "None" && get(spec, &["sessionAffinityConfig"]).is_some() {
        errs.push(FieldError::forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"));
    }

    errs.extend(validate_service_cluster_ips_related_fields(svc));

    for (i, ip) in get_arr(spec, &["externalIPs"]).iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        let p = idx("spec.externalIPs", i);
        let msgs = naming::is_valid_ip(ip);
        if !msgs.is_empty() {
            for m in msgs {
                errs.push(FieldError::invalid(p.clone(), ip, m));
            }
        } else {
            errs.extend(validate_non_special_ip(ip, &p));
        }
    }

    if stype.is_empty() {
        errs.push(FieldError::required("spec.type", ""));
    } else if !matches!(stype, "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort") {
        errs.push(FieldError::not_supported(
            "spec.type",
            stype,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }

    if stype == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if get_i64(p, &["nodePort"]).unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }

    // Duplicate node ports, per protocol.
    let mut node_ports = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let np = get_i64(p, &["nodePort"]).unwrap_or(0);
        if np == 0 {
            continue;
        }
        let k = (get_str(p, &["protocol"]).to_string(), np);
        if !node_ports.insert(k) {
            errs.push(FieldError::duplicate(format!("spec.ports[{i}].nodePort"), np));
        }
    }
    // Duplicate (protocol, port) pairs; the bad value is a core.ServicePort with only those set.
    let mut pairs = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = get_str(p, &["protocol"]).to_string();
        let port = get_i64(p, &["port"]).unwrap_or(0);
        if !pairs.insert((proto.clone(), port)) {
            let mut key = Map::new();
            key.insert("Name".into(), Value::String(String::new()));
            key.insert("Protocol".into(), Value::String(proto));
            key.insert("AppProtocol".into(), Value::Null);
            key.insert("Port".into(), Value::from(port));
            key.insert("TargetPort".into(), Value::from(0));
            key.insert("NodePort".into(), Value::from(0));
            errs.push(FieldError::duplicate(idx("spec.ports", i), Value::Object(key)));
        }
    }

    // LoadBalancerSourceRanges (the field, else the legacy annotation).
    const SOURCE_RANGES_ANN: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
    let ranges = str_list(get_arr(spec, &["loadBalancerSourceRanges"]));
    if !ranges.is_empty() {
        let fpath = "spec.LoadBalancerSourceRanges";
        if stype != "LoadBalancer" {
            errs.push(FieldError::forbidden(fpath, "may only be used when `type` is 'LoadBalancer'"));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            if !is_valid_cidr(r) {
                errs.push(FieldError::invalid(idx(fpath, i), r, CIDR_MSG));
            }
        }
    } else if let Some(val) = get(svc, &["metadata", "annotations", SOURCE_RANGES_ANN]).and_then(Value::as_str) {
        let fpath = key("metadata.annotations", SOURCE_RANGES_ANN);
        if stype != "LoadBalancer" {
            errs.push(FieldError::forbidden(fpath.clone(), "may only be used when `type` is 'LoadBalancer'"));
        }
        let val = val.trim();
        if !val.is_empty() {
            for r in val.split(',') {
                let r = r.trim();
                if !is_valid_cidr(r) {
                    errs.push(FieldError::invalid(fpath.clone(), r, CIDR_MSG));
                }
            }
        }
    }

    // allocateLoadBalancerNodePorts (upstream reports the missing value at the root path).
    if get(spec, &["allocateLoadBalancerNodePorts"]).is_some() && stype != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if stype == "LoadBalancer" && get(spec, &["allocateLoadBalancerNodePorts"]).is_none() {
        errs.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }

    // loadBalancerClass.
    if stype == "LoadBalancer" {
        if let Some(c) = get(spec, &["loadBalancerClass"]).and_then(Value::as_str) {
            for m in naming::is_qualified_name(c) {
                errs.push(FieldError::invalid("spec.loadBalancerClass", c, m));
            }
        }
    } else if get(spec, &["loadBalancerClass"]).is_some() {
        errs.push(FieldError::forbidden("spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'"));
    }

    // externalTrafficPolicy / healthCheckNodePort.
    let etp = get_str(spec, &["externalTrafficPolicy"]);
    if !externally_accessible(svc) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required("spec.externalTrafficPolicy", ""));
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.push(FieldError::not_supported("spec.externalTrafficPolicy", etp, &["Cluster", "Local"]));
    }
    let hcnp = get_i64(spec, &["healthCheckNodePort"]).unwrap_or(0);
    if needs_health_check(svc) {
        if hcnp <= 0 {
            errs.push(FieldError::required("spec.healthCheckNodePort", ""));
        } else {
            for m in naming::is_valid_port_num(hcnp) {
                errs.push(FieldError::invalid("spec.healthCheckNodePort", hcnp, m));
            }
        }
    } else if hcnp != 0 {
        errs.push(FieldError::invalid(
            "spec.healthCheckNodePort",
            hcnp,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }

    // internalTrafficPolicy.
    match get(spec, &["internalTrafficPolicy"]) {
        None => {
            if matches!(stype, "NodePort" | "LoadBalancer" | "ClusterIP") {
                errs.push(FieldError::required("spec.internalTrafficPolicy", ""));
            }
        }
        Some(v) => {
            let itp = v.as_str().unwrap_or("");
            if !matches!(itp, "Cluster" | "Local") {
                errs.push(FieldError::not_supported("spec.internalTrafficPolicy", itp, &["Cluster", "Local"]));
            }
        }
    }

    // trafficDistribution.
    if let Some(td) = get(spec, &["trafficDistribution"]).and_then(Value::as_str) {
        const SUPPORTED: &[&str] = &["PreferClose", "PreferSameZone", "PreferSameNode"];
        if !SUPPORTED.contains(&td) {
            errs.push(FieldError::not_supported("spec.trafficDistribution", td, SUPPORTED));
        }
    }
    errs
}

const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// `netutils.ParseCIDRSloppy`: an IP (IPv4 octets may carry leading zeros) and a prefix length.
pub(super) fn is_valid_cidr(v: &str) -> bool {
    let Some((ip, prefix)) = v.split_once('/') else { return false };
    let Some(ip) = naming::parse_ip_sloppy(ip) else { return false };
    if prefix.is_empty() || !prefix.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.parse::<u32>().is_ok_and(|p| p <= max)
}

/// ValidateServiceStatusUpdate's load balancer rules (`status.loadBalancer.ingress`).
pub fn validate_service_status(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ingress = get_arr(svc, &["status", "loadBalancer", "ingress"]);
    let path = "status.loadBalancer.ingress";
    if get_str(svc, &["spec", "type"]) != "LoadBalancer" && !ingress.is_empty() {
        errs.push(FieldError::forbidden(path, "may only be used when `spec.type` is 'LoadBalancer'"));
        return errs;
    }
    for (i, ing) in ingress.iter().enumerate() {
        let ip_path = idx(path, i);
        let ip = get_str(ing, &["ip"]);
        if !ip.is_empty() {
            for m in naming::is_valid_ip(ip) {
                errs.push(FieldError::invalid(child(&ip_path, "ip"), ip, m));
            }
        }
        match get(ing, &["ipMode"]).and_then(Value::as_str) {
            None if !ip.is_empty() => {
                errs.push(FieldError::required(child(&ip_path, "ipMode"), "must be specified when `ip` is set"));
            }
            Some(_) if ip.is_empty() => {
                errs.push(FieldError::forbidden(
                    child(&ip_path, "ipMode"),
                    "may not be specified when `ip` is not set",
                ));
            }
            Some(mode) if !matches!(mode, "Proxy" | "VIP") => {
                errs.push(FieldError::not_supported(child(&ip_path, "ipMode"), mode, &["Proxy", "VIP"]));
            }
            _ => {}
        }
        let host = get_str(ing, &["hostname"]);
        if !host.is_empty() {
            for m in naming::is_dns1123_subdomain(host) {
                errs.push(FieldError::invalid(child(&ip_path, "hostname"), host, m));
            }
            if naming::parse_ip_sloppy(host).is_some() {
                errs.push(FieldError::invalid(
                    child(&ip_path, "hostname"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
        }
    }
    errs
}

pub(super) fn validate_service_port(
    p: &Value,
    require_name: bool,
    names: &mut BTreeSet<String>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = get_str(p, &["name"]);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    } else if !name.is_empty() {
        for m in naming::is_dns1123_label(name) {
            errs.push(FieldError::invalid(child(path, "name"), name, m));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(path, "name"), name));
        }
    }
    let port = get_i64(p, &["port"]).unwrap_or(0);
    for m in naming::is_valid_port_num(port) {
        errs.push(FieldError::invalid(child(path, "port"), port, m));
    }
    let proto = get_str(p, &["protocol"]);
    if proto.is_empty() {
        errs.push(FieldError::required(child(path, "protocol"), ""));
    } else if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) {
        errs.push(FieldError::not_supported(child(path, "protocol"), proto, SUPPORTED_PORT_PROTOCOLS));
    }
    errs.extend(validate_port_num_or_name(&int_or_string(get(p, &["targetPort"])), &child(path, "targetPort")));
    if let Some(ap) = get(p, &["appProtocol"]).and_then(Value::as_str) {
        for m in naming::is_qualified_name(ap) {
            errs.push(FieldError::invalid(child(path, "appProtocol"), ap, m));
        }
    }
    errs
}

/// ValidatePortNumOrName: a port number (1-65535) or an IANA service name.
pub fn validate_port_num_or_name(v: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match v {
        Value::String(s) if s.is_empty() => errs.push(FieldError::required(path, "")),
        Value::String(s) => {
            for m in naming::is_valid_port_name(s) {
                errs.push(FieldError::invalid(path, s.as_str(), m));
            }
        }
        other => {
            let n = other.as_i64().unwrap_or(0);
            for m in naming::is_valid_port_num(n) {
                errs.push(FieldError::invalid(path, n, m));
            }
        }
    }
    errs
}

pub(super) fn validate_non_special_ip(ip: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(addr) = naming::parse_ip_sloppy(ip) else { return errs };
    let (unspecified, loopback, link_local, ll_multicast) = match addr {
        std::net::IpAddr::V4(a) => (
            a.is_unspecified(),
            a.is_loopback(),
            a.is_link_local(),
            a.octets()[0] == 224 && a.octets()[1] == 0 && a.octets()[2] == 0,
        ),
        std::net::IpAddr::V6(a) => {
            let s = a.segments();
            (a.is_unspecified(), a.is_loopback(), (s[0] & 0xffc0) == 0xfe80, (s[0] & 0xff0f) == 0xff02)
        }
    };
    if unspecified {
        errs.push(FieldError::invalid(path, ip, format!("may not be unspecified ({ip})")));
    }
    if loopback {
        errs.push(FieldError::invalid(path, ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)"));
    }
    if link_local {
        errs.push(FieldError::invalid(path, ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
    }
    if ll_multicast {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// ValidateServiceClusterIPsRelatedFields: clusterIP/clusterIPs sync, ipFamilies, ipFamilyPolicy.
pub fn validate_service_cluster_ips_related_fields(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if get_str(svc, &["spec", "type"]) == "ExternalName" {
        return errs;
    }
    let cluster_ip = get_str(svc, &["spec", "clusterIP"]);
    let ips = str_list(get_arr(svc, &["spec", "clusterIPs"]));
    let families = str_list(get_arr(svc, &["spec", "ipFamilies"]));
    let ips_value = str_list_value(&ips);
    if !cluster_ip.is_empty() {
        if ips.is_empty() {
            errs.push(FieldError::required("spec.clusterIPs", ""));
        } else if ips[0] != cluster_ip {
            errs.push(FieldError::invalid("spec.clusterIPs", ips_value.clone(), "first value must match `clusterIP`"));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            ips_value.clone(),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, f) in families.iter().enumerate() {
        if !matches!(f.as_str(), "IPv4" | "IPv6") {
            errs.push(FieldError::not_supported(idx("spec.ipFamilies", i), f.as_str(), &["IPv4", "IPv6"]));
        }
        if !seen.insert(f.clone()) {
            errs.push(FieldError::duplicate(idx("spec.ipFamilies", i), f.as_str()));
        }
    }
    if let Some(p) = get(svc, &["spec", "ipFamilyPolicy"]) {
        let p = p.as_str().unwrap_or("");
        if !matches!(p, "PreferDualStack" | "RequireDualStack" | "SingleStack") {
            errs.push(FieldError::not_supported(
                "spec.ipFamilyPolicy",
                p,
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            ));
        }
    }
    let mut has_invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                has_invalid = true;
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    ips_value.clone(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let msgs = naming::is_valid_ip(ip);
        if !msgs.is_empty() {
            has_invalid = true;
        }
        for m in msgs {
            errs.push(FieldError::invalid(idx("spec.clusterIPs", i), ip.as_str(), m));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid("spec.clusterIPs", ips_value.clone(), "may only hold up to 2 values"));
    }
    if has_invalid {
        return errs;
    }
    if ips.len() > 1 {
        let v6: Vec<bool> = ips.iter().map(|ip| ip.contains(':')).collect();
        let dual = ips.len() == 2 && v6[0] != v6[1];
        if !dual {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                ips_value.clone(),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(svc) && !ips.is_empty() && !families.is_empty() {
        for (i, ip) in ips.iter().enumerate() {
            if i >= families.len() {
                break;
            }
            let is6 = naming::parse_ip_sloppy(ip).map(|a| a.is_ipv6()).unwrap_or(false);
            if families[i] == "IPv4" && is6 {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if families[i] == "IPv6" && !is6 {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// The update-only checks of ValidateServiceUpdate (clusterIPs, ipFamilies, loadBalancerClass).
pub fn validate_service_update(svc: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (t, ot) = (get_str(svc, &["spec", "type"]), get_str(old, &["spec", "type"]));
    if t != "ExternalName" && ot != "ExternalName" {
        let new_ips = str_list(get_arr(svc, &["spec", "clusterIPs"]));
        let old_ips = str_list(get_arr(old, &["spec", "clusterIPs"]));
        let nv = str_list_value(&new_ips);
        if !(is_headless(svc) && is_headless(old)) {
            if old_ips.len() == new_ips.len() {
                for (i, ip) in old_ips.iter().enumerate() {
                    if *ip != new_ips[i] {
                        errs.push(FieldError::invalid(
                            idx("spec.clusterIPs", i),
                            nv.clone(),
                            "may not change once set",
                        ));
                    }
                }
            } else if old_ips.len() > new_ips.len() {
                if new_ips.is_empty() {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs[0]",
                        nv.clone(),
                        "primary clusterIP can not be unset",
                    ));
                }
                if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
                    errs.push(FieldError::invalid("spec.clusterIPs[0]", nv.clone(), "may not change once set"));
                }
                if new_ips.len() == 1 && get_str(svc, &["spec", "ipFamilyPolicy"]) != "SingleStack" {
                    errs.push(FieldError::invalid(
                        "spec.ipFamilyPolicy",
                        get(svc, &["spec", "ipFamilyPolicy"]).cloned().unwrap_or(Value::Null),
                        "must be set to 'SingleStack' when releasing the secondary clusterIP",
                    ));
                }
            } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(FieldError::invalid("spec.clusterIPs[0]", nv.clone(), "may not change once set"));
            }
        }
        if is_headless(svc) == is_headless(old) && !is_headless(svc) {
            let nf = str_list(get_arr(svc, &["spec", "ipFamilies"]));
            let of = str_list(get_arr(old, &["spec", "ipFamilies"]));
            let nfv = str_list_value(&nf);
            if nf.len() == of.len() {
                for (i, f) in of.iter().enumerate() {
                    if *f != nf[i] {
                        errs.push(FieldError::invalid("spec.ipFamilies[0]", nfv.clone(), "may not change once set"));
                    }
                }
            } else if of.len() > nf.len() {
                if get_arr(svc, &["spec", "clusterIPs"]).is_empty() {
                    errs.push(FieldError::invalid(
                        "spec.ipFamilies[0]",
                        nfv.clone(),
                        "primary ipFamily can not be unset",
                    ));
                }
                if !nf.is_empty() && nf[0] != of[0] {
                    errs.push(FieldError::invalid("spec.ipFamilies[0]", nv.clone(), "may not change once set"));
                }
                if nf.len() == 1 && get_str(svc, &["spec", "ipFamilyPolicy"]) != "SingleStack" {
                    errs.push(FieldError::invalid(
                        "spec.ipFamilyPolicy",
                        get(svc, &["spec", "ipFamilyPolicy"]).cloned().unwrap_or(Value::Null),
                        "must be set to 'SingleStack' when releasing the secondary ipFamily",
                    ));
                }
            } else if !of.is_empty() && !nf.is_empty() && nf[0] != of[0] {
                errs.push(FieldError::invalid("spec.ipFamilies[0]", nv.clone(), "may not change once set"));
            }
        }
    }
    if t == "LoadBalancer" && ot == "LoadBalancer" {
        let nc = get(svc, &["spec", "loadBalancerClass"]);
        let oc = get(old, &["spec", "loadBalancerClass"]);
        if nc != oc {
            errs.push(FieldError::invalid(
                "spec.loadBalancerClass",
                nc.cloned().unwrap_or(Value::Null),
                "may not change once set",
            ));
        }
    }
    if needs_health_check(old)
        && needs_health_check(svc)
        && get_i64(svc, &["spec", "healthCheckNodePort"]) != get_i64(old, &["spec", "healthCheckNodePort"])
    {
        errs.push(FieldError::forbidden("spec.healthCheckNodePort", FIELD_IMMUTABLE));
    }
    errs
}
