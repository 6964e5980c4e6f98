//! Images: what a container runs. [`ImageService`] resolves a container's image (with its
//! command and args) into the [`Program`] to start and the description its `Pulled` event gives.
//! The one implementation today is the [`ImageTable`] of [`program_table`]: no container engine,
//! host programs and Yard's built-ins; an implementation that pulls OCI images would be another.

pub mod program_table;

use std::path::{Path, PathBuf};

pub use program_table::{parse_table, Entry, ImageTable};

/// How to start one container.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub argv: Vec<String>,
    /// Directory put first on PATH (the busybox applet links).
    pub path_prefix: Option<PathBuf>,
    /// Host directories the program needs in its filesystem view (nginx's generated prefix).
    pub binds: Vec<crate::sandbox::rootfs::Bind>,
}

/// What [`ImageService::resolve`] is asked about one container.
#[derive(Clone, Copy, Debug)]
pub struct ImageRequest<'a> {
    pub image: &'a str,
    /// The container's `command` and `args`, expanded.
    pub command: &'a [String],
    pub args: &'a [String],
    pub container: &'a str,
    /// A per-pod directory for generated config.
    pub pod_dir: &'a Path,
    /// The container's own PATH (empty when it sets none), where the description looks the
    /// program up.
    pub env_path: &'a str,
}

/// An image resolved for one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedImage {
    pub program: Program,
    /// What runs, for the `Pulled` event ("Yard's built-in pause (no image content)").
    pub description: String,
}

/// Why an image cannot run (the text goes into the `Failed` event and ErrImagePull).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    /// Nothing provides this image (with this command).
    #[error("{0}")]
    Unavailable(String),
}

/// Resolves containers' images; the node's pods share one.
pub trait ImageService: Send + Sync {
    fn resolve(&self, req: &ImageRequest<'_>) -> Result<ResolvedImage, ImageError>;
}

/// `docker.io/library/busybox:1.36` -> `busybox`; registry kept for others; tag/digest dropped.
pub fn repository(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    // A tag is a ':' after the last '/'.
    let repo = match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    };
    let repo = repo.strip_prefix("docker.io/").unwrap_or(repo);
    let repo = repo.strip_prefix("index.docker.io/").unwrap_or(repo);
    repo.strip_prefix("library/").unwrap_or(repo).to_string()
}

/// Look `prog` up in a PATH string.
pub fn find_in_path(prog: &str, path: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    path.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(prog)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        assert_eq!(repository("busybox"), "busybox");
        assert_eq!(repository("docker.io/library/busybox:1.36"), "busybox");
        assert_eq!(repository("registry.k8s.io/serve_hostname:1.1"), "registry.k8s.io/serve_hostname");
        assert_eq!(repository("localhost:5000/x/y:tag"), "localhost:5000/x/y");
        assert_eq!(repository("nginx@sha256:abc"), "nginx");
    }
}
