//! Compaction: change rows → the current state per entity type, tenant and range of entity_id.
//!
//! The current state of a tenant's entities of one type lives under
//! `current/<type>/tenant_id=<t>/`, one object per range of `range_size` entity ids, holding the
//! latest value of every attribute of every live entity in the range (deleted entities and
//! deleted values gone). Each object says in its Parquet metadata how far it has applied every
//! stream (the last `_seq` per stream: its watermarks), so compacting a range is: read the object,
//! apply the change rows of that range newer than its watermarks in stream order, write the
//! object back with one PUT. A reader therefore sees each entity exactly once at any moment, even
//! while compaction runs, and a compaction cut short is simply done again.
//!
//! Only change files the stream's progress record covers are read: files of a flush still being
//! written are left for the next compaction.
//!
//! Several compactions may run side by side ([`CompactScope`]: by entity type, tenant, entity
//! range, or shard): the unit of work is one range object, which each writes back with a
//! conditional PUT against the version it read. Disjoint scopes never write the same object;
//! overlapping ones that race on one fold it again from what the other wrote (the watermarks
//! make that exact), so neither an update is lost nor a change applied twice.
//!
//! A type change of an attribute is applied to the whole range: old values are converted when
//! that loses nothing, otherwise they become null and are counted (never a wrong value).
//!
//! A logically deleted entity (`is_deleted` set: `_logical_delete` on its change row) leaves the
//! current state but keeps its values, as the store does: the range's retired entities live in
//! an object of their own under `_eavlake/retired/`, which values written to them meanwhile
//! update, and an un-delete (an update of the entity's row) brings them back. A physical delete,
//! a new entity under the id, or a snapshot reading it live (a snapshot sends every value it
//! has) forgets them. Two objects cannot be replaced at once, so each
//! version of the retired object has a new name, written first and named in the current
//! object's metadata ([`columns::META_RETIRED`]): the conditional PUT of the current object
//! switches both, and the version it replaced is deleted after (a reader that finds the named
//! object gone reads the current object again). A compaction that loses its PUT deletes the
//! retired object it wrote; one that dies between the two writes leaves an object nobody names,
//! which a compaction of the tenant deletes a day later ([`sweep_retired`]).

use crate::columns::{self, NullRunBuilder, Value, ValueBuilder};
use crate::decode::DataType;
use crate::progress::{self, ProgressError};
use crate::purge::{PurgeError, PurgeSet};
use crate::sink::parquet::{encode, ParquetFooter, ParquetObject};
use crate::sink::{Lake, SinkError, Version};
use arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType as ArrowType, Field, Int64Type, Schema, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use object_store::path::Path;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Entity ids per current-state object.
    pub range_size: i64,
    pub decimal_scale: u32,
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct CompactStats {
    pub ranges_written: usize,
    pub change_files_read: usize,
    pub rows_applied: usize,
    pub live_entities: usize,
    /// Logically deleted entities kept for an un-delete (see the module documentation).
    pub retired_entities: usize,
    /// Objects of such entities left behind by a compaction that died, deleted.
    pub retired_objects_swept: usize,
    /// Values dropped because an attribute's type changed to one they cannot be converted to.
    pub values_not_convertible: usize,
    /// Ranges folded again because another compaction (or a purge) replaced their object
    /// meanwhile.
    pub ranges_redone: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Progress(#[from] ProgressError),
    #[error("`{path}`: {message}")]
    BadFile { path: String, message: String },
    #[error(transparent)]
    Purge(#[from] PurgeError),
    #[error("compaction scope: {0}")]
    Scope(String),
    #[error("`{path}`: still replaced by another compaction after {tries} tries")]
    Contended { path: String, tries: usize },
}

/// One of `count` disjoint shards of the range objects: range `lo` of tenant `t` belongs to
/// shard `(t + lo / range_size) mod count`, so that one tenant's ranges and many tenants' single
/// ranges both spread over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` (0 ≤ I < N).
    pub fn parse(text: &str) -> Result<Shard, CompactError> {
        let bad = || CompactError::Scope(format!("--shard `{text}`: expected I/N with 0 <= I < N, e.g. 0/4"));
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    fn owns(&self, tenant_id: i64, range_index: i64) -> bool {
        tenant_id.wrapping_add(range_index).rem_euclid(i64::from(self.count)) == i64::from(self.index)
    }
}

/// The part of the lake one compaction folds: every filter given must hold. The unit is a range
/// object, so an entity range must be aligned on `lake.range_size` (a range object is never
/// split between two scopes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactScope {
    pub entity_type: Option<String>,
    pub tenant: Option<i64>,
    /// `[lo, hi)`: the range objects whose first id lies inside.
    pub entity_range: Option<(i64, i64)>,
    pub shard: Option<Shard>,
}

impl CompactScope {
    /// Refuses an entity range that would cut a range object in two.
    pub fn validate(&self, range_size: i64) -> Result<(), CompactError> {
        if let Some((lo, hi)) = self.entity_range {
            let aligned = |v: i64| v == i64::MIN || v == i64::MAX || v.rem_euclid(range_size) == 0;
            if !aligned(lo) || !aligned(hi) {
                return Err(CompactError::Scope(format!(
                    "--entity-range {lo}..{hi}: both ends must be multiples of lake.range_size ({range_size}), \
                     so that no range object is shared by two scopes"
                )));
            }
        }
        Ok(())
    }

    /// Names the set of range objects of one tenant this scope covers (the tenant and type
    /// filters pick tenants, not ranges): `all`, `range-<lo>-<hi>`, `shard-<i>-of-<n>`.
    fn ranges_key(&self) -> String {
        let mut key = Vec::new();
        if let Some((lo, hi)) = self.entity_range {
            key.push(format!("range-{lo}-{hi}"));
        }
        if let Some(s) = self.shard {
            key.push(format!("shard-{}-of-{}", s.index, s.count));
        }
        if key.is_empty() {
            ALL_RANGES.to_string()
        } else {
            key.join("-")
        }
    }

    fn includes_type(&self, entity_type: &str) -> bool {
        self.entity_type.as_deref().is_none_or(|t| t == entity_type)
    }

    fn includes_tenant(&self, tenant_id: i64) -> bool {
        self.tenant.is_none_or(|t| t == tenant_id)
    }

    fn includes_range(&self, tenant_id: i64, lo: i64, range_size: i64) -> bool {
        self.entity_range.is_none_or(|(a, b)| a <= lo && lo < b)
            && self.shard.is_none_or(|s| s.owns(tenant_id, lo.div_euclid(range_size)))
    }
}

/// A change file, from its name: `<stream>-<first seq>-<last seq>[.<part>].parquet`.
#[derive(Debug, Clone, PartialEq)]
struct ChangeFile {
    path: Path,
    stream: String,
    first: i64,
    last: i64,
    /// Batches of one flush in the order they were closed (a type change closes one).
    part: u32,
}

fn parse_change_file(path: &Path) -> Option<ChangeFile> {
    let name = path.filename()?.strip_suffix(".parquet")?;
    let mut parts = name.rsplitn(3, '-');
    // A second batch of one flush (a type changed within it) carries a part number.
    let tail = parts.next()?;
    let (last, part) = match tail.split_once('.') {
        Some((last, part)) => (last, part.parse().ok()?),
        None => (tail, 0),
    };
    let last = last.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let stream = parts.next()?.to_string();
    Some(ChangeFile { path: path.clone(), stream, first, last, part })
}

/// Compacts every entity type and tenant of the lake.
pub async fn compact_all(lake: &Lake, opts: CompactOptions) -> Result<CompactStats, CompactError> {
    compact_scope(lake, opts, &CompactScope::default()).await
}

/// Compacts the range objects of `scope`.
pub async fn compact_scope(
    lake: &Lake,
    opts: CompactOptions,
    scope: &CompactScope,
) -> Result<CompactStats, CompactError> {
    scope.validate(opts.range_size)?;
    let durable: FxHashMap<String, i64> =
        progress::load_all(lake).await?.into_iter().map(|(k, v)| (k, v.last_seq)).collect();
    // Purged rows are left out of the current state (see `purge`).
    let mut purged = PurgeSet::load(lake).await?;
    let mut stats = CompactStats::default();
    let mut flush = FlushRows::default();
    for entity_type in lake.children(&Path::from("changes")).await? {
        if !scope.includes_type(&entity_type) {
            continue;
        }
        for tenant_dir in lake.children(&Lake::changes_prefix(&entity_type, None)).await? {
            let Some(tenant_id) = tenant_dir.strip_prefix("tenant_id=").and_then(|t| t.parse().ok()) else {
                tracing::warn!(entity_type, folder = tenant_dir, "skipping a folder that is not tenant_id=<n>");
                continue;
            };
            if purged.whole_tenant(tenant_id) || !scope.includes_tenant(tenant_id) {
                continue;
            }
            let of = TypeTenant { lake, entity_type: &entity_type, tenant_id, opts };
            compact_tenant(of, scope, &durable, &mut purged, &mut flush, &mut stats).await?;
        }
    }
    Ok(stats)
}

/// One entity type of one tenant in a lake: what compaction plans and folds at once.
#[derive(Clone, Copy)]
struct TypeTenant<'a> {
    lake: &'a Lake,
    entity_type: &'a str,
    tenant_id: i64,
    opts: CompactOptions,
}

/// Compacts one entity type of one tenant (the ranges of `scope`).
async fn compact_tenant(
    of: TypeTenant<'_>,
    scope: &CompactScope,
    durable: &FxHashMap<String, i64>,
    purged: &mut PurgeSet,
    flush: &mut FlushRows,
    stats: &mut CompactStats,
) -> Result<(), CompactError> {
    let TypeTenant { lake, entity_type, tenant_id, opts } = of;
    let changes = durable_changes(lake, entity_type, tenant_id, durable).await?;
    if changes.is_empty() {
        return Ok(());
    }
    let key = scope.ranges_key();
    let mut done = load_done(lake, entity_type, tenant_id, ALL_RANGES).await?;
    if key != ALL_RANGES {
        for (stream, last) in load_done(lake, entity_type, tenant_id, &key).await? {
            let mark = done.entry(stream).or_insert(i64::MIN);
            *mark = (*mark).max(last);
        }
    }
    let plan = plan_tenant(of, changes, &done).await?;
    if plan.changes.is_empty() {
        return Ok(());
    }
    let mut touched = plan.touched.clone();
    touched.retain(|&lo, _| scope.includes_range(tenant_id, lo, opts.range_size));
    // Neighbouring ranges are compacted together, so that each change file is read once per
    // group rather than once per range; a group holds the state of its ranges in memory, so it
    // is bounded by count and by the size of their current objects.
    for group in plan.groups(touched) {
        let mut pending = group;
        let mut tries = 0;
        // Ranges another compaction replaced while this one folded them are folded again from
        // that object: a few tries, since each conflict means the other side made progress.
        while !pending.is_empty() {
            tries += 1;
            let conflicts = compact_group(of, &plan, &pending, purged, flush, stats).await?;
            if !conflicts.is_empty() && tries >= MAX_CONFLICT_TRIES {
                let path = Lake::current_path(entity_type, tenant_id, conflicts[0], conflicts[0] + opts.range_size - 1);
                return Err(CompactError::Contended { path: path.to_string(), tries });
            }
            stats.ranges_redone += conflicts.len();
            pending.retain(|(lo, _)| conflicts.contains(lo));
        }
    }
    sweep_retired(lake, &plan, stats).await?;
    // Every range of the scope now has every planned file applied: later compactions of this
    // scope (or, for `all`, of any scope) need not read those files again.
    for f in &plan.changes {
        let mark = done.entry(f.stream.clone()).or_insert(i64::MIN);
        *mark = (*mark).max(f.last);
    }
    let body = serde_json::to_vec(&done).map_err(|e| CompactError::BadFile {
        path: done_path(entity_type, tenant_id, &key).to_string(),
        message: e.to_string(),
    })?;
    lake.put(&done_path(entity_type, tenant_id, &key), body.into()).await?;
    Ok(())
}

/// How old an object of retired entities that no current object names must be before a
/// compaction deletes it. A compaction writes its object moments before the current object that
/// names it; one that died in between left it to nobody. Far longer than any compaction's gap
/// between its two writes, so an object about to be named is never taken.
const RETIRED_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Deletes the tenant's retired objects that no current object named when the compaction began
/// and that are older than [`RETIRED_GRACE`].
async fn sweep_retired(lake: &Lake, plan: &TenantPlan, stats: &mut CompactStats) -> Result<(), CompactError> {
    let now = chrono::Utc::now();
    for meta in &plan.retired {
        let age = now.signed_duration_since(meta.last_modified).to_std().unwrap_or_default();
        if plan.named_retired.contains(&meta.location) || age < RETIRED_GRACE {
            continue;
        }
        lake.delete(&meta.location).await?;
        stats.retired_objects_swept += 1;
        tracing::info!(path = %meta.location, age_s = age.as_secs(), "object of retired entities that no current object names deleted");
    }
    Ok(())
}

/// The scope key of a compaction of every range.
const ALL_RANGES: &str = "all";

/// Where a scope's "files applied" marks are kept for one tenant's entity type: per stream, the
/// last position of change files applied to every range of the scope. Outside `current/`, which
/// engines read whole.
fn done_path(entity_type: &str, tenant_id: i64, key: &str) -> Path {
    Lake::meta_path(&format!("compacted/{entity_type}/tenant_id={tenant_id}/{key}.json"))
}

async fn load_done(lake: &Lake, entity_type: &str, tenant_id: i64, key: &str) -> Result<Watermarks, CompactError> {
    let path = done_path(entity_type, tenant_id, key);
    match lake.get(&path).await? {
        None => Ok(Watermarks::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CompactError::BadFile { path: path.to_string(), message: format!("compaction marks: {e}") }),
    }
}

/// Folds of one group before giving up on a range that other compactions keep replacing.
const MAX_CONFLICT_TRIES: usize = 5;

/// The change files of a tenant's entity type that the streams' progress records cover, oldest
/// first (so that the newest file's type of a column wins).
async fn durable_changes(
    lake: &Lake,
    entity_type: &str,
    tenant_id: i64,
    durable: &FxHashMap<String, i64>,
) -> Result<Vec<ChangeFile>, CompactError> {
    let mut changes: Vec<ChangeFile> = lake
        .list(&Lake::changes_prefix(entity_type, Some(tenant_id)))
        .await?
        .iter()
        .filter_map(|m| parse_change_file(&m.location))
        .filter(|f| durable.get(&f.stream).is_some_and(|d| f.last <= *d))
        .collect();
    // The path last: files of one flush differ by date only, and their order decides the order
    // of a range's columns; a local folder lists them in no fixed order.
    changes.sort_by(|a, b| (a.first, a.part, &a.stream, &a.path).cmp(&(b.first, b.part, &b.stream, &b.path)));
    Ok(changes)
}

/// What folding a tenant's entity type needs: its change files newer than some range's
/// watermarks, the ranges each of them is new to, and the existing ranges.
struct TenantPlan {
    changes: Vec<ChangeFile>,
    cache: Vec<Option<Arc<ParquetObject>>>,
    /// Range start → indexes (into `changes`) of the files new to it.
    touched: BTreeMap<i64, Vec<usize>>,
    /// Compressed size of each existing range's current object and the retired object it names.
    sizes: BTreeMap<i64, usize>,
    /// The tenant's retired objects, as listed when the compaction began.
    retired: Vec<object_store::ObjectMeta>,
    /// Those the tenant's current objects named then (see [`sweep_retired`]).
    named_retired: BTreeSet<Path>,
}

impl TenantPlan {
    /// Splits ranges into groups of neighbours folded together (see [`GROUP_RANGES`]).
    fn groups(&self, ranges: BTreeMap<i64, Vec<usize>>) -> Vec<Vec<(i64, Vec<usize>)>> {
        let mut groups = Vec::new();
        let mut group: Vec<(i64, Vec<usize>)> = Vec::new();
        let mut group_bytes = 0usize;
        for (lo, files) in ranges {
            let size = self.sizes.get(&lo).copied().unwrap_or(0);
            if !group.is_empty() && (group.len() >= GROUP_RANGES || group_bytes + size > GROUP_BYTES) {
                groups.push(std::mem::take(&mut group));
                group_bytes = 0;
            }
            group_bytes += size;
            group.push((lo, files));
        }
        if !group.is_empty() {
            groups.push(group);
        }
        groups
    }
}

/// Plans with the files that may be new to some range: those past `done` (the scope's marks;
/// see [`done_path`]). Not the oldest watermark among existing range objects: a range with no
/// object yet (a compaction cut short, or another scope's) would never get the older files.
async fn plan_tenant(
    of: TypeTenant<'_>,
    mut changes: Vec<ChangeFile>,
    done: &Watermarks,
) -> Result<TenantPlan, CompactError> {
    let TypeTenant { lake, entity_type, tenant_id, opts } = of;
    // Watermarks of the existing ranges decide which change files are new to which range.
    let mut ranges: BTreeMap<i64, Watermarks> = BTreeMap::new();
    let mut sizes: BTreeMap<i64, usize> = BTreeMap::new();
    let retired = lake.list(&Lake::retired_prefix(entity_type, tenant_id)).await?;
    // By path: each range looks its object up (a search of the listing per range would grow
    // with ranges times objects).
    let retired_sizes: HashMap<&Path, u64> = retired.iter().map(|r| (&r.location, r.size)).collect();
    let mut named_retired = BTreeSet::new();
    for meta in lake.list(&Lake::current_prefix(entity_type, tenant_id)).await? {
        let Some(lo) = parse_range(&meta.location) else { continue };
        // The footer alone: the fold reads the object whole, with its version, later.
        let Some(footer) = read_footer(lake, &meta.location).await? else { continue };
        ranges.insert(lo, read_watermarks(footer.metadata(columns::META_WATERMARKS), &meta.location)?);
        // The range's logically deleted entities are held with it while it is folded.
        let named = footer.metadata(columns::META_RETIRED).and_then(|n| Path::parse(n).ok());
        let retired_size = named.as_ref().and_then(|n| retired_sizes.get(n)).copied().unwrap_or(0);
        sizes.insert(lo, (footer.size + retired_size) as usize);
        named_retired.extend(named);
    }
    changes.retain(|f| done.get(&f.stream).is_none_or(|d| f.last > *d));

    // Which ranges each new change file touches, from its entity_id statistics. Opened files
    // are kept for the ranges while they fit CACHE_BYTES, so most are fetched once.
    let mut touched: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut cache: Vec<Option<Arc<ParquetObject>>> = vec![None; changes.len()];
    let mut cached_bytes = 0usize;
    for (i, f) in changes.iter().enumerate() {
        let Some(bytes) = lake.get(&f.path).await? else { continue };
        let len = bytes.len();
        let obj = Arc::new(ParquetObject::open(f.path.as_ref(), bytes)?);
        if cached_bytes + len <= CACHE_BYTES {
            cached_bytes += len;
            cache[i] = Some(obj.clone());
        }
        for lo in obj.entity_id_ranges(opts.range_size)? {
            let fresh = ranges.get(&lo).is_none_or(|w| f.last > w.get(&f.stream).copied().unwrap_or(i64::MIN));
            if fresh {
                touched.entry(lo).or_default().push(i);
            }
        }
    }
    Ok(TenantPlan { changes, cache, touched, sizes, retired, named_retired })
}

/// One attribute column of the current state: name, attribute id, data type.
pub type CurrentColumn = (Arc<str>, i64, DataType);

/// Reads the current state of one entity type of one tenant as a reader of the lake should see
/// it, without writing anything: each range's current object with the durable change rows newer
/// than its watermarks applied, exactly as [`compact_all`] would write it. With `spans`
/// (inclusive, sorted `[lo, hi]` entity-id spans), only ranges and row groups overlapping them
/// are read, and only entities inside them are visited.
///
/// `visit` gets each range's start, its columns and its live entities in entity_id order (each
/// entity's cells indexed like the columns; a missing or `None` cell is null).
pub async fn read_current_state<E>(
    lake: &Lake,
    entity_type: &str,
    tenant_id: i64,
    opts: CompactOptions,
    durable: &FxHashMap<String, i64>,
    spans: Option<&[(i64, i64)]>,
    mut visit: impl FnMut(i64, &[CurrentColumn], &mut dyn Iterator<Item = (i64, &[Option<Value>])>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<CompactError>,
{
    let purged = PurgeSet::load(lake).await.map_err(CompactError::from)?;
    if purged.whole_tenant(tenant_id) {
        return Ok(());
    }
    let changes = durable_changes(lake, entity_type, tenant_id, durable).await?;
    let done = load_done(lake, entity_type, tenant_id, ALL_RANGES).await?;
    let of = TypeTenant { lake, entity_type, tenant_id, opts };
    let plan = plan_tenant(of, changes, &done).await?;
    let overlaps = |lo: i64, hi: i64| spans.is_none_or(|s| s.iter().any(|&(a, b)| a <= hi && b >= lo));
    let mut ranges: BTreeMap<i64, Vec<usize>> = plan.touched.clone();
    for &lo in plan.sizes.keys() {
        ranges.entry(lo).or_default();
    }
    ranges.retain(|&lo, _| overlaps(lo, lo + opts.range_size - 1));
    let inside = |id: i64| spans.is_none_or(|s| s.iter().any(|&(a, b)| a <= id && id <= b));
    let mut flush = FlushRows::default();
    for group in plan.groups(ranges) {
        let mut stats = CompactStats::default();
        let (cols, work) = fold_group(of, &plan, &group, spans, &purged, &mut flush, &mut stats).await?;
        for w in &work {
            let mut entities = w.state.iter().filter(|(id, _)| inside(*id)).map(|(id, s)| (*id, s.cells.as_slice()));
            visit(w.lo, &cols.cols, &mut entities)?;
        }
    }
    Ok(())
}

type Watermarks = BTreeMap<String, i64>;

/// Compressed bytes of change files kept open across the ranges of one tenant.
const CACHE_BYTES: usize = 8 << 20;

/// Ranges compacted together at most, and the compressed size of their current objects.
/// Measured on a 10M-event lake (144 ranges): 1 range per group read each change file 5
/// times (10.8 s, 51 MiB peak), 4 ranges 7.2 s and 90 MiB, 8 ranges 5.8 s but 128 MiB. Since
/// change rows are applied a flush at a time, 4 ranges peak at 78 MiB and 8 at 100 MiB for
/// 5-10% less CPU.
const GROUP_RANGES: usize = 4;
const GROUP_BYTES: usize = 16 << 20;

fn parse_range(path: &Path) -> Option<i64> {
    let name = path.filename()?.strip_prefix("entities-")?.strip_suffix(".parquet")?;
    name.split('-').next()?.parse().ok()
}

/// The last bytes of a current object read for its footer at first: more than the footer of a
/// hundred attribute columns with eavlake's metadata (7 KiB for fourteen); a larger footer takes
/// another read.
const FOOTER_GUESS: u64 = 64 << 10;

/// The footer of a current object, read from its end rather than whole; `None` if the object no
/// longer exists.
async fn read_footer(lake: &Lake, path: &Path) -> Result<Option<ParquetFooter>, CompactError> {
    let mut want = FOOTER_GUESS;
    // A second read takes what the first said the footer needs; a third, an object replaced by
    // a larger one in between.
    for _ in 0..3 {
        let Some((tail, size)) = lake.get_suffix(path, want).await? else { return Ok(None) };
        match ParquetFooter::parse(path.as_ref(), &tail, size)? {
            Ok(footer) => return Ok(Some(footer)),
            Err(needed) => want = needed.max(want * 2),
        }
    }
    Err(CompactError::BadFile { path: path.to_string(), message: "footer still incomplete after three reads".into() })
}

/// A current object's watermarks, from its `eavlake.watermarks` metadata (`None`: no watermarks).
fn read_watermarks(text: Option<String>, path: &Path) -> Result<Watermarks, CompactError> {
    match text {
        None => Ok(Watermarks::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| CompactError::BadFile { path: path.to_string(), message: format!("watermarks: {e}") }),
    }
}

/// The attribute columns of a range, by name, with their final type.
#[derive(Default)]
struct ColumnSet {
    cols: Vec<(Arc<str>, i64, DataType)>,
    by_name: HashMap<Arc<str>, usize>,
    /// Whether a registration changed a column's type: only then can a cell hold a value of
    /// another type than its column's (see [`settle_types`]).
    retyped: bool,
}

impl ColumnSet {
    /// Registers a column; a later registration's type wins.
    fn register(&mut self, name: &str, attribute_id: i64, data_type: DataType) -> usize {
        match self.by_name.get(name) {
            Some(&i) => {
                self.retyped |= self.cols[i].2 != data_type;
                self.cols[i].1 = attribute_id;
                self.cols[i].2 = data_type;
                i
            }
            None => {
                let name: Arc<str> = Arc::from(name);
                self.cols.push((name.clone(), attribute_id, data_type));
                self.by_name.insert(name, self.cols.len() - 1);
                self.cols.len() - 1
            }
        }
    }
}

/// The state of one live entity: a cell per column of the [`ColumnSet`].
struct EntityState {
    cells: Vec<Option<Value>>,
    commit_lsn: i64,
    lsn: i64,
    source_ts: Option<i64>,
}

/// One change row of a range, with only the cells it changed (in [`FlushRows::cells`]).
struct ChangeRow {
    /// Index of its range in the group.
    target: usize,
    entity_id: i64,
    seq: i64,
    stream: usize,
    delete: bool,
    /// A delete that set `is_deleted` (see `columns::LOGICAL_DELETE`).
    logical: bool,
    /// An insert of the entity's row (a new entity under the id), or a snapshot read of it (the
    /// entity as it is now): nothing of a logically deleted entity under the id comes back.
    fresh: bool,
    entity_changed: bool,
    cells: std::ops::Range<usize>,
    commit_lsn: i64,
    lsn: i64,
    source_ts: Option<i64>,
}

/// The change rows of one flush (change files whose spans of positions overlap: see
/// `fold_group`) for the ranges of a group: applied before the next flush's are read, so that a
/// group holds its ranges' state and one flush's rows, not every row of the history it folds.
/// Positions of different streams are not comparable: files of several streams whose spans
/// interleave are applied together (as much memory as all their rows, never a wrong order).
///
/// One is kept across the groups of a compaction, so that its buffers grow once: growing them
/// again for every group, in fresh pages, was a third of a compaction's page faults.
#[derive(Default)]
struct FlushRows {
    rows: Vec<ChangeRow>,
    /// The cells of every row, one allocation for all of them.
    cells: Vec<(usize, Option<Value>)>,
}

impl FlushRows {
    /// Empties the buffer, keeping its allocations.
    fn clear(&mut self) {
        self.rows.clear();
        self.cells.clear();
    }
}

/// The live entities of a range, sorted by entity_id, each id once. A sorted vector rather
/// than a map: a flush's rows come sorted by entity too, so applying them is a merge (two map
/// searches per row and the map's nodes were half of applying a 1M-event lake's rows).
type RangeState = Vec<(i64, EntityState)>;

/// One range of a group being compacted.
struct RangeWork {
    lo: i64,
    path: Path,
    /// Version of the current object as read: the write back is conditional on it.
    version: Version,
    state: RangeState,
    /// The range's logically deleted entities, in entity order like `state`; an id is in one
    /// of the two at most.
    retired: RangeState,
    /// The object `retired` was read from, deleted once the current object no longer names it.
    retired_from: Option<Path>,
    /// Whether `retired` differs from that object: if not, the new current object names it
    /// again rather than a copy (most compactions change no logically deleted entity).
    retired_changed: bool,
    watermarks: Watermarks,
    /// Indexes (into the tenant's change files) of the files new to this range.
    files: Vec<usize>,
}

/// Folds neighbouring ranges of one tenant: each range's object is read, the change files new
/// to any of them are read once and their rows routed to their range and applied. The ranges
/// share one column set, so they agree on their columns and types. With `spans`, only the row
/// groups of current objects that overlap them are read.
async fn fold_group(
    of: TypeTenant<'_>,
    plan: &TenantPlan,
    group: &[(i64, Vec<usize>)],
    spans: Option<&[(i64, i64)]>,
    purged: &PurgeSet,
    flush: &mut FlushRows,
    stats: &mut CompactStats,
) -> Result<(ColumnSet, Vec<RangeWork>), CompactError> {
    let TypeTenant { lake, entity_type, tenant_id, opts } = of;
    let (changes, cache) = (&plan.changes, &plan.cache);
    let mut cols = ColumnSet::default();
    let mut work: Vec<RangeWork> = Vec::with_capacity(group.len());
    for (lo, files) in group {
        let hi = lo + opts.range_size - 1;
        let path = Lake::current_path(entity_type, tenant_id, *lo, hi);
        let (current, version, retired) = read_range(lake, &path).await?;
        let mut w = RangeWork {
            lo: *lo,
            path,
            version,
            state: RangeState::new(),
            retired: RangeState::new(),
            retired_from: None,
            retired_changed: false,
            watermarks: Watermarks::new(),
            files: files.clone(),
        };
        if let Some(obj) = current {
            w.watermarks = read_watermarks(obj.metadata(columns::META_WATERMARKS), &w.path)?;
            let row_groups = match spans {
                None => obj.row_groups_for(*lo, hi),
                Some(spans) => {
                    let mut rgs: Vec<usize> = spans
                        .iter()
                        .filter(|&&(a, b)| a <= hi && b >= *lo)
                        .flat_map(|&(a, b)| obj.row_groups_for(a.max(*lo), b.min(hi)))
                        .collect();
                    rgs.sort_unstable();
                    rgs.dedup();
                    rgs
                }
            };
            for batch in obj.read_without(row_groups, &[columns::TENANT_ID], &[])? {
                load_current(&batch, &mut cols, &mut w.state, &w.path)?;
            }
            sort_state(&mut w.state);
        }
        if let Some((from, obj)) = retired {
            for batch in obj.read_without(obj.row_groups_for(*lo, hi), &[columns::TENANT_ID], &[])? {
                load_current(&batch, &mut cols, &mut w.retired, &from)?;
            }
            sort_state(&mut w.retired);
            w.retired_from = Some(from);
        }
        work.push(w);
    }

    let mut streams: Vec<&str> = changes.iter().map(|f| f.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut all_files: Vec<usize> = work.iter().flat_map(|w| w.files.iter().copied()).collect();
    // Oldest first (the order of `changes`), so that the newest file's type of a column wins.
    all_files.sort_unstable();
    all_files.dedup();
    // Left with rows only by a fold that failed part way.
    flush.clear();
    // The highest position named by a file whose rows are read and not applied yet.
    let mut flush_last: Option<i64> = None;
    for fi in all_files {
        let f = &changes[fi];
        // A file's rows lie within the positions its name gives, and files come in order of
        // their first. Files whose spans overlap are applied together: those of one flush
        // (split by date and type change), and a flush holding slices of a huge transaction
        // past its durable position next to the later flush that writes the rows before them.
        if flush_last.is_some_and(|last| f.first > last) {
            apply_flush(&mut work, flush, cols.cols.len(), stats);
            flush_last = None;
        }
        flush_last = Some(flush_last.map_or(f.last, |last| last.max(f.last)));
        let si = streams.binary_search(&f.stream.as_str()).unwrap_or(0);
        // The ranges this file is new to, and from which position on (their watermark).
        let targets: Vec<(usize, i64)> = work
            .iter()
            .enumerate()
            .filter(|(_, w)| w.files.contains(&fi))
            .map(|(i, w)| (i, w.watermarks.get(&f.stream).copied().unwrap_or(i64::MIN)))
            .collect();
        let (Some(first), Some(last)) = (targets.first(), targets.last()) else { continue };
        let (lo, hi) = (work[first.0].lo, work[last.0].lo + opts.range_size - 1);
        let obj = match &cache[fi] {
            Some(obj) => obj.clone(),
            None => {
                let Some(bytes) = lake.get(&f.path).await? else { continue };
                Arc::new(ParquetObject::open(f.path.as_ref(), bytes)?)
            }
        };
        stats.change_files_read += 1;
        let route = |entity_id: i64| -> Option<(usize, i64)> {
            let range_lo = entity_id.div_euclid(opts.range_size) * opts.range_size;
            targets.iter().find(|(i, _)| work[*i].lo == range_lo).copied()
        };
        for batch in obj.read_without(obj.row_groups_for(lo, hi), CHANGE_COLUMNS_UNUSED, CHANGE_COLUMNS_DICTIONARY)? {
            read_changes(&batch, &route, si, &mut cols, flush, &f.path)?;
        }
    }
    apply_flush(&mut work, flush, cols.cols.len(), stats);

    let types: Vec<DataType> = cols.cols.iter().map(|c| c.2).collect();
    for w in &mut work {
        // Every cell was read from a column of its column's one type otherwise: nothing to
        // convert (a pass over every cell of the group, 0.8% of a 1M-event file run).
        if cols.retyped {
            settle_types(&mut w.state, &types, opts.decimal_scale, stats);
            settle_types(&mut w.retired, &types, opts.decimal_scale, stats);
            w.retired_changed |= !w.retired.is_empty();
        }
        if purged.touches(tenant_id) {
            drop_purged(w, purged, tenant_id);
        }
    }
    Ok((cols, work))
}

/// Reads of a range's objects when the retired object its current object names is gone: each
/// means another compaction replaced both meanwhile.
const RETIRED_READS: usize = 4;

/// A range's current object (if any) with its version, and the retired object it names.
async fn read_range(
    lake: &Lake,
    path: &Path,
) -> Result<(Option<ParquetObject>, Version, Option<(Path, ParquetObject)>), CompactError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (bytes, version) = lake.get_versioned(path).await?;
        let Some(bytes) = bytes else { return Ok((None, version, None)) };
        let obj = ParquetObject::open(path.as_ref(), bytes)?;
        let Some(named) = obj.metadata(columns::META_RETIRED) else { return Ok((Some(obj), version, None)) };
        let named = Path::parse(&named).map_err(|e| bad(path, format!("{}: {e}", columns::META_RETIRED)))?;
        match lake.get(&named).await? {
            Some(bytes) => {
                let retired = ParquetObject::open(named.as_ref(), bytes)?;
                return Ok((Some(obj), version, Some((named, retired))));
            }
            None if attempt < RETIRED_READS => {}
            None => {
                // Not replaced, yet gone: removed by hand. The live entities are all there.
                tracing::warn!(
                    path = %path,
                    retired = %named,
                    "the range's logically deleted entities are missing from the lake: an un-delete will bring back their hot attributes only (reconcile --repair heals them)"
                );
                return Ok((Some(obj), version, None));
            }
        }
    }
}

/// A part of an object name no other writer uses: the time, the process and a count within it.
fn new_token() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{count:x}", std::process::id())
}

/// Compacts neighbouring ranges of one tenant: folds them ([`fold_group`]) and writes each
/// range back with one conditional PUT. Returns the ranges whose object another compaction
/// replaced meanwhile (not written: to be folded again).
async fn compact_group(
    of: TypeTenant<'_>,
    plan: &TenantPlan,
    group: &[(i64, Vec<usize>)],
    purged: &mut PurgeSet,
    flush: &mut FlushRows,
    stats: &mut CompactStats,
) -> Result<Vec<i64>, CompactError> {
    let TypeTenant { lake, tenant_id, opts, .. } = of;
    let changes = &plan.changes;
    let mut conflicts = Vec::new();
    let (cols, mut work) = fold_group(of, plan, group, None, purged, flush, stats).await?;
    let scale = opts.decimal_scale;
    for w in &mut work {
        // A purge recorded while this group was folded: its rows must not come back with this
        // write (the purge, waiting before it rewrites, reads what this writes).
        if purged.refresh(lake).await? {
            if purged.whole_tenant(tenant_id) {
                return Ok(Vec::new());
            }
            drop_purged(w, purged, tenant_id);
        }
        for &fi in &w.files {
            let f = &changes[fi];
            let mark = w.watermarks.entry(f.stream.clone()).or_insert(i64::MIN);
            *mark = (*mark).max(f.last);
        }
        let wm = serde_json::to_string(&w.watermarks).unwrap_or_default();
        let mut metadata = vec![(columns::META_WATERMARKS.to_string(), wm)];
        // Changed retired entities first, under a new name: the current object's PUT makes it
        // the range's (see the module documentation).
        let (named, written) = match &w.retired_from {
            _ if w.retired.is_empty() => (None, None),
            Some(from) if !w.retired_changed => (Some(from.clone()), None),
            _ => {
                let path =
                    Lake::retired_path(of.entity_type, tenant_id, w.lo, w.lo + opts.range_size - 1, &new_token());
                let batch = current_batch(tenant_id, &cols, &w.retired, scale)?;
                lake.put(&path, encode(path.as_ref(), &[batch], Vec::new())?).await?;
                (Some(path.clone()), Some(path))
            }
        };
        if let Some(path) = &named {
            metadata.push((columns::META_RETIRED.to_string(), path.to_string()));
        }
        let batch = current_batch(tenant_id, &cols, &w.state, scale)?;
        let bytes = encode(w.path.as_ref(), &[batch], metadata)?;
        match lake.put_if(&w.path, bytes, &w.version).await {
            Ok(_) => {}
            Err(SinkError::Conflict { .. }) => {
                // Another compaction or a purge replaced it: folded again from that object.
                tracing::info!(path = %w.path, "current object replaced by another writer meanwhile: folding it again");
                if let Some(path) = &written {
                    lake.delete(path).await?;
                }
                conflicts.push(w.lo);
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(old) = w.retired_from.as_ref().filter(|old| Some(*old) != named.as_ref()) {
            lake.delete(old).await?;
        }
        stats.ranges_written += 1;
        stats.live_entities += w.state.len();
        stats.retired_entities += w.retired.len();
        tracing::debug!(path = %w.path, entities = w.state.len(), "range compacted");
    }
    Ok(conflicts)
}

/// Leaves purged entities out of a range, live and logically deleted.
fn drop_purged(w: &mut RangeWork, purged: &PurgeSet, tenant_id: i64) {
    w.state.retain(|(id, _)| !purged.removes(tenant_id, *id));
    let before = w.retired.len();
    w.retired.retain(|(id, _)| !purged.removes(tenant_id, *id));
    w.retired_changed |= w.retired.len() != before;
}

/// Columns of change files that folding does not use: not decoded.
const CHANGE_COLUMNS_UNUSED: &[&str] =
    &[columns::TENANT_ID, columns::TX_ID, columns::KAFKA_TOPIC, columns::KAFKA_PARTITION, columns::KAFKA_OFFSET];
/// Columns of change files read as dictionaries: the operation and the names of the changed
/// attributes repeat on every row, and as dictionary keys each name is looked up once per batch
/// (callgrind: reading them as strings, then a hash lookup per name, was 3% of a run).
const CHANGE_COLUMNS_DICTIONARY: &[&str] = &[columns::OP, columns::CHANGED];

/// `v` as a value of `to`: itself when it already is one (no copy of its text), else converted.
fn convert_owned(v: Value, to: DataType, scale: u32) -> Option<Value> {
    let same = matches!(
        (&v, to),
        (Value::Int(_), DataType::Int)
            | (Value::Decimal(_), DataType::Decimal)
            | (Value::Bool(_), DataType::Bool)
            | (Value::Timestamp(_), DataType::Timestamp)
            | (Value::Text(_), DataType::Text | DataType::Json)
    );
    if same {
        Some(v)
    } else {
        v.convert(to, scale)
    }
}

/// Applies one flush's change rows to their ranges' state, in stream order per entity (its rows
/// come from several files, so they are sorted first). Cell values keep the type their file
/// gave them until [`settle_types`].
///
/// Rows written twice (a crash while a transaction was folded in slices: see `pipeline`) need
/// no special care: the restarted writer wrote again every row after its durable position, so
/// the second copies are a replay of a whole suffix of the stream, which ends in the same state.
fn apply_flush(work: &mut [RangeWork], flush: &mut FlushRows, columns: usize, stats: &mut CompactStats) {
    let FlushRows { rows, cells } = flush;
    // The entity's changes all come from one stream. The keys are sorted, not the rows: a
    // row is several times their size. Each file's rows come in this order already (files are
    // sorted by entity and position, and ranges follow entities), so the stable sort, which
    // merges the runs it finds, does a fraction of the unstable one's work (callgrind: 4% of a
    // compaction went to this sort); the keys are distinct, so the order is the same.
    let mut order: Vec<(usize, i64, usize, i64, u32)> =
        rows.iter().enumerate().map(|(i, r)| (r.target, r.entity_id, r.stream, r.seq, i as u32)).collect();
    order.sort();
    stats.rows_applied += rows.len();
    let mut order = order.into_iter().map(|(.., i)| &rows[i as usize]).peekable();
    // Per range, its state merged with its rows: entities before the next row's are moved
    // over as they are; an entity with rows is taken out (live or retired), has them applied
    // in order, and is put back where it ends.
    while let Some(&first) = order.peek() {
        let w = &mut work[first.target];
        let (old, old_retired) = (std::mem::take(&mut w.state), std::mem::take(&mut w.retired));
        let mut state: RangeState = Vec::with_capacity(old.len() + 16);
        let mut retired: RangeState = Vec::with_capacity(old_retired.len());
        let (mut old, mut old_retired) = (old.into_iter().peekable(), old_retired.into_iter().peekable());
        let mut retired_changed = false;
        while let Some(&next) = order.peek().filter(|r| r.target == first.target) {
            let id = next.entity_id;
            while let Some(entry) = old.next_if(|(e, _)| *e < id) {
                state.push(entry);
            }
            while let Some(entry) = old_retired.next_if(|(e, _)| *e < id) {
                retired.push(entry);
            }
            let mut entity = old.next_if(|(e, _)| *e == id).map(|(_, st)| st);
            let mut gone = old_retired.next_if(|(e, _)| *e == id).map(|(_, st)| st);
            let was_retired = gone.is_some();
            while let Some(r) = order.next_if(|r| r.target == first.target && r.entity_id == id) {
                apply_row(r, &mut entity, &mut gone, cells, columns);
            }
            retired_changed |= was_retired || gone.is_some();
            if let Some(st) = entity {
                state.push((id, st));
            }
            if let Some(st) = gone {
                retired.push((id, st));
            }
        }
        state.extend(old);
        retired.extend(old_retired);
        w.state = state;
        w.retired = retired;
        w.retired_changed |= retired_changed;
    }
    flush.clear();
}

/// Applies one change row to its entity, `live` or `retired` (logically deleted), at most one
/// of them set.
fn apply_row(
    r: &ChangeRow,
    live: &mut Option<EntityState>,
    retired: &mut Option<EntityState>,
    cells: &mut [(usize, Option<Value>)],
    columns: usize,
) {
    if r.delete && !r.logical {
        *live = None;
        *retired = None;
        return;
    }
    if r.fresh {
        *retired = None;
    }
    let st = if r.delete {
        // Logically deleted: kept with its values, and the values this row set.
        if let Some(st) = live.take() {
            *retired = Some(st);
        }
        retired
    } else if r.entity_changed {
        // Un-deleted (or changed while live).
        if live.is_none() {
            *live = retired.take();
        }
        live
    } else if live.is_some() {
        live
    } else {
        // Values of a logically deleted entity are kept for it; values of an entity the lake
        // does not hold (deleted, or deleted later in a transaction folded in slices) never
        // create it.
        retired
    };
    if !r.entity_changed && st.is_none() {
        return;
    }
    let st = st.get_or_insert_with(|| EntityState {
        // Sized once: cells are most of a group's memory, and growing by doubling wastes up to
        // half of it.
        cells: vec![None; columns],
        commit_lsn: 0,
        lsn: 0,
        source_ts: None,
    });
    for (i, v) in &mut cells[r.cells.clone()] {
        if *i >= st.cells.len() {
            // A column registered after the entity was created (a new attribute).
            grow_exact(&mut st.cells, columns);
        }
        st.cells[*i] = v.take();
    }
    st.commit_lsn = r.commit_lsn;
    st.lsn = r.lsn;
    st.source_ts = r.source_ts;
}

/// Puts a range's state read from its object in entity order, each entity once (the last row
/// of an id wins, as it would have in a map). An object eavlake wrote is in order already.
fn sort_state(state: &mut RangeState) {
    if state.windows(2).all(|p| p[0].0 < p[1].0) {
        return;
    }
    // Stable: rows of one id stay in the order they were read, so the last one is kept.
    state.sort_by_key(|(id, _)| *id);
    let mut kept: RangeState = Vec::with_capacity(state.len());
    for entry in state.drain(..) {
        match kept.last_mut() {
            Some(last) if last.0 == entry.0 => *last = entry,
            _ => kept.push(entry),
        }
    }
    *state = kept;
}

/// Adds null cells up to `len`, allocating no more than that (`resize` would double).
fn grow_exact(cells: &mut Vec<Option<Value>>, len: usize) {
    cells.reserve_exact(len.saturating_sub(cells.len()));
    cells.resize(len.max(cells.len()), None);
}

/// Gives every cell of a range its column's final type (an attribute's type may have changed
/// within the files folded): converted when that loses nothing, else null and counted.
fn settle_types(state: &mut RangeState, types: &[DataType], scale: u32, stats: &mut CompactStats) {
    for (_, st) in state {
        grow_exact(&mut st.cells, types.len());
        for (c, &to) in st.cells.iter_mut().zip(types) {
            if let Some(v) = c.take() {
                *c = convert_owned(v, to, scale);
                stats.values_not_convertible += usize::from(c.is_none());
            }
        }
    }
}

fn bad(path: &Path, message: impl Into<String>) -> CompactError {
    CompactError::BadFile { path: path.to_string(), message: message.into() }
}

fn int64<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a arrow::array::Int64Array, CompactError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| bad(path, format!("no Int64 column `{name}`")))
}

/// The attribute columns of a batch, registered in the column set: (batch column, set column).
fn attribute_columns(batch: &RecordBatch, cols: &mut ColumnSet) -> Vec<(usize, usize)> {
    batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(bi, f)| columns::attribute_of(f).map(|(id, dt)| (bi, cols.register(f.name(), id, dt))))
        .collect()
}

/// The typed arrays of a batch's attribute columns, by batch column (`None`: not an attribute).
fn attribute_arrays<'a>(
    batch: &'a RecordBatch,
    attrs: &[(usize, usize)],
    path: &Path,
) -> Result<Vec<Option<AttrArray<'a>>>, CompactError> {
    let mut arrays: Vec<Option<AttrArray>> = (0..batch.num_columns()).map(|_| None).collect();
    for &(bi, _) in attrs {
        arrays[bi] = Some(AttrArray::of(batch.column(bi), path)?);
    }
    Ok(arrays)
}

fn load_current(
    batch: &RecordBatch,
    cols: &mut ColumnSet,
    state: &mut RangeState,
    path: &Path,
) -> Result<(), CompactError> {
    let ids = int64(batch, columns::ENTITY_ID, path)?;
    let attrs = attribute_columns(batch, cols);
    let arrays = attribute_arrays(batch, &attrs, path)?;
    let commit = batch.column_by_name(columns::COMMIT_LSN).and_then(|c| c.as_primitive_opt::<Int64Type>());
    let lsn = batch.column_by_name(columns::LSN).and_then(|c| c.as_primitive_opt::<Int64Type>());
    let ts = batch.column_by_name(columns::SOURCE_TS).and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
    for row in 0..batch.num_rows() {
        let mut cells = vec![None; cols.cols.len()];
        for &(bi, ci) in &attrs {
            cells[ci] = arrays[bi].as_ref().and_then(|a| a.cell(row));
        }
        state.push((
            ids.value(row),
            EntityState {
                cells,
                commit_lsn: commit.map_or(0, |c| c.value(row)),
                lsn: lsn.map_or(0, |c| c.value(row)),
                source_ts: ts.and_then(|c| c.is_valid(row).then(|| c.value(row))),
            },
        ));
    }
    Ok(())
}

/// Adds to `flush` the change rows of a batch that `route` sends to a range (with that range's
/// watermark for this file's stream).
fn read_changes(
    batch: &RecordBatch,
    route: &dyn Fn(i64) -> Option<(usize, i64)>,
    stream: usize,
    cols: &mut ColumnSet,
    flush: &mut FlushRows,
    path: &Path,
) -> Result<(), CompactError> {
    let ids = int64(batch, columns::ENTITY_ID, path)?;
    let seqs = int64(batch, columns::SEQ, path)?;
    let commit = int64(batch, columns::COMMIT_LSN, path)?;
    let lsn = int64(batch, columns::LSN, path)?;
    let ts = batch
        .column_by_name(columns::SOURCE_TS)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| bad(path, "no _source_ts column"))?;
    let ops = batch.column_by_name(columns::OP).ok_or_else(|| bad(path, "no _op column"))?;
    let ops = string_values(ops).ok_or_else(|| bad(path, "_op is not text"))?;
    let changed = batch
        .column_by_name(columns::CHANGED)
        .and_then(|c| c.as_list_opt::<i32>())
        .ok_or_else(|| bad(path, "no _changed list column"))?;
    let entity_changed = batch
        .column_by_name(columns::ENTITY_CHANGED)
        .and_then(|c| c.as_boolean_opt())
        .ok_or_else(|| bad(path, "no _entity_changed column"))?;
    // Files written before logical deletes were told apart have no such column: their deletes
    // apply as physical ones.
    let logical = batch.column_by_name(columns::LOGICAL_DELETE).and_then(|c| c.as_boolean_opt());
    let offsets = changed.value_offsets();
    let attrs = attribute_columns(batch, cols);
    let arrays = attribute_arrays(batch, &attrs, path)?;
    // Name → batch column, for reading `_changed`.
    let schema = batch.schema();
    let by_name: FxHashMap<&str, (usize, usize)> =
        attrs.iter().map(|&(bi, ci)| (schema.field(bi).name().as_str(), (bi, ci))).collect();
    let items = ChangedItems::new(changed.values(), &by_name)
        .ok_or_else(|| bad(path, "_changed items are not dictionary-encoded text"))?;
    for row in 0..batch.num_rows() {
        let id = ids.value(row);
        let Some((target, since)) = route(id) else { continue };
        if seqs.value(row) <= since {
            continue;
        }
        let op = ops(row);
        let delete = op == Some("d");
        let logical = delete && logical.is_some_and(|l| l.is_valid(row) && l.value(row));
        let start = flush.cells.len();
        // A logical delete keeps the values its transaction set (see `RowOp::Retire`).
        if (!delete || logical) && changed.is_valid(row) {
            for k in offsets[row] as usize..offsets[row + 1] as usize {
                let (bi, ci) = match items.place(k) {
                    None => continue,
                    Some(Ok(place)) => place,
                    Some(Err(name)) => {
                        return Err(bad(path, format!("_changed names `{name}`, which is not a column")));
                    }
                };
                flush.cells.push((ci, arrays[bi].as_ref().and_then(|a| a.cell(row))));
            }
        }
        flush.rows.push(ChangeRow {
            target,
            entity_id: id,
            seq: seqs.value(row),
            stream,
            delete,
            logical,
            fresh: entity_changed.value(row) && matches!(op, Some("c" | "r")),
            entity_changed: entity_changed.value(row),
            cells: start..flush.cells.len(),
            commit_lsn: commit.value(row),
            lsn: lsn.value(row),
            source_ts: ts.is_valid(row).then(|| ts.value(row)),
        });
    }
    Ok(())
}

/// The items of a batch's `_changed` lists, read as dictionary keys (see
/// `CHANGE_COLUMNS_DICTIONARY`), as the columns they name.
struct ChangedItems<'a> {
    keys: &'a arrow::array::Int32Array,
    /// The place of each dictionary value, found once (`Err`: the name of a column the batch
    /// does not have).
    places: Vec<Result<(usize, usize), &'a str>>,
}

impl<'a> ChangedItems<'a> {
    fn new(items: &'a ArrayRef, by_name: &FxHashMap<&str, (usize, usize)>) -> Option<ChangedItems<'a>> {
        let dict = items.as_dictionary_opt::<arrow::datatypes::Int32Type>()?;
        let values = dict.values().as_string_opt::<i32>()?;
        let places =
            values.iter().map(|v| v.and_then(|name| by_name.get(name).copied()).ok_or(v.unwrap_or(""))).collect();
        Some(ChangedItems { keys: dict.keys(), places })
    }

    /// The (batch column, set column) item `k` names; `None` for a null item.
    fn place(&self, k: usize) -> Option<Result<(usize, usize), &'a str>> {
        let keys = self.keys;
        keys.is_valid(k).then(|| self.places.get(keys.value(k) as usize).copied().unwrap_or(Err("")))
    }
}

/// A text column (plain or dictionary-encoded) as a row → value function.
fn string_values<'a>(array: &'a ArrayRef) -> Option<Box<dyn Fn(usize) -> Option<&'a str> + 'a>> {
    if let Some(s) = array.as_string_opt::<i32>() {
        return Some(Box::new(move |i| s.is_valid(i).then(|| s.value(i))));
    }
    if let Some(d) = array.as_dictionary_opt::<arrow::datatypes::Int32Type>() {
        let values = d.values().as_string_opt::<i32>()?;
        let keys = d.keys();
        return Some(Box::new(move |i| keys.is_valid(i).then(|| values.value(keys.value(i) as usize))));
    }
    None
}

/// An attribute column of a batch with its type resolved once, so that reading a cell is one
/// branch rather than a downcast (compaction reads every changed cell this way).
enum AttrArray<'a> {
    Int(&'a arrow::array::Int64Array),
    Decimal(&'a arrow::array::Decimal128Array),
    Bool(&'a arrow::array::BooleanArray),
    Timestamp(&'a arrow::array::TimestampMicrosecondArray),
    Text(&'a arrow::array::StringArray),
}

impl<'a> AttrArray<'a> {
    fn of(array: &'a ArrayRef, path: &Path) -> Result<AttrArray<'a>, CompactError> {
        let typed = match array.data_type() {
            ArrowType::Int64 => array.as_primitive_opt().map(AttrArray::Int),
            ArrowType::Decimal128(_, _) => array.as_primitive_opt().map(AttrArray::Decimal),
            ArrowType::Boolean => array.as_boolean_opt().map(AttrArray::Bool),
            ArrowType::Timestamp(_, _) => array.as_primitive_opt().map(AttrArray::Timestamp),
            ArrowType::Utf8 => array.as_string_opt().map(AttrArray::Text),
            _ => None,
        };
        typed.ok_or_else(|| bad(path, format!("attribute column of unexpected type {}", array.data_type())))
    }

    /// The cell of `row` as a [`Value`] (`None`: null).
    fn cell(&self, row: usize) -> Option<Value> {
        match self {
            AttrArray::Int(a) => a.is_valid(row).then(|| Value::Int(a.value(row))),
            AttrArray::Decimal(a) => a.is_valid(row).then(|| Value::Decimal(a.value(row))),
            AttrArray::Bool(a) => a.is_valid(row).then(|| Value::Bool(a.value(row))),
            AttrArray::Timestamp(a) => a.is_valid(row).then(|| Value::Timestamp(a.value(row))),
            AttrArray::Text(a) => a.is_valid(row).then(|| Value::Text(a.value(row).into())),
        }
    }
}

/// The current-state batch of a range, rows in entity_id order.
fn current_batch(
    tenant_id: i64,
    cols: &ColumnSet,
    state: &RangeState,
    scale: u32,
) -> Result<RecordBatch, CompactError> {
    let n = state.len();
    // Built row by row, each entity's cells read once in order: column by column, every column
    // went through the whole map again (pointer chasing, a cache miss per entity and column).
    // Nulls as runs: a type's attributes are set on some of its entities only.
    let mut attrs: Vec<NullRunBuilder> =
        cols.cols.iter().map(|c| NullRunBuilder::new(ValueBuilder::new(c.2, scale, n), 0)).collect();
    let (mut ids, mut commit, mut lsn) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for (id, s) in state {
        ids.push(*id);
        commit.push(s.commit_lsn);
        lsn.push(s.lsn);
        ts.append_option(s.source_ts);
        for (i, b) in attrs.iter_mut().enumerate() {
            b.append(s.cells.get(i).and_then(|c| c.as_ref()));
        }
    }
    let mut fields = vec![
        Field::new(columns::TENANT_ID, ArrowType::Int64, false),
        Field::new(columns::ENTITY_ID, ArrowType::Int64, false),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(arrow::array::Int64Array::from(vec![tenant_id; n])),
        Arc::new(arrow::array::Int64Array::from(ids)),
    ];
    for ((name, id, dt), mut b) in cols.cols.iter().zip(attrs) {
        fields.push(columns::attribute_field(name, *id, *dt, scale));
        arrays.push(b.finish());
    }
    fields.extend([
        Field::new(columns::COMMIT_LSN, ArrowType::Int64, false),
        Field::new(columns::LSN, ArrowType::Int64, false),
        Field::new(columns::SOURCE_TS, columns::timestamp_type(), true),
    ]);
    arrays.push(Arc::new(arrow::array::Int64Array::from(commit)));
    arrays.push(Arc::new(arrow::array::Int64Array::from(lsn)));
    arrays.push(Arc::new(ts.finish()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| CompactError::BadFile { path: "current state".into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A current object's footer is read from its end: at once when it fits the first read,
    /// with a second read when it is larger (here a metadata value of 200 KB), and nothing for
    /// an object that is gone. What it reads is what the whole object says.
    #[tokio::test]
    async fn footers_read_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &crate::sink::S3Options::default()).unwrap();
        let batch = RecordBatch::try_from_iter([(
            columns::ENTITY_ID,
            Arc::new(arrow::array::Int64Array::from_iter_values(0..50_000)) as ArrayRef,
        )])
        .unwrap();
        for (name, bytes) in [("small", 10), ("large", 200_000)] {
            let marks = format!(r#"{{"{}":7}}"#, "s".repeat(bytes));
            let path = Path::from(format!("current/{name}.parquet"));
            let object =
                encode(path.as_ref(), std::slice::from_ref(&batch), vec![(columns::META_WATERMARKS.into(), marks)])
                    .unwrap();
            lake.put(&path, object.clone()).await.unwrap();
            let footer = read_footer(&lake, &path).await.unwrap().expect("the object is there");
            let whole = ParquetObject::open(path.as_ref(), object.clone()).unwrap();
            assert_eq!(footer.size, object.len() as u64, "{name}");
            assert_eq!(footer.metadata(columns::META_WATERMARKS), whole.metadata(columns::META_WATERMARKS), "{name}");
            assert_eq!(read_watermarks(footer.metadata(columns::META_WATERMARKS), &path).unwrap().len(), 1);
        }
        assert!(read_footer(&lake, &Path::from("current/gone.parquet")).await.unwrap().is_none());
    }

    /// `_changed` items read as dictionary keys name their columns; a name that is not a column
    /// is reported, a null item skipped; items of another type are refused.
    #[test]
    fn changed_items_as_dictionary_keys() {
        use arrow::array::{DictionaryArray, StringArray};
        let by_name: FxHashMap<&str, (usize, usize)> = [("age", (3, 0)), ("email", (5, 1))].into_iter().collect();
        let names = [Some("email"), None, Some("age"), Some("ghost"), Some("email")];
        let dict: ArrayRef = Arc::new(names.iter().copied().collect::<DictionaryArray<arrow::datatypes::Int32Type>>());
        let expected = [Some(Ok((5, 1))), None, Some(Ok((3, 0))), Some(Err("ghost")), Some(Ok((5, 1)))];
        let items = ChangedItems::new(&dict, &by_name).expect("dictionary of text");
        let got: Vec<_> = (0..names.len()).map(|k| items.place(k)).collect();
        assert_eq!(got, expected);
        let text: ArrayRef = Arc::new(StringArray::from(names.to_vec()));
        let numbers: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![1]));
        assert!(ChangedItems::new(&text, &by_name).is_none() && ChangedItems::new(&numbers, &by_name).is_none());
    }

    /// A flush's rows are merged into the sorted state of their ranges: in stream order per
    /// entity, deletes and re-creations applied, value changes of an entity that is not live
    /// dropped, a column registered after an entity was made added to it, untouched entities
    /// kept as they were; the state stays sorted, each entity once.
    #[test]
    fn a_flush_is_merged_into_sorted_range_state() {
        let entity = |cells: Vec<Option<Value>>| EntityState { cells, commit_lsn: 1, lsn: 1, source_ts: None };
        let range = |lo: i64, state: RangeState| RangeWork {
            lo,
            path: Path::from(format!("current/t/{lo}")),
            version: Version::absent(),
            state,
            retired: RangeState::new(),
            retired_from: None,
            retired_changed: false,
            watermarks: Watermarks::new(),
            files: Vec::new(),
        };
        let int = |v: i64| Some(Value::Int(v));
        let mut work = vec![
            range(0, vec![(1, entity(vec![int(10)])), (3, entity(vec![int(30)])), (5, entity(vec![int(50)]))]),
            range(100, vec![(101, entity(vec![int(1010)]))]),
        ];
        let mut flush = FlushRows::default();
        let mut push = |target: usize, entity_id: i64, seq: i64, (delete, entity_changed): (bool, bool), cells| {
            let start = flush.cells.len();
            flush.cells.extend(cells);
            flush.rows.push(ChangeRow {
                target,
                entity_id,
                seq,
                stream: 0,
                delete,
                logical: false,
                fresh: false,
                entity_changed,
                cells: start..flush.cells.len(),
                commit_lsn: seq,
                lsn: seq,
                source_ts: None,
            });
        };
        let (delete, create, values) = ((true, false), (false, true), (false, false));
        // Out of order, as the rows of several files come.
        push(0, 5, 7, values, vec![(0, int(51)), (1, int(52))]);
        push(0, 1, 3, delete, vec![]);
        push(0, 3, 2, delete, vec![]);
        push(1, 102, 2, create, vec![(1, int(1021))]);
        push(0, 4, 5, create, vec![(0, int(40))]);
        push(0, 6, 6, values, vec![(0, int(60))]);
        push(0, 1, 4, create, vec![(0, int(11))]);
        push(0, 3, 8, values, vec![(0, int(31))]);
        push(0, 1, 9, values, vec![(1, int(12))]);
        let mut stats = CompactStats::default();
        apply_flush(&mut work, &mut flush, 2, &mut stats);
        let cells = |w: &RangeWork| -> Vec<(i64, Vec<Option<Value>>, i64)> {
            w.state.iter().map(|(id, s)| (*id, s.cells.clone(), s.lsn)).collect()
        };
        assert_eq!(
            cells(&work[0]),
            [(1, vec![int(11), int(12)], 9), (4, vec![int(40), None], 5), (5, vec![int(51), int(52)], 7)]
        );
        assert_eq!(cells(&work[1]), [(101, vec![int(1010)], 1), (102, vec![None, int(1021)], 2)]);
        assert_eq!(stats.rows_applied, 9);
        assert!(flush.rows.is_empty() && flush.cells.is_empty());
        assert!(work.iter().all(|w| w.retired.is_empty() && !w.retired_changed), "no entity deleted logically");
    }

    /// A logically deleted entity leaves the live state with its values, which later value
    /// changes update and an un-delete brings back; a physical delete, an insert under its id or
    /// a snapshot read of it as live forgets them; values of an entity the range never held are
    /// still dropped.
    #[test]
    fn logically_deleted_entities_keep_their_values_until_they_come_back() {
        let int = |v: i64| Some(Value::Int(v));
        let entity = |cells: Vec<Option<Value>>| EntityState { cells, commit_lsn: 1, lsn: 1, source_ts: None };
        let mut work = vec![RangeWork {
            lo: 0,
            path: Path::from("current/t/0"),
            version: Version::absent(),
            state: (1..=5).map(|id| (id, entity(vec![int(id * 10), int(id * 100)]))).collect(),
            retired: vec![(7, entity(vec![int(70), None])), (9, entity(vec![None, int(900)]))],
            retired_from: None,
            retired_changed: false,
            watermarks: Watermarks::new(),
            files: Vec::new(),
        }];
        let mut flush = FlushRows::default();
        // `d` logical delete, `D` physical, `c` insert, `r` snapshot read, `u` update, `v` values.
        let mut push = |entity_id: i64, seq: i64, op: char, cells: Vec<(usize, Option<Value>)>| {
            let start = flush.cells.len();
            flush.cells.extend(cells);
            flush.rows.push(ChangeRow {
                target: 0,
                entity_id,
                seq,
                stream: 0,
                delete: matches!(op, 'd' | 'D'),
                logical: op == 'd',
                fresh: matches!(op, 'c' | 'r'),
                entity_changed: op != 'v',
                cells: start..flush.cells.len(),
                commit_lsn: seq,
                lsn: seq,
                source_ts: None,
            });
        };
        // 1: deleted logically, a value written meanwhile, un-deleted with a hot attribute.
        push(1, 1, 'd', vec![]);
        push(1, 2, 'v', vec![(1, int(111))]);
        push(1, 3, 'u', vec![(0, int(11))]);
        // 2: deleted logically in a transaction that also set a value; stays deleted.
        push(2, 1, 'd', vec![(1, int(222))]);
        // 3: deleted logically, then for good.
        push(3, 1, 'd', vec![]);
        push(3, 2, 'D', vec![]);
        // 4: deleted logically, then a new entity inserted under its id.
        push(4, 1, 'd', vec![]);
        push(4, 2, 'c', vec![(0, int(44))]);
        // 6: never held, a value change only (dropped); 7: retired before, un-deleted.
        push(6, 1, 'v', vec![(0, int(60))]);
        push(7, 1, 'u', vec![(1, int(77))]);
        // 8: never held, deleted logically (a snapshot of a deleted entity): kept for later.
        push(8, 1, 'd', vec![]);
        push(8, 2, 'v', vec![(1, int(88))]);
        // 9: retired before, read by a snapshot as live: the snapshot's values only.
        push(9, 1, 'r', vec![(0, int(99))]);
        let mut stats = CompactStats::default();
        apply_flush(&mut work, &mut flush, 2, &mut stats);
        let cells = |state: &RangeState| -> Vec<(i64, Vec<Option<Value>>)> {
            state.iter().map(|(id, s)| (*id, s.cells.clone())).collect()
        };
        assert_eq!(
            cells(&work[0].state),
            [
                (1, vec![int(11), int(111)]),
                (4, vec![int(44), None]),
                (5, vec![int(50), int(500)]),
                (7, vec![int(70), int(77)]),
                (9, vec![int(99), None]),
            ]
        );
        assert_eq!(cells(&work[0].retired), [(2, vec![int(20), int(222)]), (8, vec![None, int(88)])]);
        assert!(work[0].retired_changed);
    }

    /// A range's state read from an object not in entity order is sorted, the last row of an
    /// id winning.
    #[test]
    fn state_read_out_of_order_is_sorted_last_row_winning() {
        let entity = |lsn: i64| EntityState { cells: Vec::new(), commit_lsn: 0, lsn, source_ts: None };
        let mut state: RangeState = vec![(3, entity(1)), (1, entity(2)), (3, entity(3)), (2, entity(4))];
        sort_state(&mut state);
        let got: Vec<(i64, i64)> = state.iter().map(|(id, s)| (*id, s.lsn)).collect();
        assert_eq!(got, [(1, 2), (2, 4), (3, 3)]);
    }

    #[test]
    fn shards_split_every_range_once() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            let err = Shard::parse(bad).unwrap_err().to_string();
            assert_eq!(err, format!("compaction scope: --shard `{bad}`: expected I/N with 0 <= I < N, e.g. 0/4"));
        }
        let shards: Vec<CompactScope> =
            (0..3).map(|index| CompactScope { shard: Some(Shard { index, count: 3 }), ..Default::default() }).collect();
        let mut per_shard = [0usize; 3];
        for tenant in -2..5 {
            for lo in (-3000..6000).step_by(1000) {
                let owners: Vec<usize> = (0..3).filter(|&i| shards[i].includes_range(tenant, lo, 1000)).collect();
                assert_eq!(owners.len(), 1, "tenant {tenant} range {lo}: owners {owners:?}");
                per_shard[owners[0]] += 1;
            }
        }
        assert_eq!(per_shard, [21, 21, 21]);
    }

    #[test]
    fn an_entity_range_must_not_cut_a_range_object() {
        let scope = |lo, hi| CompactScope { entity_range: Some((lo, hi)), ..Default::default() };
        assert!(scope(0, 2000).validate(1000).is_ok());
        assert!(scope(i64::MIN, 3000).validate(1000).is_ok());
        assert_eq!(
            scope(500, 2000).validate(1000).unwrap_err().to_string(),
            "compaction scope: --entity-range 500..2000: both ends must be multiples of lake.range_size (1000), \
             so that no range object is shared by two scopes"
        );
        let s = scope(1000, 3000);
        assert!(!s.includes_range(1, 0, 1000) && s.includes_range(1, 1000, 1000) && s.includes_range(1, 2000, 1000));
        assert!(!s.includes_range(1, 3000, 1000));
        let t = CompactScope { tenant: Some(3), entity_type: Some("order".into()), ..Default::default() };
        assert!(t.includes_tenant(3) && !t.includes_tenant(4) && t.includes_type("order") && !t.includes_type("x"));
    }

    #[test]
    fn change_file_names_parse_from_the_right() {
        let p =
            Path::from("changes/customer/tenant_id=1/date=2024-01-01/file-a-b.jsonl-000000000001-000000000090.parquet");
        let f = parse_change_file(&p).unwrap();
        assert_eq!((f.stream.as_str(), f.first, f.last), ("file-a-b.jsonl", 1, 90));
        assert!(parse_change_file(&Path::from("x/y.parquet")).is_none());
        let p = Path::from("changes/c/tenant_id=1/date=2024-01-01/file-a-000000000001-000000000090.1.parquet");
        assert_eq!(parse_change_file(&p).map(|f| (f.first, f.last, f.part)), Some((1, 90, 1)));
        assert_eq!(
            parse_range(&Path::from("current/t/tenant_id=1/entities-000000100000-000000199999.parquet")),
            Some(100000)
        );
    }
}
