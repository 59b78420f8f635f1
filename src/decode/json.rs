//! Debezium JSON records, with embedded schemas (`{"schema":…,"payload":…}`, JsonConverter with
//! `schemas.enable=true`) and without.
//!
//! Speed matters here (every event passes through): records are read with [`super::scan`]'s
//! cursor, borrowing strings from the record, with the keys of each kind of object (envelope,
//! `source`, row image) learned per decoder; the row images are read in the same pass, before
//! `source.table` says which table they belong to, then turned into typed rows. Embedded
//! schemas are only consulted for what the payload cannot tell (decimal and timestamp
//! encodings), and what they say is cached by the schema's text.

use super::scan::{digits, Cursor, KeyId, Keys, ScanError};
use super::value::{
    decimal_from_f64, parse_decimal, parse_timestamp, preview, timestamp_from_days, timestamp_from_int,
    unscaled_from_base64, ValueError,
};
use super::{
    parse_op, parse_sequence, source_meta, AttributeRow, DataType, DecimalMode, DecodeError, DecodeOptions, EntityRow,
    Event, Field, Op, RowChange, Table, TableNames, TimeMode, ValueRow, UNAVAILABLE,
};
use crate::decode::Decimal;
use crate::position::Lsn;
use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use std::borrow::Cow;
use std::hash::{Hash, Hasher};

/// The fields of a Debezium record eavlake reads; row images stay raw until the table is known.
#[derive(Default)]
struct Envelope<'a> {
    schema: Option<&'a str>,
    /// `payload` present and null: a tombstone in schema form.
    payload_null: bool,
    before: Option<RowImage<'a>>,
    after: Option<RowImage<'a>>,
    /// A row image that did not fit [`RowImage`]: which one, and why. Decided once the table
    /// is known (tables eavlake does not read may have columns of other types).
    image_error: Option<(&'static str, String, ScanError)>,
    source: Option<Source<'a>>,
    op: Option<Cow<'a, str>>,
    tx: Option<Cow<'a, str>>,
    // Transaction metadata records and heartbeats.
    status: Option<Cow<'a, str>>,
    /// `ts_ms` is there and not null: all a heartbeat has. Its value is not used (a change's
    /// time is in `source`), so it is passed over, not read.
    has_ts_ms: bool,
}

/// A row image of any of the three tables, read in the same pass as the envelope (the table is
/// only known from `source`, which comes after the images).
#[derive(Default)]
struct RowImage<'a> {
    entity_id: Option<i64>,
    attribute_id: Option<i64>,
    tenant_id: Option<i64>,
    entity_type: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    data_type: Option<Cow<'a, str>>,
    is_hot: Option<bool>,
    hot_attributes: Option<Cow<'a, str>>,
    is_deleted: Option<bool>,
    value_text: Option<Cow<'a, str>>,
    value_int: Option<i64>,
    value_decimal: Option<&'a str>,
    value_bool: Option<bool>,
    value_timestamp: Option<&'a str>,
    value_json: Option<Cow<'a, str>>,
    /// `value_int` holding an integer past i64, as written. The rest of the image is still read,
    /// so that the dead letter can name the attribute.
    int_out_of_range: Option<&'a str>,
}

/// Key ids of row images (see [`Keys`]).
mod image_key {
    use super::KeyId;
    pub const ENTITY_ID: KeyId = 1;
    pub const ATTRIBUTE_ID: KeyId = 2;
    pub const TENANT_ID: KeyId = 3;
    pub const ENTITY_TYPE: KeyId = 4;
    pub const NAME: KeyId = 5;
    pub const DATA_TYPE: KeyId = 6;
    pub const IS_HOT: KeyId = 7;
    pub const HOT_ATTRIBUTES: KeyId = 8;
    pub const IS_DELETED: KeyId = 9;
    pub const VALUE_TEXT: KeyId = 10;
    pub const VALUE_INT: KeyId = 11;
    pub const VALUE_DECIMAL: KeyId = 12;
    pub const VALUE_BOOL: KeyId = 13;
    pub const VALUE_TIMESTAMP: KeyId = 14;
    pub const VALUE_JSON: KeyId = 15;
    pub const ALL: &[(&str, KeyId)] = &[
        ("entity_id", ENTITY_ID),
        ("attribute_id", ATTRIBUTE_ID),
        ("tenant_id", TENANT_ID),
        ("entity_type", ENTITY_TYPE),
        ("name", NAME),
        ("data_type", DATA_TYPE),
        ("is_hot", IS_HOT),
        ("hot_attributes", HOT_ATTRIBUTES),
        ("is_deleted", IS_DELETED),
        ("value_text", VALUE_TEXT),
        ("value_int", VALUE_INT),
        ("value_decimal", VALUE_DECIMAL),
        ("value_bool", VALUE_BOOL),
        ("value_timestamp", VALUE_TIMESTAMP),
        ("value_json", VALUE_JSON),
    ];
}

/// Reads a row image into `r`; on a value of the wrong kind, returns the field it was in.
fn read_image<'a>(c: &mut Cursor<'a>, keys: &mut Keys, r: &mut RowImage<'a>) -> Result<(), (String, ScanError)> {
    use image_key::*;
    let mut field = None;
    // The closures given to `fields` are inlined into its loop here and below: a call per
    // member was about a tenth of decoding's instructions (callgrind, decode bench).
    c.fields(
        keys,
        #[inline(always)]
        |c, id, name| {
            let read = match id {
                ENTITY_ID => opt_i64(c).map(|v| r.entity_id = v),
                ATTRIBUTE_ID => opt_i64(c).map(|v| r.attribute_id = v),
                TENANT_ID => opt_i64(c).map(|v| r.tenant_id = v),
                ENTITY_TYPE => opt_str(c).map(|v| r.entity_type = v),
                NAME => opt_str(c).map(|v| r.name = v),
                DATA_TYPE => opt_str(c).map(|v| r.data_type = v),
                IS_HOT => opt_bool(c).map(|v| r.is_hot = v),
                HOT_ATTRIBUTES => opt_str(c).map(|v| r.hot_attributes = v),
                IS_DELETED => opt_bool(c).map(|v| r.is_deleted = v),
                VALUE_TEXT => opt_str(c).map(|v| r.value_text = v),
                VALUE_INT => match opt_i64(c) {
                    Err(e) if e.beyond.is_some() => {
                        r.int_out_of_range = Some(c.since(e.pos));
                        Ok(())
                    }
                    v => v.map(|v| r.value_int = v),
                },
                VALUE_DECIMAL => opt_raw(c).map(|v| r.value_decimal = v),
                VALUE_BOOL => opt_bool(c).map(|v| r.value_bool = v),
                VALUE_TIMESTAMP => opt_raw(c).map(|v| r.value_timestamp = v),
                VALUE_JSON => opt_str(c).map(|v| r.value_json = v),
                _ => c.skip(),
            };
            // The field is named only when it failed (copying every key cost a memmove per key).
            read.inspect_err(|_| field = Some(name.to_string()))
        },
    )
    .map_err(|e| (field.unwrap_or_default(), e))
}

#[derive(Default)]
struct Source<'a> {
    lsn: Option<i64>,
    sequence: Option<Sequence<'a>>,
    tx_id: Option<i64>,
    ts_ms: Option<i64>,
    ts_us: Option<i64>,
    /// A string in Debezium 1.x+ (`"true"`, `"last"`, `"incremental"`, …), a boolean before.
    snapshot: Option<Cow<'a, str>>,
    table: Option<Cow<'a, str>>,
}

#[inline]
fn opt_i64(c: &mut Cursor) -> Result<Option<i64>, ScanError> {
    if c.null() {
        Ok(None)
    } else {
        c.i64().map(Some)
    }
}

#[inline]
fn opt_bool(c: &mut Cursor) -> Result<Option<bool>, ScanError> {
    if c.null() {
        Ok(None)
    } else {
        c.bool().map(Some)
    }
}

#[inline]
fn opt_str<'a>(c: &mut Cursor<'a>) -> Result<Option<Cow<'a, str>>, ScanError> {
    if c.null() {
        Ok(None)
    } else {
        c.string().map(Some)
    }
}

#[inline]
fn opt_raw<'a>(c: &mut Cursor<'a>) -> Result<Option<&'a str>, ScanError> {
    if c.null() {
        Ok(None)
    } else {
        c.raw().map(Some)
    }
}

/// Key ids of the envelope, `source` and `transaction` (see [`Keys`]).
mod envelope_key {
    use super::KeyId;
    pub const SCHEMA: KeyId = 1;
    pub const PAYLOAD: KeyId = 2;
    pub const BEFORE: KeyId = 3;
    pub const AFTER: KeyId = 4;
    pub const SOURCE: KeyId = 5;
    pub const OP: KeyId = 6;
    pub const TRANSACTION: KeyId = 7;
    pub const STATUS: KeyId = 8;
    pub const TS_MS: KeyId = 9;
    pub const ALL: &[(&str, KeyId)] = &[
        ("schema", SCHEMA),
        ("payload", PAYLOAD),
        ("before", BEFORE),
        ("after", AFTER),
        ("source", SOURCE),
        ("op", OP),
        ("transaction", TRANSACTION),
        ("status", STATUS),
        ("ts_ms", TS_MS),
    ];
}

mod source_key {
    use super::KeyId;
    pub const LSN: KeyId = 1;
    pub const SEQUENCE: KeyId = 2;
    pub const TX_ID: KeyId = 3;
    pub const TS_MS: KeyId = 4;
    pub const TS_US: KeyId = 5;
    pub const SNAPSHOT: KeyId = 6;
    pub const TABLE: KeyId = 7;
    pub const ALL: &[(&str, KeyId)] = &[
        ("lsn", LSN),
        ("sequence", SEQUENCE),
        ("txId", TX_ID),
        ("ts_ms", TS_MS),
        ("ts_us", TS_US),
        ("snapshot", SNAPSHOT),
        ("table", TABLE),
    ];
}

const TRANSACTION_ID: KeyId = 1;

/// The keys of each kind of object in a record, learned per decoder (see [`Keys`]).
struct RecordKeys {
    /// The record's own object: the envelope, or `{"schema", "payload"}`.
    top: Keys,
    /// The envelope inside `payload`.
    payload: Keys,
    nested: NestedKeys,
}

struct NestedKeys {
    source: Keys,
    image: Keys,
    transaction: Keys,
}

impl RecordKeys {
    fn new() -> RecordKeys {
        RecordKeys {
            top: Keys::new(envelope_key::ALL),
            payload: Keys::new(envelope_key::ALL),
            nested: NestedKeys {
                source: Keys::new(source_key::ALL),
                image: Keys::new(image_key::ALL),
                transaction: Keys::new(&[("id", TRANSACTION_ID)]),
            },
        }
    }
}

/// Reads the envelope object at the cursor into `env`. With `payload` (the record itself), a
/// `payload` member (schema form) is read into it as the envelope proper, with `payload_keys`;
/// a `payload` inside that is not Debezium's and is skipped: read as an envelope, a record
/// nesting thousands of them would overflow the stack.
fn read_envelope<'a>(
    c: &mut Cursor<'a>,
    keys: &mut Keys,
    nested: &mut NestedKeys,
    env: &mut Envelope<'a>,
    mut payload: Option<(&mut Keys, &mut Option<Envelope<'a>>)>,
) -> Result<(), ScanError> {
    use envelope_key::*;
    c.fields(
        keys,
        #[inline(always)]
        |c, id, _| {
            match id {
                SCHEMA => env.schema = opt_raw(c)?,
                PAYLOAD if payload.is_some() => {
                    if c.null() {
                        env.payload_null = true;
                    } else if let Some((payload_keys, inner)) = payload.as_mut() {
                        // Made only for the schema form: most records have no payload member.
                        read_envelope(c, payload_keys, nested, inner.insert(Envelope::default()), None)?;
                    }
                }
                BEFORE | AFTER => {
                    let which = if id == BEFORE { "before" } else { "after" };
                    if c.null() {
                        return Ok(());
                    }
                    // Read in place: a row image is a few hundred bytes, and moving it costs.
                    let slot = if id == BEFORE { &mut env.before } else { &mut env.after };
                    match read_image(c, &mut nested.image, slot.insert(RowImage::default())) {
                        Ok(()) => {}
                        Err((_, e)) if e.syntax => return Err(e),
                        Err((field, e)) => {
                            *slot = None;
                            env.image_error = Some((which, field, e));
                            c.skip_to_object_end()?;
                        }
                    }
                }
                SOURCE => {
                    if c.null() {
                        env.source = None;
                    } else {
                        // Filled in place: moving it in afterwards was a memcpy per record.
                        read_source(c, &mut nested.source, env.source.insert(Source::default()))?;
                    }
                }
                OP => env.op = opt_str(c)?,
                TRANSACTION => {
                    if !c.null() {
                        c.fields(
                            &mut nested.transaction,
                            #[inline(always)]
                            |c, id, _| {
                                if id == TRANSACTION_ID {
                                    env.tx = opt_str(c)?;
                                    Ok(())
                                } else {
                                    c.skip()
                                }
                            },
                        )?;
                    }
                }
                STATUS => env.status = opt_str(c)?,
                TS_MS => {
                    env.has_ts_ms = !c.null();
                    if env.has_ts_ms {
                        c.skip()?
                    }
                }
                _ => c.skip()?,
            }
            Ok(())
        },
    )
}

fn read_source<'a>(c: &mut Cursor<'a>, keys: &mut Keys, s: &mut Source<'a>) -> Result<(), ScanError> {
    use source_key::*;
    c.fields(
        keys,
        #[inline(always)]
        |c, id, _| {
            match id {
                LSN => s.lsn = opt_i64(c)?,
                SEQUENCE => {
                    s.sequence = match sequence_lsn(c) {
                        Some(first) => Some(Sequence::Read(first)),
                        // Kept escaped: parse_sequence reads it as is, sparing an allocation.
                        None => opt_raw(c)?.map(|r| Sequence::Text(r.trim_matches('"'))),
                    }
                }
                TX_ID => s.tx_id = opt_i64(c)?,
                TS_MS => s.ts_ms = opt_i64(c)?,
                TS_US => s.ts_us = opt_i64(c)?,
                SNAPSHOT => {
                    s.snapshot = match c.peek() {
                        Some(b't' | b'f') => Some(Cow::Borrowed(if c.bool()? { "true" } else { "false" })),
                        _ => opt_str(c)?,
                    }
                }
                TABLE => s.table = opt_str(c)?,
                _ => c.skip()?,
            }
            Ok(())
        },
    )
}

/// `source.sequence`, non-null.
enum Sequence<'a> {
    /// In its usual form, read where it stands: its first LSN (see [`sequence_lsn`]).
    Read(Option<Lsn>),
    /// In any other form, as written, for [`parse_sequence`].
    Text(&'a str),
}

/// Debezium's `source.sequence` in the form it always has, read at the cursor and passed over:
/// `"[\"<lsn>\",\"<lsn>\"]"` gives the first LSN, `"[null,\"<lsn>\"]"` none (each LSN of at most
/// 18 digits). `None`, with the cursor where it was, for anything else, which the general path
/// ([`parse_sequence`] on the raw text) reads as it always did, and which gives the same for
/// these forms.
#[inline]
fn sequence_lsn(c: &mut Cursor) -> Option<Option<Lsn>> {
    let b = c.rest().as_bytes();
    let lsn_then = |at: usize, end: &[u8]| {
        let (v, n) = digits(b, at);
        let after = at + n;
        ((1..=18).contains(&n) && b.get(after..after + end.len()) == Some(end)).then_some((v, after + end.len()))
    };
    let (first, end) = if let Some(rest) = b.strip_prefix(br#""[\""#) {
        let (first, at) = lsn_then(b.len() - rest.len(), br#"\",\""#)?;
        (Some(Lsn(first)), lsn_then(at, br#"\"]""#)?.1)
    } else if let Some(rest) = b.strip_prefix(br#""[null,\""#) {
        (None, lsn_then(b.len() - rest.len(), br#"\"]""#)?.1)
    } else {
        return None;
    };
    c.advance(end);
    Some(first)
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
    /// Boxed: the decoder is one variant of `Decoder`, beside much smaller ones.
    keys: Box<RecordKeys>,
}

impl JsonDecoder {
    pub fn new(options: DecodeOptions, tables: TableNames) -> JsonDecoder {
        let decimal = match options.decimal_mode {
            DecimalMode::Precise => DecimalCodec::Precise { scale: options.decimal_scale },
            DecimalMode::String => DecimalCodec::Text,
            DecimalMode::Double => DecimalCodec::Double,
        };
        let defaults = Codecs { decimal, timestamp: TimeCodec::Int(options.time_mode) };
        JsonDecoder { tables, defaults, schema_cache: FxHashMap::default(), keys: Box::new(RecordKeys::new()) }
    }

    /// Decodes one record value; `None` bytes is a tombstone.
    pub fn decode(&mut self, value: Option<&[u8]>) -> Result<Event, DecodeError> {
        let Some(bytes) = value else { return Ok(Event::Tombstone) };
        // simdutf8 checks ASCII 32 bytes at a time; std's message is taken only on failure.
        let text = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8(e.to_string()))?,
        };
        self.decode_text(text)
    }

    /// Decodes one record value known to be UTF-8 (see [`crate::source::Record::text`]).
    pub fn decode_text(&mut self, text: &str) -> Result<Event, DecodeError> {
        self.decode_inner(text).map_err(|e| match e {
            // The cursor skips what it does not need without checking it, so a record it finds
            // unusable may be broken JSON rather than JSON of another shape: say which.
            DecodeError::NotDebezium(m) => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Err(json) => DecodeError::Json(json.to_string()),
                Ok(_) => DecodeError::NotDebezium(m),
            },
            e => e,
        })
    }

    fn decode_inner(&mut self, text: &str) -> Result<Event, DecodeError> {
        let text = text.trim();
        if text.is_empty() || text == "null" {
            return Ok(Event::Tombstone);
        }
        let mut cursor = Cursor::new(text);
        // Filled in place: an envelope is about a kilobyte, and moving it costs.
        let (mut env, mut inner) = (Envelope::default(), None);
        let RecordKeys { top, payload, nested } = &mut *self.keys;
        read_envelope(&mut cursor, top, nested, &mut env, Some((payload, &mut inner)))
            .and_then(|()| cursor.end())
            .map_err(envelope_error)?;
        if env.payload_null {
            return Ok(Event::Tombstone);
        }
        if let Some(inner) = inner.as_mut() {
            let codecs = match env.schema {
                Some(s) => self.codecs_for_schema(s)?,
                None => self.defaults,
            };
            self.decode_envelope(inner, codecs)
        } else {
            let codecs = self.defaults;
            self.decode_envelope(&mut env, codecs)
        }
    }

    fn decode_envelope(&self, env: &mut Envelope, codecs: Codecs) -> Result<Event, DecodeError> {
        if let Some(status) = &env.status {
            let begin = match status.as_ref() {
                "BEGIN" => true,
                "END" => false,
                other => return Err(DecodeError::field("status", format!("unknown transaction status `{other}`"))),
            };
            return Ok(Event::Transaction { begin });
        }
        let Some(op_text) = env.op.as_deref() else {
            if env.source.is_none() && env.has_ts_ms {
                return Ok(Event::Heartbeat);
            }
            return Err(DecodeError::NotDebezium("no `op` field".into()));
        };
        let op = parse_op(op_text)?;
        if op_text == "m" {
            return Ok(Event::Message);
        }
        // Borrowed where it was read: taking it out was a memcpy per record.
        let source = env.source.as_ref().ok_or_else(|| DecodeError::NotDebezium("no `source` block".into()))?;
        let sequence = match source.sequence {
            Some(Sequence::Read(first)) => first,
            Some(Sequence::Text(text)) => parse_sequence(text)?,
            None => None,
        };
        let meta =
            source_meta(source.lsn, sequence, source.tx_id, source.ts_ms, source.ts_us, source.snapshot.as_deref(), op);
        let table_name = source.table.as_deref().unwrap_or("");
        let Some(table) = self.tables.classify(table_name) else {
            return Ok(Event::OtherTable { table: table_name.to_string() });
        };
        let Some(op) = op else {
            return Ok(Event::Truncate { table, source: meta });
        };
        if let Some((which, field, e)) = env.image_error.take() {
            let at = if field.is_empty() { which.to_string() } else { format!("{which}.{field}") };
            return Err(DecodeError::field(&at, e.message));
        }
        let tx = if meta.tx_id.is_none() { env.tx.take().map(Cow::into_owned) } else { None };
        let before = image(env.before.as_mut(), "before", op == Op::Delete, op)?;
        let after = image(env.after.as_mut(), "after", op != Op::Delete, op)?;
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
fn image<'r, 'a>(
    raw: Option<&'r mut RowImage<'a>>,
    which: &str,
    required: bool,
    op: Op,
) -> Result<Option<&'r mut RowImage<'a>>, DecodeError> {
    match raw {
        Some(r) => Ok(Some(r)),
        None if required => Err(DecodeError::NotDebezium(format!("op `{}` without `{which}` image", op.code()))),
        None => Ok(None),
    }
}

fn envelope_error(e: ScanError) -> DecodeError {
    if e.syntax {
        DecodeError::Json(e.to_string())
    } else {
        DecodeError::NotDebezium(e.to_string())
    }
}

fn required<T>(v: Option<T>, which: &str, field: &str) -> Result<T, DecodeError> {
    v.ok_or_else(|| DecodeError::field(&format!("{which}.{field}"), "missing"))
}

fn attribute_row(a: &mut RowImage, which: &str) -> Result<AttributeRow, DecodeError> {
    let data_type = required(a.data_type.take(), which, "data_type")?;
    let data_type = DataType::parse(&data_type)
        .ok_or_else(|| DecodeError::field("data_type", format!("unknown data type `{data_type}`")))?;
    Ok(AttributeRow {
        attribute_id: required(a.attribute_id, which, "attribute_id")?,
        tenant_id: required(a.tenant_id, which, "tenant_id")?,
        entity_type: required(a.entity_type.take(), which, "entity_type")?.into_owned(),
        name: required(a.name.take(), which, "name")?.into_owned(),
        data_type,
        is_hot: a.is_hot.unwrap_or(false),
    })
}

fn text_field<'a, T: From<Cow<'a, str>>>(v: Option<Cow<'a, str>>) -> Field<T> {
    match v {
        None => Field::Null,
        Some(t) if t == UNAVAILABLE => Field::Unavailable,
        Some(t) => Field::Value(T::from(t)),
    }
}

fn entity_row(e: &mut RowImage, which: &str) -> Result<EntityRow, DecodeError> {
    Ok(EntityRow {
        entity_id: required(e.entity_id, which, "entity_id")?,
        tenant_id: e.tenant_id,
        entity_type: e.entity_type.take().map(CompactString::from),
        hot_attributes: text_field(e.hot_attributes.take()),
        is_deleted: e.is_deleted.unwrap_or(false),
    })
}

fn value_row(v: &mut RowImage, which: &str, codecs: Codecs) -> Result<ValueRow, DecodeError> {
    // A value beyond its column's range names its attribute: the catalog cannot help here, the
    // record never reaches the pivot.
    let attribute_id = v.attribute_id;
    let value_error = |field: &'static str, e: ValueError| match (e, attribute_id) {
        (ValueError::OutOfRange(m), Some(id)) => {
            DecodeError::value(field, ValueError::OutOfRange(format!("{m} (attribute {id})")))
        }
        (e, _) => DecodeError::value(field, e),
    };
    if let Some(int) = v.int_out_of_range {
        let message = format!("integer `{}` is beyond the range of a 64-bit integer", preview(int));
        return Err(value_error("value_int", ValueError::OutOfRange(message)));
    }
    let value_decimal = v
        .value_decimal
        .map(|raw| decimal_from_json(raw, codecs.decimal).map_err(|e| value_error("value_decimal", e)))
        .transpose()?;
    let value_timestamp = v
        .value_timestamp
        .map(|raw| timestamp_from_json(raw, codecs.timestamp).map_err(|e| value_error("value_timestamp", e)))
        .transpose()?;
    Ok(ValueRow {
        entity_id: required(v.entity_id, which, "entity_id")?,
        attribute_id: required(v.attribute_id, which, "attribute_id")?,
        tenant_id: v.tenant_id,
        value_text: text_field(v.value_text.take()),
        value_int: v.value_int,
        value_decimal,
        value_bool: v.value_bool,
        value_timestamp,
        value_json: text_field(v.value_json.take()),
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
fn decimal_from_json(raw: &str, codec: DecimalCodec) -> Result<Decimal, ValueError> {
    let first = raw.as_bytes().first().copied().unwrap_or(b' ');
    if first == b'{' {
        let v: VariableScale = serde_json::from_str(raw).map_err(|e| format!("bad VariableScaleDecimal: {e}"))?;
        return Ok(Decimal { unscaled: unscaled_from_base64(&v.value)?, scale: v.scale });
    }
    if first == b'"' {
        let text = json_text(raw)?;
        return match codec {
            DecimalCodec::Precise { scale } => Ok(Decimal { unscaled: unscaled_from_base64(&text)?, scale }),
            DecimalCodec::VariableScale => Err(ValueError::Invalid("VariableScaleDecimal must be an object".into())),
            // "NaN" and "Infinity" come as strings in double mode; they have no decimal value.
            DecimalCodec::Text | DecimalCodec::Double => parse_decimal(&text),
        };
    }
    // A JSON number: parse its text exactly rather than through f64 where possible.
    match parse_decimal(raw) {
        Err(ValueError::Invalid(_)) => {
            raw.parse::<f64>().map_err(|e| ValueError::Invalid(e.to_string())).and_then(decimal_from_f64)
        }
        done => done,
    }
}

/// The text of a JSON string: borrowed when it has no escapes (decimals and timestamps never
/// do), else unescaped by serde_json.
fn json_text(raw: &str) -> Result<Cow<'_, str>, ValueError> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains(['\\', '"']) => Ok(Cow::Borrowed(inner)),
        _ => Ok(Cow::Owned(serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?)),
    }
}

fn timestamp_from_json(raw: &str, codec: TimeCodec) -> Result<i64, ValueError> {
    if raw.starts_with('"') {
        return parse_timestamp(&json_text(raw)?);
    }
    let v: i64 = raw.parse().map_err(|_| {
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            ValueError::OutOfRange(format!(
                "integer timestamp `{}` is beyond the range of a 64-bit integer",
                preview(raw)
            ))
        } else {
            ValueError::Invalid(format!("`{}` is not an integer timestamp", preview(raw)))
        }
    })?;
    match codec {
        TimeCodec::Int(mode) => timestamp_from_int(v, mode),
        TimeCodec::Days => timestamp_from_days(v),
    }
}

/// Hot attribute values inside `hot_attributes` JSONB, by catalog type. Public for the pivot.
pub fn hot_decimal(raw: &str) -> Result<Decimal, ValueError> {
    decimal_from_json(raw, DecimalCodec::Text)
}

/// A hot timestamp inside JSONB: ISO text, or integer microseconds.
pub fn hot_timestamp(raw: &str) -> Result<i64, ValueError> {
    timestamp_from_json(raw, TimeCodec::Int(TimeMode::Adaptive))
}

#[cfg(test)]
mod tests;
