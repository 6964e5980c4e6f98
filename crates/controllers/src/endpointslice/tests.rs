use super::*;
use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub(crate) fn svc(name: &str, selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ports: Some(ports),
            cluster_ip: Some("10.96.0.20".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ..Default::default()
        }),
        status: None,
    }
}

pub(crate) fn sport(name: &str, port: i32, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(target),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub(crate) fn pod(name: &str, ip: Option<&str>, ready: bool, node: &str) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 9376,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: ip.map(String::from),
            pod_ips: ip.map(|i| vec![PodIP { ip: i.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

fn zone(n: &str) -> Option<String> {
    (n == "node-1").then(|| "zone-a".to_string())
}

#[test]
fn endpoints_conditions_and_fields() {
    let s = svc("hostnames", &[("app", "web")], vec![sport("", 80, IntOrString::String("http".into()))]);
    let mut term = (*pod("p3", Some("10.244.1.4"), true, "node-2")).clone();
    term.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    let pods = vec![
        pod("p1", Some("10.244.1.2"), true, "node-1"),
        pod("p2", Some("10.244.1.3"), false, "node-1"),
        Arc::new(term),
        pod("p4", None, true, "node-1"),
    ];
    let groups = desired_endpoint_groups(&s, &pods, &zone);
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(g.address_type, "IPv4");
    assert_eq!(
        g.ports,
        vec![EndpointPort {
            name: Some("".into()),
            port: Some(9376),
            protocol: Some("TCP".into()),
            app_protocol: None
        }]
    );
    assert_eq!(g.endpoints.len(), 3, "pod without IP skipped");
    let c = |i: usize| g.endpoints[i].conditions.clone().unwrap();
    assert_eq!((c(0).ready, c(0).serving, c(0).terminating), (Some(true), Some(true), Some(false)));
    assert_eq!((c(1).ready, c(1).serving, c(1).terminating), (Some(false), Some(false), Some(false)));
    assert_eq!((c(2).ready, c(2).serving, c(2).terminating), (Some(false), Some(true), Some(true)));
    assert_eq!(g.endpoints[0].zone.as_deref(), Some("zone-a"));
    assert_eq!(g.endpoints[2].zone, None);
    assert_eq!(g.endpoints[0].node_name.as_deref(), Some("node-1"));
    let tr = g.endpoints[0].target_ref.clone().unwrap();
    assert_eq!(
        (tr.kind.as_deref(), tr.name.as_deref(), tr.uid.as_deref(), tr.namespace.as_deref()),
        (Some("Pod"), Some("p1"), Some("uid-p1"), Some("default"))
    );
}

#[test]
fn publish_not_ready_and_hostname() {
    let mut s = svc("web", &[("app", "web")], vec![sport("http", 80, IntOrString::Int(8080))]);
    s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let mut p = (*pod("p1", Some("10.244.1.2"), false, "node-1")).clone();
    p.spec.as_mut().unwrap().hostname = Some("h1".into());
    p.spec.as_mut().unwrap().subdomain = Some("web".into());
    let groups = desired_endpoint_groups(&s, &[Arc::new(p)], &zone);
    let ep = &groups[0].endpoints[0];
    assert_eq!(ep.conditions.as_ref().unwrap().ready, Some(true));
    assert_eq!(ep.hostname.as_deref(), Some("h1"));
    assert_eq!(groups[0].ports[0].port, Some(8080));
    let labels = desired_slice_labels(&s);
    assert_eq!(labels.get(LABEL_HEADLESS).map(String::as_str), Some(""));
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
}

#[test]
fn named_ports_resolved_per_pod_split_groups() {
    let s = svc("web", &[("app", "web")], vec![sport("http", 80, IntOrString::String("http".into()))]);
    let mut other = (*pod("p2", Some("10.244.1.3"), true, "node-1")).clone();
    other.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap()[0].container_port = 8081;
    let mut noport = (*pod("p3", Some("10.244.1.4"), true, "node-1")).clone();
    noport.spec.as_mut().unwrap().containers[0].ports = None;
    let groups = desired_endpoint_groups(
        &s,
        &[pod("p1", Some("10.244.1.2"), true, "node-1"), Arc::new(other), Arc::new(noport)],
        &zone,
    );
    let mut ports: Vec<Vec<Option<i32>>> = groups.iter().map(|g| g.ports.iter().map(|p| p.port).collect()).collect();
    ports.sort();
    assert_eq!(ports, vec![vec![], vec![Some(8081)], vec![Some(9376)]]);
}

fn apply(plan: &SlicePlan, existing: &mut Vec<Arc<EndpointSlice>>, next: &mut u32) {
    for d in &plan.delete {
        existing.retain(|s| s.metadata.name != d.metadata.name);
    }
    for u in &plan.update {
        existing.retain(|s| s.metadata.name != u.metadata.name);
        existing.push(Arc::new(u.clone()));
    }
    for c in &plan.create {
        let mut c = c.clone();
        *next += 1;
        c.metadata.name = Some(format!("{}{:05}", c.metadata.generate_name.clone().unwrap(), next));
        existing.push(Arc::new(c));
    }
}

#[test]
fn reconcile_minimal_churn_and_capacity() {
    let s = svc("hostnames", &[("app", "web")], vec![sport("", 80, IntOrString::Int(9376))]);
    let mut pods: Vec<Arc<Pod>> = (0..250)
        .map(|i| pod(&format!("p{i:03}"), Some(&format!("10.244.{}.{}", i / 200, i % 200 + 2)), true, "node-1"))
        .collect();
    let mut existing: Vec<Arc<EndpointSlice>> = vec![];
    let mut n = 0;
    let groups = desired_endpoint_groups(&s, &pods, &zone);
    let plan = plan_slices(&s, &groups, &existing, 100, Some("2026-01-01T00:00:00Z"));
    assert_eq!(plan.create.len(), 3);
    assert_eq!(plan.create.iter().map(|s| s.endpoints.as_ref().unwrap().len()).collect::<Vec<_>>(), vec![100, 100, 50]);
    let c = &plan.create[0];
    assert_eq!(c.metadata.generate_name.as_deref(), Some("hostnames-"));
    assert_eq!(c.metadata.labels.as_ref().unwrap().get(LABEL_SERVICE_NAME).map(String::as_str), Some("hostnames"));
    assert_eq!(c.metadata.labels.as_ref().unwrap().get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
    assert_eq!(
        c.metadata.annotations.as_ref().unwrap().get(ANNOTATION_TRIGGER_TIME).map(String::as_str),
        Some("2026-01-01T00:00:00Z")
    );
    let or = &c.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((or.kind.as_str(), or.controller, or.block_owner_deletion), ("Service", Some(true), Some(true)));
    apply(&plan, &mut existing, &mut n);

    // Steady state: nothing to write.
    let plan = plan_slices(&s, &desired_endpoint_groups(&s, &pods, &zone), &existing, 100, None);
    assert!(plan.is_empty(), "{plan:?}");

    // One pod turns not-ready: exactly one slice updated.
    pods[120] = pod("p120", Some("10.244.0.122"), false, "node-1");
    let plan = plan_slices(&s, &desired_endpoint_groups(&s, &pods, &zone), &existing, 100, None);
    assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (0, 1, 0));
    let upd = &plan.update[0];
    assert_eq!(upd.endpoints.as_ref().unwrap().len(), 100);
    assert!(upd
        .endpoints
        .as_ref()
        .unwrap()
        .iter()
        .any(|e| e.addresses[0] == "10.244.0.122" && e.conditions.as_ref().unwrap().ready == Some(false)));
    apply(&plan, &mut existing, &mut n);

    // Remove 60 pods (the last slice empties, the second loses 10) and add 3: the new ones fill the
    // changed slice, the empty one is deleted.
    pods.truncate(190);
    for i in 0..3 {
        pods.push(pod(&format!("q{i}"), Some(&format!("10.244.9.{i}")), true, "node-1"));
    }
    let plan = plan_slices(&s, &desired_endpoint_groups(&s, &pods, &zone), &existing, 100, None);
    assert_eq!(plan.create.len(), 0);
    assert_eq!(plan.delete.len(), 1);
    assert_eq!(plan.update.len(), 1);
    apply(&plan, &mut existing, &mut n);
    let total: usize = existing.iter().map(|s| s.endpoints.as_ref().unwrap().len()).sum();
    assert_eq!(total, 193);
    assert!(existing.iter().all(|s| s.endpoints.as_ref().unwrap().len() <= 100));

    // All pods gone: a single placeholder slice remains.
    let plan = plan_slices(&s, &desired_endpoint_groups(&s, &[], &zone), &existing, 100, None);
    apply(&plan, &mut existing, &mut n);
    assert_eq!(existing.len(), 1);
    assert!(existing[0].endpoints.as_ref().unwrap().is_empty());
    assert!(existing[0].ports.as_ref().unwrap().is_empty());
    let plan = plan_slices(&s, &desired_endpoint_groups(&s, &[], &zone), &existing, 100, None);
    assert!(plan.is_empty());

    // Pods back: placeholder replaced.
    let plan = plan_slices(&s, &desired_endpoint_groups(&s, &pods[..2], &zone), &existing, 100, None);
    apply(&plan, &mut existing, &mut n);
    assert_eq!(existing.len(), 1);
    assert_eq!(existing[0].endpoints.as_ref().unwrap().len(), 2);
}

#[test]
fn dual_stack_one_slice_per_family() {
    let mut s = svc("web", &[("app", "web")], vec![sport("http", 80, IntOrString::Int(80))]);
    s.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    let mut p = (*pod("p1", Some("10.244.1.2"), true, "node-1")).clone();
    p.status.as_mut().unwrap().pod_ips = Some(vec![PodIP { ip: "10.244.1.2".into() }, PodIP { ip: "fd00::2".into() }]);
    let groups = desired_endpoint_groups(&s, &[Arc::new(p)], &zone);
    let plan = plan_slices(&s, &groups, &[], 100, None);
    let mut types: Vec<&str> = plan.create.iter().map(|s| s.address_type.as_str()).collect();
    types.sort();
    assert_eq!(types, vec!["IPv4", "IPv6"]);
}
