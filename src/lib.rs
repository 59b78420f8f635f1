//! eavlake: Debezium change events of a PostgreSQL EAV store → wide, typed Parquet lake.
//!
//! # Layout
//! Data flows one way, top to bottom; no module reaches back up.
//! - [`config`]: the typed TOML configuration, checked at start.
//! - [`secret`]: secrets and URLs with passwords, redacted wherever they are printed.
//! - [`pg`]: PostgreSQL connection strings with libpq's TLS modes (reconcile, catalog bootstrap,
//!   workload driver).
//! - [`limits`]: what one record may hold (size, attributes per row, JSONB depth and size).
//! - [`position`]: LSNs, commit positions and stream positions, the orders everything uses.
//! - [`source`]: where records come from (a file of Debezium JSON values; Kafka).
//! - [`decode`]: Debezium records (JSON with and without schemas, Avro + schema registry) →
//!   typed [`decode::Event`]s of the three EAV tables.
//! - [`dedup`]: drops Debezium's re-sends by commit position.
//! - [`catalog`]: the attribute catalog that types the columns.
//! - [`tenancy`]: tenant isolation: the allowed tenants, and each entity's tenant remembered.
//! - [`pivot`]: narrow EAV changes → one wide row per entity per transaction → Arrow batches.
//! - [`columns`]: the lake's column names, types and metadata, shared by writers and readers.
//! - [`sink`]: the lake on an object store: layout, Parquet encoding, durable puts.
//! - [`dead_letter`]: unusable records, kept byte for byte with why and where.
//! - [`progress`]: per-stream progress stored in the lake, the basis of exactly-once.
//! - [`purge`]: `eavlake purge`: a tenant's (or some entities') rows removed from every object,
//!   and the markers that keep flushes and compaction from writing them again.
//! - [`pipeline`]: one stream through all of the above, flushes included.
//! - [`compact`]: change rows → the current state per entity type, tenant and id range.
//! - [`metrics`]: what a run did, counted; the worker's Prometheus metrics and HTTP endpoints.
//! - [`reconcile`]: `eavlake reconcile`, the lake checked against the live EAV store in Postgres.
//! - [`lag`]: how far behind the lake is per partition (the lag metrics, `eavlake lag`).
//! - [`run`]: the `eavlake run` file job (the embedded default).
//! - [`worker`]: `eavlake run --source kafka`, the long-running consumer-group worker.
//! - [`workload`]: a generator of realistic Debezium traffic with its own ground truth
//!   (samples, tests, benchmarks).
pub mod catalog;
pub mod columns;
pub mod compact;
pub mod config;
pub mod dead_letter;
pub mod decode;
pub mod dedup;
pub mod lag;
pub mod limits;
pub mod metrics;
pub mod pg;
pub mod pipeline;
pub mod pivot;
pub mod position;
mod prefetch;
pub mod progress;
pub mod purge;
pub mod reconcile;
pub mod run;
pub mod secret;
pub mod sink;
pub mod source;
pub mod tenancy;
pub mod worker;
pub mod workload;
