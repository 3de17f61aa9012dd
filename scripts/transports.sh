#!/usr/bin/env bash
# What the transports cost, in one run on this machine (shared and noisy:
# read the ratios of one run, never figures across runs), a 1 KiB JSON
# payload to N receivers:
#   deflate   plain vs permessage-deflate receivers, rounds alternating on
#             one server: bytes on the wire and server CPU per delivery;
#   sse       WebSocket raw, WebSocket json and SSE receivers, a fresh
#             server each: idle RSS per connection and CPU per delivery;
#   idle      N idle connections with and without permessage-deflate, a
#             fresh server each: RSS per connection (no compressor kept).
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/transports.sh [options]

  --conns N          receivers (default 5000)
  --rate R           messages/s (default 10)
  --size B           payload bytes (default 1024; a JSON object)
  --duration D       publishing time per run (default 10s)
  --rounds N         rounds of each comparison (default 2)
  --modes "…"        which of deflate, sse, idle to run (default "deflate sse idle")
  --source-ips R     client source addresses (default 127.0.0.2-127.0.0.40)
  --port N           WebSocket port; the admin API listens on N+1 (default 18680)
  --out DIR          where JSON results and server logs go (default ./transports-results)
  -h, --help         this text
TXT
}

conns=5000 rate=10 size=1024 duration=10s rounds=2 modes="deflate sse idle"
srcips=127.0.0.2-127.0.0.40 port=18680 out=./transports-results
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --source-ips) srcips=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "transports.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$rounds" in ''|*[!0-9]*|0) echo "transports.sh: --rounds wants a positive integer" >&2; exit 2 ;; esac

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
build
admin=127.0.0.1:$((port + 1))
echo "# machine: $(nproc) cores, $(uname -r), $(go version | cut -d' ' -f3); $(date -u +%FT%TZ); $(git -C "$root" rev-parse --short HEAD)"
common=(-url "ws://127.0.0.1:$port/ws" -metrics-url "http://$admin/metrics" -source-ips "$srcips" -quiet
  -conns "$conns" -payload json -size "$size" -rate "$rate" -duration "$duration")

if [[ " $modes " == *" deflate "* ]]; then
  start "$port" "$out/deflate-server.log" "$bin/fanout" -addr "127.0.0.1:$port" -admin-addr "$admin" -log-level warn
  pid=$started_pid
  for r in $(seq "$rounds"); do
    for c in false true; do
      echo "# deflate round $r compression=$c" >&2
      "$bin/fanout-bench" fanout "${common[@]}" -server-pid "$pid" -compression="$c" -json "$out/deflate-$c-$r.json" >"$out/deflate-$c-$r.txt"
    done
  done
  stop "$pid"
  echo "round compression  summary (deliveries/s loss p99_ms cpu_us/delivery)  bytes out per delivery"
  for r in $(seq "$rounds"); do
    for c in false true; do
      printf '%-5s %-12s %s  %s\n' "$r" "$c" "$("$bin/fanout-bench" summary -raw "$out/deflate-$c-$r.json")" \
        "$(grep -iE 'bytes out' "$out/deflate-$c-$r.txt" | head -1 | sed 's/  */ /g')"
    done
  done
fi

if [[ " $modes " == *" sse "* ]]; then
  for r in $(seq "$rounds"); do
    for t in ws wsjson sse; do
      case $t in ws) tflags=(-transport ws) ;; wsjson) tflags=(-transport ws -format json) ;; sse) tflags=(-transport sse) ;; esac
      start "$port" "$out/$t-$r-server.log" "$bin/fanout" -addr "127.0.0.1:$port" -admin-addr "$admin" -log-level warn
      pid=$started_pid
      echo "# transport round $r $t" >&2
      "$bin/fanout-bench" fanout "${common[@]}" "${tflags[@]}" -server-pid "$pid" -json "$out/$t-$r.json" >"$out/$t-$r.txt"
      stop "$pid"
    done
  done
  echo "round transport  summary (deliveries/s loss p99_ms cpu_us/delivery)  idle RSS per connection"
  for r in $(seq "$rounds"); do
    for t in ws wsjson sse; do
      printf '%-5s %-10s %s  %s\n' "$r" "$t" "$("$bin/fanout-bench" summary -raw "$out/$t-$r.json")" \
        "$(grep -E 'server per connection' "$out/$t-$r.txt" | head -1 | sed 's/  */ /g')"
    done
  done
fi

if [[ " $modes " == *" idle "* ]]; then
  for r in $(seq "$rounds"); do
    for c in false true; do
      start "$port" "$out/idle-$c-$r-server.log" "$bin/fanout" -addr "127.0.0.1:$port" -admin-addr "$admin" -log-level warn
      pid=$started_pid
      echo "# idle round $r compression=$c" >&2
      "$bin/fanout-bench" connect -url "ws://127.0.0.1:$port/ws" -source-ips "$srcips" -quiet -conns "$conns" -hold 2s \
        -server-pid "$pid" -compression="$c" -json "$out/idle-$c-$r.json" >"$out/idle-$c-$r.txt"
      stop "$pid"
    done
  done
  echo "round compression  idle RSS per connection"
  for r in $(seq "$rounds"); do
    for c in false true; do
      printf '%-5s %-12s %s\n' "$r" "$c" "$(grep -E 'server per connection' "$out/idle-$c-$r.txt" | head -1 | sed 's/  */ /g')"
    done
  done
fi
