//! Debezium JSON records, with embedded schemas (`{"schema":…,"payload":…}`, JsonConverter with
//! `schemas.enable=true`) and without.
//!
//! Speed matters here (every event passes through): the envelope is deserialised with borrowed
//! strings and the row images are kept as raw JSON until the table is known, then read straight
//! into typed rows. Embedded schemas are only consulted for what the payload cannot tell (decimal
//! and timestamp encodings), and what they say is cached by the schema's text.

use super::value::{
    decimal_from_f64, parse_decimal, parse_timestamp, timestamp_from_days, timestamp_from_int, unscaled_from_base64,
};
use super::{
    parse_op, source_meta, AttributeRow, DataType, DecimalMode, DecodeError, DecodeOptions, EntityRow, Event, Field,
    Op, RowChange, Table, TableNames, TimeMode, ValueRow, UNAVAILABLE,
};
use crate::decode::Decimal;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::hash::{Hash, Hasher};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<Box<Envelope<'a>>>,
    #[serde(borrow, default)]
    before: Option<RowImage<'a>>,
    #[serde(borrow, default)]
    after: Option<RowImage<'a>>,
    #[serde(borrow, default)]
    source: Option<Source<'a>>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    transaction: Option<TxBlock<'a>>,
    // Transaction metadata records and heartbeats.
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
}

/// A row image of any of the three tables, read in the same pass as the envelope (the table is
/// only known from `source`, which comes after the images). Which fields must be present is
/// checked once the table is known.
#[derive(Deserialize, Default)]
struct RowImage<'a> {
    #[serde(default)]
    entity_id: Option<i64>,
    #[serde(default)]
    attribute_id: Option<i64>,
    #[serde(default)]
    tenant_id: Option<i64>,
    #[serde(borrow, default)]
    entity_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data_type: Option<Cow<'a, str>>,
    #[serde(default)]
    is_hot: Option<bool>,
    #[serde(borrow, default)]
    hot_attributes: Option<Cow<'a, str>>,
    #[serde(default)]
    is_deleted: Option<bool>,
    #[serde(borrow, default)]
    value_text: Option<Cow<'a, str>>,
    #[serde(default)]
    value_int: Option<i64>,
    #[serde(borrow, default)]
    value_decimal: Option<&'a RawValue>,
    #[serde(default)]
    value_bool: Option<bool>,
    #[serde(borrow, default)]
    value_timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value_json: Option<Cow<'a, str>>,
}

/// Just enough of a record to name its table, for records whose images do not fit
/// [`RowImage`] (tables eavlake does not read may have columns of other types).
#[derive(Deserialize)]
struct TableOnly<'a> {
    #[serde(borrow, default)]
    payload: Option<Box<TableOnly<'a>>>,
    #[serde(borrow, default)]
    source: Option<SourceTable<'a>>,
}

#[derive(Deserialize)]
struct SourceTable<'a> {
    #[serde(borrow, default)]
    table: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(default)]
    lsn: Option<i64>,
    #[serde(borrow, default)]
    sequence: Option<Cow<'a, str>>,
    #[serde(rename = "txId", default)]
    tx_id: Option<i64>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    ts_us: Option<i64>,
    #[serde(borrow, default)]
    snapshot: Option<Snapshot<'a>>,
    #[serde(borrow, default)]
    table: Option<Cow<'a, str>>,
}

/// `source.snapshot` is a string in Debezium 1.x+ (`"true"`, `"last"`, `"incremental"`, …) and
/// a boolean in older versions. (A hand-written visitor: serde's untagged enums buffer the value
/// first, which costs more than the rest of the envelope.)
enum Snapshot<'a> {
    Bool(bool),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Snapshot<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Snapshot<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Snapshot<'a>, E> {
                Ok(Snapshot::Bool(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Snapshot<'a>, E> {
                Ok(Snapshot::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Snapshot<'a>, E> {
                Ok(Snapshot::Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct TxBlock<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

/// How the typed value columns are encoded, from the embedded schema or, without one, from the
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecimalCodec {
    Precise { scale: u32 },
    VariableScale,
    Text,
    Double,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeCodec {
    /// Integers in this unit; strings are ISO-8601.
    Int(TimeMode),
    /// `io.debezium.time.Date`: days.
    Days,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Codecs {
    decimal: DecimalCodec,
    timestamp: TimeCodec,
}

/// Decodes Debezium JSON records. Holds a cache of embedded schemas, so keep one per stream.
pub struct JsonDecoder {
    tables: TableNames,
    defaults: Codecs,
    schema_cache: FxHashMap<u64, Codecs>,
}

impl JsonDecoder {
    pub fn new(options: DecodeOptions, tables: TableNames) -> JsonDecoder {
        let decimal = match options.decimal_mode {
            DecimalMode::Precise => DecimalCodec::Precise { scale: options.decimal_scale },
            DecimalMode::String => DecimalCodec::Text,
            DecimalMode::Double => DecimalCodec::Double,
        };
        let defaults = Codecs { decimal, timestamp: TimeCodec::Int(options.time_mode) };
        JsonDecoder { tables, defaults, schema_cache: FxHashMap::default() }
    }

    /// Decodes one record value; `None` bytes is a tombstone.
    pub fn decode(&mut self, value: Option<&[u8]>) -> Result<Event, DecodeError> {
        let Some(bytes) = value else { return Ok(Event::Tombstone) };
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() || trimmed == b"null" {
            return Ok(Event::Tombstone);
        }
        let env: Envelope = match serde_json::from_slice(trimmed) {
            Ok(env) => env,
            Err(e) => {
                return match self.other_table(trimmed) {
                    Some(table) => Ok(Event::OtherTable { table }),
                    None => Err(json_error(e)),
                }
            }
        };
        match env.payload {
            Some(payload) => {
                let codecs = match env.schema {
                    Some(s) => self.codecs_for_schema(s.get())?,
                    None => self.defaults,
                };
                self.decode_envelope(*payload, codecs)
            }
            None if env.schema.is_some() => Ok(Event::Tombstone),
            None => {
                let codecs = self.defaults;
                self.decode_envelope(env, codecs)
            }
        }
    }

    /// For a record that failed to decode: `OtherTable` when it belongs to a table eavlake
    /// does not read (its columns need not fit eavlake's row images).
    fn other_table(&self, bytes: &[u8]) -> Option<String> {
        let t: TableOnly = serde_json::from_slice(bytes).ok()?;
        let table = match t.payload {
            Some(p) => p.source,
            None => t.source,
        }?
        .table?;
        match self.tables.classify(&table) {
            Some(_) => None,
            None => Some(table.into_owned()),
        }
    }

    fn decode_envelope(&self, env: Envelope, codecs: Codecs) -> Result<Event, DecodeError> {
        if let Some(status) = &env.status {
            let begin = match status.as_ref() {
                "BEGIN" => true,
                "END" => false,
                other => return Err(DecodeError::field("status", format!("unknown transaction status `{other}`"))),
            };
            let id = env.id.map(|c| c.into_owned()).unwrap_or_default();
            return Ok(Event::Transaction { begin, id });
        }
        let Some(op_text) = env.op.as_deref() else {
            if env.source.is_none() && env.ts_ms.is_some() {
                return Ok(Event::Heartbeat);
            }
            return Err(DecodeError::NotDebezium("no `op` field".into()));
        };
        let op = parse_op(op_text)?;
        if op_text == "m" {
            return Ok(Event::Message);
        }
        let source = env.source.ok_or_else(|| DecodeError::NotDebezium("no `source` block".into()))?;
        let snapshot = match &source.snapshot {
            Some(Snapshot::Bool(true)) => Some("true"),
            Some(Snapshot::Bool(false)) | None => None,
            Some(Snapshot::Text(t)) => Some(t.as_ref()),
        };
        let meta = source_meta(
            source.lsn,
            source.sequence.as_deref(),
            source.tx_id,
            source.ts_ms,
            source.ts_us,
            snapshot,
            op,
        )?;
        let table_name = source.table.as_deref().unwrap_or("");
        let Some(table) = self.tables.classify(table_name) else {
            return Ok(Event::OtherTable { table: table_name.to_string() });
        };
        let Some(op) = op else {
            return Ok(Event::Truncate { table, source: meta });
        };
        let tx = env.transaction.and_then(|t| t.id).map(|c| c.into_owned());
        let before = image(env.before, "before", op == Op::Delete, op)?;
        let after = image(env.after, "after", op != Op::Delete, op)?;
        let row = match table {
            Table::Attributes => RowChange::Attribute {
                before: before.map(|b| attribute_row(b, "before")).transpose()?,
                after: after.map(|a| attribute_row(a, "after")).transpose()?,
            },
            Table::Entities => RowChange::Entity {
                before: before.map(|b| entity_row(b, "before")).transpose()?,
                after: after.map(|a| entity_row(a, "after")).transpose()?,
            },
            Table::EntityValues => RowChange::Value {
                before: before.map(|b| value_row(b, "before", codecs)).transpose()?,
                after: after.map(|a| value_row(a, "after", codecs)).transpose()?,
            },
        };
        Ok(Event::Change { op, source: meta, tx, row })
    }

    /// Reads what the embedded schema says about `value_decimal` and `value_timestamp`, cached
    /// by the schema text (Debezium repeats the same schema on every record of a table).
    fn codecs_for_schema(&mut self, schema: &str) -> Result<Codecs, DecodeError> {
        let mut h = rustc_hash::FxHasher::default();
        schema.hash(&mut h);
        let key = h.finish();
        if let Some(c) = self.schema_cache.get(&key) {
            return Ok(*c);
        }
        let parsed: serde_json::Value =
            serde_json::from_str(schema).map_err(|e| DecodeError::field("schema", e.to_string()))?;
        let mut codecs = self.defaults;
        let row_fields = parsed
            .get("fields")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
            .filter(|f| matches!(f.get("field").and_then(|n| n.as_str()), Some("after" | "before")))
            .filter_map(|f| f.get("fields").and_then(|f| f.as_array()))
            .flatten();
        for field in row_fields {
            let name = field.get("field").and_then(|n| n.as_str()).unwrap_or("");
            let logical = field.get("name").and_then(|n| n.as_str()).unwrap_or("");
            let ty = field.get("type").and_then(|n| n.as_str()).unwrap_or("");
            match name {
                "value_decimal" => {
                    codecs.decimal = match (logical, ty) {
                        ("org.apache.kafka.connect.data.Decimal", _) => {
                            let scale = field
                                .pointer("/parameters/scale")
                                .and_then(|s| s.as_str())
                                .and_then(|s| s.parse().ok())
                                .ok_or_else(|| DecodeError::field("schema", "Decimal without a scale parameter"))?;
                            DecimalCodec::Precise { scale }
                        }
                        ("io.debezium.data.VariableScaleDecimal", _) => DecimalCodec::VariableScale,
                        (_, "string") => DecimalCodec::Text,
                        (_, "double" | "float64") => DecimalCodec::Double,
                        _ => {
                            return Err(DecodeError::field(
                                "schema",
                                format!("value_decimal has unsupported type `{ty}` `{logical}`"),
                            ))
                        }
                    }
                }
                "value_timestamp" => {
                    codecs.timestamp = match logical {
                        "io.debezium.time.MicroTimestamp" => TimeCodec::Int(TimeMode::Adaptive),
                        "io.debezium.time.NanoTimestamp" => TimeCodec::Int(TimeMode::Nanoseconds),
                        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
                            TimeCodec::Int(TimeMode::Milliseconds)
                        }
                        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => TimeCodec::Days,
                        // ZonedTimestamp and isostring are strings, understood whatever the mode.
                        _ => codecs.timestamp,
                    }
                }
                _ => {}
            }
        }
        self.schema_cache.insert(key, codecs);
        Ok(codecs)
    }
}

/// A row image, `None` when null or absent; an error when the op requires it.
fn image<'a>(
    raw: Option<RowImage<'a>>,
    which: &str,
    required: bool,
    op: Op,
) -> Result<Option<RowImage<'a>>, DecodeError> {
    match raw {
        Some(r) => Ok(Some(r)),
        None if required => Err(DecodeError::NotDebezium(format!("op `{}` without `{which}` image", op.code()))),
        None => Ok(None),
    }
}

fn json_error(e: serde_json::Error) -> DecodeError {
    match e.classify() {
        serde_json::error::Category::Data => DecodeError::NotDebezium(e.to_string()),
        _ => DecodeError::Json(e.to_string()),
    }
}

fn required<T>(v: Option<T>, which: &str, field: &str) -> Result<T, DecodeError> {
    v.ok_or_else(|| DecodeError::field(&format!("{which}.{field}"), "missing"))
}

fn attribute_row(a: RowImage, which: &str) -> Result<AttributeRow, DecodeError> {
    let data_type = required(a.data_type, which, "data_type")?;
    let data_type = DataType::parse(&data_type)
        .ok_or_else(|| DecodeError::field("data_type", format!("unknown data type `{data_type}`")))?;
    Ok(AttributeRow {
        attribute_id: required(a.attribute_id, which, "attribute_id")?,
        tenant_id: required(a.tenant_id, which, "tenant_id")?,
        entity_type: required(a.entity_type, which, "entity_type")?.into_owned(),
        name: required(a.name, which, "name")?.into_owned(),
        data_type,
        is_hot: a.is_hot.unwrap_or(false),
    })
}

fn text_field(v: Option<Cow<str>>) -> Field<String> {
    match v {
        None => Field::Null,
        Some(t) if t == UNAVAILABLE => Field::Unavailable,
        Some(t) => Field::Value(t.into_owned()),
    }
}

fn entity_row(e: RowImage, which: &str) -> Result<EntityRow, DecodeError> {
    Ok(EntityRow {
        entity_id: required(e.entity_id, which, "entity_id")?,
        tenant_id: e.tenant_id,
        entity_type: e.entity_type.map(Cow::into_owned),
        hot_attributes: text_field(e.hot_attributes),
        is_deleted: e.is_deleted.unwrap_or(false),
    })
}

fn value_row(v: RowImage, which: &str, codecs: Codecs) -> Result<ValueRow, DecodeError> {
    let value_decimal = match v.value_decimal {
        Some(raw) if raw.get() != "null" => {
            Some(decimal_from_json(raw.get(), codecs.decimal).map_err(|m| DecodeError::field("value_decimal", m))?)
        }
        _ => None,
    };
    let value_timestamp = match v.value_timestamp {
        Some(raw) if raw.get() != "null" => Some(
            timestamp_from_json(raw.get(), codecs.timestamp).map_err(|m| DecodeError::field("value_timestamp", m))?,
        ),
        _ => None,
    };
    Ok(ValueRow {
        entity_id: required(v.entity_id, which, "entity_id")?,
        attribute_id: required(v.attribute_id, which, "attribute_id")?,
        tenant_id: v.tenant_id,
        value_text: text_field(v.value_text),
        value_int: v.value_int,
        value_decimal,
        value_bool: v.value_bool,
        value_timestamp,
        value_json: text_field(v.value_json),
    })
}

#[derive(Deserialize)]
struct VariableScale<'a> {
    scale: u32,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

/// A decimal as raw JSON: its shape settles what it can (an object is VariableScaleDecimal, a
/// number is a double), the codec settles what a string means (base64 or decimal text).
fn decimal_from_json(raw: &str, codec: DecimalCodec) -> Result<Decimal, String> {
    let first = raw.as_bytes().first().copied().unwrap_or(b' ');
    if first == b'{' {
        let v: VariableScale = serde_json::from_str(raw).map_err(|e| format!("bad VariableScaleDecimal: {e}"))?;
        return Ok(Decimal { unscaled: unscaled_from_base64(&v.value)?, scale: v.scale });
    }
    if first == b'"' {
        let text: Cow<str> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        return match codec {
            DecimalCodec::Precise { scale } => Ok(Decimal { unscaled: unscaled_from_base64(&text)?, scale }),
            DecimalCodec::VariableScale => Err("VariableScaleDecimal must be an object".into()),
            // "NaN" and "Infinity" come as strings in double mode; they have no decimal value.
            DecimalCodec::Text | DecimalCodec::Double => parse_decimal(&text),
        };
    }
    // A JSON number: parse its text exactly rather than through f64 where possible.
    parse_decimal(raw).or_else(|_| raw.parse::<f64>().map_err(|e| e.to_string()).and_then(decimal_from_f64))
}

fn timestamp_from_json(raw: &str, codec: TimeCodec) -> Result<i64, String> {
    if raw.starts_with('"') {
        let text: Cow<str> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        return parse_timestamp(&text);
    }
    let v: i64 = raw.parse().map_err(|_| format!("`{raw}` is not an integer timestamp"))?;
    match codec {
        TimeCodec::Int(mode) => timestamp_from_int(v, mode),
        TimeCodec::Days => timestamp_from_days(v),
    }
}

/// Hot attribute values inside `hot_attributes` JSONB, by catalog type. Public for the pivot.
pub fn hot_decimal(raw: &str) -> Result<Decimal, String> {
    decimal_from_json(raw, DecimalCodec::Text)
}

/// A hot timestamp inside JSONB: ISO text, or integer microseconds.
pub fn hot_timestamp(raw: &str) -> Result<i64, String> {
    timestamp_from_json(raw, TimeCodec::Int(TimeMode::Adaptive))
}

#[cfg(test)]
mod tests;
