#!/usr/bin/env bash
# A real Kafka Connect worker (distributed mode, a group of one) running Debezium's PostgreSQL
# connector on 127.0.0.1, from Maven Central jars, for integration tests and CI. No Docker.
#
#   connect.sh fetch                          only download the jars (CI warms the cache with this)
#   connect.sh start DIR BOOTSTRAP PG_URL [REGISTRY_API_URL]
#                                             start a worker in DIR, print its REST URL once the
#                                             connector's task is RUNNING; with REGISTRY_API_URL
#                                             (registry.sh's DIR/api), values are Avro in the
#                                             Confluent wire format (config/debezium-avro.properties)
#   connect.sh stop DIR [kill]                stop it: SIGTERM (offsets committed), SIGKILL after
#                                             20 s; with `kill`, SIGKILL at once (idempotent)
#   connect.sh restart DIR [kill]             stop, then start again with DIR's files and offsets
#
# The connector is config/debezium-postgres.properties, registered through the REST API on first
# start; the worker is config/connect-distributed.properties. Their ${...} placeholders are filled
# in from BOOTSTRAP, PG_URL (postgres://USER[:PASSWORD]@HOST:PORT/eav, as postgres.sh prints it)
# and DIR. The worker creates the topics (the connector's topic.creation.* settings). Debezium's
# offsets, like the connector's config, are records in the broker's eavlake-connect-* topics, and
# a restart resumes streaming from them, without a new snapshot: after a graceful stop exactly
# where it stopped, after `kill` re-sending what followed the last offset commit
# (offset.flush.interval.ms, 1 s). (Standalone mode's offsets file cannot be trusted with `kill`:
# see config/connect-distributed.properties.)
#
# Jars are cached in ${EAVLAKE_CACHE:-~/.cache/eavlake}/jars/connect-<version> (the worker) and
# jars/debezium-<version> (the plugin folder), versions from connect/pom.xml. Like kafka.sh, a
# started worker stops by itself when $EAVLAKE_STACK_OWNER_PID dies and after $EAVLAKE_STACK_TTL
# seconds (common.sh). DIR holds worker.properties, connector.properties, log4j2.properties,
# connect.log, connect.pid, watchdog.pid, rest and task-trace (a failed task's error).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"
pom="$here/connect/pom.xml"
config="$here/../../config"
connect_version=$(sed -n 's:.*<connect.version>\(.*\)</connect.version>.*:\1:p' "$pom")
debezium_version=$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$pom")
apicurio_version=$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$pom")
cache="${EAVLAKE_CACHE:-$HOME/.cache/eavlake}/jars"
# The worker's class path holds the Avro converter too: its version is part of the folder name.
jars="$cache/connect-$connect_version-apicurio-$apicurio_version"
plugins="$cache/debezium-$debezium_version"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

die() { echo "connect.sh: $*" >&2; exit 1; }

# fetch_into FINAL GOAL PROPERTY: runs the Maven GOAL with -DPROPERTY=<a folder>. Fetches beside the final folder and renames it into place, so a
# half-done fetch never looks complete and two cold starts racing each other both end up whole.
fetch_into() {
    local final=$1 goal=$2 property=$3
    [ -d "$final" ] && return 0
    command -v mvn >/dev/null || die "mvn (Maven 3) is needed to fetch the Kafka Connect and Debezium jars"
    mkdir -p "$(dirname "$final")"
    local tmp; tmp=$(mktemp -d "$final.part.XXXXXX")
    # jansi.noreset: Debian's Maven 3.8 otherwise prints stray ANSI resets even with -q -B.
    if ! MAVEN_OPTS="-Djansi.noreset=true ${MAVEN_OPTS:-}" mvn -q -B -f "$pom" "$goal" \
            -DincludeScope=runtime "-D$property=$tmp" >&2; then
        rm -rf "$tmp"; die "fetching $(basename "$final") failed"
    fi
    # A plugin archive becomes the plugin's folder (plugin.path must not see the archive itself).
    for archive in "$tmp"/*.tar.gz; do
        [ -f "$archive" ] || continue
        if ! tar -xzf "$archive" -C "$tmp"; then rm -rf "$tmp"; die "unpacking $archive failed"; fi
        rm "$archive"
    done
    mv -T "$tmp" "$final" 2>/dev/null || rm -rf "$tmp"
}

fetch() {
    fetch_into "$jars" dependency:copy-dependencies outputDirectory
    fetch_into "$plugins" dependency:copy@debezium debezium.dir
}

# The worker's pid while it still is this DIR's worker (see common.sh).
worker_pid() { stack_pid "$1/connect.pid" "$1/worker.properties"; }

stop() {
    local dir; dir=$(cd "$1" 2>/dev/null && pwd) || return 0
    if [ "${2:-}" = kill ]; then
        local pid; pid=$(worker_pid "$dir") && { kill -KILL "$pid" 2>/dev/null || true; }
        while worker_pid "$dir" >/dev/null; do sleep 0.1; done
    else
        stack_kill "$dir/connect.pid" "$dir/worker.properties" TERM
    fi
    stack_stop_watchdog "$dir"
    rm -f "$dir/connect.pid"
}

# Writes DIR's worker and connector files from config/, placeholders filled in (values escaped for
# a properties file).
configure() {
    local dir=$1 bootstrap=$2 url=$3 registry=${4:-} port
    port=$(stack_free_ports 1)
    python3 - "$config" "$dir" "$bootstrap" "$url" "$port" "$plugins" "$registry" <<'EOF' || die "cannot use PG_URL $url"
import string, sys, urllib.parse
config, dir, bootstrap, url, port, plugins, registry = sys.argv[1:]
u = urllib.parse.urlsplit(url)
if u.scheme not in ("postgres", "postgresql") or not u.hostname or u.path.strip("/") not in ("", "eav"):
    sys.exit(f"connect.sh: PG_URL must be postgres://USER[:PASSWORD]@HOST:PORT/eav (the connector captures database eav), not {url}")
values = dict(
    PG_HOST=u.hostname, PG_PORT=str(u.port or 5432),
    PG_USER=urllib.parse.unquote(u.username or "postgres"), PG_PASSWORD=urllib.parse.unquote(u.password or ""),
    BOOTSTRAP_SERVERS=bootstrap, REST_PORT=port, PLUGIN_PATH=plugins,
    REGISTRY_API_URL=registry)
values = {k: v.replace("\\", "\\\\").replace("\n", "") for k, v in values.items()}
for src, dst in (("connect-distributed", "worker"), ("debezium-postgres", "connector")):
    text = string.Template(open(f"{config}/{src}.properties").read()).substitute(values)
    # Avro: the converter settings come after the JSON ones and so replace them.
    if dst == "connector" and registry:
        text += "\n" + string.Template(open(f"{config}/debezium-avro.properties").read()).substitute(values)
    open(f"{dir}/{dst}.properties", "w").write(text)
EOF
    # Connect, Debezium and the clients are verbose at INFO; config dumps (AbstractConfig) are
    # hundreds of lines per client, so they go at WARN.
    cat >"$dir/log4j2.properties" <<'EOF'
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
EOF
}

# The connector's status from the REST API, as "CONNECTOR-STATE TASK-STATE" ("- -" while the
# worker is not listening yet), and a failed task's trace on stderr.
status() {
    python3 - "$1" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r: s = json.load(r)
except Exception:
    print("- -"); sys.exit()
task = (s.get("tasks") or [{}])[0]
print(s.get("connector", {}).get("state", "-"), task.get("state", "-"))
if task.get("trace"): print(task["trace"], file=sys.stderr)
EOF
}

# Registers the connector of FILE (a properties file) as NAME unless the worker has it already
# (a restarted worker reads it back from its config topic). Prints "yes" once it is registered;
# nothing while the worker is not ready for it: not listening yet, listening with no resources
# yet (every path 404), or rebalancing (409).
register() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, re, sys, urllib.error, urllib.request
rest, name, path = sys.argv[1:]
try:
    urllib.request.urlopen(f"{rest}/", timeout=5).close()
    urllib.request.urlopen(f"{rest}/connectors/{name}", timeout=5).close()
    print("yes"); sys.exit()
except urllib.error.HTTPError as e:
    if e.code != 404 or not e.url.endswith(f"/connectors/{name}"): sys.exit()
except Exception:
    sys.exit()
config = {}
for line in open(path):
    line = line.strip()
    if not line or line[0] in "#!" or "=" not in line: continue
    key, value = line.split("=", 1)
    # Properties escapes: \\ is a backslash (the routing regex's), \t \n \r \f what they say.
    unescape = lambda m: {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(m[1], m[1])
    config[key.strip()] = re.sub(r"\\(.)", unescape, value.strip())
request = urllib.request.Request(f"{rest}/connectors/{name}/config", data=json.dumps(config).encode(),
                                 method="PUT", headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=30).close()
    print("yes")
except urllib.error.HTTPError as e:
    if e.code not in (404, 409): print(f"connect.sh: registering {name}: {e.code} {e.read().decode()}", file=sys.stderr)
except Exception:
    pass
EOF
}

launch() {
    local dir=$1 log="$1/connect.log"
    if worker_pid "$dir" >/dev/null; then die "a worker is already running in $dir"; fi
    stack_check_owner
    fetch
    local port name
    port=$(sed -n 's|^listeners=http://127.0.0.1:\([0-9]*\)$|\1|p' "$dir/worker.properties")
    name=$(sed -n 's/^name=//p' "$dir/connector.properties")
    echo "== $(date -u +%FT%TZ) connect.sh starting the worker" >>"$log"
    # nohup and no inherited stdio: the worker must not hold the caller's pipes open.
    nohup "$java" -Xms256m -Xmx512m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$jars/*" \
        org.apache.kafka.connect.cli.ConnectDistributed "$dir/worker.properties" \
        >>"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/connect.pid"
    # Until the forked shell has exec'd, its cmdline is ours and worker_pid would call it gone.
    while ! worker_pid "$dir" >/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    stack_spawn_watchdog "$dir"

    # RUNNING means the task has started: Debezium has its replication slot (so every later change
    # is captured), while the snapshot (first start) or the resumed stream is under way.
    local rest="http://127.0.0.1:$port" state= registered=
    local deadline=$((SECONDS + 120))
    while [ $SECONDS -lt $deadline ] && kill -0 "$pid" 2>/dev/null; do
        [ -n "$registered" ] || registered=$(register "$rest" "$name" "$dir/connector.properties")
        state=$(status "$rest/connectors/$name/status" 2>"$dir/task-trace")
        case "$state" in
            "RUNNING RUNNING") echo "$rest" >"$dir/rest"; echo "$rest"; return 0 ;;
            *FAILED*) cat "$dir/task-trace" >&2; break ;;
        esac
        sleep 0.5
    done
    stack_exited "$pid"
    tail -n 60 "$log" >&2
    stop "$dir"
    die "the connector in $dir is not running (${state:-no status}; log above, whole log in $log); the server: $stack_ended"
}

start() {
    mkdir -p "$1"
    local dir; dir=$(cd "$1" && pwd)
    if worker_pid "$dir" >/dev/null; then die "a worker is already running in $dir"; fi
    configure "$dir" "$2" "$3" "${4:-}"
    : >"$dir/connect.log"
    launch "$dir"
}

case "${1:-}" in
    fetch) fetch ;;
    start)
        [ $# -eq 4 ] || [ $# -eq 5 ] || die "usage: connect.sh start DIR BOOTSTRAP PG_URL [REGISTRY_API_URL]"
        start "$2" "$3" "$4" "${5:-}" ;;
    stop) [ $# -ge 2 ] || die "usage: connect.sh stop DIR [kill]"; stop "$2" "${3:-}" ;;
    restart)
        if [ $# -lt 2 ] || [ ! -f "$2/worker.properties" ]; then
            die "usage: connect.sh restart DIR [kill], DIR one that start used"
        fi
        stop "$2" "${3:-}"; launch "$(cd "$2" && pwd)" ;;
    # Stops the worker once the owner is gone or the TTL is up; exits when the worker does.
    _watchdog) stack_watchdog "$3" "$4" "$2/connect.pid" "$2/worker.properties" TERM ;;
    *) die "usage: connect.sh fetch | start DIR BOOTSTRAP PG_URL [REGISTRY_API_URL] | stop DIR [kill] | restart DIR [kill]" ;;
esac
