//! Issue 23 acceptance: a kind added as one strategy file plus one `RESOURCES` entry. PodTemplate
//! (core v1) through the real kubectl: discovery, create, the printer's columns, pod-spec
//! defaults, upstream's validation messages, `kubectl explain`, delete.

mod common;

use common::*;

const TEMPLATE: &str = r#"
apiVersion: v1
kind: PodTemplate
metadata: {name: web}
template:
  metadata:
    labels: {tier: front, app: web}
  spec:
    containers:
    - name: nginx
      image: nginx:1.25
    - name: sidecar
      image: busybox:1.28
      command: [sleep, '3600']
"#;

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn podtemplate_through_kubectl() {
    let dir = TempDir::new("podtemplate");
    let api = ApiServer::start(&dir.0, &[]);

    // Discovery: namespaced, no short names, not in `all`.
    let resources = api.k(&["api-resources", "--api-group="]);
    let line = resources.lines().find(|l| l.starts_with("podtemplates ")).unwrap_or_else(|| panic!("{resources}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols, ["podtemplates", "v1", "true", "PodTemplate"], "{line}");

    let out = api.k_stdin(&["create", "-f", "-"], TEMPLATE);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).trim(), "podtemplate/web created");

    // The printer's columns: containers and images comma-joined, the template's labels sorted.
    let table = api.k(&["get", "podtemplates"]);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert_eq!(table.lines().next().unwrap().trim_end(), "NAME   CONTAINERS      IMAGES                    POD LABELS");
    assert_eq!(lines[1], ["web", "nginx,sidecar", "nginx:1.25,busybox:1.28", "app=web,tier=front"], "{table}");
    // `all` does not include PodTemplates.
    let all = api.kubectl(&["get", "all"]);
    assert!(!stdout_of(&all).contains("podtemplate"), "{}", stdout_of(&all));

    // Pod-spec defaults, as a Deployment's template gets them; generation starts at 1.
    let y = api.k(&["get", "podtemplate", "web", "-o", "yaml"]);
    for want in [
        "terminationMessagePath: /dev/termination-log",
        "terminationMessagePolicy: File",
        "imagePullPolicy: IfNotPresent",
        "restartPolicy: Always",
        "dnsPolicy: ClusterFirst",
        "schedulerName: default-scheduler",
        "terminationGracePeriodSeconds: 30",
        "generation: 1",
    ] {
        assert!(y.contains(want), "missing {want:?} in\n{y}");
    }
    assert!(!y.contains("enableServiceLinks"), "a template gets no Pod-only defaults:\n{y}");

    // Upstream's ValidatePodTemplate messages.
    let no_image = "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: noimage}\ntemplate:\n  spec:\n    containers:\n    - name: c\n";
    let out = api.k_stdin(&["create", "-f", "-"], no_image);
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out).trim(),
        "The PodTemplate \"noimage\" is invalid: template.spec.containers[0].image: Required value"
    );
    let bad_name = TEMPLATE.replace("name: web}", "name: Bad_Name}");
    let out = api.k_stdin(&["create", "-f", "-"], &bad_name);
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out).trim(),
        "The PodTemplate \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 \
         subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an \
         alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    let bad_label = TEMPLATE.replace("tier: front", "'bad key!': x");
    let out = api.k_stdin(&["create", "-f", "-"], &bad_label);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("template.labels: Invalid value: \"bad key!\""), "{}", stderr_of(&out));

    // A change of the template bumps the generation (upstream's PrepareForUpdate).
    api.k(&["label", "podtemplate", "web", "x=y"]);
    assert_eq!(api.k(&["get", "podtemplate", "web", "-o", "jsonpath={.metadata.generation}"]), "1");
    let patch = r#"{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}}}"#;
    // A strategic-merge patch (kubectl's default) merges containers by name: the sidecar stays.
    api.k(&["patch", "podtemplate", "web", "-p", patch]);
    let images = "jsonpath={.template.spec.containers[*].image}";
    assert_eq!(api.k(&["get", "podtemplate", "web", "-o", images]), "nginx:1.26 busybox:1.28");
    assert_eq!(api.k(&["get", "podtemplate", "web", "-o", "jsonpath={.metadata.generation}"]), "2");
    // A merge patch replaces the list.
    let patch = patch.replace("1.26", "1.27");
    api.k(&["patch", "podtemplate", "web", "--type=merge", "-p", &patch]);
    assert_eq!(api.k(&["get", "podtemplate", "web", "-o", images]), "nginx:1.27");
    assert_eq!(api.k(&["get", "podtemplate", "web", "-o", "jsonpath={.metadata.generation}"]), "3");

    // OpenAPI: kubectl explain finds the kind and its fields.
    let explain = api.k(&["explain", "podtemplate.template"]);
    assert!(explain.contains("KIND:       PodTemplate"), "{explain}");
    assert!(explain.contains("PodTemplateSpec"), "{explain}");
    assert!(explain.contains("spec\t<PodSpec>"), "{explain}");

    assert_eq!(api.k(&["delete", "podtemplate", "web"]).trim(), "podtemplate \"web\" deleted from default namespace");
    let out = api.kubectl(&["get", "podtemplate", "web"]);
    assert!(!out.status.success());
    assert_eq!(stderr_of(&out).trim(), "Error from server (NotFound): podtemplates \"web\" not found");
}
