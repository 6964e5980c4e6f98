//! A container's process identity from `securityContext` (the container's over the pod's):
//! `runAsUser`, `runAsGroup`, `supplementalGroups` (with `fsGroup` added, as the kubelet does),
//! the `runAsNonRoot` check with the kubelet's messages, and `allowPrivilegeEscalation: false` as
//! the kernel's no_new_privs; capabilities, `privileged`, `readOnlyRootFilesystem` and
//! `seccompProfile` (carried out by [`crate::sandbox`]). Images here are host programs that run as root unless told otherwise,
//! so the image's user is uid 0.

use k8s_openapi::api::core::v1::{Container, Pod};

/// Who the container's processes (and execs into it) run as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, in order, without duplicates.
    pub groups: Vec<u32>,
    /// `allowPrivilegeEscalation: false`: PR_SET_NO_NEW_PRIVS before exec.
    pub no_new_privs: bool,
    /// Capabilities (`capabilities`, `privileged`).
    pub caps: crate::sandbox::caps::Caps,
    /// `privileged: true`: every capability, /proc and /sys unmasked and /sys writable.
    pub privileged: bool,
    /// `readOnlyRootFilesystem: true`: the view's root (and so /tmp) is read-only; volumes are not.
    pub read_only_root: bool,
    /// `seccompProfile` (the container's over the pod's).
    pub seccomp: crate::sandbox::seccomp::Profile,
}

/// The uid an image runs as when the pod does not say: the host programs Yard runs are root's.
const IMAGE_UID: u32 = 0;

fn id(v: Option<i64>, what: &str) -> Result<Option<u32>, String> {
    match v {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| format!("{what} {n} is out of range")),
    }
}

/// The identity for container `c` of `pod`, or the kubelet's CreateContainerConfigError message.
pub fn identity(pod: &Pod, c: &Container) -> Result<Identity, String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let run_as_user = id(csc.and_then(|s| s.run_as_user).or(psc.and_then(|s| s.run_as_user)), "runAsUser")?;
    let run_as_group = id(csc.and_then(|s| s.run_as_group).or(psc.and_then(|s| s.run_as_group)), "runAsGroup")?;
    let non_root = csc.and_then(|s| s.run_as_non_root).or(psc.and_then(|s| s.run_as_non_root)).unwrap_or(false);
    let pod_key = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    );
    if non_root {
        match run_as_user {
            Some(0) => {
                return Err(format!(
                    "container's runAsUser breaks non-root policy (pod: {pod_key:?}, container: {})",
                    c.name
                ))
            }
            None if IMAGE_UID == 0 => {
                return Err(format!(
                    "container has runAsNonRoot and image will run as root (pod: {pod_key:?}, container: {})",
                    c.name
                ))
            }
            _ => {}
        }
    }
    let mut groups: Vec<u32> = vec![];
    let mut add = |g: u32| {
        if !groups.contains(&g) {
            groups.push(g);
        }
    };
    if let Some(ps) = psc {
        if let Some(fs) = id(ps.fs_group, "fsGroup")? {
            add(fs);
        }
        for g in ps.supplemental_groups.iter().flatten() {
            add(id(Some(*g), "supplementalGroups")?.unwrap_or(0));
        }
    }
    Ok(Identity {
        uid: run_as_user.unwrap_or(IMAGE_UID),
        gid: run_as_group.unwrap_or(0),
        groups,
        no_new_privs: csc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        caps: crate::sandbox::caps::Caps::for_container(c)?,
        privileged: csc.and_then(|s| s.privileged).unwrap_or(false),
        read_only_root: csc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        seccomp: crate::sandbox::seccomp::Profile::for_container(pod, c)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> (Pod, Container) {
        let p: Pod = serde_json::from_value(v).unwrap();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        (p, c)
    }

    #[test]
    fn identities_and_the_non_root_policy() {
        let (p, c) = pod(json!({"metadata": {"name": "x", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(
            identity(&p, &c).unwrap(),
            Identity { caps: crate::sandbox::caps::Caps::for_container(&c).unwrap(), ..Default::default() }
        );
        let (p, c) = pod(json!({"metadata": {"name": "x", "namespace": "ns", "uid": "u1"},
            "spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                                         "supplementalGroups": [4000, 2000]},
                     "containers": [{"name": "c", "securityContext": {"runAsUser": 1001,
                                     "allowPrivilegeEscalation": false}}]}}));
        assert_eq!(
            identity(&p, &c).unwrap(),
            Identity {
                uid: 1001,
                gid: 3000,
                groups: vec![2000, 4000],
                no_new_privs: true,
                caps: crate::sandbox::caps::Caps::for_container(&c).unwrap(),
                ..Default::default()
            }
        );
        let (p, c) = pod(json!({"metadata": {"name": "x", "namespace": "ns", "uid": "u1"},
            "spec": {"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}}));
        assert_eq!(
            identity(&p, &c).unwrap_err(),
            "container has runAsNonRoot and image will run as root (pod: \"x_ns(u1)\", container: c)"
        );
        let (p, c) = pod(json!({"metadata": {"name": "x", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "securityContext": {"runAsNonRoot": true, "runAsUser": 0}}]}}));
        assert_eq!(
            identity(&p, &c).unwrap_err(),
            "container's runAsUser breaks non-root policy (pod: \"x_ns(u1)\", container: c)"
        );
        let (p, c) = pod(json!({"metadata": {"name": "x", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "securityContext": {"runAsNonRoot": true, "runAsUser": 65534}}]}}));
        assert_eq!(identity(&p, &c).unwrap().uid, 65534);
    }
}
