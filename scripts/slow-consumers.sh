#!/usr/bin/env bash
# Slow consumers under load: the same fanout run twice against one fanout
# server, once with every receiver reading and once with a fraction that
# stops reading for the whole run. Prints the server's RSS growth against
# its bound (slow receivers × -queue-bytes + 16 MiB), the healthy
# receivers' p99 in both runs, and how the slow ones were closed.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/slow-consumers.sh [options]

  --conns N        receivers (default 1000)
  --slow F         fraction that stops reading (default 0.1)
  --rate R         messages/s (default 250)
  --size B         message size (default 4096: enough bytes to fill kernel buffers, then the queue)
  --duration D     publishing time (default 30s)
  --queue-bytes Q  the server's -queue-bytes (default 262144)
  --close-timeout T  the server's -close-timeout (default 60s: a slow receiver that reads
                   again within it still gets its 1008 close frame after what was queued)
  --out DIR        results (default ./slow-results)
  -h, --help       this text
TXT
}
conns=1000 slow=0.1 rate=250 size=4096 duration=30s queue=262144 closeto=60s out=./slow-results
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns=$2; shift 2 ;;
    --slow) slow=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --queue-bytes) queue=$2; shift 2 ;;
    --close-timeout) closeto=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "slow-consumers.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
build

run() { # scenario json
  start 18080 "$out/fanout-$2.log" "$bin/fanout" -addr 127.0.0.1:18080 -admin-addr 127.0.0.1:18081 -log-level error -queue-bytes "$queue" -close-timeout "$closeto"
  fpid=$started_pid
  local sf=()
  [ "$1" = slow ] && sf=(-slow-fraction "$slow") # fanout takes no -slow-fraction
  "$bin/fanout-bench" "$1" -url ws://127.0.0.1:18080/ws -server-pid "$fpid" -conns "$conns" "${sf[@]}" \
    -publishers 2 -rate "$rate" -size "$size" -duration "$duration" -quiet -json "$out/$2.json" -report "$out/$2.html" \
    | tee "$out/$2.txt"
  curl -s http://127.0.0.1:18081/metrics | grep -E '^fanout_(slow_consumer_closes_total|closes_total\{reason="slow_consumer"\})' \
    > "$out/$2.metrics" || true
  stop "$fpid"
}
run fanout all-reading
run slow some-slow

echo
read -r _ _ p99a _ < <("$bin/fanout-bench" summary -raw "$out/all-reading.json")
read -r _ _ p99b _ < <("$bin/fanout-bench" summary -raw "$out/some-slow.json")
before=$(sed -n 's/.*"before": {[^}]*"rss_bytes": \([0-9]*\).*/\1/p' "$out/some-slow.json" | head -1)
peak=$(sed -n 's/.*"peak_rss_bytes": \([0-9]*\).*/\1/p' "$out/some-slow.json" | head -1)
nslow=$(awk -v c="$conns" -v f="$slow" 'BEGIN { printf "%d", c*f }')
awk -v b="${before:-0}" -v p="${peak:-0}" -v n="$nslow" -v q="$queue" -v a="$p99a" -v s="$p99b" 'BEGIN {
  bound = n*q + 16*1048576
  printf "server RSS growth with %d slow receivers: %.1f MiB (bound %.1f MiB: %s)\n", n, (p-b)/1048576, bound/1048576, (p-b <= bound) ? "within" : "OVER"
  printf "healthy p99: %.2f ms with nobody slow, %.2f ms with slow receivers (%.2f×)\n", a, s, s/a
}'
grep -E "slow receivers|server closes" "$out/some-slow.txt" || true
echo "server counters: $(tr '\n' ' ' < "$out/some-slow.metrics")"
