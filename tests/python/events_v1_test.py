"""events.k8s.io/v1 and core v1 Events over one storage, through the official Python client:
create in one group, read and watch in the other, validation of the strict group.

Run by crates/yard/tests/auth_reviews_e2e.rs; prints `events v1: ok` when every check passed."""
import datetime
import json
import os

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(os.environ["KUBECONFIG"])
api = client.ApiClient()
ev1 = client.EventsV1Api(api)
core = client.CoreV1Api(api)
now = datetime.datetime.now(datetime.timezone.utc)

# A core event read through events.k8s.io/v1.
core.create_namespaced_event("default", client.CoreV1Event(
    metadata=client.V1ObjectMeta(name="core-made"),
    involved_object=client.V1ObjectReference(kind="Pod", name="web", namespace="default"),
    message="from core", reason="Pulled", type="Normal", count=4,
    source=client.V1EventSource(component="kubelet", host="node-1"),
    first_timestamp=now, last_timestamp=now, event_time=now, action="Pull", reporting_component="kubelet",
    reporting_instance="node-1"))
e = ev1.read_namespaced_event("core-made", "default")
assert e.note == "from core", e
assert e.regarding.name == "web", e
assert e.deprecated_count == 4, e
assert e.deprecated_source.host == "node-1", e
assert e.reporting_controller == "kubelet", e
assert e.deprecated_first_timestamp is not None, e

# An events.k8s.io/v1 event read through core, seen by a core watch.
w = watch.Watch()
rv = core.list_namespaced_event("default").metadata.resource_version
stream = w.stream(core.list_namespaced_event, "default", resource_version=rv, timeout_seconds=10)
ev1.create_namespaced_event("default", client.EventsV1Event(
    metadata=client.V1ObjectMeta(name="v1-made"), event_time=now, type="Warning", reason="BackOff",
    action="Restart", note="from events.k8s.io", reporting_controller="example.com/ctl", reporting_instance="ctl-0",
    regarding=client.V1ObjectReference(kind="Pod", name="web", namespace="default")))
for ev in stream:
    if ev["object"].metadata.name == "v1-made":
        assert ev["type"] == "ADDED", ev["type"]
        assert ev["object"].message == "from events.k8s.io", ev["object"]
        assert ev["object"].involved_object.name == "web", ev["object"]
        assert ev["object"].reporting_component == "example.com/ctl", ev["object"]
        w.stop()
        break
else:
    raise AssertionError("core watch never saw the events.k8s.io event")

# An events.k8s.io watch sees a core update in its own field names.
w = watch.Watch()
rv = ev1.list_namespaced_event("default").metadata.resource_version
stream = w.stream(ev1.list_namespaced_event, "default", resource_version=rv, timeout_seconds=10)
core.patch_namespaced_event("core-made", "default", {"message": "changed"})
for ev in stream:
    if ev["object"].metadata.name == "core-made":
        assert ev["type"] == "MODIFIED", ev["type"]
        assert ev["object"].note == "changed", ev["object"]
        w.stop()
        break
else:
    raise AssertionError("events.k8s.io watch never saw the core update")

# Lists hold both, in each group's shape.
names = sorted(i.metadata.name for i in ev1.list_namespaced_event("default").items)
assert {"core-made", "v1-made"} <= set(names), names
assert all(i.regarding is not None for i in ev1.list_event_for_all_namespaces().items)

# Patch through events.k8s.io names its fields.
ev1.patch_namespaced_event("v1-made", "default", {"note": "patched"})
assert core.read_namespaced_event("v1-made", "default").message == "patched"

# Strict validation of the group: reportingController required, deprecated fields must be unset.
try:
    ev1.create_namespaced_event("default", client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="bad"), event_time=now, type="Normal", reason="R", action="A",
        reporting_instance="i", deprecated_count=2))
    raise AssertionError("invalid events.k8s.io event accepted")
except ApiException as e:
    st = json.loads(e.body)
    assert e.status == 422 and st["reason"] == "Invalid", st
    assert st["message"].startswith('Event.events.k8s.io "bad" is invalid: [reportingController: Required value'), st
    assert 'count: Invalid value: "": needs to be unset' in st["message"], st
try:
    ev1.read_namespaced_event("bad", "default")
    raise AssertionError("invalid event stored")
except ApiException as e:
    st = json.loads(e.body)
    assert e.status == 404 and st["message"] == 'events.events.k8s.io "bad" not found', st

# Deleting through one group removes it from the other.
ev1.delete_namespaced_event("core-made", "default")
try:
    core.read_namespaced_event("core-made", "default")
    raise AssertionError("deleted event still served by core")
except ApiException as e:
    assert e.status == 404

print("events v1: ok")
