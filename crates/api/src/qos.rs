//! A pod's quality-of-service class (`status.qosClass`), as upstream's `GetPodQOS` computes it from
//! the cpu and memory requests and limits of its containers and init containers: BestEffort when
//! none is set, Guaranteed when every container limits both and the requests equal the limits,
//! Burstable otherwise. Quantities compare by value (`1` equals `1000m`); zero counts as unset.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::Quantity;

const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// The QoS class of a pod spec (JSON, after defaulting).
pub fn pod_qos(spec: &Value) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .into_iter()
        .flat_map(|k| spec.get(k).and_then(Value::as_array).into_iter().flatten());
    for c in containers {
        let res = c.get("resources");
        let read = |kind: &str, name: &str| -> Option<i128> {
            let q = res?.get(kind)?.get(name)?.as_str()?;
            Quantity::parse(q).ok().map(|q| q.milli()).filter(|m| *m > 0)
        };
        let mut found_limits = 0;
        for name in QOS_RESOURCES {
            // A request not given defaults to the limit (API defaulting), before or after it ran.
            let explicit = res.and_then(|r| r.get("requests")).and_then(|r| r.get(name)).is_some();
            let request = if explicit { read("requests", name) } else { read("limits", name) };
            if let Some(v) = request {
                *requests.entry(name).or_default() += v;
            }
            if let Some(v) = read("limits", name) {
                found_limits += 1;
                *limits.entry(name).or_default() += v;
            }
        }
        if found_limits != QOS_RESOURCES.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.len() == limits.len() && requests.iter().all(|(k, v)| limits.get(k) == Some(v)) {
        return "Guaranteed";
    }
    "Burstable"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qos(containers: Value) -> &'static str {
        pod_qos(&json!({ "containers": containers }))
    }

    #[test]
    fn classes() {
        assert_eq!(qos(json!([{"name": "a"}])), "BestEffort");
        assert_eq!(qos(json!([{"name": "a", "resources": {}}])), "BestEffort");
        assert_eq!(qos(json!([{"name": "a", "resources": {"requests": {"cpu": "0"}}}])), "BestEffort");
        let g = json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}});
        assert_eq!(qos(json!([{"name": "a", "resources": g}])), "Guaranteed");
        assert_eq!(qos(json!([{"name": "a", "resources": g}, {"name": "b"}])), "Burstable");
        let cpu_only = json!({"requests": {"cpu": "1"}, "limits": {"cpu": "1"}});
        assert_eq!(qos(json!([{"name": "a", "resources": cpu_only}])), "Burstable");
        let lower = json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(qos(json!([{"name": "a", "resources": lower}])), "Burstable");
        // Extended resources do not count.
        let ext = json!({"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "1"}});
        assert_eq!(qos(json!([{"name": "a", "resources": ext}])), "BestEffort");
        // Init containers count.
        let spec = json!({"containers": [{"name": "a", "resources": g}], "initContainers": [{"name": "i"}]});
        assert_eq!(pod_qos(&spec), "Burstable");
        // Limits alone: the requests default to them.
        let lim = json!({"limits": {"cpu": "100m", "memory": "32Mi"}});
        assert_eq!(qos(json!([{"name": "a", "resources": lim}])), "Guaranteed");
    }
}
