//! Nodes: spec and status rules.

use super::*;

pub(super) fn validate_node(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let cidrs = str_list(get_arr(obj, &["spec", "podCIDRs"]));
    for (i, c) in cidrs.iter().enumerate() {
        if c.parse::<ipnet::IpNet>().is_err() {
            errs.push(FieldError::invalid(idx("spec.podCIDRs", i), str_list_value(&cidrs), "must be valid CIDR"));
        }
    }
    if cidrs.len() > 1 {
        let dual = cidrs.len() == 2 && cidrs[0].contains(':') != cidrs[1].contains(':');
        if !dual {
            errs.push(FieldError::invalid(
                "spec.podCIDRs",
                str_list_value(&cidrs),
                "may specify no more than one CIDR for each IP family",
            ));
        }
    }
    if let Some(old) = old {
        let old_cidrs = str_list(get_arr(old, &["spec", "podCIDRs"]));
        if !old_cidrs.is_empty() && old_cidrs != cidrs {
            errs.push(FieldError::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let (p, op) = (get_str(obj, &["spec", "providerID"]), get_str(old, &["spec", "providerID"]));
        if !op.is_empty() && op != p {
            errs.push(FieldError::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    errs
}
