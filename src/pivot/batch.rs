//! Wide rows → Arrow record batches, one open batch per (entity type, tenant).
//!
//! Columns follow the catalog: a new attribute adds a column (earlier rows of the batch get
//! nulls) without a restart. A batch never mixes two types in one column: when the catalog
//! changes an attribute's type or name, [`BatchSet::push`] closes the open batch of that entity
//! type first (it stays in [`BatchSet`] as finished) and starts a new one.

use super::{RowOp, TypeId, WideRow};
use crate::catalog::Catalog;
use crate::columns::{self, NullRunBuilder, Value, ValueBuilder};
use crate::decode::value::date_of;
use crate::decode::DataType;
use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
    UInt32Array,
};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// A closed batch of change rows of one entity type, tenant and date, sorted by entity_id.
#[derive(Debug, Clone)]
pub struct FinishedBatch {
    pub entity_type: Arc<str>,
    pub tenant_id: i64,
    /// `YYYY-MM-DD` of the rows' source commit time.
    pub date: String,
    pub batch: RecordBatch,
}

struct AttrColumn {
    attribute_id: i64,
    name: Arc<str>,
    data_type: DataType,
    values: NullRunBuilder,
}

impl AttrColumn {
    /// A column whose first `rows` rows (those of the batch before it) have no value, with room
    /// for what the column held at the last flush.
    fn new(
        attribute_id: i64,
        name: Arc<str>,
        data_type: DataType,
        scale: u32,
        rows: usize,
        room: &Sizes,
    ) -> AttrColumn {
        let bytes = room.text_bytes.get(&attribute_id).copied().unwrap_or(DEFAULT_BYTES);
        let values = NullRunBuilder::new(ValueBuilder::with_capacity(data_type, scale, room.rows, bytes), rows);
        AttrColumn { attribute_id, name, data_type, values }
    }
}

/// Arrow's builders' default room: rows, and bytes of text.
const DEFAULT_ROWS: usize = 1024;
const DEFAULT_BYTES: usize = columns::TEXT_BYTES;

/// How large one (entity type, tenant)'s batch grew by the last flush. The next batch's builders
/// start that large instead of doubling their way up (each step a `realloc` that copies, ~0.5%
/// of a 1M-event run); room not used is address space, not memory, until it is written.
#[derive(Debug, Clone)]
struct Sizes {
    rows: usize,
    changed_names: usize,
    changed_bytes: usize,
    /// Text bytes per attribute column.
    text_bytes: FxHashMap<i64, usize>,
}

impl Default for Sizes {
    fn default() -> Sizes {
        Sizes {
            rows: DEFAULT_ROWS,
            changed_names: DEFAULT_ROWS,
            changed_bytes: DEFAULT_BYTES,
            text_bytes: FxHashMap::default(),
        }
    }
}

/// A column without a cell in the row being pushed.
const NO_CELL: u32 = u32::MAX;

/// The open batch of one (entity type, tenant).
struct TableBuilder {
    entity_type: Arc<str>,
    tenant_id: i64,
    catalog_version: u64,
    attrs: Vec<AttrColumn>,
    index: FxHashMap<i64, usize>,
    /// Per column, the position of its cell in the row being pushed (`NO_CELL`: none).
    slots: Vec<u32>,
    entity_id: Int64Builder,
    // Plain strings: Parquet dictionary-encodes them anyway, and appending skips a hash.
    op: StringBuilder,
    changed: ListBuilder<StringBuilder>,
    entity_changed: BooleanBuilder,
    logical_delete: BooleanBuilder,
    commit_lsn: Int64Builder,
    lsn: Int64Builder,
    tx_id: Int64Builder,
    source_ts: TimestampMicrosecondBuilder,
    seq: Int64Builder,
    kafka_topic: StringBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    rows: usize,
    /// The room its builders start with (see [`Sizes`]).
    room: Sizes,
}

impl TableBuilder {
    fn new(entity_type: Arc<str>, tenant_id: i64, room: Sizes) -> TableBuilder {
        let n = room.rows;
        TableBuilder {
            entity_type,
            tenant_id,
            catalog_version: u64::MAX,
            attrs: Vec::new(),
            index: FxHashMap::default(),
            slots: Vec::new(),
            entity_id: Int64Builder::with_capacity(n),
            // One or two bytes a row ("c", "u", "d", "r", "t").
            op: StringBuilder::with_capacity(n, n),
            changed: ListBuilder::with_capacity(
                StringBuilder::with_capacity(room.changed_names, room.changed_bytes),
                n,
            ),
            entity_changed: BooleanBuilder::with_capacity(n),
            logical_delete: BooleanBuilder::with_capacity(n),
            commit_lsn: Int64Builder::with_capacity(n),
            lsn: Int64Builder::with_capacity(n),
            tx_id: Int64Builder::with_capacity(n),
            source_ts: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            seq: Int64Builder::with_capacity(n),
            // Null in file runs; a topic name a row otherwise.
            kafka_topic: StringBuilder::new(),
            kafka_partition: Int32Builder::with_capacity(n),
            kafka_offset: Int64Builder::with_capacity(n),
            rows: 0,
            room,
        }
    }

    /// The sizes its builders have reached, for the next batch of the same pair.
    fn sizes(&self) -> Sizes {
        use arrow::array::ArrayBuilder;
        let changed = self.changed.values_ref();
        Sizes {
            rows: self.rows.max(DEFAULT_ROWS),
            changed_names: changed.len().max(DEFAULT_ROWS),
            changed_bytes: changed.values_slice().len().max(DEFAULT_BYTES),
            text_bytes: self
                .attrs
                .iter()
                .map(|c| (c.attribute_id, c.values.text_bytes()))
                .filter(|&(_, bytes)| bytes > 0)
                .collect(),
        }
    }

    /// Brings the columns in line with the catalog. Returns false when an existing column would
    /// change type or name: the batch must be closed first.
    fn sync(&mut self, catalog: &Catalog, scale: u32) -> bool {
        if self.catalog_version == catalog.version() {
            return true;
        }
        for attr in catalog.attributes_of(self.tenant_id, &self.entity_type) {
            match self.index.get(&attr.attribute_id) {
                Some(&i) => {
                    let col = &self.attrs[i];
                    if col.data_type != attr.data_type || col.name != attr.name {
                        return false;
                    }
                }
                None => {
                    // Two attributes can share a name only after a rename or a delete and
                    // re-create; a batch keeps one column per name, so close it.
                    if self.attrs.iter().any(|c| c.name == attr.name) {
                        return false;
                    }
                    self.index.insert(attr.attribute_id, self.attrs.len());
                    self.attrs.push(AttrColumn::new(
                        attr.attribute_id,
                        attr.name.clone(),
                        attr.data_type,
                        scale,
                        self.rows,
                        &self.room,
                    ));
                }
            }
        }
        self.catalog_version = catalog.version();
        true
    }

    fn push(&mut self, row: &WideRow) -> usize {
        let mut bytes = 80;
        self.entity_id.append_value(row.entity_id);
        self.op.append_value(row.op.code());
        // One index lookup per cell places it, rather than a scan of the cells per column.
        self.slots.clear();
        self.slots.resize(self.attrs.len(), NO_CELL);
        let changed = self.changed.values();
        for (at, (id, _)) in row.cells.iter().enumerate() {
            if let Some(&i) = self.index.get(id) {
                self.slots[i] = at as u32;
                changed.append_value(&*self.attrs[i].name);
            }
        }
        for (col, &slot) in self.attrs.iter_mut().zip(&self.slots) {
            // `NO_CELL` is past any row's cells (they are bounded by max_attributes_per_row).
            let value = row.cells.get(slot as usize).and_then(|(_, v)| v.as_ref());
            bytes += value.map_or(1, Value::size);
            col.values.append(value);
        }
        self.changed.append(!matches!(row.op, RowOp::Delete | RowOp::Retire) || !row.cells.is_empty());
        self.entity_changed.append_value(row.entity_changed);
        self.logical_delete.append_value(row.op == RowOp::Retire);
        let m = &row.meta;
        self.commit_lsn.append_value(m.commit_lsn);
        self.lsn.append_value(m.lsn);
        self.tx_id.append_option(m.tx_id);
        self.source_ts.append_option(m.source_ts);
        self.seq.append_value(m.origin.seq);
        match &m.origin.kafka {
            Some(k) => {
                self.kafka_topic.append_value(&*k.topic);
                self.kafka_partition.append_value(k.partition);
                self.kafka_offset.append_value(k.offset);
            }
            None => {
                self.kafka_topic.append_null();
                self.kafka_partition.append_null();
                self.kafka_offset.append_null();
            }
        }
        self.rows += 1;
        bytes
    }

    fn finish(&mut self, scale: u32) -> RecordBatch {
        let text = |name: &str, nullable| Field::new(name, ArrowType::Utf8, nullable);
        let mut fields = vec![
            Field::new(columns::TENANT_ID, ArrowType::Int64, false),
            Field::new(columns::ENTITY_ID, ArrowType::Int64, false),
        ];
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::Int64Array::from(vec![self.tenant_id; self.rows])),
            Arc::new(self.entity_id.finish()),
        ];
        for col in &mut self.attrs {
            fields.push(columns::attribute_field(&col.name, col.attribute_id, col.data_type, scale));
            arrays.push(col.values.finish());
        }
        fields.extend([
            text(columns::OP, false),
            Field::new(columns::CHANGED, ArrowType::List(Arc::new(text("item", true))), true),
            Field::new(columns::ENTITY_CHANGED, ArrowType::Boolean, false),
            Field::new(columns::LOGICAL_DELETE, ArrowType::Boolean, false),
            Field::new(columns::COMMIT_LSN, ArrowType::Int64, false),
            Field::new(columns::LSN, ArrowType::Int64, false),
            Field::new(columns::TX_ID, ArrowType::Int64, true),
            Field::new(columns::SOURCE_TS, columns::timestamp_type(), true),
            Field::new(columns::SEQ, ArrowType::Int64, false),
            text(columns::KAFKA_TOPIC, true),
            Field::new(columns::KAFKA_PARTITION, ArrowType::Int32, true),
            Field::new(columns::KAFKA_OFFSET, ArrowType::Int64, true),
        ]);
        arrays.extend([
            Arc::new(self.op.finish()) as ArrayRef,
            Arc::new(self.changed.finish()),
            Arc::new(self.entity_changed.finish()),
            Arc::new(self.logical_delete.finish()),
            Arc::new(self.commit_lsn.finish()),
            Arc::new(self.lsn.finish()),
            Arc::new(self.tx_id.finish()),
            Arc::new(self.source_ts.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.kafka_topic.finish()),
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
        ]);
        self.rows = 0;
        // Every column was appended once per row above, so the lengths agree; a failure here
        // would be a bug in this file, reported instead of hidden.
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("change batch columns have equal lengths")
    }
}

/// The open batches of all (entity type, tenant) pairs, plus batches already closed by a type
/// change, waiting for the next flush.
pub struct BatchSet {
    scale: u32,
    tables: FxHashMap<(TypeId, i64), TableBuilder>,
    /// The sizes of the batches of the last flush, each pair's next batch's starting room.
    last_sizes: FxHashMap<(TypeId, i64), Sizes>,
    closed: Vec<(Arc<str>, i64, RecordBatch)>,
    rows: usize,
    bytes: usize,
}

impl BatchSet {
    pub fn new(scale: u32) -> BatchSet {
        BatchSet {
            scale,
            tables: FxHashMap::default(),
            last_sizes: FxHashMap::default(),
            closed: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Rows buffered (open and closed batches).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes buffered.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends `row`, whose entity type is named `entity_type`.
    pub fn push(&mut self, catalog: &Catalog, row: &WideRow, entity_type: &Arc<str>) {
        let key = (row.entity_type, row.tenant_id);
        let scale = self.scale;
        // A pair's builder is made once a flush: its sizes are taken, not copied.
        let last_sizes = &mut self.last_sizes;
        let table = self.tables.entry(key).or_insert_with(|| {
            TableBuilder::new(entity_type.clone(), row.tenant_id, last_sizes.remove(&key).unwrap_or_default())
        });
        if !table.sync(catalog, scale) {
            let room = table.sizes();
            if table.rows > 0 {
                let batch = table.finish(scale);
                self.closed.push((table.entity_type.clone(), table.tenant_id, batch));
            }
            *table = TableBuilder::new(entity_type.clone(), row.tenant_id, room);
            table.sync(catalog, scale);
        }
        self.bytes += table.push(row);
        self.rows += 1;
    }

    /// Closes every batch: sorted by entity_id (then stream order), split by date. An error
    /// (none is expected: the batches are this module's) fails the flush, whose rows a restart
    /// reads again, rather than losing them.
    pub fn finish(&mut self) -> Result<Vec<FinishedBatch>, arrow::error::ArrowError> {
        let scale = self.scale;
        let mut all = std::mem::take(&mut self.closed);
        // Sizes are kept for the pairs of this flush only, so they too follow the live set.
        self.last_sizes.clear();
        for (key, table) in &mut self.tables {
            if table.rows > 0 {
                self.last_sizes.insert(*key, table.sizes());
                all.push((table.entity_type.clone(), table.tenant_id, table.finish(scale)));
            }
        }
        // Builders of idle (type, tenant) pairs are dropped, so memory follows the live set.
        self.tables.clear();
        self.rows = 0;
        self.bytes = 0;
        let mut out = Vec::new();
        for (entity_type, tenant_id, batch) in all {
            for (date, batch) in sort_and_split(batch)? {
                out.push(FinishedBatch { entity_type: entity_type.clone(), tenant_id, date, batch });
            }
        }
        out.sort_by(|a, b| (&a.entity_type, a.tenant_id, &a.date).cmp(&(&b.entity_type, b.tenant_id, &b.date)));
        Ok(out)
    }
}

/// Sorts a batch by (entity_id, _seq) and splits it by the date of `_source_ts`.
fn sort_and_split(batch: RecordBatch) -> Result<Vec<(String, RecordBatch)>, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("change batch without `{name}`")))
    };
    let (ids, seqs, ts) = (col(columns::ENTITY_ID)?, col(columns::SEQ)?, col(columns::SOURCE_TS)?);
    let wrong = |name: &str| arrow::error::ArrowError::SchemaError(format!("change batch: `{name}` of another type"));
    let ts = ts.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(|| wrong(columns::SOURCE_TS))?;
    let ids = ids.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong(columns::ENTITY_ID))?;
    let seqs = seqs.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong(columns::SEQ))?;
    let order = entity_order(ids.values(), seqs.values());
    // Rows of one day are the common case: compute each day once per distinct day number.
    let day = |i: u32| if ts.is_null(i as usize) { 0 } else { ts.value(i as usize).div_euclid(86_400_000_000) };
    let mut by_day: Vec<(i64, Vec<u32>)> = Vec::new();
    for i in order {
        let d = day(i);
        match by_day.iter_mut().find(|(k, _)| *k == d) {
            Some((_, v)) => v.push(i),
            None => by_day.push((d, vec![i])),
        }
    }
    by_day
        .into_iter()
        .map(|(d, idx)| Ok((date_of(d * 86_400_000_000), take_rows(&batch, &UInt32Array::from(idx))?)))
        .collect()
}

/// The rows of `batch` at `rows`, in that order: [`arrow::compute::take`] but for two kinds of
/// column it does slowly or for nothing. A column of nulls only (the Kafka columns of a file
/// run; attributes not set in a day's rows) is made anew; `_changed`, a list of names, is copied
/// a row's bytes at a time (arrow gathers the index of every name, then every name: 0.9% of a
/// 1M-event run, for a tenth of the batch's bytes).
fn take_rows(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray};
    let rows = indices.values();
    let columns = batch
        .columns()
        .iter()
        .map(|col| {
            if col.null_count() == col.len() {
                return Ok(arrow::array::new_null_array(col.data_type(), rows.len()));
            }
            if let Some(list) = col.as_list_opt::<i32>() {
                if let Some(taken) = take_text_lists(list, rows) {
                    return Ok(Arc::new(taken) as ArrayRef);
                }
            }
            arrow::compute::take(col, indices, None)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// The lists of text at `rows` of `list`, each list's bytes copied at once; `None` for lists of
/// anything else or with null items (left to arrow's `take`).
fn take_text_lists(list: &arrow::array::ListArray, rows: &[u32]) -> Option<arrow::array::ListArray> {
    use arrow::array::{Array, AsArray, ListArray, StringArray};
    use arrow::buffer::{NullBuffer, OffsetBuffer};
    let ArrowType::List(field) = list.data_type() else { return None };
    let items = list.values().as_string_opt::<i32>()?;
    if items.null_count() > 0 {
        return None;
    }
    let (lists, starts, bytes) = (list.value_offsets(), items.value_offsets(), items.value_data());
    let mut list_offsets: Vec<i32> = Vec::with_capacity(rows.len() + 1);
    list_offsets.push(0);
    let mut item_offsets: Vec<i32> = Vec::with_capacity(items.len() + 1);
    item_offsets.push(0);
    let mut data: Vec<u8> = Vec::with_capacity(bytes.len());
    for &row in rows {
        let row = row as usize;
        let (first, end) = (*lists.get(row)? as usize, *lists.get(row + 1)? as usize);
        let (from, to) = (*starts.get(first)?, *starts.get(end)?);
        // Where this list's bytes end in the new buffer; offsets past i32 (rows taken more than
        // once) are left to arrow, which refuses them.
        let new_end = i32::try_from(data.len() + (to - from) as usize).ok()?;
        // Where its bytes lie in the new buffer, less where they lay in the old.
        let shift = new_end - to;
        data.extend_from_slice(bytes.get(from as usize..to as usize)?);
        item_offsets.extend(starts.get(first + 1..=end)?.iter().map(|o| o + shift));
        list_offsets.push(i32::try_from(item_offsets.len() - 1).ok()?);
    }
    let nulls = list.nulls().map(|n| NullBuffer::from_iter(rows.iter().map(|&r| n.is_valid(r as usize))));
    let items = StringArray::try_new(OffsetBuffer::new(item_offsets.into()), data.into(), None).ok()?;
    ListArray::try_new(field.clone(), OffsetBuffer::new(list_offsets.into()), Arc::new(items), nulls).ok()
}

/// The rows in (entity_id, _seq) order, equal keys in row order.
///
/// A batch's ids and positions usually span a few million values each: offset from their
/// minimum, they fit in 64 bits together with the row number, and plain integers (id,
/// position and row from high to low bits) sort in a fraction of the time (id, seq, row) tuples
/// take (callgrind, 1M-event file run: 103M instructions, 0.8%, for the tuples; 40M packed).
/// Wider spans take the tuples.
fn entity_order(ids: &[i64], seqs: &[i64]) -> Vec<u32> {
    let span = |v: &[i64]| -> (i64, u32) {
        let (lo, hi) = v.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        // Bits of the largest offset from the minimum (0 for one value or none).
        (lo, 64 - (hi.wrapping_sub(lo) as u64).leading_zeros())
    };
    let n = ids.len().min(seqs.len());
    let (id_lo, id_bits) = span(&ids[..n]);
    let (seq_lo, seq_bits) = span(&seqs[..n]);
    let row_bits = 64 - (n.saturating_sub(1) as u64).leading_zeros();
    if id_bits + seq_bits + row_bits <= 64 {
        let (seq_shift, id_shift) = (row_bits, row_bits + seq_bits);
        // In u128: a field of no bits may sit at shift 64, which a u64 shift does not allow.
        let key = |i: usize| -> u64 {
            let id = u128::from(ids[i].wrapping_sub(id_lo) as u64) << id_shift;
            let seq = u128::from(seqs[i].wrapping_sub(seq_lo) as u64) << seq_shift;
            (id | seq | i as u128) as u64
        };
        let mut keys: Vec<u64> = (0..n).map(key).collect();
        keys.sort_unstable();
        // A batch holds fewer than 2^32 rows: row_bits < 64.
        let row_mask = (1u64 << row_bits) - 1;
        return keys.into_iter().map(|k| (k & row_mask) as u32).collect();
    }
    // The keys side by side with their row: sorting compares neighbours in memory instead of
    // looking both columns up for every comparison.
    let mut order: Vec<(i64, i64, u32)> = (0..n).map(|i| (ids[i], seqs[i], i as u32)).collect();
    order.sort_unstable();
    order.into_iter().map(|(.., i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::{entity_order, take_rows};
    use crate::workload::rng::Rng;
    use arrow::array::{Array, ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder, UInt32Array};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    /// `take_rows` gives what arrow's `take` gives: lists of names (null, empty and long lists,
    /// sliced arrays, repeated and skipped rows), a column of nulls only, and the rest.
    #[test]
    fn take_rows_is_arrows_take() {
        let mut rng = Rng::new(5);
        let names = ["age", "email", "a_much_longer_attribute_name", "", "ü"];
        for round in 0..300 {
            let n = 1 + rng.below(200) as usize;
            let mut lists = ListBuilder::new(StringBuilder::new());
            for _ in 0..n {
                if rng.chance(100) {
                    lists.append(false);
                    continue;
                }
                for _ in 0..rng.below(5) {
                    lists.values().append_value(rng.pick(&names));
                }
                lists.append(true);
            }
            let lists: ArrayRef = Arc::new(lists.finish());
            let ids: ArrayRef = Arc::new(Int64Array::from_iter((0..n).map(|_| rng.next_u64() as i64)));
            let texts: ArrayRef =
                Arc::new(StringArray::from_iter((0..n).map(|_| rng.chance(500).then(|| rng.pick(&names).to_string()))));
            let nulls: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; n]));
            let batch = RecordBatch::try_from_iter([("id", ids), ("_changed", lists), ("t", texts), ("k", nulls)])
                .expect("a batch");
            // A slice half the time, as `split_rows` makes.
            let batch = match round % 2 {
                0 => batch,
                _ => {
                    let from = rng.below(n as u64) as usize;
                    batch.slice(from, rng.below((n - from) as u64 + 1) as usize)
                }
            };
            let len = batch.num_rows() as u64;
            let rows: Vec<u32> = match len {
                0 => Vec::new(),
                _ => (0..rng.below(2 * len + 1)).map(|_| rng.below(len) as u32).collect(),
            };
            let indices = UInt32Array::from(rows);
            let want = arrow::compute::take_record_batch(&batch, &indices).expect("arrow's take");
            let got = take_rows(&batch, &indices).expect("take_rows");
            assert_eq!(got, want, "round {round}");
            assert_eq!(got.column(1).null_count(), want.column(1).null_count());
        }
    }

    /// What the packed sort must give: (id, seq, row) tuples sorted.
    fn by_tuples(ids: &[i64], seqs: &[i64]) -> Vec<u32> {
        let mut t: Vec<(i64, i64, u32)> =
            ids.iter().zip(seqs).enumerate().map(|(i, (&a, &b))| (a, b, i as u32)).collect();
        t.sort_unstable();
        t.into_iter().map(|(.., i)| i).collect()
    }

    #[test]
    fn entity_order_is_the_tuple_order_packed_or_not() {
        let mut rng = Rng::new(11);
        // Spans from a single value to the whole i64 range (which cannot be packed), negative
        // ids included, rows with equal keys (small spans) among them.
        for round in 0..400 {
            let n = rng.below(if round % 2 == 0 { 100 } else { 3000 }) as usize;
            let id_span = 1u64 << rng.below(64);
            let seq_span = 1u64 << rng.below(64);
            let id_base = rng.next_u64() as i64 >> rng.below(64);
            let seq_base = rng.next_u64() as i64 >> rng.below(64);
            let ids: Vec<i64> = (0..n).map(|_| id_base.wrapping_add(rng.below(id_span) as i64)).collect();
            let seqs: Vec<i64> = (0..n).map(|_| seq_base.wrapping_add(rng.below(seq_span) as i64)).collect();
            assert_eq!(entity_order(&ids, &seqs), by_tuples(&ids, &seqs), "round {round}: {ids:?} {seqs:?}");
        }
        assert_eq!(entity_order(&[], &[]), Vec::<u32>::new());
        assert_eq!(entity_order(&[i64::MAX, i64::MIN, 0], &[0, 0, 0]), vec![1, 2, 0]);
        assert_eq!(entity_order(&[5, 5, 5], &[i64::MIN, i64::MAX, -1]), vec![0, 2, 1]);
    }

    /// A pair's batch starts with the room its batch of the last flush took; pairs not in that
    /// flush start with Arrow's default.
    #[test]
    fn batches_start_as_large_as_the_last_flush_left_them() {
        use super::{BatchSet, DEFAULT_ROWS};
        use crate::catalog::{Attribute, Catalog};
        use crate::columns::Value;
        use crate::decode::DataType;
        use crate::pivot::types::EntityTypes;
        use crate::pivot::{Origin, RowMeta, RowOp, WideRow};
        let mut catalog = Catalog::default();
        for tenant_id in [1, 2] {
            catalog.upsert(Attribute {
                attribute_id: tenant_id * 10,
                tenant_id,
                entity_type: Arc::from("t"),
                name: Arc::from("note"),
                data_type: DataType::Text,
                is_hot: false,
            });
        }
        let name: Arc<str> = Arc::from("t");
        let entity_type = EntityTypes::default().id(&name);
        let row = |tenant_id: i64, i: i64| WideRow {
            tenant_id,
            entity_type,
            entity_id: i,
            op: RowOp::Update,
            entity_changed: true,
            cells: vec![(tenant_id * 10, Some(Value::Text(format!("note number {i}").into())))],
            meta: RowMeta {
                commit_lsn: i,
                lsn: i,
                tx_id: None,
                source_ts: Some(0),
                origin: Origin { seq: i, kafka: None },
            },
        };
        let mut set = BatchSet::new(2);
        for i in 0..5000 {
            set.push(&catalog, &row(1, i), &name);
        }
        set.finish().expect("a flush");
        let last = &set.last_sizes[&(entity_type, 1)];
        let bytes: usize = (0..5000).map(|i| format!("note number {i}").len()).sum();
        assert_eq!((last.rows, last.text_bytes[&10]), (5000, bytes));
        // Each row's `_changed` lists one name, `note`.
        assert_eq!((last.changed_names, last.changed_bytes), (5000, 4 * 5000));
        set.push(&catalog, &row(1, 0), &name);
        set.push(&catalog, &row(2, 0), &name);
        let (one, two) = (&set.tables[&(entity_type, 1)], &set.tables[&(entity_type, 2)]);
        assert!(one.entity_id.capacity() >= 5000 && one.room.text_bytes[&10] == bytes);
        assert!(two.entity_id.capacity() < 5000 && two.room.rows == DEFAULT_ROWS);
        // Sizes are those of the last flush only: tenant 1's pair, idle in this one, is forgotten.
        set.finish().expect("a flush");
        assert_eq!(set.last_sizes[&(entity_type, 1)].rows, DEFAULT_ROWS);
        set.finish().expect("an empty flush");
        assert!(set.last_sizes.is_empty());
    }
}
