//! A container's `resources` (upstream's `ValidateContainerResourceRequirements`): resource names
//! (standard for containers, hugepages, or extended `domain/name`), quantities that parse and are
//! not negative, whole numbers for extended resources, and requests within the limits (equal to
//! them for resources that cannot be overcommitted). Now that limits are kernel limits on the node,
//! a quantity the runtime cannot read is refused here, not at container start.

use super::*;
use crate::quantity::Quantity;

const CONTAINER_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];
const STANDARD_RESOURCES: [&str; 22] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "storage",
    "requests.storage",
    "services.nodeports",
    "services.loadbalancers",
    "count/pods",
    "limits.hugepages",
];

fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_extended(name: &str) -> bool {
    !is_native(name)
        && !name.starts_with("requests.")
        && naming::is_qualified_name(&format!("requests.{name}")).is_empty()
}

fn validate_name(name: &str, path: &str) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> =
        naming::is_qualified_name(name).into_iter().map(|m| FieldError::invalid(path, name, m)).collect();
    if errs.is_empty()
        && !name.contains('/')
        && !STANDARD_RESOURCES.contains(&name)
        && !name.starts_with("hugepages-")
        && !name.starts_with("requests.hugepages-")
    {
        errs.push(FieldError::invalid(path, name, "must be a standard resource type or fully qualified"));
    }
    if !name.contains('/') {
        if !CONTAINER_RESOURCES.contains(&name) && !name.starts_with("hugepages-") {
            errs.push(FieldError::invalid(path, name, "must be a standard resource for containers"));
        }
    } else if !is_native(name) && !is_extended(name) {
        errs.push(FieldError::invalid(path, name, "doesn't follow extended resource name standard"));
    }
    errs
}

/// The quantities of one list (`limits` or `requests`), parsed; errors for the ones that are not.
fn quantities(res: &Value, list: &str, path: &str, errs: &mut Vec<FieldError>) -> BTreeMap<String, (String, Quantity)> {
    let mut out = BTreeMap::new();
    let Some(m) = res.get(list).and_then(Value::as_object) else { return out };
    let list_path = child(path, list);
    for (name, v) in m {
        let p = key(&list_path, name);
        errs.extend(validate_name(name, &p));
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                errs.push(FieldError::invalid(&p, other.clone(), "must be a quantity"));
                continue;
            }
        };
        match Quantity::parse(&s) {
            Err(e) => errs.push(FieldError::invalid(&p, s.as_str(), e.to_string())),
            Ok(q) => {
                if q.milli() < 0 {
                    errs.push(FieldError::invalid(&p, s.as_str(), "must be greater than or equal to 0"));
                }
                if is_extended(name) && q.milli() % 1000 != 0 {
                    errs.push(FieldError::invalid(&p, s.as_str(), "must be an integer"));
                }
                out.insert(name.clone(), (s, q));
            }
        }
    }
    out
}

/// `path` is the container's `resources`.
pub(super) fn validate_resources(c: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(res) = c.get("resources").filter(|r| !r.is_null()) else { return errs };
    let limits = quantities(res, "limits", path, &mut errs);
    let requests = quantities(res, "requests", path, &mut errs);
    let req_path = child(path, "requests");
    for (name, (s, q)) in &requests {
        let overcommit = is_native(name) && !name.starts_with("hugepages-");
        match limits.get(name) {
            Some((ls, l)) if !overcommit && q.milli() != l.milli() => {
                errs.push(FieldError::invalid(&req_path, s.as_str(), format!("must be equal to {name} limit of {ls}")))
            }
            Some((ls, l)) if q.milli() > l.milli() => errs.push(FieldError::invalid(
                &req_path,
                s.as_str(),
                format!("must be less than or equal to {name} limit of {ls}"),
            )),
            None if !overcommit => errs.push(FieldError::required(
                child(path, "limits"),
                "Limit must be set for non overcommitable resources",
            )),
            _ => {}
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(res: Value) -> Vec<String> {
        validate_resources(&json!({ "resources": res }), "spec.containers[0].resources")
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn upstream_messages() {
        assert!(errs(json!({"limits": {"cpu": "1", "memory": "20Mi"}, "requests": {"cpu": "500m"}})).is_empty());
        assert_eq!(
            errs(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "2"}})),
            ["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]
        );
        assert_eq!(
            errs(json!({"limits": {"memory": "-1"}})),
            ["spec.containers[0].resources.limits[memory]: Invalid value: \"-1\": must be greater than or equal to 0"]
        );
        let e = errs(json!({"limits": {"memory": "abc"}}));
        assert_eq!(e.len(), 1);
        assert!(e[0]
            .starts_with("spec.containers[0].resources.limits[memory]: Invalid value: \"abc\": quantities must match"));
        assert_eq!(
            errs(json!({"limits": {"pods": "1"}})),
            ["spec.containers[0].resources.limits[pods]: Invalid value: \"pods\": must be a standard resource for containers"]
        );
        assert_eq!(errs(json!({"limits": {"foo": "1"}})).len(), 2);
        assert_eq!(
            errs(json!({"limits": {"example.com/gpu": "1.5"}, "requests": {"example.com/gpu": "1.5"}})),
            [
                "spec.containers[0].resources.limits[example.com/gpu]: Invalid value: \"1.5\": must be an integer",
                "spec.containers[0].resources.requests[example.com/gpu]: Invalid value: \"1.5\": must be an integer",
            ]
        );
        assert_eq!(
            errs(json!({"limits": {"example.com/gpu": "2"}, "requests": {"example.com/gpu": "1"}})),
            ["spec.containers[0].resources.requests: Invalid value: \"1\": must be equal to example.com/gpu limit of 2"]
        );
    }
}
