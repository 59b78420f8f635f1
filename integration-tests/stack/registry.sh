#!/usr/bin/env bash
# A real schema registry (Apicurio Registry, in-memory storage) on 127.0.0.1 with a
# Confluent-compatible API, run from a Maven Central archive, for the Avro path of the
# integration tests and CI. No Docker.
#
#   registry.sh fetch                          only download the registry (CI warms the cache)
#   registry.sh start DIR PORT                 start a registry in DIR listening on PORT (0: a
#                                              free port), print its Confluent-compatible base
#                                              URL (http://127.0.0.1:PORT/apis/ccompat/v7) once
#                                              the API answers
#   registry.sh stop DIR                       stop it: SIGTERM, SIGKILL after 20 s (idempotent)
#
# The Confluent-compatible API (what eavlake's registry client and Confluent tools use:
# GET <base>/schemas/ids/<id>, /subjects, ...) is under /apis/ccompat/v7; Apicurio's own API,
# which its Kafka Connect converter (config/debezium-avro.properties) talks to, under
# /apis/registry/v2. Schema ids in the ccompat API, and in records written by the converter with
# config/debezium-avro.properties, are Apicurio content ids.
#
# Storage is in memory: a stopped registry forgets every schema, and a registry restarted while
# a consumer still holds records written before keeps answering 404 for their ids (Apicurio's
# Kafka-backed storage is not on Maven Central for this version).
#
# The server is cached in ${EAVLAKE_CACHE:-~/.cache/eavlake}/jars/apicurio-registry-<version>
# (version from registry/pom.xml). Like kafka.sh, a started registry stops by itself when the
# process $EAVLAKE_STACK_OWNER_PID dies and after $EAVLAKE_STACK_TTL seconds (common.sh).
# DIR holds application.properties, registry.log, registry.pid, watchdog.pid, url (the ccompat
# base URL) and api (the Apicurio v2 API URL, for the converter).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"
pom="$here/registry/pom.xml"
version=$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$pom")
home="${EAVLAKE_CACHE:-$HOME/.cache/eavlake}/jars/apicurio-registry-$version"
runner="$home/apicurio-registry-app-$version-runner.jar"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

die() { echo "registry.sh: $*" >&2; exit 1; }

fetch() {
    [ -f "$runner" ] && return 0
    command -v mvn >/dev/null || die "mvn (Maven 3) is needed to fetch Apicurio Registry"
    mkdir -p "$(dirname "$home")"
    # Fetch beside the final folder and rename it into place, so a half-done fetch never looks
    # complete and two cold starts racing each other both end up with a whole set.
    local tmp; tmp=$(mktemp -d "$home.part.XXXXXX")
    # jansi.noreset: Debian's Maven 3.8 otherwise prints stray ANSI resets even with -q -B.
    if ! MAVEN_OPTS="-Djansi.noreset=true ${MAVEN_OPTS:-}" mvn -q -B -f "$pom" dependency:copy@registry \
            "-Dregistry.dir=$tmp" >&2; then
        rm -rf "$tmp"; die "fetching Apicurio Registry $version failed"
    fi
    local archive
    for archive in "$tmp"/*.tar.gz; do
        if ! tar -xzf "$archive" -C "$tmp"; then rm -rf "$tmp"; die "unpacking $archive failed"; fi
        rm "$archive"
    done
    [ -f "$tmp/$(basename "$runner")" ] || { rm -rf "$tmp"; die "the Apicurio $version archive has no $(basename "$runner")"; }
    mv -T "$tmp" "$home" 2>/dev/null || rm -rf "$tmp"
}

# The registry's pid while it still is this DIR's registry (see common.sh).
registry_pid() { stack_pid "$1/registry.pid" "$1/application.properties"; }

stop() {
    local dir; dir=$(cd "$1" 2>/dev/null && pwd) || return 0
    stack_kill "$dir/registry.pid" "$dir/application.properties" TERM
    stack_stop_watchdog "$dir"
    rm -f "$dir/registry.pid"
}

# 200 once GET URL answers 200, else nothing.
answers() {
    python3 - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r: print(r.status)
except Exception: pass
EOF
}

start() {
    local port=$2
    case "$port" in ''|*[!0-9]*) die "PORT must be a number (0 for a free one), not '$port'" ;; esac
    mkdir -p "$1"
    local dir; dir=$(cd "$1" && pwd)
    if registry_pid "$dir" >/dev/null; then die "a registry is already running in $dir"; fi
    stack_check_owner
    fetch
    [ "$port" = 0 ] && port=$(stack_free_ports 1)

    # Quarkus reads this file on top of its built-in configuration; its path in the command line
    # is also what names this DIR's server (common.sh). Loopback only; Narayana's object store
    # (transactions of the H2 storage) in DIR, not in the caller's cwd; the ccompat API's ids are
    # content ids (the default, and what the converter writes with use-id=contentId).
    cat >"$dir/application.properties" <<EOF
quarkus.http.host=127.0.0.1
quarkus.http.port=$port
quarkus.transaction-manager.object-store.directory=$dir/ObjectStore
quarkus.log.level=INFO
registry.ccompat.legacy-id-mode.enabled=false
EOF
    local log="$dir/registry.log"
    : >"$log"
    # nohup, no inherited stdio and DIR as cwd: the registry must neither hold the caller's pipes
    # open nor write into the caller's folder.
    (cd "$dir" && exec nohup "$java" -Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        "-Dquarkus.config.locations=$dir/application.properties" \
        -jar "$runner" >>"$log" 2>&1 </dev/null) &
    local pid=$!
    echo "$pid" >"$dir/registry.pid"
    # Until the forked shell has exec'd, its cmdline is ours and registry_pid would call it gone.
    while ! registry_pid "$dir" >/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    stack_spawn_watchdog "$dir"

    local base="http://127.0.0.1:$port/apis/ccompat/v7"
    local deadline=$((SECONDS + 90))
    while [ $SECONDS -lt $deadline ] && kill -0 "$pid" 2>/dev/null; do
        # Quarkus logs "Listening on" only once the HTTP server is up; the port check then makes
        # sure it is this registry answering, not something else that took PORT.
        if grep -q "Listening on: http://127.0.0.1:$port" "$log" && [ "$(answers "$base/subjects")" = 200 ]; then
            echo "$base" >"$dir/url"
            echo "http://127.0.0.1:$port/apis/registry/v2" >"$dir/api"
            echo "$base"
            return 0
        fi
        sleep 0.2
    done
    stack_exited "$pid"
    tail -n 40 "$log" >&2
    stop "$dir"
    die "the registry in $dir did not come up on port $port (log above, whole log in $log); the server: $stack_ended"
}

case "${1:-}" in
    fetch) fetch ;;
    start)
        [ $# -eq 3 ] || die "usage: registry.sh start DIR PORT"
        start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || die "usage: registry.sh stop DIR"; stop "$2" ;;
    # Stops the registry once the owner is gone or the TTL is up; exits when the registry does.
    _watchdog) stack_watchdog "$3" "$4" "$2/registry.pid" "$2/application.properties" TERM ;;
    *) die "usage: registry.sh fetch | start DIR PORT | stop DIR" ;;
esac
