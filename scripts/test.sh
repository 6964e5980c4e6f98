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
# A from-scratch build gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# rustup's default profile has both; a minimal one gets them here.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
# Habits first: the tree is formatted (rustfmt.toml) and clippy-clean, warnings included.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
# Tests that create namespaces, processes and kernel rules run a few at a time to stay within 2 cores.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
df -h . "${TMPDIR:-/tmp}"
cargo test --workspace --locked --no-fail-fast -- --test-threads=4 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | paste -sd+ | bc)
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ | bc)
echo
echo "total: ${passed} passed, ${failed} failed"
exit "$rc"
