//! Upstream's NamespaceLifecycle rule for the namespaces a cluster cannot do without:
//! `default`, `kube-system` and `kube-public` may never be deleted (by name or as part of a
//! delete-collection), whatever the options, dry-run included.

use crate::registry::Resource;
use crate::status::ApiError;

/// The namespaces upstream's admission plugin calls immortal.
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// Refuse the deletion of `name` if it is an immortal namespace (upstream's 403 and text).
pub fn check_delete(r: &Resource, name: &str) -> Result<(), ApiError> {
    if r.group.is_empty() && r.plural == "namespaces" && IMMORTAL_NAMESPACES.contains(&name) {
        return Err(crate::auth::forbidden_for(r.plural, "", name, "this namespace may not be deleted"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immortal_namespaces_are_refused_with_upstreams_text() {
        let ns = crate::registry::find("", "v1", "namespaces").unwrap();
        let e = check_delete(ns, "kube-system").unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(e.message, r#"namespaces "kube-system" is forbidden: this namespace may not be deleted"#);
        assert!(check_delete(ns, "kube-node-lease").is_ok());
        assert!(check_delete(ns, "team").is_ok());
        let cm = crate::registry::find("", "v1", "configmaps").unwrap();
        assert!(check_delete(cm, "default").is_ok());
    }
}
