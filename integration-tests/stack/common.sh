# shellcheck shell=bash
# Sourced by kafka.sh, postgres.sh and connect.sh: how they recognise, stop and watch the server
# they started in a DIR. A server is named by a pid file and a MARKER, a string its command line
# must contain (a path in DIR), because pids get reused.
#
# A started server stops by itself when the process $EAVLAKE_STACK_OWNER_PID dies (or is a
# zombie) and after $EAVLAKE_STACK_TTL seconds (default 3600): each script runs
# `SCRIPT _watchdog DIR OWNER TTL`, detached, which calls stack_watchdog.

# This script by absolute path, for the watchdog to run (the caller's cwd is not ours to rely on).
stack_self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
# This file's folder, where the scripts it shares with the Rust tests are.
stack_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The pid in PIDFILE while it still is the server (a zombie has an empty cmdline).
stack_pid() {
    local pid; read -r pid 2>/dev/null <"$1" || return 1
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$2" && echo "$pid"
}

# stack_exited PID: sets stack_ended to how this script's own background server PID ended
# ("still running" if it has not), for the message of a server that did not come up. Not in a
# command substitution: only this shell can wait for its child.
stack_exited() {
    stack_ended="still running"
    kill -0 "$1" 2>/dev/null && return 0
    local status=0
    wait "$1" 2>/dev/null || status=$?
    if [ "$status" -gt 128 ]; then
        stack_ended="killed by signal $((status - 128))"
    else
        stack_ended="exited with status $status"
    fi
}

# stack_kill PIDFILE MARKER SIGNAL: the server's graceful-stop signal, SIGKILL if it is still
# there after 20 s.
stack_kill() {
    local pid; pid=$(stack_pid "$1" "$2") || return 0
    kill "-$3" "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do stack_pid "$1" "$2" >/dev/null || return 0; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    # Gone for good before a restart reuses its folder and ports (it holds the data dir lock).
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

# Refuses to start a server for an owner that is already gone: it would be stopped at once.
stack_check_owner() {
    local owner=${EAVLAKE_STACK_OWNER_PID:-}
    if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
        echo "$(basename "$0"): EAVLAKE_STACK_OWNER_PID $owner is not running" >&2; exit 1
    fi
}

# stack_spawn_watchdog DIR: runs this script's _watchdog in its own session with no inherited
# stdio (it must neither hold the caller's pipes open nor die with the caller's terminal).
stack_spawn_watchdog() {
    setsid nohup "$stack_self" _watchdog "$1" "${EAVLAKE_STACK_OWNER_PID:-}" "${EAVLAKE_STACK_TTL:-3600}" \
        >/dev/null 2>&1 </dev/null &
    echo $! >"$1/watchdog.pid"
}

# stack_watchdog OWNER TTL PIDFILE MARKER SIGNAL: the watchdog's loop; returns when the server
# has exited, by itself or stopped here.
stack_watchdog() {
    local owner=$1 deadline=$((SECONDS + $2))
    while stack_pid "$3" "$4" >/dev/null; do
        if [ $SECONDS -ge $deadline ] || { [ -n "$owner" ] && { ! kill -0 "$owner" 2>/dev/null \
                || grep -q '^[0-9]* (.*) Z' "/proc/$owner/stat" 2>/dev/null; }; }; then
            stack_kill "$3" "$4" "$5"; return 0
        fi
        sleep 1
    done
}

# Stops DIR's watchdog, if it still is one: its whole group, so its sleep goes too.
stack_stop_watchdog() {
    local wpid; wpid=$(cat "$1/watchdog.pid" 2>/dev/null) || wpid=
    if [ -n "$wpid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$wpid/cmdline" | grep -qF "_watchdog $1 "; then
        kill -- "-$wpid" 2>/dev/null || kill "$wpid" 2>/dev/null || true
    fi
    rm -f "$1/watchdog.pid"
}

# N distinct free loopback TCP ports, on one line, none of the ports given after N; none handed
# out in the last two minutes by any caller on this machine (see free_ports.py, which the Rust
# tests call too). A server that needs several ports picks them in one call: see kafka.sh.
stack_free_ports() {
    python3 "$stack_dir/free_ports.py" "${TMPDIR:-/tmp}/eavlake-recent-ports" "$@" \
        || { echo "$(basename "$0"): cannot pick free ports (free_ports.py needs python3)" >&2; exit 1; }
}
