#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1, run
# from Maven Central jars, for integration tests and CI. No Docker, no Kafka tarball.
#
#   kafka.sh fetch                       only download the jars (CI warms the cache with this)
#   kafka.sh start DIR                   start a broker in DIR, print its bootstrap address
#   kafka.sh topic DIR NAME PARTITIONS   create a topic (replication factor 1)
#   kafka.sh stop DIR                    stop it: SIGTERM, SIGKILL after 20 s (idempotent)
#
# Jars are cached in ${EAVLAKE_CACHE:-~/.cache/eavlake}/jars/kafka-<version>; the version is the
# one in kafka/pom.xml. A started broker stops by itself when the process $EAVLAKE_STACK_OWNER_PID
# dies and after $EAVLAKE_STACK_TTL seconds (default 3600), so a killed test run leaves no JVM
# (the watchdog in common.sh).
# DIR holds server.properties, data/, broker.log, broker.pid, watchdog.pid and bootstrap.
#
# With EAVLAKE_KAFKA_SASL_USER and EAVLAKE_KAFKA_SASL_PASSWORD (letters and digits) set at the
# first start, the broker also has a SASL_PLAINTEXT listener, its address in DIR/sasl_bootstrap,
# where that user logs in with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (for the secrets tests).
# With EAVLAKE_KAFKA_TLS_DIR set at the first start (a folder holding ca.pem, server.pem and its
# unencrypted PKCS#8 server.key, e.g. made by integration-tests/common/test_ca.rs), it also has
# two TLS listeners with that certificate: SSL (no client certificate), its address in
# DIR/ssl_bootstrap, and one that requires a client certificate signed by ca.pem, in
# DIR/mtls_bootstrap; with SASL as well, a SASL_SSL listener too, in DIR/sasl_ssl_bootstrap.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"
pom="$here/kafka/pom.xml"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
jars="${EAVLAKE_CACHE:-$HOME/.cache/eavlake}/jars/kafka-$version"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
    [ -d "$jars" ] && return 0
    command -v mvn >/dev/null || die "mvn (Maven 3) is needed to fetch the Kafka jars"
    mkdir -p "$(dirname "$jars")"
    # Fetch beside the final folder and rename it into place, so a half-done fetch never looks
    # complete and two cold starts racing each other both end up with a whole set.
    local tmp; tmp=$(mktemp -d "$jars.part.XXXXXX")
    # jansi.noreset: Debian's Maven 3.8 otherwise prints stray ANSI resets even with -q -B.
    if ! MAVEN_OPTS="-Djansi.noreset=true ${MAVEN_OPTS:-}" mvn -q -B -f "$pom" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp" >&2; then
        rm -rf "$tmp"; die "fetching the Kafka $version jars failed"
    fi
    mv -T "$tmp" "$jars" 2>/dev/null || rm -rf "$tmp"
}

# A short-lived tool JVM from the same jars; logs (WARN and up) go to stderr.
tool() {
    local dir=$1; shift
    "$java" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -Deavlake.log.level=WARN -cp "$jars/*" "$@"
}

# The broker's pid, but only while that pid still is this DIR's broker (see common.sh).
broker_pid() { stack_pid "$1/broker.pid" "$1/server.properties"; }

kill_broker() { stack_kill "$1/broker.pid" "$1/server.properties" TERM; }

stop() {
    local dir; dir=$(cd "$1" 2>/dev/null && pwd) || return 0
    kill_broker "$dir"
    stack_stop_watchdog "$dir"
    rm -f "$dir/broker.pid"
}

start() {
    mkdir -p "$1"
    local dir; dir=$(cd "$1" && pwd)
    if broker_pid "$dir" >/dev/null; then die "a broker is already running in $dir"; fi
    stack_check_owner
    fetch
    # The client and controller ports, and a cluster id in Kafka's form: 16 random bytes,
    # url-safe base64, never starting with '-' (it would read as an option).
    local port="" cport="" cluster_id
    if [ -f "$dir/data/meta.properties" ] && [ -f "$dir/server.properties" ]; then
        # A stopped broker restarts with its data on its own ports: clients keep their
        # bootstrap address (that is what a broker restart test needs).
        port=$(sed -n 's/^listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$dir/server.properties")
        cport=$(sed -n 's/^controller.quorum.voters=1@127.0.0.1:\([0-9]*\)$/\1/p' "$dir/server.properties")
        cluster_id=unused
    else
        cluster_id=$(python3 -c '
import base64, uuid
cid = "-"
while cid.startswith("-"): cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
print(cid)') || die "python3 is needed to make a cluster id"
    fi
    # Every port a first start may need, picked in one call that holds them all bound until it
    # has them: ports picked by separate calls were each free when picked, so a later call could
    # be handed one an earlier call had picked (two listeners on one port: Kafka refuses to
    # start). A restart's own ports are kept out of the picks.
    local picks
    # shellcheck disable=SC2086 # a first start has no ports of its own to keep out
    read -r -a picks < <(stack_free_ports 6 $port $cport)
    [ "${#picks[@]}" = 6 ] || die "could not pick free ports"
    if [ -z "$port" ]; then port=${picks[0]}; cport=${picks[1]}; fi

    local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
    local advertised="PLAINTEXT://127.0.0.1:$port" protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    local sasl_port="" sasl_user="${EAVLAKE_KAFKA_SASL_USER:-}" sasl_password="${EAVLAKE_KAFKA_SASL_PASSWORD:-}"
    if [ -f "$dir/sasl.properties" ]; then
        # A restart keeps the SASL listener of the first start, on its port.
        sasl_port=$(sed -n 's/^# port=//p' "$dir/sasl.properties")
    elif [ -n "$sasl_user" ]; then
        [[ "$sasl_user$sasl_password" =~ ^[A-Za-z0-9]+$ ]] || die "SASL user and password: letters and digits only"
        sasl_port=${picks[2]}
        cat >"$dir/sasl.properties" <<EOF
# port=$sasl_port
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$sasl_password";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
    fi
    if [ -n "$sasl_port" ]; then
        listeners+=",SASL_PLAINTEXT://127.0.0.1:$sasl_port"
        advertised+=",SASL_PLAINTEXT://127.0.0.1:$sasl_port"
        protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    fi
    local ssl_port="" mtls_port="" sasl_ssl_port="" tls_dir="${EAVLAKE_KAFKA_TLS_DIR:-}"
    if [ -f "$dir/tls.properties" ]; then
        # A restart keeps the TLS listeners of the first start, on their ports.
        ssl_port=$(sed -n 's/^# ssl_port=//p' "$dir/tls.properties")
        mtls_port=$(sed -n 's/^# mtls_port=//p' "$dir/tls.properties")
        sasl_ssl_port=$(sed -n 's/^# sasl_ssl_port=//p' "$dir/tls.properties")
    elif [ -n "$tls_dir" ]; then
        tls_dir=$(cd "$tls_dir" && pwd) || die "EAVLAKE_KAFKA_TLS_DIR: no folder $tls_dir"
        for f in ca.pem server.pem server.key; do [ -f "$tls_dir/$f" ] || die "EAVLAKE_KAFKA_TLS_DIR: no $f"; done
        # Kafka's PEM keystore file: the private key and the certificate chain in one file.
        cat "$tls_dir/server.key" "$tls_dir/server.pem" >"$dir/keystore.pem"
        ssl_port=${picks[3]} mtls_port=${picks[4]} sasl_ssl_port=${picks[5]}
        [ -n "$sasl_port" ] || sasl_ssl_port=""
        {
            echo "# ssl_port=$ssl_port"
            echo "# mtls_port=$mtls_port"
            echo "# sasl_ssl_port=$sasl_ssl_port"
            echo "ssl.keystore.type=PEM"
            echo "ssl.keystore.location=$dir/keystore.pem"
            echo "ssl.truststore.type=PEM"
            echo "ssl.truststore.location=$tls_dir/ca.pem"
            echo "listener.name.mtls.ssl.client.auth=required"
            if [ -n "$sasl_ssl_port" ]; then
                # The SASL listener's logins, on the SASL_SSL listener too.
                grep '^listener\.name\.sasl_plaintext\.' "$dir/sasl.properties" \
                    | sed 's/^listener\.name\.sasl_plaintext\./listener.name.sasl_ssl./'
            fi
        } >"$dir/tls.properties"
    fi
    if [ -n "$ssl_port" ]; then
        listeners+=",SSL://127.0.0.1:$ssl_port,MTLS://127.0.0.1:$mtls_port"
        advertised+=",SSL://127.0.0.1:$ssl_port,MTLS://127.0.0.1:$mtls_port"
        protocols+=",SSL:SSL,MTLS:SSL"
    fi
    if [ -n "$sasl_ssl_port" ]; then
        listeners+=",SASL_SSL://127.0.0.1:$sasl_ssl_port"
        advertised+=",SASL_SSL://127.0.0.1:$sasl_ssl_port"
        protocols+=",SASL_SSL:SASL_SSL"
    fi

    # Replication factors and ISR of 1 for the internal topics, or groups and transactions fail
    # on one node; no initial rebalance delay, or each new consumer group waits 3 s. Classic
    # groups (rdkafka's cooperative-sticky) are on by default.
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
    if [ -n "$sasl_port" ]; then cat "$dir/sasl.properties" >>"$dir/server.properties"; fi
    if [ -n "$ssl_port" ]; then cat "$dir/tls.properties" >>"$dir/server.properties"; fi
    cat >"$dir/log4j2.properties" <<'EOF'
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${sys:eavlake.log.level:-INFO}
rootLogger.appenderRef.err.ref = err
EOF

    local log="$dir/broker.log"
    : >"$log"
    # A DIR whose broker was stopped is already formatted: it restarts with its data.
    if [ ! -f "$dir/data/meta.properties" ]; then
        local scram=()
        if [ -n "$sasl_port" ]; then
            # SCRAM credentials live in the cluster's metadata: written when it is formatted.
            scram=(--add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$sasl_password]"
                   --add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]")
        fi
        tool "$dir" kafka.tools.StorageTool format --config "$dir/server.properties" \
            --cluster-id "$cluster_id" "${scram[@]}" >"$log" 2>&1 || { cat "$log" >&2; die "formatting $dir/data failed"; }
    fi

    # nohup and no inherited stdio: the broker must not hold the caller's pipes open.
    nohup "$java" -Xms256m -Xmx512m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$jars/*" \
        kafka.Kafka "$dir/server.properties" >>"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/broker.pid"
    # Until the forked shell has exec'd, its cmdline is ours and broker_pid would call it gone.
    while ! broker_pid "$dir" >/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    echo "127.0.0.1:$port" >"$dir/bootstrap"
    if [ -n "$sasl_port" ]; then echo "127.0.0.1:$sasl_port" >"$dir/sasl_bootstrap"; fi
    if [ -n "$ssl_port" ]; then
        echo "127.0.0.1:$ssl_port" >"$dir/ssl_bootstrap"
        echo "127.0.0.1:$mtls_port" >"$dir/mtls_bootstrap"
    fi
    if [ -n "$sasl_ssl_port" ]; then echo "127.0.0.1:$sasl_ssl_port" >"$dir/sasl_ssl_bootstrap"; fi
    stack_spawn_watchdog "$dir"

    # KafkaRaftServer logs "Kafka Server started" only once the broker is unfenced and serving.
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ] && kill -0 "$pid" 2>/dev/null; do
        if grep -q 'Kafka Server started' "$log" && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "127.0.0.1:$port"
            return 0
        fi
        sleep 0.2
    done
    stack_exited "$pid"
    tail -n 60 "$log" >&2
    stop "$dir"
    die "the broker in $dir did not come up (log above, whole log in $log); the server: $stack_ended"
}

case "${1:-}" in
    fetch) fetch ;;
    start) [ $# -eq 2 ] || die "usage: kafka.sh start DIR"; start "$2" ;;
    stop) [ $# -eq 2 ] || die "usage: kafka.sh stop DIR"; stop "$2" ;;
    restart) [ $# -eq 2 ] || die "usage: kafka.sh restart DIR"; stop "$2"; start "$2" ;;
    topic)
        [ $# -eq 4 ] || die "usage: kafka.sh topic DIR NAME PARTITIONS"
        dir=$(cd "$2" && pwd); fetch
        tool "$dir" org.apache.kafka.tools.TopicCommand --bootstrap-server "$(cat "$dir/bootstrap")" \
            --create --topic "$3" --partitions "$4" --replication-factor 1 ;;
    # Stops the broker once the owner is gone or the TTL is up; exits when the broker does.
    _watchdog) stack_watchdog "$3" "$4" "$2/broker.pid" "$2/server.properties" TERM ;;
    *) die "usage: kafka.sh fetch | start DIR | stop DIR | restart DIR | topic DIR NAME PARTITIONS" ;;
esac
