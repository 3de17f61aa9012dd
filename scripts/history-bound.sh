#!/usr/bin/env bash
# The history stays under -history-bytes however much is published: starts
# fanout with a small byte budget, overfills it many times over (NDJSON
# batches through POST /publish?channel=, spread over many channels), and
# prints what the server says it holds (fanout_history_bytes, the messages
# forgotten by bound) and its RSS before and after.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/history-bound.sh [options]

  --history-bytes B  the server's -history-bytes (default 8388608: 8 MiB)
  --messages N       messages published in all (default 200000)
  --size B           message size in bytes (default 512)
  --channels N       channels they are spread over (default 1000)
  --batch N          messages per POST (default 100; the body is at most -max-message, 64 KiB)
  --port N           WebSocket port; the admin API listens on N+1 (default 18380)
  -h, --help         this text
TXT
}

hbytes=8388608 messages=200000 size=512 channels=1000 batch=100 port=18380
while [ $# -gt 0 ]; do
  case "$1" in
    --history-bytes) hbytes=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --channels) channels=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

(( batch * (size + 1) <= 65536 )) || { echo "--batch × (--size + 1) must fit in 64 KiB (-max-message)" >&2; exit 2; }

# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || die "needs curl"
build
key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
admin=127.0.0.1:$((port + 1))
start "$port" "$bin/server.log" env FANOUT_PUBLISH_KEYS="$key" "$bin/fanout" -addr "127.0.0.1:$port" -admin-addr "$admin" \
  -log-level warn -history-bytes "$hbytes" -history-size 100000 -history-ttl 1h
server=$started_pid

metric() { curl -s "http://$admin/metrics" | awk -v m="$1" '$1 == m { printf "%.0f\n", $2 }'; }
rss() { awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$server/status"; }

echo "# machine: $(nproc) cores, $(uname -r), $(go version | cut -d' ' -f3); $(date -u +%FT%TZ)"
echo "# params: history-bytes=$hbytes messages=$messages size=$size channels=$channels batch=$batch"
rss0=$(rss)

line=$(head -c "$size" /dev/zero | tr '\0' 'x')
for _ in $(seq "$batch"); do echo "$line"; done >"$bin/batch.ndjson"
sent=0 req=0
while [ "$sent" -lt "$messages" ]; do
  ch=c$((req % channels))
  out=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" -H 'Content-Type: application/x-ndjson' \
    --data-binary "@$bin/batch.ndjson" "http://$admin/publish?channel=$ch")
  [ "$out" = 202 ] || die "publish answered $out"
  sent=$((sent + batch)) req=$((req + 1))
done

hb=$(metric fanout_history_bytes)
hm=$(metric fanout_history_messages)
forgot=$(curl -s "http://$admin/metrics" | awk '/^fanout_history_forgotten_total/ { sub(/fanout_history_forgotten_total/, ""); printf "%s=%.0f ", $1, $2 }')
rss1=$(rss)
echo "published:        $sent messages of $size B ($((sent * size / 1048576)) MiB of payload) over $channels channels"
echo "history bytes:    $hb (budget $hbytes; $(awk -v a="$hb" -v b="$hbytes" 'BEGIN { printf "%.3f", a / b }') of it)"
echo "history messages: $hm"
echo "forgotten:        $forgot"
echo "server RSS:       $((rss0 / 1048576)) MiB before, $((rss1 / 1048576)) MiB after"
(( hb <= hbytes )) || die "the history holds $hb bytes, over its budget $hbytes"
