# shellcheck shell=bash
# Shared by the scripts beside it (source it, do not run it): building the
# binaries, starting servers on ports that must be free, and stopping
# everything that was started when the script ends, however it ends.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The servers these scripts start are stopped with SIGTERM: no load
# balancer to wait for (fanout's -drain-delay), stop at once.
export FANOUT_DRAIN_DELAY=0
bin=$(mktemp -d)
pids=()
me=$(basename "$0")

cleanup() {
  trap - EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$bin"
}
trap cleanup EXIT
trap 'echo "$me: interrupted" >&2; exit 130' INT TERM

die() { echo "$me: $*" >&2; exit 1; }

build() {
  echo "# building" >&2
  (cd "$root" && go build -o "$bin/fanout" ./cmd/fanout && go build -o "$bin/fanout-bench" ./cmd/fanout-bench)
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start PORT LOG CMD...: starts CMD in the background with stderr to LOG,
# after checking nobody listens on PORT yet (a stale server would be
# measured instead), and waits until it listens. Sets started_pid.
start() {
  local port=$1 log=$2; shift 2
  listening "$port" && die "port $port is already in use"
  "$@" 2>"$log" &
  started_pid=$!
  pids+=("$started_pid")
  for _ in $(seq 200); do
    kill -0 "$started_pid" 2>/dev/null || die "$1 exited before listening on port $port (see $log)"
    listening "$port" && return 0
    sleep 0.05
  done
  die "nothing listening on port $port (see $log)"
}

# stop PID: stops one started process.
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; forget "$1"; }

# forget PID: a started process that is gone (stopped, killed): cleanup
# must not signal its pid, which another process may have by then.
forget() {
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
