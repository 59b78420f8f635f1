//! `eavlake run` with a file source: the embedded default. Reads a file of Debezium JSON
//! values to its end, writes the lake, compacts the current state, and reports what it did.

use crate::catalog::Catalog;
use crate::compact::{compact_all, compact_scope, CompactOptions, CompactScope, CompactStats};
use crate::config::Config;
use crate::metrics::RunStats;
use crate::pipeline::{PipelineOptions, StreamPipeline};
use crate::sink::Lake;
use crate::source::file::FileSource;
use serde::Serialize;
use std::path::Path;

/// What a file run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub stream: String,
    /// First line read (lines before it were durable from an earlier run).
    pub resumed_at_line: i64,
    pub stats: RunStats,
    pub compaction: Option<CompactStats>,
    pub seconds: f64,
}

/// Runs a file through the pipeline into the lake.
pub async fn run_file(config: &Config, path: &Path) -> anyhow::Result<RunReport> {
    use anyhow::Context;
    let started = std::time::Instant::now();
    let lake = Lake::open(&config.lake.url, &config.s3_options())?;
    lake.ensure_settings(config.lake.range_size, config.lake.decimal_scale).await?;
    let mut source = FileSource::open(path)?.with_max_line_bytes(config.limits.max_record_bytes);
    let bootstrap = match &config.catalog.bootstrap_postgres_url {
        Some(url) => Some(
            Catalog::bootstrap_from_postgres(url.expose(), &config.tables.attributes)
                .await
                .context("bootstrapping the catalog")?,
        ),
        None => None,
    };
    let stream = source.stream();
    // One stream, whose reading waits for each flush: its objects are encoded on its own thread.
    // Handing them to the blocking pool saved 4-6% of wall time on 1M events for 1% more
    // CPU-seconds on a quiet machine, 3-12% more on a busy one (README, Performance).
    let options = PipelineOptions { encode_parallelism: 0, ..config.pipeline_options() };
    let mut pipeline = StreamPipeline::open(lake.clone(), stream.clone(), options, bootstrap).await?;
    let from = pipeline.resume_seq();
    while let Some(rec) = source.next_from(from)? {
        pipeline.process(&rec);
        if pipeline.should_flush() {
            pipeline.flush().await?;
        }
    }
    pipeline.finish().await?;
    // The lake's settings were checked above: compact without checking them again.
    let compaction =
        if config.lake.compact_after_run { Some(compact_all(&lake, compact_options(config)).await?) } else { None };
    Ok(RunReport {
        stream: stream.to_string(),
        resumed_at_line: from,
        stats: pipeline.stats.clone(),
        compaction,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Compacts the lake's current state.
pub async fn compact(config: &Config, lake: &Lake) -> anyhow::Result<CompactStats> {
    compact_scoped(config, lake, &CompactScope::default()).await
}

/// Compacts the part of the lake's current state in `scope` (see [`CompactScope`]).
pub async fn compact_scoped(config: &Config, lake: &Lake, scope: &CompactScope) -> anyhow::Result<CompactStats> {
    lake.ensure_settings(config.lake.range_size, config.lake.decimal_scale).await?;
    Ok(compact_scope(lake, compact_options(config), scope).await?)
}

fn compact_options(config: &Config) -> CompactOptions {
    CompactOptions { range_size: config.lake.range_size, decimal_scale: config.lake.decimal_scale }
}
