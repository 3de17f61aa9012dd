#!/usr/bin/env bash
# What the Pusher front door costs next to fanout's own protocol, in one run
# against ONE fanout process (this box is shared and noisy: read the
# ratios of one run, never figures across runs):
#   idle     N native connections (ws?channel=) and N Pusher connections
#            (/app/KEY, subscribed), steps alternating N P P N …, every
#            step's connections held while the next connects (memory freed
#            by one step would be reused by the next), the server's garbage
#            collected before each sample (pprof's heap?gc=1, so that the
#            GC's timing does not decide what a step finds to reuse): server
#            RSS in use per connection (its RSS less the free heap the
#            runtime keeps resident, HeapIdle - HeapReleased), each
#            protocol's median, pusher / native (the verdict), with the raw
#            RSS growth and the live heap's growth beside it;
#   fanout   a channel of C subscribers, the same rate and text payload,
#            published with POST /publish (native receivers) or triggered
#            through the Pusher HTTP API (Pusher receivers), rounds
#            alternating: server CPU per delivery, fan-out only (first
#            publish to the drain's end, before the clients leave).
# Prints every step and round, the medians, the ratios and a PASS/FAIL
# verdict against the limits (the issue's 1.15× for fan-out CPU).
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/pusher-bench.sh [options]

  --idle-conns N     connections per idle step (default 4000); a warm-up of half
                     as many (a quarter of each kind), held and not counted, comes first
  --idle-rounds N    idle rounds, each a native and a Pusher step, the order
                     alternating (default 2: native, pusher, pusher, native)
  --settle D         wait after a step's connections are up before reading
                     the server's RSS (default 3s)
  --conns N          subscribers in each fan-out run (default 10000)
  --rate R           messages/s in each fan-out run (default 5: 50,000 deliveries/s
                     to 10,000; at 10, the two shared cores here fell seconds behind)
  --size B           message size in bytes, a text payload (default 64, at least 38)
  --duration D       publishing time per fan-out run (default 10s)
  --rounds N         fan-out rounds, each a native and a Pusher run, the order
                     alternating (default 3)
  --max-cpu-ratio X  pass when fan-out CPU per delivery, pusher / native, is at
                     most X (default 1.15)
  --max-rss-ratio X  pass when idle RSS per connection, pusher / native, is at
                     most X (default 1.15)
  --modes "…"        which of idle, fanout to run (default "idle fanout")
  --source-ips R     client source addresses (default 127.0.0.2-127.0.0.40)
  --port N           WebSocket port; the admin API (POST /publish and the
                     Pusher HTTP API) listens on N+1, pprof on N+2 (default 18780)
  --out DIR          where JSON results and logs go (default ./pusher-bench-results)
  --fanout-bin PATH  the server binary (default: cmd/fanout built from the work tree)
  --fanout-flags "…" extra flags for the server
  -h, --help         this text

One server, started with -pusher-app-id, -pusher-key, -pprof-addr and a
fresh secret and publish key in FANOUT_PUSHER_SECRET and FANOUT_PUBLISH_KEYS
(out of ps; fanout-bench reads them too). It must hold idle-rounds × 2 × idle-conns
connections at once, and a warm-up of idle-conns / 2 more: keep that
under the 20,000 open files a process may have here. Every fanout-bench run is bounded (-hold, -duration, -drain);
the idle steps' runs are stopped (SIGTERM) once measured.
TXT
}

iconns=4000 irounds=2 settle=3s conns=10000 rate=5 size=64 duration=10s rounds=3
maxcpu=1.15 maxrss=1.15 modes="idle fanout" srcips=127.0.0.2-127.0.0.40 port=18780
out=./pusher-bench-results fbin="" fflags=""
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --idle-conns) iconns=$2; shift 2 ;;
    --idle-rounds) irounds=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --max-cpu-ratio) maxcpu=$2; shift 2 ;;
    --max-rss-ratio) maxrss=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --source-ips) srcips=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fanout-bin) fbin=$2; shift 2 ;;
    --fanout-flags) fflags=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "pusher-bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
bad() { echo "pusher-bench.sh: $*" >&2; exit 2; }
for v in "idle-conns:$iconns" "idle-rounds:$irounds" "conns:$conns" "size:$size" "rounds:$rounds" "port:$port"; do
  case "${v#*:}" in ''|*[!0-9]*|0) bad "--${v%%:*} wants a positive integer" ;; esac
done
for v in "max-cpu-ratio:$maxcpu" "max-rss-ratio:$maxrss"; do
  [[ "${v#*:}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || bad "--${v%%:*} wants a number, e.g. 1.15"
done
[ "$size" -ge 38 ] || bad "--size: at least 38 bytes (the bench header as text)"
for m in $modes; do
  case "$m" in idle|fanout) ;; *) bad "unknown mode $m (idle, fanout)" ;; esac
done
held_max=$((irounds * 2 * iconns + 2 * (iconns / 4)))
[ "$held_max" -lt 19000 ] || bad "--idle-rounds × 2 × --idle-conns and the warm-up = $held_max connections held at once: over the 20,000 open files a process may have here"
if [ -n "$fbin" ] && [ ! -x "$fbin" ]; then bad "$fbin is not an executable"; fi

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
build
[ -n "$fbin" ] || fbin=$bin/fanout

admin=127.0.0.1:$((port + 1))
pprof=127.0.0.1:$((port + 2))
appid=4242
key=$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')
FANOUT_PUSHER_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n') # out of ps, for the server and the bench
FANOUT_PUBLISH_KEYS=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export FANOUT_PUSHER_SECRET FANOUT_PUBLISH_KEYS
wsurl=ws://127.0.0.1:$port/ws
pconnect=(-protocol pusher -pusher-key "$key") # connect publishes nothing: no app id
pusher=("${pconnect[@]}" -pusher-app-id "$appid")

echo "# machine: $(nproc) cores, $(uname -r), $(go version | cut -d' ' -f3); $(date -u +%FT%TZ); $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- || echo ' (work tree changed)')"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; $(nproc) cores, shared)"
echo "# command: scripts/pusher-bench.sh ${args[*]}"
server=("$fbin" -addr "127.0.0.1:$port" -admin-addr "$admin" -pprof-addr "$pprof" -log-level warn -pusher-app-id "$appid" -pusher-key "$key")
# shellcheck disable=SC2206
server+=($fflags)
echo "# server: ${server[*]} (FANOUT_PUSHER_SECRET, FANOUT_PUBLISH_KEYS in its environment); $("$fbin" -version 2>&1 | head -1)"
start "$port" "$out/server.log" "${server[@]}"
spid=$started_pid

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$spid/status"; }
# live_heap: has the server collect its garbage (pprof's heap?gc=1), twice
# (what sync.Pools hold survives one collection), and prints its live heap
# in bytes, as the runtime read it right after.
live_heap() {
  curl -sf -o /dev/null "http://$pprof/debug/pprof/heap?gc=1" || true
  curl -sf "http://$pprof/debug/pprof/heap?gc=1&debug=1" | awk '
    /^# HeapAlloc = / { alloc = $4 } /^# HeapIdle = / { idle = $4 } /^# HeapReleased = / { rel = $4 }
    END { if (alloc == "") exit 1; print alloc, idle - rel }' ||
    die "no heap statistics from http://$pprof/debug/pprof/heap (does the server take -pprof-addr?)"
}
fds() { find "/proc/$spid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
alive() { kill -0 "$spid" 2>/dev/null || die "the server exited (see $out/server.log)"; }
zero() { awk -v x="$1" 'BEGIN { exit !(x + 0 == 0) }'; }
# median of the numbers on stdin
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) { print "nan"; exit } print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# Preflight: two Pusher subscribers, five events through the HTTP API, every
# one delivered, or nothing else is worth measuring.
echo "# preflight: a Pusher subscribe and five triggered events" >&2
if ! "$bin/fanout-bench" fanout -url "$wsurl" "${pusher[@]}" -publish-url "http://$admin" -channel preflight \
  -conns 2 -messages 5 -rate 100 -duration 5s -drain 2s -quiet -json "$out/preflight.json" >"$out/preflight.txt" 2>&1 ||
  ! read -r _ loss _ _ < <("$bin/fanout-bench" summary -raw "$out/preflight.json") || ! zero "$loss"; then
  cat "$out/preflight.txt" >&2
  die "preflight failed: the server does not serve Pusher clients and its HTTP API as fanout-bench speaks them (above; server log: $out/server.log)"
fi

verdict=PASS reasons=()

if [[ " $modes " == *" idle "* ]]; then
  echo
  echo "## idle: RSS per connection, $iconns connections a step, every step held until the last is measured"
  held=()
  # hold SIDE N NAME: N connections of SIDE (native or pusher) on channel
  # idle, held by a fanout-bench connect in the background (in held) once
  # this returns: every one of them up.
  hold() {
    local side=$1 n=$2 name=$3 flags=(-channel idle) log=$out/$3.phases
    [ "$side" = native ] || flags+=("${pconnect[@]}")
    : >"$log"
    "$bin/fanout-bench" connect -url "$wsurl" "${flags[@]}" -conns "$n" -hold 600s -source-ips "$srcips" \
      -quiet -phase-log "$log" -json "$out/$name.json" >"$out/$name.txt" 2>&1 &
    local bpid=$!
    pids+=("$bpid") held+=("$bpid")
    for _ in $(seq 1200); do # 120 s at most to connect
      grep -q '^holding ' "$log" && return 0
      kill -0 "$bpid" 2>/dev/null || { cat "$out/$name.txt" >&2; die "$name ended before holding its connections"; }
      sleep 0.1
    done
    die "$name: not connected within 120 s"
  }
  # A warm-up, held and not counted: the server's first connections of
  # each kind grow its heap, touch its code and make its channel; the
  # first measured step would carry that.
  hold native $((iconns / 4)) idle-warm-native
  hold pusher $((iconns / 4)) idle-warm-pusher
  sleep "$settle"
  echo "warm-up: $((iconns / 4)) native and $((iconns / 4)) Pusher connections, held, not counted"
  printf '%-5s %-7s %7s %12s %15s %15s %15s\n' step side conns "RSS growth" "RSS per conn" "in use per conn" "heap per conn"
  step=0
  : >"$out/idle.tsv"
  # Every sample follows a collection: each step then starts with the
  # garbage of the one before collected, whenever the GC would have run.
  read -r heap0 free0 < <(live_heap)
  sleep 1
  rss0=$(rss_kb) fds0=$(fds)
  for r in $(seq "$irounds"); do
    order="native pusher"
    [ $((r % 2)) -eq 1 ] || order="pusher native"
    for side in $order; do
      step=$((step + 1))
      alive
      hold "$side" "$iconns" "idle-$step-$side"
      sleep "$settle"
      read -r heap1 free1 < <(live_heap)
      sleep 1
      rss1=$(rss_kb) fds1=$(fds)
      [ $((fds1 - fds0)) -ge "$iconns" ] || die "idle step $step ($side): the server holds $((fds1 - fds0)) more descriptors, not $iconns (see $out/idle-$step-$side.txt)"
      per=$(awk -v a="$rss1" -v b="$rss0" -v n="$iconns" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
      # RSS less the free heap the runtime keeps resident: how much RSS
      # grows depends on whether a step found freed pages to reuse; this
      # does not.
      uper=$(awk -v a="$rss1" -v b="$rss0" -v fa="$free1" -v fb="$free0" -v n="$iconns" 'BEGIN { printf "%.0f", ((a - b) * 1024 - (fa - fb)) / n }')
      hper=$(awk -v a="$heap1" -v b="$heap0" -v n="$iconns" 'BEGIN { printf "%.0f", (a - b) / n }')
      printf '%-5s %-7s %7s %9.1f MiB %13s B %13s B %13s B\n' "$step" "$side" "$iconns" "$(awk -v d=$((rss1 - rss0)) 'BEGIN { print d / 1024 }')" "$per" "$uper" "$hper"
      echo "$side $uper $hper $per" >>"$out/idle.tsv"
      heap0=$heap1 free0=$free1 rss0=$rss1 fds0=$fds1
    done
  done
  for p in "${held[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${held[@]}"; do wait "$p" 2>/dev/null || true; forget "$p"; done
  nat=$(awk '$1 == "native" { print $2 }' "$out/idle.tsv" | median)
  pus=$(awk '$1 == "pusher" { print $2 }' "$out/idle.tsv" | median)
  rss_ratio=$(awk -v p="$pus" -v n="$nat" 'BEGIN { if (n <= 0) print "nan"; else printf "%.3f", p / n }')
  hnat=$(awk '$1 == "native" { print $3 }' "$out/idle.tsv" | median)
  hpus=$(awk '$1 == "pusher" { print $3 }' "$out/idle.tsv" | median)
  heap_ratio=$(awk -v p="$hpus" -v n="$hnat" 'BEGIN { if (n <= 0) print "nan"; else printf "%.3f", p / n }')
  rnat=$(awk '$1 == "native" { print $4 }' "$out/idle.tsv" | median)
  rpus=$(awk '$1 == "pusher" { print $4 }' "$out/idle.tsv" | median)
  echo "median idle RSS growth per connection: native $rnat B, pusher $rpus B (which step finds freed pages to reuse moves this by hundreds of bytes)"
  echo "median idle RSS in use per connection (RSS less the free heap kept resident): native $nat B, pusher $pus B, pusher/native $rss_ratio (limit $maxrss)"
  spread=$(awk '{ if (!($1 in lo) || $2 < lo[$1]) lo[$1] = $2; if (!($1 in hi) || $2 > hi[$1]) hi[$1] = $2 }
    END { for (k in lo) if (hi[k] - lo[k] > s) s = hi[k] - lo[k]; print s + 0 }' "$out/idle.tsv")
  echo "  (steps of one protocol differ by up to $spread B of RSS in use per connection: differences below that are noise)"
  echo "median live heap per connection: native $hnat B, pusher $hpus B, pusher/native $heap_ratio (not judged: RSS is the measure)"
  if ! awk -v x="$rss_ratio" -v m="$maxrss" 'BEGIN { exit !(x == x + 0 && x <= m) }'; then
    verdict=FAIL reasons+=("idle RSS in use per connection pusher/native $rss_ratio > $maxrss")
  fi
fi

if [[ " $modes " == *" fanout "* ]]; then
  echo
  echo "## fanout: $conns subscribers on one channel, $rate msg/s of $size B text for $duration; native POST /publish vs Pusher HTTP API"
  printf '%-6s %-7s %13s %9s %8s %16s %18s\n' round side deliveries/s loss p99_ms "cpu_us (closes)" "cpu_us (fan-out)"
  : >"$out/fanout.tsv"
  for r in $(seq "$rounds"); do
    order="native pusher"
    [ $((r % 2)) -eq 1 ] || order="pusher native"
    for side in $order; do
      alive
      if [ "$side" = native ]; then
        flags=(-publish-url "http://$admin/publish")
      else
        flags=("${pusher[@]}" -publish-url "http://$admin")
      fi
      echo "# fanout round $r: $side" >&2
      "$bin/fanout-bench" fanout -url "$wsurl" "${flags[@]}" -channel fan -conns "$conns" -publishers 1 \
        -rate "$rate" -size "$size" -payload text -duration "$duration" -source-ips "$srcips" \
        -server-pid "$spid" -metrics-url "http://$admin/metrics" -quiet -json "$out/fanout-$r-$side.json" \
        >"$out/fanout-$r-$side.txt" 2>&1 || { cat "$out/fanout-$r-$side.txt" >&2; die "fanout round $r ($side) failed"; }
      read -r dps loss p99 cpu < <("$bin/fanout-bench" summary -raw "$out/fanout-$r-$side.json")
      fan=$(sed -n 's/^server CPU per delivery, fan-out only  *\([0-9.]*\) µs.*/\1/p' "$out/fanout-$r-$side.txt")
      [ -n "$fan" ] || die "fanout round $r ($side): no fan-out CPU figure in $out/fanout-$r-$side.txt"
      printf '%-6s %-7s %13s %9s %8s %16s %18s\n' "$r" "$side" "$dps" "$loss" "$p99" "$cpu" "$fan"
      echo "$side $fan $loss" >>"$out/fanout.tsv"
      if ! zero "$loss"; then
        verdict=FAIL reasons+=("fanout round $r ($side) lost messages (loss ratio $loss): its CPU per delivery is of fewer deliveries")
      fi
    done
  done
  nat=$(awk '$1 == "native" { print $2 }' "$out/fanout.tsv" | median)
  pus=$(awk '$1 == "pusher" { print $2 }' "$out/fanout.tsv" | median)
  cpu_ratio=$(awk -v p="$pus" -v n="$nat" 'BEGIN { if (n <= 0) print "nan"; else printf "%.3f", p / n }')
  echo "median fan-out CPU per delivery: native $nat µs, pusher $pus µs, pusher/native $cpu_ratio (limit $maxcpu)"
  if ! awk -v x="$cpu_ratio" -v m="$maxcpu" 'BEGIN { exit !(x == x + 0 && x <= m) }'; then
    verdict=FAIL reasons+=("fan-out CPU per delivery pusher/native $cpu_ratio > $maxcpu")
  fi
fi

stop "$spid"
echo
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$verdict" = PASS ]; then
  echo "verdict: PASS${rss_ratio:+ (idle RSS in use pusher/native $rss_ratio ≤ $maxrss)}${cpu_ratio:+ (fan-out CPU pusher/native $cpu_ratio ≤ $maxcpu)}"
else
  echo "verdict: FAIL: $(IFS=';'; echo "${reasons[*]}")"
  exit 1
fi
