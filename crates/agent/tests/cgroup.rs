//! Kernel tests of the agent's cgroups (needs root): a memory limit that the kernel enforces and
//! reports as an OOM kill, a pids limit, a CFS quota, a process joined before exec through the
//! pre-opened `cgroup.procs`, and removal that leaves nothing behind. Each test makes its own
//! cgroup below this process's own one, named after the test and this process's pid.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use yard_agent::cgroup::{self, Cgroup, Hierarchy, Limits};

/// A cgroup removed when the test ends, also on failure.
struct Scoped(Cgroup);
impl Drop for Scoped {
    fn drop(&mut self) {
        let _ = self.0.remove();
        // The parent `yard-test-<pid>` directory too.
        for p in self.0.paths() {
            if let Some(parent) = p.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn make(name: &str, limits: &Limits) -> Scoped {
    yard_test_support::require_root("cgroup tests");
    let h = Hierarchy::detect().expect("detect cgroups");
    let rel = format!("yard-test-{}/{name}", std::process::id());
    Scoped(Cgroup::create(&h, &rel, limits).expect("create cgroup"))
}

fn spawn_in(cg: &Cgroup, argv: &[&str]) -> std::process::Child {
    let procs = cg.open_procs().expect("open cgroup.procs");
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: the closure only calls write(2) on files opened before fork.
    unsafe {
        cmd.pre_exec(move || cgroup::join_self(&procs));
    }
    cmd.spawn().expect("spawn")
}

#[test]
fn memory_limit_is_enforced_and_reported_as_an_oom_kill() {
    let mib = 1024 * 1024;
    let g = make("oom", &Limits { memory_bytes: Some(20 * mib), ..Default::default() });
    assert_eq!(g.0.oom_kills().unwrap(), 0);
    // dd touches its whole 100 MiB buffer when it reads into it.
    let st = spawn_in(&g.0, &["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"]).wait().unwrap();
    assert_eq!(st.signal(), Some(9), "dd must be killed by the OOM killer: {st:?}");
    assert_eq!(g.0.oom_kills().unwrap(), 1);
    // Under the limit the same program runs to the end.
    let ok = spawn_in(&g.0, &["dd", "if=/dev/zero", "of=/dev/null", "bs=4M", "count=1"]).wait().unwrap();
    assert!(ok.success(), "{ok:?}");
    assert_eq!(g.0.oom_kills().unwrap(), 1);
    let peak = g.0.memory_peak().unwrap_or(0);
    assert!(peak <= 20 * mib + 4096, "peak {peak} over the limit");
}

#[test]
fn pids_limit_stops_forks() {
    let g = make("pids", &Limits { pids_max: Some(4), ..Default::default() });
    // A shell that tries to start 8 background sleeps: forks past pids.max fail ("can't fork").
    let mut sh = spawn_in(&g.0, &["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 30 & done 2>/dev/null; wait"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let n = g.0.pids().unwrap().len();
    // Without the limit all nine would run.
    assert!((2..=4).contains(&n), "pids.max 4 must hold the shell and at most 3 sleeps, found {n}");
    g.0.remove().unwrap();
    let _ = sh.wait();
}

#[test]
fn cpu_quota_and_shares_are_written_and_processes_join_before_exec() {
    let l = Limits {
        cpu_quota_us: Some(cgroup::milli_cpu_to_quota(250, cgroup::CPU_PERIOD_US)),
        cpu_period_us: cgroup::CPU_PERIOD_US,
        cpu_shares: Some(cgroup::milli_cpu_to_shares(250)),
        ..Default::default()
    };
    let g = make("cpu", &l);
    let mut child = spawn_in(&g.0, &["sleep", "30"]);
    let pid = child.id();
    assert!(g.0.pids().unwrap().contains(&pid), "the child is in the cgroup from its start");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for p in g.0.paths() {
        let tail = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(cg.contains(&tail), "{cg}");
    }
    match Hierarchy::detect().unwrap() {
        Hierarchy::V1 { cpu: Some(_), .. } => {
            let d = g.0.paths().into_iter().find(|p| p.join("cpu.cfs_quota_us").exists()).expect("cpu dir");
            assert_eq!(std::fs::read_to_string(d.join("cpu.cfs_quota_us")).unwrap().trim(), "25000");
            assert_eq!(std::fs::read_to_string(d.join("cpu.cfs_period_us")).unwrap().trim(), "100000");
            assert_eq!(std::fs::read_to_string(d.join("cpu.shares")).unwrap().trim(), "256");
        }
        Hierarchy::V2 { .. } => {
            let d = &g.0.paths()[0];
            assert_eq!(std::fs::read_to_string(d.join("cpu.max")).unwrap().trim(), "25000 100000");
        }
        other => panic!("no cpu controller: {other:?}"),
    }
    // Removal kills what is left and removes the directories.
    g.0.remove().unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(9));
    for p in g.0.paths() {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn lifting_and_lowering_a_memory_limit() {
    let mib = 1024 * 1024;
    let g = make("update", &Limits { memory_bytes: Some(64 * mib), ..Default::default() });
    g.0.set(&Limits { memory_bytes: Some(16 * mib), ..Default::default() }).unwrap();
    g.0.set(&Limits { memory_bytes: Some(128 * mib), ..Default::default() }).unwrap();
    g.0.set(&Limits::default()).unwrap();
    let st = spawn_in(&g.0, &["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"]).wait().unwrap();
    assert!(st.success(), "no limit after lifting it: {st:?}");
}
