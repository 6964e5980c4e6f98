//! The watch that keeps the authorizer's [`Policy`] current: one list-and-follow of every RBAC
//! object, the raw objects kept by key, and a new snapshot built once per batch of events
//! (readers never wait for a store read). After each build, ClusterRoles with an
//! `aggregationRule` whose stored rules differ from the union of the rules of the ClusterRoles
//! their selectors match (sorted by name, each rule once) are written back, as upstream's
//! clusterrole-aggregation controller does; that write comes back as one more event.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use yard_api::selector::{labels_of, LabelSelector};
use yard_store::{DynStore, EventKind, KeyValue, Op};

use super::{Binding, Policy, PolicyRule};

/// The storage prefix of the four RBAC kinds.
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

struct Raw {
    value: Value,
    revision: i64,
}

/// `applied`: the store revision every RBAC object version up to which is in the snapshot.
pub(super) async fn follow(
    store: DynStore,
    policy: Arc<RwLock<Arc<Policy>>>,
    synced: Arc<AtomicBool>,
    applied: Arc<AtomicI64>,
) {
    loop {
        match store.list_and_follow(PREFIX).await {
            Ok((page, mut w)) => {
                let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
                for kv in &page.items {
                    insert(&mut raw, kv);
                }
                publish(&store, &raw, &policy).await;
                applied.store(page.revision, Ordering::Release);
                synced.store(true, Ordering::Release);
                while let Some(ev) = w.next().await {
                    let mut rev = ev.kv.mod_revision;
                    apply(&mut raw, ev.kind, &ev.kv);
                    // Take every event already delivered before building again.
                    while let Some(ev) = w.try_next() {
                        rev = rev.max(ev.kv.mod_revision);
                        apply(&mut raw, ev.kind, &ev.kv);
                    }
                    publish(&store, &raw, &policy).await;
                    applied.fetch_max(rev, Ordering::AcqRel);
                }
                synced.store(false, Ordering::Release);
                tracing::debug!("rbac watch ended; re-listing");
            }
            Err(e) => tracing::warn!(error = %e, "rbac listing failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn insert(raw: &mut BTreeMap<String, Raw>, kv: &KeyValue) {
    match serde_json::from_slice::<Value>(&kv.value) {
        Ok(value) => {
            raw.insert(kv.key.clone(), Raw { value, revision: kv.mod_revision });
        }
        Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable rbac object"),
    }
}

fn apply(raw: &mut BTreeMap<String, Raw>, kind: EventKind, kv: &KeyValue) {
    match kind {
        EventKind::Put => insert(raw, kv),
        EventKind::Delete => {
            raw.remove(&kv.key);
        }
    }
}

/// The plural and the rest of a key under [`PREFIX`].
fn split(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(PREFIX)?.split_once('/')
}

fn rules_of(v: &Value) -> Vec<PolicyRule> {
    v.get("rules").and_then(Value::as_array).map(|a| a.iter().map(PolicyRule::from_json).collect()).unwrap_or_default()
}

/// Build the snapshot of `raw` and publish it; then aggregate.
async fn publish(store: &DynStore, raw: &BTreeMap<String, Raw>, policy: &RwLock<Arc<Policy>>) {
    let mut p = Policy::default();
    for (key, r) in raw {
        let Some((plural, rest)) = split(key) else { continue };
        match plural {
            "clusterroles" => {
                p.cluster_roles.insert(rest.to_string(), Arc::new(rules_of(&r.value)));
            }
            "roles" => {
                if let Some((ns, name)) = rest.split_once('/') {
                    p.roles.insert((ns.to_string(), name.to_string()), Arc::new(rules_of(&r.value)));
                }
            }
            "clusterrolebindings" => p.cluster_role_bindings.push(Binding::from_json(&r.value)),
            "rolebindings" => {
                let b = Binding::from_json(&r.value);
                p.role_bindings.entry(b.namespace.clone()).or_default().push(b);
            }
            _ => {}
        }
    }
    *policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p.indexed());
    aggregate(store, raw).await;
}

/// The rules an aggregated ClusterRole should hold, from the ClusterRoles `raw` has (upstream:
/// the selected roles sorted by name, each of their rules added unless already present).
pub(crate) fn aggregated_rules(name: &str, role: &Value, roles: &BTreeMap<&str, &Value>) -> Option<Vec<PolicyRule>> {
    let sels = role.pointer("/aggregationRule/clusterRoleSelectors")?.as_array()?;
    let sels: Vec<LabelSelector> = sels.iter().filter_map(|s| LabelSelector::from_json(s).ok()).collect();
    let mut out: Vec<PolicyRule> = Vec::new();
    for (other, v) in roles {
        if *other == name {
            continue;
        }
        let labels = labels_of(v);
        if !sels.iter().any(|s| s.matches(&labels)) {
            continue;
        }
        for r in rules_of(v) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    Some(out)
}

async fn aggregate(store: &DynStore, raw: &BTreeMap<String, Raw>) {
    let prefix = format!("{PREFIX}clusterroles/");
    let roles: BTreeMap<&str, &Value> =
        raw.iter().filter_map(|(k, r)| k.strip_prefix(prefix.as_str()).map(|n| (n, &r.value))).collect();
    let mut writes: HashMap<String, (Value, i64)> = HashMap::new();
    for (name, v) in &roles {
        let Some(want) = aggregated_rules(name, v, &roles) else { continue };
        if rules_of(v) == want {
            continue;
        }
        let mut updated = (*v).clone();
        updated["rules"] = Value::Array(want.iter().map(PolicyRule::to_json).collect());
        let key = format!("{prefix}{name}");
        let rev = raw.get(&key).map_or(0, |r| r.revision);
        writes.insert(key, (updated, rev));
    }
    for (key, (value, rev)) in writes {
        let op = Op::Update {
            key: key.clone(),
            value: serde_json::to_vec(&value).unwrap_or_default().into(),
            expect: Some(rev),
        };
        if let Err(e) = store.write(op).await {
            // A conflict means a newer version is on its way as an event; aggregation runs again then.
            tracing::debug!(%key, error = %e, "aggregating clusterrole");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aggregation_unions_the_selected_roles_rules_once_in_name_order() {
        let admin = json!({"metadata": {"name": "admin"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "admin"}}]}});
        let a = json!({"metadata": {"name": "a", "labels": {"agg": "admin"}}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        let b = json!({"metadata": {"name": "b", "labels": {"agg": "admin"}}, "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        ]});
        let other =
            json!({"metadata": {"name": "c"}, "rules": [{"apiGroups": ["x"], "resources": ["y"], "verbs": ["*"]}]});
        let roles: BTreeMap<&str, &Value> =
            [("admin", &admin), ("b", &b), ("a", &a), ("c", &other)].into_iter().collect();
        let got = aggregated_rules("admin", &admin, &roles).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].resources, ["pods"]);
        assert_eq!(got[1].resources, ["deployments"]);
        assert!(aggregated_rules("a", &a, &roles).is_none());
    }
}
