//! One container's life: resolve its image, build its environment and filesystem view, start it
//! (or adopt the process an earlier agent started), pump its output into the log and the attach
//! hub, run its probes, wait for its exit and restart it as the restart policy says, with the
//! back-offs of [`super::restart`].

use super::*;

/// How a running container is watched.
pub(super) enum Proc {
    Child(tokio::process::Child),
    Adopted { pid: i32, start: u64 },
}

impl Proc {
    pub(super) async fn wait(&mut self) -> (i32, Option<i32>) {
        match self {
            Proc::Child(c) => match c.wait().await {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (s.code(), s.signal()) {
                        (Some(code), _) => (code, None),
                        (None, Some(sig)) => (128 + sig, Some(sig)),
                        _ => (255, None),
                    }
                }
                Err(_) => (255, None),
            },
            Proc::Adopted { pid, start } => {
                loop {
                    if !proc::alive(*pid, *start) {
                        // Not our child: the exit status is gone with it.
                        return (137, None);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

fn pod_key(p: &PodInner) -> String {
    format!("{}_{}({})", p.name, p.namespace, p.uid)
}

/// The host paths a program needs in its view: the busybox applet directory and the agent's own
/// binary (the applet scripts and built-ins exec it by its path), read-only, then the program's.
pub(super) fn program_binds(
    images: &crate::image::ImageTable,
    program: &crate::image::Program,
) -> Vec<crate::sandbox::rootfs::Bind> {
    use crate::sandbox::rootfs::Bind;
    let mut out = vec![];
    if let Ok(exe) = std::fs::canonicalize(&images.exe) {
        out.push(Bind { host: exe.clone(), inner: exe, read_only: true });
    }
    if let Some(dir) = &program.path_prefix {
        out.push(Bind { host: dir.clone(), inner: dir.clone(), read_only: true });
    }
    out.extend(program.binds.iter().cloned());
    out
}

/// Run one container for its whole life (restarts included). Returns whether it ended with
/// success (for init containers); app containers return when the pod stops or the restart policy
/// says no more.
pub(super) async fn run_container(p: Arc<PodInner>, idx: usize, adopt: Option<SavedContainer>) -> bool {
    let mut adopt = adopt;
    let mut crashes: i32 = 0;
    let mut pull_failures: u32 = 0;
    loop {
        if p.stopping().is_some() || p.evicted() {
            return false;
        }
        let (pod, c, init, runs) =
            p.with(|st| (st.pod.clone(), st.ctrs[idx].spec.clone(), st.ctrs[idx].init, st.ctrs[idx].runs));
        let policy = RestartPolicy::from_spec(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()));
        let field_path = Some(format!("spec.{}{{{}}}", if init { "initContainers" } else { "containers" }, c.name));
        let image = c.image.clone().unwrap_or_default();
        // The container's cgroup: its limits, and what an OOM kill is counted against.
        let cgroup = crate::cgroup::for_container(&p.uid, &c);
        let cg = cgroup.as_ref().ok().cloned().flatten();
        let oom_before = cg.as_ref().and_then(|g| g.oom_kills().ok()).unwrap_or(0);
        p.with(|st| st.ctrs[idx].cgroup = cg.clone());

        let (mut procw, started_at, pid, log_path, run_no) = if let Some(a) =
            adopt.take().filter(|a| proc::alive(a.pid, a.proc_start))
        {
            let started_at = a.started_at;
            // Execs into it run as it does.
            if let Ok(id) = crate::security::identity(&pod, &c) {
                p.with(|st| st.ctrs[idx].identity = id);
            }
            let run_no = a.restart_count;
            let log_path = p.rt.log_dir(&p.namespace, &p.name, &p.uid).join(&c.name).join(format!("{run_no}.log"));
            let cid = format!("yard://{}-{}-{}", &p.uid.chars().take(8).collect::<String>(), c.name, run_no);
            p.with(|st| {
                let ct = &mut st.ctrs[idx];
                ct.pid = Some(a.pid);
                ct.proc_start = a.proc_start;
                ct.env = a.env.clone();
                ct.cwd = a.cwd.clone();
                ct.restart_count = a.restart_count;
                ct.runs = run_no + 1;
                ct.container_id = cid;
                ct.state = CState::Running { started_at };
            });
            // Keep copying its output. (Its stdin pipe or pty died with the previous agent.)
            let (hub, t_out, t_err) = crate::attach::Hub::new(false, false, None, None);
            p.with(|st| st.ctrs[idx].attach = Some(hub));
            if let Ok(log) = proc::LogFile::create(&log_path) {
                let (o, e) = proc::fifo_paths(&p.dir.join("fifo").join(&c.name));
                if let Ok(r) = proc::open_fifo_reader(&o) {
                    tokio::spawn(proc::pump(r, log.clone(), "stdout", Some(t_out)));
                }
                if let Ok(r) = proc::open_fifo_reader(&e) {
                    tokio::spawn(proc::pump(r, log, "stderr", Some(t_err)));
                }
            }
            publish(&p);
            (Proc::Adopted { pid: a.pid, start: a.proc_start }, started_at, a.pid, log_path, run_no)
        } else {
            // Environment.
            let cap = p.rt.cfg.capacity.clone();
            let mut volume_binds = vec![];
            let envv = match p
                .rt
                .fetch_objects(&pod, &c)
                .await
                .and_then(|objs| env::container_env(&pod, &c, &objs, (&cap.0, &cap.1)))
                .and_then(|e| crate::security::identity(&pod, &c).map(|id| (e, id)))
                .and_then(|(e, id)| crate::volume::container_binds(&pod, &c, &p.dir, &e).map(|b| (e, id, b)))
            {
                Ok((e, id, b)) => {
                    p.with(|st| st.ctrs[idx].identity = id);
                    volume_binds = b;
                    e
                }
                Err(msg) => {
                    p.set_state(
                        idx,
                        CState::Waiting { reason: "CreateContainerConfigError".into(), message: Some(msg.clone()) },
                    );
                    p.rt.event(&p, true, "Failed", format!("Error: {msg}"), field_path.clone());
                    if !p.sleep_or_stop(Duration::from_secs(5)).await {
                        return false;
                    }
                    continue;
                }
            };
            let (cmd, args) = env::expand_argv(&c, &envv);
            let env_path = envv.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or_default();
            let req = crate::image::ImageRequest {
                image: &image,
                command: &cmd,
                args: &args,
                container: &c.name,
                pod_dir: &p.dir,
                env_path,
            };
            let resolved = match p.rt.images().resolve(&req) {
                Ok(r) => r,
                Err(e) => {
                    let msg = e.to_string();
                    pull_failures += 1;
                    p.rt.event(
                        &p,
                        true,
                        "Failed",
                        format!("Failed to pull image \"{image}\": {msg}"),
                        field_path.clone(),
                    );
                    p.rt.event(&p, true, "Failed", "Error: ErrImagePull".into(), field_path.clone());
                    p.set_state(
                        idx,
                        CState::Waiting {
                            reason: if pull_failures > 1 { "ImagePullBackOff".into() } else { "ErrImagePull".into() },
                            message: Some(if pull_failures > 1 {
                                format!("Back-off pulling image \"{image}\": ErrImagePull: {msg}")
                            } else {
                                msg.clone()
                            }),
                        },
                    );
                    if pull_failures > 1 {
                        p.rt.event(
                            &p,
                            false,
                            "BackOff",
                            format!("Back-off pulling image \"{image}\""),
                            field_path.clone(),
                        );
                    }
                    let d = pull_back_off(pull_failures);
                    if !p.sleep_or_stop(d).await {
                        return false;
                    }
                    continue;
                }
            };
            if pull_failures > 0 || runs == 0 {
                p.rt.event(
                    &p,
                    false,
                    "Pulled",
                    format!("No image pulled: container image \"{image}\" runs as {}", resolved.description),
                    field_path.clone(),
                );
            }
            let program = resolved.program;
            pull_failures = 0;
            let mut envv = envv;
            let hostname = hostname_of(&p, &pod);
            let base_path = envv
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            let path = match &program.path_prefix {
                Some(pre) => format!("{}:{base_path}", pre.display()),
                None => base_path,
            };
            envv.retain(|(k, _)| k != "PATH");
            envv.insert(0, ("PATH".into(), path));
            if !envv.iter().any(|(k, _)| k == "HOSTNAME") {
                envv.insert(1, ("HOSTNAME".into(), hostname.clone()));
            }
            if !envv.iter().any(|(k, _)| k == "HOME") {
                envv.push(("HOME".into(), "/root".into()));
            }
            let cwd = c.working_dir.clone().filter(|w| !w.is_empty()).map(PathBuf::from);
            let netns = p.with(|st| st.sandbox.as_ref().map(|s| s.netns_path())).unwrap_or_default();
            let spec = proc::Spec {
                argv: program.argv.clone(),
                env: envv.clone(),
                cwd: cwd.clone(),
                netns,
                hostname,
                pod_ns: p.with(|st| st.pod_ns.clone()),
                view: crate::sandbox::rootfs::View {
                    root: p.dir.join("root").join(&c.name),
                    hostname_file: p.dir.join("hostname"),
                    hosts: p.dir.join("hosts"),
                    resolv_conf: p.dir.join("resolv.conf"),
                    binds: program_binds(&p.rt.cfg.images, &program).into_iter().chain(volume_binds).collect(),
                    cwd: cwd.clone(),
                    privileged: p.with(|st| st.ctrs[idx].identity.privileged),
                },
                pid_ns: pid_ns_of(&pod, p.with(|st| st.pause)),
                fifo_dir: p.dir.join("fifo").join(&c.name),
                stdin: c.stdin.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
                cgroup: cg.clone(),
                identity: p.with(|st| st.ctrs[idx].identity.clone()),
            };
            let run_no = runs;
            let log_path = p.rt.log_dir(&p.namespace, &p.name, &p.uid).join(&c.name).join(format!("{run_no}.log"));
            let cid = format!("yard://{}-{}-{}", &p.uid.chars().take(8).collect::<String>(), c.name, run_no);
            let log = proc::LogFile::create(&log_path);
            tracing::debug!(pod = %p.name, container = %c.name, "container process spawning");
            let spawned = match (log, &cgroup) {
                (Err(e), _) => Err(e),
                (_, Err(msg)) => Err(std::io::Error::other(msg.clone())),
                (Ok(log), Ok(_)) => proc::spawn(&spec).map(|s| (s, log)),
            };
            tracing::debug!(pod = %p.name, container = %c.name, "container process started");
            match spawned {
                Ok((s, log)) => {
                    let started_at = now();
                    let proc_start = proc::start_time(s.pid).unwrap_or(0);
                    let tty = s.pty.is_some();
                    let master = s.pty.as_ref().and_then(|m| proc::dup_file(m.as_raw_fd()).ok());
                    let (hub, t_out, t_err) =
                        crate::attach::Hub::new(tty, c.stdin_once.unwrap_or(false), s.stdin, s.pty);
                    if let Some(m) = master {
                        // With a TTY the pod's log is what the terminal shows.
                        tokio::spawn(proc::pump(tokio::fs::File::from_std(m), log, "stdout", Some(t_out)));
                        drop(t_err);
                    } else {
                        if let Some(o) = s.stdout {
                            tokio::spawn(proc::pump(o, log.clone(), "stdout", Some(t_out)));
                        }
                        if let Some(e) = s.stderr {
                            tokio::spawn(proc::pump(e, log, "stderr", Some(t_err)));
                        }
                    }
                    p.with(|st| {
                        st.ctrs[idx].attach = Some(hub);
                        let ct = &mut st.ctrs[idx];
                        ct.pid = Some(s.pid);
                        ct.proc_start = proc_start;
                        ct.env = envv.clone();
                        ct.cwd = cwd.clone();
                        ct.restart_count = run_no;
                        ct.runs = run_no + 1;
                        ct.container_id = cid.clone();
                        ct.ready = false;
                        ct.started = false;
                        ct.state = CState::Running { started_at };
                    });
                    p.save();
                    publish(&p);
                    p.rt.event(&p, false, "Created", format!("Created container {}", c.name), field_path.clone());
                    p.rt.event(&p, false, "Started", format!("Started container {}", c.name), field_path.clone());
                    (Proc::Child(s.child), started_at, s.pid, log_path, run_no)
                }
                Err(e) => {
                    // Like a runtime's StartError: counts as a failed run.
                    let msg = e.to_string();
                    p.rt.event(&p, true, "Failed", format!("Error: {msg}"), field_path.clone());
                    let t = Term {
                        exit_code: 128,
                        signal: None,
                        reason: "StartError".into(),
                        message: Some(msg),
                        started_at: None,
                        finished_at: now(),
                        container_id: cid,
                    };
                    p.with(|st| {
                        let ct = &mut st.ctrs[idx];
                        ct.runs = run_no + 1;
                        ct.restart_count = run_no;
                        ct.state = CState::Terminated(t);
                    });
                    publish(&p);
                    if !after_exit(&p, idx, policy, 128, init, &mut crashes, Duration::ZERO).await {
                        return false;
                    }
                    continue;
                }
            }
        };
        let _ = log_path;
        // Probes.
        let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
        let probe_task = tokio::spawn(probe_loop(p.clone(), idx, c.clone(), pid, kill_tx, started_at));
        let mut stop_rx = p.stop_tx.subscribe();
        let mut evict_rx = p.evict_tx.subscribe();
        let mut killed_for: Option<String> = None;
        let (code, signal) = tokio::select! {
            r = procw.wait() => r,
            Some(why) = kill_rx.recv() => {
                killed_for = Some(why);
                let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
                let g = c.liveness_probe.as_ref().and_then(|pr| pr.termination_grace_period_seconds).unwrap_or(grace);
                p.rt.event(&p, false, "Killing", format!("Container {} failed liveness probe, will be restarted", c.name), field_path.clone());
                stop_process(&p, &c, &mut procw, pid, g, false).await
            }
            _ = async { let _ = stop_rx.wait_for(|g| g.is_some()).await; } => {
                let g = p.stopping().unwrap_or(30);
                p.rt.event(&p, false, "Killing", format!("Stopping container {}", c.name), field_path.clone());
                stop_process(&p, &c, &mut procw, pid, g, true).await
            }
            // An eviction kills at once (the kubelet's grace period 0 for local storage limits).
            _ = async { let _ = evict_rx.wait_for(|e| *e).await; } => {
                p.rt.event(&p, false, "Killing", format!("Stopping container {}", c.name), field_path.clone());
                stop_process(&p, &c, &mut procw, pid, 0, true).await
            }
        };
        probe_task.abort();
        let finished = now();
        let ran_for = finished.duration_since(started_at);
        // The kernel's OOM killer ends a process with SIGKILL and counts it in the cgroup.
        let oom = code == 137 && cg.as_ref().and_then(|g| g.oom_kills().ok()).is_some_and(|n| n > oom_before);
        // What the run left behind in its cgroup goes with it (a runtime's container stop).
        if let Some(g) = &cg {
            if let Err(e) = g.remove() {
                tracing::warn!(pod = %p.name, container = %c.name, "remove cgroup: {e}");
            }
        }
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let t = Term {
            exit_code: code,
            signal,
            reason: reason.into(),
            message: None,
            started_at: Some(started_at),
            finished_at: finished,
            container_id: p.with(|st| st.ctrs[idx].container_id.clone()),
        };
        let _ = killed_for;
        p.with(|st| {
            let ct = &mut st.ctrs[idx];
            ct.ready = false;
            ct.started = false;
            ct.pid = None;
            ct.attach = None;
            ct.state = CState::Terminated(t);
        });
        p.save();
        publish(&p);
        if p.stopping().is_some() || p.evicted() {
            return false;
        }
        if init && code == 0 {
            return true;
        }
        // Reset the back-off after a long healthy run (kubelet: 2x the max back-off).
        crashes = crashes_after_run(crashes, ran_for.as_secs());
        let _ = run_no;
        if !after_exit(&p, idx, policy, code, init, &mut crashes, Duration::ZERO).await {
            return code == 0;
        }
    }
}

/// Decide about a restart after an exit; sleeps the back-off. Returns whether to run again.
async fn after_exit(
    p: &Arc<PodInner>,
    idx: usize,
    policy: RestartPolicy,
    code: i32,
    init: bool,
    crashes: &mut i32,
    _min: Duration,
) -> bool {
    if !restarts(policy, init, code) {
        return false;
    }
    let d = back_off(*crashes);
    *crashes += 1;
    if !d.is_zero() {
        let name = p.with(|st| {
            let ct = &mut st.ctrs[idx];
            if let CState::Terminated(t) = &ct.state {
                ct.last = Some(t.clone());
            }
            let msg =
                format!("back-off {}s restarting failed container={} pod={}", d.as_secs(), ct.spec.name, pod_key(p));
            ct.state = CState::Waiting { reason: "CrashLoopBackOff".into(), message: Some(msg) };
            ct.spec.name.clone()
        });
        publish(p);
        p.rt.event(
            p,
            true,
            "BackOff",
            "Back-off restarting failed container".into(),
            Some(format!("spec.containers{{{name}}}")),
        );
        if !p.sleep_or_stop(d).await {
            return false;
        }
    } else {
        p.with(|st| {
            let ct = &mut st.ctrs[idx];
            if let CState::Terminated(t) = &ct.state {
                ct.last = Some(t.clone());
            }
        });
    }
    true
}
