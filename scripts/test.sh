#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, and runs every crate's unit tests and the
# end-to-end suites (real kubectl, real kernel networking inside namespaces the tests create).
# Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the test suite needs root (it creates network namespaces)" >&2
  exit 1
fi
./scripts/install-deps.sh
export CARGO_TERM_COLOR=never
cargo build --workspace --all-targets --locked
# Tests that create namespaces, processes and kernel rules run a few at a time to stay within 2 cores.
cargo test --workspace --locked -- --test-threads=4
