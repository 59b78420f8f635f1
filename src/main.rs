//! The `eavlake` command: wires configuration, sources and the lake together.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use eavlake::config::Config;
use eavlake::sink::Lake;
use eavlake::workload::{generate, WorkloadFormat, WorkloadSpec};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "eavlake", version, about = "Debezium changes of a PostgreSQL EAV store → a typed Parquet lake")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume Debezium events and write the lake.
    Run {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Where events come from: `file:<PATH>` (Debezium JSON values, one per line), or
        /// `kafka` (the `[kafka]` section: a consumer-group worker that runs until stopped).
        #[arg(long)]
        source: String,
        /// Do not compact the current state at the end of a file run.
        #[arg(long)]
        no_compact: bool,
    },
    /// Fold the change rows into the current state (`current/`). Processes with disjoint scopes
    /// (--entity-type, --tenant, --entity-range, --shard) can run side by side.
    Compact {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Only this entity type.
        #[arg(long)]
        entity_type: Option<String>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<i64>,
        /// `LO..HI`, HI exclusive (either may be left out): the range objects starting inside;
        /// both ends multiples of `lake.range_size`.
        #[arg(long)]
        entity_range: Option<String>,
        /// `I/N`: shard I of N (0-based) of the range objects, for N processes side by side.
        #[arg(long)]
        shard: Option<String>,
    },
    /// How far behind the lake is, per partition: the group's committed offset, the lake's
    /// progress, the high watermark, lag in messages and seconds, who holds the partition.
    Lag {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// `table` (default) or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Compare the lake with the live EAV store in Postgres; exit 0 when they agree, 1 on drift,
    /// 2 on error.
    Reconcile {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Postgres URL (`postgres://user@host:port/db?sslmode=verify-full&sslrootcert=ca.pem`);
        /// A URL with a password is better given in the variable: other users of the machine
        /// can read command lines.
        #[arg(long, env = "EAVLAKE_RECONCILE_POSTGRES", hide_env_values = true)]
        postgres: String,
        #[arg(long)]
        tenant: Option<i64>,
        #[arg(long)]
        entity_type: Option<String>,
        /// `LO..HI`, HI exclusive.
        #[arg(long)]
        entity_range: Option<String>,
        /// `table` (default) or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(long, default_value_t = 32)]
        bisection_factor: usize,
        /// Ranges of at most this many cells are compared cell by cell.
        #[arg(long, default_value_t = 2048)]
        bisection_threshold: u64,
        /// Postgres queries at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds differing entities may wait for the lake to catch up before counting as drift.
        #[arg(long, default_value_t = 60)]
        lag_wait: u64,
        /// Ask Debezium to re-snapshot the drifted entities (signal table).
        #[arg(long)]
        repair: bool,
        /// With --repair: re-check until they agree (at most --repair-timeout seconds).
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 300)]
        repair_timeout: u64,
        #[arg(long, default_value = "debezium_signal")]
        signal_table: String,
        /// Debezium's replication slot (`slot.name`): with a Kafka-fed lake (--config with a
        /// [kafka] subscription), lag is told from drift by the slot and the topics' watermarks.
        #[arg(long, default_value = "eavlake")]
        slot: String,
        /// Also write the outcome as Prometheus metrics to this file.
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
    /// Remove a tenant's rows (or only those of some of its entities) from every object of the
    /// lake, `changes/` and `current/`, and keep them out of later writes. Exit 0 when done, 2
    /// on error.
    Purge {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long)]
        tenant: i64,
        /// Purge only these entities of the tenant (repeatable); without it, the whole tenant.
        #[arg(long = "entity-id", value_name = "E")]
        entity_ids: Vec<i64>,
        /// Do not wait for running workers' flushes (batch.flush_deadline_ms + clock_skew_ms)
        /// before rewriting: only when nothing writes the lake.
        #[arg(long)]
        no_wait: bool,
        /// `table` (default) or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Print the configuration in force (file, EAVLAKE__* variables, --set flags; secrets
    /// hidden) after checking it.
    Config {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Write a realistic workload of Debezium events (a sample, or benchmark input).
    Generate {
        /// Change events to write.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        #[arg(long, default_value_t = 8)]
        tenants: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Embed JSON schemas and encode decimals `precise` (default: no schemas, string decimals).
        #[arg(long)]
        with_schemas: bool,
        /// Leave out the deliberately bad lines.
        #[arg(long)]
        no_poison: bool,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Also write the expected current state (JSON lines), to check a lake against.
        #[arg(long)]
        truth: Option<PathBuf>,
    },
}

/// Where a command's configuration comes from (every command that reads the lake).
#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// The lake: a folder, file://…, s3://bucket/prefix. Overrides `lake.url`.
    #[arg(long)]
    lake: Option<String>,
    /// TOML configuration (see config/).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one configuration key, e.g. `--set kafka.group_id=g` (repeatable; after
    /// the file and the EAVLAKE__SECTION__KEY environment variables).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ConfigArgs {
    /// The configuration in force, checked.
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load_layered(self.config.as_deref(), std::env::vars(), &self.set)?;
        if let Some(l) = &self.lake {
            config.lake.url = l.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { source, cfg, no_compact } => {
            let mut config = cfg.load()?;
            if no_compact {
                config.lake.compact_after_run = false;
            }
            if source == "kafka" {
                let shutdown = eavlake::worker::Shutdown::default();
                shutdown.on_signals()?;
                let report = eavlake::worker::run_kafka(&config, shutdown).await?;
                println!("{}", serde_json::to_string(&report)?);
                return Ok(());
            }
            let Some(path) = file_source(&source) else {
                bail!("--source `{source}`: expected `file:<PATH>` or `kafka`");
            };
            if config.decode.format != eavlake::config::Format::Json {
                bail!("config key `decode.format`: a file source holds JSON values");
            }
            let report = eavlake::run::run_file(&config, std::path::Path::new(path)).await?;
            let s = &report.stats;
            eprintln!(
                "eavlake: {} records from {} in {:.2}s: {} changes, {} duplicates dropped, {} rows in {} files ({} bytes), {} dead letters",
                s.records,
                report.stream,
                report.seconds,
                s.changes,
                s.duplicates,
                s.rows_written,
                s.files_written,
                s.bytes_written,
                s.dead_letter_total()
            );
            if s.dead_letter_total() > 0 {
                eprintln!("eavlake: dead letters by reason {:?}, in {}/dead_letters/", s.dead_letters, config.lake.url);
            }
            if let Some(c) = &report.compaction {
                eprintln!(
                    "eavlake: current state: {} live entities ({} deleted logically, kept apart) in {} range objects updated",
                    c.live_entities, c.retired_entities, c.ranges_written
                );
            }
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Compact { cfg, entity_type, tenant, entity_range, shard } => {
            let config = cfg.load()?;
            let scope = eavlake::compact::CompactScope {
                entity_type,
                tenant,
                entity_range: entity_range.as_deref().map(eavlake::reconcile::parse_entity_range).transpose()?,
                shard: shard.as_deref().map(eavlake::compact::Shard::parse).transpose()?,
            };
            let store = Lake::open(&config.lake.url, &config.s3_options())?;
            let stats = eavlake::run::compact_scoped(&config, &store, &scope).await?;
            println!("{}", serde_json::to_string(&stats)?);
        }
        Command::Lag { cfg, format } => {
            let config = cfg.load()?;
            if config.kafka.topics.is_empty() && config.kafka.topic_pattern.is_none() {
                bail!("config key `kafka.topics`: give the topics to report on (or kafka.topic_pattern)");
            }
            let store = Lake::open(&config.lake.url, &config.s3_options())?;
            let rows = eavlake::lag::report(&config, &store).await?;
            match format.as_str() {
                "table" => print!("{}", eavlake::lag::table(&rows)),
                "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
                other => bail!("--format `{other}`: expected `table` or `json`"),
            }
        }
        Command::Reconcile {
            postgres,
            cfg,
            tenant,
            entity_type,
            entity_range,
            format,
            bisection_factor,
            bisection_threshold,
            concurrency,
            lag_wait,
            repair,
            wait,
            repair_timeout,
            signal_table,
            slot,
            metrics_file,
        } => {
            let config = cfg.load()?;
            // Checked before anything starts; the message names the parameter, not the password.
            eavlake::pg::parse(&postgres).map_err(|e| anyhow::anyhow!("--postgres: {e}"))?;
            let postgres = eavlake::secret::SecretUrl::new(postgres);
            let code = eavlake::reconcile::cli(eavlake::reconcile::CliArgs {
                options: eavlake::reconcile::ReconcileOptions {
                    postgres_url: postgres,
                    lake_url: config.lake.url.clone(),
                    s3: config.s3_options(),
                    tenant,
                    entity_type,
                    entity_range: entity_range.as_deref().map(eavlake::reconcile::parse_entity_range).transpose()?,
                    bisection_factor,
                    bisection_threshold,
                    concurrency,
                    lag_wait: std::time::Duration::from_secs(lag_wait),
                    repair,
                    wait,
                    repair_timeout: std::time::Duration::from_secs(repair_timeout),
                    signal_table,
                    slot,
                    kafka: config.kafka.subscribes().then(|| config.kafka.clone()),
                    progress: format == "table" && std::io::stderr().is_terminal(),
                    ..Default::default()
                },
                format,
                metrics_file,
            })
            .await?;
            if code != 0 {
                std::process::exit(code.into());
            }
        }
        Command::Purge { tenant, entity_ids, cfg, no_wait, format } => {
            if format != "table" && format != "json" {
                bail!("--format `{format}`: expected `table` or `json`");
            }
            let config = cfg.load()?;
            let store = Lake::open(&config.lake.url, &config.s3_options())?;
            let wait = if no_wait {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_millis(config.batch.flush_deadline_ms + config.batch.clock_skew_ms)
            };
            let options = eavlake::purge::rewrite::PurgeOptions {
                tenant_id: tenant,
                entity_ids: if entity_ids.is_empty() { None } else { Some(entity_ids) },
                wait,
                by: eavlake::pipeline::default_writer_name(),
            };
            let report = eavlake::purge::rewrite::purge(&store, &options)
                .await
                .with_context(|| format!("purging tenant {tenant} in {}", config.lake.url))?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&report)?),
                _ => print!("{}", report.to_table()),
            }
        }
        Command::Config { cfg } => {
            let config = cfg.load()?;
            print!("{}", toml::to_string(&config)?);
        }
        Command::Generate { events, tenants, seed, with_schemas, no_poison, out, truth: truth_out } => {
            let spec = WorkloadSpec {
                events,
                tenants,
                seed,
                format: if with_schemas { WorkloadFormat::WithSchemas } else { WorkloadFormat::Plain },
                poison: !no_poison,
                ..WorkloadSpec::default()
            };
            let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let truth = generate(&spec, &mut w).with_context(|| format!("writing {}", out.display()))?;
            std::io::Write::flush(&mut w)?;
            eprintln!(
                "eavlake: wrote {} lines ({} change events, {} re-sent, {} bad lines, {} live entities) to {}",
                truth.lines,
                truth.change_events,
                truth.duplicates,
                truth.dead_letters.len(),
                truth.current.len(),
                out.display()
            );
            if let Some(path) = truth_out {
                write_truth(&truth, &path).with_context(|| format!("writing {}", path.display()))?;
            }
            if !with_schemas {
                eprintln!("eavlake: decimals are strings: run with decode.decimal_handling_mode = \"string\" (config/file-run.toml)");
            }
        }
    }
    Ok(())
}

/// The expected current state as JSON lines: one live entity per line, decimals as exact text
/// (scale 9), timestamps as µs since the epoch, JSON values as JSON.
fn write_truth(truth: &eavlake::workload::GroundTruth, path: &std::path::Path) -> anyhow::Result<()> {
    use eavlake::workload::Expected;
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for ((entity_type, tenant_id, entity_id), attrs) in &truth.current {
        let attributes: serde_json::Map<String, serde_json::Value> = attrs
            .iter()
            .map(|(name, v)| {
                let v = match v {
                    Expected::Text(s) => serde_json::json!(s),
                    Expected::Int(i) => serde_json::json!(i),
                    Expected::Decimal(d) => serde_json::json!(eavlake::decode::value::format_decimal(*d, 9)),
                    Expected::Bool(b) => serde_json::json!(b),
                    Expected::Timestamp(t) => serde_json::json!(t),
                    Expected::Json(j) => j.clone(),
                };
                (name.clone(), v)
            })
            .collect();
        let line = serde_json::json!({
            "entity_type": entity_type, "tenant_id": tenant_id, "entity_id": entity_id, "attributes": attributes,
        });
        writeln!(w, "{line}")?;
    }
    w.flush()?;
    Ok(())
}

/// glibc gives each thread that allocates its own arena and keeps their peaks: Parquet
/// encoding on the blocking pool's threads made a 10M-event run peak at 142 MiB instead of
/// 95 MiB. Two arenas are enough for two cores.
///
/// A batch job (a file run, a compaction) keeps the memory it freed for its next allocations:
/// blocks up to 64 MiB come from the heap, and the heap is not trimmed below 256 MiB free. Its
/// peak is bounded anyway (flush limits, compaction's groups); giving pages back only to fault
/// them in again, zeroed, at the next flush cost up to 6% of a 1M-event run's CPU on a host
/// where a fresh page is slow (2026-12-06: 36K → 31K page faults; 10M events: 82K → 34K and
/// −5–10% CPU), for 3–6 MiB more at the peak (1M events: 81 against 75 MiB).
///
/// Other commands (the Kafka worker, which runs for weeks) map blocks of 256 KiB and more on
/// their own and give them back when freed: by default glibc raises that threshold as such
/// blocks are freed and then keeps them in the heap, where they fragment it (a 10M-event run:
/// 10 MiB more at its peak). The worker's own CPU-for-memory trade is measured in
/// docs/performance.md (Through Kafka) and left to planning.
fn tune_malloc(batch_job: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        if batch_job {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        } else {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = batch_job;
}

/// The path of a `--source file:<PATH>`; `None` for any other source.
fn file_source(source: &str) -> Option<&str> {
    source.strip_prefix("file:")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let batch_job = match &cli.command {
        Command::Run { source, .. } => file_source(source).is_some(),
        Command::Compact { .. } => true,
        _ => false,
    };
    tune_malloc(batch_job);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("eavlake: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(main_inner(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eavlake: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
