#!/usr/bin/env bash
# `yard up` start time and memory (issue 7): time from exec to the node being Ready (as printed by
# yard up) and to the hostnames example being Ready, then the resident memory of the whole
# process tree (yard and every pod process) with the example running. Runs RUNS times; each run
# is a fresh data dir and cluster name, stopped with SIGINT, host checked unchanged.
# Usage: bench/up-bench.sh [path/to/yard] [RUNS]
set -euo pipefail
YARD=${1:-target/release/yard}
RUNS=${2:-5}
EX=$(cd "$(dirname "$0")/.." && pwd)/examples/hostnames.yaml
tree_rss_kb() {  # sum VmRSS of $1 and all its descendants, each counted once
  local total p
  total=$(awk '/VmRSS/ {print $2}' /proc/$1/status 2>/dev/null || echo 0)
  for p in $(pgrep -P "$1" || true); do
    total=$(( total + $(tree_rss_kb "$p") ))
  done
  echo "$total"
}
before=$(ip netns list; ip -o link show; nft list ruleset)
for i in $(seq 1 "$RUNS"); do
  d=$(mktemp -d)
  log=$d/out.log
  start=$(date +%s.%N)
  "$YARD" up --name ub$i --api-port 0 --data-dir "$d/data" -f "$EX" > "$log" 2>"$d/err.log" &
  pid=$!
  while ! grep -q "is up;" "$log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$log" "$d/err.log"; exit 1; }
    sleep 0.02
  done
  up=$(date +%s.%N)
  sleep 2
  rss=$(tree_rss_kb $pid)
  node=$(grep -o "Ready in [0-9.]*s" "$log" | head -1)
  ready=$(grep -o "^ready in [0-9.]*s" "$log" | head -1)
  printf 'run %d: node %s, hostnames %s (wall %.2fs), tree RSS %.1f MiB\n' "$i" "$node" "$ready" "$(echo "$up - $start" | bc)" "$(echo "$rss / 1024" | bc -l)"
  kill -INT $pid; wait $pid || true
  rm -rf "$d"
done
after=$(ip netns list; ip -o link show; nft list ruleset)
[ "$before" = "$after" ] && echo "host unchanged after every run" || { echo "HOST CHANGED"; exit 1; }
