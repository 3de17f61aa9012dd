#!/usr/bin/env bash
# A fan-out tier on this one machine, through JetStream: a nats-server
# with file storage, K fanout processes joined by it (a port each), and
# fanout-bench spread over child processes and source addresses, holding N
# clients, half on the default channel and half over 1,000 channels (a
# publisher each). It prints clients held, deliveries, loss, order,
# latency, CPU per delivery, the bus's state on every node, and a verdict.
# --drill kills nats-server mid-run and starts it again; --compare-single
# puts the tier's CPU per delivery next to one standalone node's, same
# clients, same run; --publish-bench measures publishing through JetStream.
# It cleans up everything it started, even on Ctrl-C.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/cluster-local.sh [options]

  --procs K          fanout processes (default 12; each must stay under the 20,000-file limit)
  --clients N        receiving clients over the whole tier (default 150000; 15000 with --compare-single)
  --channels C       half the clients spread over C channels ch-0 … ch-C-1, a publisher each;
                     the other half on the default channel (default 1000; 0: all on the default one)
  --publishers P     publishers on the default channel (default 2)
  --rate R           messages/s on the default channel, over its publishers (default 0.2;
                     4 with --compare-single)
  --channel-rate R   messages/s on each spread channel (default 0.1; 1 with --compare-single)
  --format F         receivers' format: json (default: each message's seq is checked to be above
                     the last on its connection, the tier's order) or raw
  --size B           message size in bytes (default 64)
  --duration D       publishing time (default 50s; 20s with --compare-single)
  --drain D          wait at most this long for deliveries after publishing (default 30s)
  --connect-rate C   new connections per second (default 8000)
  --source-ips R     client source addresses (default 127.0.0.2-127.0.0.40)
  --fanout-bin PATH  the server binary (default: cmd/fanout built from the work tree)
  --out DIR          results: bench text, JSON and HTML, logs, metrics (default ./cluster-results)
  -h, --help         this text

One of these modes, or none (the run alone):
  --drill            publishers POST every message to the nodes' /publish (202 only once JetStream
                     stored it; an Idempotency-Key each), and --drill-at seconds into publishing
                     nats-server is killed (kill -9) and started again --drill-down seconds later,
                     same port, same store. 0 lost means: every message the tier acknowledged (202)
                     reached every client on its channel, once, in order. A refused publish (503)
                     is no loss: its publisher sends it again, same key, until it is acknowledged.
  --drill-at S       seconds after the first publish (default 15)
  --drill-down S     seconds nats-server stays down (default 3)
  --compare-single   the same bench twice, one after the other: against one standalone fanout
                     process (no NATS; GOMAXPROCS and shards at their defaults), then against the
                     tier; prints each one's server CPU per delivery and the ratio. --clients must
                     fit one process (at most 17000).
  --publish-bench    publishing through JetStream alone: --publish-concurrency publishers POST in a
                     closed loop over the nodes' /publish for --publish-duration, one receiver a
                     node; prints acknowledged publishes/s, the POST's p50/p99 and JetStream's
                     own (fanout_bus_publish_seconds, all nodes).
  --publish-concurrency N   (default 8)
  --publish-duration D      (default 10s)

Ports: NATS 14222 (monitoring 18222), fanout 18100.. and admin 18300.. (one each per process).
The JetStream store is DIR/nats-store, made afresh. Exit status: 0 when the verdict is PASS.
TXT
}

procs=12 clients="" channels=1000 pubs=2 rate="" crate2="" format=json size=64 duration="" drain=30s
crate=8000 srcips=127.0.0.2-127.0.0.40 fbin="" out=./cluster-results
mode=run drill_at=15 drill_down=3 pconc=8 pdur=10s
setmode() {
  [ "$mode" = run ] || { echo "cluster-local.sh: one mode at a time (--drill, --compare-single, --publish-bench)" >&2; exit 2; }
  mode=$1
}
while [ $# -gt 0 ]; do
  case "$1" in
    --procs) procs=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --channels) channels=$2; shift 2 ;;
    --publishers) pubs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --channel-rate) crate2=$2; shift 2 ;;
    --format) format=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --drain) drain=$2; shift 2 ;;
    --connect-rate) crate=$2; shift 2 ;;
    --source-ips) srcips=$2; shift 2 ;;
    --fanout-bin) fbin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --drill) setmode drill; shift ;;
    --drill-at) drill_at=$2; shift 2 ;;
    --drill-down) drill_down=$2; shift 2 ;;
    --compare-single) setmode compare; shift ;;
    --publish-bench) setmode publish; shift ;;
    --publish-concurrency) pconc=$2; shift 2 ;;
    --publish-duration) pdur=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "cluster-local.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
bad() { echo "cluster-local.sh: $*" >&2; exit 2; }
for v in "$procs" "$channels" "$pubs" "$drill_at" "$drill_down" "$pconc"; do
  case "$v" in ''|*[!0-9]*) bad "--procs, --channels, --publishers, --drill-at, --drill-down and --publish-concurrency want whole numbers" ;; esac
done
[ "$procs" -ge 1 ] || bad "--procs wants 1 or more"
case "$format" in json|raw) ;; *) bad "--format wants json or raw" ;; esac
if [ -z "$clients" ]; then
  clients=150000
  [ "$mode" = compare ] && clients=15000
fi
case "$clients" in ''|*[!0-9]*) bad "--clients wants a whole number" ;; esac
if [ "$mode" = compare ] && [ "$clients" -gt 17000 ]; then
  bad "--compare-single: $clients clients do not fit one process under its 20,000-file limit (at most 17000)"
fi
# The defaults: 150,000 clients at 22,500 deliveries/s, half what this
# 2-core box delivers (at 56,000/s, twice these rates, messages queue for
# seconds); a single node and the tier at 37,500/s for --compare-single,
# enough deliveries that pings and closes do not weigh on their CPU.
if [ "$mode" = compare ]; then
  : "${rate:=4}" "${crate2:=1}" "${duration:=20s}"
else
  : "${rate:=0.2}" "${crate2:=0.1}" "${duration:=50s}"
fi
if [ -n "$fbin" ] && [ ! -x "$fbin" ]; then bad "--fanout-bin $fbin is not an executable"; fi

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || die "needs curl"

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
[ -n "$fbin" ] || fbin=$bin/fanout
# Publishers POST with this key (drill, publish bench): the nodes and the
# bench read it from the environment, out of ps.
FANOUT_PUBLISH_KEYS=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export FANOUT_PUBLISH_KEYS
hz=$(getconf CLK_TCK)
dirty=$(git -C "$root" status --porcelain -- '*.go' go.mod go.sum | wc -l)
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r), $(go version | cut -d' ' -f3), open files $(ulimit -n); $(date -u +%FT%TZ); commit $(git -C "$root" rev-parse --short HEAD)$([ "$dirty" -gt 0 ] && echo " plus $dirty changed Go files"); server $fbin"
if [ "$mode" = publish ]; then # one receiver a node, publishers in a closed loop
  clients=$procs channels=0 pubs=$pconc rate=max duration=$pdur
fi
echo "# mode $mode: $clients clients over $procs fanout processes; $channels spread channels at $crate2 msg/s each, $pubs publishers at $rate msg/s on the default channel; $size B, $duration, format $format"

# cpu PID...: CPU seconds (user+system) the processes used so far.
cpu() {
  local p ticks=0
  for p in "$@"; do ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done
  awk -v t="$ticks" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'
}

store=$out/nats-store
rm -rf "$store" # a stream left by an earlier run would be replayed to every node
nats_starts=0
# start_nats: nats-server with JetStream on file storage, in $store.
start_nats() {
  nats_starts=$((nats_starts + 1))
  start 14222 "$out/nats-$nats_starts.log" "$nats" -a 127.0.0.1 -p 14222 -m 18222 -js -sd "$store"
  nats_pid=$started_pid
}

# start_tier: K fanout processes joined through JetStream. Sets fpids,
# urls, puburls and admins.
start_tier() {
  fpids="" urls="" puburls="" admins=()
  local i port admin
  for i in $(seq 0 $((procs - 1))); do
    port=$((18100 + i)) admin=$((18300 + i))
    # One P each: a dozen processes on two cores schedule better that way.
    start $port "$out/fanout-$i.log" env GOMAXPROCS=1 "$fbin" -addr 127.0.0.1:$port -admin-addr 127.0.0.1:$admin \
      -nats nats://127.0.0.1:14222 -nats-storage file -shards 4 -log-level warn
    fpids="${fpids:+$fpids,}$started_pid"
    urls="${urls:+$urls,}ws://127.0.0.1:$port/ws"
    puburls="${puburls:+$puburls,}http://127.0.0.1:$admin/publish"
    admins+=("127.0.0.1:$admin")
  done
  wait_ready
}

# start_single: one standalone fanout process (no NATS), its defaults.
start_single() {
  start 18100 "$out/single.log" "$fbin" -addr 127.0.0.1:18100 -admin-addr 127.0.0.1:18300 -log-level warn
  fpids=$started_pid urls=ws://127.0.0.1:18100/ws puburls=http://127.0.0.1:18300/publish admins=(127.0.0.1:18300)
  wait_ready
}

# wait_ready: every node's /readyz answers 200 (joined the tier), 20 s at most.
wait_ready() {
  local a
  for a in "${admins[@]}"; do
    for _ in $(seq 200); do
      curl -sf -o /dev/null "http://$a/readyz" && continue 2
      sleep 0.1
    done
    die "node $a never ready (see $out/fanout-*.log)"
  done
}

stop_nodes() {
  local p
  for p in ${fpids//,/ }; do stop "$p"; done
}

# metric NAME: NAME summed over every node's /metrics (labels ignored).
metric() {
  local a
  for a in "${admins[@]}"; do curl -s "http://$a/metrics"; done |
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}

# bus_state NAME: the bus's counters over every node, into NAME.bus.
bus_state() {
  local f=$out/$1.bus m
  : >"$f"
  for m in fanout_bus_published_total fanout_bus_publish_failures_total fanout_bus_publish_repeats_total \
    fanout_bus_received_total fanout_bus_duplicates_total fanout_bus_gaps_total fanout_bus_epochs_total \
    fanout_bus_disconnects_total fanout_bus_reconnects_total fanout_bus_consumer_restarts_total; do
    echo "$m $(metric $m)" >>"$f"
  done
  local a
  for a in "${admins[@]}"; do curl -s "http://$a/metrics"; done |
    sed -n 's/^fanout_bus_info{.*epoch="\([^"]*\)".*/\1/p' | sort -u | tr '\n' ' ' | sed 's/^/epochs seen: /; s/ $/\n/' >>"$f"
}

# quantiles NAME: p50 and p99 (ms) of histogram NAME summed over every
# node, interpolated within buckets (as Prometheus' histogram_quantile).
quantiles() {
  local a
  for a in "${admins[@]}"; do curl -s "http://$a/metrics"; done | awk -v m="$1_bucket" '
    index($1, m "{") == 1 { le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le); c[le] += $2; if (!(le in seen)) { seen[le] = 1; les[++n] = le } }
    END {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (les[j] != "+Inf" && (les[i] == "+Inf" || les[j] + 0 < les[i] + 0)) { t = les[i]; les[i] = les[j]; les[j] = t }
      total = c["+Inf"]
      if (total == 0) { print "none none"; exit }
      split("0.5 0.99", qs, " ")
      for (k = 1; k <= 2; k++) {
        want = qs[k] * total; prev = 0; lo = 0
        for (i = 1; i <= n; i++) {
          if (c[les[i]] >= want) {
            if (les[i] == "+Inf") { v = lo } else { v = lo + (les[i] - lo) * (want - prev) / (c[les[i]] - prev) }
            break
          }
          prev = c[les[i]]; lo = les[i] + 0
        }
        printf "%s%.2f", (k > 1 ? " " : ""), v * 1000
      }
      printf "\n"
    }'
}

# secs D: a duration of fanout-bench's (90s, 2m, 1m30s, 500ms) in seconds.
secs() {
  awk -v d="$1" 'BEGIN { s = 0; while (match(d, /^[0-9.]+(ms|s|m|h)/)) { u = substr(d, RSTART, RLENGTH); v = u + 0; sub(/^[0-9.]+/, "", u)
    s += v * (u == "ms" ? 0.001 : u == "s" ? 1 : u == "m" ? 60 : 3600); d = substr(d, RLENGTH + 1) } printf "%g", s }'
}

# field NAME REGEX: the first group of REGEX (sed -E) on NAME.txt, or "?".
field() { local v; v=$(sed -nE "s/$2/\\1/p" "$out/$1.txt" | head -1); echo "${v:-?}"; }

# bench NAME ARGS...: fanout-bench fanout over the tier's nodes (fpids,
# urls), in the background; bench_pid.
bench() {
  local name=$1; shift
  local args=(fanout -url "$urls" -conns "$clients" -conns-per-proc 15000 -source-ips "$srcips" -connect-rate "$crate"
    -publishers "$pubs" -rate "$rate" -size "$size" -duration "$duration" -drain "$drain" -format "$format"
    -server-pid "$fpids" -quiet -json "$out/$name.json" -report "$out/$name.html" -phase-log "$out/$name.phases")
  if [ "$channels" -gt 0 ]; then args+=(-channels "$channels" -channel-rate "$crate2"); fi
  rm -f "$out/$name.phases"
  "$bin/fanout-bench" "${args[@]}" "$@" >"$out/$name.txt" &
  bench_pid=$!
  pids+=("$bench_pid")
}

# finish NAME: waits for the bench; bench_status.
finish() {
  bench_status=0
  wait "$bench_pid" || bench_status=$?
  forget "$bench_pid"
  cat "$out/$1.txt"
}

# wait_publishing NAME: seconds waited for NAME's first publish (10 min at most).
wait_publishing() {
  for _ in $(seq 6000); do
    grep -q '^publishing ' "$out/$1.phases" 2>/dev/null && return 0
    kill -0 "$bench_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# verdict NAME: the run's figures in one block, and whether it passed:
# every counted delivery there, once, in order, nothing misrouted or
# broken, no message the stream lost.
verdict() {
  local n=$1 ok=1 why=()
  held=$(field "$n" '^connections +([0-9]+) connected.*')
  failed=$(field "$n" '^connections +[0-9]+ connected, ([0-9]+) failed.*')
  sent=$(field "$n" '^messages sent +([0-9]+).*')
  got=$(field "$n" '^deliveries +([0-9]+) of.*')
  want=$(field "$n" '^deliveries +[0-9]+ of ([0-9]+) expected.*')
  lost=$(field "$n" '^lost +([0-9]+).*')
  extra=$(field "$n" '^extra deliveries +([0-9]+).*'); [ "$extra" = "?" ] && extra=0
  dups=$(field "$n" '^duplicates +([0-9]+).*')
  reord=$(field "$n" '^reordered +([0-9]+).*')
  ooo=$(field "$n" '^out of order +([0-9]+).*'); [ "$format" = raw ] && ooo=0
  misr=$(field "$n" '^misrouted +([0-9]+).*'); [ "$channels" -eq 0 ] && misr=0
  p50=$(field "$n" '^delivery latency +p50 ([0-9.]+ ms).*')
  p99=$(field "$n" '^delivery latency +.* p99 ([0-9.]+ ms)  p99\.9.*')
  cpud=$(field "$n" '^server CPU per delivery +([0-9.]+) µs.*')
  cpus=$(field "$n" '^server CPU per delivery +[0-9.]+ µs \(([0-9.]+) s user.*')
  gaps=$(awk '$1 == "fanout_bus_gaps_total" { print $2 }' "$out/$n.bus" 2>/dev/null || echo 0)
  epochs=$(awk '$1 == "fanout_bus_epochs_total" { print $2 }' "$out/$n.bus" 2>/dev/null || echo 0)
  [ "$bench_status" -eq 0 ] || why+=("bench exit $bench_status")
  [ "$failed" = 0 ] || why+=("$failed clients never connected")
  [ "$lost" = 0 ] || why+=("$lost lost")
  [ "$dups" = 0 ] || why+=("$dups duplicates")
  [ "$reord" = 0 ] || why+=("$reord reordered")
  [ "$ooo" = 0 ] || why+=("$ooo out of order")
  [ "$misr" = 0 ] || why+=("$misr misrouted")
  [ "${gaps:-0}" = 0 ] || why+=("$gaps messages gone from the stream before a node read them")
  [ "${epochs:-0}" = 0 ] || why+=("the stream was recreated ${epochs} times (a new epoch)")
  grep -qE '^(corrupt messages|foreign messages|receiver errors|publisher stopped early)' "$out/$n.txt" &&
    why+=("$(grep -E '^(corrupt messages|foreign messages|receiver errors|publisher stopped early)' "$out/$n.txt" | head -1 | tr -s ' ')")
  [ ${#why[@]} -eq 0 ] || ok=0
  echo "clients held: $held ($failed failed); messages sent: $sent; deliveries $got of $want; lost $lost; extra $extra; duplicates $dups; reordered $reord; out of order $ooo; misrouted $misr"
  echo "latency: p50 $p50, p99 $p99; fanout CPU per delivery $cpud µs ($cpus s, all fanout processes, first publish to the clients' closes)"
  if [ "$ok" = 1 ]; then passed=1; else passed=0; echo "FAILED: ${why[*]}"; fi
}

status=0
case "$mode" in
run | drill)
  start_nats
  start_tier
  echo "# nats (JetStream, file storage in $store) + $procs fanout processes up; bench: $clients clients" >&2
  extra_args=()
  if [ "$mode" = drill ]; then extra_args=(-publish-url "$puburls" -idempotency-keys); fi
  nats0=$(cpu "$nats_pid")
  bench "$mode" "${extra_args[@]}"
  if [ "$mode" = drill ]; then
    wait_publishing "$mode" || die "the bench never started publishing (see $out/$mode.txt)"
    sleep "$drill_at"
    t_kill=$(date +%s.%N)
    kill -9 "$nats_pid"
    wait "$nats_pid" 2>/dev/null || true
    forget "$nats_pid"
    echo "# drill: nats-server (pid $nats_pid) killed with SIGKILL ${drill_at}s into publishing" >&2
    sleep "$drill_down"
    start_nats
    t_up=$(date +%s.%N)
    echo "# drill: nats-server started again (pid $nats_pid), same port and store, $(awk -v a="$t_kill" -v b="$t_up" 'BEGIN { printf "%.1f", b - a }') s after the kill" >&2
  fi
  finish "$mode"
  bus_state "$mode"
  echo
  echo "## bus, summed over the $procs nodes"
  cat "$out/$mode.bus"
  echo
  echo "## verdict: $procs fanout processes + NATS JetStream (file storage)"
  verdict "$mode"
  if [ "$mode" = run ]; then
    nats_s=$(awk -v a="$nats0" -v b="$(cpu "$nats_pid")" 'BEGIN { printf "%.2f", b - a }')
    echo "nats-server CPU over the whole bench run: $nats_s s ($(awk -v s="$nats_s" -v d="$got" 'BEGIN { if (d > 0) printf "%.2f", s / d * 1e6; else printf "?" }') µs per delivery)"
  else
    requests=$(field "$mode" '^publish API +POST .*: ([0-9]+) requests?, [0-9]+ refused.*')
    refused=$(field "$mode" '^publish API +POST .*: [0-9]+ requests?, ([0-9]+) refused.*')
    echo "drill: nats-server killed (SIGKILL) ${drill_at}s into publishing, down ${drill_down}s, restarted on the same port and store"
    echo "drill: acknowledged (202) $sent; refused (503, sent again with the same Idempotency-Key) $refused of $requests POSTs;" \
      "every acknowledged message delivered to every client on its channel: $([ "$lost" = 0 ] && echo yes || echo "no, $lost lost")" \
      "$([ "$extra" != 0 ] && echo "($extra deliveries of refused messages the stream stored anyway)")"
  fi
  if [ "$passed" = 1 ]; then echo "PASS"; else status=1; fi
  ;;
compare)
  start_single
  echo "# one standalone fanout process up; bench: $clients clients" >&2
  bench single
  finish single
  bench_single=$bench_status
  stop_nodes
  start_nats
  start_tier
  echo "# nats + $procs fanout processes up; bench: $clients clients" >&2
  nats0=$(cpu "$nats_pid")
  bench tier
  finish tier
  nats_s=$(awk -v a="$nats0" -v b="$(cpu "$nats_pid")" 'BEGIN { printf "%.2f", b - a }')
  bus_state tier
  echo
  echo "## single node"
  bench_status=$bench_single
  verdict single
  ok_single=$passed cpu_single=$cpud
  echo
  echo "## tier: $procs fanout processes + NATS JetStream"
  bench_status=0
  verdict tier
  echo "nats-server CPU over the whole bench run: $nats_s s ($(awk -v s="$nats_s" -v d="$got" 'BEGIN { if (d > 0) printf "%.2f", s / d * 1e6; else printf "?" }') µs per delivery)"
  echo
  awk -v s="$cpu_single" -v t="$cpud" -v n="$nats_s" -v d="$got" 'BEGIN {
    if (s + 0 <= 0 || t + 0 <= 0) { print "CPU per delivery: not measured"; exit }
    printf "CPU per delivery: single node %.2f µs, tier %.2f µs (fanout processes): tier/single %.2f; with nats-server %.2f µs: %.2f\n", s, t, t / s, t + n / d * 1e6, (t + n / d * 1e6) / s }'
  if [ "$ok_single" = 1 ] && [ "$passed" = 1 ]; then echo "PASS"; else status=1; fi
  ;;
publish)
  start_nats
  start_tier
  echo "# nats + $procs fanout processes up; $pconc publishers POST in a closed loop for $pdur" >&2
  nats0=$(cpu "$nats_pid")
  bench publish -publish-url "$puburls" -window 16
  finish publish
  nats_s=$(awk -v a="$nats0" -v b="$(cpu "$nats_pid")" 'BEGIN { printf "%.2f", b - a }')
  bus_state publish
  echo
  echo "## verdict: publishing through $procs fanout processes + NATS JetStream (file storage)"
  verdict publish
  read -r js50 js99 < <(quantiles fanout_bus_publish_seconds)
  echo
  echo "publishing through JetStream: $sent acknowledged in $pdur ($(awk -v n="$sent" -v d="$(secs "$pdur")" 'BEGIN { printf "%.0f", n / d }')/s)," \
    "$pconc publishers, one POST in flight each, spread over the $procs nodes"
  echo "POST /publish latency (sent to answer read): $(field publish '^publish API latency +(p50 [0-9.]+ ms  p99 [0-9.]+ ms).*')"
  echo "JetStream acknowledgement (fanout_bus_publish_seconds, all nodes): p50 $js50 ms  p99 $js99 ms"
  awk -v f="$cpus" -v n="$nats_s" -v m="$sent" -v k="$procs" 'BEGIN { if (m > 0) printf "CPU per acknowledged publish: %.1f µs in the %d fanout processes (each consumes every message), %.1f µs in nats-server\n", f / m * 1e6, k, n / m * 1e6 }'
  [ "$passed" = 1 ] || status=1
  ;;
esac
exit "$status"
