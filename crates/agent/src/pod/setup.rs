//! The pod-level parts of a sandbox set up before the containers: its volumes (with the
//! `FailedMount` retry loop and the refresh of API-data volumes) and, for
//! `shareProcessNamespace`, the pause process whose PID namespace the containers share.

use super::*;

/// Set up the pod's volumes, retrying with a `FailedMount` event while one fails; then keep the
/// API-data volumes up to date while the pod runs. False when the pod stopped meanwhile.
pub(super) async fn mount_volumes(p: &Arc<PodInner>) -> bool {
    let mut attempt = 0u32;
    loop {
        if p.stopping().is_some() {
            return false;
        }
        let pod = p.with(|st| st.pod.clone());
        let cap = p.rt.cfg.capacity.clone();
        let res = match p.rt.fetch_volume_objects(&pod).await {
            Err(msg) => Err(msg),
            Ok(objs) => {
                let dir = p.dir.clone();
                tokio::task::spawn_blocking(move || crate::volume::setup(&pod, &dir, &objs, (&cap.0, &cap.1)))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|f| f.to_string()))
            }
        };
        match res {
            Ok(()) => break,
            Err(msg) => {
                p.rt.event(p, true, "FailedMount", msg.clone(), None);
                tracing::warn!(pod = %p.name, "volumes: {msg}");
            }
        }
        attempt += 1;
        let d = mount_retry(attempt);
        if !p.sleep_or_stop(d).await {
            return false;
        }
    }
    if p.with(|st| crate::volume::has_api_data(&st.pod)) {
        let p = p.clone();
        tokio::spawn(async move {
            while p.sleep_or_stop(VOLUME_REFRESH).await {
                let pod = p.with(|st| st.pod.clone());
                let Ok(objs) = p.rt.fetch_volume_objects(&pod).await else { continue };
                let (dir, cap) = (p.dir.clone(), p.rt.cfg.capacity.clone());
                let changed =
                    tokio::task::spawn_blocking(move || crate::volume::refresh(&pod, &dir, &objs, (&cap.0, &cap.1)))
                        .await;
                if let Some(c) = changed.ok().filter(|c| !c.is_empty()) {
                    tracing::debug!(pod = %p.name, volumes = ?c, "volume contents updated");
                }
            }
        });
    }
    if p.with(|st| super::eviction::limited(&st.pod)) {
        super::eviction::spawn_monitor(p);
    }
    true
}

/// The PID namespace of a container of `pod` (`pause`: the pod's pause relay, if it has one).
pub(super) fn pid_ns_of(pod: &Pod, pause: Option<(i32, u64)>) -> proc::PidNs {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_pid).unwrap_or(false) {
        return proc::PidNs::Host;
    }
    match pause {
        Some((pid, _)) => proc::PidNs::Join(PathBuf::from(format!("/proc/{pid}/ns/pid_for_children"))),
        None => proc::PidNs::Own,
    }
}

/// `shareProcessNamespace: true`: start the pod's pause process (PID 1 of the namespace its
/// containers share, reaping what they leave) or adopt the one an earlier agent started.
pub(super) fn start_pause(p: &Arc<PodInner>, saved: Option<(i32, u64)>) -> std::io::Result<()> {
    let pod = p.with(|st| st.pod.clone());
    let spec = pod.spec.as_ref();
    if !spec.and_then(|s| s.share_process_namespace).unwrap_or(false) || spec.and_then(|s| s.host_pid).unwrap_or(false)
    {
        return Ok(());
    }
    if let Some((pid, start)) = saved.filter(|(pid, start)| proc::alive(*pid, *start)) {
        p.with(|st| st.pause = Some((pid, start)));
        return Ok(());
    }
    let images = &p.rt.cfg.images;
    let exe = std::fs::canonicalize(&images.exe).unwrap_or_else(|_| images.exe.clone());
    let netns = p.with(|st| st.sandbox.as_ref().map(|s| s.netns_path())).unwrap_or_default();
    let pause = crate::image::Program {
        argv: vec![exe.to_string_lossy().into_owned(), "builtin".into(), "pause".into()],
        path_prefix: None,
        binds: vec![],
    };
    let spec = proc::Spec {
        argv: pause.argv.clone(),
        env: vec![],
        cwd: None,
        netns,
        hostname: hostname_of(p, &pod),
        pod_ns: p.with(|st| st.pod_ns.clone()),
        view: crate::sandbox::rootfs::View {
            root: p.dir.join("root").join(".pause"),
            hostname_file: p.dir.join("hostname"),
            hosts: p.dir.join("hosts"),
            resolv_conf: p.dir.join("resolv.conf"),
            binds: program_binds(images, &pause),
            cwd: None,
            privileged: false,
        },
        pid_ns: proc::PidNs::Own,
        fifo_dir: p.dir.join("fifo").join(".pause"),
        stdin: false,
        tty: false,
        cgroup: None,
        identity: crate::security::Identity {
            caps: crate::sandbox::caps::Caps::for_container(&Container::default()).unwrap_or_default(),
            ..Default::default()
        },
    };
    let started = proc::spawn(&spec)?;
    let start = proc::start_time(started.pid).unwrap_or(0);
    p.with(|st| st.pause = Some((started.pid, start)));
    p.save();
    let mut child = started.child;
    // Reap it when it ends (it is killed when the pod is torn down).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}

/// How often configMap, secret and downwardAPI volume contents are compared with the API.
pub(super) const VOLUME_REFRESH: Duration = Duration::from_secs(2);
