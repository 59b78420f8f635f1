#!/usr/bin/env bash
# A short fuzz run of every target on the committed corpus (integration-tests/run.sh calls it):
# catches a decoder that panics on the inputs the corpus already reaches, and on what a few
# seconds of mutation find next to them. The long runs are by hand (README, "Fuzzing").
#
# Needs a nightly toolchain (cargo-fuzz instruments through unstable flags): without one it says
# so and skips, successfully. cargo-fuzz is installed into $EAVLAKE_CACHE; the fuzz build has its
# own target folder there (other flags than the main build: sharing would rebuild both).
#
# Env: FUZZ_SECONDS (per target, default 15), FUZZ_RUNS (per target, default 100000),
# EAVLAKE_FUZZ_TARGET_DIR (the fuzz build's target folder).
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE="${EAVLAKE_CACHE:-$HOME/.cache/eavlake}"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-15}"
RUNS="${FUZZ_RUNS:-100000}"
TARGETS=(json_plain json_schema avro catalog file_lines file_run)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: SKIPPED: no nightly Rust toolchain (cargo-fuzz needs one: rustup toolchain install nightly)"
    exit 0
fi
if ! command -v cargo-fuzz >/dev/null; then
    export PATH="$CACHE/cargo-fuzz/bin:$PATH"
    if ! command -v cargo-fuzz >/dev/null; then
        echo "fuzz: installing cargo-fuzz into $CACHE/cargo-fuzz"
        cargo install cargo-fuzz --locked --root "$CACHE/cargo-fuzz"
    fi
fi

export CARGO_TARGET_DIR="${EAVLAKE_FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"
# -s none: the targets are safe Rust, AddressSanitizer would find nothing and cost 2-3x the
# speed; -a: overflow checks and debug assertions on, so arithmetic overflow is a crash.
flags=(--fuzz-dir integration-tests/fuzz -s none -a -O)
started=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz: built in $(( $(date +%s) - started )) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${TARGETS[@]}"; do
    mkdir -p "$work/$t" "$work/artifacts/$t"
    # New inputs go to the scratch corpus (the first folder), never into the repository.
    if ! cargo +nightly fuzz run "${flags[@]}" "$t" "$work/$t" "integration-tests/fuzz/corpus/$t" -- \
        -runs="$RUNS" -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=512 -max_len=32768 -timeout=10 \
        -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 >"$work/$t.log" 2>&1; then
        tail -n 40 "$work/$t.log"
        for a in "$work/artifacts/$t"/*; do
            [ -e "$a" ] && { echo "fuzz: $t: crashing input $(basename "$a") (base64):"; base64 -w0 "$a"; echo; }
        done
        echo "fuzz: $t FAILED"
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || echo '?')
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz: $t ok: $runs runs, $speed exec/s"
done
echo "fuzz: ${#TARGETS[@]} targets passed in $(( $(date +%s) - started )) s"
