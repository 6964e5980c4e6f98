"""Yard compatibility check with kubernetes_asyncio (pinned; the asyncio port of the official client).

Exec goes through the library's `WsApiClient` (v4.channel.k8s.io). kubernetes_asyncio has no
port-forward helper: with `_preload_content=False` its `WsApiClient` hands back the WebSocket of
`connect_get_namespaced_pod_portforward`, and the check speaks the port-forward channel framing
(data channel 0, error channel 1, each opened by the port number) over it, as its users do.
"""

import asyncio
import json
import sys

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from compat_common import (
    LOG_LINE,
    Reporter,
    configmap,
    echo_pod,
    expect,
    expect_http_ok,
    namespace,
    old_resource_version,
    web_deployment,
)

NS = "compat-asyncio"


async def main():
    r = Reporter()
    await config.load_kube_config()
    api_client = client.ApiClient()
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)

    async def setup():
        await core.create_namespace(namespace(NS))
        await core.create_namespaced_pod(NS, echo_pod(NS))
        await apps.create_namespaced_deployment(NS, web_deployment(NS))

    if not await r.run("setup", setup):
        await api_client.close()
        r.exit()

    async def crud():
        await core.create_namespaced_config_map(NS, configmap(NS, "crud", {"a": "1"}))
        got = await core.read_namespaced_config_map("crud", NS)
        expect(got.data == {"a": "1"}, f"get: {got.data}")
        lst = await core.list_namespaced_config_map(NS)
        expect("crud" in [i.metadata.name for i in lst.items], "list lacks crud")
        got.data = {"a": "2"}
        upd = await core.replace_namespaced_config_map("crud", NS, got)
        expect(upd.data == {"a": "2"}, f"update: {upd.data}")
        expect(int(upd.metadata.resource_version) > int(got.metadata.resource_version), "resourceVersion did not move")
        await core.delete_namespaced_config_map("crud", NS)
        try:
            await core.read_namespaced_config_map("crud", NS)
            raise AssertionError("still exists after delete")
        except ApiException as e:
            expect(e.status == 404, f"get after delete: {e.status}")

    await r.run("crud", crud)

    async def paged_list():
        for i in range(5):
            await core.create_namespaced_config_map(NS, configmap(NS, f"page-{i}", {"i": str(i)}))
        seen, cont, pages = [], None, 0
        while True:
            kw = {"limit": 2}
            if cont:
                kw["_continue"] = cont
            page = await core.list_namespaced_config_map(NS, **kw)
            pages += 1
            expect(len(page.items) <= 2, f"page of {len(page.items)} items with limit=2")
            seen += [i.metadata.name for i in page.items]
            cont = page.metadata._continue
            if not cont:
                break
            expect(pages < 20, "more than 20 pages")
        expect({f"page-{i}" for i in range(5)} <= set(seen), f"paged names {seen}")
        expect(len(seen) == len(set(seen)), f"duplicates across pages: {seen}")
        expect(pages >= 3, f"only {pages} pages")

    await r.run("list_limit_continue", paged_list)

    async def watch_added(since, name):
        async def wait_for():
            w = watch.Watch()
            async with w.stream(core.list_namespaced_config_map, NS, resource_version=since, timeout_seconds=30) as s:
                async for ev in s:
                    if ev["type"] == "ADDED" and ev["object"].metadata.name == name:
                        return
            raise AssertionError(f"watch ended without ADDED {name}")

        task = asyncio.create_task(wait_for())
        await asyncio.sleep(0.3)
        await core.create_namespaced_config_map(NS, configmap(NS, name, {"w": "1"}))
        await asyncio.wait_for(task, 20)

    async def do_watch():
        rv = (await core.list_namespaced_config_map(NS)).metadata.resource_version
        await watch_added(rv, "watched")

    await r.run("watch", do_watch)

    async def watch_410():
        old = old_resource_version()
        expect(old, "YARD_COMPAT_OLD_RV not set by the driver")
        w = watch.Watch()
        try:
            async with w.stream(core.list_namespaced_config_map, NS, resource_version=old, timeout_seconds=5) as s:
                async for ev in s:
                    raise AssertionError(f"event {ev['type']} from a compacted resourceVersion")
            raise AssertionError("watch from a compacted resourceVersion ended without an error")
        except ApiException as e:
            expect(e.status == 410, f"status {e.status} reason {e.reason}")
        rv = (await core.list_namespaced_config_map(NS)).metadata.resource_version
        await watch_added(rv, "after-410")

    await r.run("watch_410_relist", watch_410)

    async def ssa():
        for v in ("v1", "v2"):
            body = configmap(NS, "ssa", {"k": v})
            out = await core.patch_namespaced_config_map(
                "ssa",
                NS,
                body,
                field_manager="asyncio-compat",
                force=True,
                _content_type="application/apply-patch+yaml",
            )
            expect(out.data == {"k": v}, f"apply {v}: {out.data}")
        managers = [m.manager for m in out.metadata.managed_fields or []]
        expect("asyncio-compat" in managers, f"managers {managers}")

    await r.run("server_side_apply", ssa)

    async def patches():
        await core.create_namespaced_config_map(NS, configmap(NS, "patched", {"a": "1"}))
        out = await core.patch_namespaced_config_map(
            "patched",
            NS,
            [{"op": "add", "path": "/data/b", "value": "2"}],
            _content_type="application/json-patch+json",
        )
        expect(out.data == {"a": "1", "b": "2"}, f"json patch: {out.data}")
        out = await core.patch_namespaced_config_map(
            "patched", NS, {"data": {"a": None, "c": "3"}}, _content_type="application/merge-patch+json"
        )
        expect(out.data == {"b": "2", "c": "3"}, f"merge patch: {out.data}")
        smp = {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "env": [{"name": "X", "value": "1"}]}]}}}}
        d = await apps.patch_namespaced_deployment(
            "web", NS, smp, _content_type="application/strategic-merge-patch+json"
        )
        cs = d.spec.template.spec.containers
        expect(len(cs) == 1 and cs[0].image == "nginx:1.14.2", f"strategic patch containers: {cs}")
        expect([(e.name, e.value) for e in cs[0].env or []] == [("X", "1")], f"strategic env: {cs[0].env}")

    await r.run("patch_json_merge_strategic", patches)

    async def wait_available():
        # The library's way to wait: watch the Deployment until its Available condition is True.
        w = watch.Watch()
        async with w.stream(
            apps.list_namespaced_deployment, NS, field_selector="metadata.name=web", timeout_seconds=80
        ) as s:
            async for ev in s:
                conds = ev["object"].status.conditions or []
                if any(c.type == "Available" and c.status == "True" for c in conds):
                    return
        raise AssertionError("watch ended before the Deployment was Available")

    await r.run("wait_deployment_available", wait_available, timeout=90)

    async def running_pod(name=None, selector=None):
        for _ in range(600):
            if name:
                pods = [await core.read_namespaced_pod(name, NS)]
            else:
                pods = (await core.list_namespaced_pod(NS, label_selector=selector)).items
            running = [p for p in pods if p.status.phase == "Running"]
            if running:
                return running[0].metadata.name
            await asyncio.sleep(0.1)
        raise AssertionError(f"no running pod {name or selector}")

    async def do_exec():
        pod = await running_pod("echo")
        async with WsApiClient() as ws:
            ws_core = client.CoreV1Api(api_client=ws)
            out = await ws_core.connect_get_namespaced_pod_exec(
                pod, NS, command=["echo", "hello-from-exec"], stderr=True, stdin=False, stdout=True, tty=False
            )
        expect(out.strip() == "hello-from-exec", f"exec output {out!r}")

    await r.run("exec", do_exec)

    async def logs():
        pod = await running_pod("echo")
        text = await core.read_namespaced_pod_log(pod, NS)
        expect(LOG_LINE in text, f"logs {text!r}")

    await r.run("logs", logs)

    async def port_forward():
        pod = await running_pod(selector="app=web")
        async with WsApiClient() as ws:
            ws_core = client.CoreV1Api(api_client=ws)
            ctx = await ws_core.connect_get_namespaced_pod_portforward(pod, NS, ports="80", _preload_content=False)
            async with ctx as conn:
                sent = False
                data = b""
                opened = set()
                async for msg in conn:
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                        continue
                    ch, payload = msg.data[0], msg.data[1:]
                    if ch not in opened:
                        # The first frame of each channel carries its port (little-endian u16).
                        opened.add(ch)
                        expect(payload[:2] == (80).to_bytes(2, "little"), f"channel {ch} opened with {payload!r}")
                        payload = payload[2:]
                    if ch == 1 and payload:
                        raise AssertionError(f"port-forward error channel: {payload!r}")
                    if ch == 0:
                        data += payload
                    if not sent and {0, 1} <= opened:
                        await conn.send_bytes(b"\x00GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                        sent = True
                    if b"\r\n\r\n" in data:
                        break
        expect_http_ok(data.decode("utf-8", "replace"))

    await r.run("port_forward", port_forward, timeout=20)

    async def cleanup():
        await core.delete_namespace(NS)

    await r.run("cleanup", cleanup)
    await api_client.close()
    r.exit()


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    asyncio.run(main())
