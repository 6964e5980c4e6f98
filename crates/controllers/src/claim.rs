//! Claiming dependents, the one helper every workload controller uses (upstream's
//! ControllerRefManager): a controller keeps the objects it owns that still match its selector,
//! releases the ones that no longer match (drops its ownerReference), and adopts matching orphans
//! (adds a controller ownerReference). Both writes carry the object's resourceVersion, so a
//! concurrent change makes them fail instead of clobbering it.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::util;

/// What to do with one candidate object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Owned by us and still ours (it matches, or we are being deleted and keep what we have).
    Keep,
    /// Owned by us but no longer matching: drop our ownerReference.
    Release,
    /// An orphan that matches while neither side is being deleted: take it.
    Adopt,
    /// Someone else's, or an orphan we must not take.
    Ignore,
}

/// The decision, from the owner's uid and deletion state, the object's metadata and whether the
/// owner's selector matches it.
pub fn decide(
    owner_uid: &str,
    owner_deleting: bool,
    obj: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    matches: bool,
) -> Claim {
    match util::controller_ref(obj) {
        Some(r) if r.uid == owner_uid => {
            if matches || owner_deleting {
                Claim::Keep
            } else {
                Claim::Release
            }
        }
        None if matches && !owner_deleting && obj.deletion_timestamp.is_none() => Claim::Adopt,
        _ => Claim::Ignore,
    }
}

/// Applies `decide` to `obj`: `Some(object)` when it is ours afterwards (kept or adopted), `None`
/// when it is not (released, ignored, or gone meanwhile).
pub async fn claim<K>(
    api: &Api<K>,
    owner_uid: &str,
    owner_deleting: bool,
    owner_ref: impl FnOnce() -> OwnerReference,
    obj: &K,
    matches: bool,
) -> Result<Option<K>, crate::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let meta = obj.meta();
    let refs = |refs: Vec<OwnerReference>| serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}});
    let patch = match decide(owner_uid, owner_deleting, meta, matches) {
        Claim::Keep => return Ok(Some(obj.clone())),
        Claim::Ignore => return Ok(None),
        Claim::Release => {
            refs(meta.owner_references.iter().flatten().filter(|o| o.uid != owner_uid).cloned().collect())
        }
        Claim::Adopt => {
            let mut r = meta.owner_references.clone().unwrap_or_default();
            r.push(owner_ref());
            refs(r)
        }
    };
    let adopting = util::controller_ref(meta).is_none();
    match api.patch(meta.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(written) => Ok(adopting.then_some(written)),
        Err(e) if util::is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn meta(owner: Option<(&str, bool)>, deleting: bool) -> ObjectMeta {
        ObjectMeta {
            owner_references: owner.map(|(uid, controller)| {
                vec![OwnerReference { uid: uid.into(), controller: Some(controller), ..Default::default() }]
            }),
            deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }
    }

    #[test]
    fn keep_release_adopt_ignore() {
        assert_eq!(decide("me", false, &meta(Some(("me", true)), false), true), Claim::Keep);
        assert_eq!(decide("me", false, &meta(Some(("me", true)), false), false), Claim::Release);
        // An owner being deleted keeps what it has and adopts nothing.
        assert_eq!(decide("me", true, &meta(Some(("me", true)), false), false), Claim::Keep);
        assert_eq!(decide("me", true, &meta(None, false), true), Claim::Ignore);
        assert_eq!(decide("me", false, &meta(None, false), true), Claim::Adopt);
        assert_eq!(decide("me", false, &meta(None, false), false), Claim::Ignore);
        // An orphan being deleted is not adopted; another controller's object is not touched.
        assert_eq!(decide("me", false, &meta(None, true), true), Claim::Ignore);
        assert_eq!(decide("me", false, &meta(Some(("other", true)), false), true), Claim::Ignore);
        // A non-controller reference does not make it ours, and leaves it an orphan.
        assert_eq!(decide("me", false, &meta(Some(("me", false)), false), true), Claim::Adopt);
    }
}
