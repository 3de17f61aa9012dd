#!/usr/bin/env bash
# Client publishing against the publish API, in one run on this machine:
# the same fanout scenario with publishers that write WebSocket frames
# (client), that POST each message to /publish (http), and that POST
# batches of messages as NDJSON (batch). The server is started afresh for
# every run. Prints each run's deliveries/s, loss, p99, server CPU per
# delivery and deliveries per socket write, with the ratios of client to
# each other mode (this box is shared and noisy: read ratios from one run).
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/publish-api.sh [options]

  --conns N          receivers (default 1000)
  --publishers N     publishers (default 8)
  --rate R           total messages/s, or max (default max: closed loop, -window in flight)
  --window N         messages in flight per publisher with --rate max (default 16)
  --size B           message size in bytes (default 64; at least 40 for batch)
  --duration D       publishing time per run (default 10s)
  --batch N          messages per POST in the batch mode (default 16)
  --modes "…"        which of client, http, batch to run, in this order (default "client http batch")
  --rounds N         rounds, each one run of every mode (default 1)
  --fanout-bin PATH  the server binary (default: cmd/fanout built from the work tree)
  --before-bin PATH  a second server binary: every round also runs --before-modes against it
                     (labelled before-MODE), for a before/after in the same run
  --before-modes "…" the modes run against --before-bin (default: --modes; a server
                     from before batches takes no batch mode)
  --port N           WebSocket port; the admin API listens on N+1 (default 18280)
  --out DIR          where JSON results and server logs go (default ./publish-api-results)
  --fanout-flags "…" extra flags for the server(s)
  -h, --help         this text

The server runs with a fresh publish key (FANOUT_PUBLISH_KEYS, which
fanout-bench reads too), -log-level warn and its admin API on its own port;
fanout-bench reads its CPU from /proc and its deliveries and socket writes
from /metrics.
TXT
}

conns=1000 pubs=8 rate=max window=16 size=64 duration=10s batch=16 modes="client http batch" rounds=1
fbin="" before="" bmodes="" port=18280 out=./publish-api-results fflags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns=$2; shift 2 ;;
    --publishers) pubs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --fanout-bin) fbin=$2; shift 2 ;;
    --before-bin) before=$2; shift 2 ;;
    --before-modes) bmodes=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fanout-flags) fflags=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "publish-api.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$rounds" in ''|*[!0-9]*|0) echo "publish-api.sh: --rounds wants a positive integer" >&2; exit 2 ;; esac
case "$port" in ''|*[!0-9]*) echo "publish-api.sh: --port wants a port number" >&2; exit 2 ;; esac
[ -n "$bmodes" ] || bmodes=$modes
for m in $modes $bmodes; do
  case "$m" in client|http|batch) ;; *) echo "publish-api.sh: unknown mode $m (client, http, batch)" >&2; exit 2 ;; esac
done
for b in "$fbin" "$before"; do
  if [ -n "$b" ] && [ ! -x "$b" ]; then echo "publish-api.sh: $b is not an executable" >&2; exit 2; fi
done

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
build
[ -n "$fbin" ] || fbin=$bin/fanout

admin=$((port + 1))
FANOUT_PUBLISH_KEYS=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n') # for the server and the bench, out of ps
export FANOUT_PUBLISH_KEYS
wsurl=ws://127.0.0.1:$port/ws
puburl=http://127.0.0.1:$admin/publish

# one LABEL SERVER MODE: a fresh server, one fanout-bench run, the server stopped.
one() {
  local label=$1 server=$2 mode=$3 extra=()
  case "$mode" in
    http) extra=(-publish-url "$puburl") ;;
    batch) extra=(-publish-url "$puburl" -publish-batch "$batch") ;;
  esac
  # shellcheck disable=SC2086
  start "$port" "$out/$label.log" "$server" -addr "127.0.0.1:$port" -admin-addr "127.0.0.1:$admin" \
    -log-level warn $fflags
  local pid=$started_pid
  echo "# $label" >&2
  "$bin/fanout-bench" fanout -url "$wsurl" -server-pid "$pid" -metrics-url "http://127.0.0.1:$admin/metrics" \
    -conns "$conns" -publishers "$pubs" -rate "$rate" -window "$window" -size "$size" -duration "$duration" \
    -quiet -json "$out/$label.json" "${extra[@]}" >"$out/$label.txt"
  stop "$pid"
}

# table TITLE LABEL FILE...: fanout-bench compare, labels then files
# (fanout-bench summary for one).
table() {
  local title=$1 n=$(( ($# - 1) / 2 )); shift
  echo
  echo "### $title"
  if [ "$n" -lt 2 ]; then
    echo "$1: deliveries/s, loss ratio, p99 (ms), server CPU/delivery (µs): $("$bin/fanout-bench" summary -raw "$2")"
    return
  fi
  (IFS=,; "$bin/fanout-bench" compare -labels "${*:1:n}" "${@:n+1}")
}

for r in $(seq "$rounds"); do
  labels=() files=() blabels=() bfiles=()
  for m in $modes; do
    if [ -n "$before" ] && [[ " $bmodes " == *" $m "* ]]; then
      one "before-$m-$r" "$before" "$m"
      blabels+=("before-$m") bfiles+=("$out/before-$m-$r.json")
    fi
    one "$m-$r" "$fbin" "$m"
    labels+=("$m") files+=("$out/$m-$r.json")
  done
  echo
  echo "## round $r: $conns receivers, $pubs publishers, rate $rate, window $window, $size B, $duration; batch: $batch messages per POST"
  table "$fbin (ratios: the first mode / each other)" "${labels[@]}" "${files[@]}"
  for f in "${files[@]}"; do grep -h 'publish API' "${f%.json}.txt" || true; done
  if [ -n "$before" ]; then
    if [ ${#bfiles[@]} -gt 1 ]; then
      table "$before (ratios: the first mode / each other)" "${blabels[@]}" "${bfiles[@]}"
    fi
    for m in $modes; do
      [[ " $bmodes " == *" $m "* ]] || continue
      table "$m: after / before" "$m" "before-$m" "$out/$m-$r.json" "$out/before-$m-$r.json"
    done
  fi
done
