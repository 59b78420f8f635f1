//! Decoding: Debezium records (JSON with or without embedded schemas, Avro in the Confluent wire
//! format) into [`Event`]s of the three EAV tables.
//!
//! Contract: a decoder never panics on input; every record yields an [`Event`] or a
//! [`DecodeError`] whose [`DecodeError::reason`] becomes the dead-letter reason. Values come out
//! normalised: decimals as unscaled integers with their scale, timestamps as microseconds since
//! the epoch in UTC, JSON as text, and Debezium's TOAST placeholder as [`Field::Unavailable`], so
//! that nothing downstream knows which `decimal.handling.mode` or `time.precision.mode` produced
//! them.

pub mod avro;
pub mod json;
mod layout;
pub mod registry;
pub mod scan;
pub mod value;

use crate::position::{Lsn, SourcePosition};
use compact_str::CompactString;
use serde::Deserialize;

/// The placeholder Debezium writes for an unchanged TOASTed column it could not read.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// Attribute data types of the catalog (`attributes.data_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Text,
    Int,
    Decimal,
    Bool,
    Timestamp,
    Json,
}

impl DataType {
    pub fn parse(text: &str) -> Option<DataType> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "text" | "string" | "varchar" => DataType::Text,
            "int" | "integer" | "bigint" => DataType::Int,
            "decimal" | "numeric" => DataType::Decimal,
            "bool" | "boolean" => DataType::Bool,
            "timestamp" | "timestamptz" => DataType::Timestamp,
            "json" | "jsonb" => DataType::Json,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Text => "text",
            DataType::Int => "int",
            DataType::Decimal => "decimal",
            DataType::Bool => "bool",
            DataType::Timestamp => "timestamp",
            DataType::Json => "json",
        }
    }
}

/// A column value that may be absent, null, or Debezium's TOAST placeholder.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Field<T> {
    /// SQL NULL (or the column was not in the record).
    #[default]
    Null,
    Value(T),
    /// Unchanged TOASTed value that Debezium could not read: keep the previous value.
    Unavailable,
}

impl<T> Field<T> {
    pub fn is_null(&self) -> bool {
        matches!(self, Field::Null)
    }
}

/// An exact decimal: `unscaled × 10^-scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub unscaled: i128,
    pub scale: u32,
}

/// The tables of the EAV store that eavlake reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Attributes,
    Entities,
    EntityValues,
}

/// Debezium's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// Snapshot read (`r`), initial or incremental.
    Read,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// The part of Debezium's `source` block eavlake uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceMeta {
    /// `(sequence[0], lsn)`: see [`SourcePosition`]. For snapshot reads both are the snapshot LSN.
    pub position: SourcePosition,
    pub tx_id: Option<i64>,
    /// Source commit time, µs since the epoch (`ts_us`, else `ts_ms` × 1000).
    pub commit_time_us: Option<i64>,
    /// True for snapshot reads: their positions do not order them, so they are never de-duplicated
    /// by position.
    pub snapshot: bool,
}

/// A row of `attributes`: one catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeRow {
    pub attribute_id: i64,
    pub tenant_id: i64,
    pub entity_type: String,
    pub name: String,
    pub data_type: DataType,
    pub is_hot: bool,
}

/// A row of `entities` (after or before image).
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRow {
    pub entity_id: i64,
    /// Absent in a delete's before-image unless the table has REPLICA IDENTITY FULL.
    pub tenant_id: Option<i64>,
    /// Inline (a type name is short): no allocation per change.
    pub entity_type: Option<CompactString>,
    /// `hot_attributes` JSONB as JSON text.
    pub hot_attributes: Field<String>,
    pub is_deleted: bool,
}

/// A row of `entity_values`: one cold attribute value in its typed column.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueRow {
    pub entity_id: i64,
    pub attribute_id: i64,
    pub tenant_id: Option<i64>,
    /// Text and JSON are [`CompactString`]s: most are short, held inline, and the pivot moves
    /// them into its cells as they are.
    pub value_text: Field<CompactString>,
    pub value_int: Option<i64>,
    pub value_decimal: Option<Decimal>,
    pub value_bool: Option<bool>,
    pub value_timestamp: Option<i64>,
    pub value_json: Field<CompactString>,
}

/// A row change of one of the three tables, with both images where Debezium gives them.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    Attribute { before: Option<AttributeRow>, after: Option<AttributeRow> },
    Entity { before: Option<EntityRow>, after: Option<EntityRow> },
    Value { before: Option<ValueRow>, after: Option<ValueRow> },
}

impl RowChange {
    /// The entity a change of `entities` or `entity_values` is of (from the image `op` uses).
    pub fn entity_id(&self, op: Op) -> Option<i64> {
        let delete = op == Op::Delete;
        match self {
            RowChange::Entity { before, after } => if delete { before } else { after }.as_ref().map(|r| r.entity_id),
            RowChange::Value { before, after } => if delete { before } else { after }.as_ref().map(|r| r.entity_id),
            RowChange::Attribute { .. } => None,
        }
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
// Changes are nearly every event; boxing them would add an allocation to the common case.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// An insert, update, delete or snapshot read of a row.
    Change {
        op: Op,
        source: SourceMeta,
        /// Debezium's `transaction.id`, kept only when the source block has no `txId`: the
        /// pivot tells transactions apart by txId and commit LSN, and by this only without
        /// them (so the common case copies no string).
        tx: Option<String>,
        row: RowChange,
    },
    /// `TRUNCATE` of one of the tables.
    Truncate { table: Table, source: SourceMeta },
    /// A change of a table eavlake does not read (ignored, counted).
    OtherTable { table: String },
    /// Logical decoding message (`op = m`): not table data.
    Message,
    /// Heartbeat record (`{"ts_ms": …}`): proves liveness, carries no change.
    Heartbeat,
    /// Transaction metadata record (`status` BEGIN/END). Its `id` is not kept: the pivot
    /// ends its fold at an END whatever it names (a sixth of a stream's records are these, and
    /// copying the id was an allocation each).
    Transaction { begin: bool },
    /// Kafka tombstone (null value) that follows a delete for log compaction.
    Tombstone,
}

/// How a decimal column arrives when the record has no schema to say so (Debezium's
/// `decimal.handling.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DecimalMode {
    /// Base64 of the big-endian two's-complement unscaled value; the scale comes from the schema
    /// or, without one, from `decimal_scale`.
    #[default]
    Precise,
    /// Decimal text, `"12.34"`.
    String,
    /// A JSON number (a Java double).
    Double,
}

/// How a `timestamp without time zone` column arrives when there is no schema (Debezium's
/// `time.precision.mode`): the unit of an integer timestamp. Strings (ZonedTimestamp,
/// `isostring`) are always understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeMode {
    /// `adaptive` / `adaptive_time_microseconds`: MicroTimestamp (µs) for timestamp(4..6).
    #[default]
    Adaptive,
    /// `connect`: org.apache.kafka.connect.data.Timestamp (ms).
    Connect,
    /// `nanoseconds` (NanoTimestamp).
    Nanoseconds,
    /// Integers are milliseconds (Timestamp, timestamp(0..3) in adaptive mode).
    Milliseconds,
}

/// Decoding settings that records without schemas cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    pub decimal_mode: DecimalMode,
    pub time_mode: TimeMode,
    /// Scale of `entity_values.value_decimal` (used for precise decimals without schema).
    pub decimal_scale: u32,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { decimal_mode: DecimalMode::Precise, time_mode: TimeMode::Adaptive, decimal_scale: 9 }
    }
}

/// Names of the source tables, as Debezium reports them in `source.table` (partition roots when
/// `publish.via.partition.root` is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub attributes: String,
    pub entities: String,
    pub entity_values: String,
}

impl Default for TableNames {
    fn default() -> Self {
        TableNames {
            attributes: "attributes".into(),
            entities: "entities".into(),
            entity_values: "entity_values".into(),
        }
    }
}

impl TableNames {
    /// The source name of a table (the inverse of [`TableNames::classify`]).
    pub fn name(&self, table: Table) -> &str {
        match table {
            Table::Attributes => &self.attributes,
            Table::Entities => &self.entities,
            Table::EntityValues => &self.entity_values,
        }
    }

    pub fn classify(&self, table: &str) -> Option<Table> {
        if table == self.entity_values {
            Some(Table::EntityValues)
        } else if table == self.entities {
            Some(Table::Entities)
        } else if table == self.attributes {
            Some(Table::Attributes)
        } else {
            None
        }
    }
}

/// The decoder of a stream's record format: JSON, or Avro in the Confluent wire format.
pub enum Decoder {
    Json(json::JsonDecoder),
    /// Shared by a worker's streams (one schema cache); the caller fetches a record's writer
    /// schema first ([`avro::AvroDecoder::missing_schema`], [`avro::AvroDecoder::prepare`]).
    Avro(std::sync::Arc<avro::AvroDecoder>),
}

impl Decoder {
    /// JSON unless an Avro decoder is given.
    pub fn new(
        options: DecodeOptions,
        tables: TableNames,
        avro: Option<&std::sync::Arc<avro::AvroDecoder>>,
    ) -> Decoder {
        match avro {
            Some(a) => Decoder::Avro(a.clone()),
            None => Decoder::Json(json::JsonDecoder::new(options, tables)),
        }
    }

    pub fn decode(&mut self, value: Option<&[u8]>) -> Result<Event, DecodeError> {
        match self {
            Decoder::Json(d) => d.decode(value),
            Decoder::Avro(d) => d.decode_ready(value),
        }
    }

    /// [`Self::decode`] of a value its source already found to be UTF-8 (see
    /// [`crate::source::Record::text`]).
    pub fn decode_text(&mut self, text: &str) -> Result<Event, DecodeError> {
        match self {
            Decoder::Json(d) => d.decode_text(text),
            Decoder::Avro(d) => d.decode_ready(Some(text.as_bytes())),
        }
    }
}

/// Why a record could not be decoded. `reason()` is the stable code written to dead letters.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodeError {
    #[error("record is not valid JSON: {0}")]
    Json(String),
    #[error("record is not valid UTF-8: {0}")]
    InvalidUtf8(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("field `{field}`: {message}")]
    OutOfRange { field: String, message: String },
    #[error("record is not a Debezium change event: {0}")]
    NotDebezium(String),
    #[error("field `{field}`: {message}")]
    BadField { field: String, message: String },
    #[error("unknown op `{0}`")]
    UnknownOp(String),
    #[error("Avro record: {0}")]
    Avro(String),
    #[error("schema registry: {0}")]
    Registry(String),
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "invalid_json",
            DecodeError::InvalidUtf8(_) => "invalid_utf8",
            DecodeError::TooLarge(_) => "record_too_large",
            DecodeError::OutOfRange { .. } => "value_out_of_range",
            DecodeError::NotDebezium(_) => "not_debezium",
            DecodeError::BadField { .. } => "bad_field",
            DecodeError::UnknownOp(_) => "unknown_op",
            DecodeError::Avro(_) => "invalid_avro",
            DecodeError::Registry(_) => "schema_registry",
        }
    }

    pub(crate) fn field(field: &str, message: impl Into<String>) -> DecodeError {
        DecodeError::BadField { field: field.to_string(), message: message.into() }
    }

    /// A record of `bytes` bytes over the `limit`; `cut` when the source kept only its beginning.
    pub fn too_large(bytes: usize, limit: usize, cut: bool) -> DecodeError {
        let kept = if cut { format!("; the dead letter holds its first {limit} bytes") } else { String::new() };
        DecodeError::TooLarge(format!("record of {bytes} bytes is over limits.max_record_bytes ({limit}){kept}"))
    }

    /// A column value that could not be read: malformed (`bad_field`) or beyond what its column
    /// holds (`value_out_of_range`).
    pub(crate) fn value(field: &str, e: value::ValueError) -> DecodeError {
        match e {
            value::ValueError::Invalid(message) => DecodeError::BadField { field: field.to_string(), message },
            value::ValueError::OutOfRange(message) => DecodeError::OutOfRange { field: field.to_string(), message },
        }
    }
}

/// Builds a [`SourceMeta`] from the raw pieces of a `source` block, shared by the JSON and Avro
/// decoders.
pub(crate) fn source_meta(
    lsn: Option<i64>,
    // The first LSN of `source.sequence` (see `parse_sequence`).
    sequence: Option<Lsn>,
    tx_id: Option<i64>,
    ts_ms: Option<i64>,
    ts_us: Option<i64>,
    snapshot: Option<&str>,
    op: Option<Op>,
) -> SourceMeta {
    let lsn = Lsn(lsn.unwrap_or(0).max(0) as u64);
    // Without a commit LSN in `sequence` (a snapshot read, an old connector) the change's own.
    let commit_lsn = sequence.unwrap_or(lsn);
    // "true", "first", "last", "first_in_data_collection", "incremental" all mean a snapshot
    // read; "false" or absent means streaming.
    let snapshot = op == Some(Op::Read) || matches!(snapshot, Some(s) if s != "false");
    SourceMeta {
        position: SourcePosition { commit_lsn, lsn },
        tx_id,
        commit_time_us: ts_us.or(ts_ms.map(|ms| ms.saturating_mul(1000))),
        snapshot,
    }
}

/// Parses Debezium's `source.sequence`, a JSON array of two strings, `["<last commit lsn>",
/// "<lsn>"]`, either of which may be null. Returns the first element. Hand-parsed (it is on every
/// event), and it accepts the text still JSON-escaped (`[\"1\",\"2\"]`) so that decoders need
/// not unescape it first.
pub(crate) fn parse_sequence(seq: &str) -> Result<Option<Lsn>, DecodeError> {
    let bad = || {
        let shown = seq.replace("\\\"", "\"");
        DecodeError::field("source.sequence", format!("`{shown}` is not [\"<lsn>\", \"<lsn>\"]"))
    };
    let inner = seq.trim_ascii().strip_prefix('[').ok_or_else(bad)?.trim_ascii_start();
    if inner.starts_with("null") || inner.starts_with(']') {
        return Ok(None);
    }
    let rest = inner.strip_prefix("\\\"").or_else(|| inner.strip_prefix('"')).ok_or_else(bad)?;
    // The usual form, a plain integer up to its closing quote, read eight digits at a time (up
    // to 18 cannot overflow); anything else takes the general path below.
    let (v, n) = scan::digits(rest.as_bytes(), 0);
    if (1..=18).contains(&n) && matches!(rest.as_bytes().get(n), Some(b'"' | b'\\')) {
        return Ok(Some(Lsn(v)));
    }
    // A byte loop: `str::find` with a set of chars costs more than the dozen digits it passes.
    let end = rest.bytes().position(|c| c == b'"' || c == b'\\').ok_or_else(bad)?;
    Lsn::parse(&rest[..end]).map(Some).ok_or_else(bad)
}

pub(crate) fn parse_op(op: &str) -> Result<Option<Op>, DecodeError> {
    Ok(Some(match op {
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "r" => Op::Read,
        "t" | "m" => return Ok(None),
        other => return Err(DecodeError::UnknownOp(other.to_string())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_gives_commit_lsn() {
        let m = source_meta(Some(200), Some(Lsn(150)), Some(7), Some(1000), None, Some("false"), Some(Op::Update));
        assert_eq!(m.position, SourcePosition { commit_lsn: Lsn(150), lsn: Lsn(200) });
        assert_eq!(m.commit_time_us, Some(1_000_000));
        assert!(!m.snapshot);
        // No commit LSN (`[null, …]`): the change's own.
        let m = source_meta(Some(200), None, None, None, Some(5), Some("last"), Some(Op::Read));
        assert_eq!(m.position.commit_lsn, Lsn(200));
        assert_eq!(m.commit_time_us, Some(5));
        assert!(m.snapshot);
    }

    #[test]
    fn sequence_forms() {
        // As JSON text, still escaped (how the JSON decoder passes it), with blanks, in X/Y form.
        assert_eq!(parse_sequence(r#"["150","200"]"#).unwrap(), Some(Lsn(150)));
        assert_eq!(parse_sequence(r#"[\"150\",\"200\"]"#).unwrap(), Some(Lsn(150)));
        assert_eq!(parse_sequence(r#" [ "150", "200" ] "#).unwrap(), Some(Lsn(150)));
        assert_eq!(parse_sequence(r#"["0/96","200"]"#).unwrap(), Some(Lsn(150)));
        assert_eq!(parse_sequence(r#"[null,"200"]"#).unwrap(), None);
        assert_eq!(parse_sequence("[]").unwrap(), None);
        for bad in ["", "150", r#"["150"#, r#"[150,"200"]"#, r#"["-1","200"]"#, r#"["","200"]"#] {
            assert!(parse_sequence(bad).is_err(), "{bad:?} accepted");
        }
    }
}
