"""The Python `kubernetes` client against Yard: create, list, replace with a stale
resourceVersion (409), and watch. Exits non-zero on any failure."""
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
v1 = client.CoreV1Api()

ns = "pytest"
v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
cm = v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c1", labels={"t": "py"}), data={"a": "1"}))
assert cm.metadata.resource_version, "no resourceVersion"
names = [i.metadata.name for i in v1.list_namespaced_config_map(ns, label_selector="t=py").items]
assert names == ["c1"], names

stale = cm.metadata.resource_version
cm.data["a"] = "2"
cm2 = v1.replace_namespaced_config_map("c1", ns, cm)
assert cm2.data["a"] == "2"
cm.metadata.resource_version = stale
cm.data["a"] = "3"
try:
    v1.replace_namespaced_config_map("c1", ns, cm)
    sys.exit("replace with a stale resourceVersion succeeded")
except ApiException as e:
    assert e.status == 409, e.status

svc = v1.create_namespaced_service(ns, client.V1Service(metadata=client.V1ObjectMeta(name="web"), spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)])))
assert svc.spec.cluster_ip.startswith("10."), svc.spec.cluster_ip
assert svc.spec.ports[0].protocol == "TCP"

events = []
def watcher():
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=cm2.metadata.resource_version, timeout_seconds=10):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
t = threading.Thread(target=watcher)
t.start()
time.sleep(0.5)
v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c2")))
v1.delete_namespaced_config_map("c2", ns)
t.join(15)
assert ("ADDED", "c2") in events and ("DELETED", "c2") in events, events
print("python client: ok")
