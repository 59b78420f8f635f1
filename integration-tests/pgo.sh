#!/usr/bin/env bash
# Builds eavlake with profile-guided optimisation (PGO): an instrumented build runs file runs of
# generated events (JSON without and with embedded schemas, bad lines included: seeds other than
# the benchmarks'), LLVM merges the profiles, and the final build lays out and inlines the code
# by them. The binary to deploy, and the one the benchmarks measure (see README, Performance).
#
#   ./integration-tests/pgo.sh        # prints the binary's path on its last line
#
# Needs llvm-profdata of rustc's LLVM major version: Debian's `llvm-profdata-<major>`, or
# rustup's (`rustup component add llvm-tools-preview`, as the Dockerfile does), or else
# installed from Debian's packages. Builds go to $EAVLAKE_CACHE (default ~/.cache/eavlake), outside the clone:
# two full builds of the dependencies, about 10 and 9 minutes on 2 cores when cold.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${EAVLAKE_CACHE:-$HOME/.cache/eavlake}"
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(command -v "llvm-profdata-$llvm_major" || true)
rustup_profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ -z "$profdata" ] && [ -x "$rustup_profdata" ]; then
    profdata="$rustup_profdata"
fi
if [ -z "$profdata" ]; then
    echo "== llvm-profdata $llvm_major (rustc's LLVM) from Debian's packages" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$llvm_major" >/dev/null
    profdata="llvm-profdata-$llvm_major"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Fixed paths: RUSTFLAGS are part of cargo's fingerprint, so a path that changed every time would
# rebuild everything every time.
raw="$CACHE/pgo-profiles/raw"

echo "== instrumented build" >&2
CARGO_TARGET_DIR="$CACHE/pgo-generate" RUSTFLAGS="-Cprofile-generate=$raw" \
    cargo build --release --locked --bin eavlake >&2
gen="$CACHE/pgo-generate/release/eavlake"
# Build scripts, instrumented too, may have left profiles of their own: only the training's count.
rm -rf "$raw"

echo "== training runs" >&2
"$gen" generate --events 200000 --seed 7 --out "$work/plain.jsonl" >&2
"$gen" run --source "file:$work/plain.jsonl" --lake "$work/lake-plain" --config config/file-run.toml >/dev/null
"$gen" generate --events 50000 --seed 8 --with-schemas --out "$work/schemas.jsonl" >&2
"$gen" run --source "file:$work/schemas.jsonl" --lake "$work/lake-schemas" --config config/file-run-schemas.toml >/dev/null
"$profdata" merge -o "$work/eavlake.profdata" "$raw"
# Named by content: cargo does not see a file named in RUSTFLAGS change, so a new profile must
# come under a new name for the dependencies to be rebuilt with it.
sum=$(sha256sum "$work/eavlake.profdata" | cut -c1-16)
profile="$CACHE/pgo-profiles/eavlake-$sum.profdata"
mv "$work/eavlake.profdata" "$profile"
find "$CACHE/pgo-profiles" -maxdepth 1 -name 'eavlake-*.profdata' ! -path "$profile" -delete

# Measured on 100K events: PGO 13.7% fewer instructions than the release build; adding fat LTO
# with one codegen unit on top gave back most of it (2.4% fewer than release).
echo "== optimised build" >&2
CARGO_TARGET_DIR="$CACHE/pgo" RUSTFLAGS="-Cprofile-use=$profile" \
    cargo build --release --locked --bin eavlake >&2
echo "$CACHE/pgo/release/eavlake"
