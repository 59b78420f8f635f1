//! `eavlake purge`: records the marker, waits out the flushes that may not have seen it, then
//! rewrites every object of the tenant in `changes/` and `current/` without the purged rows.
//!
//! Per object: read it with its version, drop the rows, then either replace it with one
//! conditional PUT (compare-and-swap on the version read: a writer that replaced it meanwhile
//! makes the purge read it again) or delete it when nothing is left. A whole tenant's objects
//! are all deleted and its `tenant_id=` folders removed.

use super::{keep_rows, PurgeError, PurgeMarker, PurgeSet};
use crate::columns;
use crate::sink::parquet::{encode, ParquetObject};
use crate::sink::{Lake, SinkError};
use object_store::path::Path;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What to purge.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    pub tenant_id: i64,
    /// `None`: the whole tenant.
    pub entity_ids: Option<Vec<i64>>,
    /// How long to wait after recording the marker for flushes that started before it: a
    /// worker's `batch.flush_deadline_ms` + `batch.clock_skew_ms` (zero when nothing writes).
    pub wait: Duration,
    /// Who runs it, recorded in the marker.
    pub by: String,
}

/// Rows removed from one entity type.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct RowsRemoved {
    pub changes: u64,
    pub current: u64,
}

/// What a purge did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct PurgeReport {
    pub tenant_id: i64,
    pub entity_ids: Option<Vec<i64>>,
    /// The marker recorded under `_eavlake/purges/`.
    pub marker: String,
    /// Objects of the tenant read.
    pub files_scanned: u64,
    pub files_rewritten: u64,
    pub files_deleted: u64,
    /// By entity type.
    pub rows_removed: BTreeMap<String, RowsRemoved>,
}

impl PurgeReport {
    pub fn rows_removed_total(&self) -> u64 {
        self.rows_removed.values().map(|r| r.changes + r.current).sum()
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let what = match &self.entity_ids {
            None => format!("tenant {} (whole)", self.tenant_id),
            Some(ids) => format!("tenant {}, {} entities", self.tenant_id, ids.len()),
        };
        let mut out = format!(
            "purged {what}: {} files scanned, {} rewritten, {} deleted; marker {}\n",
            self.files_scanned, self.files_rewritten, self.files_deleted, self.marker
        );
        out.push_str(&format!("{:<24} {:>14} {:>14}\n", "entity_type", "changes rows", "current rows"));
        for (ty, r) in &self.rows_removed {
            out.push_str(&format!("{ty:<24} {:>14} {:>14}\n", r.changes, r.current));
        }
        out
    }
}

/// Tries per object when other writers keep replacing it.
const ATTEMPTS: usize = 5;

/// Runs a purge (see the module documentation).
pub async fn purge(lake: &Lake, opts: &PurgeOptions) -> Result<PurgeReport, PurgeError> {
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let marker = PurgeMarker::new(opts.tenant_id, opts.entity_ids.clone(), created_ms, opts.by.clone());
    marker.record(lake).await?;
    tracing::info!(marker = %marker.path(), wait_ms = opts.wait.as_millis() as u64, "purge marker recorded");
    // Flushes begun before the marker was there did not filter their rows; after this long
    // each of them is durable or abandoned (a late flush writes nothing more).
    tokio::time::sleep(opts.wait).await;

    let mut only = PurgeSet::default();
    only.add(&marker);
    let mut report = PurgeReport {
        tenant_id: opts.tenant_id,
        entity_ids: marker.entity_ids.clone(),
        marker: marker.path().to_string(),
        ..PurgeReport::default()
    };
    for area in [Area::Changes, Area::Current, Area::Retired] {
        for entity_type in lake.children(&area.root()).await? {
            let prefix = area.prefix(&entity_type, opts.tenant_id);
            for meta in lake.list(&prefix).await? {
                if meta.location.extension() != Some("parquet") {
                    continue;
                }
                report.files_scanned += 1;
                let outcome = purge_object(lake, &meta.location, &only, opts.tenant_id, area).await?;
                let rows = report.rows_removed.entry(entity_type.clone()).or_default();
                match area {
                    Area::Changes => rows.changes += outcome.rows(),
                    Area::Current | Area::Retired => rows.current += outcome.rows(),
                }
                match outcome {
                    Outcome::Untouched => {}
                    Outcome::Rewritten(_) => report.files_rewritten += 1,
                    Outcome::Deleted(_) => report.files_deleted += 1,
                }
            }
            if marker.entity_ids.is_none() {
                lake.remove_empty_folders(&prefix).await?;
            }
        }
    }
    report.rows_removed.retain(|_, r| r.changes + r.current > 0);
    tracing::info!(
        tenant_id = opts.tenant_id,
        rewritten = report.files_rewritten,
        deleted = report.files_deleted,
        rows = report.rows_removed_total(),
        "purge done"
    );
    Ok(report)
}

#[derive(Clone, Copy, PartialEq)]
enum Area {
    Changes,
    Current,
    /// Logically deleted entities kept by compaction (current state, not read by engines).
    Retired,
}

impl Area {
    /// The folder holding a folder per entity type.
    fn root(self) -> Path {
        match self {
            Area::Changes => Path::from("changes"),
            Area::Current => Path::from("current"),
            Area::Retired => Lake::meta_path("retired"),
        }
    }

    fn prefix(self, entity_type: &str, tenant_id: i64) -> Path {
        match self {
            Area::Changes => Lake::changes_prefix(entity_type, Some(tenant_id)),
            Area::Current => Lake::current_prefix(entity_type, tenant_id),
            Area::Retired => Lake::retired_prefix(entity_type, tenant_id),
        }
    }
}

enum Outcome {
    Untouched,
    Rewritten(u64),
    Deleted(u64),
}

impl Outcome {
    fn rows(&self) -> u64 {
        match self {
            Outcome::Untouched => 0,
            Outcome::Rewritten(n) | Outcome::Deleted(n) => *n,
        }
    }
}

/// Removes the purged rows of one object.
async fn purge_object(
    lake: &Lake,
    path: &Path,
    purged: &PurgeSet,
    tenant_id: i64,
    area: Area,
) -> Result<Outcome, PurgeError> {
    for attempt in 1..=ATTEMPTS {
        let (Some(bytes), version) = lake.get_versioned(path).await? else { return Ok(Outcome::Untouched) };
        let obj = ParquetObject::open(path.as_ref(), bytes)?;
        if !purged.whole_tenant(tenant_id) {
            // Most objects hold none of the entities: their statistics say so without a read.
            if let Some((lo, hi)) = obj.entity_id_bounds() {
                if !purged.any_entity_in(tenant_id, lo, hi) {
                    return Ok(Outcome::Untouched);
                }
            }
        }
        let batches = obj.read_all()?;
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut kept = Vec::with_capacity(batches.len());
        for b in &batches {
            if let Some(k) = keep_rows(b, |id| !purged.removes(tenant_id, id), path.as_ref())? {
                kept.push(k);
            }
        }
        let left: usize = kept.iter().map(|b| b.num_rows()).sum();
        let removed = (total - left) as u64;
        // An empty object of a purged tenant goes too (compaction leaves empty ones).
        if removed == 0 && !(left == 0 && purged.whole_tenant(tenant_id)) {
            return Ok(Outcome::Untouched);
        }
        // A retired object, and a current object naming one, stay when the tenant does: a current
        // object must not name a missing object (see `compact`), nor lose the one it names.
        let named = area == Area::Retired || obj.metadata(columns::META_RETIRED).is_some();
        if left == 0 && (purged.whole_tenant(tenant_id) || !named) {
            // Deletes are not conditional: make the window in which a replacement could be
            // lost as small as one request (a replaced object is read again instead).
            if lake.get_versioned(path).await?.1 != version {
                continue;
            }
            lake.delete(path).await?;
            tracing::debug!(path = %path, rows = removed, "purged object deleted");
            return Ok(Outcome::Deleted(removed));
        }
        if kept.is_empty() {
            // Kept empty (see above): its columns stay.
            kept.extend(batches.first().map(|b| b.slice(0, 0)));
        }
        let bytes = encode(path.as_ref(), &kept, obj.eavlake_metadata())?;
        match lake.put_if(path, bytes, &version).await {
            Ok(_) => {
                tracing::debug!(path = %path, rows = removed, "purged object rewritten");
                return Ok(Outcome::Rewritten(removed));
            }
            Err(SinkError::Conflict { .. }) => {
                tracing::info!(path = %path, attempt, "object replaced while being purged: reading it again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(PurgeError::Contended { path: path.to_string() })
}
