//! Request parsing the way upstream kube-apiserver does it, before any handler runs: the URL
//! path normalised to a resource target (trailing slashes, legacy `/watch/` paths) and the query
//! parameters converted and validated as upstream's parameter codec and `ListOptions` /
//! `CreateOptions` / `UpdateOptions` / `PatchOptions` / `DeleteOptions` validation do.

pub mod params;
pub mod target;
