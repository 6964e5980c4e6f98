//! Small helpers shared by the controllers: label selectors, pod state, keys, time, API errors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use kube::Resource;

/// `namespace/name` (or `name` for cluster-scoped objects).
pub fn key(ns: &str, name: &str) -> String {
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// Splits a key made by [`key`].
pub fn split_key(key: &str) -> (&str, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => ("", key),
    }
}

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// RFC3339 with second precision, as metav1.Time marshals.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Does a map selector (Service.spec.selector) select these labels? An empty selector selects nothing
/// here: callers treat it as "no selector".
pub fn map_selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    if selector.is_empty() {
        return false;
    }
    let Some(labels) = labels else { return false };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// metav1.LabelSelector semantics: an empty selector matches everything; matchExpressions operators
/// In, NotIn, Exists, DoesNotExist. An unknown operator matches nothing.
pub fn label_selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &sel.match_labels {
        if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let ok = match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// True when the selector has no requirements at all (selects everything).
pub fn label_selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

pub fn pod_ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// podutil.IsPodReady: the Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod_ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod became Ready (lastTransitionTime of a True Ready condition).
pub fn pod_ready_time(pod: &Pod) -> Option<jiff::Timestamp> {
    pod_ready_condition(pod).filter(|c| c.status == "True").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0)
}

/// podutil.IsPodAvailable: Ready for at least minReadySeconds.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match pod_ready_time(pod) {
        Some(t) => t.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
        None => false,
    }
}

pub fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Succeeded or Failed.
pub fn is_pod_terminal(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// controller.IsPodActive: not terminal and not being deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    !is_pod_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// All pod IPs (status.podIPs, falling back to status.podIP).
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(st) = pod.status.as_ref() else {
        return vec![];
    };
    let mut out: Vec<String> = st.pod_ips.iter().flatten().map(|p| p.ip.clone()).filter(|s| !s.is_empty()).collect();
    if out.is_empty() {
        if let Some(ip) = st.pod_ip.as_ref().filter(|s| !s.is_empty()) {
            out.push(ip.clone());
        }
    }
    out
}

pub fn controller_ref(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

/// An ownerReference with controller=true and blockOwnerDeletion=true pointing at `owner`.
pub fn controller_owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason != "AlreadyExists")
}

pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Parses a resourceVersion as a number (the store's global revision); None when opaque.
pub fn rv_num(rv: Option<&String>) -> Option<u64> {
    rv.and_then(|s| s.parse().ok())
}

/// True when `a` is known to be older than `b` (both numeric resourceVersions).
pub fn rv_older(a: Option<&String>, b: Option<&String>) -> bool {
    matches!((rv_num(a), rv_num(b)), (Some(x), Some(y)) if x < y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        assert!(map_selects(&labels(&[("app", "web")]), Some(&l)));
        assert!(!map_selects(&labels(&[("app", "db")]), Some(&l)));
        assert!(!map_selects(&BTreeMap::new(), Some(&l)));
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement { key: "tier".into(), operator: "In".into(), values: Some(vec!["fe".into()]) },
                LabelSelectorRequirement { key: "x".into(), operator: "DoesNotExist".into(), values: None },
            ]),
        };
        assert!(label_selector_matches(&sel, Some(&l)));
        let l2 = labels(&[("app", "web"), ("tier", "be")]);
        assert!(!label_selector_matches(&sel, Some(&l2)));
        assert!(label_selector_matches(&LabelSelector::default(), None));
    }
}
