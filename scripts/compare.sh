#!/usr/bin/env bash
# Runs the same connect and fanout scenarios against fanout and against the
# classic goroutine-per-connection hub (fanout-bench baseline), in one run
# on this machine, and prints a ratio table. Every figure in the README's
# comparison comes from this script.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/compare.sh [options]

  --conns N          connections for the connect scenario (default 10000)
  --fanout-conns N   receivers for the fanout scenario (default 10000)
  --publishers N     publishers (default 2)
  --rate R           total messages/s, or max (default 10)
  --size B           message size in bytes (default 64)
  --duration D       publishing time (default 20s)
  --hold D           connect scenario hold (default 5s)
  --source-ips R     client source addresses (default 127.0.0.2-127.0.0.20)
  --out DIR          where JSON and HTML results go (default ./compare-results)
  --fanout-flags "…" extra flags for the fanout server
  --profile          also take a 10 s CPU profile of fanout during its fanout run (pprof -top saved in --out)
  -h, --help         this text

Ports 18080/18081/18082 (fanout: WebSocket, admin, pprof) and 19090 (baseline) must be free.
TXT
}

conns=10000 fconns=10000 pubs=2 rate=10 size=64 duration=20s hold=5s
srcips=127.0.0.2-127.0.0.20 out=./compare-results fflags="" profile=0
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns=$2; shift 2 ;;
    --fanout-conns) fconns=$2; shift 2 ;;
    --publishers) pubs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    --source-ips) srcips=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fanout-flags) fflags=$2; shift 2 ;;
    --profile) profile=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
build

# shellcheck disable=SC2086
start 18080 "$out/fanout.log" "$bin/fanout" -addr 127.0.0.1:18080 -admin-addr 127.0.0.1:18081 -log-level warn -pprof-addr 127.0.0.1:18082 $fflags
fpid=$started_pid
start 19090 "$out/baseline.log" "$bin/fanout-bench" baseline -addr 127.0.0.1:19090
bpid=$started_pid

run() { # label url pid metrics scenario json extra...
  local label=$1 url=$2 pid=$3 metrics=$4 scenario=$5 json=$6; shift 6
  echo "# $label: $scenario" >&2
  "$bin/fanout-bench" "$scenario" -url "$url" -server-pid "$pid" -metrics-url "$metrics" \
    -source-ips "$srcips" -quiet -json "$out/$json.json" -report "$out/$json.html" "$@" | tee "$out/$json.txt"
}

echo "# ceiling: this machine's raw write cost per delivery" >&2
"$bin/fanout-bench" ceiling -json "$out/ceiling.json" | tee "$out/ceiling.txt"

for target in fanout baseline; do
  if [ $target = fanout ]; then url=ws://127.0.0.1:18080/ws pid=$fpid metrics=http://127.0.0.1:18081/metrics
  else url=ws://127.0.0.1:19090/ws pid=$bpid metrics=http://127.0.0.1:19090/metrics; fi
  run $target $url $pid $metrics connect ${target}-connect -conns "$conns" -hold "$hold"
  if [ $target = fanout ] && [ $profile = 1 ]; then
    # Profile the middle of the publishing phase (the connect ramp takes ~1-2 s).
    (sleep 4; curl -s -o "$out/fanout-cpu.pprof" "http://127.0.0.1:18082/debug/pprof/profile?seconds=10") &
    profiler=$!
  fi
  run $target $url $pid $metrics fanout ${target}-fanout -conns "$fconns" -publishers "$pubs" \
    -rate "$rate" -size "$size" -duration "$duration"
  if [ -n "${profiler:-}" ]; then wait "$profiler" || true; profiler=""; fi
done
if [ -s "$out/fanout-cpu.pprof" ]; then
  (cd "$root" && go tool pprof -top "$bin/fanout" "$out/fanout-cpu.pprof" 2>/dev/null | head -40) > "$out/fanout-cpu.txt" || true
fi

echo
echo "## connect: $conns connections"
"$bin/fanout-bench" compare -labels fanout,baseline "$out/fanout-connect.json" "$out/baseline-connect.json"
echo
echo "## fanout: $fconns receivers, $pubs publishers, rate $rate, $size B"
"$bin/fanout-bench" compare -labels fanout,baseline "$out/fanout-fanout.json" "$out/baseline-fanout.json"
echo
read -r _ _ _ fcpu < <("$bin/fanout-bench" summary -raw "$out/fanout-fanout.json")
ceil=$(sed -n 's/.*"cpu_per_delivery_1_frame_per_write_ns": \([0-9]*\).*/\1/p' "$out/ceiling.json")
awk -v f="$fcpu" -v c="$ceil" 'BEGIN { printf "fanout CPU per delivery %.2f µs = %.2f× the ceiling (%.2f µs, one frame per write)\n", f, f*1000/c, c/1000 }'
