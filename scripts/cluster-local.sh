#!/usr/bin/env bash
# A fan-out tier on this one machine: a NATS server, K fanout processes
# joined by it (a port each), and fanout-bench spread over child processes
# and source addresses, holding N clients and broadcasting to all of them.
# Prints clients held, deliveries, loss, latency and the tier's RSS per
# client. Cleans up everything it started, even on Ctrl-C.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/cluster-local.sh [options]

  --procs K          fanout processes (default 12; each must stay under the 20,000-file limit)
  --clients N        receiving clients over the whole tier (default 150000)
  --publishers P     publishing clients (default 2)
  --rate R           messages/s over all publishers (default 0.5: 75,000 deliveries/s)
  --size B           message size in bytes (default 64)
  --duration D       publishing time (default 20s)
  --connect-rate C   new connections per second (default 8000)
  --source-ips R     client source addresses (default 127.0.0.2-127.0.0.40)
  --out DIR          JSON and HTML results (default ./cluster-results)
  -h, --help         this text

Ports: NATS 14222, fanout 18100.. and admin 18300.. (one each per process).
TXT
}

procs=12 clients=150000 pubs=2 rate=0.5 size=64 duration=20s crate=8000
srcips=127.0.0.2-127.0.0.40 out=./cluster-results
while [ $# -gt 0 ]; do
  case "$1" in
    --procs) procs=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --publishers) pubs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connect-rate) crate=$2; shift 2 ;;
    --source-ips) srcips=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "cluster-local.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

nats=$(command -v nats-server || true)
if [ -z "$nats" ]; then
  gobin=$(cd "$root" && go env GOPATH)/bin
  if [ ! -x "$gobin/nats-server" ]; then
    echo "# installing nats-server with go install" >&2
    (cd "$root" && go install github.com/nats-io/nats-server/v2@v2.15.2)
  fi
  nats=$gobin/nats-server
fi

build
start 14222 "$out/nats.log" "$nats" -a 127.0.0.1 -p 14222

urls="" fpids=""
for i in $(seq 0 $((procs - 1))); do
  port=$((18100 + i)) admin=$((18300 + i))
  # One P each: a dozen processes on two cores schedule better that way.
  start $port "$out/fanout-$i.log" env GOMAXPROCS=1 "$bin/fanout" -addr 127.0.0.1:$port -admin-addr 127.0.0.1:$admin \
    -nats nats://127.0.0.1:14222 -shards 4 -log-level warn
  fpids="${fpids:+$fpids,}$started_pid"
  urls="${urls:+$urls,}ws://127.0.0.1:$port/ws"
done
echo "# nats + $procs fanout processes up; bench: $clients clients" >&2

status=0
"$bin/fanout-bench" fanout -url "$urls" -conns "$clients" -conns-per-proc 15000 \
  -source-ips "$srcips" -connect-rate "$crate" -publishers "$pubs" -rate "$rate" -size "$size" \
  -duration "$duration" -drain 30s -server-pid "$fpids" \
  -json "$out/cluster.json" -report "$out/cluster.html" | tee "$out/cluster.txt" || status=$?

lost=$(sed -n 's/^lost  *\([0-9]*\).*/\1/p' "$out/cluster.txt")
held=$(sed -n 's/^connections  *\([0-9]*\) connected.*/\1/p' "$out/cluster.txt")
echo
echo "tier: $procs fanout processes + NATS; clients held: ${held:-?}; lost: ${lost:-?}"
if [ "$status" -ne 0 ] || [ "${lost:-1}" != "0" ]; then
  echo "cluster-local.sh: FAILED (bench exit $status, lost ${lost:-?})" >&2
  exit 1
fi
