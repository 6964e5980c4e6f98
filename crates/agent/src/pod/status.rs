//! A pod's status as the kubelet reports it: conditions, container statuses (states, restart
//! counts, last termination), phase and QoS class, computed from the worker's state.

use super::*;

pub(super) fn cond(
    times: &mut HashMap<String, (bool, Time)>,
    t: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let entry = times.entry(t.to_string()).or_insert((ok, ts_time(now())));
    if entry.0 != ok {
        *entry = (ok, ts_time(now()));
    }
    PodCondition {
        type_: t.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: Some(entry.1.clone()),
        reason: reason.map(str::to_string),
        message,
        ..Default::default()
    }
}

pub(super) fn container_status(c: &Ctr) -> ContainerStatus {
    let term = |t: &Term| ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(ts_time),
        finished_at: Some(ts_time(t.finished_at)),
        container_id: Some(t.container_id.clone()),
    };
    let state = match &c.state {
        CState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
            ..Default::default()
        },
        CState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(ts_time(*started_at)) }),
            ..Default::default()
        },
        CState::Terminated(t) => ContainerState { terminated: Some(term(t)), ..Default::default() },
    };
    let image = c.spec.image.clone().unwrap_or_default();
    let cid = match &c.state {
        CState::Running { .. } => Some(c.container_id.clone()),
        CState::Terminated(t) => Some(t.container_id.clone()),
        _ => None,
    };
    ContainerStatus {
        name: c.spec.name.clone(),
        image: image.clone(),
        image_id: if c.runs > 0 { format!("yard://image/{}", crate::image::repository(&image)) } else { String::new() },
        container_id: cid,
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: Some(match &c.last {
            Some(t) => ContainerState { terminated: Some(term(t)), ..Default::default() },
            None => ContainerState::default(),
        }),
        ..Default::default()
    }
}

pub(super) fn compute_status(st: &mut PodState, node_ip: Ipv4Addr) -> PodStatus {
    let policy = RestartPolicy::from_spec(st.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()));
    let apps: Vec<&Ctr> = st.ctrs.iter().filter(|c| !c.init).collect();
    let inits: Vec<&Ctr> = st.ctrs.iter().filter(|c| c.init).collect();
    // Phase, following kubelet's getPhase.
    let app_states = apps.iter().map(|c| match &c.state {
        CState::Running { .. } => AppState::Running,
        CState::Terminated(t) => AppState::Terminated { exit_code: t.exit_code },
        CState::Waiting { .. } => AppState::Waiting { ran: c.last.is_some() },
    });
    // An evicted pod is Failed whatever its containers did (the kubelet's evictPod).
    let phase = match st.evicted {
        Some(_) => "Failed",
        None => phase(policy, st.init_failed, !st.init_done && !inits.is_empty(), app_states),
    };
    let all_ready = !apps.is_empty() && apps.iter().all(|c| c.ready);
    let not_ready: Vec<String> = apps.iter().filter(|c| !c.ready).map(|c| c.spec.name.clone()).collect();
    let unready_msg =
        (!not_ready.is_empty()).then(|| format!("containers with unready status: [{}]", not_ready.join(" ")));
    let init_pending: Vec<String> = inits
        .iter()
        .filter(|c| !matches!(&c.state, CState::Terminated(t) if t.exit_code == 0))
        .map(|c| c.spec.name.clone())
        .collect();
    let init_ok = st.init_done || inits.is_empty();
    let sandbox_ready = st.sandbox_ready;
    let terminal = is_terminal(phase);
    let mut conditions = vec![];
    conditions.push(cond(&mut st.cond_times, "PodReadyToStartContainers", sandbox_ready, None, None));
    let init_msg = (!init_ok).then(|| format!("containers with incomplete status: [{}]", init_pending.join(" ")));
    conditions.push(cond(
        &mut st.cond_times,
        "Initialized",
        init_ok,
        (!init_ok).then_some("ContainersNotInitialized"),
        init_msg,
    ));
    let cr_reason = if terminal && !all_ready {
        Some("PodCompleted")
    } else if !all_ready {
        Some("ContainersNotReady")
    } else {
        None
    };
    let ready_msg = if terminal { None } else { unready_msg.clone() };
    conditions.push(cond(&mut st.cond_times, "Ready", all_ready, cr_reason, ready_msg.clone()));
    conditions.push(cond(&mut st.cond_times, "ContainersReady", all_ready, cr_reason, ready_msg));
    conditions.push(cond(&mut st.cond_times, "PodScheduled", true, None, None));
    let ip = st.sandbox.as_ref().map(|s| s.ip.to_string());
    let init_statuses: Vec<ContainerStatus> = inits.iter().map(|c| container_status(c)).collect();
    let statuses: Vec<ContainerStatus> = apps.iter().map(|c| container_status(c)).collect();
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(node_ip.to_string()),
        host_ips: Some(vec![HostIP { ip: node_ip.to_string() }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(ts_time(st.start_time)),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        qos_class: st.pod.status.as_ref().and_then(|s| s.qos_class.clone()).or_else(|| Some(qos_class(&st.pod))),
        reason: st.evicted.as_ref().map(|_| "Evicted".to_string()),
        message: st.evicted.clone(),
        ..Default::default()
    }
}

pub(super) fn qos_class(pod: &Pod) -> String {
    let spec = pod.spec.as_ref().and_then(|s| serde_json::to_value(s).ok()).unwrap_or_default();
    yard_api::qos::pod_qos(&spec).to_string()
}
