#!/usr/bin/env python3
"""Seeds the fuzz corpora (corpus/<target>/) from the project's fixtures; `cargo fuzz cmin` then
keeps the inputs that add coverage. Run from the repository root:

    python3 integration-tests/fuzz/seed.py <generated.jsonl> <generated-with-schemas.jsonl> <avro frames dir>

- json_plain: every distinct record shape of integration-tests/fixtures/sample.jsonl and of a
  generated workload (`eavlake generate`, poison lines included), and the records of the JSON
  decoder's tests (src/decode/json/tests.rs).
- json_schema: records of `eavlake generate --with-schemas`.
- avro: Confluent frames encoded by the Avro decoder's tests (one file each).
- catalog: runs of `attributes` records, and a catalog file as the lake saves it.
- file_lines, file_run: windows of consecutive lines of both files (up to 24 KiB each).
"""
import hashlib
import json
import os
import re
import sys

ROOT = os.getcwd()
OUT = os.path.join(ROOT, "integration-tests", "fuzz", "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def shape(line):
    """A record's table, op and the set of its keys: one seed per shape is enough."""
    try:
        v = json.loads(line)
    except ValueError:
        return ("bad", line[:40])
    if not isinstance(v, dict):
        return ("other", str(type(v)))
    p = v.get("payload", v) if isinstance(v.get("payload", v), dict) else v
    src = p.get("source") or {}
    after = p.get("after") or p.get("before") or {}
    hot = after.get("hot_attributes") if isinstance(after, dict) else None
    kinds = tuple(sorted(k for k, x in (after.items() if isinstance(after, dict) else []) if x is not None))
    return (src.get("table"), p.get("op"), p.get("status"), kinds, bool(hot and hot != "{}"))


def lines(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return [l.rstrip("\n") for l in f if l.strip()]


def windows(target, ls, size=24 * 1024, step=7):
    for start in range(0, len(ls), max(1, len(ls) // step)):
        chunk, n = [], 0
        for l in ls[start:]:
            if n + len(l) > size:
                break
            chunk.append(l)
            n += len(l) + 1
        if chunk:
            put(target, "\n".join(chunk) + "\n")


def main():
    generated, with_schemas, avro_dir = sys.argv[1:4]
    sample = lines(os.path.join(ROOT, "integration-tests", "fixtures", "sample.jsonl"))
    plain = lines(generated)
    schemas = lines(with_schemas)
    seen = set()
    for l in sample + plain:
        s = shape(l)
        if s not in seen:
            seen.add(s)
            put("json_plain", l.encode("utf-8", "surrogateescape"))
    tests = open(os.path.join(ROOT, "src", "decode", "json", "tests.rs")).read()
    for m in re.finditer(r'const [A-Z_0-9]+: &str = r#"(\{.*?)"#;', tests, re.S):
        put("json_plain", m.group(1).replace("\n", ""))
    seen = set()
    for l in schemas:
        s = shape(l)
        if s not in seen:
            seen.add(s)
            put("json_schema", l.encode("utf-8", "surrogateescape"))
    for name in sorted(os.listdir(avro_dir)):
        put("avro", open(os.path.join(avro_dir, name), "rb").read())
    attrs = [l for l in sample + plain if '"table":"attributes"' in l]
    for i in range(0, len(attrs), 12):
        put("catalog", "\n".join(attrs[i : i + 12]) + "\n")
    saved = []
    for l in attrs[:12]:
        a = json.loads(l)["after"]
        keys = ["attribute_id", "tenant_id", "entity_type", "name", "data_type", "is_hot"]
        saved.append({k: a[k] for k in keys})
    put("catalog", json.dumps({"format_version": 1, "attributes": saved}))
    for target in ["file_lines", "file_run"]:
        windows(target, sample)
        windows(target, plain)


main()
