//! The pod's restart and status decisions as pure functions of typed inputs: the restart policy,
//! whether a container that exited runs again, the crash-loop and image-pull back-offs, the retry
//! delays of the sandbox and the volumes, and the pod phase (whether the pod is done). The worker
//! in [`super::container`] and the status in [`super::status`] call these; nothing here sleeps,
//! locks or reads the clock.

use std::time::Duration;

/// A pod's `restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The policy of a pod spec's `restartPolicy` (absent: `Always`, as the API defaults it). The
    /// API server admits only the three upstream values; anything else restarts nothing.
    pub(super) fn from_spec(policy: Option<&str>) -> RestartPolicy {
        match policy {
            None | Some("Always") => RestartPolicy::Always,
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some(_) => RestartPolicy::Never,
        }
    }
}

/// Whether a container that exited with `exit_code` runs again. Init containers run until they
/// succeed (`Always` restarts them only on failure).
pub(super) fn restarts(policy: RestartPolicy, init: bool, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => !init || exit_code != 0,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// The crash-loop back-off before the restart that follows `crashes` earlier restarts: none for
/// the first, then 10s doubling up to 300s (the kubelet's).
pub(super) fn back_off(crashes: i32) -> Duration {
    if crashes <= 0 {
        return Duration::ZERO;
    }
    let secs = 10u64.saturating_mul(1u64 << (crashes - 1).min(6) as u32).min(300);
    Duration::from_secs(secs)
}

/// The crash count after a run of `ran_for_secs` seconds: a long healthy run (over 2x the
/// maximum back-off, as the kubelet) resets the back-off.
pub(super) fn crashes_after_run(crashes: i32, ran_for_secs: i64) -> i32 {
    if ran_for_secs > 600 {
        0
    } else {
        crashes
    }
}

/// How long to wait before pulling (resolving) an image again after `failures` failures in a row.
pub(super) fn pull_back_off(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.min(6)).min(300))
}

/// How long to wait before creating the pod sandbox again after `attempt` failures.
pub(super) fn sandbox_retry(attempt: u32) -> Duration {
    Duration::from_millis((500u64 << attempt.min(5)).min(10_000))
}

/// How long to wait before setting up the pod's volumes again after `attempt` failures.
pub(super) fn mount_retry(attempt: u32) -> Duration {
    Duration::from_millis((1000u64 << attempt.min(5)).min(30_000))
}

/// What the phase needs to know of one app container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AppState {
    Running,
    /// Waiting; `ran` when it has run before (a restart is pending).
    Waiting {
        ran: bool,
    },
    Terminated {
        exit_code: i32,
    },
}

/// The pod phase, following the kubelet's getPhase: `init_failed` when an init container failed
/// for good, `init_pending` while init containers have not all completed, `apps` the app
/// containers' states.
pub(super) fn phase(
    policy: RestartPolicy,
    init_failed: bool,
    init_pending: bool,
    apps: impl IntoIterator<Item = AppState>,
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if init_pending {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for a in apps {
        match a {
            AppState::Running => running += 1,
            AppState::Terminated { exit_code } => {
                stopped += 1;
                if exit_code == 0 {
                    succeeded += 1;
                }
            }
            AppState::Waiting { ran } => {
                if ran {
                    stopped += 1
                } else {
                    waiting += 1
                }
            }
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == RestartPolicy::Always {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == RestartPolicy::Never {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// Whether a pod in `phase` is done (its containers will not run again).
pub(super) fn is_terminal(phase: &str) -> bool {
    phase == "Succeeded" || phase == "Failed"
}

#[cfg(test)]
mod tests {
    use super::AppState::*;
    use super::RestartPolicy::*;
    use super::*;

    #[test]
    fn backoff_sequence() {
        let s: Vec<u64> = (0..8).map(|n| back_off(n).as_secs()).collect();
        assert_eq!(s, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(back_off(-1), Duration::ZERO);
        assert_eq!(back_off(i32::MAX).as_secs(), 300);
    }

    #[test]
    fn long_run_resets_backoff() {
        assert_eq!(crashes_after_run(5, 600), 5);
        assert_eq!(crashes_after_run(5, 601), 0);
        assert_eq!(crashes_after_run(0, 10), 0);
    }

    #[test]
    fn pull_and_retry_delays() {
        let s: Vec<u64> = (1..9).map(|n| pull_back_off(n).as_secs()).collect();
        assert_eq!(s, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        let s: Vec<u128> = (0..8).map(|n| sandbox_retry(n).as_millis()).collect();
        assert_eq!(s, vec![500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        let s: Vec<u128> = (0..8).map(|n| mount_retry(n).as_millis()).collect();
        assert_eq!(s, vec![1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    }

    #[test]
    fn policies() {
        assert_eq!(RestartPolicy::from_spec(None), Always);
        assert_eq!(RestartPolicy::from_spec(Some("Always")), Always);
        assert_eq!(RestartPolicy::from_spec(Some("OnFailure")), OnFailure);
        assert_eq!(RestartPolicy::from_spec(Some("Never")), Never);
        // (init, exit code) -> restarts, per policy.
        let cases = [(false, 0), (false, 1), (true, 0), (true, 1)];
        let got = |p| cases.iter().map(|&(init, code)| restarts(p, init, code)).collect::<Vec<_>>();
        assert_eq!(got(Always), vec![true, true, false, true]);
        assert_eq!(got(OnFailure), vec![false, true, false, true]);
        assert_eq!(got(Never), vec![false, false, false, false]);
    }

    #[test]
    fn phases() {
        assert_eq!(phase(Always, true, false, [Running]), "Failed");
        assert_eq!(phase(Always, false, true, [Running]), "Pending");
        assert_eq!(phase(Always, false, false, []), "Pending");
        assert_eq!(phase(Always, false, false, [Running, Waiting { ran: false }]), "Pending");
        assert_eq!(phase(Never, false, false, [Running, Terminated { exit_code: 1 }]), "Running");
        // A crash-looping container (waiting after a run) counts as stopped.
        assert_eq!(phase(Always, false, false, [Waiting { ran: true }]), "Running");
        assert_eq!(phase(OnFailure, false, false, [Waiting { ran: true }]), "Running");
        assert_eq!(phase(Always, false, false, [Terminated { exit_code: 0 }]), "Running");
        let done = [Terminated { exit_code: 0 }, Terminated { exit_code: 0 }];
        assert_eq!(phase(Never, false, false, done), "Succeeded");
        assert_eq!(phase(OnFailure, false, false, done), "Succeeded");
        let failed = [Terminated { exit_code: 0 }, Terminated { exit_code: 2 }];
        assert_eq!(phase(Never, false, false, failed), "Failed");
        assert_eq!(phase(OnFailure, false, false, failed), "Running");
        assert!(is_terminal("Succeeded") && is_terminal("Failed"));
        assert!(!is_terminal("Running") && !is_terminal("Pending"));
    }
}
