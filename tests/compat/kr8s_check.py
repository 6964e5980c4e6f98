"""Yard compatibility check with kr8s (pinned 0.20.x, asyncio API).

kr8s has no typed call for a full update (PUT), server-side apply, a strategic merge patch or a
paged list with a caller-chosen limit; for those the check uses `Api.call_api`, kr8s's own public
request method (its session, auth and URL building), as a kr8s user would. kr8s's `watch` restarts
by itself on 410 with the same stale resourceVersion, so the 410 is read with `call_api` too.
"""

import asyncio
import json
import sys

import kr8s.asyncio
from kr8s.asyncio.objects import ConfigMap, Deployment, Namespace, Pod

from compat_common import (
    LOG_LINE,
    Reporter,
    configmap,
    echo_pod,
    expect,
    expect_http_ok,
    http_get_local,
    namespace,
    old_resource_version,
    web_deployment,
)

NS = "compat-kr8s"


async def main():
    r = Reporter()
    api = None

    async def connect():
        # kr8s checks the server's version first (GET /version/, with a trailing slash).
        nonlocal api
        api = await kr8s.asyncio.api()

    if not await r.run("connect", connect):
        r.exit()

    async def setup():
        await Namespace(namespace(NS), api=api).create()
        await Pod(echo_pod(NS), api=api).create()
        await Deployment(web_deployment(NS), api=api).create()

    if not await r.run("setup", setup):
        r.exit()

    async def crud():
        cm = ConfigMap(configmap(NS, "crud", {"a": "1"}), api=api)
        await cm.create()
        got = await ConfigMap.get("crud", namespace=NS, api=api)
        expect(got.raw["data"] == {"a": "1"}, f"get: {got.raw.get('data')}")
        names = [c.name async for c in api.get("configmaps", namespace=NS)]
        expect("crud" in names, f"list: {names}")
        body = dict(got.raw)
        body["data"] = {"a": "2"}
        async with api.call_api("PUT", version="v1", url="configmaps/crud", namespace=NS, content=json.dumps(body)) as resp:
            expect(resp.json()["data"] == {"a": "2"}, f"update: {resp.text}")
        await got.refresh()
        expect(got.raw["data"] == {"a": "2"}, f"after update: {got.raw.get('data')}")
        await got.delete()
        expect(not await got.exists(), "still exists after delete")

    await r.run("crud", crud)

    async def paged_list():
        for i in range(5):
            await ConfigMap(configmap(NS, f"page-{i}", {"i": str(i)}), api=api).create()
        seen, cont, pages = [], None, 0
        while True:
            params = {"limit": 2, "labelSelector": ""}
            if cont:
                params["continue"] = cont
            async with api.call_api("GET", version="v1", url="configmaps", namespace=NS, params=params) as resp:
                body = resp.json()
            pages += 1
            expect(len(body["items"]) <= 2, f"page of {len(body['items'])} items with limit=2")
            seen += [i["metadata"]["name"] for i in body["items"]]
            cont = body["metadata"].get("continue")
            if not cont:
                break
            expect(pages < 20, "more than 20 pages")
        want = {f"page-{i}" for i in range(5)}
        expect(want <= set(seen), f"paged names {seen}")
        expect(len(seen) == len(set(seen)), f"duplicates across pages: {seen}")
        expect(pages >= 3, f"only {pages} pages for >= 5 items at limit=2")
        # kr8s's own paging (limit=100 per page) sees the same set.
        names = {c.name async for c in api.get("configmaps", namespace=NS)}
        expect(want <= names, f"kr8s get: {names}")

    await r.run("list_limit_continue", paged_list)

    async def list_rv():
        async with api.call_api("GET", version="v1", url="configmaps", namespace=NS) as resp:
            return resp.json()["metadata"]["resourceVersion"]

    async def watch_added(since, name):
        async def wait_for():
            async for typ, obj in api.watch("configmaps", namespace=NS, since=since):
                if typ == "ADDED" and obj.name == name:
                    return
        task = asyncio.create_task(wait_for())
        await asyncio.sleep(0.3)
        await ConfigMap(configmap(NS, name, {"w": "1"}), api=api).create()
        await asyncio.wait_for(task, 20)

    async def watch():
        await watch_added(await list_rv(), "watched")

    await r.run("watch", watch)

    async def watch_410():
        old = old_resource_version()
        expect(old, "YARD_COMPAT_OLD_RV not set by the driver")
        params = {"watch": "1", "resourceVersion": old, "timeoutSeconds": "5"}
        async with api.call_api(
            "GET", version="v1", url="configmaps", namespace=NS, params=params, stream=True, timeout=None
        ) as resp:
            first = None
            async for line in resp.aiter_lines():
                if line.strip():
                    first = json.loads(line)
                    break
        expect(first is not None, "watch from a compacted resourceVersion ended without an event")
        expect(first["type"] == "ERROR", f"first event {first['type']}, want ERROR")
        expect(first["object"].get("code") == 410, f"status {first['object']}")
        expect(first["object"].get("reason") == "Expired", f"reason {first['object'].get('reason')}")
        # A fresh list, then a watch from its resourceVersion.
        await watch_added(await list_rv(), "after-410")

    await r.run("watch_410_relist", watch_410)

    async def ssa():
        manifest = configmap(NS, "ssa", {"k": "v1"})
        headers = {"Content-Type": "application/apply-patch+yaml"}
        for v in ("v1", "v2"):
            manifest["data"]["k"] = v
            async with api.call_api(
                "PATCH",
                version="v1",
                url="configmaps/ssa",
                namespace=NS,
                params={"fieldManager": "kr8s-compat", "force": "true"},
                content=json.dumps(manifest),
                headers=headers,
            ) as resp:
                body = resp.json()
            expect(body["data"] == {"k": v}, f"apply {v}: {body.get('data')}")
        managers = [m["manager"] for m in body["metadata"].get("managedFields", [])]
        expect("kr8s-compat" in managers, f"managedFields managers {managers}")

    await r.run("server_side_apply", ssa)

    async def patches():
        cm = ConfigMap(configmap(NS, "patched", {"a": "1"}), api=api)
        await cm.create()
        await cm.patch([{"op": "add", "path": "/data/b", "value": "2"}], type="json")
        expect(cm.raw["data"] == {"a": "1", "b": "2"}, f"json patch: {cm.raw['data']}")
        await cm.patch({"data": {"a": None, "c": "3"}})
        expect(cm.raw["data"] == {"b": "2", "c": "3"}, f"merge patch: {cm.raw['data']}")
        # Strategic merge: kr8s's patch() sends only json or merge patches.
        d = await Deployment.get("web", namespace=NS, api=api)
        smp = {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "env": [{"name": "X", "value": "1"}]}]}}}}
        async with api.call_api(
            "PATCH",
            version="apps/v1",
            url="deployments/web",
            namespace=NS,
            content=json.dumps(smp),
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        ) as resp:
            body = resp.json()
        cs = body["spec"]["template"]["spec"]["containers"]
        expect(len(cs) == 1 and cs[0]["image"] == "nginx:1.14.2", f"strategic patch merged containers: {cs}")
        expect(cs[0].get("env") == [{"name": "X", "value": "1"}], f"strategic patch env: {cs[0].get('env')}")
        del d

    await r.run("patch_json_merge_strategic", patches)

    async def wait_available():
        d = await Deployment.get("web", namespace=NS, api=api)
        await d.wait("condition=Available", timeout=60)

    await r.run("wait_deployment_available", wait_available, timeout=90)

    async def ready_pod(name=None, selector=None):
        for _ in range(600):
            pods = [p async for p in api.get("pods", namespace=NS, label_selector=selector)] if selector else [
                await Pod.get(name, namespace=NS, api=api)
            ]
            ready = [p for p in pods if p.raw.get("status", {}).get("phase") == "Running"]
            if ready:
                return ready[0]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no running pod {name or selector}")

    async def exec_echo():
        pod = await ready_pod("echo")
        ex = await pod.exec(["echo", "hello-from-exec"])
        expect(ex.stdout.decode().strip() == "hello-from-exec", f"stdout {ex.stdout!r} stderr {ex.stderr!r}")
        expect(ex.returncode == 0, f"returncode {ex.returncode}")

    await r.run("exec", exec_echo)

    async def logs():
        pod = await ready_pod("echo")
        lines = [line async for line in pod.logs()]
        expect(LOG_LINE in "\n".join(lines), f"logs {lines}")

    await r.run("logs", logs)

    async def port_forward():
        pod = await ready_pod(selector="app=web")
        async with pod.portforward(80, local_port="auto") as local:
            text = await http_get_local(local)
        expect_http_ok(text)

    await r.run("port_forward", port_forward, timeout=20)

    async def cleanup():
        await (await Namespace.get(NS, api=api)).delete()

    await r.run("cleanup", cleanup)
    r.exit()


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    asyncio.run(main())
