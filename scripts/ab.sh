#!/usr/bin/env bash
# Before/after in one run: builds fanout at two git revisions, then runs the
# same fanout-bench scenario against each in turn, alternating, so both see
# the same machine at the same time (this box is shared and noisy: compare
# ratios from one run, never figures across runs). Prints each round and the
# median ratios after/before of server CPU per delivery and p99 latency.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/ab.sh [options]

  --before REV       revision measured first in each round (default HEAD~1)
  --after REV        revision measured second (default: the work tree)
  --rounds N         rounds, each one run of both (default 3)
  --conns N          receivers (default 10000)
  --publishers N     publishers (default 2)
  --rate R           total messages/s, or max (default 10)
  --size B           message size in bytes (default 64)
  --duration D       publishing time per run (default 10s)
  --source-ips R     client source addresses (default 127.0.0.2-127.0.0.20)
  --out DIR          where JSON results go (default ./ab-results)
  --fanout-flags "…" extra flags for both servers
  -h, --help         this text

fanout-bench is built from the work tree and measures both. Port 18080/18081
must be free.
TXT
}

before=HEAD~1 after="" rounds=3 conns=10000 pubs=2 rate=10 size=64 duration=10s
srcips=127.0.0.2-127.0.0.20 out=./ab-results fflags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --before) before=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --publishers) pubs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --source-ips) srcips=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fanout-flags) fflags=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "ab.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$rounds" in ''|*[!0-9]*|0) echo "ab.sh: --rounds wants a positive integer" >&2; exit 2 ;; esac

mkdir -p "$out"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
build # fanout-bench (and the work tree's fanout) into $bin

# buildrev REV NAME: builds cmd/fanout at REV into $bin/NAME, from a
# throw-away worktree; the work tree itself when REV is empty.
buildrev() {
  if [ -z "$1" ]; then cp "$bin/fanout" "$bin/$2"; return; fi
  local wt
  wt=$(mktemp -d)
  git -C "$root" worktree add -q --detach "$wt" "$1"
  (cd "$wt" && go build -o "$bin/$2" ./cmd/fanout)
  git -C "$root" worktree remove --force "$wt"
}
echo "# building before=$before after=${after:-work tree}" >&2
buildrev "$before" fanout-before
buildrev "$after" fanout-after

for r in $(seq "$rounds"); do
  for side in before after; do
    # shellcheck disable=SC2086
    start 18080 "$out/$side-$r.log" "$bin/fanout-$side" -addr 127.0.0.1:18080 -admin-addr 127.0.0.1:18081 -log-level warn $fflags
    pid=$started_pid
    echo "# round $r: $side" >&2
    "$bin/fanout-bench" fanout -url ws://127.0.0.1:18080/ws -server-pid "$pid" -metrics-url http://127.0.0.1:18081/metrics \
      -source-ips "$srcips" -quiet -json "$out/$side-$r.json" -conns "$conns" -publishers "$pubs" \
      -rate "$rate" -size "$size" -duration "$duration" >"$out/$side-$r.txt"
    stop "$pid"
  done
done

echo "round  side    deliveries/s  loss      p99_ms   cpu_us/delivery"
for r in $(seq "$rounds"); do
  for side in before after; do
    read -r dps loss p99 cpu < <("$bin/fanout-bench" summary -raw "$out/$side-$r.json")
    printf '%-6s %-7s %12s  %-8s  %7s  %s\n' "$r" "$side" "$dps" "$loss" "$p99" "$cpu"
    echo "$side $cpu $p99" >>"$out/summary.$$"
  done
done
awk '
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  $1 == "before" { bc[++nb] = $2; bp[nb] = $3 }
  $1 == "after"  { ac[++na] = $2; ap[na] = $3 }
  END {
    mbc = median(bc, nb); mac = median(ac, na); mbp = median(bp, nb); map = median(ap, na)
    printf "median cpu/delivery: before %.3f µs, after %.3f µs, after/before %.3f\n", mbc, mac, mac / mbc
    printf "median p99:          before %.2f ms, after %.2f ms, after/before %.3f\n", mbp, map, map / mbp
  }' "$out/summary.$$"
rm -f "$out/summary.$$"
