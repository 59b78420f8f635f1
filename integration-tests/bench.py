"""File-run benchmark: events per second and peak memory of `eavlake run` (with compaction) on
generated Debezium files. Median of several runs, each a separate process.

    python3 integration-tests/bench.py [--events 1000000] [--runs 5] [--with-schemas] [--bin PATH]

Prints, per run and as the median: wall seconds, CPU seconds (user+sys), events per wall
second, events per CPU second, and peak RSS (MiB). Reruns need nothing but a release build
(`cargo build --release`).
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(binary, events_file, lake, config):
    shutil.rmtree(lake, ignore_errors=True)
    start = time.perf_counter()
    # A fresh process per run, so that ru_maxrss of the child is this run's peak.
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, binary, events_file, lake, config],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"bench: eavlake run failed:\n{out.stderr}")
    wall = time.perf_counter() - start
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


# Runs eavlake as a grandchild and reports its own rusage (peak RSS of eavlake alone).
_CHILD = r"""
import json, resource, subprocess, sys
binary, events, lake, config = sys.argv[1:5]
p = subprocess.run([binary, "run", "--source", "file:" + events, "--lake", lake, "--config", config],
                   capture_output=True, text=True)
if p.returncode != 0:
    sys.stderr.write(p.stderr)
    sys.exit(p.returncode)
report = json.loads(p.stdout.strip().splitlines()[-1])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu": u.ru_utime + u.ru_stime, "max_rss_kib": u.ru_maxrss,
                  "records": report["stats"]["records"], "changes": report["stats"]["changes"],
                  "seconds": report["seconds"]}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--with-schemas", action="store_true")
    ap.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "eavlake"))
    ap.add_argument("--keep", help="folder to keep the generated file in (reused when present)")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"bench: no eavlake binary at {args.bin}: run `cargo build --release` or pass --bin")

    work = args.keep or tempfile.mkdtemp(prefix="eavlake-bench-")
    os.makedirs(work, exist_ok=True)
    variant = "schemas" if args.with_schemas else "plain"
    events_file = os.path.join(work, f"events-{args.events}-{variant}.jsonl")
    config = os.path.join(os.path.dirname(__file__), "..", "config",
                          "file-run-schemas.toml" if args.with_schemas else "file-run.toml")
    if not os.path.exists(events_file):
        cmd = [args.bin, "generate", "--events", str(args.events), "--no-poison", "--out", events_file]
        if args.with_schemas:
            cmd.append("--with-schemas")
        subprocess.run(cmd, check=True, capture_output=True)
    size_mb = os.path.getsize(events_file) / 1e6
    print(f"eavlake file-run benchmark: {args.events} change events ({variant}, {size_mb:.0f} MB), "
          f"{args.runs} runs, run + compact")
    rows = []
    for i in range(args.runs):
        wall, c = run_once(args.bin, events_file, os.path.join(work, "lake"), config)
        rows.append((wall, c["cpu"], c["max_rss_kib"] / 1024))
        print(f"  run {i + 1}: {wall:.2f} s wall, {c['cpu']:.2f} s CPU, "
              f"{args.events / wall:,.0f} events/s, {args.events / c['cpu']:,.0f} events/CPU-s, "
              f"peak RSS {c['max_rss_kib'] / 1024:.1f} MiB")
    wall = statistics.median(r[0] for r in rows)
    cpu = statistics.median(r[1] for r in rows)
    rss = statistics.median(r[2] for r in rows)
    print(f"median: {wall:.2f} s wall, {cpu:.2f} s CPU, {args.events / wall:,.0f} events/s, "
          f"{args.events / cpu:,.0f} events/CPU-s, peak RSS {rss:.1f} MiB")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
