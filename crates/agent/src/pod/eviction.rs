//! Local ephemeral-storage eviction, as the kubelet's eviction manager does it for one pod: every
//! [`CHECK_EVERY`], a disk `emptyDir` over its `sizeLimit`, the pod over the sum of its
//! containers' `ephemeral-storage` limits, or a container over its own limit evicts the pod
//! (in that order, with upstream's messages), its containers killed at once and not restarted.
//!
//! Usage is what this node can measure: a disk emptyDir's allocated blocks; a container's
//! writable root (its view's tmpfs, from `statfs` of `/proc/<pid>/root`) plus its log files.

use std::path::{Path, PathBuf};

use super::*;

/// How often a pod with storage limits is measured (the kubelet's housekeeping is 10 s).
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(2);

const RESOURCE: &str = "ephemeral-storage";

/// Whether `pod` has a limit this monitor enforces.
pub(super) fn limited(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let vols = spec.volumes.as_deref().unwrap_or(&[]);
    vols.iter().any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()))
        || spec.containers.iter().any(|c| limit_of(c).is_some())
}

fn limit_of(c: &k8s_openapi::api::core::v1::Container) -> Option<&str> {
    c.resources.as_ref()?.limits.as_ref()?.get(RESOURCE).map(|q| q.0.as_str())
}

fn bytes(q: &str) -> Option<u64> {
    crate::volume::size_bytes(q).ok()
}

/// Measure the pod until it is evicted or stops.
pub(super) fn spawn_monitor(p: &Arc<PodInner>) {
    let p = p.clone();
    tokio::spawn(async move {
        while !p.evicted() && p.sleep_or_stop(CHECK_EVERY).await {
            let (pod, running) = p.with(|st| {
                let running: Vec<(String, Option<i32>)> =
                    st.ctrs.iter().filter(|c| !c.init).map(|c| (c.spec.name.clone(), c.pid)).collect();
                (st.pod.clone(), running)
            });
            let (dir, logs) = (p.dir.clone(), p.rt.log_dir(&p.namespace, &p.name, &p.uid));
            let verdict = tokio::task::spawn_blocking(move || check(&pod, &dir, &logs, &running)).await;
            if let Ok(Some(msg)) = verdict {
                p.evict(msg);
            }
        }
    });
}

/// The eviction message for `pod`, if one of its limits is exceeded.
fn check(pod: &Pod, pod_dir: &Path, log_dir: &Path, running: &[(String, Option<i32>)]) -> Option<String> {
    if let Some(msg) = crate::volume::empty_dir_over_limit(pod, pod_dir) {
        return Some(msg);
    }
    let spec = pod.spec.as_ref()?;
    let used: Vec<(&k8s_openapi::api::core::v1::Container, u64)> = spec
        .containers
        .iter()
        .map(|c| {
            let pid = running.iter().find(|(n, _)| *n == c.name).and_then(|(_, pid)| *pid);
            (c, container_usage(pid, &log_dir.join(&c.name)))
        })
        .collect();
    let limits: Vec<u64> = spec.containers.iter().filter_map(limit_of).filter_map(bytes).collect();
    if !limits.is_empty() {
        let vols = spec.volumes.as_deref().unwrap_or(&[]);
        let disk_dirs: u64 = vols
            .iter()
            .filter(|v| v.empty_dir.as_ref().is_some_and(|e| e.medium.as_deref().unwrap_or("").is_empty()))
            .map(|v| crate::volume::usage(&crate::volume::dir(pod_dir, &v.name)))
            .sum();
        let total: u64 = used.iter().map(|(_, u)| u).sum::<u64>() + disk_dirs;
        let limit: u64 = limits.iter().sum();
        if total > limit {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                sum_quantity(spec)
            ));
        }
    }
    for (c, u) in used {
        if let Some(l) = limit_of(c) {
            if bytes(l).is_some_and(|max| u > max) {
                return Some(format!("Container {} exceeded its local ephemeral storage limit {l:?}. ", c.name));
            }
        }
    }
    None
}

/// The sum of the containers' limits as a quantity string (a single limit as written).
fn sum_quantity(spec: &k8s_openapi::api::core::v1::PodSpec) -> String {
    let ls: Vec<&str> = spec.containers.iter().filter_map(limit_of).collect();
    match ls.as_slice() {
        [one] => one.to_string(),
        _ => {
            let sum: u64 = ls.iter().filter_map(|q| bytes(q)).sum();
            let binary = ls.iter().all(|q| !q.ends_with(|c: char| "kMGTPE".contains(c)));
            canonical(sum, binary)
        }
    }
}

/// A byte count as upstream prints a quantity: the largest exact binary (or decimal) suffix.
fn canonical(n: u64, binary: bool) -> String {
    let (base, suffixes): (u64, [&str; 6]) =
        if binary { (1024, ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]) } else { (1000, ["k", "M", "G", "T", "P", "E"]) };
    let (mut v, mut unit) = (n, "");
    for s in suffixes {
        if v == 0 || v % base != 0 {
            break;
        }
        v /= base;
        unit = s;
    }
    format!("{v}{unit}")
}

/// A running container's writable root (its view's tmpfs) plus its log files.
fn container_usage(pid: Option<i32>, log_dir: &Path) -> u64 {
    let root = pid
        .and_then(|pid| nix::sys::statfs::statfs(&PathBuf::from(format!("/proc/{pid}/root"))).ok())
        .map(|s| (s.blocks() - s.blocks_free()) * s.block_size() as u64)
        .unwrap_or(0);
    root + crate::volume::usage(log_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn sums_print_as_upstream_quantities() {
        assert_eq!(canonical(4 << 20, true), "4Mi");
        assert_eq!(canonical(3 << 30, true), "3Gi");
        assert_eq!(canonical(1500, true), "1500");
        assert_eq!(canonical(20_000_000, false), "20M");
        let spec = pod(serde_json::json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"ephemeral-storage": "1Mi"}}},
            {"name": "b", "resources": {"limits": {"ephemeral-storage": "3Mi"}}},
            {"name": "c"}]}}))
        .spec
        .unwrap();
        assert_eq!(sum_quantity(&spec), "4Mi");
    }

    #[test]
    fn a_disk_empty_dir_over_its_limit_is_found_first() {
        let dir = std::env::temp_dir().join(format!("yard-evict-{}", std::process::id()));
        let vol = crate::volume::dir(&dir, "scratch");
        std::fs::create_dir_all(&vol).unwrap();
        let p = pod(serde_json::json!({"spec": {
            "containers": [{"name": "a", "resources": {"limits": {"ephemeral-storage": "64Ki"}}}],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "64Ki"}}]}}));
        let logs = dir.join("logs");
        assert!(limited(&p));
        assert_eq!(check(&p, &dir, &logs, &[]), None);
        std::fs::write(vol.join("f"), vec![1u8; 200 << 10]).unwrap();
        let got = check(&p, &dir, &logs, &[]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.as_deref(), Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"64Ki\". "));
        assert!(!limited(&pod(serde_json::json!({"spec": {"containers": [{"name": "a"}]}}))));
    }
}
