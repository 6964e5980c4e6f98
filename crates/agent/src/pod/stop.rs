//! Stopping a container: its preStop hook within the grace period, SIGTERM, then SIGKILL when the
//! grace period (shortened by a later, shorter one) runs out.

use super::*;

/// preStop, SIGTERM, SIGKILL after the grace period. `pod_stop` tells a pod termination (the grace
/// covers preStop) from a liveness restart.
pub(super) async fn stop_process(
    p: &Arc<PodInner>,
    c: &Container,
    procw: &mut Proc,
    pid: i32,
    grace: i64,
    _pod_stop: bool,
) -> (i32, Option<i32>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace.max(0) as u64);
    if grace > 0 {
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) {
            let fut = async {
                if let Some(e) = &h.exec {
                    let argv = e.command.clone().unwrap_or_default();
                    let _ = exec_probe(p, pid, &argv, Duration::from_secs(grace as u64)).await;
                } else if let Some(g) = &h.http_get {
                    let ip = p.with(|st| st.sandbox.as_ref().map(|s| s.ip));
                    if let Some(ip) = ip {
                        let _ = http_probe(p, c, g, ip, Duration::from_secs(grace as u64)).await;
                    }
                } else if let Some(s) = &h.sleep {
                    tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
                }
            };
            let _ = tokio::time::timeout_at(deadline, fut).await;
        }
    }
    proc::signal(pid, Signal::SIGTERM);
    let mut deadline =
        deadline.max(tokio::time::Instant::now() + Duration::from_millis(if grace > 0 { 100 } else { 0 }));
    // A shorter grace period given meanwhile (a second delete, the agent shutting down) moves
    // the deadline closer, as the kubelet does.
    let mut stop_rx = p.stop_tx.subscribe();
    let exited = {
        let wait = procw.wait();
        tokio::pin!(wait);
        let mut watching = true;
        loop {
            tokio::select! {
                r = &mut wait => break Some(r),
                _ = tokio::time::sleep_until(deadline) => break None,
                changed = stop_rx.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    if let Some(g) = *stop_rx.borrow() {
                        let shorter = tokio::time::Instant::now() + Duration::from_secs(g.max(0) as u64);
                        deadline = deadline.min(shorter);
                    }
                }
            }
        }
    };
    proc::signal(pid, Signal::SIGKILL);
    match exited {
        Some(r) => r,
        None => procw.wait().await,
    }
}
