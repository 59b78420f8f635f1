//! The worker's Prometheus metrics: one registry, every family under the `eavlake_` prefix.
//!
//! Contract: the poll thread and the lag task update these as they go (atomic operations, no
//! lock that a scrape could wait on), so `/metrics` answers even while a flush hangs on a slow
//! object store, which is when operators look. Counters that the pipelines keep in
//! [`RunStats`] are published as deltas ([`WorkerMetrics::publish_stats`]). Label sets are
//! small and bounded: topic and partition, entity type, dead-letter reason, store operation.
//!
//! Every family is created at start, and the ones with known labels (dead-letter reasons,
//! store operations, flush outcomes) with a zero series each, so that `increase()` in alert
//! rules sees the first event.

use super::RunStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    entity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: &'static str,
}

type GaugeF = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Object-store operations that `Lake` retries (a fixed set: the label stays bounded).
pub const STORE_OPS: [&str; 5] = ["get", "put", "put_if", "list", "delete"];

/// Retries of object-store requests by operation, counted by the sink wherever it runs (the
/// worker, compaction, the file run); registered into each worker's registry.
static STORE_RETRIES: LazyLock<Family<OpLabels, Counter>> = LazyLock::new(Family::default);

/// Counts one retried object-store request.
pub fn count_store_retry(op: &'static str) {
    STORE_RETRIES.get_or_create(&OpLabels { op }).inc();
}

/// End-to-end latency buckets, seconds: a flush age of 1 s to 10 s is the normal range.
const LATENCY_BUCKETS: [f64; 14] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0];
const FLUSH_BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Parquet object sizes: 4 KiB to 1 GiB by fours.
const FILE_SIZE_BUCKETS: [f64; 10] =
    [4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0, 268435456.0, 1073741824.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric of one worker.
pub struct WorkerMetrics {
    registry: Registry,
    events: Family<KindLabels, Counter>,
    changes: Family<TypeLabels, Counter>,
    rows_written: Family<TypeLabels, Counter>,
    bytes_written: Family<TypeLabels, Counter>,
    files_written: Family<TypeLabels, Counter>,
    file_size: Histogram,
    duplicates: Counter,
    tenant_skipped: Counter,
    purged_rows: Counter,
    dead_letters: Family<ReasonLabels, Counter>,
    flushes: Family<OutcomeLabels, Counter>,
    flush_duration: Histogram,
    latency: HistogramFamily<PartitionLabels>,
    in_flight: Gauge,
    buffered_bytes: Gauge,
    rebalances: Family<KindLabels, Counter>,
    offset_jumps: Family<KindLabels, Counter>,
    assigned: Gauge,
    catalog_attributes: Gauge,
    lag_messages: Family<PartitionLabels, Gauge>,
    lag_seconds: Family<PartitionLabels, GaugeF>,
    high_watermark: Family<PartitionLabels, Gauge>,
    durable_offset: Family<PartitionLabels, Gauge>,
    last_flush: GaugeF,
    reconcile_agree: Gauge,
    reconcile_entities: Family<KindLabels, Gauge>,
    reconcile_finished: GaugeF,
}

/// Kinds counted by `eavlake_kafka_offset_jumps_total{kind}`.
pub const OFFSET_JUMPS: [&str; 2] = ["resumed_past", "went_back"];

/// Flush outcomes counted by `eavlake_flushes_total{outcome}`.
pub const FLUSH_OUTCOMES: [&str; 4] = ["ok", "fenced", "late", "failed"];

impl WorkerMetrics {
    /// A registry with every family; `dead_letter_reasons` get a zero series each.
    pub fn new(dead_letter_reasons: &[&'static str]) -> WorkerMetrics {
        let mut root = Registry::with_prefix("eavlake");
        let r = &mut root;
        let m = WorkerMetrics {
            events: Family::default(),
            changes: Family::default(),
            rows_written: Family::default(),
            bytes_written: Family::default(),
            files_written: Family::default(),
            file_size: Histogram::new(FILE_SIZE_BUCKETS),
            duplicates: Counter::default(),
            tenant_skipped: Counter::default(),
            purged_rows: Counter::default(),
            dead_letters: Family::default(),
            flushes: Family::default(),
            flush_duration: Histogram::new(FLUSH_BUCKETS),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            buffered_bytes: Gauge::default(),
            rebalances: Family::default(),
            offset_jumps: Family::default(),
            assigned: Gauge::default(),
            catalog_attributes: Gauge::default(),
            lag_messages: Family::default(),
            lag_seconds: Family::default(),
            high_watermark: Family::default(),
            durable_offset: Family::default(),
            last_flush: GaugeF::default(),
            reconcile_agree: Gauge::default(),
            reconcile_entities: Family::default(),
            reconcile_finished: GaugeF::default(),
            registry: Registry::default(),
        };
        let info: Family<InfoLabels, Gauge> = Family::default();
        info.get_or_create(&InfoLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        r.register("build_info", "eavlake's version", info);
        r.register("events_decoded", "Records read, by kind (change, catalog, heartbeat, transaction, tombstone, message, other_table, dead_letter)", m.events.clone());
        r.register(
            "changes_applied",
            "Row changes of the EAV tables folded into the lake, by entity type",
            m.changes.clone(),
        );
        r.register("rows_written", "Wide rows written to change objects, by entity type", m.rows_written.clone());
        r.register("bytes_written", "Bytes of Parquet change objects written, by entity type", m.bytes_written.clone());
        r.register("files_written", "Parquet change objects written, by entity type", m.files_written.clone());
        r.register_with_unit(
            "file_size",
            "Size of each Parquet change object written",
            Unit::Bytes,
            m.file_size.clone(),
        );
        r.register("duplicates_dropped", "Changes dropped as Debezium re-sends", m.duplicates.clone());
        r.register(
            "tenant_skipped",
            "Changes of tenants the configuration does not write ([tenants] allow/deny)",
            m.tenant_skipped.clone(),
        );
        r.register(
            "purged_rows_dropped",
            "Change rows not written because their tenant or entity was purged (_eavlake/purges/)",
            m.purged_rows.clone(),
        );
        r.register("dead_letters", "Records sent to the dead-letter topic, by reason", m.dead_letters.clone());
        r.register("flushes", "Partition flushes by outcome (ok, fenced, late, failed)", m.flushes.clone());
        r.register_with_unit(
            "flush_duration",
            "Time the worker waited for a round of flushes",
            Unit::Seconds,
            m.flush_duration.clone(),
        );
        r.register_with_unit(
            "end_to_end_latency",
            "From a change's commit in the source database to its object being durable in the lake",
            Unit::Seconds,
            m.latency.clone(),
        );
        r.register("batches_in_flight", "Partition flushes running now", m.in_flight.clone());
        r.register_with_unit(
            "buffered",
            "Bytes of rows buffered for the next flushes, all partitions",
            Unit::Bytes,
            m.buffered_bytes.clone(),
        );
        r.register("rebalances", "Partitions assigned to and revoked from this worker", m.rebalances.clone());
        r.register(
            "kafka_offset_jumps",
            "Partitions Kafka started past the lake's record (resumed_past: records deleted before the lake read them) or went back below it by itself (went_back: an offset reset, a truncated log, a topic recreated under its name); either way records may be missing from the lake",
            m.offset_jumps.clone(),
        );
        r.register("assigned_partitions", "Partitions this worker consumes now", m.assigned.clone());
        r.register("catalog_attributes", "Attributes in the worker's catalog", m.catalog_attributes.clone());
        r.register(
            "consumer_lag_messages",
            "High watermark minus the lake's next offset, per partition",
            m.lag_messages.clone(),
        );
        r.register_with_unit(
            "consumer_lag",
            "How far behind the lake is, per partition: 0 when caught up, else the age of the oldest record not yet durable (the last durable change's source commit time when that record was not fetched yet)",
            Unit::Seconds,
            m.lag_seconds.clone(),
        );
        r.register("high_watermark", "The broker's high watermark, per partition", m.high_watermark.clone());
        r.register(
            "durable_offset",
            "Next offset of each partition after what the lake holds",
            m.durable_offset.clone(),
        );
        r.register_with_unit(
            "last_flush_timestamp",
            "Unix time of the last successful flush",
            Unit::Seconds,
            m.last_flush.clone(),
        );
        r.register("object_store_retries", "Object-store requests retried, by operation", STORE_RETRIES.clone());
        r.register(
            "reconcile_agree",
            "1 when the last `eavlake reconcile` found the lake equal to Postgres, 0 on drift (absent before any)",
            m.reconcile_agree.clone(),
        );
        r.register(
            "reconcile_entities",
            "Entities the last `eavlake reconcile` found missing_in_lake, extra_in_lake, different, or only lagging",
            m.reconcile_entities.clone(),
        );
        r.register_with_unit(
            "reconcile_last_run_timestamp",
            "When the last `eavlake reconcile` ended",
            Unit::Seconds,
            m.reconcile_finished.clone(),
        );
        for reason in dead_letter_reasons {
            let _ = m.dead_letters.get_or_create(&ReasonLabels { reason });
        }
        for op in STORE_OPS {
            let _ = STORE_RETRIES.get_or_create(&OpLabels { op });
        }
        for outcome in FLUSH_OUTCOMES {
            let _ = m.flushes.get_or_create(&OutcomeLabels { outcome });
        }
        for kind in ["assigned", "revoked"] {
            let _ = m.rebalances.get_or_create(&KindLabels { kind });
        }
        for kind in OFFSET_JUMPS {
            let _ = m.offset_jumps.get_or_create(&KindLabels { kind });
        }
        WorkerMetrics { registry: root, ..m }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Publishes what a pipeline counted since `published`, then remembers `now` as published.
    pub fn publish_stats(&self, now: &RunStats, published: &mut RunStats) {
        let delta = |a: u64, b: u64| a.saturating_sub(b);
        let p = &*published;
        for (kind, n, before) in [
            ("change", now.changes, p.changes),
            ("catalog", now.catalog_changes, p.catalog_changes),
            ("heartbeat", now.heartbeats, p.heartbeats),
            ("transaction", now.transaction_markers, p.transaction_markers),
            ("tombstone", now.tombstones, p.tombstones),
            ("message", now.messages, p.messages),
            ("other_table", now.other_tables, p.other_tables),
            ("dead_letter", now.dead_letter_total(), p.dead_letter_total()),
            ("duplicate", now.duplicates, p.duplicates),
        ] {
            if n > before {
                self.events.get_or_create(&KindLabels { kind }).inc_by(delta(n, before));
            }
        }
        self.duplicates.inc_by(delta(now.duplicates, p.duplicates));
        self.tenant_skipped.inc_by(delta(now.tenant_skipped, p.tenant_skipped));
        self.purged_rows.inc_by(delta(now.purged_rows_dropped, p.purged_rows_dropped));
        for (reason, n) in &now.dead_letters {
            let before = p.dead_letters.get(reason).copied().unwrap_or(0);
            if *n > before {
                self.dead_letters.get_or_create(&ReasonLabels { reason }).inc_by(n - before);
            }
        }
        for (ty, n) in &now.changes_by_type {
            let before = p.changes_by_type.get(ty).copied().unwrap_or(0);
            if *n > before {
                self.changes.get_or_create(&TypeLabels { entity_type: ty.to_string() }).inc_by(n - before);
            }
        }
        published.clone_from(now);
    }

    /// Counts one Parquet change object written.
    pub fn file_written(&self, entity_type: &str, rows: usize, bytes: usize) {
        let l = TypeLabels { entity_type: entity_type.to_string() };
        self.rows_written.get_or_create(&l).inc_by(rows as u64);
        self.bytes_written.get_or_create(&l).inc_by(bytes as u64);
        self.files_written.get_or_create(&l).inc();
        self.file_size.observe(bytes as f64);
    }

    pub fn flush_outcome(&self, outcome: &'static str) {
        self.flushes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn flush_round(&self, seconds: f64) {
        self.flush_duration.observe(seconds);
    }

    pub fn set_in_flight(&self, n: i64) {
        self.in_flight.set(n);
    }

    pub fn flushed_at(&self, unix_seconds: f64) {
        self.last_flush.set(unix_seconds);
    }

    /// `n` changes of one partition committed at the source `seconds` before they became durable.
    pub fn latency(&self, partition: &PartitionLabels, seconds: f64, n: u64) {
        let h = self.latency.get_or_create(partition);
        for _ in 0..n {
            h.observe(seconds);
        }
    }

    pub fn set_buffered(&self, bytes: usize) {
        self.buffered_bytes.set(bytes as i64);
    }

    /// Kafka started a partition past the lake's record, or went back below it (see
    /// [`OFFSET_JUMPS`]).
    pub fn offset_jump(&self, kind: &'static str) {
        self.offset_jumps.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn rebalance(&self, kind: &'static str, assigned_now: usize) {
        self.rebalances.get_or_create(&KindLabels { kind }).inc();
        self.assigned.set(assigned_now as i64);
    }

    pub fn set_catalog_attributes(&self, n: usize) {
        self.catalog_attributes.set(n as i64);
    }

    /// Sets a partition's lag figures: the broker's high watermark, the offset after what the
    /// lake holds, and the lag in seconds.
    pub fn set_lag(&self, p: &PartitionLabels, high_watermark: i64, durable_next: i64, seconds: f64) {
        self.high_watermark.get_or_create(p).set(high_watermark);
        self.durable_offset.get_or_create(p).set(durable_next);
        self.lag_messages.get_or_create(p).set((high_watermark - durable_next).max(0));
        self.lag_seconds.get_or_create(p).set(seconds);
    }

    /// Publishes the last reconcile's outcome (read from the lake).
    pub fn set_reconcile(&self, r: &super::ReconcileSummary) {
        self.reconcile_agree.set(i64::from(r.status == "agree"));
        for (kind, n) in [
            ("missing_in_lake", r.missing_in_lake),
            ("extra_in_lake", r.extra_in_lake),
            ("different", r.different),
            ("lag", r.lag),
        ] {
            self.reconcile_entities.get_or_create(&KindLabels { kind }).set(n as i64);
        }
        self.reconcile_finished.set(r.finished_ms as f64 / 1000.0);
    }

    /// Drops a partition's series when the worker gives it up (another worker reports it now).
    pub fn forget_partition(&self, p: &PartitionLabels) {
        self.high_watermark.remove(p);
        self.durable_offset.remove(p);
        self.lag_messages.remove(p);
        self.lag_seconds.remove(p);
        self.latency.remove(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_published_as_deltas() {
        let m = WorkerMetrics::new(&["invalid_json", "truncate"]);
        let mut published = RunStats::default();
        let mut now = RunStats { duplicates: 2, ..Default::default() };
        now.count_dead_letter("invalid_json");
        now.count_change("orders");
        now.count_change("orders");
        m.publish_stats(&now, &mut published);
        now.count_change("customers");
        m.publish_stats(&now, &mut published);
        m.publish_stats(&now, &mut published);
        m.file_written("orders", 10, 5000);
        let text = m.encode();
        for line in [
            "eavlake_events_decoded_total{kind=\"change\"} 3",
            "eavlake_duplicates_dropped_total 2",
            "eavlake_dead_letters_total{reason=\"invalid_json\"} 1",
            "eavlake_dead_letters_total{reason=\"truncate\"} 0",
            "eavlake_changes_applied_total{entity_type=\"orders\"} 2",
            "eavlake_changes_applied_total{entity_type=\"customers\"} 1",
            "eavlake_rows_written_total{entity_type=\"orders\"} 10",
            "eavlake_bytes_written_total{entity_type=\"orders\"} 5000",
            "eavlake_file_size_bytes_count 1",
            "eavlake_object_store_retries_total{op=\"put_if\"}",
            "eavlake_flushes_total{outcome=\"late\"} 0",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }

    #[test]
    fn offset_jumps_are_counted_from_zero() {
        let m = WorkerMetrics::new(&[]);
        let text = m.encode();
        assert!(text.contains("eavlake_kafka_offset_jumps_total{kind=\"resumed_past\"} 0"), "{text}");
        assert!(text.contains("eavlake_kafka_offset_jumps_total{kind=\"went_back\"} 0"), "{text}");
        m.offset_jump("went_back");
        assert!(m.encode().contains("eavlake_kafka_offset_jumps_total{kind=\"went_back\"} 1"));
    }

    #[test]
    fn partition_series_go_with_the_partition() {
        let m = WorkerMetrics::new(&[]);
        let p = PartitionLabels { topic: "t".into(), partition: 3 };
        m.set_lag(&p, 120, 100, 4.5);
        m.latency(&p, 0.7, 3);
        let text = m.encode();
        assert!(text.contains("eavlake_consumer_lag_messages{topic=\"t\",partition=\"3\"} 20"), "{text}");
        assert!(text.contains("eavlake_consumer_lag_seconds{topic=\"t\",partition=\"3\"} 4.5"), "{text}");
        assert!(text.contains("eavlake_end_to_end_latency_seconds_count{topic=\"t\",partition=\"3\"} 3"), "{text}");
        m.forget_partition(&p);
        assert!(!m.encode().contains("partition=\"3\""));
    }
}
