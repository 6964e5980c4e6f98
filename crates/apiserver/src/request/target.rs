//! The URL path of a request, normalised as upstream's router sees it: one or more trailing
//! slashes after `/version`, `/api`, `/apis` and every path under them are ignored (go-restful
//! trims them before matching, and the `/apis` discovery handler is registered with and without
//! the slash), and the deprecated `/api/v1/watch/...` and `/apis/G/V/watch/...` forms are
//! rewritten to the resource path with a forced watch.

/// A request path after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The path to route, without trailing slashes and without a legacy `watch` segment.
    pub path: String,
    /// The path was a legacy watch path: serve it as `?watch=true`.
    pub legacy_watch: bool,
}

/// Normalise `path` (see the module docs). Paths outside the API tree are returned unchanged.
pub fn normalize(path: &str) -> Normalized {
    let api_tree = path == "/api"
        || path == "/apis"
        || path == "/version"
        || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path.starts_with("/version/");
    if !api_tree {
        return Normalized { path: path.to_string(), legacy_watch: false };
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if trimmed.starts_with("/version/") {
        // `/version/x` is not a route upstream; keep it (it 404s).
        return Normalized { path: trimmed.to_string(), legacy_watch: false };
    }
    let segs: Vec<&str> = trimmed.split('/').collect();
    // ["", "api", v, "watch", ...] or ["", "apis", g, v, "watch", ...]
    let watch_at = match segs.get(1) {
        Some(&"api") => 3,
        Some(&"apis") => 4,
        _ => return Normalized { path: trimmed.to_string(), legacy_watch: false },
    };
    if segs.len() > watch_at + 1 && segs[watch_at] == "watch" {
        let mut rest = segs.clone();
        rest.remove(watch_at);
        return Normalized { path: rest.join("/"), legacy_watch: true };
    }
    Normalized { path: trimmed.to_string(), legacy_watch: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_are_ignored_under_the_api_tree() {
        for (p, want) in [
            ("/version/", "/version"),
            ("/api/", "/api"),
            ("/apis/", "/apis"),
            ("/api/v1/", "/api/v1"),
            ("/apis/apps/v1//", "/apis/apps/v1"),
            ("/api/v1/namespaces/default/pods/", "/api/v1/namespaces/default/pods"),
            ("/healthz/", "/healthz/"),
            ("/openapi/v2", "/openapi/v2"),
        ] {
            assert_eq!(normalize(p), Normalized { path: want.into(), legacy_watch: false }, "{p}");
        }
    }

    #[test]
    fn legacy_watch_paths_become_watches() {
        let n = normalize("/api/v1/watch/namespaces/default/pods/");
        assert_eq!(n, Normalized { path: "/api/v1/namespaces/default/pods".into(), legacy_watch: true });
        let n = normalize("/apis/apps/v1/watch/deployments");
        assert_eq!(n, Normalized { path: "/apis/apps/v1/deployments".into(), legacy_watch: true });
        // A resource list path named "watch" alone is not rewritten.
        assert!(!normalize("/api/v1/watch").legacy_watch);
    }
}
