//! `seccompProfile`: `Unconfined` (the default, as upstream), `RuntimeDefault` (a filter that
//! refuses with EPERM the system calls container runtimes keep from containers: namespaces and
//! mounts, kernel modules and kexec, reboot, swap, clock setting, keyrings, BPF and perf, handle
//! based opens), and `Localhost`, which Yard refuses with a clear error (it has no profile
//! directory). A privileged container runs unconfined, as with containerd. The filter is compiled
//! with `seccompiler` before fork and installed in the child while it still has CAP_SYS_ADMIN, so
//! it does not need (or set) no_new_privs.

use std::collections::BTreeMap;
use std::io;

use k8s_openapi::api::core::v1::{Container, Pod};

/// What the container's processes are filtered with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    #[default]
    Unconfined,
    RuntimeDefault,
}

/// The system calls `RuntimeDefault` refuses.
const DENIED: &[libc::c_long] = &[
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_lookup_dcookie,
    libc::SYS_vhangup,
];

impl Profile {
    /// The container's `seccompProfile` over the pod's.
    pub fn for_container(pod: &Pod, c: &Container) -> Result<Profile, String> {
        let csc = c.security_context.as_ref();
        if csc.and_then(|s| s.privileged).unwrap_or(false) {
            return Ok(Profile::Unconfined);
        }
        let prof = csc.and_then(|s| s.seccomp_profile.as_ref()).or_else(|| {
            pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.seccomp_profile.as_ref())
        });
        match prof.map(|p| p.type_.as_str()) {
            None | Some("Unconfined") => Ok(Profile::Unconfined),
            Some("RuntimeDefault") => Ok(Profile::RuntimeDefault),
            Some("Localhost") => Err(format!(
                "seccomp profile type Localhost ({:?}) is not supported by this node: it has no local profiles",
                prof.and_then(|p| p.localhost_profile.clone()).unwrap_or_default()
            )),
            Some(other) => Err(format!("unknown seccomp profile type {other:?}")),
        }
    }

    /// The BPF program, compiled before fork (`None` for Unconfined).
    pub fn compile(&self) -> io::Result<Option<Filter>> {
        if *self == Profile::Unconfined {
            return Ok(None);
        }
        let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = DENIED.iter().map(|n| (*n, vec![])).collect();
        let arch = if cfg!(target_arch = "aarch64") {
            seccompiler::TargetArch::aarch64
        } else {
            seccompiler::TargetArch::x86_64
        };
        let filter = seccompiler::SeccompFilter::new(
            rules,
            seccompiler::SeccompAction::Allow,
            seccompiler::SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(io::Error::other)?;
        let prog: seccompiler::BpfProgram = filter.try_into().map_err(io::Error::other)?;
        Ok(Some(Filter(prog)))
    }
}

/// A compiled filter.
pub struct Filter(seccompiler::BpfProgram);

impl Filter {
    /// In the child, while it has CAP_SYS_ADMIN (before the user switch).
    pub fn install(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.0.len() as u16,
            // seccompiler's sock_filter has the kernel's layout (u16, u8, u8, u32).
            filter: self.0.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies the program; it lives until the call returns.
        let rc = unsafe {
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0 as libc::c_ulong, &prog as *const _)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
