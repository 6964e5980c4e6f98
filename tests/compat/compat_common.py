"""Shared pieces of the Python compatibility checks: the PASS/FAIL/SKIP reporter, the workload every
client creates (a busybox pod that logs one line and sleeps, an nginx Deployment to port-forward to
and wait for), and the environment the driver (crates/yard/tests/compat_e2e.rs) passes in.

Each check script talks to the cluster only through its own client library; this module does no I/O
against the API server.
"""

import asyncio
import os
import sys
import traceback

LOG_LINE = "compat-log-line"


def old_resource_version():
    """A resourceVersion the driver made sure is compacted away (watching from it must give 410)."""
    return os.environ.get("YARD_COMPAT_OLD_RV", "")


class Reporter:
    """Prints one `PASS <check>` / `FAIL <check>: <why>` / `SKIP <check>: <why>` line per check."""

    def __init__(self):
        self.failed = 0

    def passed(self, name):
        print(f"PASS {name}", flush=True)

    def fail(self, name, why):
        self.failed += 1
        why = " ".join(str(why).split())[:600]
        print(f"FAIL {name}: {why}", flush=True)

    def skip(self, name, why):
        print(f"SKIP {name}: {why}", flush=True)

    async def run(self, name, coro_fn, timeout=60):
        """Run one async check; an exception or a timeout is that check's FAIL."""
        try:
            await asyncio.wait_for(coro_fn(), timeout)
            self.passed(name)
            return True
        except asyncio.TimeoutError:
            self.fail(name, f"timed out after {timeout}s")
        except Exception as e:  # noqa: BLE001 - every failure is reported, the script goes on
            detail = f"{type(e).__name__}: {e}"
            if os.environ.get("YARD_COMPAT_TRACEBACK"):
                traceback.print_exc()
            self.fail(name, detail)
        return False

    def exit(self):
        sys.exit(1 if self.failed else 0)


def expect(cond, why):
    if not cond:
        raise AssertionError(why)


def namespace(ns):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}


def echo_pod(ns):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "echo", "namespace": ns, "labels": {"app": "echo"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", f"echo {LOG_LINE}; exec sleep 3600"],
                }
            ]
        },
    }


def web_deployment(ns):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.14.2", "ports": [{"containerPort": 80}]}
                    ]
                },
            },
        },
    }


def configmap(ns, name, data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


async def http_get_local(port, timeout=10):
    """One HTTP/1.0 GET / to 127.0.0.1:port (a port-forward's local end); returns the response text."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), timeout)
        while True:
            more = await asyncio.wait_for(reader.read(65536), timeout)
            if not more:
                break
            data += more
        return data.decode("utf-8", "replace")
    finally:
        writer.close()


def expect_http_ok(text):
    first = text.split("\r\n", 1)[0]
    expect(first.startswith("HTTP/1.") and " 200" in first, f"not an HTTP 200 response: {first!r}")
