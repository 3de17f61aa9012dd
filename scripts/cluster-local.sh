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

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)
mkdir -p "$out"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$bin"
}
trap cleanup EXIT
trap 'echo "cluster-local.sh: interrupted" >&2; exit 130' INT TERM

nats=$(command -v nats-server || true)
if [ -z "$nats" ]; then
  gobin=$(cd "$root" && go env GOPATH)/bin
  if [ ! -x "$gobin/nats-server" ]; then
    echo "# installing nats-server with go install" >&2
    (cd "$root" && go install github.com/nats-io/nats-server/v2@v2.15.2)
  fi
  nats=$gobin/nats-server
fi

echo "# building" >&2
(cd "$root" && go build -o "$bin/fanout" ./cmd/fanout && go build -o "$bin/fanout-bench" ./cmd/fanout-bench)

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "cluster-local.sh: nothing listening on port $1" >&2; exit 1
}

"$nats" -a 127.0.0.1 -p 14222 >"$out/nats.log" 2>&1 &
pids+=($!)
wait_port 14222

urls="" fpids=""
for i in $(seq 0 $((procs - 1))); do
  port=$((18100 + i)) admin=$((18300 + i))
  "$bin/fanout" -addr 127.0.0.1:$port -admin-addr 127.0.0.1:$admin -nats nats://127.0.0.1:14222 \
    -log-level warn 2>"$out/fanout-$i.log" &
  pids+=($!)
  fpids="${fpids:+$fpids,}$!"
  urls="${urls:+$urls,}ws://127.0.0.1:$port/ws"
done
for i in $(seq 0 $((procs - 1))); do wait_port $((18100 + i)); done
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
