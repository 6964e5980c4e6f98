//! Resource limits with the kernel's cgroups, v1 and v2: one cgroup per pod and one per container
//! under the agent's own cgroup, limits written as the kubelet writes them (memory limit, CFS quota
//! from the cpu limit, shares or weight from the cpu request, pids), a process joined before it
//! runs (the `cgroup.procs` files are opened before fork; the child writes `0`), the OOM-kill count
//! read back so an exit can be reported as `OOMKilled`, and removal that kills what is left.
//!
//! On cgroup v1 each controller is its own hierarchy (memory, cpu, pids here); on v2 one unified
//! hierarchy whose controllers must be enabled in the parents' `cgroup.subtree_control`. A
//! controller that this machine does not have is an error when a limit needs it, not a silent skip.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A cgroup error, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup hierarchy with the {0} controller on this machine")]
    NoController(&'static str),
    #[error("{0}")]
    Parse(String),
}

type Result<T> = std::result::Result<T, CgroupError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io { path: path.to_path_buf(), source }
}

/// The kernel values for one cgroup, computed from Kubernetes resources by the functions below.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (`memory.limit_in_bytes` / `memory.max`).
    pub memory_bytes: Option<u64>,
    /// CFS quota in microseconds per `cpu_period_us` (`cpu.cfs_quota_us` / `cpu.max`).
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    /// cgroup v1 `cpu.shares` (v2: converted to `cpu.weight`).
    pub cpu_shares: Option<u64>,
    /// `pids.max`.
    pub pids_max: Option<u64>,
}

/// The kubelet's CFS period: 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const MIN_QUOTA_US: u64 = 1_000;

/// cpu.shares for a cpu request in millicores, as the kubelet's `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: u64) -> u64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// The CFS quota for a cpu limit in millicores, as the kubelet's `MilliCPUToQuota` (0: none).
pub fn milli_cpu_to_quota(milli: u64, period_us: u64) -> u64 {
    if milli == 0 {
        return 0;
    }
    (milli * period_us / 1000).max(MIN_QUOTA_US)
}

/// cgroup v2 `cpu.weight` for v1 shares (runc's and the kubelet's conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// Where this machine's cgroups are, and this process's own place in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One directory per controller: this process's own cgroup in that controller's hierarchy.
    V1 { memory: Option<PathBuf>, cpu: Option<PathBuf>, pids: Option<PathBuf> },
    /// The unified hierarchy: this process's own cgroup and the controllers it offers.
    V2 { base: PathBuf, controllers: Vec<String> },
}

impl Hierarchy {
    /// Reads /proc/self/mountinfo and /proc/self/cgroup. Controllers on a v1 hierarchy win over
    /// the unified one (a hybrid machine keeps them on v1, as this one does).
    pub fn detect() -> Result<Hierarchy> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        Ok(Self::from_proc(&mountinfo, &own, |p| fs::read_to_string(p).ok()))
    }

    fn from_proc(mountinfo: &str, own: &str, read_file: impl Fn(&Path) -> Option<String>) -> Hierarchy {
        let mut v1: Vec<(String, PathBuf, String)> = vec![]; // (controllers, mount point, root)
        let mut v2: Option<(PathBuf, String)> = None;
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else { continue };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let (root, mount) = (pre[3].to_string(), PathBuf::from(unescape(pre[4])));
            match post[0] {
                "cgroup" => v1.push((post[2].to_string(), mount, root)),
                "cgroup2" if v2.is_none() => v2 = Some((mount, root)),
                _ => {}
            }
        }
        // "ID:controllers:path" per hierarchy; v2 is "0::path".
        let own_path = |want: &str| -> Option<String> {
            own.lines().find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
                if want.is_empty() {
                    (ctl.is_empty()).then(|| path.to_string())
                } else {
                    ctl.split(',').any(|c| c == want).then(|| path.to_string())
                }
            })
        };
        let join = |mount: &Path, root: &str, path: &str| -> PathBuf {
            // The mount shows `root` of the hierarchy; our path is relative to the hierarchy's root.
            let rel = path.strip_prefix(root).unwrap_or(path).trim_start_matches('/');
            if rel.is_empty() {
                mount.to_path_buf()
            } else {
                mount.join(rel)
            }
        };
        let v1_dir = |ctl: &str| -> Option<PathBuf> {
            let (_, mount, root) = v1.iter().find(|(opts, _, _)| opts.split(',').any(|o| o == ctl))?;
            Some(join(mount, root, &own_path(ctl)?))
        };
        let (memory, cpu, pids) = (v1_dir("memory"), v1_dir("cpu"), v1_dir("pids"));
        if memory.is_some() || cpu.is_some() || pids.is_some() || v2.is_none() {
            return Hierarchy::V1 { memory, cpu, pids };
        }
        let (mount, root) = v2.unwrap();
        let base = join(&mount, &root, &own_path("").unwrap_or_else(|| "/".into()));
        let controllers = read_file(&base.join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Hierarchy::V2 { base, controllers }
    }

    /// Whether `ctl` (memory, cpu, pids) is available.
    pub fn has(&self, ctl: &str) -> bool {
        match self {
            Hierarchy::V1 { memory, cpu, pids } => match ctl {
                "memory" => memory.is_some(),
                "cpu" => cpu.is_some(),
                "pids" => pids.is_some(),
                _ => false,
            },
            Hierarchy::V2 { controllers, .. } => controllers.iter().any(|c| c == ctl),
        }
    }
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read(p: impl AsRef<Path>) -> Result<String> {
    let p = p.as_ref();
    fs::read_to_string(p).map_err(io(p))
}

fn write(p: &Path, v: &str) -> Result<()> {
    fs::write(p, v).map_err(io(p))
}

/// One cgroup (per controller on v1), created by [`Cgroup::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// (controller, directory); on v2 one entry named "unified".
    dirs: Vec<(&'static str, PathBuf)>,
    v2: bool,
}

impl Cgroup {
    /// Creates (or opens) `rel` (e.g. `yard/<cluster>/pod<uid>/<container>`) below this process's
    /// own cgroup and writes `limits`. Every controller that exists gets the directory, so a
    /// process joins all of them; a limit whose controller is missing is an error.
    pub fn create(h: &Hierarchy, rel: &str, limits: &Limits) -> Result<Cgroup> {
        let rel = rel.trim_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(CgroupError::Parse(format!("invalid cgroup path {rel:?}")));
        }
        let need = |set: bool, ctl: &'static str| -> Result<()> {
            if set && !h.has(ctl) {
                return Err(CgroupError::NoController(ctl));
            }
            Ok(())
        };
        need(limits.memory_bytes.is_some(), "memory")?;
        need(limits.cpu_quota_us.is_some() || limits.cpu_shares.is_some(), "cpu")?;
        need(limits.pids_max.is_some(), "pids")?;
        let cg = match h {
            Hierarchy::V1 { memory, cpu, pids } => {
                let mut dirs = vec![];
                for (name, base) in [("memory", memory), ("cpu", cpu), ("pids", pids)] {
                    if let Some(b) = base {
                        let d = b.join(rel);
                        fs::create_dir_all(&d).map_err(io(&d))?;
                        dirs.push((name, d));
                    }
                }
                Cgroup { dirs, v2: false }
            }
            Hierarchy::V2 { base, controllers } => {
                // Each parent below ours hands the controllers down to its children.
                let enable: Vec<&str> =
                    ["memory", "cpu", "pids"].into_iter().filter(|c| controllers.iter().any(|x| x == c)).collect();
                let mut d = base.clone();
                for comp in rel.split('/') {
                    if !enable.is_empty() {
                        let ctl = d.join("cgroup.subtree_control");
                        let v: Vec<String> = enable.iter().map(|c| format!("+{c}")).collect();
                        write(&ctl, &v.join(" "))?;
                    }
                    d = d.join(comp);
                    if !d.exists() {
                        fs::create_dir(&d).map_err(io(&d))?;
                    }
                }
                Cgroup { dirs: vec![("unified", d)], v2: true }
            }
        };
        cg.set(limits)?;
        Ok(cg)
    }

    fn dir(&self, ctl: &str) -> Option<&Path> {
        self.dirs.iter().find(|(n, _)| *n == ctl || *n == "unified").map(|(_, d)| d.as_path())
    }

    /// Writes `limits` (an absent limit is written as "no limit", so an update can lift one).
    pub fn set(&self, l: &Limits) -> Result<()> {
        let period = if l.cpu_period_us == 0 { CPU_PERIOD_US } else { l.cpu_period_us };
        if self.v2 {
            let d = self.dir("unified").expect("v2 dir");
            let has = |f: &str| d.join(f).exists();
            if has("memory.max") {
                write(&d.join("memory.max"), &l.memory_bytes.map_or("max".into(), |b| b.to_string()))?;
                if has("memory.swap.max") {
                    // No swap for limited containers (the kubelet's NoSwap behaviour).
                    write(&d.join("memory.swap.max"), if l.memory_bytes.is_some() { "0" } else { "max" })?;
                }
            }
            if has("cpu.max") {
                let q = l.cpu_quota_us.map_or("max".into(), |q| q.to_string());
                write(&d.join("cpu.max"), &format!("{q} {period}"))?;
            }
            if let (true, Some(s)) = (has("cpu.weight"), l.cpu_shares) {
                write(&d.join("cpu.weight"), &shares_to_weight(s).to_string())?;
            }
            if has("pids.max") {
                write(&d.join("pids.max"), &l.pids_max.map_or("max".into(), |p| p.to_string()))?;
            }
            return Ok(());
        }
        if let Some(d) = self.dir("memory") {
            let limit = l.memory_bytes.map_or("-1".to_string(), |b| b.to_string());
            let (mem, memsw) = (d.join("memory.limit_in_bytes"), d.join("memory.memsw.limit_in_bytes"));
            // memsw must stay >= the memory limit: order the two writes by direction.
            let cur: i128 = read(&mem)?.trim().parse().unwrap_or(i128::MAX);
            let new: i128 = l.memory_bytes.map_or(i128::MAX, |b| b as i128);
            let memsw_exists = memsw.exists();
            if new < cur {
                write(&mem, &limit)?;
                if memsw_exists {
                    write(&memsw, &limit)?;
                }
            } else {
                if memsw_exists {
                    write(&memsw, &limit)?;
                }
                write(&mem, &limit)?;
            }
        }
        if let Some(d) = self.dir("cpu") {
            write(&d.join("cpu.cfs_period_us"), &period.to_string())?;
            write(&d.join("cpu.cfs_quota_us"), &l.cpu_quota_us.map_or("-1".into(), |q| q.to_string()))?;
            if let Some(s) = l.cpu_shares {
                write(&d.join("cpu.shares"), &s.to_string())?;
            }
        }
        if let Some(d) = self.dir("pids") {
            write(&d.join("pids.max"), &l.pids_max.map_or("max".into(), |p| p.to_string()))?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files, opened for writing: open them before fork and have the child
    /// write `0` to each ([`join_self`]), so the program runs limited from its first instruction.
    pub fn open_procs(&self) -> Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|(_, d)| {
                let p = d.join("cgroup.procs");
                OpenOptions::new().write(true).open(&p).map_err(io(&p))
            })
            .collect()
    }

    /// Moves process `pid` into this cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in this cgroup (its own, not its children's).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let Some((_, d)) = self.dirs.first() else { return Ok(vec![]) };
        let s = read(d.join("cgroup.procs"))?;
        Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// How many times the kernel's OOM killer has killed a process here (`oom_kill` in v1's
    /// `memory.oom_control`, v2's `memory.events`); compare before and after an exit.
    pub fn oom_kills(&self) -> Result<u64> {
        let Some(d) = self.dir("memory") else { return Ok(0) };
        let f = if self.v2 { d.join("memory.events") } else { d.join("memory.oom_control") };
        if !f.exists() {
            return Ok(0);
        }
        let s = read(&f)?;
        Ok(s.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok())).unwrap_or(0))
    }

    /// Peak memory use in bytes, when the kernel reports it.
    pub fn memory_peak(&self) -> Option<u64> {
        let d = self.dir("memory")?;
        let f = if self.v2 { d.join("memory.peak") } else { d.join("memory.max_usage_in_bytes") };
        fs::read_to_string(f).ok()?.trim().parse().ok()
    }

    /// Kills every process left in this cgroup and its children, then removes the directories
    /// (children first). Missing directories are fine: removal is idempotent.
    pub fn remove(&self) -> Result<()> {
        for (_, d) in &self.dirs {
            remove_tree(d)?;
        }
        Ok(())
    }

    /// The directory on each controller (for tests and diagnostics).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// In a forked child before exec: joins the cgroups whose `cgroup.procs` were opened by
/// [`Cgroup::open_procs`]. Only a write(2) per file: safe between fork and exec.
pub fn join_self(procs: &[File]) -> std::io::Result<()> {
    for mut f in procs {
        f.write_all(b"0")?;
    }
    Ok(())
}

fn remove_tree(d: &Path) -> Result<()> {
    if !d.exists() {
        return Ok(());
    }
    let entries = fs::read_dir(d).map_err(io(d))?;
    for e in entries {
        let e = e.map_err(io(d))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&e.path())?;
        }
    }
    let kill_file = d.join("cgroup.kill");
    for attempt in 0..200 {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            match fs::remove_dir(d) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                // EBUSY while the kernel finishes the last exit.
                Err(e) if attempt < 199 && e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(CgroupError::Io { path: d.to_path_buf(), source: e }),
            }
        } else if kill_file.exists() {
            let _ = fs::write(&kill_file, "1");
        } else {
            for p in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(CgroupError::Parse(format!("{}: processes did not leave", d.display())))
}

/// This machine's hierarchy, read once.
pub fn hierarchy() -> std::result::Result<&'static Hierarchy, String> {
    static H: std::sync::OnceLock<std::result::Result<Hierarchy, String>> = std::sync::OnceLock::new();
    H.get_or_init(|| Hierarchy::detect().map_err(|e| e.to_string())).as_ref().map_err(Clone::clone)
}

/// A pod's cgroup below the agent's own: `yard/pod<uid>`; its containers are children.
pub fn pod_rel(uid: &str) -> String {
    format!("yard/pod{uid}")
}

/// The kernel limits for a container's `resources`, as the kubelet computes them: the memory
/// limit, a CFS quota from the cpu limit, shares from the cpu request (which defaults to the limit).
/// `None` when the container asks for nothing.
pub fn container_limits(c: &k8s_openapi::api::core::v1::Container) -> std::result::Result<Option<Limits>, String> {
    let res = c.resources.as_ref();
    let get =
        |m: Option<&std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str|
         -> std::result::Result<Option<yard_api::quantity::Quantity>, String> {
            match m.and_then(|m| m.get(k)) {
                None => Ok(None),
                Some(q) => yard_api::quantity::Quantity::parse(&q.0)
                    .map(Some)
                    .map_err(|e| format!("resources {k} {:?}: {e}", q.0)),
            }
        };
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let mem = get(limits, "memory")?.map(|q| q.value()).filter(|v| *v > 0);
    let cpu_limit = get(limits, "cpu")?.map(|q| q.milli()).filter(|v| *v > 0);
    let cpu_request = get(requests, "cpu")?.map(|q| q.milli()).or(cpu_limit);
    if mem.is_none() && cpu_limit.is_none() && cpu_request.is_none() {
        return Ok(None);
    }
    let clamp = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
    Ok(Some(Limits {
        memory_bytes: mem.map(clamp),
        cpu_quota_us: cpu_limit.map(|m| milli_cpu_to_quota(clamp(m), CPU_PERIOD_US)),
        cpu_period_us: CPU_PERIOD_US,
        cpu_shares: cpu_request.map(|m| milli_cpu_to_shares(clamp(m))),
        pids_max: None,
    }))
}

/// The cgroup for one container's runs: `yard/pod<uid>/<container>` with its limits. A container
/// with limits that cannot be had is an error; one without gets its cgroup when the machine
/// allows (for accounting and to reap what it leaves), else `Ok(None)`.
pub fn for_container(
    uid: &str,
    c: &k8s_openapi::api::core::v1::Container,
) -> std::result::Result<Option<Cgroup>, String> {
    let limits = container_limits(c)?;
    let rel = format!("{}/{}", pod_rel(uid), c.name);
    match (hierarchy(), limits) {
        (Ok(h), Some(l)) => Cgroup::create(h, &rel, &l).map(Some).map_err(|e| format!("cgroup {rel}: {e}")),
        (Err(e), Some(_)) => Err(format!("resource limits need cgroups: {e}")),
        (Ok(h), None) => match Cgroup::create(h, &rel, &Limits::default()) {
            Ok(g) => Ok(Some(g)),
            Err(e) => {
                tracing::debug!("no cgroup for {rel}: {e}");
                Ok(None)
            }
        },
        (Err(_), None) => Ok(None),
    }
}

/// Removes a pod's cgroups (killing anything left in them); nothing there is fine.
pub fn remove_pod(uid: &str) -> Result<()> {
    let Ok(h) = hierarchy() else { return Ok(()) };
    let rel = pod_rel(uid);
    let dirs: Vec<PathBuf> = match h {
        Hierarchy::V1 { memory, cpu, pids } => {
            [memory, cpu, pids].into_iter().flatten().map(|b| b.join(&rel)).collect()
        }
        Hierarchy::V2 { base, .. } => vec![base.join(&rel)],
    };
    for d in dirs {
        remove_tree(&d)?;
        // The shared `yard` parent goes with its last pod (rmdir refuses while others are there).
        if let Some(parent) = d.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_conversions() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(0, CPU_PERIOD_US), 0);
        assert_eq!(milli_cpu_to_quota(5, CPU_PERIOD_US), 1_000, "the kernel's minimum quota");
        assert_eq!(milli_cpu_to_quota(250, CPU_PERIOD_US), 25_000);
        assert_eq!(milli_cpu_to_quota(2000, CPU_PERIOD_US), 200_000);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn detects_hybrid_v1_with_nested_own_cgroup() {
        let mountinfo = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let own = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        let h = Hierarchy::from_proc(mountinfo, own, |_| None);
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: Some("/sys/fs/cgroup/memory/process_api/abc".into()),
                cpu: Some("/sys/fs/cgroup/cpu".into()),
                pids: Some("/sys/fs/cgroup/pids".into()),
            }
        );
    }

    #[test]
    fn detects_pure_v2_and_a_namespaced_root() {
        let mountinfo = "30 24 0:26 /kubepods /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = "0::/kubepods/agent\n";
        let h = Hierarchy::from_proc(mountinfo, own, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/agent/cgroup.controllers"));
            Some("cpuset cpu io memory pids\n".into())
        });
        match &h {
            Hierarchy::V2 { base, controllers } => {
                assert_eq!(base, Path::new("/sys/fs/cgroup/agent"));
                assert!(h.has("memory") && h.has("cpu") && h.has("pids"));
                assert_eq!(controllers.len(), 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_escaping_paths() {
        let h = Hierarchy::V1 { memory: Some("/nonexistent".into()), cpu: None, pids: None };
        for rel in ["", "/", "a/../../b", "a//b", "./a"] {
            assert!(Cgroup::create(&h, rel, &Limits::default()).is_err(), "{rel}");
        }
        let err = Cgroup::create(&h, "yard/x", &Limits { pids_max: Some(5), ..Default::default() }).unwrap_err();
        assert_eq!(err.to_string(), "no cgroup hierarchy with the pids controller on this machine");
    }
}
