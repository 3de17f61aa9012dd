#!/usr/bin/env bash
# What an idle connection costs the kernel, next to what it costs fanout:
# starts fanout, holds N idle connections with fanout-bench connect, and
# prints the growth of the kernel's socket-related slab caches
# (/proc/slabinfo: objects × object size, per connection), of the slab
# as a whole (/proc/meminfo), of TCP buffer memory (/proc/net/sockstat),
# and fanout's RSS per connection. Client and server run on this machine,
# so the kernel figures are for both ends of each connection: halve them
# for a server whose clients are elsewhere. Reading /proc/slabinfo needs
# root. Other programs' sockets on a shared machine add noise: read the
# per-cache lines, where the object counts show it.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/socket-memory.sh [options]

  --conns N   idle connections to hold (default 10000; under the open-file limit)
  --hold D    how long fanout-bench holds them (default 20s; sampled once all are in)
  --port N    WebSocket port; the admin API listens on N+1 (default 18390)
  -h, --help  this text
TXT
}

conns=10000 hold=20s port=18390
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$conns" in ''|*[!0-9]*|0) echo "--conns wants a positive number" >&2; exit 2 ;; esac

# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || die "needs curl"
[ -r /proc/slabinfo ] || die "cannot read /proc/slabinfo (needs root)"
build
admin=127.0.0.1:$((port + 1))
start "$port" "$bin/server.log" "$bin/fanout" -addr "127.0.0.1:$port" -admin-addr "$admin" -log-level warn
server=$started_pid

metric() { curl -s "http://$admin/metrics" | awk -v m="$1" '$1 == m { printf "%.0f\n", $2 }'; }
caches='^(TCP|TCPv6|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq) '
slab() { grep -E "$caches" /proc/slabinfo | awk '{ print $1, $2, $4 }' | sort; }
meminfo() { awk '$1 == "Slab:" { print $2 * 1024 }' /proc/meminfo; }
tcpmem() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) * 4096 }' /proc/net/sockstat; }
rss() { awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$server/status"; }

echo "# machine: $(nproc) cores, $(uname -r), $(go version | cut -d' ' -f3); $(date -u +%FT%TZ)"
echo "# params: conns=$conns hold=$hold (client and server on this machine: kernel figures are for both ends)"
slab >"$bin/slab.before"
slab0=$(meminfo) tcp0=$(tcpmem) rss0=$(rss)

"$bin/fanout-bench" connect -url "ws://127.0.0.1:$port/ws" -conns "$conns" -hold "$hold" -quiet >"$bin/bench.log" 2>&1 &
bench=$!
pids+=("$bench")
for _ in $(seq 600); do
  [ "$(metric fanout_connections)" = "$conns" ] && break
  kill -0 "$bench" 2>/dev/null || die "fanout-bench ended before $conns connections (see below)$(echo; cat "$bin/bench.log")"
  sleep 0.1
done
[ "$(metric fanout_connections)" = "$conns" ] || die "fanout never held $conns connections"
slab >"$bin/slab.held"
slab1=$(meminfo) tcp1=$(tcpmem) rss1=$(rss)
wait "$bench" || die "fanout-bench failed: $(cat "$bin/bench.log")"
forget "$bench"

join "$bin/slab.before" "$bin/slab.held" | awk -v n="$conns" '
  { d = ($4 - $2) * $3; total += d
    printf "%-17s %+8d objects × %4d B = %+11d B   %6.0f B per connection\n", $1, $4 - $2, $3, d, d / n }
  END { printf "%-17s %55.0f B per connection (both ends)\n", "these caches", total / n }'
awk -v n="$conns" -v a="$slab0" -v b="$slab1" 'BEGIN { printf "%-17s %+40d B   %6.0f B per connection (both ends)\n", "all slab", b - a, (b - a) / n }'
awk -v n="$conns" -v a="$tcp0" -v b="$tcp1" 'BEGIN { printf "%-17s %+40d B   %6.0f B per connection (idle: queues empty)\n", "TCP buffers", b - a, (b - a) / n }'
awk -v n="$conns" -v a="$rss0" -v b="$rss1" 'BEGIN { printf "%-17s %+40d B   %6.0f B per connection (fanout alone)\n", "fanout RSS", b - a, (b - a) / n }'
