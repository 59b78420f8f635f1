"""eavlake against DuckDB on the same job: Debezium change events of the reference EAV store
(schemas/eav.sql) in one JSON-lines file → the current state (latest value of every attribute of
every live entity, deletes applied) as wide, typed Parquet per entity type.

    python integration-tests/duckdb_bench.py [--events 1000000 [10000000 …]] [--with-schemas]
        [--runs 3] [--bin PATH] [--work DIR] [--keep] [--input FILE --truth FILE] [--poison]
        [--show-sql] [--no-warm]

Needs the eavlake release binary (`--bin`, default target/release/eavlake) and a Python with
`duckdb` (the test venv: ~/.cache/eavlake/venv/bin/python). For every size, it:

1. generates the events (`eavlake generate --events N --no-poison [--with-schemas] --truth …`),
   or takes `--input` (with its `--truth`); kept in `--work` with `--keep`, and reused from there;
2. runs, alternately (A B, B A, A B, …) and `--runs` times each, each in a fresh process right
   after reading the events file through (see `warm`):
   - eavlake: `eavlake run --source file:F --lake DIR --config config/file-run[-schemas].toml`
     (decode, dedup, pivot, change files under changes/, then compaction into current/);
   - DuckDB: this script in `--duckdb-child` mode: one pass over the file with `read_json`
     (typed columns of the Debezium envelope), one hash aggregation keeping, per source row
     (attribute / entity / value), the latest image by source position (`sequence[0]` = commit
     LSN of the previous transaction, then the change LSN: Debezium's re-sends are identical
     records at the same position, so they collapse), TOAST placeholders skipped; then, from the
     attribute catalog found in the data, one conditional-aggregation PIVOT per entity type
     (hot attributes from `hot_attributes` JSONB by name, cold ones from their typed column)
     written with COPY … TO '<type>.parquet' (zstd). DuckDB's own defaults otherwise (all cores,
     its memory limit);
   measuring, for the child process alone (from a small intermediate process: see `measure`):
   wall time, CPU time (user + sys, all threads) and peak RSS (ru_maxrss);
3. checks the two outputs: each against the generator's expected state (--truth), and against
   each other, entity by entity and value by value (decimals by value at scale 9, timestamps to
   the microsecond, JSON parsed);
4. prints, per size and variant: median wall, median CPU-s, events per CPU-second (and per wall
   second), peak RSS (max over runs), for both, and the ratio eavlake / DuckDB; and the spread
   of the CPU ratios of neighbouring runs (run i of each), a measure of the machine's drift.

Exits 1 when the outputs disagree (with each other or with the expected state); a missed speed or
memory target is reported, not an error. "Events" is N, the change events asked of the generator
(the file also holds the catalog, transaction markers, heartbeats, tombstones and re-sends).
The machine is shared: compare within one run (same file, alternating), not across runs.
"""
import argparse
import datetime
import decimal
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

decimal.getcontext().prec = 60

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOAST = "__debezium_unavailable_value"

# ---------------------------------------------------------------------------------------------
# The DuckDB side.

# One image type for before and after: the union of the three tables' columns (absent keys are
# NULL). Decimals are text (decimal.handling.mode=string) or base64 two's complement bytes
# (precise, scale 9 from the schema of numeric(38, 9)); timestamps ZonedTimestamp text.
IMAGE = (
    "STRUCT(entity_id BIGINT, attribute_id BIGINT, tenant_id BIGINT, entity_type VARCHAR, "
    "name VARCHAR, data_type VARCHAR, is_hot BOOLEAN, hot_attributes VARCHAR, is_deleted BOOLEAN, "
    "value_text VARCHAR, value_int BIGINT, value_decimal VARCHAR, value_bool BOOLEAN, "
    "value_timestamp VARCHAR, value_json VARCHAR)"
)
# Only the keys of a before image are needed (deletes).
BEFORE = "STRUCT(entity_id BIGINT, attribute_id BIGINT)"
SOURCE = 'STRUCT(snapshot VARCHAR, "table" VARCHAR, sequence VARCHAR, txId BIGINT, lsn BIGINT)'

# Stage 1, static: one pass over the file, one aggregation. The key of a source row is
# (table, entity_id, attribute_id): attributes have no entity_id, entities no attribute_id.
# `pos` orders changes as the stream does: snapshot reads (sequence [null, lsn]) first, then
# streamed changes by (commit LSN of the previous transaction, change LSN), which is commit order
# and, within a transaction, change order.
STAGE1 = """
SET preserve_insertion_order = false;
CREATE TEMP TABLE state AS
WITH ev AS (
    SELECT
        {e}op AS op,
        {e}source."table" AS tbl,
        CASE WHEN {e}source.sequence IS NULL OR starts_with({e}source.sequence, '[null')
             THEN 0::HUGEINT
             ELSE CAST(split_part({e}source.sequence, '"', 2) AS BIGINT)::HUGEINT * 18446744073709551616
        END + {e}source.lsn AS pos,
        coalesce({e}after.entity_id, {e}before.entity_id) AS entity_id,
        coalesce({e}after.attribute_id, {e}before.attribute_id) AS attribute_id,
        {e}after AS img,
        {e}after.hot_attributes = '{toast}' OR {e}after.value_text = '{toast}'
            OR {e}after.value_json = '{toast}' AS toasted
    FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true,
                   columns = {columns})
    WHERE {e}op IN ('c', 'r', 'u', 'd')
)
SELECT
    tbl, entity_id, attribute_id,
    arg_max(op, pos) AS last_op,
    arg_max_null(img.is_deleted, pos) AS last_deleted,
    arg_max_null(img, pos) FILTER (WHERE op <> 'd' AND NOT coalesce(toasted, false)) AS img
FROM ev
GROUP BY ALL;

CREATE TEMP TABLE cat AS
SELECT img.attribute_id, img.tenant_id, img.entity_type, img.name, img.data_type, img.is_hot
FROM state WHERE tbl = 'attributes' AND last_op <> 'd';

-- Precise decimals: big-endian two's complement, unscaled, scale 9.
CREATE TEMP MACRO dec_b64(s) AS CASE WHEN s IS NULL THEN NULL ELSE
    CAST(CASE WHEN left(hex(from_base64(s)), 1) >= '8'
              THEN -((CAST('0x' || repeat('F', length(hex(from_base64(s)))) AS UHUGEINT)
                      - CAST('0x' || hex(from_base64(s)) AS UHUGEINT) + 1)::HUGEINT)
              ELSE CAST('0x' || hex(from_base64(s)) AS UHUGEINT)::HUGEINT
         END AS DECIMAL(38, 0)) * 0.000000001::DECIMAL(38, 9) END;
"""

SQL_TYPE = {
    "text": "VARCHAR",
    "int": "BIGINT",
    "decimal": "DECIMAL(38, 9)",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "json": "VARCHAR",
}


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def ident(s):
    return '"' + s.replace('"', '""') + '"'


def stage2(entity_type, columns, out_file, precise):
    """The PIVOT of one entity type: `columns` is [(name, data_type, hot, cold)] in catalog order."""
    hot = [(n, t) for n, t, h, _ in columns if h]
    hot_scalar = [(n, t) for n, t in hot if t != "json"]
    hot_json = [(n, t) for n, t in hot if t == "json"]
    path = lambda n: sql_str('$."' + n.replace('"', '\\"') + '"')
    e_cols = ["entity_id", "img.tenant_id AS tenant_id"]
    if hot_scalar:
        e_cols.append(
            "json_extract_string(img.hot_attributes, [" + ", ".join(path(n) for n, _ in hot_scalar) + "]) AS hs"
        )
    if hot_json:
        e_cols.append("json_extract(img.hot_attributes, [" + ", ".join(path(n) for n, _ in hot_json) + "]) AS hj")
    cold_value = {
        "text": "img.value_text",
        "int": "img.value_int",
        "decimal": "dec_b64(img.value_decimal)" if precise else "CAST(img.value_decimal AS DECIMAL(38, 9))",
        "bool": "img.value_bool",
        "timestamp": "CAST(img.value_timestamp AS TIMESTAMPTZ)",
        "json": "img.value_json",
    }
    v_cols = []
    for n, t, _, c in columns:
        if c:
            v_cols.append(f"any_value({cold_value[t]}) FILTER (WHERE c.name = {sql_str(n)}) AS {ident('c_' + n)}")
    select = ["e.tenant_id", "e.entity_id"]
    for n, t, h, c in columns:
        parts = []
        if h and t == "json":
            parts.append(f"nullif(CAST(e.hj[{[x for x, _ in hot_json].index(n) + 1}] AS VARCHAR), 'null')")
        elif h:
            parts.append(f"CAST(e.hs[{[x for x, _ in hot_scalar].index(n) + 1}] AS {SQL_TYPE[t]})")
        if c:
            parts.append(f"v.{ident('c_' + n)}")
        expr = parts[0] if len(parts) == 1 else "coalesce(" + ", ".join(parts) + ")"
        select.append(f"{expr} AS {ident(n)}")
    et = sql_str(entity_type)
    sql = f"""
COPY (
    WITH e AS (
        SELECT {', '.join(e_cols)}
        FROM state
        WHERE tbl = 'entities' AND last_op <> 'd' AND NOT coalesce(last_deleted, false)
          AND img.entity_type = {et}
    )"""
    if v_cols:
        sql += f""", v AS (
        SELECT s.entity_id, {', '.join(v_cols)}
        FROM state s JOIN cat c ON c.attribute_id = s.attribute_id
        WHERE s.tbl = 'entity_values' AND s.last_op <> 'd' AND c.entity_type = {et}
        GROUP BY s.entity_id
    )"""
    sql += f"""
    SELECT {', '.join(select)}
    FROM e {'LEFT JOIN v USING (entity_id)' if v_cols else ''}
) TO {sql_str(out_file)} (FORMAT parquet, COMPRESSION zstd);
"""
    return sql


def duckdb_child(events, out_dir, precise, show_sql=False):
    """Runs the DuckDB job in this process; prints a JSON line of what it wrote."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    envelope = {"before": BEFORE, "after": IMAGE, "source": SOURCE, "op": "VARCHAR"}
    if precise:
        inner = ", ".join(f"{k} {v}" for k, v in envelope.items())
        columns = "{'payload': 'STRUCT(" + inner.replace("'", "''") + ")'}"
        prefix = "payload."
    else:
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in envelope.items()) + "}"
        prefix = ""
    sql1 = STAGE1.format(e=prefix, path=events.replace("'", "''"), columns=columns, toast=TOAST)
    if show_sql:
        print(sql1, file=sys.stderr)
    con.execute(sql1)
    catalog = con.execute(
        "SELECT entity_type, name, data_type, bool_or(is_hot), bool_or(NOT is_hot), min(attribute_id) "
        "FROM cat GROUP BY ALL ORDER BY entity_type, min(attribute_id)"
    ).fetchall()
    types = {}
    for entity_type, name, data_type, hot, cold, _ in catalog:
        types.setdefault(entity_type, []).append((name, data_type, hot, cold))
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for entity_type, columns in types.items():
        out_file = os.path.join(out_dir, f"{entity_type}.parquet")
        sql2 = stage2(entity_type, columns, out_file, precise)
        if show_sql:
            print(sql2, file=sys.stderr)
        written[entity_type] = con.execute(sql2).fetchone()[0]
    print(json.dumps({"entities": written}))


# ---------------------------------------------------------------------------------------------
# Measuring.


def measure(cmd, log):
    """Runs `cmd` as a grandchild process; returns (wall s, CPU s, peak RSS KiB, exit status).

    Measured from a small intermediate Python (`_MEASURE`), not from this process: Python
    starts children with vfork, and Linux counts the high-water RSS of the memory a process
    had before its exec in its ru_maxrss, so a child of this process, which holds the 10M
    expected state, would report this process's size as its own peak."""
    with open(log, "wb") as out, tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        subprocess.run([sys.executable, "-c", _MEASURE, result.name, *cmd], stdout=out, stderr=subprocess.STDOUT,
                       cwd=os.path.dirname(log), check=True)
        r = json.load(result)
    return r["wall"], r["cpu"], r["max_rss_kib"], r["code"]


_MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - start
u = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"wall": wall, "cpu": u.ru_utime + u.ru_stime, "max_rss_kib": u.ru_maxrss, "code": code}, f)
"""


def warm(events):
    """Reads the events file through, so that the run that follows finds its pages warm.

    Before every run, not once: on this project's virtual machines, a page of the page cache
    that nobody touched for a few seconds costs about 3 µs on its next first touch (the host
    backs it again; the guest sees neither a fault nor steal time, only a slow load). A 1M file
    is 213K pages: 0.6–0.8 CPU-s charged to whichever engine reads it first, which is each of
    them in turn since a run takes seconds (measured 2026-12-06: a loop touching every cache
    line of the mapped file took 0.84–0.97 s CPU in a fresh process and 0.18–0.22 s again in the
    same one; `read` the same). That is the host's cost, not the engine's; `--no-warm` measures
    with it."""
    with open(events, "rb") as f:
        while f.read(1 << 24):
            pass


def run_eavlake(binary, events, lake, config, log):
    shutil.rmtree(lake, ignore_errors=True)
    return measure([binary, "run", "--source", "file:" + events, "--lake", lake, "--config", config], log)


def run_duckdb(events, out_dir, precise, log):
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--duckdb-child", "--input", events, "--out", out_dir]
    if precise:
        cmd.append("--with-schemas")
    return measure(cmd, log)


# ---------------------------------------------------------------------------------------------
# Checking: both outputs read with DuckDB into the truth file's form (as duckdb_check.py does).


def truth_form(value):
    if value is None:
        return None
    if isinstance(value, decimal.Decimal):
        return format(value.quantize(decimal.Decimal("0.000000001")), "f")
    if isinstance(value, datetime.datetime):
        delta = value - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return value


def read_state(globs):
    """{(type, tenant, entity): {attribute: value}} and {(type, column): SQL type} of Parquet
    files; `globs` maps entity type → glob. Fails on an entity seen twice."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    state, types, dupes = {}, {}, 0
    for entity_type, glob in sorted(globs.items()):
        rel = con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)")
        names = rel.columns
        for n, t in zip(names, rel.types):
            types[(entity_type, n)] = str(t)
        for row in rel.fetchall():
            record = dict(zip(names, row))
            key = (entity_type, int(record["tenant_id"]), int(record["entity_id"]))
            if key in state:
                dupes += 1
            attrs = {}
            for name in names:
                if name in ("tenant_id", "entity_id") or name.startswith("_"):
                    continue
                value = truth_form(record[name])
                if value is not None:
                    attrs[name] = value
            state[key] = attrs
    return state, types, dupes


def norm(v):
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def compare(a, b, a_name, b_name, limit=5):
    """Differences between two states, printed (at most `limit`); returns their count."""
    out = []
    missing = [k for k in b if k not in a]
    extra = [k for k in a if k not in b]
    if missing:
        out.append(f"{len(missing)} entities in {b_name} but not in {a_name}, e.g. {missing[:3]}")
    if extra:
        out.append(f"{len(extra)} entities in {a_name} but not in {b_name}, e.g. {extra[:3]}")
    values = 0
    for key in a.keys() & b.keys():
        x, y = a[key], b[key]
        for name in x.keys() | y.keys():
            if norm(x.get(name)) != norm(y.get(name)):
                values += 1
                if values <= limit:
                    out.append(f"  {key} {name}: {a_name} {x.get(name)!r}, {b_name} {y.get(name)!r}")
    if values:
        out.append(f"{values} values differ between {a_name} and {b_name}")
    for line in out:
        print("    " + line)
    return len(missing) + len(extra) + values


def load_truth(path):
    state = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            state[(row["entity_type"], row["tenant_id"], row["entity_id"])] = row["attributes"]
    return state


def check(lake, duck_out, truth_path):
    """Returns the number of problems found."""
    current = os.path.join(lake, "current")
    ev, ev_types, ev_dupes = read_state(
        {t: os.path.join(current, t, "**", "*.parquet") for t in os.listdir(current)}
    )
    dd, dd_types, dd_dupes = read_state(
        {f[: -len(".parquet")]: os.path.join(duck_out, f) for f in os.listdir(duck_out) if f.endswith(".parquet")}
    )
    problems = ev_dupes + dd_dupes
    if ev_dupes or dd_dupes:
        print(f"    entities seen twice: eavlake {ev_dupes}, DuckDB {dd_dupes}")
    print(f"  check: eavlake {len(ev)} live entities, DuckDB {len(dd)}")
    problems += compare(ev, dd, "eavlake", "DuckDB")
    if truth_path:
        truth = load_truth(truth_path)
        for name, state in (("eavlake", ev), ("DuckDB", dd)):
            n = compare(state, truth, name, "expected")
            print(f"  check: {name} {'equals' if n == 0 else 'DIFFERS FROM'} the expected state ({len(truth)} entities)")
            problems += n
    type_diffs = [
        (k, ev_types[k], dd_types.get(k))
        for k in sorted(ev_types)
        if not k[1].startswith("_") and ev_types[k] != dd_types.get(k)
    ]
    if type_diffs:
        print(f"  column types differing (eavlake, DuckDB): {type_diffs[:8]}")
    print(f"  check: outputs {'AGREE' if problems == 0 else 'DISAGREE'}")
    return problems


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="+", help="sizes to generate (default 1000000); "
                    "with --input, the change events it holds")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--with-schemas", action="store_true")
    ap.add_argument("--poison", action="store_true", help="keep the generator's bad lines")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "eavlake"))
    ap.add_argument("--work", help="folder for the events files and outputs (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the events files (in --work) for the next run")
    ap.add_argument("--input", help="an events file to use instead of generating one (one size)")
    ap.add_argument("--truth", help="expected state of --input (eavlake generate --truth)")
    ap.add_argument("--show-sql", action="store_true")
    ap.add_argument("--no-warm", action="store_true",
                    help="read the events file before the first run only, not before every run (see `warm`)")
    ap.add_argument("--duckdb-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.duckdb_child:
        duckdb_child(args.input, args.out, args.with_schemas, args.show_sql)
        return 0

    if args.input and not args.events:
        sys.exit("duckdb_bench: with --input, give its number of change events with --events N")
    args.events = args.events or [1_000_000]
    binary = os.path.abspath(args.bin)
    if not os.path.exists(binary):
        sys.exit(f"duckdb_bench: no eavlake binary at {binary}: `cargo build --release` or pass --bin")
    import duckdb  # fail early, before generating gigabytes

    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="eavlake-duckdb-bench-"))
    os.makedirs(work, exist_ok=True)
    variant = "schemas" if args.with_schemas else "plain"
    config = os.path.join(ROOT, "config", "file-run-schemas.toml" if args.with_schemas else "file-run.toml")
    results, failed = [], False
    sizes = [None] if args.input else args.events
    for n in sizes:
        if args.input:
            events, truth = os.path.abspath(args.input), args.truth
            n = args.events[0]
        else:
            tag = f"{n}-{variant}{'-poison' if args.poison else ''}"
            events = os.path.join(work, f"events-{tag}.jsonl")
            truth = os.path.join(work, f"truth-{tag}.jsonl")
            if not (os.path.exists(events) and os.path.exists(truth)):
                cmd = [binary, "generate", "--events", str(n), "--out", events, "--truth", truth]
                cmd += ["--with-schemas"] if args.with_schemas else []
                cmd += [] if args.poison else ["--no-poison"]
                print(f"generating {n} events ({variant}) …", flush=True)
                subprocess.run(cmd, check=True, capture_output=True)
        size_mb = os.path.getsize(events) / 1e6
        print(f"\n{n:,} change events, {variant} ({size_mb:,.0f} MB): {args.runs} runs each, alternating, "
              f"DuckDB {duckdb.__version__}", flush=True)
        lake, duck_out = os.path.join(work, "lake"), os.path.join(work, "duckdb-out")
        runs = {"eavlake": [], "DuckDB": []}
        for i in range(args.runs):
            order = ["eavlake", "DuckDB"] if i % 2 == 0 else ["DuckDB", "eavlake"]
            for who in order:
                log = os.path.join(work, f"{who}.log")
                # The page cache warm for the first run at least, so that neither side pays for
                # the first read alone.
                if not args.no_warm or (i, who) == (0, order[0]):
                    warm(events)
                if who == "eavlake":
                    wall, cpu, rss, rc = run_eavlake(binary, events, lake, config, log)
                else:
                    wall, cpu, rss, rc = run_duckdb(events, duck_out, args.with_schemas, log)
                if rc != 0:
                    print(open(log, errors="replace").read()[-3000:])
                    sys.exit(f"duckdb_bench: {who} failed (exit {rc}), log {log}")
                runs[who].append((wall, cpu, rss / 1024))
                print(f"  run {i + 1} {who:8}: {wall:7.2f} s wall, {cpu:7.2f} s CPU, "
                      f"{n / cpu:>10,.0f} events/CPU-s, peak RSS {rss / 1024:7.1f} MiB", flush=True)
        problems = check(lake, duck_out, truth)
        failed |= problems > 0
        results.append((n, variant, size_mb, runs, problems))
        if not args.keep and not args.input:
            os.remove(events)
            os.remove(truth)
        shutil.rmtree(lake, ignore_errors=True)
        shutil.rmtree(duck_out, ignore_errors=True)
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)

    print("\nmedians of the runs (peak RSS: max over runs). ratio row: eavlake's speed over DuckDB's "
          "(DuckDB time / eavlake time), and eavlake's peak RSS / DuckDB's\n")
    head = (f"| {'input':<28} | {'engine':<8} | {'wall s':>7} | {'CPU s':>7} | {'events/CPU-s':>12} "
            f"| {'events/s':>10} | {'peak RSS MiB':>12} | outputs |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for n, variant, size_mb, runs, problems in results:
        med = {}
        for who, rows in runs.items():
            wall = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[1] for r in rows)
            rss = max(r[2] for r in rows)
            med[who] = (wall, cpu, rss)
            label = f"{n:,} {variant} ({size_mb:,.0f} MB)"
            print(f"| {label:<28} | {who:<8} | {wall:7.2f} | {cpu:7.2f} | {n / cpu:12,.0f} | {n / wall:10,.0f} "
                  f"| {rss:12.1f} | {'agree' if problems == 0 else 'DIFFER'} |")
        (ew, ec, er), (dw, dc, dr) = med["eavlake"], med["DuckDB"]
        print(f"| {'':<28} | {'ratio':<8} | {dw / ew:6.2f}× | {dc / ec:6.2f}× | {dc / ec:11.2f}× | {dw / ew:9.2f}× "
              f"| {er / dr:11.2f}× |         |")
        # Run i of each engine ran next to the other's run i (A B, B A, …): their ratios show how
        # far the machine's speed moved within the sitting, which the medians above hide.
        pairs = sorted(d[1] / e[1] for e, d in zip(runs["eavlake"], runs["DuckDB"]))
        if len(pairs) > 1:
            print(f"  CPU ratio of each pair of neighbouring runs: median {statistics.median(pairs):.2f}×, "
                  f"from {pairs[0]:.2f}× to {pairs[-1]:.2f}× ({', '.join(f'{p:.2f}' for p in pairs)})")
        target = 1.0 if variant == "schemas" else 2.0
        print(f"  targets: events/CPU-s ≥ {target:g}× DuckDB: {'met' if dc / ec >= target else 'NOT met'} "
              f"({dc / ec:.2f}×); eavlake peak RSS ≤ 128 MiB: {'met' if er <= 128 else 'NOT met'} ({er:.0f} MiB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
