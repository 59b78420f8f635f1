//! What a run did, counted: records read, changes applied, duplicates dropped, dead letters by
//! reason, rows, files and bytes written. The run prints it at the end; the Prometheus exporter
//! of the worker reads the same counters.

pub mod http;
pub mod prom;

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The outcome of the last `eavlake reconcile`, kept in the lake (`_eavlake/reconcile/last.json`)
/// so that every worker exports it (`eavlake_reconcile_*`) without a push gateway.
#[derive(Debug, Default, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReconcileSummary {
    /// Unix ms when the run ended.
    pub finished_ms: i64,
    /// `agree` or `drift`.
    pub status: String,
    pub missing_in_lake: u64,
    pub extra_in_lake: u64,
    pub different: u64,
    pub lag: u64,
    /// Limited by --tenant, --entity-type or --entity-range.
    pub scoped: bool,
    /// Which part: `tenant=…,entity_type=…,entity_range=LO..HI` (those given); empty for the
    /// whole lake.
    #[serde(default)]
    pub scope: String,
}

impl ReconcileSummary {
    /// Where the whole lake's outcome is kept, under the lake's `_eavlake/`.
    pub const OBJECT: &'static str = "reconcile/last.json";
    /// Where all outcomes are kept: the whole lake's and, under `scoped/`, one per scope.
    pub const PREFIX: &'static str = "reconcile";

    /// Where this outcome is kept under `_eavlake/`: scoped runs each in an object named by
    /// their scope, so that runs of different scopes side by side keep each other's outcome (a
    /// run of the same scope replaces it).
    pub fn object(&self) -> String {
        if self.scope.is_empty() {
            return Self::OBJECT.to_string();
        }
        let name: String =
            self.scope.chars().map(|c| if c.is_ascii_alphanumeric() || "=-_.".contains(c) { c } else { '_' }).collect();
        format!("{}/scoped/{name}.json", Self::PREFIX)
    }

    /// What the workers export from every kept outcome: the latest whole-lake run and the
    /// scoped runs that ended after it (older ones are superseded by it). Drift if any of those
    /// saw drift; counts summed (scopes may overlap, so an upper bound); the newest end time.
    pub fn fold(all: Vec<ReconcileSummary>) -> Option<ReconcileSummary> {
        let whole_since = all.iter().filter(|s| s.scope.is_empty()).map(|s| s.finished_ms).max().unwrap_or(i64::MIN);
        let live: Vec<&ReconcileSummary> = all
            .iter()
            .filter(|s| if s.scope.is_empty() { s.finished_ms == whole_since } else { s.finished_ms > whole_since })
            .collect();
        let first = live.first()?;
        let mut out = ReconcileSummary {
            status: "agree".into(),
            scoped: live.iter().all(|s| s.scoped),
            scope: if live.len() == 1 { first.scope.clone() } else { String::new() },
            ..Default::default()
        };
        for s in live {
            out.finished_ms = out.finished_ms.max(s.finished_ms);
            if s.status != "agree" {
                out.status = s.status.clone();
            }
            out.missing_in_lake += s.missing_in_lake;
            out.extra_in_lake += s.extra_in_lake;
            out.different += s.different;
            out.lag += s.lag;
        }
        Some(out)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct RunStats {
    /// Records read from the source (all kinds).
    pub records: u64,
    /// Row changes of the EAV tables that were applied.
    pub changes: u64,
    /// Catalog (attributes) changes applied.
    pub catalog_changes: u64,
    /// Row changes applied, by entity type.
    pub changes_by_type: BTreeMap<Arc<str>, u64>,
    /// Changes dropped as Debezium re-sends.
    pub duplicates: u64,
    /// Changes of tenants the configuration does not write (`[tenants]`), skipped on purpose.
    pub tenant_skipped: u64,
    /// Change rows not written because their tenant or entity was purged (`_eavlake/purges/`).
    pub purged_rows_dropped: u64,
    /// Dead letters by reason code.
    pub dead_letters: BTreeMap<&'static str, u64>,
    pub heartbeats: u64,
    pub transaction_markers: u64,
    pub tombstones: u64,
    pub messages: u64,
    /// Changes of tables eavlake does not read.
    pub other_tables: u64,
    pub rows_written: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub flushes: u64,
}

impl RunStats {
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }

    /// Adds another stream's counts (a worker sums its partitions).
    pub fn add(&mut self, o: &RunStats) {
        self.records += o.records;
        self.changes += o.changes;
        self.catalog_changes += o.catalog_changes;
        for (ty, n) in &o.changes_by_type {
            *self.changes_by_type.entry(ty.clone()).or_default() += n;
        }
        self.duplicates += o.duplicates;
        self.tenant_skipped += o.tenant_skipped;
        self.purged_rows_dropped += o.purged_rows_dropped;
        for (reason, n) in &o.dead_letters {
            *self.dead_letters.entry(reason).or_default() += n;
        }
        self.heartbeats += o.heartbeats;
        self.transaction_markers += o.transaction_markers;
        self.tombstones += o.tombstones;
        self.messages += o.messages;
        self.other_tables += o.other_tables;
        self.rows_written += o.rows_written;
        self.files_written += o.files_written;
        self.bytes_written += o.bytes_written;
        self.flushes += o.flushes;
    }

    /// Counts one applied change, of an entity type or (`None`) of the catalog.
    pub fn count_applied(&mut self, entity_type: Option<&str>) {
        match entity_type {
            Some(ty) => self.count_change(ty),
            None => self.changes += 1,
        }
    }

    /// Counts one applied change of an entity type.
    pub fn count_change(&mut self, entity_type: &str) {
        self.changes += 1;
        match self.changes_by_type.get_mut(entity_type) {
            Some(n) => *n += 1,
            None => {
                self.changes_by_type.insert(entity_type.into(), 1);
            }
        }
    }

    pub fn count_dead_letter(&mut self, reason: &'static str) {
        *self.dead_letters.entry(reason).or_default() += 1;
    }
}

/// Times from a record's Kafka timestamp to its object being durable, in milliseconds: exact
/// below 60 s (one bucket per ms), counted above.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    over: u64,
    max_ms: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: vec![0; 60_000], over: 0, max_ms: 0 }
    }
}

/// A histogram's summary, as reports print it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl LatencyHistogram {
    pub fn record(&mut self, ms: i64) {
        let ms = ms.max(0) as u64;
        match self.buckets.get_mut(ms as usize) {
            Some(b) => *b += 1,
            None => self.over += 1,
        }
        self.max_ms = self.max_ms.max(ms);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum::<u64>() + self.over
    }

    /// The smallest latency at or under which a share `q` of the records fall.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return ms as u64;
            }
        }
        self.max_ms
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50_ms: self.quantile(0.5),
            p99_ms: self.quantile(0.99),
            max_ms: self.max_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_reconcile_outcomes_are_kept_apart_and_folded() {
        let run = |scope: &str, finished_ms, status: &str, missing| ReconcileSummary {
            finished_ms,
            status: status.into(),
            missing_in_lake: missing,
            scoped: !scope.is_empty(),
            scope: scope.into(),
            ..Default::default()
        };
        assert_eq!(run("", 1, "agree", 0).object(), "reconcile/last.json");
        assert_eq!(
            run("tenant=3,entity_range=0..100", 1, "agree", 0).object(),
            "reconcile/scoped/tenant=3_entity_range=0..100.json"
        );
        assert_eq!(ReconcileSummary::fold(vec![]), None);
        // Two shards after a clean whole-lake run: one drifted, so the lake did.
        let folded = ReconcileSummary::fold(vec![
            run("", 10, "agree", 0),
            run("tenant=1", 20, "drift", 2),
            run("tenant=2", 21, "agree", 0),
        ])
        .unwrap();
        assert_eq!((folded.status.as_str(), folded.missing_in_lake, folded.finished_ms), ("drift", 2, 21));
        // A whole-lake run supersedes the older scoped runs.
        let folded = ReconcileSummary::fold(vec![run("tenant=1", 20, "drift", 2), run("", 30, "agree", 0)]).unwrap();
        assert_eq!((folded.status.as_str(), folded.missing_in_lake, folded.scoped), ("agree", 0, false));
        let only = ReconcileSummary::fold(vec![run("tenant=1", 20, "drift", 2)]).unwrap();
        assert_eq!((only.scope.as_str(), only.scoped), ("tenant=1", true));
    }

    #[test]
    fn latency_quantiles() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(ms);
        }
        h.record(-3); // clocks a little apart count as 0
        h.record(90_000);
        let s = h.summary();
        assert_eq!((s.count, s.p50_ms, s.p99_ms, s.max_ms), (102, 50, 100, 90_000));
        assert_eq!(LatencyHistogram::default().summary(), LatencySummary::default());
    }
}
