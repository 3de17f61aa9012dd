#!/usr/bin/env bash
# Prints (default) or applies (--apply) the kernel settings and limits a
# Linux box needs to hold about a million WebSocket connections in fanout
# processes. Each setting says why. Review before applying: these change
# the whole machine.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/tune-linux.sh [--apply] [--conns N]

  (default)   print the settings as a sysctl.d / limits.d file, change nothing
  --apply     write /etc/sysctl.d/90-fanout.conf and /etc/security/limits.d/90-fanout.conf
              and load the sysctls now (needs root)
  --conns N   size the settings for N connections per machine (default 1000000)
  -h, --help  this text
TXT
}

apply=0 conns=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --apply) apply=1; shift ;;
    --conns) conns=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "tune-linux.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$conns" in ''|*[!0-9]*) echo "tune-linux.sh: --conns wants a number" >&2; exit 2 ;; esac

# One fd per connection, plus headroom for listeners, logs and bursts.
files=$(( conns + conns / 4 + 65536 ))
# TCP memory is counted in 4 KiB pages. An idle connection needs almost
# none; budget ~16 KiB of socket buffer per connection under load.
pages=$(( conns * 4 ))

sysctls=$(cat <<TXT
# --- fanout: $conns connections ---
# Open files, system-wide and the most a process may ask for (ulimit -n).
fs.file-max = $(( files * 2 ))
fs.nr_open = $files
# Accept queue: a burst of reconnects after a deploy must not be dropped.
net.core.somaxconn = 65535
net.ipv4.tcp_max_syn_backlog = 65535
net.core.netdev_max_backlog = 65535
# Local ports for outgoing connections (load generators, the NATS client).
net.ipv4.ip_local_port_range = 1024 65535
# TCP memory in pages: low, pressure, high. Above "pressure" the kernel
# shrinks buffers; above "high" it refuses memory to sockets.
net.ipv4.tcp_mem = $(( pages / 4 )) $(( pages / 2 )) $pages
# Per-socket buffers: min, default, max bytes. Small defaults keep a million
# idle sockets cheap; autotuning still grows busy ones up to max.
net.ipv4.tcp_rmem = 4096 8192 4194304
net.ipv4.tcp_wmem = 4096 16384 4194304
# Orphaned sockets and TIME_WAIT buckets for mass disconnects.
net.ipv4.tcp_max_orphans = $(( conns / 4 ))
net.ipv4.tcp_max_tw_buckets = $(( conns / 2 ))
# Conntrack, if loaded, must track every connection or it drops packets.
net.netfilter.nf_conntrack_max = $(( conns * 2 ))
TXT
)

limits=$(cat <<TXT
# fanout: per-process open-file limit (ulimit -n) for every user.
# For systemd services set LimitNOFILE=$files in the unit instead.
*    soft nofile $files
*    hard nofile $files
root soft nofile $files
root hard nofile $files
TXT
)

if [ $apply -eq 0 ]; then
  echo "# /etc/sysctl.d/90-fanout.conf"
  echo "$sysctls"
  echo
  echo "# /etc/security/limits.d/90-fanout.conf"
  echo "$limits"
  echo
  echo "# now: ulimit -n = $(ulimit -n), fs.nr_open = $(cat /proc/sys/fs/nr_open 2>/dev/null || echo '?')"
  echo "# run with --apply (as root) to install these"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "tune-linux.sh: --apply needs root" >&2
  exit 1
fi
echo "$sysctls" > /etc/sysctl.d/90-fanout.conf
echo "$limits" > /etc/security/limits.d/90-fanout.conf
# nf_conntrack_max fails when the module is not loaded: not an error here.
sysctl -p /etc/sysctl.d/90-fanout.conf || echo "tune-linux.sh: some settings were refused (see above); the rest are applied" >&2
echo "applied; log in again (or restart the service) for the nofile limit"
