//! Impersonation (upstream's `endpoints/filters/impersonation.go`): the `Impersonate-User`,
//! `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-<key>` headers make a request
//! act as another user, each asked of the authorizer first as the `impersonate` verb on `users`,
//! `groups` or `serviceaccounts` (API group "") or `uids` / `userextras/<key>`
//! (authentication.k8s.io). A denial is upstream's 403 for that check.

use http::HeaderMap;

use super::{forbidden, Attributes, Authorizer, Decision, UserInfo};
use crate::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// One thing asked to be impersonated, as the attributes of its `impersonate` check.
struct Request {
    api_group: &'static str,
    resource: &'static str,
    subresource: String,
    namespace: String,
    name: String,
}

fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
}

fn unescape(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The user `requestor` acts as, or `requestor` itself without impersonation headers.
pub fn impersonate(authz: &dyn Authorizer, requestor: UserInfo, h: &HeaderMap) -> Result<UserInfo, ApiError> {
    let users = values(h, USER);
    let groups_asked = values(h, GROUP);
    let uids = values(h, UID);
    let extras: Vec<(String, &str)> = h
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix(EXTRA)?;
            Some((unescape(&key.to_ascii_lowercase()), v.to_str().ok()?))
        })
        .collect();
    if users.is_empty() && groups_asked.is_empty() && uids.is_empty() && extras.is_empty() {
        return Ok(requestor);
    }
    let username_asked = users.first().copied().unwrap_or("");
    if username_asked.is_empty() {
        return Err(ApiError::internal(format!(
            "requested impersonation of groups {groups_asked:?}, uid {uids:?} or extra {extras:?} without impersonating a user"
        )));
    }
    let mut reqs = Vec::new();
    let mut user = UserInfo::default();
    let sa = username_asked
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty());
    match sa {
        Some((ns, n)) => {
            reqs.push(Request {
                api_group: "",
                resource: "serviceaccounts",
                subresource: String::new(),
                namespace: ns.into(),
                name: n.into(),
            });
            if groups_asked.is_empty() {
                user.groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")];
            }
        }
        None => reqs.push(Request {
            api_group: "",
            resource: "users",
            subresource: String::new(),
            namespace: String::new(),
            name: username_asked.into(),
        }),
    }
    user.username = username_asked.into();
    for g in &groups_asked {
        reqs.push(Request {
            api_group: "",
            resource: "groups",
            subresource: String::new(),
            namespace: String::new(),
            name: (*g).into(),
        });
        user.groups.push((*g).into());
    }
    for (k, v) in &extras {
        reqs.push(Request {
            api_group: "authentication.k8s.io",
            resource: "userextras",
            subresource: k.clone(),
            namespace: String::new(),
            name: (*v).into(),
        });
        user.extra.entry(k.clone()).or_default().push((*v).into());
    }
    if let Some(uid) = uids.first() {
        reqs.push(Request {
            api_group: "authentication.k8s.io",
            resource: "uids",
            subresource: String::new(),
            namespace: String::new(),
            name: (*uid).into(),
        });
        user.uid = (*uid).into();
    }
    for r in reqs {
        let a = Attributes {
            user: requestor.clone(),
            verb: "impersonate".into(),
            resource_request: true,
            api_group: r.api_group.into(),
            api_version: "v1".into(),
            resource: r.resource.into(),
            subresource: r.subresource,
            namespace: r.namespace,
            name: r.name,
            path: String::new(),
        };
        let d = authz.authorize(&a);
        if d.decision != Decision::Allow {
            return Err(forbidden(&a, &d.reason));
        }
    }
    let (authn, unauthn) = ("system:authenticated", "system:unauthenticated");
    if user.username != "system:anonymous" {
        if !user.groups.iter().any(|g| g == authn || g == unauthn) {
            user.groups.push(authn.into());
        }
    } else if !user.groups.iter().any(|g| g == unauthn) {
        user.groups.push(unauthn.into());
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::{Binding, Policy, PolicyRule, RbacAuthorizer};
    use serde_json::json;
    use std::sync::Arc;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn admins_impersonate_and_others_get_upstreams_403() {
        let mut p = Policy::default();
        p.cluster_roles.insert(
            "imp".into(),
            Arc::new(vec![PolicyRule::from_json(
                &json!({"apiGroups": [""], "resources": ["users"], "resourceNames": ["bob"], "verbs": ["impersonate"]}),
            )]),
        );
        p.cluster_role_bindings.push(Binding::from_json(&json!({"metadata": {"name": "imp"},
            "roleRef": {"kind": "ClusterRole", "name": "imp"}, "subjects": [{"kind": "User", "name": "alice"}]})));
        let a = RbacAuthorizer::fixed(p);
        let admin = UserInfo::admin();
        let u = impersonate(&a, admin.clone(), &headers(&[("Impersonate-User", "bob"), ("Impersonate-Group", "g")]))
            .unwrap();
        assert_eq!(u.username, "bob");
        assert_eq!(u.groups, ["g", "system:authenticated"]);
        let sa =
            impersonate(&a, admin.clone(), &headers(&[("Impersonate-User", "system:serviceaccount:ns:sa")])).unwrap();
        assert_eq!(sa.groups, ["system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"]);
        let extra =
            impersonate(&a, admin, &headers(&[("Impersonate-User", "x"), ("Impersonate-Extra-Scopes", "a")])).unwrap();
        assert_eq!(extra.extra["scopes"], ["a"]);

        let alice = UserInfo { username: "alice".into(), ..Default::default() };
        assert_eq!(impersonate(&a, alice.clone(), &headers(&[("Impersonate-User", "bob")])).unwrap().username, "bob");
        let e = impersonate(&a, alice.clone(), &headers(&[("Impersonate-User", "carol")])).unwrap_err();
        assert_eq!(
            e.message,
            r#"users "carol" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let e = impersonate(
            &a,
            alice.clone(),
            &headers(&[("Impersonate-User", "bob"), ("Impersonate-Group", "system:masters")]),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            r#"groups "system:masters" is forbidden: User "alice" cannot impersonate resource "groups" in API group "" at the cluster scope"#
        );
        let e = impersonate(&a, alice, &headers(&[("Impersonate-User", "system:serviceaccount:ns:sa")])).unwrap_err();
        assert_eq!(
            e.message,
            r#"serviceaccounts "sa" is forbidden: User "alice" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "ns""#
        );
    }
}
