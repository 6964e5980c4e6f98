//! Pod sandboxes on the node: the `cni0` bridge in the node namespace, one named network namespace
//! per pod with a veth pair into the bridge, file-backed IPAM over the node's podCIDR, and routes to
//! other nodes' podCIDRs.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use yard_netns::rtnl::Rtnl;

use crate::Error;

/// Name of the node bridge.
pub const BRIDGE: &str = "cni0";

/// Network identity of a node: its namespace and pod CIDR.
#[derive(Clone, Debug)]
pub struct NodeNet {
    /// Path of the node network namespace (`/proc/self/ns/net` when the agent runs in it).
    pub netns: PathBuf,
    pub cidr: Ipv4Net,
    /// Directory holding the IPAM allocation files.
    pub ipam_dir: PathBuf,
}

/// What was created for one pod.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Sandbox {
    /// Name of the pod network namespace under /run/netns.
    pub netns: String,
    /// Host-side veth in the node namespace.
    pub veth: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// Set for hostNetwork pods: they run in the node namespace and own nothing.
    #[serde(default)]
    pub host_netns: Option<PathBuf>,
}

impl Sandbox {
    pub fn netns_path(&self) -> PathBuf {
        match &self.host_netns {
            Some(p) => p.clone(),
            None => yard_netns::path_of(&self.netns),
        }
    }
}

fn ip_batch(ns: &Path, lines: &str) -> Result<(), Error> {
    let mut child = yard_netns::command_in(ns, "ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Sandbox(format!("spawn ip: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(lines.as_bytes())
        .map_err(|e| Error::Sandbox(format!("ip -batch stdin: {e}")))?;
    let out = child.wait_with_output().map_err(|e| Error::Sandbox(format!("ip -batch: {e}")))?;
    if !out.status.success() {
        return Err(Error::Sandbox(format!(
            "ip -batch in {}: {}: {}",
            ns.display(),
            lines.trim().replace('\n', "; "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn ip(ns: &Path, args: &[&str]) -> Result<String, Error> {
    yard_netns::output_in(ns, "ip", args).map_err(|e| Error::Sandbox(e.to_string()))
}

impl NodeNet {
    /// The bridge address: the first host of the pod CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        let n = u32::from(self.cidr.network());
        Ipv4Addr::from(n + 1)
    }

    /// Make sure `cni0` exists with the gateway address, is up, and forwarding is on (node
    /// namespace only).
    pub fn ensure_bridge(&self) -> Result<(), Error> {
        // A bridge whose address was never set takes the lowest of its ports' addresses, so it
        // changes when that pod goes; pods keep the old one in their ARP caches and their packets
        // to the gateway are flooded instead of delivered for up to a minute (seen: a Service
        // through the userspace proxy, whose VIP is local to this namespace, went dark after a
        // scale-down). A fixed address, derived from the gateway IP, never moves.
        let mac = bridge_mac(self.gateway());
        let links = ip(&self.netns, &["-o", "link", "show", "dev", BRIDGE]).unwrap_or_default();
        if links.trim().is_empty() {
            let _ = ip_batch(&self.netns, &format!("link add {BRIDGE} address {mac} type bridge\n"));
        } else if !links.contains(&format!("link/ether {mac} ")) {
            ip_batch(&self.netns, &format!("link set {BRIDGE} address {mac}\n"))?;
        }
        let addr = format!("{}/{}", self.gateway(), self.cidr.prefix_len());
        let have = ip(&self.netns, &["-o", "-4", "addr", "show", "dev", BRIDGE])?;
        if !have.contains(&format!(" {addr} ")) {
            ip_batch(&self.netns, &format!("addr replace {addr} dev {BRIDGE}\n"))?;
        }
        ip_batch(&self.netns, &format!("link set {BRIDGE} up\n"))?;
        let out = yard_netns::command_in(&self.netns, "sysctl")
            .args(["-q", "-w", "net.ipv4.ip_forward=1"])
            .output()
            .map_err(|e| Error::Sandbox(format!("sysctl: {e}")))?;
        if !out.status.success() {
            return Err(Error::Sandbox(format!("sysctl ip_forward: {}", String::from_utf8_lossy(&out.stderr))));
        }
        // Bridged pod-to-pod traffic through a Service on the same node needs the bridge hooks
        // (kube-proxy's requirement); per-namespace since Linux 5.3, absent without br_netfilter.
        let _ = yard_netns::command_in(&self.netns, "sysctl")
            .args(["-q", "-w", "net.bridge.bridge-nf-call-iptables=1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        Ok(())
    }

    fn ipam_subdir(&self) -> PathBuf {
        self.ipam_dir.join(self.cidr.to_string().replace('/', "_"))
    }

    /// Allocate an address for `owner` (the pod uid). Idempotent for an owner that already holds one.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, Error> {
        let dir = self.ipam_subdir();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        if let Some(ip) = self.owned_by(owner)? {
            return Ok(ip);
        }
        let net = u32::from(self.cidr.network());
        let bcast = u32::from(self.cidr.broadcast());
        // Start after the last allocation so freed addresses are not reused at once.
        let last_path = dir.join("last");
        let last = fs::read_to_string(&last_path).ok().and_then(|s| s.trim().parse::<Ipv4Addr>().ok()).map(u32::from);
        let first = net + 2;
        let span = bcast.saturating_sub(first);
        let start = match last {
            Some(l) if l >= first && l < bcast => l + 1 - first,
            _ => 0,
        };
        for i in 0..span {
            let cand = Ipv4Addr::from(first + (start + i) % span);
            let p = dir.join(cand.to_string());
            match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes()).map_err(|e| Error::io(&p, e))?;
                    let _ = fs::write(&last_path, cand.to_string());
                    return Ok(cand);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&p, e)),
            }
        }
        Err(Error::Sandbox(format!("pod CIDR {} exhausted", self.cidr)))
    }

    /// The address held by `owner`, if any.
    pub fn owned_by(&self, owner: &str) -> Result<Option<Ipv4Addr>, Error> {
        Ok(self.allocations()?.into_iter().find(|(_, o)| o == owner).map(|(ip, _)| ip))
    }

    /// All allocations: (address, owner).
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, Error> {
        let dir = self.ipam_subdir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut out = vec![];
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if let Ok(ip) = name.parse::<Ipv4Addr>() {
                let owner = fs::read_to_string(ent.path()).unwrap_or_default();
                out.push((ip, owner.trim().to_string()));
            }
        }
        Ok(out)
    }

    /// Release every address held by `owner`.
    pub fn release(&self, owner: &str) -> Result<(), Error> {
        for (ip, o) in self.allocations()? {
            if o == owner {
                let p = self.ipam_subdir().join(ip.to_string());
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&p, e)),
                }
            }
        }
        Ok(())
    }

    /// Create the sandbox of a pod: namespace, veth pair, address, routes. Idempotent: an existing
    /// namespace is recreated from scratch.
    pub fn create_sandbox(&self, netns_name: &str, uid: &str) -> Result<Sandbox, Error> {
        let ip = self.allocate(uid)?;
        let veth = veth_name(uid);
        let sb = Sandbox {
            netns: netns_name.to_string(),
            veth: veth.clone(),
            ip,
            gateway: self.gateway(),
            prefix_len: self.cidr.prefix_len(),
            host_netns: None,
        };
        let res = (|| {
            // A leftover from an earlier attempt is removed first.
            if yard_netns::exists(netns_name) {
                yard_netns::delete(netns_name).map_err(|e| Error::Sandbox(e.to_string()))?;
            }
            let path = yard_netns::create_once_shared(netns_name).map_err(|e| Error::Sandbox(e.to_string()))?;
            let nl_err = |what: &str, e: std::io::Error| Error::Sandbox(format!("{what}: {e}"));
            // Netlink in place of `ip`: four process starts per pod were most of a sandbox's cost.
            let mut node = Rtnl::open_in(&self.netns).map_err(|e| nl_err("netlink in the node namespace", e))?;
            node.del_link(&veth).map_err(|e| nl_err(&format!("delete leftover {veth}"), e))?;
            let bridge = node
                .link_index(BRIDGE)
                .map_err(|e| nl_err("find the bridge", e))?
                .ok_or_else(|| Error::Sandbox(format!("bridge {BRIDGE} is missing")))?;
            let pod_ns = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            node.add_veth(&veth, "eth0", pod_ns.as_fd(), Some(bridge))
                .map_err(|e| nl_err(&format!("add veth {veth} into {BRIDGE}"), e))?;
            let host_end = node
                .link_index(&veth)
                .map_err(|e| nl_err("find the veth", e))?
                .ok_or_else(|| Error::Sandbox(format!("{veth} vanished")))?;
            node.set_bridge_port_hairpin(host_end, true).map_err(|e| nl_err(&format!("hairpin on {veth}"), e))?;
            let mut pod = Rtnl::open_in(&path).map_err(|e| nl_err("netlink in the pod namespace", e))?;
            let eth0 = pod
                .link_index("eth0")
                .map_err(|e| nl_err("find eth0", e))?
                .ok_or_else(|| Error::Sandbox("eth0 did not arrive in the pod namespace".into()))?;
            pod.add_addr_v4(eth0, ip, sb.prefix_len)
                .map_err(|e| nl_err(&format!("address {ip}/{} on eth0", sb.prefix_len), e))?;
            pod.set_up(eth0).map_err(|e| nl_err("set eth0 up", e))?;
            pod.replace_default_route_v4(sb.gateway)
                .map_err(|e| nl_err(&format!("default route via {}", sb.gateway), e))?;
            Ok::<_, Error>(())
        })();
        if let Err(e) = res {
            let _ = self.delete_sandbox(netns_name, &veth, uid);
            return Err(e);
        }
        Ok(sb)
    }

    /// Remove a sandbox: processes left in it, the namespace, the veth, the address.
    pub fn delete_sandbox(&self, netns_name: &str, veth: &str, uid: &str) -> Result<(), Error> {
        if netns_name.is_empty() || netns_name.contains('/') || veth.is_empty() {
            // hostNetwork pod (or garbage): never touch the node namespace or /run/netns itself.
            return self.release(uid);
        }
        let path = yard_netns::path_of(netns_name);
        if path.exists() {
            kill_processes_in_netns(&path);
        }
        if let Ok(mut node) = Rtnl::open_in(&self.netns) {
            let _ = node.del_link(veth);
        }
        // The file may be covered more than once (stacked /run/netns binds): unmount until it is
        // a plain file again, then remove it.
        let mut res = Ok(());
        for _ in 0..16 {
            res = yard_netns::delete(netns_name).map_err(|e| Error::Sandbox(e.to_string()));
            if !path.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.release(uid)?;
        res
    }

    /// Make the node namespace route every other node's pod CIDR via that node's IP.
    pub fn sync_routes(&self, others: &[(Ipv4Net, Ipv4Addr)]) -> Result<(), Error> {
        for (cidr, via) in others {
            if *cidr == self.cidr {
                continue;
            }
            let _ = ip_batch(&self.netns, &format!("route replace {cidr} via {via}\n"));
        }
        Ok(())
    }
}

/// The pod bridge's fixed MAC address: locally administered, unicast, from the gateway IP.
pub fn bridge_mac(gateway: Ipv4Addr) -> String {
    let o = gateway.octets();
    format!("02:79:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Host-side veth name for a pod uid (max 15 chars).
pub fn veth_name(uid: &str) -> String {
    let short: String = uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    format!("veth{short}")
}

/// Kill every process whose network namespace is the one at `path` (SIGKILL), and wait a little
/// for them to go.
pub fn kill_processes_in_netns(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else { return };
    let (dev, ino) = (meta.dev(), meta.ino());
    let find = || {
        let mut pids = vec![];
        if let Ok(rd) = fs::read_dir("/proc") {
            for ent in rd.flatten() {
                let Ok(pid) = ent.file_name().to_string_lossy().parse::<i32>() else { continue };
                if let Ok(m) = fs::metadata(format!("/proc/{pid}/ns/net")) {
                    if m.dev() == dev && m.ino() == ino {
                        pids.push(pid);
                    }
                }
            }
        }
        pids
    };
    for _ in 0..50 {
        let pids = find();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// First global IPv4 address in a namespace that is not on the bridge.
pub fn first_ipv4(ns: &Path) -> Option<Ipv4Addr> {
    let out = ip(ns, &["-o", "-4", "addr", "show", "scope", "global"]).ok()?;
    for line in out.lines() {
        let mut f = line.split_whitespace();
        let _idx = f.next();
        let dev = f.next().unwrap_or("");
        if dev == BRIDGE {
            continue;
        }
        let rest: Vec<&str> = f.collect();
        if let Some(pos) = rest.iter().position(|w| *w == "inet") {
            if let Some(a) = rest.get(pos + 1) {
                if let Ok(n) = a.parse::<Ipv4Net>() {
                    return Some(n.addr());
                }
            }
        }
    }
    None
}
