"""Reads every Parquet object of a lake with several engines and checks that they all see the
same rows: DuckDB, pyarrow, polars and Apache Spark (pyspark, vectorized reader on and off).

    python3 integration-tests/readers_check.py <lake dir> [--engines duckdb,pyarrow,polars,spark]

eavlake writes data pages v2 (src/sink/parquet.rs), which some older readers did not take; this
is the check that the readers analysts use still do. It installs what it needs into its own venv
(~/.cache/eavlake/readers-venv, from PyPI; pyspark is ~450 MB and needs Java 17) and runs there.
Not part of CI (the download); a lake of 100K events takes a minute or two, most of it Spark's.

Each object (change files and current objects) is read on its own, so no engine merges schemas
or infers partition columns: per object, its rows are put in one canonical form (decimals by
value, timestamps as µs since the epoch, lists as tuples), sorted and hashed. Exits 1 when an
engine fails to read an object or sees other rows than DuckDB.
"""
import argparse
import datetime
import decimal
import hashlib
import os
import subprocess
import sys

VENV = os.path.join(os.path.expanduser("~"), ".cache", "eavlake", "readers-venv")
# DuckDB, the reference, at the version of the test venv (integration-tests/run.sh).
PACKAGES = ["duckdb==2.0.1", "pyarrow", "polars", "pyspark"]
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def ensure_venv():
    """Re-runs this script in its venv, creating it first if needed."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", *PACKAGES])
    os.execv(python, [python, *sys.argv])


def canonical(value):
    if value is None:
        return None
    if isinstance(value, decimal.Decimal):
        return ("dec", format(value.normalize(), "f"))
    if isinstance(value, datetime.datetime):
        # Spark hands back naive times in its session zone, set to UTC below.
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        delta = value - EPOCH
        return ("ts", (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)
    if isinstance(value, (list, tuple)):
        return tuple(canonical(v) for v in value)
    if hasattr(value, "tolist"):  # numpy arrays from some list columns
        return canonical(value.tolist())
    return value


def fingerprint(names, rows):
    """Row count and hash of an object's rows, independent of row and column order."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    lines = sorted(repr(tuple((names[i], canonical(row[i])) for i in order)) for row in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def read_duckdb(paths):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    out = {}
    for p in paths:
        cur = con.execute("SELECT * FROM read_parquet(?, hive_partitioning=false)", [p])
        out[p] = fingerprint([d[0] for d in cur.description], cur.fetchall())
    return out


def read_pyarrow(paths):
    import pyarrow.parquet as pq

    out = {}
    for p in paths:
        t = pq.read_table(p, partitioning=None)
        cols = [t.column(i).to_pylist() for i in range(t.num_columns)]
        out[p] = fingerprint(t.column_names, list(zip(*cols)) if cols else [])
    return out


def read_polars(paths):
    import polars as pl

    out = {}
    for p in paths:
        df = pl.read_parquet(p, hive_partitioning=False)
        out[p] = fingerprint(df.columns, df.rows())
    return out


def read_spark(paths, vectorized):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("eavlake-readers-check")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.enableVectorizedReader", str(vectorized).lower())
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    out = {}
    try:
        for p in paths:
            df = spark.read.parquet(p)
            out[p] = fingerprint(df.columns, [tuple(r) for r in df.collect()])
    finally:
        spark.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lake")
    ap.add_argument("--engines", default="duckdb,pyarrow,polars,spark")
    args = ap.parse_args()
    ensure_venv()
    lake = os.path.abspath(args.lake)
    paths = sorted(
        os.path.join(d, f)
        for kind in ("changes", "current")
        for d, _, files in os.walk(os.path.join(lake, kind))
        for f in files
        if f.endswith(".parquet")
    )
    if not paths:
        sys.exit(f"readers_check: no Parquet objects under {lake}/changes or {lake}/current")
    readers = {
        "duckdb": read_duckdb,
        "pyarrow": read_pyarrow,
        "polars": read_polars,
        "spark (vectorized)": lambda ps: read_spark(ps, True),
        "spark (row reader)": lambda ps: read_spark(ps, False),
    }
    wanted = args.engines.split(",")
    readers = {name: f for name, f in readers.items() if name.split(" ")[0] in wanted}
    if "duckdb" not in readers:
        sys.exit("readers_check: duckdb is the reference and must be among --engines")
    seen, failed = {}, False
    for name, read in readers.items():
        try:
            seen[name] = read(paths)
        except Exception as e:  # an engine that cannot read the lake is the finding
            print(f"{name:20} FAILED: {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
            failed = True
            if name == "duckdb":
                sys.exit("readers_check: the reference could not read the lake")
            continue
        rows = sum(n for n, _ in seen[name].values())
        differ = [p for p in paths if seen[name][p] != seen["duckdb"][p]]
        verdict = "same rows as duckdb" if not differ else f"DIFFERS in {len(differ)} objects, e.g. {differ[0]}"
        print(f"{name:20} {len(paths)} objects, {rows} rows: {verdict}", flush=True)
        failed |= bool(differ)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
