//! What a run did, counted: records read, changes applied, duplicates dropped, dead letters by
//! reason, rows, files and bytes written. The run prints it at the end; the Prometheus exporter
//! of the worker reads the same counters.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct RunStats {
    /// Records read from the source (all kinds).
    pub records: u64,
    /// Row changes of the EAV tables that were applied.
    pub changes: u64,
    /// Catalog (attributes) changes applied.
    pub catalog_changes: u64,
    /// Changes dropped as Debezium re-sends.
    pub duplicates: u64,
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
        self.duplicates += o.duplicates;
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

    pub fn count_dead_letter(&mut self, reason: &'static str) {
        *self.dead_letters.entry(reason).or_default() += 1;
    }
}
