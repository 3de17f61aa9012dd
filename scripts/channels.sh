#!/usr/bin/env bash
# What channels cost, in one run on this machine (shared and noisy: read
# the ratios of one run, never figures across runs):
#   fanout   a message to a channel of N subscribers vs the same on the
#            default channel, rounds alternating, server CPU per delivery;
#   rooms    N channels of one subscriber each, every client publishing to
#            its own room: messages/s through the whole path (read, route,
#            seq, history, write) and server CPU per message, at each rate,
#            next to the default channel's CPU per delivery of the same run.
# The server is started afresh for every run.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/channels.sh [options]

  --conns N          receivers, and rooms (default 10000)
  --rate R           messages/s for the fanout comparison (default 100)
  --room-rates "…"   messages/s per client for the rooms runs (default "1 2 5")
  --size B           message size in bytes (default 64)
  --duration D       publishing time per run (default 10s)
  --rounds N         rounds of the fanout comparison (default 3)
  --modes "…"        which of fanout, rooms to run (default "fanout rooms")
  --source-ips R     client source addresses (default 127.0.0.2-127.0.0.40)
  --port N           WebSocket port; the admin API listens on N+1 (default 18580)
  --out DIR          where JSON results and server logs go (default ./channels-results)
  --fanout-bin PATH  the server binary (default: cmd/fanout built from the work tree)
  --fanout-flags "…" extra flags for the server
  -h, --help         this text
TXT
}

conns=10000 rate=100 rrates="1 2 5" size=64 duration=10s rounds=3 modes="fanout rooms"
srcips=127.0.0.2-127.0.0.40 port=18580 out=./channels-results fbin="" fflags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --room-rates) rrates=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --source-ips) srcips=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fanout-bin) fbin=$2; shift 2 ;;
    --fanout-flags) fflags=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "channels.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$rounds" in ''|*[!0-9]*|0) echo "channels.sh: --rounds wants a positive integer" >&2; exit 2 ;; esac

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
build
[ -n "$fbin" ] || fbin=$bin/fanout
admin=127.0.0.1:$((port + 1))
echo "# machine: $(nproc) cores, $(uname -r), $(go version | cut -d' ' -f3); $(date -u +%FT%TZ); $(git -C "$root" rev-parse --short HEAD)"

# run NAME SCENARIO ARGS...: one fanout-bench run against a fresh server.
run() {
  local name=$1; shift
  # shellcheck disable=SC2086
  start "$port" "$out/$name.log" "$fbin" -addr "127.0.0.1:$port" -admin-addr "$admin" -log-level warn $fflags
  local pid=$started_pid
  echo "# $name" >&2
  "$bin/fanout-bench" "$@" -url "ws://127.0.0.1:$port/ws" -server-pid "$pid" -metrics-url "http://$admin/metrics" \
    -source-ips "$srcips" -quiet -json "$out/$name.json" >"$out/$name.txt"
  stop "$pid"
}

if [[ " $modes " == *" fanout "* ]]; then
  for r in $(seq "$rounds"); do
    run "default-$r" fanout -conns "$conns" -rate "$rate" -size "$size" -duration "$duration"
    run "channel-$r" fanout -conns "$conns" -rate "$rate" -size "$size" -duration "$duration" -channel news
  done
  echo "round  receivers-on  deliveries/s  loss      p99_ms   cpu_us/delivery"
  for r in $(seq "$rounds"); do
    for side in default channel; do
      read -r dps loss p99 cpu < <("$bin/fanout-bench" summary -raw "$out/$side-$r.json")
      printf '%-6s %-13s %12s  %-8s  %7s  %s\n' "$r" "$side" "$dps" "$loss" "$p99" "$cpu"
      echo "$side $cpu" >>"$out/fanout.$$"
    done
  done
  awk '
    function median(a, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $1 == "default" { d[++nd] = $2 } $1 == "channel" { c[++nc] = $2 }
    END { md = median(d, nd); mc = median(c, nc)
      printf "median cpu/delivery: default %.3f µs, channel %.3f µs, channel/default %.3f\n", md, mc, mc / md }' "$out/fanout.$$"
  rm -f "$out/fanout.$$"
fi

if [[ " $modes " == *" rooms "* ]]; then
  for rr in $rrates; do
    run "rooms-$rr" rooms -conns "$conns" -rate-per-client "$rr" -size "$size" -duration "$duration"
  done
  echo "rooms  msgs/s-offered  msgs/s  loss      p99_ms   cpu_us/message"
  for rr in $rrates; do
    read -r mps loss p99 cpu < <("$bin/fanout-bench" summary -raw "$out/rooms-$rr.json")
    printf '%-6s %15s %7s  %-8s  %7s  %s\n' "$rr/s" "$((rr * conns))" "$mps" "$loss" "$p99" "$cpu"
  done
fi
