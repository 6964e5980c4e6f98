//! Issue 3 acceptance, registry half: Service validation and ClusterIP/NodePort allocation through
//! the real kubectl, with upstream's messages, and allocations that survive `kill -9`.

mod common;

use common::*;

fn svc(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// `kubectl create -f -` that must fail; returns stderr.
fn create_err(api: &ApiServer, manifest: &str) -> String {
    let out = api.k_stdin(&["create", "-f", "-"], manifest);
    assert!(!out.status.success(), "create should fail:\n{manifest}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn create_ok(api: &ApiServer, manifest: &str) {
    let out = api.k_stdin(&["create", "-f", "-"], manifest);
    assert!(out.status.success(), "create failed: {}\n{manifest}", String::from_utf8_lossy(&out.stderr));
}

const PORT80: &str = "  selector: {app: a}\n  ports:\n  - port: 80\n";

#[test]
fn service_validation_messages_through_kubectl() {
    let dir = TempDir::new("registry");
    let api = ApiServer::start(&dir.0, &[]);
    let cases: Vec<(String, &str)> = vec![
        (svc("p0", "  ports:\n  - port: 0\n"), r#"* spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"#),
        (svc("big", "  ports:\n  - port: 70000\n"), r#"spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"#),
        (svc("noname", "  ports:\n  - port: 80\n  - port: 81\n"), "The Service \"noname\" is invalid: \n* spec.ports[0].name: Required value\n* spec.ports[1].name: Required value"),
        (svc("dupname", "  ports:\n  - {name: http, port: 80}\n  - {name: http, port: 81}\n"), r#"spec.ports[1].name: Duplicate value: "http""#),
        (svc("badname", "  ports:\n  - {name: Http_1, port: 80}\n  - {name: b, port: 81}\n"), r#"spec.ports[0].name: Invalid value: "Http_1": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"#),
        (svc("dupport", "  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80}\n"), r#"spec.ports[1]: Duplicate value: "#),
        (svc("tp", "  ports:\n  - {port: 80, targetPort: 70000}\n"), r#"spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"#),
        (svc("tpname", "  ports:\n  - {port: 80, targetPort: Not_A_Name}\n"), r#"spec.ports[0].targetPort: Invalid value: "Not_A_Name""#),
        (svc("npci", "  ports:\n  - {port: 80, nodePort: 30001}\n"), "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
        (svc("npnone", "  type: NodePort\n  clusterIP: None\n  ports:\n  - port: 80\n"), r#"spec.clusterIPs[0]: Invalid value: "None": may not be set to 'None' for NodePort services"#),
        (svc("lbnone", "  type: LoadBalancer\n  clusterIP: None\n  ports:\n  - port: 80\n"), r#"spec.clusterIPs[0]: Invalid value: "None": may not be set to 'None' for LoadBalancer services"#),
        (svc("sel", "  selector: {\"bad key!\": a}\n  ports:\n  - port: 80\n"), r#"spec.selector: Invalid value: "bad key!""#),
        (svc("aff", "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports:\n  - port: 80\n"), "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400"),
        (svc("en", "  type: ExternalName\n  externalName: Not_A_Domain\n"), r#"spec.externalName: Invalid value: "Not_A_Domain""#),
        (svc("range", "  clusterIP: 192.168.1.1\n  ports:\n  - port: 80\n"), r#"spec.clusterIPs: Invalid value: ["192.168.1.1"]: failed to allocate IP 192.168.1.1: the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#),
        (svc("fam", "  clusterIP: 10.96.0.50\n  clusterIPs: [10.96.0.51]\n  ports:\n  - port: 80\n"), r#"spec.clusterIPs: Invalid value: ["10.96.0.51"]: first value must match `clusterIP`"#),
        (svc("npr", "  type: NodePort\n  ports:\n  - {port: 80, nodePort: 80}\n"), "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
    ];
    let mut failures = Vec::new();
    for (manifest, want) in &cases {
        let err = create_err(&api, manifest);
        if !err.contains(want) {
            failures.push(format!("want {want}\n got {err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing invalid was stored, and nothing was leaked: the same requested IP is still free.
    let list = api.k(&["get", "svc", "-o", "name"]);
    assert_eq!(list.trim(), "service/kubernetes", "{list}");
}

#[test]
fn allocations_conflict_follow_type_changes_and_survive_kill9() {
    let dir = TempDir::new("alloc");
    let mut api = ApiServer::start(&dir.0, &[]);
    // A requested ClusterIP and NodePort, then the same again.
    create_ok(&api, &svc("np", "  type: NodePort\n  clusterIP: 10.96.0.77\n  selector: {app: a}\n  ports:\n  - {port: 80, nodePort: 30080}\n"));
    let err = create_err(
        &api,
        &svc("np2", "  type: NodePort\n  selector: {app: a}\n  ports:\n  - {port: 80, nodePort: 30080}\n"),
    );
    assert!(err.contains(r#"The Service "np2" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"#), "{err}");
    let err = create_err(&api, &svc("ip2", &format!("  clusterIP: 10.96.0.77\n{PORT80}")));
    assert!(err.contains(r#"spec.clusterIPs: Invalid value: ["10.96.0.77"]: failed to allocate IP 10.96.0.77: provided IP is already allocated"#), "{err}");
    // Automatic ClusterIPs are in range and distinct; the 1st and 10th addresses are never handed out.
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..20 {
        create_ok(&api, &svc(&format!("auto{i}"), PORT80));
        let ip = api.k(&["get", "svc", &format!("auto{i}"), "-o", "jsonpath={.spec.clusterIP}"]);
        let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
        assert!(o[0] == 10 && (96..112).contains(&o[1]), "{ip} not in 10.96.0.0/12");
        assert!(ip != "10.96.0.1" && ip != "10.96.0.10" && ip != "10.96.0.77", "{ip}");
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
    }
    // `kubectl get` (a Table) pages by --chunk-size like every other format, as upstream.
    let requests = |args: &[&str]| {
        let out = api.kubectl(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            log.lines()
                .filter(|l| l.contains("verb=\"GET\"") && l.contains("/api/v1/namespaces/default/services?"))
                .count(),
        )
    };
    let (table, n) = requests(&["get", "svc", "--chunk-size=5", "-v=6"]);
    assert_eq!((table.lines().count(), n), (1 + 22, 5), "{table}");
    let (json, n) = requests(&["get", "svc", "--chunk-size=5", "-o", "name", "-v=6"]);
    assert_eq!((json.lines().count(), n), (22, 5), "{json}");
    // Immutable once set.
    let out = api.kubectl(&[
        "patch",
        "svc",
        "auto0",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.0.99","clusterIPs":["10.96.0.99"]}}"#,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not change once set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kill -9 and restart: the allocations are still held.
    api.restart();
    let err = create_err(
        &api,
        &svc("np3", "  type: NodePort\n  selector: {app: a}\n  ports:\n  - {port: 80, nodePort: 30080}\n"),
    );
    assert!(err.contains("provided port is already allocated"), "after kill -9: {err}");
    let err = create_err(&api, &svc("ip3", &format!("  clusterIP: 10.96.0.77\n{PORT80}")));
    assert!(err.contains("provided IP is already allocated"), "after kill -9: {err}");

    // NodePort -> ClusterIP releases the port; the port can then be taken by another Service.
    api.k(&[
        "patch",
        "svc",
        "np",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/type","value":"ClusterIP"},{"op":"remove","path":"/spec/ports/0/nodePort"}]"#,
    ]);
    create_ok(&api, &svc("np4", "  type: NodePort\n  selector: {app: a}\n  ports:\n  - {port: 80, nodePort: 30080}\n"));
    // ClusterIP -> ExternalName releases the address; delete releases too.
    api.k(&["patch", "svc", "np", "--type=merge", "-p", r#"{"spec":{"type":"ExternalName","externalName":"db.example.com","clusterIP":"","clusterIPs":null,"selector":null}}"#]);
    assert_eq!(api.k(&["get", "svc", "np", "-o", "jsonpath={.spec.clusterIP}"]), "");
    create_ok(&api, &svc("ip4", &format!("  clusterIP: 10.96.0.77\n{PORT80}")));
    api.k(&["delete", "svc", "ip4"]);
    create_ok(&api, &svc("ip5", &format!("  clusterIP: 10.96.0.77\n{PORT80}")));
    // ExternalName -> NodePort allocates again.
    api.k(&[
        "patch",
        "svc",
        "np",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"NodePort","externalName":null,"selector":{"app":"a"}}}"#,
    ]);
    let np = api.k(&["get", "svc", "np", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}"]);
    let (ip, port) = np.split_once(' ').unwrap();
    assert!(ip.starts_with("10.") && !ips.contains(ip), "{np}");
    let port: u16 = port.parse().unwrap();
    assert!((30000..=32767).contains(&port) && port != 30080, "{np}");
}
