//! Pivot: narrow EAV changes → wide rows, one per entity per source transaction.
//!
//! All changes of one entity within one transaction (its `entities` row, hot attributes in
//! `hot_attributes` JSONB, cold attributes as `entity_values` rows) fold into one row whose
//! columns are the entity type's attributes, typed by the [`Catalog`]. The row remembers which
//! attributes it changed, so "set to null" and "untouched" stay apart.
//!
//! Contract:
//! - [`Pivot::apply`] takes one change and either folds all of it or none of it: a change that
//!   violates the catalog returns a [`PivotError`] (its dead-letter reason) and leaves no trace.
//! - Rows reach the [`BatchSet`] only when their transaction ends ([`Pivot::end_transaction`], or
//!   the first change of the next transaction), so a batch never holds half a transaction. A
//!   transaction touching more than `max_pending_entities` entities (a huge bulk load, a
//!   snapshot) is folded in slices of that many entities to keep memory bounded.

mod batch;
mod hot;
mod types;

pub use batch::{BatchSet, FinishedBatch};
use types::EntityTypes;
pub use types::TypeId;

use crate::catalog::{Attribute, Catalog};
use crate::columns::Value;
use crate::decode::scan::{Beyond, Cursor};
use crate::decode::value::rescale;
use crate::decode::{DataType, EntityRow, Field, Op, RowChange, SourceMeta, ValueRow};
use crate::limits::Limits;
use crate::position::KafkaCoords;
use crate::tenancy::EntityTenants;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::sync::Arc;

/// Why a change could not be pivoted. The variant names the dead-letter reason.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PivotError {
    #[error("attribute {attribute} is not in the catalog")]
    UnknownAttribute { attribute: String },
    #[error("attribute `{attribute}` is {expected} but the change carries {found}")]
    TypeMismatch { attribute: String, expected: &'static str, found: String },
    #[error("value of attribute `{attribute}`: {message}")]
    OutOfRange { attribute: String, message: String },
    #[error("row of tenant {row} refers to {what} of tenant {other}")]
    TenantMismatch { row: i64, what: String, other: i64 },
    #[error("{table} {op} without a full before-image (set REPLICA IDENTITY FULL): {message}")]
    MissingImage { table: &'static str, op: &'static str, message: String },
    #[error("hot_attributes: {0}")]
    BadHotAttributes(String),
    #[error("entity {entity_id}: {count} attributes in one row, over limits.max_attributes_per_row ({limit})")]
    TooManyAttributes { entity_id: i64, count: usize, limit: usize },
    #[error("{what}: {bytes} bytes of JSON, over limits.max_json_bytes ({limit})")]
    JsonTooLarge { what: String, bytes: usize, limit: usize },
    #[error("{what}: JSON nested over limits.max_json_depth ({limit}) levels deep")]
    JsonTooDeep { what: String, limit: usize },
}

impl PivotError {
    pub fn reason(&self) -> &'static str {
        match self {
            PivotError::UnknownAttribute { .. } => "unknown_attribute",
            PivotError::TypeMismatch { .. } => "type_mismatch",
            PivotError::OutOfRange { .. } => "value_out_of_range",
            PivotError::TenantMismatch { .. } => "tenant_mismatch",
            PivotError::MissingImage { .. } => "missing_before_image",
            PivotError::BadHotAttributes(_) => "bad_hot_attributes",
            PivotError::TooManyAttributes { .. } => "too_many_attributes",
            PivotError::JsonTooLarge { .. } => "json_too_large",
            PivotError::JsonTooDeep { .. } => "json_too_deep",
        }
    }

    /// True when the catalog may still learn what is missing: the change should wait for it.
    pub fn may_resolve(&self) -> bool {
        matches!(self, PivotError::UnknownAttribute { .. })
    }
}

/// Where the change came from: its place in the stream and, from Kafka, its coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub seq: i64,
    pub kafka: Option<KafkaCoords>,
}

/// Entity-level operation of a folded row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    Create,
    Update,
    /// The entity's row deleted (physically): its values go with it.
    Delete,
    /// `is_deleted` set to true (a logical delete): written as `d` with `_logical_delete`; the
    /// entity's values stay in the store, and come back with it if it is un-deleted.
    Retire,
    Read,
}

impl RowOp {
    pub fn code(self) -> &'static str {
        match self {
            RowOp::Create => "c",
            RowOp::Update => "u",
            RowOp::Delete | RowOp::Retire => "d",
            RowOp::Read => "r",
        }
    }
}

/// Source metadata of the last change folded into a row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowMeta {
    pub commit_lsn: i64,
    pub lsn: i64,
    pub tx_id: Option<i64>,
    pub source_ts: Option<i64>,
    pub origin: Origin,
}

/// A wide row being folded: the attributes it changed, by attribute id, `None` meaning set to
/// null.
#[derive(Debug, Clone, PartialEq)]
pub struct WideRow {
    pub tenant_id: i64,
    /// The pivot's number of the type's name (see [`EntityTypes`]).
    pub entity_type: TypeId,
    pub entity_id: i64,
    pub op: RowOp,
    /// True when the entity's own `entities` row is part of the fold; a row of value changes
    /// only never brings an entity into existence (see `columns::ENTITY_CHANGED`).
    pub entity_changed: bool,
    pub cells: Vec<(i64, Option<Value>)>,
    pub meta: RowMeta,
}

impl WideRow {
    fn set(&mut self, attribute_id: i64, value: Option<Value>) {
        match self.cells.iter_mut().find(|(id, _)| *id == attribute_id) {
            Some(cell) => cell.1 = value,
            None => self.cells.push((attribute_id, value)),
        }
    }
}

/// What one change does to its entity's row, computed (and validated) before anything changes.
enum Effect {
    /// Entity-level op and the cells to set.
    Entity { op: RowOp, cells: Vec<(i64, Option<Value>)> },
    /// A cold value set (or set to null); `None` when the change leaves it untouched (TOAST).
    Value { cell: Option<(i64, Option<Value>)> },
}

/// A change placed: its entity's tenant, type (the catalog's name when it knows the type) and
/// id, and what it does to the entity's row.
struct Placed<'c> {
    tenant_id: i64,
    entity_type: Cow<'c, Arc<str>>,
    entity_id: i64,
    effect: Effect,
}

/// Identity of the transaction being folded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TxKey {
    Id(String),
    Position {
        tx_id: Option<i64>,
        commit_lsn: u64,
    },
    /// Snapshot reads of one entity in a row.
    SnapshotOf(i64),
}

/// The pivot: the open transaction's fold and the batches of finished rows.
pub struct Pivot {
    decimal_scale: u32,
    limits: Limits,
    max_pending_entities: usize,
    tx: Option<TxKey>,
    pending: FxHashMap<i64, usize>,
    rows: Vec<WideRow>,
    /// Stream position of the first change in the fold (rows keep their last change's).
    first_seq: Option<i64>,
    /// The tenant of each entity seen lately (from its `entities` rows), across transactions.
    entity_tenants: EntityTenants,
    /// Cell vectors of rows already in a batch, reused by the next rows (see `SPARE_CELLS`).
    spare_cells: Vec<Vec<(i64, Option<Value>)>>,
    /// The cells of an entity change being computed, reused from change to change.
    effect_cells: Vec<(i64, Option<Value>)>,
    hot_scratch: hot::Scratch,
    /// The numbers of the entity type names in `rows` and `batches`.
    types: EntityTypes,
    pub batches: BatchSet,
}

/// How many emptied cell vectors a pivot keeps, and up to which capacity: enough for a busy
/// transaction's rows without holding on to the memory of a rare wide one.
const SPARE_CELLS: usize = 4096;
const SPARE_CELLS_CAPACITY: usize = 64;

/// Up to how many rows a fold's entity index is emptied entry by entry (see `flush_fold`).
const FEW_PENDING: usize = 16;

/// Entities whose tenant a pivot remembers by default (4 MiB at most, per stream).
pub const DEFAULT_REMEMBERED_ENTITIES: usize = 1 << 18;

impl Pivot {
    pub fn new(decimal_scale: u32, max_pending_entities: usize) -> Pivot {
        Pivot {
            decimal_scale,
            limits: Limits::default(),
            max_pending_entities: max_pending_entities.max(1),
            tx: None,
            pending: FxHashMap::default(),
            rows: Vec::new(),
            first_seq: None,
            entity_tenants: EntityTenants::new(DEFAULT_REMEMBERED_ENTITIES),
            spare_cells: Vec::new(),
            effect_cells: Vec::new(),
            hot_scratch: hot::Scratch::default(),
            types: EntityTypes::default(),
            batches: BatchSet::new(decimal_scale),
        }
    }

    /// Remembers the tenant of about `capacity` entities (0: none; see [`EntityTenants`]).
    pub fn with_remembered_entities(mut self, capacity: usize) -> Pivot {
        self.entity_tenants = EntityTenants::new(capacity);
        self
    }

    /// The same pivot, holding rows to `limits` rather than the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Pivot {
        self.limits = limits;
        self
    }

    /// Stream position of the oldest change still in the fold (not yet in a batch).
    pub fn pending_first_seq(&self) -> Option<i64> {
        self.first_seq
    }

    /// Folds one change of `entities` or `entity_values`; returns the entity type it changed
    /// (`None` for a catalog change, which is not folded).
    ///
    /// A value row's text is moved into the fold, not copied: once its effect is worked out the
    /// row is not read again. The one error after which a change is applied again
    /// ([`PivotError::may_resolve`]) comes before that, so a parked change keeps its text.
    pub fn apply<'c>(
        &mut self,
        catalog: &'c Catalog,
        op: Op,
        source: &SourceMeta,
        tx: Option<&str>,
        row: &mut RowChange,
        origin: &Origin,
    ) -> Result<Option<Cow<'c, str>>, PivotError> {
        if let Some(moved) = self.apply_key_change(catalog, op, source, tx, row, origin) {
            return moved;
        }
        // The entity's remembered tenant is read after the change's effect is worked out: asked
        // for now, it is in cache by then.
        if let Some(id) = row.entity_id(op) {
            self.entity_tenants.prefetch(id);
        }
        let Placed { tenant_id, entity_type, entity_id, effect } = match row {
            RowChange::Entity { before, after } => self.entity_effect(catalog, op, before.as_ref(), after.as_ref())?,
            RowChange::Value { before, after } => self.value_effect(catalog, op, before.as_mut(), after.as_mut())?,
            // Catalog changes are the catalog's business.
            RowChange::Attribute { .. } => return Ok(None),
        };
        // A change of an entity seen earlier under another tenant (in an earlier transaction)
        // would write that entity's row under a second tenant: refused before anything moves.
        if let Some(known) = self.entity_tenants.get(entity_id) {
            if known != tenant_id {
                return Err(PivotError::TenantMismatch {
                    row: tenant_id,
                    what: format!("entity {entity_id}"),
                    other: known,
                });
            }
        }
        // The catalog's own name, borrowed for the caller (an `Arc` clone and drop per change were
        // two atomic read-modify-writes) and cloned for a new row only.
        let applied_to: Cow<'c, str> = match &entity_type {
            Cow::Borrowed(name) => {
                let name: &'c Arc<str> = name;
                Cow::Borrowed(name)
            }
            Cow::Owned(name) => Cow::Owned(name.to_string()),
        };
        // Snapshot reads are not transactions (a whole snapshot shares one txId): consecutive
        // reads of one entity (its values, read in key order) fold into one row, and any other
        // record ends it, so that progress can move during a snapshot of any size.
        // A transaction is known by `source.txId` with `sequence[0]` (the commit LSN before it:
        // the same for all its changes, and it tells apart transactions whose ids wrapped
        // around). Debezium's `transaction.id` for PostgreSQL is `txId:LSN` with each event's
        // own LSN, so it is used only without a txId.
        let key = match (source.tx_id, tx) {
            _ if source.snapshot => TxKey::SnapshotOf(entity_id),
            (None, Some(id)) => TxKey::Id(id.split(':').next().unwrap_or(id).to_string()),
            _ => TxKey::Position { tx_id: source.tx_id, commit_lsn: source.position.commit_lsn.0 },
        };
        let same_tx = self.tx.as_ref() == Some(&key);
        if !same_tx {
            self.end_transaction(catalog);
            self.tx = Some(key);
        }
        let limit = self.limits.max_attributes_per_row;
        // The change's type as the number its row holds, found by the name's allocation (the
        // catalog's, one per name) without comparing strings.
        let type_id = match &entity_type {
            Cow::Borrowed(name) => self.types.id(name),
            Cow::Owned(name) => self.types.id_of_name(name),
        };
        if let Some(&at) = self.pending.get(&entity_id) {
            let existing = &self.rows[at];
            check_cells(limit, entity_id, &effect, &existing.cells)?;
            if existing.tenant_id != tenant_id {
                return Err(PivotError::TenantMismatch {
                    row: tenant_id,
                    what: format!("entity {entity_id}"),
                    other: existing.tenant_id,
                });
            }
            if existing.entity_type != type_id {
                return Err(PivotError::TypeMismatch {
                    attribute: format!("of entity type `{entity_type}`"),
                    expected: "an attribute of the entity's own type",
                    found: format!("entity {entity_id} of type `{}`", self.types.name(existing.entity_type)),
                });
            }
        } else {
            check_cells(limit, entity_id, &effect, &[])?;
            if self.pending.len() >= self.max_pending_entities {
                self.flush_fold(catalog);
            }
        }
        let meta = RowMeta {
            commit_lsn: source.position.commit_lsn.0 as i64,
            lsn: source.position.lsn.0 as i64,
            tx_id: source.tx_id,
            source_ts: source.commit_time_us,
            origin: origin.clone(),
        };
        self.first_seq = Some(self.first_seq.map_or(origin.seq, |f| f.min(origin.seq)));
        let row = match self.pending.get(&entity_id) {
            Some(&at) => {
                let row = &mut self.rows[at];
                // The row keeps the stream position of its first change (the order rows apply
                // in: a change that waited for the catalog and lands later sorts after the row
                // that created its entity) and the source metadata of its last.
                let first_seq = row.meta.origin.seq.min(meta.origin.seq);
                row.meta = meta;
                row.meta.origin.seq = first_seq;
                row
            }
            None => {
                let initial = match (&effect, source.snapshot) {
                    (Effect::Entity { op, .. }, _) => *op,
                    (Effect::Value { .. }, true) => RowOp::Read,
                    (Effect::Value { .. }, false) => RowOp::Update,
                };
                self.pending.insert(entity_id, self.rows.len());
                self.rows.push(WideRow {
                    tenant_id,
                    entity_type: type_id,
                    entity_id,
                    op: initial,
                    entity_changed: false,
                    cells: self.spare_cells.pop().unwrap_or_default(),
                    meta,
                });
                let last = self.rows.len() - 1;
                &mut self.rows[last]
            }
        };
        if let Effect::Entity { .. } = effect {
            row.entity_changed = true;
            // The entity's own row says which tenant it belongs to; value rows are checked
            // against it, never the other way round.
            self.entity_tenants.remember(entity_id, tenant_id);
        }
        match effect {
            Effect::Entity { op: RowOp::Delete, cells } => {
                row.op = RowOp::Delete;
                row.cells.clear();
                self.effect_cells = cells;
            }
            Effect::Entity { op: RowOp::Retire, cells } => {
                // The values set earlier in the transaction stay in the store with the entity:
                // kept in the row, so that they come back with it.
                row.op = RowOp::Retire;
                self.effect_cells = cells;
            }
            Effect::Entity { op, mut cells } => {
                if matches!(row.op, RowOp::Delete | RowOp::Retire) {
                    // Re-created (or un-deleted) within the same transaction.
                    row.op = if op == RowOp::Read { RowOp::Read } else { op };
                } else if op == RowOp::Create {
                    row.op = RowOp::Create;
                }
                for (id, v) in cells.drain(..) {
                    row.set(id, v);
                }
                self.effect_cells = cells;
            }
            // Cascaded value deletes after an entity delete change nothing; values written to a
            // logically deleted entity are kept for it (see `RowOp::Retire`).
            Effect::Value { .. } if row.op == RowOp::Delete => {}
            Effect::Value { cell: Some((id, v)) } => row.set(id, v),
            Effect::Value { cell: None } => {}
        }
        Ok(Some(applied_to))
    }

    /// An `entity_values` update whose images name two rows (another entity_id or
    /// attribute_id after than before) moves a value: applied as Debezium sends such a change
    /// when the topic's key is the table's primary key, the row under the old key deleted and the
    /// one under the new key set. Debezium sends it as one update when the topic is keyed
    /// otherwise (`message.key.columns`), or the table has no primary key; read as an update of
    /// the after row only, the old value would stay in the lake. `None` for any other change.
    ///
    /// The delete half is checked first and applied last, so that a change refused (or parked
    /// for the catalog) leaves the fold as it was.
    fn apply_key_change<'c>(
        &mut self,
        catalog: &'c Catalog,
        op: Op,
        source: &SourceMeta,
        tx: Option<&str>,
        row: &mut RowChange,
        origin: &Origin,
    ) -> Option<Result<Option<Cow<'c, str>>, PivotError>> {
        let RowChange::Value { before, after: Some(after) } = row else { return None };
        let old = before.as_ref().map(|b| (b.entity_id, b.attribute_id))?;
        if op != Op::Update || old == (after.entity_id, after.attribute_id) {
            return None;
        }
        if let Err(e) = self.value_effect(catalog, Op::Delete, before.as_mut(), None) {
            return Some(Err(e));
        }
        // The update half: the after row, as a change without a before image.
        let vacated = before.take();
        let applied = self.apply(catalog, op, source, tx, row, origin);
        let before = match row {
            RowChange::Value { before, .. } => before,
            _ => unreachable!("a value change stays one"),
        };
        *before = vacated;
        let applied = match applied {
            Ok(applied) => applied,
            Err(e) => return Some(Err(e)),
        };
        let mut delete = RowChange::Value { before: before.take(), after: None };
        let deleted = self.apply(catalog, Op::Delete, source, tx, &mut delete, origin);
        if let RowChange::Value { before: vacated, .. } = delete {
            *before = vacated;
        }
        Some(deleted.map(|_| applied))
    }

    /// Ends the open transaction: its rows go to the batches.
    pub fn end_transaction(&mut self, catalog: &Catalog) {
        self.flush_fold(catalog);
        self.tx = None;
    }

    fn flush_fold(&mut self, catalog: &Catalog) {
        // Most transactions touch a few entities, but one big transaction leaves the map with a
        // large table that `clear` would wipe whole every time (callgrind: 1% of a run in
        // memset): a few entries are removed one by one.
        if self.rows.len() <= FEW_PENDING {
            for row in &self.rows {
                self.pending.remove(&row.entity_id);
            }
        } else {
            self.pending.clear();
        }
        debug_assert!(self.pending.is_empty(), "every pending entity has a row");
        // Rows are used where they lie: moving each out (`drain`) was a memcpy per row.
        for row in &mut self.rows {
            self.batches.push(catalog, row, self.types.name(row.entity_type));
            if self.spare_cells.len() < SPARE_CELLS && row.cells.capacity() <= SPARE_CELLS_CAPACITY {
                row.cells.clear();
                self.spare_cells.push(std::mem::take(&mut row.cells));
            }
        }
        self.rows.clear();
        self.first_seq = None;
    }

    fn entity_effect<'c>(
        &mut self,
        catalog: &'c Catalog,
        op: Op,
        before: Option<&EntityRow>,
        after: Option<&EntityRow>,
    ) -> Result<Placed<'c>, PivotError> {
        let missing =
            |message: &str| PivotError::MissingImage { table: "entities", op: op.code(), message: message.to_string() };
        let image = match op {
            Op::Delete => before.ok_or_else(|| missing("no before image"))?,
            _ => after.ok_or_else(|| missing("no after image"))?,
        };
        let tenant_id = image.tenant_id.ok_or_else(|| missing("tenant_id is missing"))?;
        if let Some(was) = before.filter(|_| op == Op::Update).and_then(|b| b.tenant_id) {
            if was != tenant_id {
                // An entity moving to another tenant would stay live in the old tenant's
                // current state: a change the lake cannot represent without a cross-write.
                return Err(PivotError::TenantMismatch {
                    row: tenant_id,
                    what: format!("entity {} (its before-image)", image.entity_id),
                    other: was,
                });
            }
        }
        let type_name = image.entity_type.as_deref().ok_or_else(|| missing("entity_type is missing"))?;
        // The catalog's own name when it knows the type: no allocation per change.
        let ty = catalog.entity_type(tenant_id, type_name);
        let entity_type = ty.map_or_else(|| Cow::Owned(Arc::from(type_name)), |t| Cow::Borrowed(t.name()));
        let row_op = match op {
            Op::Delete => RowOp::Delete,
            _ if image.is_deleted => RowOp::Retire,
            Op::Create => RowOp::Create,
            Op::Read => RowOp::Read,
            Op::Update => RowOp::Update,
        };
        let of = || hot::Of { entity_type: &entity_type, entity_id: image.entity_id };
        let (scale, limits, scratch) = (self.decimal_scale, &self.limits, &mut self.hot_scratch);
        let mut cells = std::mem::take(&mut self.effect_cells);
        cells.clear();
        if !matches!(row_op, RowOp::Delete | RowOp::Retire) {
            match &image.hot_attributes {
                Field::Unavailable => {}
                Field::Null => hot::cells(ty, of(), "{}", None, scale, limits, scratch, &mut cells)?,
                Field::Value(json) => {
                    // With the before image we can tell exactly which hot attributes changed; a
                    // logically deleted entity coming back has all its attributes set anew.
                    let before_json = match before {
                        Some(b) if op == Op::Update && !b.is_deleted => match &b.hot_attributes {
                            Field::Value(j) => Some(j.as_str()),
                            Field::Null => Some("{}"),
                            Field::Unavailable => None,
                        },
                        _ => None,
                    };
                    hot::cells(ty, of(), json, before_json, scale, limits, scratch, &mut cells)?
                }
            }
        }
        Ok(Placed { tenant_id, entity_type, entity_id: image.entity_id, effect: Effect::Entity { op: row_op, cells } })
    }

    fn value_effect<'c>(
        &self,
        catalog: &'c Catalog,
        op: Op,
        before: Option<&mut ValueRow>,
        after: Option<&mut ValueRow>,
    ) -> Result<Placed<'c>, PivotError> {
        let image = match op {
            Op::Delete => before,
            _ => after,
        }
        .ok_or_else(|| PivotError::MissingImage {
            table: "entity_values",
            op: op.code(),
            message: "no row image".into(),
        })?;
        let attr = catalog
            .get(image.attribute_id)
            .ok_or_else(|| PivotError::UnknownAttribute { attribute: format!("id {}", image.attribute_id) })?;
        if attr.is_hot {
            // A hot attribute lives in hot_attributes; a row for it in entity_values is not
            // something the lake can place without guessing which one wins.
            return Err(PivotError::TypeMismatch {
                attribute: attr.name.to_string(),
                expected: "a hot attribute (in entities.hot_attributes)",
                found: "an entity_values row".into(),
            });
        }
        let tenant_id = image.tenant_id.unwrap_or(attr.tenant_id);
        if tenant_id != attr.tenant_id {
            return Err(PivotError::TenantMismatch {
                row: tenant_id,
                what: format!("attribute `{}` ({})", attr.name, attr.attribute_id),
                other: attr.tenant_id,
            });
        }
        let cell = match op {
            Op::Delete => Some((attr.attribute_id, None)),
            _ => cold_value(attr, image, self.decimal_scale, &self.limits)?.map(|v| (attr.attribute_id, v)),
        };
        let entity_type = Cow::Borrowed(&attr.entity_type);
        Ok(Placed { tenant_id, entity_type, entity_id: image.entity_id, effect: Effect::Value { cell } })
    }
}

/// The value of a cold attribute from its typed column. `Ok(None)`: untouched (TOAST
/// placeholder); `Ok(Some(None))`: null. Text is moved out of `row` (see [`Pivot::apply`]).
fn cold_value(
    attr: &Attribute,
    row: &mut ValueRow,
    scale: u32,
    limits: &Limits,
) -> Result<Option<Option<Value>>, PivotError> {
    let present: [(&'static str, bool); 6] = [
        ("value_text", !row.value_text.is_null()),
        ("value_int", row.value_int.is_some()),
        ("value_decimal", row.value_decimal.is_some()),
        ("value_bool", row.value_bool.is_some()),
        ("value_timestamp", row.value_timestamp.is_some()),
        ("value_json", !row.value_json.is_null()),
    ];
    let expected = match attr.data_type {
        DataType::Text => "value_text",
        DataType::Int => "value_int",
        DataType::Decimal => "value_decimal",
        DataType::Bool => "value_bool",
        DataType::Timestamp => "value_timestamp",
        DataType::Json => "value_json",
    };
    if let Some((other, _)) = present.iter().find(|(col, set)| *set && *col != expected) {
        return Err(PivotError::TypeMismatch {
            attribute: attr.name.to_string(),
            expected: attr.data_type.as_str(),
            found: format!("a value in {other}"),
        });
    }
    let text = |f: &mut Field<compact_str::CompactString>| match f {
        Field::Null => Some(None),
        Field::Unavailable => None,
        Field::Value(s) => Some(Some(Value::Text(std::mem::take(s)))),
    };
    Ok(match attr.data_type {
        DataType::Text => text(&mut row.value_text),
        DataType::Json => {
            if let Field::Value(json) = &row.value_json {
                check_json(json, || format!("attribute `{}`", attr.name), limits)?;
            }
            text(&mut row.value_json)
        }
        DataType::Int => Some(row.value_int.map(Value::Int)),
        DataType::Bool => Some(row.value_bool.map(Value::Bool)),
        DataType::Timestamp => Some(row.value_timestamp.map(Value::Timestamp)),
        DataType::Decimal => match row.value_decimal {
            None => Some(None),
            Some(d) => Some(Some(Value::Decimal(rescale(d, scale).map_err(|e| PivotError::OutOfRange {
                attribute: attr.name.to_string(),
                message: e.message().to_string(),
            })?))),
        },
    })
}

/// Fails when `effect` would leave its entity's row (whose open cells are `old`) with more than
/// `limit` cells. Counting the union is only needed near the limit, so the usual cost is a length
/// comparison.
fn check_cells(limit: usize, entity_id: i64, effect: &Effect, old: &[(i64, Option<Value>)]) -> Result<(), PivotError> {
    let new: &[(i64, Option<Value>)] = match effect {
        Effect::Entity { cells, .. } => cells,
        Effect::Value { cell: Some(cell) } => std::slice::from_ref(cell),
        Effect::Value { cell: None } => &[],
    };
    if new.len() + old.len() <= limit {
        return Ok(());
    }
    let count = old.len() + new.iter().filter(|(id, _)| !old.iter().any(|(o, _)| o == id)).count();
    if count > limit {
        return Err(PivotError::TooManyAttributes { entity_id, count, limit });
    }
    Ok(())
}

/// Checks a JSONB value against `limits.max_json_bytes` and `limits.max_json_depth`. The depth
/// is counted by the cursor's skip (one tight loop, for json attributes only); text the cursor
/// finds malformed is left as it was (PostgreSQL's jsonb is valid JSON). `what` names the value
/// in an error only: a format per value was an allocation per JSON cell.
pub(crate) fn check_json(json: &str, what: impl FnOnce() -> String, limits: &Limits) -> Result<(), PivotError> {
    if json.len() > limits.max_json_bytes {
        return Err(PivotError::JsonTooLarge { what: what(), bytes: json.len(), limit: limits.max_json_bytes });
    }
    // Nesting deeper than the limit takes more brackets than that: short values need no scan.
    if json.len() <= limits.max_json_depth {
        return Ok(());
    }
    match Cursor::with_max_depth(json, limits.max_json_depth).skip() {
        Err(e) if e.beyond == Some(Beyond::Depth) => {
            Err(PivotError::JsonTooDeep { what: what(), limit: limits.max_json_depth })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
