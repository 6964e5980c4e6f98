"""Yard compatibility check with lightkube (pinned 1.0.x, synchronous Client).

lightkube has exec (`Client.exec`, 1.0) but no port-forward API at all (no portforward call, no
raw WebSocket access): that check prints SKIP. Everything else goes through lightkube's own calls.
"""

import sys
import threading
import time

from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod
from lightkube.types import PatchType

from compat_common import LOG_LINE, Reporter, echo_pod, expect, old_resource_version, web_deployment

NS = "compat-lightkube"


def run(r, name, fn, timeout=60):
    """Synchronous twin of Reporter.run: fn runs on a thread so a hang is a FAIL, not a stuck script."""
    box = {}

    def target():
        try:
            fn()
            box["ok"] = True
        except Exception as e:  # noqa: BLE001
            box["err"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        r.fail(name, f"timed out after {timeout}s")
        return False
    if "err" in box:
        r.fail(name, box["err"])
        return False
    r.passed(name)
    return True


def cm(name, data):
    return ConfigMap(metadata=ObjectMeta(name=name, namespace=NS), data=data)


def main():
    r = Reporter()
    c = Client(field_manager="lightkube-compat")

    def setup():
        c.create(Namespace(metadata=ObjectMeta(name=NS)))
        c.create(Pod.from_dict(echo_pod(NS)))
        c.create(Deployment.from_dict(web_deployment(NS)))

    if not run(r, "setup", setup):
        r.exit()

    def crud():
        c.create(cm("crud", {"a": "1"}))
        got = c.get(ConfigMap, "crud", namespace=NS)
        expect(got.data == {"a": "1"}, f"get: {got.data}")
        expect("crud" in [o.metadata.name for o in c.list(ConfigMap, namespace=NS)], "list lacks crud")
        got.data = {"a": "2"}
        upd = c.replace(got)
        expect(upd.data == {"a": "2"}, f"update: {upd.data}")
        c.delete(ConfigMap, "crud", namespace=NS)
        try:
            c.get(ConfigMap, "crud", namespace=NS)
            raise AssertionError("still exists after delete")
        except ApiError as e:
            expect(e.status.code == 404, f"get after delete: {e.status.code}")

    run(r, "crud", crud)

    def paged_list():
        for i in range(5):
            c.create(cm(f"page-{i}", {"i": str(i)}))
        # chunk_size sends limit=2 and follows metadata.continue until it is empty.
        names = [o.metadata.name for o in c.list(ConfigMap, namespace=NS, chunk_size=2)]
        expect({f"page-{i}" for i in range(5)} <= set(names), f"chunked names {names}")
        expect(len(names) == len(set(names)), f"duplicates across chunks: {names}")

    run(r, "list_limit_continue", paged_list)

    def list_rv():
        lst = c.list(ConfigMap, namespace=NS)
        for _ in lst:
            pass
        return lst.resourceVersion

    def watch_added(since, name):
        found = threading.Event()

        def watcher():
            for typ, obj in c.watch(ConfigMap, namespace=NS, resource_version=since, server_timeout=20):
                if typ == "ADDED" and obj.metadata.name == name:
                    found.set()
                    return

        t = threading.Thread(target=watcher, daemon=True)
        t.start()
        time.sleep(0.3)
        c.create(cm(name, {"w": "1"}))
        expect(found.wait(20), f"no ADDED {name} within 20 s")

    run(r, "watch", lambda: watch_added(list_rv(), "watched"))

    def watch_410():
        old = old_resource_version()
        expect(old, "YARD_COMPAT_OLD_RV not set by the driver")
        try:
            for typ, _obj in c.watch(ConfigMap, namespace=NS, resource_version=old, server_timeout=5):
                raise AssertionError(f"event {typ} from a compacted resourceVersion")
            raise AssertionError("watch from a compacted resourceVersion ended without an error")
        except ApiError as e:
            expect(e.status.code == 410, f"status {e.status.code} {e.status.reason}")
            expect(e.status.reason == "Expired", f"reason {e.status.reason}")
        watch_added(list_rv(), "after-410")

    run(r, "watch_410_relist", watch_410)

    def ssa():
        for v in ("v1", "v2"):
            out = c.apply(cm("ssa", {"k": v}), force=True)
            expect(out.data == {"k": v}, f"apply {v}: {out.data}")
        managers = [m.manager for m in out.metadata.managedFields or []]
        expect("lightkube-compat" in managers, f"managers {managers}")

    run(r, "server_side_apply", ssa)

    def patches():
        c.create(cm("patched", {"a": "1"}))
        out = c.patch(
            ConfigMap, "patched", [{"op": "add", "path": "/data/b", "value": "2"}], namespace=NS, patch_type=PatchType.JSON
        )
        expect(out.data == {"a": "1", "b": "2"}, f"json patch: {out.data}")
        out = c.patch(ConfigMap, "patched", {"data": {"a": None, "c": "3"}}, namespace=NS, patch_type=PatchType.MERGE)
        expect(out.data == {"b": "2", "c": "3"}, f"merge patch: {out.data}")
        smp = {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "env": [{"name": "X", "value": "1"}]}]}}}}
        d = c.patch(Deployment, "web", smp, namespace=NS, patch_type=PatchType.STRATEGIC)
        cs = d.spec.template.spec.containers
        expect(len(cs) == 1 and cs[0].image == "nginx:1.14.2", f"strategic containers: {cs}")
        expect([(e.name, e.value) for e in cs[0].env or []] == [("X", "1")], f"strategic env: {cs[0].env}")

    run(r, "patch_json_merge_strategic", patches)

    run(
        r,
        "wait_deployment_available",
        lambda: c.wait(Deployment, "web", namespace=NS, for_conditions=["Available"]),
        timeout=90,
    )

    def running_pod(name=None, selector=None):
        for _ in range(600):
            pods = [c.get(Pod, name, namespace=NS)] if name else list(c.list(Pod, namespace=NS, labels=selector))
            running = [p for p in pods if p.status and p.status.phase == "Running"]
            if running:
                return running[0].metadata.name
            time.sleep(0.1)
        raise AssertionError(f"no running pod {name or selector}")

    def do_exec():
        pod = running_pod("echo")
        res = c.exec(pod, namespace=NS, command=["echo", "hello-from-exec"], stdout=True, stderr=True, timeout=20)
        expect(res.stdout.strip() == "hello-from-exec", f"stdout {res.stdout!r} stderr {res.stderr!r}")
        expect(res.exit_code == 0, f"exit code {res.exit_code}")

    run(r, "exec", do_exec, timeout=30)

    def logs():
        pod = running_pod("echo")
        text = "".join(c.log(pod, namespace=NS))
        expect(LOG_LINE in text, f"logs {text!r}")

    run(r, "logs", logs)

    r.skip("port_forward", "lightkube has no port-forward API (no portforward call, no raw WebSocket access)")

    run(r, "cleanup", lambda: c.delete(Namespace, NS))
    r.exit()


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    main()
