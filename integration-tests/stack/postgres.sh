#!/usr/bin/env bash
# A real PostgreSQL server on 127.0.0.1, ready for Debezium (wal_level=logical) with the
# reference EAV schema loaded, for integration tests and CI. No Docker: Debian's server binaries.
#
#   postgres.sh start DIR    start a server in DIR, print postgres://postgres@127.0.0.1:PORT/eav
#   postgres.sh stop DIR     stop it: fast shutdown, SIGKILL after 20 s (idempotent)
#
# The binaries come from $PG_BIN, else the newest /usr/lib/postgresql/*/bin. As root, the server
# runs as the `postgres` user (initdb and postgres refuse root), so DIR is chowned to it and its
# parent folders must let that user through (/tmp does). Authentication is `trust`: loopback only,
# and the URL needs no password. Like kafka.sh, a started server stops by itself when
# $EAVLAKE_STACK_OWNER_PID dies and after $EAVLAKE_STACK_TTL seconds (common.sh).
# DIR holds data/ (postmaster.pid, postgresql.conf), postgres.log, postgres.pid, watchdog.pid,
# the Unix socket and url. A stopped DIR starts again with its data, on a new port.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"
schema="$here/../../schemas/eav.sql"

die() { echo "postgres.sh: $*" >&2; exit 1; }

pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
    local found; found=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    [ -x "$found/postgres" ] || die "PostgreSQL server binaries not found (install postgresql, or set PG_BIN)"
    echo "$found"
}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The postmaster's pid (its cmdline names DIR/data); its backends are its children.
pg_pid() { stack_pid "$1/postgres.pid" "$1/data"; }

# SIGINT is PostgreSQL's fast shutdown: SIGTERM (smart) would wait for Debezium's replication
# connection to go away by itself.
kill_pg() { stack_kill "$1/postgres.pid" "$1/data" INT; }

stop() {
    local dir; dir=$(cd "$1" 2>/dev/null && pwd) || return 0
    kill_pg "$dir"
    stack_stop_watchdog "$dir"
    rm -f "$dir/postgres.pid"
}

start() {
    mkdir -p "$1"
    local dir; dir=$(cd "$1" && pwd)
    if pg_pid "$dir" >/dev/null; then die "a server is already running in $dir"; fi
    stack_check_owner
    local bin; bin=$(pg_bin)
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    local log="$dir/postgres.log" fresh=
    : >"$log"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        fresh=1
        as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
            --no-instructions >>"$log" 2>&1 || { cat "$log" >&2; die "initdb into $dir/data failed"; }
        # In the config file rather than on the command line: DIR may contain spaces. Debezium needs
        # logical decoding and one slot plus one WAL sender; headroom for tests that add more.
        cat >>"$dir/data/postgresql.conf" <<EOF

# eavlake integration-test stack (postgres.sh)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = off
EOF
    fi
    if [ "$(id -u)" = 0 ]; then chown postgres: "$log"; fi

    local port; port=$(stack_free_ports 1)
    # pg_ctl detaches the server (own session, stdio to the log) and -w waits until it accepts
    # connections.
    if ! as_postgres "$bin/pg_ctl" start -D "$dir/data" -l "$log" -w -t 60 -o "-p $port" >/dev/null; then
        tail -n 40 "$log" >&2
        stop "$dir"
        die "the server in $dir did not come up (log above, whole log in $log)"
    fi
    head -n 1 "$dir/data/postmaster.pid" >"$dir/postgres.pid"
    stack_spawn_watchdog "$dir"

    local url="postgres://postgres@127.0.0.1:$port/eav"
    if [ -n "$fresh" ]; then
        local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
        if ! { "${psql[@]}" -d postgres -c 'CREATE DATABASE eav' && "${psql[@]}" -d eav -f "$schema"; } \
                >>"$log" 2>&1; then
            tail -n 20 "$log" >&2
            stop "$dir"
            die "creating database eav from $schema failed (log above)"
        fi
    fi
    echo "$url" >"$dir/url"
    echo "$url"
}

case "${1:-}" in
    start) [ $# -eq 2 ] || die "usage: postgres.sh start DIR"; start "$2" ;;
    stop) [ $# -eq 2 ] || die "usage: postgres.sh stop DIR"; stop "$2" ;;
    # Stops the server once the owner is gone or the TTL is up; exits when the server does.
    _watchdog) stack_watchdog "$3" "$4" "$2/postgres.pid" "$2/data" INT ;;
    *) die "usage: postgres.sh start DIR | stop DIR" ;;
esac
