//! A generator of realistic Debezium traffic for the reference EAV schema, with its ground truth.
//!
//! It simulates PostgreSQL running an EAV application (`schemas/eav.sql`: `attributes`,
//! `entities` with hot attributes in JSONB, `entity_values` with typed value columns) and the
//! Debezium PostgreSQL connector capturing it (pgoutput, `publish.via.partition.root`, REPLICA
//! IDENTITY FULL, `provide.transaction.metadata=true`, tombstones on delete), and writes the
//! record values as JSON lines, the three tables interleaved in commit order as a file source of
//! eavlake reads them. At the same time it keeps what the database holds, so that the output of
//! eavlake can be checked against it: this is the oracle of the golden test and the input of the
//! benchmarks.
//!
//! Why simulate instead of recording a real Debezium? Determinism (a seed gives the same bytes),
//! speed (millions of events per second, no JVM, no Kafka), and coverage: the traps that matter
//! for exactly-once CDC occur on purpose and in every run, not when a real system happens to
//! produce them:
//! - interleaved concurrent transactions, so that change LSNs go backwards while Debezium's
//!   `(sequence[0], lsn)` position rises strictly;
//! - Debezium restarts that re-send the last events byte for byte (duplicates to drop);
//! - TOAST placeholders standing for unchanged values;
//! - several changes of one row in one transaction, deletes with cascades and tombstones,
//!   logical deletes, attributes added while running;
//! - poison records that must go to dead letters without changing anything.
//!
//! Details follow PostgreSQL and Debezium rather than convenience: `txId`s are assigned when a
//! transaction starts, so the long transaction of an interleaved pair has the smaller one and
//! commits later (txId is not monotonic in commit order); the snapshot marks its records
//! `first`, `first_in_data_collection`, `true`, `last_in_data_collection` and `last` as Debezium
//! 2.x does; `now()` (created_at/updated_at) is the transaction's start time; jsonb keys come
//! out ordered by length, then bytes.
//!
//! The stream is written as it is produced: only live entities are kept in memory (plus the one
//! transaction being written), never the events.
//!
//! Layout: `model` is the simulated database (and so the ground truth), `generator` the traffic
//! and its scheduling into the WAL, `debezium` the record writer, `rng` the seeded PRNG.

mod debezium;
mod generator;
mod model;
pub mod postgres;
pub(crate) mod rng;
#[cfg(test)]
mod tests;

use crate::decode::DataType;
use std::collections::BTreeMap;
use std::io;

/// How the records are serialised (Kafka Connect's JsonConverter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkloadFormat {
    /// `schemas.enable=false`, `decimal.handling.mode=string`: decimals as plain text at the
    /// column scale (`"12.340000000"`).
    #[default]
    Plain,
    /// `schemas.enable=true`: `{"schema":…,"payload":…}` envelopes, `decimal.handling.mode=precise`
    /// (base64 of the unscaled two's-complement bytes, Kafka Connect Decimal with scale 9).
    WithSchemas,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// Change events (`c`/`u`/`d`/`r`) to emit, snapshot included; metadata, heartbeats,
    /// tombstones, re-sends and poison records come on top.
    pub events: u64,
    pub tenants: u32,
    pub seed: u64,
    pub format: WorkloadFormat,
    /// Add records that eavlake must send to dead letters.
    pub poison: bool,
    /// Simulate Debezium restarts that re-send recent events.
    pub resends: bool,
    /// Largest number of entities one bulk-load transaction inserts.
    pub max_bulk: u32,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            events: 10_000,
            tenants: 8,
            seed: 42,
            format: WorkloadFormat::Plain,
            poison: true,
            resends: true,
            max_bulk: 1000,
        }
    }
}

/// An attribute value the lake must show.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    Text(String),
    Int(i64),
    /// Unscaled, scale 9.
    Decimal(i128),
    Bool(bool),
    /// µs since the epoch, UTC.
    Timestamp(i64),
    Json(serde_json::Value),
}

/// What the database holds after the stream, and what eavlake must make of the stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroundTruth {
    /// Live entities after the whole stream: (entity_type, tenant_id, entity_id) -> attribute
    /// name -> value; only non-null values are listed.
    pub current: BTreeMap<(String, i64, i64), BTreeMap<String, Expected>>,
    /// Every attribute of the catalog at the end: (tenant_id, entity_type, name) -> DataType.
    pub catalog: BTreeMap<(i64, String, String), DataType>,
    /// Lines (1-based line numbers of the output) that eavlake must send to dead letters, with
    /// the reason code it must give: `invalid_json`, `not_debezium`, `unknown_attribute`,
    /// `type_mismatch`.
    pub dead_letters: Vec<(u64, &'static str)>,
    /// Lines written.
    pub lines: u64,
    /// Genuine change events written, `spec.events`: neither re-sends nor poison records count.
    pub change_events: u64,
    /// Re-sent change events (Debezium restarts) that must be dropped as duplicates.
    pub duplicates: u64,
    /// Streamed transactions (each framed by BEGIN and END records), the poison ones included.
    pub transactions: u64,
}

/// Generates the workload described by `spec` into `out`, one record value per line (a
/// tombstone is the line `null`), and returns its ground truth. Deterministic for a spec.
pub fn generate(spec: &WorkloadSpec, out: &mut dyn io::Write) -> io::Result<GroundTruth> {
    generator::Generator::new(spec, out).run()
}
