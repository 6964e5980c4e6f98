#!/usr/bin/env python3
"""Generate crates/apiserver/src/protobuf_schema.json: the Kubernetes protobuf wire schema.

For every message reachable from the API kinds Yard may receive as protobuf request bodies, the
table lists each field's tag number, its JSON name, its wire type and whether it is singular,
repeated or a map (map keys are always strings in the Kubernetes API). Facts come from two crates
already in the cargo registry (run `cargo fetch` first):

  * k8s-pb: tag numbers and wire types (the `#[prost(...)]` attribute of every field) and the
    referenced message types;
  * k8s-openapi: the JSON names (the field names of the Kubernetes JSON encoding), matched to the
    protobuf field by name with case and underscores ignored.

The Go types behind the protobuf encoding always write non-pointer scalar fields, even when zero,
whereas the JSON encoding omits zero values of `omitempty` fields. The decoder therefore drops zero
scalars, except for the fields listed in KEEP_ZERO below: Go pointer fields (`*int32`, `*bool`, ...)
whose zero value means something different from "unset", and non-pointer fields without
`omitempty`. Those get flag 1 in the table.

Usage: scripts/gen-protobuf-schema.py [OUTPUT]
"""
import glob
import json
import os
import re
import sys

REG = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
PB = next(glob.glob(r + "k8s-pb-0.9.0/src") for r in REG if glob.glob(r + "k8s-pb-0.9.0/src"))[0]
OA = next(glob.glob(r + "k8s-openapi-0.29.0/src/v1_37") for r in REG
          if glob.glob(r + "k8s-openapi-0.29.0/src/v1_37"))[0]

# Packages (k8s-pb module paths) whose top-level kinds are roots of the table.
ROOT_PACKAGES = [
    "api.core.v1", "api.apps.v1", "api.autoscaling.v1", "api.autoscaling.v2", "api.batch.v1",
    "api.discovery.v1", "api.coordination.v1", "api.networking.v1", "api.rbac.v1", "api.policy.v1",
    "api.events.v1", "api.storage.v1", "api.scheduling.v1", "api.node.v1",
    "api.certificates.v1", "api.authorization.v1", "api.authentication.v1", "api.authentication.v1beta1",
]
# Messages that are request bodies without being resources.
EXTRA_ROOTS = [
    "apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "apimachinery.pkg.apis.meta.v1.Status",
    "api.autoscaling.v1.Scale",
    "api.core.v1.Binding",
    "api.policy.v1.Eviction",
    "api.authentication.v1.TokenRequest",
]

# Fields (message.jsonName) whose zero value the JSON encoding keeps: Go pointer scalars whose zero
# value is meaningful, and non-pointer fields without `omitempty` (always written in both encodings).
KEEP_ZERO = [
    "api.policy.v1.PodDisruptionBudgetStatus.disruptionsAllowed",
    "api.policy.v1.PodDisruptionBudgetStatus.currentHealthy",
    "api.policy.v1.PodDisruptionBudgetStatus.desiredHealthy",
    "api.policy.v1.PodDisruptionBudgetStatus.expectedPods",
    "api.apps.v1.ReplicaSetStatus.replicas",
    "api.apps.v1.StatefulSetStatus.replicas",
    "api.apps.v1.DaemonSetStatus.currentNumberScheduled",
    "api.apps.v1.DaemonSetStatus.numberMisscheduled",
    "api.apps.v1.DaemonSetStatus.desiredNumberScheduled",
    "api.apps.v1.DaemonSetStatus.numberReady",
    "api.autoscaling.v1.ScaleStatus.replicas",
    "api.core.v1.ContainerStatus.ready",
    "api.core.v1.ContainerStatus.restartCount",
    "api.core.v1.ContainerStatus.image",
    "api.core.v1.ContainerStatus.imageID",
    "apimachinery.pkg.apis.meta.v1.DeleteOptions.gracePeriodSeconds",
    "apimachinery.pkg.apis.meta.v1.DeleteOptions.orphanDependents",
    "apimachinery.pkg.apis.meta.v1.ObjectMeta.deletionGracePeriodSeconds",
    "apimachinery.pkg.apis.meta.v1.OwnerReference.controller",
    "apimachinery.pkg.apis.meta.v1.OwnerReference.blockOwnerDeletion",
    "api.apps.v1.DeploymentSpec.replicas",
    "api.apps.v1.DeploymentSpec.revisionHistoryLimit",
    "api.apps.v1.DeploymentSpec.progressDeadlineSeconds",
    "api.apps.v1.ReplicaSetSpec.replicas",
    "api.apps.v1.StatefulSetSpec.replicas",
    "api.apps.v1.StatefulSetSpec.revisionHistoryLimit",
    "api.apps.v1.DaemonSetSpec.revisionHistoryLimit",
    "api.apps.v1.RollingUpdateDeployment.maxUnavailable",
    "api.apps.v1.RollingUpdateDeployment.maxSurge",
    "api.apps.v1.RollingUpdateDaemonSet.maxUnavailable",
    "api.apps.v1.RollingUpdateDaemonSet.maxSurge",
    "api.apps.v1.RollingUpdateStatefulSetStrategy.partition",
    "api.apps.v1.RollingUpdateStatefulSetStrategy.maxUnavailable",
    "api.batch.v1.JobSpec.parallelism",
    "api.batch.v1.JobSpec.completions",
    "api.batch.v1.JobSpec.backoffLimit",
    "api.batch.v1.JobSpec.activeDeadlineSeconds",
    "api.batch.v1.JobSpec.ttlSecondsAfterFinished",
    "api.batch.v1.JobSpec.suspend",
    "api.batch.v1.CronJobSpec.suspend",
    "api.batch.v1.CronJobSpec.startingDeadlineSeconds",
    "api.batch.v1.CronJobSpec.successfulJobsHistoryLimit",
    "api.batch.v1.CronJobSpec.failedJobsHistoryLimit",
    "api.core.v1.PodSpec.terminationGracePeriodSeconds",
    "api.core.v1.PodSpec.activeDeadlineSeconds",
    "api.core.v1.PodSpec.automountServiceAccountToken",
    "api.core.v1.PodSpec.shareProcessNamespace",
    "api.core.v1.PodSpec.priority",
    "api.core.v1.PodSpec.enableServiceLinks",
    "api.core.v1.PodSpec.hostUsers",
    "api.core.v1.PodSpec.setHostnameAsFQDN",
    "api.core.v1.ServiceAccount.automountServiceAccountToken",
    "api.core.v1.ConfigMap.immutable",
    "api.core.v1.Secret.immutable",
    "api.core.v1.SecurityContext.privileged",
    "api.core.v1.SecurityContext.runAsUser",
    "api.core.v1.SecurityContext.runAsGroup",
    "api.core.v1.SecurityContext.runAsNonRoot",
    "api.core.v1.SecurityContext.readOnlyRootFilesystem",
    "api.core.v1.SecurityContext.allowPrivilegeEscalation",
    "api.core.v1.PodSecurityContext.runAsUser",
    "api.core.v1.PodSecurityContext.runAsGroup",
    "api.core.v1.PodSecurityContext.runAsNonRoot",
    "api.core.v1.PodSecurityContext.fsGroup",
    "api.core.v1.Probe.terminationGracePeriodSeconds",
    "api.core.v1.LifecycleHandler.sleep",
    "api.core.v1.ConfigMapVolumeSource.defaultMode",
    "api.core.v1.ConfigMapVolumeSource.optional",
    "api.core.v1.SecretVolumeSource.defaultMode",
    "api.core.v1.SecretVolumeSource.optional",
    "api.core.v1.ProjectedVolumeSource.defaultMode",
    "api.core.v1.DownwardAPIVolumeSource.defaultMode",
    "api.core.v1.KeyToPath.mode",
    "api.core.v1.DownwardAPIVolumeFile.mode",
    "api.core.v1.ConfigMapKeySelector.optional",
    "api.core.v1.SecretKeySelector.optional",
    "api.core.v1.ConfigMapEnvSource.optional",
    "api.core.v1.SecretEnvSource.optional",
    "api.core.v1.ConfigMapProjection.optional",
    "api.core.v1.SecretProjection.optional",
    "api.core.v1.ServiceAccountTokenProjection.expirationSeconds",
    "api.core.v1.ServiceSpec.allocateLoadBalancerNodePorts",
    "api.core.v1.ClientIpConfig.timeoutSeconds",
    "api.core.v1.EndpointPort.name",
    "api.core.v1.EndpointAddress.nodeName",
    "api.core.v1.Toleration.tolerationSeconds",
    "api.core.v1.ContainerStatus.started",
    "api.discovery.v1.EndpointConditions.ready",
    "api.discovery.v1.EndpointConditions.serving",
    "api.discovery.v1.EndpointConditions.terminating",
    "api.discovery.v1.EndpointPort.port",
    "api.discovery.v1.EndpointPort.name",
    "api.discovery.v1.Endpoint.hostname",
    "api.discovery.v1.Endpoint.nodeName",
    "api.discovery.v1.Endpoint.zone",
    "api.coordination.v1.LeaseSpec.holderIdentity",
    "api.coordination.v1.LeaseSpec.leaseDurationSeconds",
    "api.coordination.v1.LeaseSpec.leaseTransitions",
    "api.policy.v1.PodDisruptionBudgetSpec.minAvailable",
    "api.policy.v1.PodDisruptionBudgetSpec.maxUnavailable",
    "api.networking.v1.NetworkPolicyPort.port",
    "api.networking.v1.NetworkPolicyPort.endPort",
    "api.autoscaling.v1.HorizontalPodAutoscalerSpec.minReplicas",
    "api.autoscaling.v2.HorizontalPodAutoscalerSpec.minReplicas",
]

PROST = re.compile(r'#\[prost\((.*)\)\]')
FIELD = re.compile(r'pub (?:r#)?(\w+):\s*(.+),\s*$')
STRUCT = re.compile(r'^pub struct (\w+) \{')


def pb_modules():
    """Yield (module path, text) for every k8s-pb module file."""
    for path in glob.glob(PB + "/**/mod.rs", recursive=True):
        rel = os.path.relpath(os.path.dirname(path), PB)
        if rel == ".":
            continue
        with open(path) as f:
            yield rel.replace(os.sep, "."), f.read()


def resolve(module, rust_type):
    """Resolve the message type named by a field's Rust type to 'module.path.Name'."""
    t = re.sub(r"\s+", "", rust_type).replace(",>", ">")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<",
                    "::prost::alloc::boxed::Box<"):
        while t.startswith(wrapper):
            t = t[len(wrapper):-1]
    if t.startswith("::prost::alloc::collections::BTreeMap<"):
        t = t[len("::prost::alloc::collections::BTreeMap<"):-1]
        t = t.split(",", 1)[1].strip()
        return resolve(module, t)
    parts = module.split(".")
    segs = t.split("::")
    while segs and segs[0] == "super":
        parts.pop()
        segs.pop(0)
    return ".".join(parts + segs)


def parse_pb():
    messages = {}
    kinds = {}
    for module, text in pb_modules():
        current = None
        attr = None
        pending = None
        for line in text.splitlines():
            m = STRUCT.match(line)
            if m:
                current = module + "." + m.group(1)
                messages[current] = []
                continue
            if line.startswith("}"):
                current = None
                continue
            m = re.match(r'impl crate::Resource for (\w+) \{', line)
            if m:
                kinds.setdefault(module, []).append(module + "." + m.group(1))
                continue
            if current is None:
                continue
            m = PROST.search(line)
            if m:
                attr = m.group(1)
                continue
            if attr is not None and pending is None and line.strip().startswith("pub "):
                pending = ""
            if pending is not None:
                pending += line.strip()
                if pending.count("<") != pending.count(">") or not pending.endswith(","):
                    continue
                line, pending = pending, None
            m = FIELD.match(line.strip())
            if m and attr is not None:
                name, rtype = m.group(1), m.group(2)
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                mm = re.match(r'btree_map = "string, (\w+)"', attr)
                if mm:
                    label, vtype = "m", mm.group(1)
                else:
                    vtype = attr.split(",")[0].split("=")[0].strip()
                    label = "r" if ", repeated" in attr else "o"
                if vtype == "message":
                    vtype = resolve(module, rtype)
                messages[current].append([tag, name, vtype, label])
                attr = None
            elif attr is not None and not line.strip().startswith("///"):
                sys.exit(f"unparsed field line in {current}: {line}")
    return messages, kinds


def parse_openapi():
    """(module path, lowercased struct name) -> list of JSON field names."""
    names = {}
    for path in glob.glob(OA + "/**/*.rs", recursive=True):
        rel = os.path.relpath(os.path.dirname(path), OA).replace(os.sep, ".")
        with open(path) as f:
            text = f.read()
        structs = re.findall(r'^pub struct (\w+)', text, re.M)
        if len(structs) != 1:
            continue
        keys = re.findall(r'"([^"]+)" => Field::Key_', text)
        names[(rel, structs[0].lower())] = keys
    return names


def norm(s):
    return re.sub(r'[^a-z0-9]', '', s.lower())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "crates", "apiserver", "src", "protobuf_schema.json")
    messages, kinds = parse_pb()
    jsonnames = parse_openapi()
    roots = [k for pkg in ROOT_PACKAGES for k in kinds.get(pkg, [])] + EXTRA_ROOTS
    seen, todo = set(), list(roots)
    while todo:
        msg = todo.pop()
        if msg in seen:
            continue
        if msg not in messages:
            sys.exit(f"unknown message {msg}")
        seen.add(msg)
        for f in messages[msg]:
            if "." in f[2]:
                todo.append(f[2])
    keep = set(KEEP_ZERO)
    table = {}
    for msg in sorted(seen):
        module, name = msg.rsplit(".", 1)
        known = {norm(j): j for j in jsonnames.get((module, name.lower()), [])}
        fields = []
        for tag, rname, vtype, label in messages[msg]:
            jname = known.get(norm(rname))
            if jname is None and known and label == "o" and vtype in messages:
                inner = messages[vtype]
                if inner and all(norm(f[1]) in known for f in inner):
                    # A Go embedded struct (`json:",inline"`): its fields join the parent's.
                    label = "i"
            if jname is None:
                # Internal helper messages (Time, Quantity, ...) have no JSON object form.
                parts = rname.split("_")
                jname = parts[0] + "".join(p.title() for p in parts[1:])
                if known and label != "i":
                    print(f"warning: {msg}.{rname}: no JSON name, using {jname}", file=sys.stderr)
            fullname = msg + "." + jname
            flag = 1 if fullname in keep else 0
            keep.discard(fullname)
            fields.append([tag, jname, vtype, label, flag])
        table[msg] = fields
    if keep:
        sys.exit(f"KEEP_ZERO entries not found: {sorted(keep)}")
    with open(out, "w") as f:
        f.write("{\n")
        items = sorted(table.items())
        for i, (msg, fields) in enumerate(items):
            sep = "," if i + 1 < len(items) else ""
            f.write(f"{json.dumps(msg)}: {json.dumps(fields, separators=(',', ':'))}{sep}\n")
        f.write("}\n")
    print(f"{len(table)} messages -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
