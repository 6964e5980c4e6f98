//! Container environment as kubelet builds it: Service link variables (`envvars.FromServices`),
//! `envFrom`, `env` with `valueFrom`, and `$(VAR)` expansion.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, Service};

/// Whether a Service gets variables: it has a ClusterIP that is neither empty nor `None`.
fn service_ip_set(s: &Service) -> bool {
    let ip = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    !ip.is_empty() && ip != "None"
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The variables of a list of Services, in kubelet's order for each Service.
pub fn from_services(services: &[&Service]) -> Vec<(String, String)> {
    let mut out = vec![];
    for svc in services {
        if !service_ip_set(svc) {
            continue;
        }
        let spec = svc.spec.as_ref().expect("service_ip_set checked spec");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = env_name(svc.metadata.name.as_deref().unwrap_or(""));
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        let port_name = format!("{prefix}_SERVICE_PORT");
        out.push((port_name.clone(), first.port.to_string()));
        for sp in &ports {
            if let Some(n) = sp.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{port_name}_{}", env_name(n)), sp.port.to_string()));
            }
        }
        for (i, sp) in ports.iter().enumerate() {
            let proto = sp.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "TCP".into());
            let lower = proto.to_lowercase();
            let url = format!("{lower}://{}", join_host_port(&ip, sp.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", sp.port, proto.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), lower));
            out.push((format!("{pp}_PORT"), sp.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.clone()));
        }
    }
    out
}

/// The Service variables a pod gets (kubelet's getServiceEnvVarMap): the master service
/// `default/kubernetes` always, Services of the pod's namespace when enableServiceLinks is not
/// false (a namespace-local Service of the same name wins).
pub fn service_env(pod: &Pod, services: &[Service]) -> BTreeMap<String, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let mut map: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services {
        if !service_ip_set(s) {
            continue;
        }
        let name = s.metadata.name.clone().unwrap_or_default();
        let sns = s.metadata.namespace.as_deref().unwrap_or("default");
        if sns == "default" && name == "kubernetes" {
            map.entry(name).or_insert(s);
        } else if sns == ns && links {
            map.insert(name, s);
        }
    }
    let list: Vec<&Service> = map.values().copied().collect();
    from_services(&list).into_iter().collect()
}

/// Expand `$(VAR)` references as kubelet does (`$$` escapes, unknown references stay verbatim).
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b: Vec<char> = input.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '$' && i + 1 < b.len() {
            match b[i + 1] {
                '$' => {
                    out.push('$');
                    i += 2;
                }
                '(' => {
                    if let Some(end) = b[i + 2..].iter().position(|c| *c == ')') {
                        let name: String = b[i + 2..i + 2 + end].iter().collect();
                        match lookup(&name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(&name);
                                out.push(')');
                            }
                        }
                        i += end + 3;
                    } else {
                        out.extend(&b[i..]);
                        i = b.len();
                    }
                }
                c => {
                    out.push('$');
                    out.push(c);
                    i += 2;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// What a container's environment is made from besides the pod: the ConfigMaps and Secrets
/// (decoded) its env refers to, keyed by name, and the Services visible to the pod.
#[derive(Default, Clone, Debug)]
pub struct Objects {
    pub config_maps: HashMap<String, BTreeMap<String, String>>,
    pub secrets: HashMap<String, BTreeMap<String, String>>,
    pub services: Vec<Service>,
}

/// Names of ConfigMaps and Secrets a container refers to.
pub fn referenced(c: &Container) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secs) = (vec![], vec![]);
    for ef in c.env_from.iter().flatten() {
        if let Some(r) = &ef.config_map_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &ef.secret_ref {
            secs.push(r.name.clone());
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(vf) = &e.value_from {
            if let Some(r) = &vf.config_map_key_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &vf.secret_key_ref {
                secs.push(r.name.clone());
            }
        }
    }
    cms.dedup();
    secs.dedup();
    (cms, secs)
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.chars().next().is_some_and(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Resolve a downward-API field path.
pub fn field_ref(pod: &Pod, path: &str) -> Option<String> {
    let md = &pod.metadata;
    let spec = pod.spec.as_ref();
    let st = pod.status.as_ref();
    let sub =
        |p: &str, prefix: &str| -> Option<String> { p.strip_prefix(prefix)?.strip_suffix("']").map(str::to_string) };
    Some(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" => st.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.hostIPs" => st
            .and_then(|s| s.host_ips.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip)
            .collect::<Vec<_>>()
            .join(","),
        "status.podIP" => st.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.podIPs" => st
            .and_then(|s| s.pod_ips.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip)
            .collect::<Vec<_>>()
            .join(","),
        p if p.starts_with("metadata.labels['") => {
            let k = sub(p, "metadata.labels['")?;
            md.labels.as_ref().and_then(|l| l.get(&k).cloned()).unwrap_or_default()
        }
        p if p.starts_with("metadata.annotations['") => {
            let k = sub(p, "metadata.annotations['")?;
            md.annotations.as_ref().and_then(|l| l.get(&k).cloned()).unwrap_or_default()
        }
        _ => return None,
    })
}

/// Build a container's environment. `pod` must carry status.podIP/hostIP already. Errors are the
/// messages kubelet reports with `CreateContainerConfigError`.
pub fn container_env(
    pod: &Pod,
    c: &Container,
    objs: &Objects,
    node_capacity: (&str, &str),
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let svc_env = service_env(pod, &objs.services);
    let mut tmp: Vec<(String, String)> = vec![];
    let set = |tmp: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = tmp.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            tmp.push((k, v));
        }
    };
    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        if let Some(r) = &ef.config_map_ref {
            match objs.config_maps.get(&r.name) {
                Some(m) => {
                    for (k, v) in m {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut tmp, name, v.clone());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &ef.secret_ref {
            match objs.secrets.get(&r.name) {
                Some(m) => {
                    for (k, v) in m {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut tmp, name, v.clone());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => {
                let v = e.value.clone().unwrap_or_default();
                let snapshot = tmp.clone();
                expand(&v, &|n: &str| {
                    snapshot
                        .iter()
                        .rev()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                        .or_else(|| svc_env.get(n).cloned())
                })
            }
            Some(vf) if e.value.as_deref().is_some_and(|v| !v.is_empty()) && vf.field_ref.is_none() => {
                e.value.clone().unwrap_or_default()
            }
            Some(vf) => {
                if let Some(f) = &vf.field_ref {
                    field_ref(pod, &f.field_path).ok_or_else(|| format!("unsupported fieldPath: {}", f.field_path))?
                } else if let Some(r) = &vf.config_map_key_ref {
                    match objs.config_maps.get(&r.name).map(|m| m.get(&r.key)) {
                        Some(Some(v)) => v.clone(),
                        _ if r.optional == Some(true) => continue,
                        Some(None) => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &vf.secret_key_ref {
                    match objs.secrets.get(&r.name).map(|m| m.get(&r.key)) {
                        Some(Some(v)) => v.clone(),
                        _ if r.optional == Some(true) => continue,
                        Some(None) => return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)),
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &vf.resource_field_ref {
                    resource_field(c, &r.resource, node_capacity)
                } else {
                    String::new()
                }
            }
        };
        set(&mut tmp, e.name.clone(), value);
    }
    for (k, v) in svc_env {
        if !tmp.iter().any(|(n, _)| *n == k) {
            tmp.push((k, v));
        }
    }
    Ok(tmp)
}

pub(crate) fn resource_field(c: &Container, resource: &str, (cpu, mem): (&str, &str)) -> String {
    let r = c.resources.as_ref();
    let get = |kind: &str, name: &str| -> Option<String> {
        let m = if kind == "limits" { r.and_then(|r| r.limits.as_ref()) } else { r.and_then(|r| r.requests.as_ref()) };
        m.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let v = get(kind, name);
    match (name, v) {
        ("cpu", Some(q)) => cpu_cores_ceil(&q).to_string(),
        ("cpu", None) => {
            if kind == "limits" {
                cpu.to_string()
            } else {
                "0".into()
            }
        }
        ("memory", Some(q)) => q,
        ("memory", None) => {
            if kind == "limits" {
                mem.to_string()
            } else {
                "0".into()
            }
        }
        (_, Some(q)) => q,
        (_, None) => "0".into(),
    }
}

fn cpu_cores_ceil(q: &str) -> i64 {
    if let Some(m) = q.strip_suffix('m') {
        let m: i64 = m.parse().unwrap_or(0);
        (m + 999) / 1000
    } else {
        q.parse::<f64>().map(|f| f.ceil() as i64).unwrap_or(0)
    }
}

/// `(command, args)` after `$(VAR)` expansion against the final environment.
pub fn expand_argv(c: &Container, env: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let look = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let cmd = c.command.clone().unwrap_or_default().iter().map(|s| expand(s, &look)).collect();
    let args = c.args.clone().unwrap_or_default().iter().map(|s| expand(s, &look)).collect();
    (cmd, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn kubelet_service_variables() {
        let services = vec![
            svc(serde_json::json!({"metadata":{"name":"kubernetes","namespace":"default"},
                "spec":{"clusterIP":"10.96.0.1","ports":[{"name":"https","port":443,"protocol":"TCP","targetPort":6443}]}})),
            svc(serde_json::json!({"metadata":{"name":"my-svc","namespace":"web"},
                "spec":{"clusterIP":"10.96.5.6","ports":[{"port":80,"targetPort":9376},{"name":"dns-udp","port":53,"protocol":"UDP"}]}})),
            svc(
                serde_json::json!({"metadata":{"name":"headless","namespace":"web"},"spec":{"clusterIP":"None","ports":[{"port":80}]}}),
            ),
            svc(
                serde_json::json!({"metadata":{"name":"ext","namespace":"web"},"spec":{"type":"ExternalName","externalName":"example.com"}}),
            ),
            svc(
                serde_json::json!({"metadata":{"name":"other","namespace":"elsewhere"},"spec":{"clusterIP":"10.96.7.7","ports":[{"port":80}]}}),
            ),
        ];
        let pod: Pod = serde_json::from_value(
            serde_json::json!({"metadata":{"name":"p","namespace":"web"},"spec":{"containers":[]}}),
        )
        .unwrap();
        let got = service_env(&pod, &services);
        let want: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ("MY_SVC_SERVICE_HOST", "10.96.5.6"),
            ("MY_SVC_SERVICE_PORT", "80"),
            ("MY_SVC_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_SVC_PORT", "tcp://10.96.5.6:80"),
            ("MY_SVC_PORT_80_TCP", "tcp://10.96.5.6:80"),
            ("MY_SVC_PORT_80_TCP_PROTO", "tcp"),
            ("MY_SVC_PORT_80_TCP_PORT", "80"),
            ("MY_SVC_PORT_80_TCP_ADDR", "10.96.5.6"),
            ("MY_SVC_PORT_53_UDP", "udp://10.96.5.6:53"),
            ("MY_SVC_PORT_53_UDP_PROTO", "udp"),
            ("MY_SVC_PORT_53_UDP_PORT", "53"),
            ("MY_SVC_PORT_53_UDP_ADDR", "10.96.5.6"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);

        // enableServiceLinks: false keeps only the master service.
        let pod2: Pod = serde_json::from_value(serde_json::json!({"metadata":{"name":"p","namespace":"web"},
            "spec":{"enableServiceLinks":false,"containers":[]}}))
        .unwrap();
        let got2 = service_env(&pod2, &services);
        assert_eq!(got2.len(), 8);
        assert!(got2.keys().all(|k| k.starts_with("KUBERNETES_")));
    }

    #[test]
    fn env_resolution_and_expansion() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata":{"name":"p1","namespace":"ns1","uid":"u"},
            "spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox",
              "command":["echo","$(GREETING) $(MISSING) $$(ESC)"],
              "envFrom":[{"configMapRef":{"name":"cm"},"prefix":"CM_"}],
              "env":[
                {"name":"GREETING","value":"hi-$(POD_NAME)"},
                {"name":"POD_NAME","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}},
                {"name":"SECOND","value":"$(POD_NAME)-x"},
                {"name":"IP","valueFrom":{"fieldRef":{"fieldPath":"status.podIP"}}},
                {"name":"K","valueFrom":{"configMapKeyRef":{"name":"cm","key":"a"}}},
                {"name":"S","valueFrom":{"secretKeyRef":{"name":"sec","key":"pw"}}}
              ]}]},
            "status":{"podIP":"10.244.0.9"}}))
        .unwrap();
        let mut objs = Objects::default();
        objs.config_maps.insert("cm".into(), [("a".to_string(), "1".to_string()), ("1bad".into(), "x".into())].into());
        objs.secrets.insert("sec".into(), [("pw".to_string(), "s3cr3t".to_string())].into());
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env = container_env(&pod, c, &objs, ("2", "1Gi")).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CM_a"), Some("1"));
        assert_eq!(get("CM_1bad"), Some("x"));
        assert_eq!(get("GREETING"), Some("hi-$(POD_NAME)"), "not yet defined when GREETING is evaluated");
        assert_eq!(get("SECOND"), Some("p1-x"));
        assert_eq!(get("IP"), Some("10.244.0.9"));
        assert_eq!(get("K"), Some("1"));
        assert_eq!(get("S"), Some("s3cr3t"));
        let (cmd, _) = expand_argv(c, &env);
        assert_eq!(cmd, vec!["echo".to_string(), "hi-$(POD_NAME) $(MISSING) $(ESC)".into()]);

        let mut missing = objs.clone();
        missing.secrets.clear();
        assert_eq!(container_env(&pod, c, &missing, ("2", "1Gi")).unwrap_err(), "secret \"sec\" not found");
    }
}
