//! `eavlake reconcile`: does the lake agree with the live EAV store, and if not, where exactly?
//!
//! # Contract
//! - Per tenant and entity type (a *scope*), the lake's current state (current objects plus the
//!   durable change rows newer than them) is compared with Postgres' live entities (not
//!   `is_deleted`), their hot JSONB attributes and their `entity_values`, cell by cell in the
//!   canonical form of [`checksum`] (decimals by value, timestamps to the µs, JSON in jsonb's
//!   normal form; a null is an absent cell).
//! - Without moving every row: both sides checksum ranges of entity_id (Postgres in SQL, the lake
//!   in Rust from one read of the scope); ranges that differ are split into `bisection_factor`
//!   parts, down to ranges of at most `bisection_threshold` cells, whose cells are compared
//!   directly (the data-diff method). Postgres queries run `concurrency` at a time.
//! - Drift or lag: an entity that differs is re-checked once the lake has caught up with
//!   Postgres' WAL position of the moment (`pg_current_wal_lsn()`), for at most `lag_wait`; if
//!   it then agrees it is lag, otherwise drift. Caught up means a stream of the lake has applied
//!   a change at or past that position, or, for a lake fed from Kafka (`kafka` set), that
//!   Debezium's slot has confirmed that position (so every change committed before it is in
//!   Kafka) and the lake holds every record of every subscribed partition: after a quiet spell
//!   no captured change may ever pass the position, since WAL also holds commits, checkpoints
//!   and other databases' writes. Debezium confirms only positions of captured changes, so
//!   reconcile then writes a `log` signal into the signal table (Debezium just logs it; without
//!   a signal table it warns). When the whole lake has caught up and an entity still differs,
//!   it is drift without waiting longer.
//! - The outcome is a [`Report`]: entities missing in the lake, extra in the lake, different
//!   (attribute by attribute, with both values), and lagging. [`Report::exit_code`]: 0 when
//!   they agree (lag alone included), 1 on drift; any error (unreachable database, missing lake,
//!   lake of another schema) is a [`ReconcileError`] (exit code 2), never an agreement.
//! - `repair` asks Debezium to re-snapshot the drifted entities (an `execute-snapshot` signal
//!   with `additional-conditions` on their ids); with `wait`, re-checks them until they agree or
//!   `repair_timeout` passes. An entity extra in the lake has no row to re-snapshot: the capture
//!   is made to carry its delete (a soft-deleted entity is touched; an absent one is inserted and
//!   deleted in one transaction, which no reader sees).

pub mod checksum;
pub mod lake;
pub mod pg;
pub mod report;

use checksum::Checksum;
use futures::stream::{self, StreamExt, TryStreamExt};
use lake::{EntityCells, LakeSide};
use pg::{Pg, PgCell};
pub use report::{AttributeDiff, Different, EntityRef, Report};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Postgres(String),
    #[error("{0}")]
    Lake(String),
    /// The lake does not come from this database.
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    Usage(String),
}

/// What to reconcile and how.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// With its password, which prints as `***`.
    pub postgres_url: crate::secret::SecretUrl,
    pub lake_url: String,
    pub s3: crate::sink::S3Options,
    pub tenant: Option<i64>,
    pub entity_type: Option<String>,
    /// `[lo, hi)` of entity ids.
    pub entity_range: Option<(i64, i64)>,
    /// Parts a differing range is split into.
    pub bisection_factor: usize,
    /// Ranges of at most this many cells (on either side) are compared cell by cell.
    pub bisection_threshold: u64,
    /// Postgres queries at once (the pool's size).
    pub concurrency: usize,
    /// How long differing entities may wait for the lake to catch up before they count as drift.
    pub lag_wait: Duration,
    pub repair: bool,
    pub wait: bool,
    pub repair_timeout: Duration,
    /// Debezium's signal table and the schema of the captured tables.
    pub signal_table: String,
    /// Debezium's replication slot (`slot.name`), for telling lag from drift.
    pub slot: String,
    /// Where the lake's worker reads from, when it reads Kafka: then the lake has caught up
    /// once it holds every record of the subscription (see the contract).
    pub kafka: Option<crate::config::KafkaConfig>,
    pub schema: String,
    /// A progress line on stderr.
    pub progress: bool,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            postgres_url: crate::secret::SecretUrl::new(""),
            lake_url: String::new(),
            s3: Default::default(),
            tenant: None,
            entity_type: None,
            entity_range: None,
            bisection_factor: 32,
            bisection_threshold: 2048,
            concurrency: 4,
            lag_wait: Duration::from_secs(60),
            repair: false,
            wait: false,
            repair_timeout: Duration::from_secs(300),
            signal_table: "debezium_signal".into(),
            slot: "eavlake".into(),
            kafka: None,
            schema: "public".into(),
            progress: false,
        }
    }
}

/// Parses `LO..HI` (HI exclusive; either side may be left out).
pub fn parse_entity_range(text: &str) -> Result<(i64, i64), ReconcileError> {
    let bad =
        || ReconcileError::Usage(format!("--entity-range `{text}`: expected LO..HI (HI exclusive), e.g. 1000..2000"));
    let (a, b) = text.split_once("..").ok_or_else(bad)?;
    let lo = if a.trim().is_empty() { i64::MIN } else { a.trim().parse().map_err(|_| bad())? };
    let hi = if b.trim().is_empty() { i64::MAX } else { b.trim().parse().map_err(|_| bad())? };
    if lo >= hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn check_options(o: &ReconcileOptions) -> Result<(), ReconcileError> {
    if o.bisection_factor < 2 {
        return Err(ReconcileError::Usage("--bisection-factor must be at least 2".into()));
    }
    if o.bisection_threshold == 0 {
        return Err(ReconcileError::Usage("--bisection-threshold must be positive".into()));
    }
    let ident = regex::Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
        .map_err(|e| ReconcileError::Usage(e.to_string()))?;
    if !ident.is_match(&o.signal_table) || !ident.is_match(&o.schema) {
        return Err(ReconcileError::Usage("--signal-table and --schema must be plain SQL identifiers".into()));
    }
    Ok(())
}

/// Runs a reconcile (and a repair when asked).
pub async fn reconcile(o: &ReconcileOptions) -> Result<Report, ReconcileError> {
    check_options(o)?;
    let started = Instant::now();
    let pg = Pg::connect(o.postgres_url.expose(), o.concurrency).await?;
    let lake = LakeSide::open(&o.lake_url, &o.s3).await?;
    check_same_schema(&pg, &lake).await?;

    let mut scopes: BTreeSet<(i64, String)> = pg.scopes().await?.into_iter().collect();
    scopes.extend(lake.scopes().await?);
    scopes.retain(|(t, et)| o.tenant.is_none_or(|x| x == *t) && o.entity_type.as_ref().is_none_or(|x| x == et));
    let (lo, hi) = o.entity_range.unwrap_or((i64::MIN, i64::MAX));

    let mut report = Report { lake: lake.url.clone(), ..Report::default() };
    let mut progress = Progress::new(o.progress, scopes.len());
    for (tenant, et) in &scopes {
        progress.scope(*tenant, et);
        let diffs = diff_scope(&pg, &lake, o, *tenant, et, lo, hi, &mut report, &mut progress).await?;
        report.add_scope_diffs(diffs);
    }
    progress.finish();

    // Lag or drift: re-check what differs once the lake has caught up with Postgres.
    if !report.is_clean() {
        settle_lag(&pg, &lake, o, &mut report).await?;
    }
    report.scopes = scopes.len();

    if o.repair && !report.is_clean() {
        repair(&pg, &lake, o, &mut report).await?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The command line's view: options, output format and an optional metrics file.
pub struct CliArgs {
    pub options: ReconcileOptions,
    /// `table` or `json`.
    pub format: String,
    pub metrics_file: Option<std::path::PathBuf>,
}

/// Runs `eavlake reconcile`: prints the report and returns the exit code (0 agree, 1 drift);
/// an error is exit code 2 for the caller.
pub async fn cli(args: CliArgs) -> anyhow::Result<u8> {
    if args.format != "table" && args.format != "json" {
        anyhow::bail!("--format `{}`: expected `table` or `json`", args.format);
    }
    let report = reconcile(&args.options).await?;
    match args.format.as_str() {
        "json" => println!("{}", report.to_json()),
        _ => print!("{}", report.to_table()),
    }
    if let Some(path) = &args.metrics_file {
        std::fs::write(path, report.to_metrics())
            .map_err(|e| anyhow::anyhow!("writing metrics to `{}`: {e}", path.display()))?;
    }
    // Kept in the lake for the workers' /metrics; a lake the reconcile may not write to only
    // loses that.
    let o = &args.options;
    let scope = [
        o.tenant.map(|t| format!("tenant={t}")),
        o.entity_type.as_ref().map(|e| format!("entity_type={e}")),
        o.entity_range.map(|(lo, hi)| format!("entity_range={lo}..{hi}")),
    ];
    let summary = report.summary(&scope.into_iter().flatten().collect::<Vec<_>>().join(","));
    let kept = async {
        let lake = crate::sink::Lake::open(&o.lake_url, &o.s3)?;
        let path = crate::sink::Lake::meta_path(&summary.object());
        lake.put(&path, bytes::Bytes::from(serde_json::to_vec(&summary)?)).await?;
        anyhow::Ok(())
    };
    if let Err(e) = kept.await {
        tracing::warn!(error = %format!("{e:#}"), "the outcome was not kept in the lake (workers will not export it)");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(report.exit_code())
}

/// Refuses a lake whose recorded catalog contradicts this database's attributes: the same
/// attribute id under another tenant, entity type or name, or no attribute in common at all.
async fn check_same_schema(pg: &Pg, lake: &LakeSide) -> Result<(), ReconcileError> {
    let Some(catalog) = lake.catalog().await? else { return Ok(()) };
    let attrs = pg.attributes().await?;
    let by_id: BTreeMap<i64, (i64, String, String)> =
        attrs.into_iter().map(|(id, t, et, name, _)| (id, (t, et, name))).collect();
    let lake_attrs = catalog.all();
    let mut common = 0usize;
    for a in &lake_attrs {
        if let Some((t, et, name)) = by_id.get(&a.attribute_id) {
            if *t != a.tenant_id || et.as_str() != &*a.entity_type || name.as_str() != &*a.name {
                return Err(ReconcileError::Mismatch(format!(
                    "lake `{}` is not a lake of {}: its attribute {} is `{}` of tenant {} {}, Postgres' is `{name}` of tenant {t} {et}",
                    lake.url, pg.name, a.attribute_id, a.name, a.tenant_id, a.entity_type
                )));
            }
            common += 1;
        }
    }
    if !lake_attrs.is_empty() && common == 0 {
        return Err(ReconcileError::Mismatch(format!(
            "lake `{}` is not a lake of {}: none of its {} attributes exists in Postgres",
            lake.url,
            pg.name,
            lake_attrs.len()
        )));
    }
    Ok(())
}

/// Differences found in one scope, before the lag check.
#[derive(Default)]
pub(crate) struct ScopeDiffs {
    pub missing: Vec<EntityRef>,
    pub extra: Vec<EntityRef>,
    pub different: Vec<Different>,
}

/// Bisects one scope and compares the cells of the ranges that differ.
#[allow(clippy::too_many_arguments)]
async fn diff_scope(
    pg: &Pg,
    lake: &LakeSide,
    o: &ReconcileOptions,
    tenant: i64,
    et: &str,
    lo: i64,
    hi: i64,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<ScopeDiffs, ReconcileError> {
    let pg_bounds = pg.bounds(tenant, et, lo, hi).await?;
    // The lake is read while Postgres computes the first level of checksums.
    let first_level = |b: Option<(i64, i64)>| match b {
        Some((a, z)) => split(a, z.saturating_add(1), o.bisection_factor),
        None => Vec::new(),
    };
    let top = first_level(pg_bounds);
    let pg_first = stream::iter(top.windows(2).map(|w| (w[0], w[1])).collect::<Vec<_>>())
        .map(|(a, z)| {
            let bounds = split(a, z, o.bisection_factor);
            async move { pg.checksums(tenant, et, &bounds).await.map(|c| (bounds, c)) }
        })
        .buffer_unordered(o.concurrency.max(1))
        .try_collect::<Vec<_>>();
    let t0 = Instant::now();
    let lake_read = async {
        let s = lake.summary(tenant, et, lo, hi).await;
        tracing::debug!(tenant, entity_type = et, seconds = t0.elapsed().as_secs_f64(), "lake side read");
        s
    };
    let pg_read = async {
        let c = pg_first.await;
        tracing::debug!(tenant, entity_type = et, seconds = t0.elapsed().as_secs_f64(), "Postgres first level");
        c
    };
    let (summary, pg_first) = futures::join!(lake_read, pg_read);
    let summary = summary?;
    let pg_first = pg_first?;
    report.lake_entities += summary.entities() as u64;
    report.queries += pg_first.len() as u64 + 1;

    // Buckets to look at: (lo, hi, Postgres' checksum).
    let mut level: Vec<(i64, i64, Checksum)> = Vec::new();
    for (bounds, sums) in pg_first {
        for (i, c) in sums.into_iter().enumerate() {
            level.push((bounds[i], bounds[i + 1], c));
        }
    }
    for c in &level {
        report.postgres_cells += c.2.count;
    }
    let mut leaves: Vec<(i64, i64)> = Vec::new();
    // Lake entities outside Postgres' bounds have nothing to compare with: extra, cell by cell.
    if let Some((la, lz)) = summary.bounds() {
        match pg_bounds {
            None => leaves.push((la, lz.saturating_add(1))),
            Some((pa, pz)) => {
                if la < pa {
                    leaves.push((la, pa));
                }
                if lz > pz {
                    leaves.push((pz.saturating_add(1), lz.saturating_add(1)));
                }
            }
        }
    }
    report.lake_cells += summary.checksum(i64::MIN, i64::MAX).count;
    while !level.is_empty() {
        progress.buckets(level.len());
        let mut split_next: Vec<(i64, i64)> = Vec::new();
        for (a, z, pc) in level.drain(..) {
            let lc = summary.checksum(a, z);
            if lc == pc {
                continue;
            }
            if pc.count.max(lc.count) <= o.bisection_threshold || z - a <= 1 {
                leaves.push((a, z));
            } else {
                split_next.push((a, z));
            }
        }
        report.queries += split_next.len() as u64;
        level = stream::iter(split_next)
            .map(|(a, z)| {
                let bounds = split(a, z, o.bisection_factor);
                async move { pg.checksums(tenant, et, &bounds).await.map(|c| (bounds, c)) }
            })
            .buffer_unordered(o.concurrency.max(1))
            .map_ok(|(bounds, sums)| {
                sums.into_iter().enumerate().map(|(i, c)| (bounds[i], bounds[i + 1], c)).collect::<Vec<_>>()
            })
            .try_concat()
            .await?;
    }
    leaves.sort_unstable();
    report.leaf_ranges += leaves.len() as u64;
    compare_cells(pg, lake, o, tenant, et, &merge_ranges(leaves), report).await
}

/// `[a, z)` split into at most `parts` contiguous buckets: the bucket bounds, first `a`, last `z`.
fn split(a: i64, z: i64, parts: usize) -> Vec<i64> {
    let width = (z as i128 - a as i128).max(0);
    let parts = (parts as i128).min(width).max(1);
    let mut bounds: Vec<i64> = (0..=parts).map(|i| (a as i128 + width * i / parts) as i64).collect();
    bounds.dedup();
    bounds
}

/// Adjacent `[a, z)` ranges joined, so that one query reads them.
fn merge_ranges(ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (a, z) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(z),
            _ => out.push((a, z)),
        }
    }
    out
}

/// Compares the cells of a scope's entities in `ranges` (`[a, z)`, sorted, disjoint).
async fn compare_cells(
    pg: &Pg,
    lake: &LakeSide,
    o: &ReconcileOptions,
    tenant: i64,
    et: &str,
    ranges: &[(i64, i64)],
    report: &mut Report,
) -> Result<ScopeDiffs, ReconcileError> {
    if ranges.is_empty() {
        return Ok(ScopeDiffs::default());
    }
    report.queries += ranges.len() as u64;
    let pg_cells: Vec<PgCell> = stream::iter(ranges.to_vec())
        .map(|(a, z)| pg.cells(tenant, et, a, z))
        .buffer_unordered(o.concurrency.max(1))
        .try_concat()
        .await?;
    let spans: Vec<(i64, i64)> = ranges.iter().map(|&(a, z)| (a, z.saturating_sub(1))).collect();
    let lake_cells = lake.cells(tenant, et, &spans).await?;
    Ok(diff_cells(tenant, et, pg_cells, lake_cells))
}

/// Entity by entity: present on one side only, or differing attributes with both values.
fn diff_cells(tenant: i64, et: &str, pg_cells: Vec<PgCell>, lake_cells: BTreeMap<i64, EntityCells>) -> ScopeDiffs {
    let mut pg_entities: BTreeMap<i64, EntityCells> = BTreeMap::new();
    let mut present: BTreeSet<i64> = BTreeSet::new();
    for c in pg_cells {
        if c.name.is_empty() {
            present.insert(c.entity_id);
            continue;
        }
        let dt = c.data_type.unwrap_or(crate::decode::DataType::Json);
        pg_entities.entry(c.entity_id).or_default().insert(c.name, (c.value, dt));
    }
    let mut out = ScopeDiffs::default();
    let eref = |id: i64| EntityRef { tenant_id: tenant, entity_type: et.to_string(), entity_id: id };
    let empty = EntityCells::new();
    for &id in &present {
        let Some(lake) = lake_cells.get(&id) else {
            out.missing.push(eref(id));
            continue;
        };
        let pg = pg_entities.get(&id).unwrap_or(&empty);
        let names: BTreeSet<&String> = pg.keys().chain(lake.keys()).collect();
        let mut attributes = Vec::new();
        for name in names {
            let (p, l) = (pg.get(name), lake.get(name));
            if p.map(|x| &x.0) != l.map(|x| &x.0) {
                let dt = p.or(l).map(|x| x.1);
                attributes.push(AttributeDiff {
                    name: name.clone(),
                    postgres: p.map(|x| checksum::display_value(&x.0, dt)),
                    lake: l.map(|x| checksum::display_value(&x.0, dt)),
                });
            }
        }
        if !attributes.is_empty() {
            out.different.push(Different { entity: eref(id), attributes });
        }
    }
    for &id in lake_cells.keys() {
        if !present.contains(&id) {
            out.extra.push(eref(id));
        }
    }
    out
}

/// The entities still differing, grouped by scope, as inclusive single-id spans.
fn differing_by_scope(report: &Report) -> BTreeMap<(i64, String), Vec<i64>> {
    let mut out: BTreeMap<(i64, String), Vec<i64>> = BTreeMap::new();
    for e in report.drifted() {
        out.entry((e.tenant_id, e.entity_type.clone())).or_default().push(e.entity_id);
    }
    for ids in out.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    out
}

/// Re-checks the cells of the given entities only.
async fn recheck(
    pg: &Pg,
    lake: &LakeSide,
    o: &ReconcileOptions,
    targets: &BTreeMap<(i64, String), Vec<i64>>,
    report: &mut Report,
) -> Result<Vec<ScopeDiffs>, ReconcileError> {
    let mut out = Vec::new();
    for ((tenant, et), ids) in targets {
        let ranges = merge_ranges(ids.iter().map(|&i| (i, i + 1)).collect());
        // Only the listed entities: neighbours inside merged ranges are not re-judged.
        let mut d = compare_cells(pg, lake, o, *tenant, et, &ranges, report).await?;
        let wanted: BTreeSet<i64> = ids.iter().copied().collect();
        d.missing.retain(|e| wanted.contains(&e.entity_id));
        d.extra.retain(|e| wanted.contains(&e.entity_id));
        d.different.retain(|e| wanted.contains(&e.entity.entity_id));
        out.push(d);
    }
    Ok(out)
}

/// How far the lake has caught up with a WAL position.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CaughtUp {
    No,
    /// Some streams have applied changes past it: entities there can be re-checked.
    Partly,
    /// All of the lake has: what still differs is drift.
    Fully,
}

/// Waits (until `deadline`) for the lake to catch up with `target` (see the contract).
async fn wait_for_lake(
    pg: &Pg,
    lake: &LakeSide,
    o: &ReconcileOptions,
    target: u64,
    deadline: Instant,
    report: &mut Report,
) -> Result<CaughtUp, ReconcileError> {
    // Again after this long without the slot reaching the position (a signal lost to a restart).
    const SIGNAL_EVERY: Duration = Duration::from_secs(30);
    let mut kafka_failed = false;
    let mut last_signal: Option<Instant> = None;
    loop {
        let mut checked_kafka = false;
        let applied = lake.applied().await?;
        report.lake_lsn = applied.max_lsn;
        if applied.min_lsn.is_some_and(|l| l >= target) {
            return Ok(CaughtUp::Fully);
        }
        if let (Some(k), false) = (&o.kafka, kafka_failed) {
            let confirmed = pg.slot_confirmed_lsn(&o.slot).await?;
            // Debezium confirms positions of captured changes only: on a quiet store the slot
            // stays behind the WAL (autovacuum, checkpoints) for good, so give it a change.
            if confirmed.is_some_and(|c| c < target) && last_signal.is_none_or(|t| t.elapsed() >= SIGNAL_EVERY) {
                let message = "eavlake reconcile: moving the slot past the WAL position to tell lag from drift";
                if let Err(e) = pg.log_signal(&o.signal_table, message).await {
                    // No signal table (repair not set up): the lake's positions alone decide.
                    tracing::warn!(error = %e, "cannot write a log signal: on a quiet store lag may be taken for drift");
                }
                last_signal = Some(Instant::now());
            }
            if confirmed.is_some_and(|c| c >= target) {
                // Watermarks read after the slot confirmed: they cover every change before target.
                checked_kafka = true;
                match lake.behind(k).await {
                    Ok(behind) if !behind.is_empty() && behind.values().all(|&n| n == 0) => return Ok(CaughtUp::Fully),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot read Kafka's watermarks: lag is told from the lake's positions alone");
                        kafka_failed = true;
                    }
                }
            }
        }
        let partly = applied.max_lsn.is_some_and(|l| l >= target);
        if Instant::now() >= deadline {
            return Ok(if partly { CaughtUp::Partly } else { CaughtUp::No });
        }
        if partly {
            return Ok(CaughtUp::Partly);
        }
        // A Kafka check opens a client: not four times a second.
        tokio::time::sleep(Duration::from_millis(if checked_kafka { 1000 } else { 250 })).await;
    }
}

/// Tells lag from drift: waits (at most `lag_wait`) for the lake to catch up with Postgres'
/// current WAL position, re-checks the differing entities, and moves those that now agree to
/// `lag`.
async fn settle_lag(pg: &Pg, lake: &LakeSide, o: &ReconcileOptions, report: &mut Report) -> Result<(), ReconcileError> {
    let deadline = Instant::now() + o.lag_wait;
    loop {
        let target = pg.wal_lsn().await?;
        report.wal_lsn = Some(target);
        let caught_up = wait_for_lake(pg, lake, o, target, deadline, report).await?;
        if caught_up == CaughtUp::No {
            tracing::info!(wal = target, lake = ?report.lake_lsn, "the lake did not catch up with Postgres' WAL position in time: what differs is drift");
            return Ok(());
        }
        let before = differing_by_scope(report);
        let after = recheck(pg, lake, o, &before, report).await?;
        report.replace_drift(after);
        let still = differing_by_scope(report);
        for ((tenant, et), ids) in &before {
            let left = still.get(&(*tenant, et.clone()));
            for id in ids {
                if left.is_none_or(|l| !l.contains(id)) {
                    report.lag.push(EntityRef { tenant_id: *tenant, entity_type: et.clone(), entity_id: *id });
                }
            }
        }
        if report.is_clean() || caught_up == CaughtUp::Fully || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asks Debezium to re-snapshot the drifted entities; with `wait`, re-checks until they agree.
async fn repair(pg: &Pg, lake: &LakeSide, o: &ReconcileOptions, report: &mut Report) -> Result<(), ReconcileError> {
    let targets = differing_by_scope(report);
    let extra: BTreeSet<(i64, String, i64)> =
        report.extra_in_lake.iter().map(|e| (e.tenant_id, e.entity_type.clone(), e.entity_id)).collect();
    let mut ids: Vec<i64> = targets
        .iter()
        .flat_map(|((t, et), ids)| ids.iter().filter(|id| !extra.contains(&(*t, et.clone(), **id))).copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    // Entities extra in the lake: no row to re-snapshot, so the capture is made to carry their
    // delete instead.
    for e in report.extra_in_lake.clone() {
        if !pg.capture_delete(e.tenant_id, &e.entity_type, e.entity_id).await? {
            report.not_repairable.push(e);
        }
    }
    if !ids.is_empty() {
        report.repair_signals = pg.request_snapshot(&o.signal_table, &o.schema, &ids).await?;
        tracing::info!(entities = ids.len(), signals = report.repair_signals.len(), "incremental snapshot requested");
    }
    if !o.wait {
        return Ok(());
    }
    let deadline = Instant::now() + o.repair_timeout;
    loop {
        let targets = differing_by_scope(report);
        let after = recheck(pg, lake, o, &targets, report).await?;
        report.replace_drift(after);
        let healed_all = report.is_clean();
        if healed_all || Instant::now() >= deadline {
            report.repaired = Some(healed_all);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A progress line on stderr (a terminal only).
struct Progress {
    on: bool,
    scopes: usize,
    done: usize,
    buckets: usize,
    label: String,
}

impl Progress {
    fn new(on: bool, scopes: usize) -> Progress {
        Progress { on, scopes, done: 0, buckets: 0, label: String::new() }
    }

    fn scope(&mut self, tenant: i64, et: &str) {
        self.done += 1;
        self.label = format!("tenant {tenant} {et}");
        self.draw();
    }

    fn buckets(&mut self, n: usize) {
        self.buckets += n;
        self.draw();
    }

    fn draw(&self) {
        if !self.on {
            return;
        }
        let width = 30usize;
        let filled = (self.done * width).checked_div(self.scopes).unwrap_or(width);
        eprint!(
            "\r[{}{}] {}/{} scopes, {} ranges checked, {}\x1b[K",
            "#".repeat(filled),
            " ".repeat(width - filled.min(width)),
            self.done,
            self.scopes,
            self.buckets,
            self.label
        );
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_range_without_gaps() {
        assert_eq!(split(0, 10, 4), vec![0, 2, 5, 7, 10]);
        assert_eq!(split(5, 7, 32), vec![5, 6, 7]);
        assert_eq!(split(i64::MIN, i64::MAX, 2), vec![i64::MIN, -1, i64::MAX]);
        assert_eq!(merge_ranges(vec![(0, 5), (5, 8), (10, 12)]), vec![(0, 8), (10, 12)]);
    }

    #[test]
    fn entity_ranges_parse() {
        assert_eq!(parse_entity_range("10..20").unwrap(), (10, 20));
        assert_eq!(parse_entity_range("..20").unwrap(), (i64::MIN, 20));
        assert_eq!(parse_entity_range("5..").unwrap(), (5, i64::MAX));
        assert!(parse_entity_range("20..10").is_err());
        assert!(parse_entity_range("x").is_err());
    }
}
