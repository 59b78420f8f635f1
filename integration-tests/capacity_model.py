"""Capacity model of eavlake for a large EAV store (default: 200M entities x 50 attributes).

    python3 integration-tests/capacity_model.py [--entities 200000000] [--attributes 50]
        [--changes-per-second 10000] [--peak-factor 5] [--tenants 500] [--entity-types 5]
        [--flush-age-s 10] [--max-rows 100000] [--compactions-per-day 24] [--json]

Prints its inputs (measured on this project's machine, with where each comes from), its
assumptions, and the sizing: Kafka partitions, workers, memory per worker, Parquet files and
bytes per day, object-store requests per day (PUT/GET/LIST), compaction and reconciliation time.
Python 3 standard library only. Every measured constant below names the command that measures
it; rerun those and pass the new figures (--measured-* flags) to recalibrate.
"""
import argparse
import json
import math

# Measured here (2 shared cores; see docs/operations.md, "Where the figures come from").
MEASURED = {
    # `eavlake generate --events 1000000` + `/usr/bin/time -v eavlake run --source file:...`
    # (config/file-run.toml, compaction included), median of 3 runs, load 8-9:
    # 1,347,204 records (1M change events) in 3.59 CPU-s, peak RSS 84 MiB.
    "file_run_records_per_cpu_s": 1_347_204 / 3.59,
    "file_run_peak_rss_mib": 84,
    # The same lake: 1M change events -> 359,478 change rows (one per entity per transaction)
    # holding 1,149,367 changed cells, 16,264,152 bytes of Parquet in changes/.
    "change_events_per_change_row": 1_000_000 / 359_478,
    "changes_bytes_per_changed_cell": 16_264_152 / 1_149_367,
    "changes_bytes_per_row": 16_264_152 / 359_478,
    # current/: 65,302 live entities, 571,549 non-null cells, 5,379,561 bytes.
    "current_bytes_per_cell": 5_379_561 / 571_549,
    # `eavlake compact` alone on that lake: 0.59 CPU-s for 571,549 current cells written and
    # 1,149,367 changed cells applied; peak RSS 41 MiB.
    "compact_cells_per_cpu_s": (571_549 + 1_149_367) / 0.59,
    # Debezium JSON record size of the workload (874 MB for 1,347,204 records).
    "record_bytes": 875_333_922 / 1_347_204,
    # `EAVLAKE_BENCH_MODE=scale EAVLAKE_BENCH_RUNS=5 cargo bench --bench kafka_worker`: a
    # backlog of 1,122,695 records over 8 partitions, medians of 5 runs alternating 1 and 2
    # worker processes (load 7-11 on the 2 shared cores): records/s to durable, CPU-µs per
    # record of all workers together, peak RSS per worker; then keeping up with 20K records/s
    # with a 1 s flush age (peak RSS per worker).
    "kafka_1_worker_records_per_s": 44_203,
    "kafka_2_workers_records_per_s": 103_726,
    "kafka_worker_cpu_us_per_record_1": 16.74,
    "kafka_worker_cpu_us_per_record_2": 10.80,
    "kafka_worker_peak_rss_backlog_mib": 153,
    "kafka_worker_peak_rss_live_mib": 97,
    # `cargo bench --bench reconcile` (README): 1M entities x 10 attributes, clean, 8.89 s,
    # 274 MiB peak, one process with 4 Postgres queries at once.
    "reconcile_cells_per_s": 10_000_000 / 8.89,
    "reconcile_peak_rss_mib": 274,
}

# Defaults of the configuration (README, "Configuration") the model depends on.
CONFIG = {
    "batch.max_rows": 100_000,  # default of --max-rows
    "batch.max_bytes_mib": 32,
    "batch.max_buffered_bytes_mib": 256,
    "librdkafka_prefetch_mib": 16,
    "lake.range_size": 100_000,
    "metrics.lag_interval_s": 5,
}


def distinct(draws, keys):
    """Expected distinct keys among `draws` uniform draws of `keys` keys."""
    if keys <= 0:
        return 0.0
    return keys * (1.0 - math.exp(-draws / keys))


def model(a):
    m = MEASURED
    day = 86_400
    avg_rps = a.changes_per_second
    peak_rps = avg_rps * a.peak_factor
    records_per_day = avg_rps * day

    # Workers: the worse of the two measured CPU costs per record (1 worker holding 8
    # partitions cost more per record than 2 holding 4 each), at a target utilisation so that
    # a worker catches up after an outage.
    cpu_us = max(m["kafka_worker_cpu_us_per_record_1"], m["kafka_worker_cpu_us_per_record_2"])
    records_per_core_s = 1e6 / cpu_us
    cores_peak = peak_rps / records_per_core_s / a.target_utilisation
    workers_peak = max(2, math.ceil(cores_peak / a.cores_per_worker))
    # Partitions: enough for the most workers ever wanted (the peak plus catch-up headroom: a
    # partition is read by one worker only), and for the broker's per-partition throughput.
    bytes_peak = peak_rps * m["record_bytes"]
    partitions = max(
        2 * workers_peak,
        math.ceil(bytes_peak / (a.partition_mb_per_s * 1e6)),
        a.min_partitions,
    )
    partitions = 2 ** math.ceil(math.log2(partitions))
    partitions_per_worker = math.ceil(partitions / workers_peak)

    # Flushes: per partition, by age unless the row or byte limit comes first.
    per_partition_rps = avg_rps / partitions
    rows_per_flush = per_partition_rps * a.flush_age_s
    flush_s = a.flush_age_s
    if rows_per_flush > a.max_rows:
        flush_s = a.max_rows / per_partition_rps
        rows_per_flush = a.max_rows
    flushes_per_day = partitions * day / flush_s
    keys = a.tenants * a.entity_types
    # One change file per (entity type, tenant, date) a flush holds rows of (tenants uniform:
    # a skewed distribution has fewer, larger files).
    change_rows_per_flush = rows_per_flush / m["change_events_per_change_row"]
    files_per_flush = distinct(change_rows_per_flush, keys)
    change_files_per_day = flushes_per_day * files_per_flush
    change_rows_per_day = records_per_day / m["change_events_per_change_row"]
    cells_per_change_row = m["changes_bytes_per_row"] / m["changes_bytes_per_changed_cell"]
    change_bytes_per_day = change_rows_per_day * m["changes_bytes_per_row"]
    bytes_per_change_file = change_bytes_per_day / change_files_per_day

    # Memory: what a worker buffers between flushes, bounded by batch.max_buffered_bytes.
    in_memory_bytes_per_record = a.in_memory_bytes_per_record
    buffered_mib = min(
        CONFIG["batch.max_buffered_bytes_mib"],
        partitions_per_worker * rows_per_flush * in_memory_bytes_per_record / 2**20,
    )
    worker_rss_mib = m["kafka_worker_peak_rss_live_mib"] + buffered_mib + CONFIG["librdkafka_prefetch_mib"]
    worker_limit_mib = m["kafka_worker_peak_rss_backlog_mib"] + CONFIG["batch.max_buffered_bytes_mib"] + \
        CONFIG["librdkafka_prefetch_mib"]

    # Current state.
    cells = a.entities * a.attributes * a.fill
    current_bytes = cells * m["current_bytes_per_cell"]
    ranges_per_tenant_type = max(1, math.ceil(a.entities / keys / CONFIG["lake.range_size"]))
    # Entity ids are global: a tenant's entities spread over the id space, so a (type, tenant)
    # has objects in up to every range holding its ids; the model takes dense per-tenant ids.
    current_objects = keys * ranges_per_tenant_type
    # Share of the ranges touched between two compactions (updates uniform over entities).
    changes_per_compaction = change_rows_per_day / a.compactions_per_day
    entities_per_range = a.entities / current_objects
    touched_ranges = current_objects * (1 - math.exp(-changes_per_compaction / current_objects))
    rewritten_cells = touched_ranges * entities_per_range * a.attributes * a.fill
    applied_cells = changes_per_compaction * cells_per_change_row
    compaction_cpu_s = (rewritten_cells + applied_cells) / m["compact_cells_per_cpu_s"]
    change_files_per_compaction = change_files_per_day / a.compactions_per_day

    # Object-store requests per day.
    # Worker: per flush, 2 conditional PUTs of the progress record (intent, then done) and one
    # PUT per change file; the reconcile outcome is read every lag interval by every worker.
    put_worker = flushes_per_day * (2 + files_per_flush)
    get_worker = workers_peak * day / CONFIG["metrics.lag_interval_s"] + flushes_per_day  # + the CAS read
    # Compaction: per (type, tenant) one LIST of its changes (1000 keys a page) and of its
    # current objects, a GET of its marks; each new change file read once; each touched
    # current object read twice (plan, fold) and written once.
    pages = lambda n: max(1, math.ceil(n / 1000))
    total_change_files_kept = change_files_per_day * a.retention_days
    list_compaction = a.compactions_per_day * keys * (
        pages(total_change_files_kept / keys) + pages(current_objects / keys))
    get_compaction = a.compactions_per_day * (keys + change_files_per_compaction + 2 * touched_ranges)
    put_compaction = a.compactions_per_day * (touched_ranges + keys)
    # Reconcile, once a day: every current object and the change files newer than it.
    get_reconcile = a.reconciles_per_day * (current_objects + change_files_per_compaction)
    list_reconcile = a.reconciles_per_day * keys * pages(total_change_files_kept / keys)

    reconcile_s = cells / m["reconcile_cells_per_s"]
    return {
        "inputs": {**{k: round(v, 3) for k, v in MEASURED.items()}, **CONFIG},
        "assumptions": vars(a),
        "kafka": {
            "average_records_per_s": avg_rps,
            "peak_records_per_s": peak_rps,
            "peak_mb_per_s": round(bytes_peak / 1e6, 1),
            "partitions": partitions,
            "records_per_day": records_per_day,
        },
        "workers": {
            "cpu_us_per_record": cpu_us,
            "cores_at_peak": round(cores_peak, 2),
            "workers_at_peak": workers_peak,
            "workers_average": max(2, math.ceil(avg_rps / records_per_core_s / a.target_utilisation /
                                                  a.cores_per_worker)),
            "partitions_per_worker_at_peak": partitions_per_worker,
            "memory_per_worker_mib_expected": round(worker_rss_mib),
            "memory_per_worker_mib_limit": worker_limit_mib,
        },
        "lake_per_day": {
            "flushes": round(flushes_per_day),
            "seconds_between_flushes_per_partition": round(flush_s, 1),
            "change_files": round(change_files_per_day),
            "change_rows": round(change_rows_per_day),
            "change_bytes_gb": round(change_bytes_per_day / 1e9, 2),
            "mean_change_file_kib": round(bytes_per_change_file / 1024, 1),
        },
        "current_state": {
            "cells": cells,
            "bytes_gb": round(current_bytes / 1e9, 1),
            "objects": current_objects,
            "mean_object_mib": round(current_bytes / current_objects / 2**20, 1),
        },
        "compaction": {
            "runs_per_day": a.compactions_per_day,
            "ranges_touched_per_run": round(touched_ranges),
            "cpu_s_per_run": round(compaction_cpu_s),
            "wall_s_per_run_with_shards": round(compaction_cpu_s / a.compaction_shards),
            "shards": a.compaction_shards,
        },
        "reconcile": {
            "wall_s_one_process": round(reconcile_s),
            "wall_s_with_shards": round(reconcile_s / a.reconcile_shards),
            "shards": a.reconcile_shards,
            "note": "scaled linearly from 1M x 10 cells; Postgres-bound: shards help while the "
                    "database has cores and I/O to spare",
        },
        "object_store_requests_per_day": {
            "PUT": round(put_worker + put_compaction),
            "GET": round(get_worker + get_compaction + get_reconcile),
            "LIST": round(list_compaction + list_reconcile),
            "PUT_workers": round(put_worker),
            "PUT_compaction": round(put_compaction),
            "GET_workers": round(get_worker),
            "GET_compaction": round(get_compaction),
            "GET_reconcile": round(get_reconcile),
        },
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=200_000_000)
    ap.add_argument("--attributes", type=int, default=50, help="attributes per entity")
    ap.add_argument("--fill", type=float, default=1.0, help="share of attributes set (non-null)")
    ap.add_argument("--changes-per-second", type=float, default=10_000,
                    help="average Debezium records per second (assumed: PRODUCT.md gives no rate)")
    ap.add_argument("--peak-factor", type=float, default=5, help="peak / average rate")
    ap.add_argument("--tenants", type=int, default=500)
    ap.add_argument("--entity-types", type=int, default=5)
    ap.add_argument("--flush-age-s", type=float, default=10, help="batch.max_age_ms / 1000")
    ap.add_argument("--max-rows", type=int, default=CONFIG["batch.max_rows"], help="batch.max_rows")
    ap.add_argument("--compactions-per-day", type=int, default=24)
    ap.add_argument("--compaction-shards", type=int, default=4)
    ap.add_argument("--reconciles-per-day", type=int, default=1)
    ap.add_argument("--reconcile-shards", type=int, default=8)
    ap.add_argument("--retention-days", type=int, default=30, help="days of changes/ kept (listed)")
    ap.add_argument("--target-utilisation", type=float, default=0.5,
                    help="share of a worker's CPU used at peak (the rest: catching up)")
    ap.add_argument("--cores-per-worker", type=float, default=1.0)
    ap.add_argument("--partition-mb-per-s", type=float, default=5.0, help="broker throughput per partition")
    ap.add_argument("--min-partitions", type=int, default=8)
    ap.add_argument("--in-memory-bytes-per-record", type=float, default=300,
                    help="pivoted row bytes held per record until a flush")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = model(a)
    if a.json:
        print(json.dumps(out, indent=2))
        return
    for section, values in out.items():
        print(f"[{section}]")
        for k, v in values.items():
            print(f"  {k} = {v}")


if __name__ == "__main__":
    main()
