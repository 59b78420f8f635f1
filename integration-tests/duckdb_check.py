"""Reads a lake's current state with DuckDB, the way an analyst would, and compares it value for
value with the expected state written by `eavlake generate --truth`.

    python3 integration-tests/duckdb_check.py <lake dir> <truth.jsonl>

Proves that the lake is readable by an engine other than eavlake itself:
read_parquet('<lake>/current/<type>/**/*.parquet', hive_partitioning=true, union_by_name=true),
with decimals as DECIMAL(38,9), timestamps as TIMESTAMP WITH TIME ZONE, and each entity once.
Exits 1 on any difference.
"""
import datetime
import decimal

# Decimal(38, 9) values need more than the default 28 digits to quantize.
decimal.getcontext().prec = 60
import json
import os
import sys

import duckdb


def expected_state(path):
    state = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            state[(row["entity_type"], row["tenant_id"], row["entity_id"])] = row["attributes"]
    return state


def to_truth_form(value, column_type):
    """DuckDB's Python value in the form the truth file uses."""
    if value is None:
        return None
    if isinstance(value, decimal.Decimal):
        return format(value.quantize(decimal.Decimal("0.000000001")), "f")
    if isinstance(value, datetime.datetime):
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        delta = value - epoch
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return value


def main():
    lake, truth_path = sys.argv[1], sys.argv[2]
    expected = expected_state(truth_path)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    actual = {}
    current = os.path.join(lake, "current")
    for entity_type in sorted(os.listdir(current)):
        glob = os.path.join(current, entity_type, "**", "*.parquet")
        rel = con.sql(
            f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)"
        )
        names = rel.columns
        types = [str(t) for t in rel.types]
        for row in rel.fetchall():
            record = dict(zip(names, row))
            key = (entity_type, int(record["tenant_id"]), int(record["entity_id"]))
            if key in actual:
                print(f"entity {key} appears twice in current/")
                return 1
            attrs = {}
            for name, column_type in zip(names, types):
                if name in ("tenant_id", "entity_id") or name.startswith("_"):
                    continue
                value = to_truth_form(record[name], column_type)
                if value is not None:
                    attrs[name] = value
            actual[key] = attrs
        print(f"{entity_type}: {sum(1 for k in actual if k[0] == entity_type)} entities, columns {types[:4]}…")
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    if missing or extra:
        print(f"missing in lake: {missing[:5]} ({len(missing)}); extra in lake: {extra[:5]} ({len(extra)})")
        return 1
    differences = 0
    for key, want in expected.items():
        got = actual[key]
        for name in set(want) | set(got):
            w, g = want.get(name), got.get(name)
            # JSON attributes are JSON text in Parquet.
            if isinstance(w, (dict, list)) and isinstance(g, str):
                g = json.loads(g)
            if w != g:
                differences += 1
                if differences <= 5:
                    print(f"{key} {name}: expected {w!r}, DuckDB read {g!r}")
    if differences:
        print(f"{differences} values differ")
        return 1
    print(f"DuckDB reads {len(actual)} entities, all equal to the expected state")
    return 0


if __name__ == "__main__":
    sys.exit(main())
