#!/usr/bin/env bash
# eavlake's whole test suite, on a fresh machine: installs what it needs (crates, PostgreSQL,
# Java, Maven and Prometheus from Debian's packages, Kafka's jars from Maven Central, a Python venv with
# DuckDB and moto from PyPI), builds, and runs every test.
# `.ci/run` calls exactly this.
#
# Builds and downloads are cached in $EAVLAKE_CACHE (default ~/.cache/eavlake), outside the
# clone, so later runs are warm; a cold run works the same, only slower.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${EAVLAKE_CACHE:-$HOME/.cache/eavlake}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
mkdir -p "$CACHE"

command -v cargo >/dev/null || { echo "run.sh: cargo (Rust 1.88+) is required" >&2; exit 2; }
command -v python3 >/dev/null || { echo "run.sh: python3 is required" >&2; exit 2; }

echo "== Python venv with DuckDB (readability check) and moto (an S3-compatible server on loopback)"
if [ ! -x "$CACHE/venv/bin/python" ]; then
    python3 -m venv "$CACHE/venv"
fi
"$CACHE/venv/bin/python" -c "import duckdb, moto.server, boto3" 2>/dev/null \
    || "$CACHE/venv/bin/pip" install --quiet "duckdb==2.0.1" "moto[server]==5.*" boto3

if [ -z "${PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "== PostgreSQL server from Debian's packages (for the schema and catalog tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
command -v openssl >/dev/null || missing+=(openssl)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== From Debian's packages: ${missing[*]} (Kafka broker; librdkafka's and Postgres' TLS, test certificates; Prometheus scraping the real stack)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== Kafka (KRaft), Kafka Connect, Debezium and Apicurio Registry jars from Maven Central, for the real-stack tests"
./integration-tests/stack/kafka.sh fetch
./integration-tests/stack/connect.sh fetch
./integration-tests/stack/registry.sh fetch

echo "== Unit, component, golden, PostgreSQL and Kafka tests"
cargo test --release --locked 2>&1

echo "== DuckDB reads the lake written by a file run, value for value"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin="$CARGO_TARGET_DIR/release/eavlake"
for variant in plain with-schemas; do
    flags=() config=config/file-run.toml
    if [ "$variant" = with-schemas ]; then flags=(--with-schemas); config=config/file-run-schemas.toml; fi
    "$bin" generate --events 60000 --tenants 6 --seed 3 "${flags[@]}" \
        --out "$tmp/$variant.jsonl" --truth "$tmp/$variant.truth.jsonl"
    "$bin" run --source "file:$tmp/$variant.jsonl" --lake "$tmp/lake-$variant" --config "$config" >/dev/null
    "$CACHE/venv/bin/python" integration-tests/duckdb_check.py "$tmp/lake-$variant" "$tmp/$variant.truth.jsonl"
done

echo "== The same run into an S3-compatible server, read back value for value"
"$CACHE/venv/bin/python" integration-tests/s3_check.py "$bin" "$tmp/plain.jsonl" "$tmp/plain.truth.jsonl" config/file-run.toml

echo "== docker-compose.yml: parses, and shares its configs with the test stack"
"$CACHE/venv/bin/python" integration-tests/compose_check.py "$bin"

echo "lake checks: 4 passed, 0 failed"

echo "== Fuzz targets, briefly, on the committed corpus (skipped without a nightly toolchain)"
./integration-tests/fuzz/smoke.sh
