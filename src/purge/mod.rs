//! Purge: a tenant's rows, or some of its entities' rows, removed from the lake for good.
//!
//! A purge first records a marker, `_eavlake/purges/tenant-<t>-<unix ms>.json`, naming the
//! tenant and, unless the whole tenant goes, its entity ids. Everything that writes rows honours
//! the markers: a flush drops the purged rows from its batches ([`PurgeSet::filter_batch`],
//! markers re-read at every flush), and compaction leaves them out of the current state and
//! re-reads the markers before each write. Then [`rewrite::purge`] waits for every flush that
//! may have started before the marker to be over (`batch.flush_deadline_ms` +
//! `clock_skew_ms`, the deadline after which a flush writes nothing more) and rewrites the
//! objects written before it. So whatever a worker or a compaction does meanwhile, no purged row
//! survives and no other row is lost.
//!
//! A marker stays: later changes of a purged entity (or tenant) are dropped too, until an
//! operator deletes the marker.

pub mod rewrite;

use crate::columns;
use crate::sink::{Lake, SinkError};
use arrow::array::{AsArray, BooleanArray};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

const MARKER_FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("purge marker `{path}`: {message}")]
    BadMarker { path: String, message: String },
    #[error("`{path}`: {message}")]
    BadFile { path: String, message: String },
    #[error("`{path}` kept changing under the purge (another writer); run the purge again")]
    Contended { path: String },
}

/// What a purge removes, as recorded under `_eavlake/purges/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeMarker {
    pub format_version: u32,
    pub tenant_id: i64,
    /// `None`: the whole tenant.
    pub entity_ids: Option<Vec<i64>>,
    /// Unix ms when the purge started.
    pub created_ms: i64,
    /// Who ran it (`<host>-<pid>`).
    pub by: String,
}

impl PurgeMarker {
    pub fn new(tenant_id: i64, entity_ids: Option<Vec<i64>>, created_ms: i64, by: String) -> PurgeMarker {
        let entity_ids = entity_ids.map(|mut ids| {
            ids.sort_unstable();
            ids.dedup();
            ids
        });
        PurgeMarker { format_version: MARKER_FORMAT_VERSION, tenant_id, entity_ids, created_ms, by }
    }

    pub fn path(&self) -> object_store::path::Path {
        Lake::meta_path(&format!("purges/tenant-{}-{}.json", self.tenant_id, self.created_ms))
    }

    /// Records the marker in the lake (durable when this returns).
    pub async fn record(&self, lake: &Lake) -> Result<(), PurgeError> {
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        lake.put(&self.path(), Bytes::from(text)).await?;
        Ok(())
    }
}

/// What one tenant has purged.
#[derive(Debug, Clone, PartialEq)]
enum Purged {
    Whole,
    Entities(FxHashSet<i64>),
}

/// Every purge recorded in a lake: the rows writers must leave out.
#[derive(Debug, Clone, Default)]
pub struct PurgeSet {
    tenants: FxHashMap<i64, Purged>,
    /// Markers already read (they never change; new ones are fetched on refresh).
    read: FxHashSet<String>,
}

impl PurgeSet {
    /// Reads every marker of the lake.
    pub async fn load(lake: &Lake) -> Result<PurgeSet, PurgeError> {
        let mut set = PurgeSet::default();
        set.refresh(lake).await?;
        Ok(set)
    }

    /// Reads the markers recorded since the last read (one listing); true when there were any.
    pub async fn refresh(&mut self, lake: &Lake) -> Result<bool, PurgeError> {
        let mut changed = false;
        for meta in lake.list(&Lake::meta_path("purges")).await? {
            let path = meta.location.to_string();
            if !path.ends_with(".json") || self.read.contains(&path) {
                continue;
            }
            let Some(bytes) = lake.get(&meta.location).await? else { continue };
            let marker: PurgeMarker = serde_json::from_slice(&bytes)
                .map_err(|e| PurgeError::BadMarker { path: path.clone(), message: e.to_string() })?;
            if marker.format_version != MARKER_FORMAT_VERSION {
                return Err(PurgeError::BadMarker {
                    path,
                    message: format!("format_version {} is not {MARKER_FORMAT_VERSION}", marker.format_version),
                });
            }
            self.add(&marker);
            self.read.insert(path);
            changed = true;
        }
        Ok(changed)
    }

    fn add(&mut self, marker: &PurgeMarker) {
        match (&marker.entity_ids, self.tenants.get_mut(&marker.tenant_id)) {
            (_, Some(Purged::Whole)) => {}
            (None, _) => {
                self.tenants.insert(marker.tenant_id, Purged::Whole);
            }
            (Some(ids), Some(Purged::Entities(set))) => set.extend(ids.iter().copied()),
            (Some(ids), None) => {
                self.tenants.insert(marker.tenant_id, Purged::Entities(ids.iter().copied().collect()));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Whether the whole tenant is purged.
    pub fn whole_tenant(&self, tenant_id: i64) -> bool {
        matches!(self.tenants.get(&tenant_id), Some(Purged::Whole))
    }

    /// Whether the tenant has anything purged.
    pub fn touches(&self, tenant_id: i64) -> bool {
        self.tenants.contains_key(&tenant_id)
    }

    /// Whether rows of this tenant's entity are purged.
    #[inline]
    pub fn removes(&self, tenant_id: i64, entity_id: i64) -> bool {
        match self.tenants.get(&tenant_id) {
            None => false,
            Some(Purged::Whole) => true,
            Some(Purged::Entities(ids)) => ids.contains(&entity_id),
        }
    }

    /// Whether any purged entity of the tenant lies in `[lo, hi]`.
    pub fn any_entity_in(&self, tenant_id: i64, lo: i64, hi: i64) -> bool {
        match self.tenants.get(&tenant_id) {
            None => false,
            Some(Purged::Whole) => true,
            Some(Purged::Entities(ids)) => ids.iter().any(|id| (lo..=hi).contains(id)),
        }
    }

    /// The batch (of one tenant's rows) without its purged rows: `Ok(None)` when none is left,
    /// and how many rows were removed.
    pub fn filter_batch(
        &self,
        tenant_id: i64,
        batch: &RecordBatch,
        what: &str,
    ) -> Result<(Option<RecordBatch>, usize), PurgeError> {
        if !self.touches(tenant_id) {
            return Ok((Some(batch.clone()), 0));
        }
        if self.whole_tenant(tenant_id) {
            return Ok((None, batch.num_rows()));
        }
        let kept = keep_rows(batch, |id| !self.removes(tenant_id, id), what)?;
        let removed = batch.num_rows() - kept.as_ref().map_or(0, RecordBatch::num_rows);
        Ok((kept, removed))
    }
}

/// The rows of `batch` whose `entity_id` passes `keep` (`None` when no row does). Shared by
/// the flush and by the rewrite of existing objects.
pub fn keep_rows(
    batch: &RecordBatch,
    keep: impl Fn(i64) -> bool,
    what: &str,
) -> Result<Option<RecordBatch>, PurgeError> {
    let bad = |message: String| PurgeError::BadFile { path: what.to_string(), message };
    let ids = batch
        .column_by_name(columns::ENTITY_ID)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| bad("no Int64 entity_id column".into()))?;
    if ids.values().iter().all(|&id| keep(id)) {
        return Ok(Some(batch.clone()));
    }
    let mask: BooleanArray = ids.values().iter().map(|&id| Some(keep(id))).collect();
    let kept = arrow::compute::filter_record_batch(batch, &mask).map_err(|e| bad(e.to_string()))?;
    Ok((kept.num_rows() > 0).then_some(kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            columns::ENTITY_ID,
            arrow::datatypes::DataType::Int64,
            false,
        )]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(arrow::array::Int64Array::from(ids.to_vec()))]).unwrap()
    }

    fn ids(b: &RecordBatch) -> Vec<i64> {
        b.column(0).as_primitive::<Int64Type>().values().to_vec()
    }

    #[tokio::test]
    async fn markers_accumulate_and_filter_rows() {
        let lake = Lake::open("memory://", &Default::default()).unwrap();
        let mut set = PurgeSet::load(&lake).await.unwrap();
        assert!(set.is_empty());
        PurgeMarker::new(1, Some(vec![5, 3, 5]), 100, "t".into()).record(&lake).await.unwrap();
        assert!(set.refresh(&lake).await.unwrap());
        assert!(!set.refresh(&lake).await.unwrap(), "a marker is read once");
        assert!(set.removes(1, 3) && set.removes(1, 5) && !set.removes(1, 4) && !set.removes(2, 3));
        let (kept, removed) = set.filter_batch(1, &batch(&[1, 3, 4, 5]), "x").unwrap();
        assert_eq!((kept.map(|b| ids(&b)), removed), (Some(vec![1, 4]), 2));
        let (kept, removed) = set.filter_batch(2, &batch(&[3]), "x").unwrap();
        assert_eq!((kept.map(|b| ids(&b)), removed), (Some(vec![3]), 0));

        PurgeMarker::new(1, Some(vec![4]), 101, "t".into()).record(&lake).await.unwrap();
        PurgeMarker::new(2, None, 102, "t".into()).record(&lake).await.unwrap();
        let set = PurgeSet::load(&lake).await.unwrap();
        assert!(set.removes(1, 4) && set.removes(1, 3) && set.whole_tenant(2) && set.removes(2, 99));
        assert_eq!(set.filter_batch(2, &batch(&[3, 4]), "x").unwrap().1, 2);
        assert_eq!(set.filter_batch(1, &batch(&[3, 4]), "x").unwrap().0, None);

        lake.put(&Lake::meta_path("purges/tenant-9-1.json"), Bytes::from_static(b"{")).await.unwrap();
        let err = PurgeSet::load(&lake).await.unwrap_err().to_string();
        assert!(err.starts_with("purge marker `_eavlake/purges/tenant-9-1.json`: "), "{err}");
    }
}
