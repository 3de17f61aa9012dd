#!/usr/bin/env bash
# Stepped-rate comparison: fanout and the classic hub get the same
# receivers and publishers at increasing message rates, in one run; for
# each rate it prints deliveries/s, loss and p99, and at the end the
# highest deliveries/s each sustained with loss < 0.1 % and p99 < 100 ms.
# With --flush-delays it also measures fanout's batching window trade-off.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/stepped.sh [options]

  --conns N            receivers (default 1000)
  --publishers P       publishers (default 2)
  --size B             message size (default 64)
  --rates "R1 R2 ..."  total messages/s to step through (default "100 200 400 800 1600 3200")
  --duration D         time per step (default 8s)
  --flush-delays "…"   also run fanout at each rate with these -flush-delay values (e.g. "1ms 5ms")
  --out DIR            results (default ./stepped-results)
  -h, --help           this text

Ports 18080/18081 (fanout) and 19090 (baseline) must be free.
TXT
}

conns=1000 pubs=2 size=64 rates="100 200 400 800 1600 3200" duration=8s delays="" out=./stepped-results
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns=$2; shift 2 ;;
    --publishers) pubs=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --flush-delays) delays=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "stepped.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
build

start_fanout() { # extra flags...
  start 18080 "$out/fanout.log" "$bin/fanout" -addr 127.0.0.1:18080 -admin-addr 127.0.0.1:18081 -log-level error "$@"
  fpid=$started_pid
}
start 19090 "$out/baseline.log" "$bin/fanout-bench" baseline -addr 127.0.0.1:19090
bpid=$started_pid

step() { # label url pid rate
  local json="$out/$1-$4.json"
  "$bin/fanout-bench" fanout -url "$2" -server-pid "$3" -conns "$conns" -publishers "$pubs" -size "$size" \
    -rate "$4" -duration "$duration" -drain 5s -quiet -json "$json" >/dev/null
  read -r dps loss p99 cpu < <("$bin/fanout-bench" summary -raw "$json")
  local ok=no
  awk -v l="$loss" -v p="$p99" 'BEGIN { exit !(l < 0.001 && p < 100) }' && ok=yes
  printf "%-22s %8s msg/s  %10.0f deliveries/s  loss %8.4f %%  p99 %9.2f ms  cpu %6.2f µs  %s\n" \
    "$1" "$4" "$dps" "$(awk -v l="$loss" 'BEGIN{print 100*l}')" "$p99" "$cpu" "$ok"
  if [ $ok = yes ]; then best["$1"]=$(awk -v a="${best[$1]:-0}" -v b="$dps" 'BEGIN{print (b>a)?b:a}'); fi
}

declare -A best
echo "# $conns receivers, $pubs publishers, $size B, $duration per step; ok = loss < 0.1 % and p99 < 100 ms"
for rate in $rates; do
  start_fanout
  step fanout ws://127.0.0.1:18080/ws "$fpid" "$rate"
  stop "$fpid"
  step baseline ws://127.0.0.1:19090/ws "$bpid" "$rate"
  for d in $delays; do
    start_fanout -flush-delay "$d"
    step "fanout-flush-$d" ws://127.0.0.1:18080/ws "$fpid" "$rate"
    stop "$fpid"
  done
done
echo
for k in "${!best[@]}"; do printf "best %-22s %10.0f deliveries/s\n" "$k" "${best[$k]}"; done | sort
if [ -n "${best[fanout]:-}" ] && [ -n "${best[baseline]:-}" ]; then
  awk -v a="${best[fanout]}" -v b="${best[baseline]}" 'BEGIN { printf "fanout / classic hub: %.2f×\n", a/b }'
fi
