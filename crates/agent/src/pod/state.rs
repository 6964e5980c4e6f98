//! A pod's saved state: what the worker writes to `<state dir>/pods/<uid>/state.json` whenever a
//! container starts or stops, and what a restarted agent reads to adopt the pods it still runs
//! ([`Runtime::recover`]) or tear down the ones it no longer should.

use super::*;

/// Persisted per-pod state (for adoption after an agent restart).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedPod {
    /// The Pod object as the worker last had it.
    pub pod: Pod,
    pub sandbox: Option<Sandbox>,
    /// RFC 3339, as `jiff::Timestamp` writes it.
    pub start_time: jiff::Timestamp,
    pub containers: Vec<SavedContainer>,
    #[serde(default)]
    pub init_done: bool,
    #[serde(default)]
    pub pause: Option<(i32, u64)>,
    /// The eviction message, once the node evicted the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<String>,
}

/// A container that was running when the state was saved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedContainer {
    pub name: String,
    pub pid: i32,
    /// The process's start time (`/proc/<pid>/stat`), telling it from a later one with its PID.
    pub proc_start: u64,
    pub started_at: jiff::Timestamp,
    pub restart_count: i32,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

impl PodInner {
    /// Write the pod's state (atomically: beside, then renamed).
    pub(super) fn save(&self) {
        let saved = self.with(|st| SavedPod {
            pod: st.pod.clone(),
            sandbox: st.sandbox.clone(),
            start_time: st.start_time,
            init_done: st.init_done,
            pause: st.pause,
            evicted: st.evicted.clone(),
            containers: st
                .ctrs
                .iter()
                .filter_map(|c| match c.state {
                    CState::Running { started_at } => Some(SavedContainer {
                        name: c.spec.name.clone(),
                        pid: c.pid.unwrap_or(0),
                        proc_start: c.proc_start,
                        started_at,
                        restart_count: c.restart_count,
                        env: c.env.clone(),
                        cwd: c.cwd.clone(),
                    }),
                    _ => None,
                })
                .collect(),
        });
        let _ = std::fs::create_dir_all(&self.dir);
        let tmp = self.dir.join("state.json.tmp");
        if let Ok(b) = serde_json::to_vec(&saved) {
            if std::fs::write(&tmp, b).is_ok() {
                let _ = std::fs::rename(&tmp, self.dir.join("state.json"));
            }
        }
    }
}

impl Runtime {
    /// After a restart: adopt saved pods for which `keep(uid)` returns the current Pod object,
    /// tear down the others and any namespace with our prefix that no saved pod owns.
    pub fn recover(self: &Arc<Self>, keep: impl Fn(&str) -> Option<Pod>) -> Vec<PodHandle> {
        let mut adopted = vec![];
        let mut owned_ns = vec![];
        let dir = self.cfg.state_dir.join("pods");
        for ent in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let uid = ent.file_name().to_string_lossy().into_owned();
            let saved: Option<SavedPod> =
                std::fs::read(ent.path().join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
            match (keep(&uid), saved) {
                (Some(pod), Some(saved)) if pod.metadata.deletion_timestamp.is_none() => {
                    if let Some(sb) = &saved.sandbox {
                        owned_ns.push(sb.netns.clone());
                    }
                    match self.start_pod(pod, Some(saved)) {
                        Ok(h) => adopted.push(h),
                        Err(e) => tracing::warn!("adopt pod {uid}: {e}"),
                    }
                }
                (_, saved) => {
                    let (ns, name) = saved
                        .as_ref()
                        .map(|s| &s.pod.metadata)
                        .map(|m| (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default()))
                        .unwrap_or_default();
                    if let Some((pid, start)) = saved.as_ref().and_then(|s| s.pause) {
                        if proc::alive(pid, start) {
                            proc::signal(pid, nix::sys::signal::Signal::SIGKILL);
                        }
                    }
                    if let Some(sb) = saved.and_then(|s| s.sandbox) {
                        let _ = self.net.delete_sandbox(&sb.netns, &sb.veth, &uid);
                    } else {
                        let _ = self.net.delete_sandbox(&self.netns_name(&uid), &crate::net::veth_name(&uid), &uid);
                    }
                    let _ = crate::cgroup::remove_pod(&uid);
                    crate::volume::teardown(&ent.path());
                    crate::sandbox::podns::remove(&ent.path());
                    let _ = std::fs::remove_dir_all(ent.path());
                    if !ns.is_empty() {
                        let _ = std::fs::remove_dir_all(self.log_dir(&ns, &name, &uid));
                    }
                }
            }
        }
        // Namespaces with our prefix that nobody owns.
        let prefix = format!("{}-", self.cfg.netns_prefix);
        for ent in std::fs::read_dir(yard_netns::NETNS_RUN_DIR).into_iter().flatten().flatten() {
            let n = ent.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.len() == prefix.len() + 8 && !owned_ns.contains(&n) {
                crate::net::kill_processes_in_netns(&ent.path());
                let _ = yard_netns::delete(&n);
            }
        }
        // Allocations whose owner is not adopted.
        let owners: Vec<String> = adopted.iter().map(|h| h.inner.uid.clone()).collect();
        for (_, o) in self.net.allocations().unwrap_or_default() {
            if !owners.contains(&o) {
                let _ = self.net.release(&o);
            }
        }
        adopted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file as agents before the typed state wrote it (fields as strings and a JSON pod).
    const OLD: &str = r#"{"pod":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default","uid":"u-1"},"spec":{"containers":[{"name":"c","image":"busybox"}]}},"sandbox":{"netns":"yard-n-u-1","veth":"vethu1","ip":"10.244.1.5","gateway":"10.244.1.1","prefix_len":24},"start_time":"2024-05-01T10:00:00.5Z","containers":[{"name":"c","pid":42,"proc_start":1234,"started_at":"2024-05-01T10:00:01Z","restart_count":2,"env":[["PATH","/bin"]],"cwd":null}],"init_done":true,"pause":[7,99]}"#;

    #[test]
    fn reads_and_writes_the_old_format() {
        let s: SavedPod = serde_json::from_str(OLD).unwrap();
        assert_eq!(s.pod.metadata.name.as_deref(), Some("web"));
        assert_eq!(s.start_time, "2024-05-01T10:00:00.5Z".parse::<jiff::Timestamp>().unwrap());
        assert_eq!(s.containers[0].started_at.to_string(), "2024-05-01T10:00:01Z");
        assert_eq!((s.containers[0].pid, s.containers[0].restart_count), (42, 2));
        assert_eq!(s.pause, Some((7, 99)));
        assert!(s.init_done);
        let sb = s.sandbox.as_ref().unwrap();
        assert_eq!(sb.ip.to_string(), "10.244.1.5");
        // Written back, it is the same document (an older agent reads it too).
        let old: serde_json::Value = serde_json::from_str(OLD).unwrap();
        let mut new = serde_json::to_value(&s).unwrap();
        // Fields the old file did not have are the sandbox's defaults.
        new["sandbox"].as_object_mut().unwrap().retain(|k, _| old["sandbox"].get(k).is_some());
        assert_eq!(new, old);
        // Fields added later default.
        let minimal = r#"{"pod":{},"sandbox":null,"start_time":"2024-05-01T10:00:00Z","containers":[]}"#;
        let m: SavedPod = serde_json::from_str(minimal).unwrap();
        assert!(!m.init_done && m.pause.is_none());
    }
}
