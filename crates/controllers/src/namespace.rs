//! The namespace controller: deletes every object of a namespace being deleted, reports how far it
//! got in the namespace's status conditions (upstream's five deletion conditions, so `kubectl
//! describe ns` can say why one is stuck), then removes the `kubernetes` finalizer through
//! `namespaces/{name}/finalize`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::{Api, Client};

use crate::gc::KINDS;
use crate::informer::{Cache, Informer};
use crate::queue::WorkQueue;

pub struct NamespaceController {
    client: Client,
    namespaces: Arc<Cache<Namespace>>,
    pub queue: Arc<WorkQueue>,
}

/// What one deletion pass found: per `<resource>.<group>`, how many objects remain, and per
/// finalizer, how many remaining objects carry it; the errors of deletes and lists that failed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Remaining {
    pub by_resource: BTreeMap<String, usize>,
    pub by_finalizer: BTreeMap<String, usize>,
    pub errors: Vec<String>,
}

/// The condition types the namespace deleter maintains, in upstream's order, with the reason and
/// message of their "all is well" (False) state.
const CONDITIONS: [(&str, &str, &str); 5] = [
    ("NamespaceDeletionDiscoveryFailure", "ResourcesDiscovered", "All resources successfully discovered"),
    ("NamespaceDeletionGroupVersionParsingFailure", "ParsedGroupVersions", "All legacy kube types successfully parsed"),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    ("NamespaceContentRemaining", "ContentRemoved", "All content successfully removed"),
    ("NamespaceFinalizersRemaining", "ContentHasNoFinalizers", "All content-preserving finalizers finished"),
];

/// The (status, reason, message) each condition type should now have.
fn wanted(r: &Remaining) -> Vec<(&'static str, &'static str, String, String)> {
    CONDITIONS
        .iter()
        .map(|(ty, ok_reason, ok_msg)| {
            let failing = match *ty {
                "NamespaceDeletionContentFailure" if !r.errors.is_empty() => {
                    let mut msgs = r.errors.clone();
                    msgs.sort();
                    Some((
                        "ContentDeletionFailed",
                        format!("Failed to delete all resource types, {} remaining: {}", msgs.len(), msgs.join(", ")),
                    ))
                }
                "NamespaceContentRemaining" if r.by_resource.values().any(|n| *n > 0) => {
                    let parts: Vec<String> = r
                        .by_resource
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(res, n)| format!("{res} has {n} resource instances"))
                        .collect();
                    Some(("SomeResourcesRemain", format!("Some resources are remaining: {}", parts.join(", "))))
                }
                "NamespaceFinalizersRemaining" if r.by_finalizer.values().any(|n| *n > 0) => {
                    let parts: Vec<String> = r
                        .by_finalizer
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(f, n)| format!("{f} in {n} resource instances"))
                        .collect();
                    Some((
                        "SomeFinalizersRemain",
                        format!("Some content in the namespace has finalizers remaining: {}", parts.join(", ")),
                    ))
                }
                _ => None,
            };
            match failing {
                Some((reason, msg)) => (*ty, "True", reason.to_string(), msg),
                None => (*ty, "False", ok_reason.to_string(), ok_msg.to_string()),
            }
        })
        .collect()
}

/// Brings `conditions` to what `r` says, as upstream does: a missing type is added, a changed one
/// is rewritten (its transition time moves only when its status flips). Returns whether anything
/// changed; conditions of other types are kept as they are.
pub fn update_conditions(conditions: &mut Vec<NamespaceCondition>, r: &Remaining, now: Time) -> bool {
    let mut changed = false;
    for (ty, status, reason, message) in wanted(r) {
        match conditions.iter_mut().find(|c| c.type_ == ty) {
            None => {
                conditions.push(NamespaceCondition {
                    type_: ty.to_string(),
                    status: status.to_string(),
                    reason: Some(reason),
                    message: Some(message),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
            Some(c) => {
                if c.status != status || c.reason.as_deref() != Some(&reason) || c.message.as_deref() != Some(&message)
                {
                    if c.status != status {
                        c.last_transition_time = Some(now.clone());
                    }
                    c.status = status.to_string();
                    c.reason = Some(reason);
                    c.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed
}

impl NamespaceController {
    pub fn new(client: Client, namespaces: Arc<Cache<Namespace>>) -> Arc<Self> {
        Arc::new(NamespaceController { client, namespaces, queue: WorkQueue::new() })
    }

    pub fn attach(self: &Arc<Self>, ns: &Informer<Namespace>) {
        let me = self.clone();
        ns.add_handler(move |_old, new| {
            if let Some(n) = new {
                if n.metadata.deletion_timestamp.is_some() {
                    me.queue.add(n.metadata.name.clone().unwrap_or_default());
                }
            }
        });
    }

    /// One pass: delete what is left (in the background), count what remains.
    async fn delete_content(&self, name: &str) -> Result<Remaining, crate::Error> {
        let mut r = Remaining::default();
        for kind in KINDS.iter().filter(|k| k.ns_content) {
            let api = kind.api(&self.client, name);
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) if crate::util::is_not_found(&e) => continue,
                Err(e) => {
                    r.errors.push(format!("failed to list {}.{}: {e}", kind.plural, kind.group));
                    continue;
                }
            };
            let key = format!("{}.{}", kind.plural, kind.group);
            for item in list.items {
                *r.by_resource.entry(key.clone()).or_default() += 1;
                for f in item.metadata.finalizers.iter().flatten() {
                    *r.by_finalizer.entry(f.clone()).or_default() += 1;
                }
                if item.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
                match api.delete(item.metadata.name.as_deref().unwrap_or_default(), &dp).await {
                    Ok(_) => {}
                    Err(e) if crate::util::is_not_found(&e) => {}
                    Err(e) => r.errors.push(format!("failed to delete {key}: {e}")),
                }
            }
        }
        Ok(r)
    }

    /// Writes the deletion conditions when they changed; a namespace that is gone is no error.
    async fn report(&self, ns: &Namespace, r: &Remaining) -> Result<(), crate::Error> {
        let mut u = ns.clone();
        let status = u.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        if !update_conditions(conds, r, Time(jiff::Timestamp::now())) {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        match api.replace_status(name, &PostParams::default(), &u).await {
            Ok(_) => Ok(()),
            Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn sync(self: Arc<Self>, name: String) -> Result<(), crate::Error> {
        let Some(ns) = self.namespaces.get("", &name) else {
            return Ok(());
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(());
        }
        let r = self.delete_content(&name).await?;
        self.report(&ns, &r).await?;
        if !r.errors.is_empty() || r.by_resource.values().any(|n| *n > 0) {
            self.queue.add_after(name, Duration::from_millis(500));
            return Ok(());
        }
        let has_finalizer =
            ns.spec.as_ref().and_then(|s| s.finalizers.as_ref()).is_some_and(|f| f.iter().any(|f| f == "kubernetes"));
        if !has_finalizer {
            return Ok(());
        }
        let mut u = (*ns).clone();
        if let Some(f) = u.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
            f.retain(|f| f != "kubernetes");
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.replace_subresource("finalize", &name, &PostParams::default(), &u).await {
            Ok(_) => Ok(()),
            // The status write above moved the resourceVersion past the cached one: retry.
            Err(e) if crate::util::is_conflict(&e) => {
                self.queue.add_after(name, Duration::from_millis(100));
                Ok(())
            }
            Err(e) if crate::util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn conditions_say_what_remains_and_flip_back_when_it_is_gone() {
        let mut c = Vec::new();
        let mut r = Remaining::default();
        r.by_resource.insert("pods.".into(), 2);
        r.by_resource.insert("configmaps.".into(), 0);
        r.by_finalizer.insert("example.com/hold".into(), 1);
        assert!(update_conditions(&mut c, &r, t(10)));
        let get = |c: &[NamespaceCondition], ty: &str| c.iter().find(|x| x.type_ == ty).cloned().unwrap();
        assert_eq!(c.len(), 5);
        let rem = get(&c, "NamespaceContentRemaining");
        assert_eq!(rem.status, "True");
        assert_eq!(rem.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(rem.message.as_deref(), Some("Some resources are remaining: pods. has 2 resource instances"));
        let fin = get(&c, "NamespaceFinalizersRemaining");
        assert_eq!(
            fin.message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
        );
        let ok = get(&c, "NamespaceDeletionDiscoveryFailure");
        assert_eq!((ok.status.as_str(), ok.reason.as_deref()), ("False", Some("ResourcesDiscovered")));
        // The same pass again changes nothing.
        assert!(!update_conditions(&mut c, &r, t(20)));
        // All gone: the two flip to False with new transition times; the others keep theirs.
        assert!(update_conditions(&mut c, &Remaining::default(), t(30)));
        let rem = get(&c, "NamespaceContentRemaining");
        assert_eq!((rem.status.as_str(), rem.reason.as_deref()), ("False", Some("ContentRemoved")));
        assert_eq!(rem.message.as_deref(), Some("All content successfully removed"));
        assert_eq!(rem.last_transition_time, Some(t(30)));
        assert_eq!(get(&c, "NamespaceDeletionDiscoveryFailure").last_transition_time, Some(t(10)));
    }

    #[test]
    fn delete_errors_are_sorted_and_counted() {
        let mut c = Vec::new();
        let r = Remaining { errors: vec!["b".into(), "a".into()], ..Default::default() };
        update_conditions(&mut c, &r, t(1));
        let f = c.iter().find(|x| x.type_ == "NamespaceDeletionContentFailure").unwrap();
        assert_eq!(f.status, "True");
        assert_eq!(f.message.as_deref(), Some("Failed to delete all resource types, 2 remaining: a, b"));
    }
}
