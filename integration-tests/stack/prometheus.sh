#!/usr/bin/env bash
# Prometheus on 127.0.0.1 for the real-stack tests: Debian's `prometheus` package (which also
# brings promtool). No Docker.
#
#   prometheus.sh start DIR CONFIG   start Prometheus in DIR with CONFIG (a prometheus.yml; its
#                                    rule files are read relative to CONFIG), print its URL
#   prometheus.sh stop DIR           stop it: SIGTERM, SIGKILL after 20 s (idempotent)
#
# The binary comes from $PROMETHEUS_BIN, else `prometheus` on the PATH. Like the other scripts, a
# started server stops by itself when $EAVLAKE_STACK_OWNER_PID dies and after
# $EAVLAKE_STACK_TTL seconds (common.sh). DIR holds data/, prometheus.log, prometheus.pid,
# watchdog.pid and url.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

die() { echo "prometheus.sh: $*" >&2; exit 1; }

# The server's pid (its command line names DIR/data).
prom_pid() { stack_pid "$1/prometheus.pid" "$1/data"; }

stop() {
    local dir; dir=$(cd "$1" 2>/dev/null && pwd) || return 0
    stack_kill "$dir/prometheus.pid" "$dir/data" TERM
    stack_stop_watchdog "$dir"
    rm -f "$dir/prometheus.pid"
}

start() {
    mkdir -p "$1"
    local dir; dir=$(cd "$1" && pwd)
    local config; config=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
    [ -f "$config" ] || die "no config file $2"
    if prom_pid "$dir" >/dev/null; then die "a server is already running in $dir"; fi
    stack_check_owner
    local bin=${PROMETHEUS_BIN:-prometheus}
    command -v "$bin" >/dev/null || die "prometheus not found (apt-get install prometheus, or set PROMETHEUS_BIN)"
    local port; port=$(stack_free_ports 1)
    local log="$dir/prometheus.log"
    nohup "$bin" --config.file="$config" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" --web.enable-lifecycle \
        --storage.tsdb.retention.time=1d >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/prometheus.pid"
    # Alive is judged by the pid we started (its cmdline changes, and can read empty, while the
    # shell execs nohup and nohup execs prometheus).
    local url="http://127.0.0.1:$port"
    for _ in $(seq 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$log" >&2; die "prometheus exited at start (log above)"
        fi
        if python3 - "$url/-/ready" <<'PY' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
PY
        then
            stack_spawn_watchdog "$dir"
            echo "$url" >"$dir/url"
            echo "$url"
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "$log" >&2
    stop "$dir"
    die "prometheus in $dir did not become ready within 30 s (log above)"
}

case "${1:-}" in
    start) [ $# -eq 3 ] || die "usage: prometheus.sh start DIR CONFIG"; start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || die "usage: prometheus.sh stop DIR"; stop "$2" ;;
    # Stops the server once the owner is gone or the TTL is up; exits when the server does.
    _watchdog) stack_watchdog "$3" "$4" "$2/prometheus.pid" "$2/data" TERM ;;
    *) die "usage: prometheus.sh start DIR CONFIG | stop DIR" ;;
esac
