//! Endpoints and EndpointSlices: addresses, ports and address types.

use super::*;

pub(super) fn validate_endpoints(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ss) in get_arr(obj, &["subsets"]).iter().enumerate() {
        let sp = idx("subsets", i);
        let addrs = get_arr(ss, &["addresses"]);
        let nr = get_arr(ss, &["notReadyAddresses"]);
        if addrs.is_empty() && nr.is_empty() {
            errs.push(FieldError::required(sp.clone(), "must specify `addresses` or `notReadyAddresses`"));
        }
        for (list, name) in [(addrs, "addresses"), (nr, "notReadyAddresses")] {
            for (j, a) in list.iter().enumerate() {
                let ap = idx(&child(&sp, name), j);
                let ip = get_str(a, &["ip"]);
                if naming::parse_ip_sloppy(ip).is_none() {
                    errs.push(FieldError::invalid(child(&ap, "ip"), ip, "must be a valid IP address"));
                } else {
                    errs.extend(validate_non_special_ip(ip, &child(&ap, "ip")));
                }
                let h = get_str(a, &["hostname"]);
                if !h.is_empty() {
                    for m in naming::is_dns1123_label(h) {
                        errs.push(FieldError::invalid(child(&ap, "hostname"), h, m));
                    }
                }
                if let Some(n) = get(a, &["nodeName"]).and_then(Value::as_str) {
                    for m in naming::is_dns1123_subdomain(n) {
                        errs.push(FieldError::invalid(child(&ap, "nodeName"), n, m));
                    }
                }
            }
        }
        let ports = get_arr(ss, &["ports"]);
        for (j, p) in ports.iter().enumerate() {
            let pp = idx(&child(&sp, "ports"), j);
            let name = get_str(p, &["name"]);
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(child(&pp, "name"), ""));
            } else if !name.is_empty() {
                for m in naming::is_dns1123_label(name) {
                    errs.push(FieldError::invalid(child(&pp, "name"), name, m));
                }
            }
            let port = get_i64(p, &["port"]).unwrap_or(0);
            for m in naming::is_valid_port_num(port) {
                errs.push(FieldError::invalid(child(&pp, "port"), port, m));
            }
            let proto = get_str(p, &["protocol"]);
            if proto.is_empty() {
                errs.push(FieldError::required(child(&pp, "protocol"), ""));
            } else if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) {
                errs.push(FieldError::not_supported(child(&pp, "protocol"), proto, SUPPORTED_PORT_PROTOCOLS));
            }
        }
    }
    errs
}

pub(super) fn validate_endpoint_slice(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let at = get_str(obj, &["addressType"]);
    if at.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !matches!(at, "FQDN" | "IPv4" | "IPv6") {
        errs.push(FieldError::not_supported("addressType", at, &["FQDN", "IPv4", "IPv6"]));
    }
    let endpoints = get_arr(obj, &["endpoints"]);
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many("endpoints", endpoints.len() as i64, 1000));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let ep = idx("endpoints", i);
        let addrs = get_arr(e, &["addresses"]);
        if addrs.is_empty() {
            errs.push(FieldError::required(child(&ep, "addresses"), "must contain at least 1 address"));
        } else if addrs.len() > 100 {
            errs.push(FieldError::too_many(child(&ep, "addresses"), addrs.len() as i64, 100));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let ap = idx(&child(&ep, "addresses"), j);
            match at {
                "IPv4" => {
                    if !matches!(naming::parse_ip_sloppy(a), Some(std::net::IpAddr::V4(_))) {
                        errs.push(FieldError::invalid(ap.clone(), a, "must be a valid IPv4 address"));
                    } else {
                        errs.extend(validate_non_special_ip(a, &ap));
                    }
                }
                "IPv6" => {
                    if !matches!(a.parse::<std::net::IpAddr>(), Ok(std::net::IpAddr::V6(_))) {
                        errs.push(FieldError::invalid(ap.clone(), a, "must be a valid IPv6 address"));
                    } else {
                        errs.extend(validate_non_special_ip(a, &ap));
                    }
                }
                "FQDN" => {
                    for m in naming::is_dns1123_subdomain(a) {
                        errs.push(FieldError::invalid(ap.clone(), a, m));
                    }
                }
                _ => {}
            }
        }
        if let Some(h) = get(e, &["hostname"]).and_then(Value::as_str) {
            for m in naming::is_dns1123_label(h) {
                errs.push(FieldError::invalid(child(&ep, "hostname"), h, m));
            }
        }
        if let Some(n) = get(e, &["nodeName"]).and_then(Value::as_str) {
            for m in naming::is_dns1123_subdomain(n) {
                errs.push(FieldError::invalid(child(&ep, "nodeName"), n, m));
            }
        }
    }
    let ports = get_arr(obj, &["ports"]);
    if ports.len() > 20000 {
        errs.push(FieldError::too_many("ports", ports.len() as i64, 20000));
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = idx("ports", i);
        let name = get_str(p, &["name"]);
        if !name.is_empty() {
            for m in naming::is_dns1123_label(name) {
                errs.push(FieldError::invalid(child(&pp, "name"), name, m));
            }
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&pp, "name"), name));
        }
        match get(p, &["protocol"]).and_then(Value::as_str) {
            None => errs.push(FieldError::required(child(&pp, "protocol"), "")),
            Some(proto) if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) => {
                errs.push(FieldError::not_supported(child(&pp, "protocol"), proto, SUPPORTED_PORT_PROTOCOLS));
            }
            _ => {}
        }
        if let Some(port) = get_i64(p, &["port"]) {
            for m in naming::is_in_range(port, 0, 65535) {
                errs.push(FieldError::invalid(child(&pp, "port"), port, m));
            }
        }
    }
    errs
}
