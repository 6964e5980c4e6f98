//! Per-pod `/etc/resolv.conf` and `/etc/hosts`, generated as kubelet does.

use k8s_openapi::api::core::v1::Pod;

/// Settings the node contributes to a pod's DNS configuration.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    pub cluster_domain: String,
    pub cluster_dns: Vec<String>,
    /// The node's own resolv.conf text (for dnsPolicy Default and host-network pods).
    pub host_resolv_conf: String,
}

#[derive(Default, Debug, PartialEq)]
struct ResolvConf {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

fn parse_resolv(text: &str) -> ResolvConf {
    let mut r = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => r.nameservers.extend(f.next().map(str::to_string)),
            Some("search") | Some("domain") => r.searches = f.map(str::to_string).collect(),
            Some("options") => r.options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    r
}

/// Merge options as kubelet does: later values for the same option name win, order of first
/// appearance kept.
fn merge_options(base: &[String], extra: &[(String, Option<String>)]) -> Vec<String> {
    let mut out: Vec<(String, Option<String>)> = vec![];
    let mut put = |name: String, value: Option<String>| {
        if let Some(e) = out.iter_mut().find(|(n, _)| *n == name) {
            e.1 = value;
        } else {
            out.push((name, value));
        }
    };
    for o in base {
        match o.split_once(':') {
            Some((n, v)) => put(n.to_string(), Some(v.to_string())),
            None => put(o.clone(), None),
        }
    }
    for (n, v) in extra {
        put(n.clone(), v.clone());
    }
    out.into_iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}:{v}"),
            None => n,
        })
        .collect()
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The resolv.conf text for a pod.
pub fn resolv_conf(pod: &Pod, s: &DnsSettings) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.clone().unwrap_or_else(|| "ClusterFirst".into());
    let host = parse_resolv(&s.host_resolv_conf);
    let mut r = match policy.as_str() {
        "None" => ResolvConf::default(),
        "Default" => ResolvConf {
            nameservers: host.nameservers.clone(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
        "ClusterFirst" if host_network => ResolvConf {
            nameservers: host.nameservers.clone(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
        _ if s.cluster_dns.is_empty() => ResolvConf {
            nameservers: host.nameservers.clone(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
        _ => {
            let d = &s.cluster_domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(host.searches.iter().cloned());
            ResolvConf { nameservers: s.cluster_dns.clone(), searches, options: vec!["ndots:5".into()] }
        }
    };
    if let Some(cfg) = spec.dns_config.as_ref() {
        r.nameservers.extend(cfg.nameservers.clone().unwrap_or_default());
        r.searches.extend(cfg.searches.clone().unwrap_or_default());
        let extra: Vec<(String, Option<String>)> = cfg
            .options
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|o| (o.name.unwrap_or_default(), o.value))
            .collect();
        r.options = merge_options(&r.options, &extra);
    }
    r.nameservers = dedup(r.nameservers);
    r.nameservers.truncate(3);
    r.searches = dedup(r.searches);
    r.searches.truncate(32);
    let mut out = String::new();
    for n in &r.nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    if !r.options.is_empty() {
        out.push_str(&format!("options {}\n", r.options.join(" ")));
    }
    out
}

/// The /etc/hosts text for a pod, in kubelet's layout.
pub fn hosts_file(pod: &Pod, pod_ip: &str, cluster_domain: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let hostname = pod_hostname(pod);
    if let Some(sub) = spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        out.push_str(&format!("{pod_ip}\t{hostname}.{sub}.{ns}.svc.{cluster_domain}\t{hostname}\n"));
    } else {
        out.push_str(&format!("{pod_ip}\t{hostname}\n"));
    }
    for ha in spec.host_aliases.unwrap_or_default() {
        let names = ha.hostnames.unwrap_or_default();
        if names.is_empty() {
            continue;
        }
        out.push_str("\n# Entries added by HostAliases.\n");
        out.push_str(&format!("{}\t{}\n", ha.ip, names.join("\t")));
    }
    out
}

/// The hostname of a pod's containers: spec.hostname, else the pod name (truncated to 63).
pub fn pod_hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    let mut h: String = h.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn settings() -> DnsSettings {
        DnsSettings {
            cluster_domain: "cluster.local".into(),
            cluster_dns: vec!["10.96.0.10".into()],
            host_resolv_conf: "nameserver 192.0.2.53\nsearch example.org\noptions edns0\n".into(),
        }
    }

    #[test]
    fn cluster_first() {
        let p = pod(serde_json::json!({"metadata":{"name":"a","namespace":"web"},"spec":{"containers":[]}}));
        assert_eq!(
            resolv_conf(&p, &settings()),
            "nameserver 10.96.0.10\nsearch web.svc.cluster.local svc.cluster.local cluster.local example.org\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_policy_uses_node() {
        let p = pod(
            serde_json::json!({"metadata":{"name":"a","namespace":"web"},"spec":{"dnsPolicy":"Default","containers":[]}}),
        );
        assert_eq!(resolv_conf(&p, &settings()), "nameserver 192.0.2.53\nsearch example.org\noptions edns0\n");
    }

    #[test]
    fn none_with_dns_config() {
        let p = pod(
            serde_json::json!({"metadata":{"name":"a","namespace":"web"},"spec":{"dnsPolicy":"None","containers":[],
            "dnsConfig":{"nameservers":["1.2.3.4"],"searches":["ns1.svc.cluster-domain.example","my.dns.search.suffix"],
            "options":[{"name":"ndots","value":"2"},{"name":"edns0"}]}}}),
        );
        assert_eq!(
            resolv_conf(&p, &settings()),
            "nameserver 1.2.3.4\nsearch ns1.svc.cluster-domain.example my.dns.search.suffix\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn cluster_first_with_dns_config_overrides_ndots() {
        let p = pod(serde_json::json!({"metadata":{"name":"a","namespace":"default"},"spec":{"containers":[],
            "dnsConfig":{"options":[{"name":"ndots","value":"1"}]}}}));
        let s = DnsSettings { host_resolv_conf: String::new(), ..settings() };
        assert_eq!(
            resolv_conf(&p, &s),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:1\n"
        );
    }

    #[test]
    fn hosts_has_pod_line() {
        let p = pod(
            serde_json::json!({"metadata":{"name":"web-0","namespace":"x"},"spec":{"hostname":"h","subdomain":"sub","containers":[]}}),
        );
        let h = hosts_file(&p, "10.244.1.5", "cluster.local");
        assert!(h.contains("10.244.1.5\th.sub.x.svc.cluster.local\th\n"), "{h}");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
    }
}
