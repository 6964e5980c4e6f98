#!/usr/bin/env bash
# Cluster DNS benchmark (issue 6): `yard dns` vs `knotd` with dnsperf, same machine, same query
# file and flags (see bench/src/dns_bench.rs). Builds release binaries first.
# Usage: bench/dns-bench.sh [dns-bench flags, e.g. --services 5000 --seconds 10 --rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in dnsperf knotd dig taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p yard --bin yard
cargo build --release -p yard-bench --bin dns-bench
exec "$TARGET/release/dns-bench" --yard "$TARGET/release/yard" "$@"
