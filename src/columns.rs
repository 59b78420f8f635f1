//! The lake's columns: names, Arrow types and the metadata that travels with them. Shared by the
//! pivot (which writes change rows), compaction (which reads them and writes the current state)
//! and readers of the lake.
//!
//! A change row is `tenant_id, entity_id, <one column per attribute>, _op, _changed, …`; an
//! attribute column is named by the attribute and typed by its catalog data type. Every
//! attribute field carries its attribute id and data type as field metadata, so that a type
//! change is visible in the files themselves.

use crate::decode::DataType;
use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType as ArrowType, Field, TimeUnit};
use compact_str::CompactString;
use std::collections::HashMap;
use std::sync::Arc;

pub const TENANT_ID: &str = "tenant_id";
pub const ENTITY_ID: &str = "entity_id";
/// `c`, `u`, `d` or `r`: the entity-level operation of the folded row.
pub const OP: &str = "_op";
/// Names of the attributes this row changed (set to a value or to null); an attribute not listed
/// was not touched, whatever its cell holds.
pub const CHANGED: &str = "_changed";
/// True when the row includes a change of the entity's own `entities` row. A row of value
/// changes only updates an entity that exists; it never creates one (values of a deleted
/// entity, or cascaded deletes, must not resurrect it).
pub const ENTITY_CHANGED: &str = "_entity_changed";
/// True on a delete (`_op = d`) that set `is_deleted`: the entity's rows stay in the store, and
/// an un-delete brings back its values (compaction keeps them apart, see `compact`). False for
/// a physical delete and every other row; change files written before it have no such column.
pub const LOGICAL_DELETE: &str = "_logical_delete";
/// Debezium's `sequence[0]`: the last commit LSN before the row's transaction.
pub const COMMIT_LSN: &str = "_commit_lsn";
/// LSN of the last change folded into the row.
pub const LSN: &str = "_lsn";
pub const TX_ID: &str = "_tx_id";
/// Source commit time.
pub const SOURCE_TS: &str = "_source_ts";
/// Place in the source stream (Kafka offset or file line) of the first change folded into the
/// row: the order in which the rows of one entity apply.
pub const SEQ: &str = "_seq";
pub const KAFKA_TOPIC: &str = "_kafka_topic";
pub const KAFKA_PARTITION: &str = "_kafka_partition";
pub const KAFKA_OFFSET: &str = "_kafka_offset";

/// Field metadata keys.
pub const META_ATTRIBUTE_ID: &str = "eavlake.attribute_id";
pub const META_DATA_TYPE: &str = "eavlake.data_type";
/// Parquet key-value metadata of a current-state file: per stream, the last `_seq` applied.
pub const META_WATERMARKS: &str = "eavlake.watermarks";
/// Parquet key-value metadata of a current-state file: the object holding the range's logically
/// deleted entities (see `compact`), when it has any.
pub const META_RETIRED: &str = "eavlake.retired";

/// Precision of decimal columns (Decimal128's maximum).
pub const DECIMAL_PRECISION: u8 = 38;

/// The Arrow type of an attribute column.
pub fn arrow_type(data_type: DataType, decimal_scale: u32) -> ArrowType {
    match data_type {
        DataType::Text | DataType::Json => ArrowType::Utf8,
        DataType::Int => ArrowType::Int64,
        DataType::Decimal => ArrowType::Decimal128(DECIMAL_PRECISION, decimal_scale as i8),
        DataType::Bool => ArrowType::Boolean,
        DataType::Timestamp => timestamp_type(),
    }
}

pub fn timestamp_type() -> ArrowType {
    ArrowType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
}

/// The field of an attribute column, with its id and data type as metadata.
pub fn attribute_field(name: &str, attribute_id: i64, data_type: DataType, decimal_scale: u32) -> Field {
    Field::new(name, arrow_type(data_type, decimal_scale), true).with_metadata(HashMap::from([
        (META_ATTRIBUTE_ID.to_string(), attribute_id.to_string()),
        (META_DATA_TYPE.to_string(), data_type.as_str().to_string()),
    ]))
}

/// Reads back what [`attribute_field`] wrote; `None` for key and metadata columns.
pub fn attribute_of(field: &Field) -> Option<(i64, DataType)> {
    let id = field.metadata().get(META_ATTRIBUTE_ID)?.parse().ok()?;
    let dt = DataType::parse(field.metadata().get(META_DATA_TYPE)?)?;
    Some((id, dt))
}

/// One cell of an attribute column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    /// Unscaled, at the lake's decimal scale.
    Decimal(i128),
    Bool(bool),
    /// µs since the epoch, UTC.
    Timestamp(i64),
    /// Text and JSON (as JSON text); inline up to 24 bytes (no allocation per short cell).
    Text(CompactString),
}

impl Value {
    /// Approximate bytes the value takes in a batch, for flush-on-bytes.
    pub fn size(&self) -> usize {
        match self {
            Value::Text(s) => s.len() + 4,
            Value::Decimal(_) => 16,
            _ => 8,
        }
    }

    /// The value as `to` when that loses nothing (an attribute whose type changed); `None`
    /// otherwise. Text and JSON share a representation.
    pub fn convert(&self, to: DataType, decimal_scale: u32) -> Option<Value> {
        use crate::decode::value::format_decimal;
        Some(match (self, to) {
            (Value::Int(_), DataType::Int)
            | (Value::Decimal(_), DataType::Decimal)
            | (Value::Bool(_), DataType::Bool)
            | (Value::Timestamp(_), DataType::Timestamp)
            | (Value::Text(_), DataType::Text | DataType::Json) => self.clone(),
            (Value::Int(i), DataType::Text | DataType::Json) => Value::Text(i.to_string().into()),
            (Value::Int(i), DataType::Decimal) => {
                Value::Decimal((*i as i128).checked_mul(10i128.checked_pow(decimal_scale)?)?)
            }
            (Value::Decimal(d), DataType::Text | DataType::Json) => {
                Value::Text(format_decimal(*d, decimal_scale).into())
            }
            (Value::Decimal(d), DataType::Int) => {
                let f = 10i128.checked_pow(decimal_scale)?;
                if d % f != 0 {
                    return None;
                }
                Value::Int(i64::try_from(d / f).ok()?)
            }
            (Value::Bool(b), DataType::Text | DataType::Json) => Value::Text(b.to_string().into()),
            (Value::Timestamp(t), DataType::Text) => Value::Text(
                chrono::DateTime::from_timestamp_micros(*t)?
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    .into(),
            ),
            (Value::Text(s), DataType::Int) => Value::Int(s.trim().parse().ok()?),
            (Value::Text(s), DataType::Decimal) => Value::Decimal(
                crate::decode::value::rescale(crate::decode::value::parse_decimal(s).ok()?, decimal_scale).ok()?,
            ),
            (Value::Text(s), DataType::Bool) => Value::Bool(s.trim().parse().ok()?),
            (Value::Text(s), DataType::Timestamp) => Value::Timestamp(crate::decode::value::parse_timestamp(s).ok()?),
            _ => return None,
        })
    }
}

/// The text bytes a [`ValueBuilder`] starts with when nothing better is known (Arrow's default).
pub const TEXT_BYTES: usize = 1024;

/// A builder of one attribute column from [`Value`]s, typed by the attribute's data type. Shared
/// by the pivot (change rows) and compaction (current state).
pub enum ValueBuilder {
    Int(Int64Builder),
    Decimal(Decimal128Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Text(StringBuilder),
}

impl ValueBuilder {
    /// A builder for about `rows` values (text: and [`TEXT_BYTES`] of it, growing as needed).
    pub fn new(data_type: DataType, scale: u32, rows: usize) -> ValueBuilder {
        ValueBuilder::with_capacity(data_type, scale, rows, TEXT_BYTES)
    }

    /// A builder with room for `rows` values and, for text, `bytes` bytes of them.
    pub fn with_capacity(data_type: DataType, scale: u32, rows: usize, bytes: usize) -> ValueBuilder {
        match data_type {
            DataType::Int => ValueBuilder::Int(Int64Builder::with_capacity(rows)),
            DataType::Decimal => ValueBuilder::Decimal(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(DECIMAL_PRECISION, scale as i8)
                    .unwrap_or_default(),
            ),
            DataType::Bool => ValueBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            DataType::Timestamp => {
                ValueBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"))
            }
            DataType::Text | DataType::Json => ValueBuilder::Text(StringBuilder::with_capacity(rows, bytes)),
        }
    }

    /// Appends a value, or null. Values are typed by the same catalog entry as the column, so a
    /// value of another type would be a bug; it is appended as null rather than as a wrong value.
    pub fn append(&mut self, value: Option<&Value>) {
        match (self, value) {
            (ValueBuilder::Int(b), Some(Value::Int(v))) => b.append_value(*v),
            (ValueBuilder::Decimal(b), Some(Value::Decimal(v))) => b.append_value(*v),
            (ValueBuilder::Bool(b), Some(Value::Bool(v))) => b.append_value(*v),
            (ValueBuilder::Timestamp(b), Some(Value::Timestamp(v))) => b.append_value(*v),
            (ValueBuilder::Text(b), Some(Value::Text(v))) => b.append_value(v),
            (b, _) => b.append_nulls(1),
        }
    }

    pub fn append_nulls(&mut self, n: usize) {
        match self {
            ValueBuilder::Int(b) => b.append_nulls(n),
            ValueBuilder::Decimal(b) => b.append_nulls(n),
            ValueBuilder::Bool(b) => b.append_nulls(n),
            ValueBuilder::Timestamp(b) => b.append_nulls(n),
            ValueBuilder::Text(b) => b.append_nulls(n),
        }
    }

    /// The bytes of the text values appended so far (0 for other types).
    pub fn text_bytes(&self) -> usize {
        match self {
            ValueBuilder::Text(b) => b.values_slice().len(),
            _ => 0,
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ValueBuilder::Int(b) => Arc::new(b.finish()),
            ValueBuilder::Decimal(b) => Arc::new(b.finish()),
            ValueBuilder::Bool(b) => Arc::new(b.finish()),
            ValueBuilder::Timestamp(b) => Arc::new(b.finish()),
            ValueBuilder::Text(b) => Arc::new(b.finish()),
        }
    }
}

/// A [`ValueBuilder`] that holds nulls back and appends them as runs: a row sets a few of its
/// type's attributes, and one `append_nulls` per run costs less than an append per null cell
/// (callgrind: appends were 4.6% of a run). Used for change batches and current objects.
pub struct NullRunBuilder {
    builder: ValueBuilder,
    /// Nulls appended but not yet in the builder.
    nulls: usize,
}

impl NullRunBuilder {
    /// A builder whose column starts with `nulls` nulls (rows that came before the column).
    pub fn new(builder: ValueBuilder, nulls: usize) -> NullRunBuilder {
        NullRunBuilder { builder, nulls }
    }

    /// Appends a value, or null (see [`ValueBuilder::append`]).
    pub fn append(&mut self, value: Option<&Value>) {
        if value.is_none() {
            self.nulls += 1;
            return;
        }
        self.put_nulls();
        self.builder.append(value);
    }

    /// Moves the nulls held back into the builder.
    fn put_nulls(&mut self) {
        let n = std::mem::take(&mut self.nulls);
        if n > 0 {
            self.builder.append_nulls(n);
        }
    }

    /// The bytes of the text values appended so far (0 for other types).
    pub fn text_bytes(&self) -> usize {
        self.builder.text_bytes()
    }

    pub fn finish(&mut self) -> ArrayRef {
        self.put_nulls();
        self.builder.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_lossless_or_refused() {
        assert_eq!(Value::Int(5).convert(DataType::Decimal, 2), Some(Value::Decimal(500)));
        assert_eq!(Value::Decimal(500).convert(DataType::Int, 2), Some(Value::Int(5)));
        assert_eq!(Value::Decimal(501).convert(DataType::Int, 2), None);
        assert_eq!(Value::Decimal(-501).convert(DataType::Text, 2), Some(Value::Text("-5.01".into())));
        assert_eq!(Value::Text("abc".into()).convert(DataType::Int, 2), None);
        assert_eq!(Value::Text("7".into()).convert(DataType::Int, 2), Some(Value::Int(7)));
        assert_eq!(Value::Bool(true).convert(DataType::Timestamp, 2), None);
    }

    #[test]
    fn attribute_fields_carry_their_identity() {
        let f = attribute_field("balance", 42, DataType::Decimal, 9);
        assert_eq!(f.data_type(), &ArrowType::Decimal128(38, 9));
        assert_eq!(attribute_of(&f), Some((42, DataType::Decimal)));
        assert_eq!(attribute_of(&Field::new(ENTITY_ID, ArrowType::Int64, false)), None);
    }
}
