//! Linux capabilities of a container, as container runtimes set them: the runtime's default set,
//! `securityContext.capabilities.add`/`drop` (names with or without `CAP_`, or `ALL`), and
//! `privileged: true` for every capability. The bounding set is cut to the container's set (so
//! nothing it executes can get more back), and a root process gets exactly that set as its
//! permitted, effective and inheritable capabilities; a non-root one gets none effective (the
//! kernel clears them at `setuid`).

use std::io;

use k8s_openapi::api::core::v1::Container;

/// The capabilities' numbers (linux/capability.h).
const NAMES: &[(&str, u32)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

/// containerd's and CRI-O's default set.
const DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn number(name: &str) -> Option<u32> {
    let n = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| *v)
}

/// The highest capability this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

fn all_mask() -> u64 {
    let last = last_cap().min(63);
    if last == 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// A container's capability set, prepared before fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    /// The capabilities the container keeps.
    pub set: u64,
    /// Every capability this kernel has (what the bounding set starts with).
    pub all: u64,
}

impl Default for Caps {
    /// Everything: what a process the agent starts had before this existed.
    fn default() -> Self {
        let all = all_mask();
        Caps { set: all, all }
    }
}

impl Caps {
    /// From `securityContext`: privileged is everything; otherwise the default set, minus `drop`,
    /// plus `add`, applied in that order (`ALL` in drop empties the set first, in add fills it).
    pub fn for_container(c: &Container) -> Result<Caps, String> {
        let all = all_mask();
        let sc = c.security_context.as_ref();
        if sc.and_then(|s| s.privileged).unwrap_or(false) {
            return Ok(Caps { set: all, all });
        }
        let mut set = 0u64;
        for n in DEFAULT {
            set |= 1 << number(n).unwrap_or(0);
        }
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let parse = |n: &String| -> Result<Option<u32>, String> {
            if n.eq_ignore_ascii_case("ALL") || n.eq_ignore_ascii_case("CAP_ALL") {
                return Ok(None);
            }
            number(n).map(Some).ok_or_else(|| format!("unknown capability {n:?}"))
        };
        for d in caps.and_then(|c| c.drop.as_ref()).into_iter().flatten() {
            match parse(d)? {
                None => set = 0,
                Some(b) => set &= !(1u64 << b),
            }
        }
        for a in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
            match parse(a)? {
                None => set = all,
                Some(b) => set |= 1u64 << b,
            }
        }
        Ok(Caps { set: set & all, all })
    }

    /// In the child before the user switch: cut the bounding set (needs CAP_SETPCAP, which the
    /// agent has).
    pub fn drop_bounding(&self) -> io::Result<()> {
        for b in 0..64u32 {
            if self.all & (1 << b) != 0 && self.set & (1 << b) == 0 {
                // SAFETY: prctl with integer arguments.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, b as libc::c_ulong, 0, 0, 0) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// In the child after the user switch, for a process that is still root: permitted,
    /// effective and inheritable become the set.
    pub fn set_root(&self) -> io::Result<()> {
        if self.set == self.all {
            return Ok(());
        }
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut h = Header { version: VERSION_3, pid: 0 };
        let lo = self.set as u32;
        let hi = (self.set >> 32) as u32;
        let d = [
            Data { effective: lo, permitted: lo, inheritable: lo },
            Data { effective: hi, permitted: hi, inheritable: hi },
        ];
        // SAFETY: capset reads the header and two data structs we own.
        if unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(yaml: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "securityContext": yaml})).unwrap()
    }

    #[test]
    fn default_add_drop_privileged() {
        let d = Caps::for_container(&c(serde_json::json!({}))).unwrap();
        assert_ne!(d.set & (1 << 5), 0, "KILL is in the default set");
        assert_eq!(d.set & (1 << 21), 0, "SYS_ADMIN is not");
        let x =
            Caps::for_container(&c(serde_json::json!({"capabilities": {"add": ["NET_ADMIN"], "drop": ["CAP_KILL"]}})))
                .unwrap();
        assert_ne!(x.set & (1 << 12), 0);
        assert_eq!(x.set & (1 << 5), 0);
        let none = Caps::for_container(&c(serde_json::json!({"capabilities": {"drop": ["ALL"]}}))).unwrap();
        assert_eq!(none.set, 0);
        let p = Caps::for_container(&c(serde_json::json!({"privileged": true}))).unwrap();
        assert_eq!(p.set, p.all);
        assert!(Caps::for_container(&c(serde_json::json!({"capabilities": {"add": ["FLY"]}}))).is_err());
    }
}
