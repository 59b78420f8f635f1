//! The lake side of a reconcile: the current state as a reader sees it (current objects plus the
//! durable change rows newer than them, folded by `compact::read_current_state`, exactly as
//! compaction would fold them), turned into the canonical cells of `checksum.rs`.
//!
//! A scope (tenant, entity type) is read once into a [`Summary`] (per entity: its cell count and
//! hash sum, as prefix sums), from which the checksum of any id range is two binary searches; the
//! cells themselves are read again only for the few ranges that differ.

use super::checksum::{canonical_value, canonical_value_into, cell_hash, name_seed, presence_hash, Checksum};
use super::ReconcileError;
use crate::catalog::Catalog;
use crate::compact::{self, CompactError, CompactOptions};
use crate::decode::DataType;
use crate::progress;
use crate::sink::{Lake, LakeSettings, S3Options};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};

/// An entity's cells in the lake: attribute name → (canonical value, data type).
pub type EntityCells = BTreeMap<String, (String, DataType)>;

pub struct LakeSide {
    lake: Lake,
    pub settings: LakeSettings,
    pub url: String,
}

impl From<CompactError> for ReconcileError {
    fn from(e: CompactError) -> Self {
        ReconcileError::Lake(e.to_string())
    }
}

fn lake_err(url: &str, what: &str, e: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Lake(format!("lake `{url}`: {what}: {e}"))
}

/// The lake's applied source position, over its streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The lowest change LSN applied by a stream that applied any (every stream is past it).
    pub min_lsn: Option<u64>,
    /// The highest.
    pub max_lsn: Option<u64>,
}

impl LakeSide {
    /// Opens an existing lake; a missing folder or a store without `_eavlake/lake.json` is an
    /// error (never an empty lake that would "agree" with an empty scope).
    pub async fn open(url: &str, s3: &S3Options) -> Result<LakeSide, ReconcileError> {
        let local = !url.contains("://") || url.starts_with("file://");
        if local {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            if !std::path::Path::new(dir).is_dir() {
                return Err(ReconcileError::Lake(format!("lake `{url}`: no such folder")));
            }
        }
        let lake = Lake::open(url, s3).map_err(|e| lake_err(url, "opening", e))?;
        let path = Lake::meta_path("lake.json");
        let bytes =
            lake.get(&path).await.map_err(|e| lake_err(url, "reading _eavlake/lake.json", e))?.ok_or_else(|| {
                ReconcileError::Lake(format!("lake `{url}`: not an eavlake lake (no _eavlake/lake.json)"))
            })?;
        let settings: LakeSettings =
            serde_json::from_slice(&bytes).map_err(|e| lake_err(url, "_eavlake/lake.json", e))?;
        if settings.format_version != 1 {
            return Err(ReconcileError::Lake(format!(
                "lake `{url}`: format version {} (this build reads version 1)",
                settings.format_version
            )));
        }
        if settings.range_size <= 0 || settings.decimal_scale > 38 {
            return Err(ReconcileError::Lake(format!("lake `{url}`: invalid settings in _eavlake/lake.json")));
        }
        Ok(LakeSide { lake, settings, url: url.to_string() })
    }

    fn opts(&self) -> CompactOptions {
        CompactOptions { range_size: self.settings.range_size, decimal_scale: self.settings.decimal_scale }
    }

    /// The attribute catalog the lake recorded, if any.
    pub async fn catalog(&self) -> Result<Option<Catalog>, ReconcileError> {
        let Some(bytes) = self
            .lake
            .get(&Lake::meta_path("catalog.json"))
            .await
            .map_err(|e| lake_err(&self.url, "reading _eavlake/catalog.json", e))?
        else {
            return Ok(None);
        };
        Catalog::from_json(&bytes).map(Some).map_err(|e| lake_err(&self.url, "_eavlake/catalog.json", e))
    }

    /// (tenant_id, entity_type) pairs the lake has data of.
    pub async fn scopes(&self) -> Result<BTreeSet<(i64, String)>, ReconcileError> {
        let mut out = BTreeSet::new();
        for top in ["current", "changes"] {
            let types = self
                .lake
                .children(&object_store::path::Path::from(top))
                .await
                .map_err(|e| lake_err(&self.url, &format!("listing {top}/"), e))?;
            for et in types {
                let prefix = object_store::path::Path::from(top).child(et.as_str());
                let tenants = self
                    .lake
                    .children(&prefix)
                    .await
                    .map_err(|e| lake_err(&self.url, &format!("listing {prefix}/"), e))?;
                for t in tenants {
                    if let Some(id) = t.strip_prefix("tenant_id=").and_then(|t| t.parse().ok()) {
                        out.insert((id, et.clone()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The position the lake has applied, from the streams' progress records.
    pub async fn applied(&self) -> Result<Applied, ReconcileError> {
        let all = progress::load_all(&self.lake).await.map_err(|e| lake_err(&self.url, "progress records", e))?;
        let lsns: Vec<u64> = all.values().filter_map(|p| p.mark()).map(|m| m.position.lsn.0).collect();
        Ok(Applied { min_lsn: lsns.iter().copied().min(), max_lsn: lsns.iter().copied().max() })
    }

    /// Messages of each subscribed Kafka partition the lake does not hold yet.
    pub async fn behind(
        &self,
        k: &crate::config::KafkaConfig,
    ) -> anyhow::Result<std::collections::BTreeMap<(String, i32), i64>> {
        crate::lag::lake_behind(k, &self.lake).await
    }

    async fn durable(&self) -> Result<FxHashMap<String, i64>, ReconcileError> {
        Ok(progress::load_all(&self.lake)
            .await
            .map_err(|e| lake_err(&self.url, "progress records", e))?
            .into_iter()
            .map(|(k, v)| (k, v.last_seq))
            .collect())
    }

    /// Per-entity checksums of a scope's entities with ids in `[lo, hi)`.
    pub async fn summary(&self, tenant: i64, entity_type: &str, lo: i64, hi: i64) -> Result<Summary, ReconcileError> {
        let durable = self.durable().await?;
        let scale = self.settings.decimal_scale;
        let mut entries: Vec<(i64, Checksum)> = Vec::new();
        let span = [(lo, hi.saturating_sub(1))];
        let mut value = String::new();
        compact::read_current_state::<ReconcileError>(
            &self.lake,
            entity_type,
            tenant,
            self.opts(),
            &durable,
            Some(&span),
            |_, cols, entities| {
                let seeds: Vec<u64> = cols.iter().map(|c| name_seed(&c.0)).collect();
                for (id, cells) in entities {
                    let mut c = Checksum::default();
                    c.add(presence_hash(id));
                    for (i, cell) in cells.iter().enumerate() {
                        let (Some(v), Some(col)) = (cell, cols.get(i)) else { continue };
                        value.clear();
                        canonical_value_into(v, col.2, scale, &mut value);
                        c.add(cell_hash(id, seeds[i], &value));
                    }
                    entries.push((id, c));
                }
                Ok(())
            },
        )
        .await?;
        entries.sort_unstable_by_key(|e| e.0);
        Ok(Summary::new(entries))
    }

    /// The cells of a scope's entities inside `spans` (inclusive, sorted): entity → cells.
    pub async fn cells(
        &self,
        tenant: i64,
        entity_type: &str,
        spans: &[(i64, i64)],
    ) -> Result<BTreeMap<i64, EntityCells>, ReconcileError> {
        let durable = self.durable().await?;
        let scale = self.settings.decimal_scale;
        let mut out: BTreeMap<i64, EntityCells> = BTreeMap::new();
        compact::read_current_state::<ReconcileError>(
            &self.lake,
            entity_type,
            tenant,
            self.opts(),
            &durable,
            Some(spans),
            |_, cols, entities| {
                for (id, cells) in entities {
                    let e = out.entry(id).or_default();
                    for (i, cell) in cells.iter().enumerate() {
                        let (Some(v), Some(col)) = (cell, cols.get(i)) else { continue };
                        e.insert(col.0.to_string(), (canonical_value(v, col.2, scale), col.2));
                    }
                }
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }
}

/// A scope's entities in the lake with their checksums, as prefix sums over entity_id.
pub struct Summary {
    ids: Vec<i64>,
    /// `counts[i]`, `sums[i]`: totals of the first `i` entities.
    counts: Vec<u64>,
    sums: Vec<u64>,
}

impl Summary {
    fn new(entries: Vec<(i64, Checksum)>) -> Summary {
        let mut ids = Vec::with_capacity(entries.len());
        let mut counts = Vec::with_capacity(entries.len() + 1);
        let mut sums = Vec::with_capacity(entries.len() + 1);
        let (mut c, mut s) = (0u64, 0u64);
        counts.push(0);
        sums.push(0);
        for (id, cs) in entries {
            ids.push(id);
            c += cs.count;
            s = s.wrapping_add(cs.sum);
            counts.push(c);
            sums.push(s);
        }
        Summary { ids, counts, sums }
    }

    pub fn entities(&self) -> usize {
        self.ids.len()
    }

    /// Smallest and largest entity id.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        Some((*self.ids.first()?, *self.ids.last()?))
    }

    /// The checksum of the entities with ids in `[lo, hi)`.
    pub fn checksum(&self, lo: i64, hi: i64) -> Checksum {
        let i = self.ids.partition_point(|&id| id < lo);
        let j = self.ids.partition_point(|&id| id < hi);
        if j <= i {
            return Checksum::default();
        }
        Checksum { count: self.counts[j] - self.counts[i], sum: self.sums[j].wrapping_sub(self.sums[i]) }
    }
}
