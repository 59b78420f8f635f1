//! Debezium records serialised by Confluent's `AvroConverter`: the Confluent wire format (byte 0
//! = magic `0`, bytes 1..5 = big-endian schema id, then one Avro binary datum written with that
//! schema), writer schemas from a [`SchemaRegistry`].
//!
//! Contract: [`AvroDecoder::decode`] yields exactly the [`Event`] that
//! [`JsonDecoder`](super::json::JsonDecoder) yields for the same change, whichever
//! `decimal.handling.mode` and `time.precision.mode` the connector used: the shape of each Avro
//! value settles most of it (a `Decimal`, a VariableScaleDecimal record, a string, a double), and
//! the writer schema settles the rest (the scale of a precise decimal, the unit of a plain
//! `long` timestamp). What it says is worked out once per schema id and cached with the schema.
//! Malformed input never panics: it is a [`DecodeError`] (`Avro` for the framing and the datum,
//! `NotDebezium` / `BadField` for the envelope, `Registry` for the schema lookup).

use super::registry::{Failure, RegisteredSchema, SchemaRegistry};
use super::value::{
    check_timestamp, decimal_from_f64, parse_decimal, parse_timestamp, timestamp_from_days, timestamp_from_int,
    unscaled_from_be_bytes, ValueError,
};
use super::{
    parse_op, parse_sequence, source_meta, AttributeRow, DataType, Decimal, DecodeError, DecodeOptions, EntityRow,
    Event, Field, Op, RowChange, Table, TableNames, TimeMode, ValueRow, UNAVAILABLE,
};
use apache_avro::types::Value;
use apache_avro::Schema;
use compact_str::CompactString;
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};

/// Magic byte of the Confluent wire format.
const MAGIC: u8 = 0;
/// Magic byte and schema id.
const HEADER_LEN: usize = 5;

/// Longest string, bytes, array or map (in bytes or items) an Avro datum may declare.
/// apache_avro reserves an array's declared item count at once (about 56 bytes an item): with
/// its default of 512 Mi, a record of a few hundred bytes declaring 500 million items made it
/// ask for 30 GB and abort the process (found by fuzzing). At 1 MiB the reservation stays under
/// 60 MB; a longer text value in an Avro record is an `invalid_avro` dead letter.
pub const MAX_AVRO_LENGTH: usize = 1 << 20;

/// How a plain integer `value_timestamp` counts time (a `long` in microseconds, nanoseconds…
/// or an `int` of days). Avro timestamp logical types carry their own unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntTime {
    Unit(TimeMode),
    Days,
}

/// What a writer schema says about the columns whose Avro values do not say it themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Scale of a precise `value_decimal` (Avro `decimal` logical type or Connect Decimal bytes).
    decimal_scale: u32,
    /// Unit of an integer `value_timestamp`.
    int_time: IntTime,
}

/// A writer schema with its plan, cached per schema id.
struct Writer {
    schema: Arc<Schema>,
    plan: Plan,
}

/// Decodes Avro Debezium records. Cheap to share: lookups take `&self`.
pub struct AvroDecoder {
    registry: Arc<SchemaRegistry>,
    tables: TableNames,
    options: DecodeOptions,
    writers: Mutex<FxHashMap<u32, Arc<Writer>>>,
    /// Ids the registry will not give (unknown, not Avro), with why: every record naming one
    /// is a dead letter.
    refused: Mutex<FxHashMap<u32, DecodeError>>,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder").field("registry", &self.registry.url()).finish_non_exhaustive()
    }
}

impl AvroDecoder {
    pub fn new(registry: Arc<SchemaRegistry>, options: DecodeOptions, tables: TableNames) -> AvroDecoder {
        // Process-wide and set once, before the first datum is read: see MAX_AVRO_LENGTH.
        apache_avro::util::max_allocation_bytes(MAX_AVRO_LENGTH);
        AvroDecoder { registry, tables, options, writers: Mutex::default(), refused: Mutex::default() }
    }

    pub fn registry(&self) -> &Arc<SchemaRegistry> {
        &self.registry
    }

    /// Decodes one record value; `None` (and, as for JSON, an empty value) is a tombstone.
    pub async fn decode(&self, value: Option<&[u8]>) -> Result<Event, DecodeError> {
        if let Some(id) = self.missing_schema(value) {
            if let Err(Failure::Transient(e)) = self.prepare(id).await {
                return Err(e);
            }
        }
        self.decode_ready(value)
    }

    /// The writer schema id a record names when this decoder has not fetched it yet (nor been
    /// refused it): the caller [`prepare`](Self::prepare)s it before
    /// [`decode_ready`](Self::decode_ready).
    pub fn missing_schema(&self, value: Option<&[u8]>) -> Option<u32> {
        let (id, _) = split_header(value.filter(|v| !v.is_empty())?).ok()?;
        let known = self.lock_writers().contains_key(&id) || self.lock_refused().contains_key(&id);
        (!known).then_some(id)
    }

    /// Fetches writer schema `id`. A permanent failure is remembered (records naming the id then
    /// decode to that error); a transient one is returned for the caller to try again later.
    pub async fn prepare(&self, id: u32) -> Result<(), Failure> {
        match self.registry.try_registered(id).await {
            Ok(registered) => {
                let writer = Arc::new(Writer { plan: plan_for(&registered, &self.options), schema: registered.schema });
                self.lock_writers().entry(id).or_insert(writer);
                Ok(())
            }
            Err(Failure::Permanent(e)) => {
                self.lock_refused().insert(id, e.clone());
                Err(Failure::Permanent(e))
            }
            Err(transient) => Err(transient),
        }
    }

    /// Decodes one record whose writer schema was prepared (synchronous: no registry request).
    pub fn decode_ready(&self, value: Option<&[u8]>) -> Result<Event, DecodeError> {
        let Some(bytes) = value else {
            return Ok(Event::Tombstone);
        };
        if bytes.is_empty() {
            return Ok(Event::Tombstone);
        }
        let (id, mut body) = split_header(bytes)?;
        let writer = match self.lock_writers().get(&id) {
            Some(w) => w.clone(),
            None => {
                return Err(self.lock_refused().get(&id).cloned().unwrap_or_else(|| {
                    DecodeError::Registry(format!("schema id {id}: not fetched from {}", self.registry.url()))
                }))
            }
        };
        let datum = apache_avro::from_avro_datum(&writer.schema, &mut body, None)
            .map_err(|e| DecodeError::Avro(format!("datum does not match writer schema id {id}: {e}")))?;
        if !body.is_empty() {
            return Err(DecodeError::Avro(format!(
                "{} bytes left over after the datum of writer schema id {id}",
                body.len()
            )));
        }
        self.decode_value(datum, &writer.plan)
    }

    fn lock_refused(&self) -> std::sync::MutexGuard<'_, FxHashMap<u32, DecodeError>> {
        self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_writers(&self) -> std::sync::MutexGuard<'_, FxHashMap<u32, Arc<Writer>>> {
        // Entries are inserted whole, so a poisoned map is still a correct map.
        self.writers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The envelope, in the same order of checks as the JSON decoder so that both fail alike.
    fn decode_value(&self, datum: Value, plan: &Plan) -> Result<Event, DecodeError> {
        // A value schema registered as optional (`["null", Envelope]`) wraps the record in a
        // union, and its null is a tombstone.
        let env = match datum {
            Value::Record(env) => env,
            Value::Union(_, inner) if matches!(*inner, Value::Null) => return Ok(Event::Tombstone),
            Value::Union(_, inner) => return self.decode_value(*inner, plan),
            other => return Err(DecodeError::NotDebezium(format!("Avro datum is {}, not a record", kind(&other)))),
        };
        let env = env.as_slice();
        if let Some(status) = get(env, "status") {
            let begin = match req_str(status, "status")? {
                "BEGIN" => true,
                "END" => false,
                other => return Err(DecodeError::field("status", format!("unknown transaction status `{other}`"))),
            };
            return Ok(Event::Transaction { begin });
        }
        let Some(op_value) = get(env, "op") else {
            if get(env, "source").is_none() && get(env, "ts_ms").is_some() {
                return Ok(Event::Heartbeat);
            }
            return Err(DecodeError::NotDebezium("no `op` field".into()));
        };
        let op_text =
            str_of(op_value).ok_or_else(|| DecodeError::NotDebezium(format!("`op` is {}", kind(op_value))))?;
        let op = parse_op(op_text)?;
        if op_text == "m" {
            return Ok(Event::Message);
        }
        let source = match get(env, "source") {
            Some(Value::Record(s)) => s.as_slice(),
            Some(other) => return Err(DecodeError::NotDebezium(format!("`source` is {}, not a record", kind(other)))),
            None => return Err(DecodeError::NotDebezium("no `source` block".into())),
        };
        let snapshot = match get(source, "snapshot") {
            Some(Value::Boolean(true)) => Some("true"),
            Some(Value::Boolean(false)) | None => None,
            Some(v) => Some(req_str(v, "source.snapshot")?),
        };
        let meta = source_meta(
            opt_i64(source, "lsn", "source.lsn")?,
            get(source, "sequence")
                .map(|v| req_str(v, "source.sequence"))
                .transpose()?
                .map(parse_sequence)
                .transpose()?
                .flatten(),
            opt_i64(source, "txId", "source.txId")?,
            opt_i64(source, "ts_ms", "source.ts_ms")?,
            opt_i64(source, "ts_us", "source.ts_us")?,
            snapshot,
            op,
        );
        let table_name = get(source, "table").map(|v| req_str(v, "source.table")).transpose()?.unwrap_or("");
        let Some(table) = self.tables.classify(table_name) else {
            return Ok(Event::OtherTable { table: table_name.to_string() });
        };
        let Some(op) = op else {
            return Ok(Event::Truncate { table, source: meta });
        };
        let tx = match get(env, "transaction") {
            None => None,
            Some(Value::Record(t)) => {
                let id = get(t, "id").map(|v| req_str(v, "transaction.id")).transpose()?;
                // See `Event::Change`: not needed with a txId.
                id.filter(|_| meta.tx_id.is_none()).map(str::to_string)
            }
            Some(other) => {
                return Err(DecodeError::field("transaction", format!("expected a record, got {}", kind(other))))
            }
        };
        let image = |which: &'static str| -> Result<Option<&[(String, Value)]>, DecodeError> {
            match get(env, which) {
                Some(Value::Record(fields)) => Ok(Some(fields.as_slice())),
                Some(other) => Err(DecodeError::field(which, format!("expected a record, got {}", kind(other)))),
                None if (which == "after" && op != Op::Delete) || (which == "before" && op == Op::Delete) => {
                    Err(DecodeError::NotDebezium(format!("op `{}` without `{which}` image", op.code())))
                }
                None => Ok(None),
            }
        };
        let before = image("before")?;
        let after = image("after")?;
        let row = match table {
            Table::Attributes => RowChange::Attribute {
                before: before.map(|r| attribute_row(r, "before")).transpose()?,
                after: after.map(|r| attribute_row(r, "after")).transpose()?,
            },
            Table::Entities => RowChange::Entity {
                before: before.map(|r| entity_row(r, "before")).transpose()?,
                after: after.map(|r| entity_row(r, "after")).transpose()?,
            },
            Table::EntityValues => RowChange::Value {
                before: before.map(|r| value_row(r, "before", plan)).transpose()?,
                after: after.map(|r| value_row(r, "after", plan)).transpose()?,
            },
        };
        Ok(Event::Change { op, source: meta, tx, row })
    }
}

/// Splits the Confluent header off a record value.
fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Avro(format!(
            "record of {} bytes is shorter than the 5-byte Confluent header (magic byte, schema id)",
            bytes.len()
        )));
    };
    if header[0] != MAGIC {
        return Err(DecodeError::Avro(format!(
            "magic byte is {:#04x}, not 0x00: not in the Confluent wire format",
            header[0]
        )));
    }
    let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    Ok((id, body))
}

/// Works out a writer schema's [`Plan`]: the decimal scale from the parsed schema (its `decimal`
/// logical type), the timestamp unit from the schema text (`connect.name` on a primitive type,
/// which the parsed schema does not keep). What neither says comes from the options, as for JSON
/// records without a schema.
fn plan_for(registered: &RegisteredSchema, options: &DecodeOptions) -> Plan {
    let mut plan = Plan { decimal_scale: options.decimal_scale, int_time: IntTime::Unit(options.time_mode) };
    // The registry parsed this text already, so it is valid JSON when present.
    let json: Option<serde_json::Value> = registered.text.as_deref().and_then(|text| serde_json::from_str(text).ok());
    let text_column = |column: &str| json_column_type(json.as_ref()?, column);
    let scale_from_schema =
        row_schema(&registered.schema).and_then(|row| column_schema(row, "value_decimal")).and_then(|s| match s {
            Schema::Decimal(d) => u32::try_from(d.scale).ok(),
            _ => None,
        });
    // Connect Decimal bytes whose `logicalType` the parser did not accept still carry the scale
    // as a connect parameter.
    let scale_from_text = || {
        let ty = text_column("value_decimal")?;
        let scale = ty.pointer("/connect.parameters/scale")?;
        scale.as_str().and_then(|s| s.parse().ok()).or_else(|| scale.as_u64().and_then(|s| u32::try_from(s).ok()))
    };
    if let Some(scale) = scale_from_schema.or_else(scale_from_text) {
        plan.decimal_scale = scale;
    }
    if let Some(name) =
        text_column("value_timestamp").and_then(|ty| ty.get("connect.name")?.as_str().map(str::to_string))
    {
        plan.int_time = match name.as_str() {
            "io.debezium.time.MicroTimestamp" => IntTime::Unit(TimeMode::Adaptive),
            "io.debezium.time.NanoTimestamp" => IntTime::Unit(TimeMode::Nanoseconds),
            "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
                IntTime::Unit(TimeMode::Milliseconds)
            }
            "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => IntTime::Days,
            _ => plan.int_time,
        };
    }
    plan
}

/// The row record (`…Value`) of an envelope schema: the record in `before` or `after` (the
/// other one usually refers to it by name).
fn row_schema(envelope: &Schema) -> Option<&apache_avro::schema::RecordSchema> {
    let Schema::Record(env) = envelope else {
        return None;
    };
    ["before", "after"].into_iter().find_map(|image| {
        let field = env.fields.iter().find(|f| f.name == image)?;
        match non_null(&field.schema) {
            Schema::Record(row) => Some(row),
            _ => None,
        }
    })
}

fn column_schema<'a>(row: &'a apache_avro::schema::RecordSchema, column: &str) -> Option<&'a Schema> {
    row.fields.iter().find(|f| f.name == column).map(|f| non_null(&f.schema))
}

/// The branch of an optional (`["null", T]`) schema that is not null.
fn non_null(schema: &Schema) -> &Schema {
    match schema {
        Schema::Union(u) => u.variants().iter().find(|s| !matches!(s, Schema::Null)).unwrap_or(schema),
        other => other,
    }
}

/// The JSON type object of a row column in an envelope schema's text.
fn json_column_type<'a>(envelope: &'a serde_json::Value, column: &str) -> Option<&'a serde_json::Value> {
    fn non_null(ty: &serde_json::Value) -> Option<&serde_json::Value> {
        match ty {
            serde_json::Value::Array(branches) => branches.iter().find(|b| b.as_str() != Some("null")),
            other => Some(other),
        }
    }
    let fields = |record: &'a serde_json::Value| record.get("fields").and_then(|f| f.as_array());
    let images =
        fields(envelope)?.iter().filter(|f| matches!(f.get("name").and_then(|n| n.as_str()), Some("before" | "after")));
    for image in images {
        let Some(row) = image.get("type").and_then(non_null) else {
            continue;
        };
        let Some(columns) = fields(row) else { continue };
        if let Some(col) = columns.iter().find(|c| c.get("name").and_then(|n| n.as_str()) == Some(column)) {
            return col.get("type").and_then(non_null);
        }
    }
    None
}

/// A record field by name, looking through unions; `None` when absent or null.
fn get<'a>(fields: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    let (_, value) = fields.iter().find(|(n, _)| n == name)?;
    match unwrap_union(value) {
        Value::Null => None,
        v => Some(v),
    }
}

fn unwrap_union(mut value: &Value) -> &Value {
    while let Value::Union(_, inner) = value {
        value = inner;
    }
    value
}

fn str_of(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) | Value::Enum(_, s) => Some(s),
        _ => None,
    }
}

fn req_str<'a>(value: &'a Value, field: &str) -> Result<&'a str, DecodeError> {
    str_of(value).ok_or_else(|| DecodeError::field(field, format!("expected a string, got {}", kind(value))))
}

fn i64_of(value: &Value) -> Option<i64> {
    match value {
        Value::Long(v) => Some(*v),
        Value::Int(v) => Some(*v as i64),
        _ => None,
    }
}

fn opt_i64(fields: &[(String, Value)], name: &str, path: &str) -> Result<Option<i64>, DecodeError> {
    get(fields, name)
        .map(|v| i64_of(v).ok_or_else(|| DecodeError::field(path, format!("expected an integer, got {}", kind(v)))))
        .transpose()
}

/// A column of a row image, named `which.name` in errors.
struct Row<'a> {
    fields: &'a [(String, Value)],
    which: &'static str,
}

impl<'a> Row<'a> {
    fn path(&self, name: &str) -> String {
        format!("{}.{name}", self.which)
    }

    fn opt(&self, name: &str) -> Option<&'a Value> {
        get(self.fields, name)
    }

    fn missing(&self, name: &str) -> DecodeError {
        DecodeError::field(&self.path(name), "missing or null")
    }

    fn opt_i64(&self, name: &str) -> Result<Option<i64>, DecodeError> {
        opt_i64(self.fields, name, &self.path(name))
    }

    fn i64(&self, name: &str) -> Result<i64, DecodeError> {
        self.opt_i64(name)?.ok_or_else(|| self.missing(name))
    }

    fn opt_str(&self, name: &str) -> Result<Option<&'a str>, DecodeError> {
        self.opt(name).map(|v| req_str(v, &self.path(name))).transpose()
    }

    fn str(&self, name: &str) -> Result<&'a str, DecodeError> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, DecodeError> {
        match self.opt(name) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(DecodeError::field(&self.path(name), format!("expected a boolean, got {}", kind(v)))),
        }
    }

    /// A text or JSON column, where Debezium may have put its TOAST placeholder.
    fn text<T: for<'s> From<&'s str>>(&self, name: &str) -> Result<Field<T>, DecodeError> {
        Ok(match self.opt_str(name)? {
            None => Field::Null,
            Some(UNAVAILABLE) => Field::Unavailable,
            Some(t) => Field::Value(T::from(t)),
        })
    }
}

fn attribute_row(fields: &[(String, Value)], which: &'static str) -> Result<AttributeRow, DecodeError> {
    let r = Row { fields, which };
    let data_type = r.str("data_type")?;
    let data_type = DataType::parse(data_type)
        .ok_or_else(|| DecodeError::field(&r.path("data_type"), format!("unknown data type `{data_type}`")))?;
    Ok(AttributeRow {
        attribute_id: r.i64("attribute_id")?,
        tenant_id: r.i64("tenant_id")?,
        entity_type: r.str("entity_type")?.to_string(),
        name: r.str("name")?.to_string(),
        data_type,
        is_hot: r.opt_bool("is_hot")?.unwrap_or(false),
    })
}

fn entity_row(fields: &[(String, Value)], which: &'static str) -> Result<EntityRow, DecodeError> {
    let r = Row { fields, which };
    Ok(EntityRow {
        entity_id: r.i64("entity_id")?,
        tenant_id: r.opt_i64("tenant_id")?,
        entity_type: r.opt_str("entity_type")?.map(CompactString::new),
        hot_attributes: r.text("hot_attributes")?,
        is_deleted: r.opt_bool("is_deleted")?.unwrap_or(false),
    })
}

fn value_row(fields: &[(String, Value)], which: &'static str, plan: &Plan) -> Result<ValueRow, DecodeError> {
    let r = Row { fields, which };
    // As in the JSON decoder: a value beyond its column's range names its attribute.
    let value_error = |field: &str, e: ValueError| match (e, r.opt_i64("attribute_id")) {
        (ValueError::OutOfRange(m), Ok(Some(id))) => {
            DecodeError::value(&r.path(field), ValueError::OutOfRange(format!("{m} (attribute {id})")))
        }
        (e, _) => DecodeError::value(&r.path(field), e),
    };
    let value_decimal =
        r.opt("value_decimal").map(|v| decimal_of(v, plan).map_err(|e| value_error("value_decimal", e))).transpose()?;
    let value_timestamp = r
        .opt("value_timestamp")
        .map(|v| timestamp_of(v, plan).map_err(|e| value_error("value_timestamp", e)))
        .transpose()?;
    Ok(ValueRow {
        entity_id: r.i64("entity_id")?,
        attribute_id: r.i64("attribute_id")?,
        tenant_id: r.opt_i64("tenant_id")?,
        value_text: r.text("value_text")?,
        value_int: r.opt_i64("value_int")?,
        value_decimal,
        value_bool: r.opt_bool("value_bool")?,
        value_timestamp,
        value_json: r.text("value_json")?,
    })
}

/// A decimal in whichever form `decimal.handling.mode` gave it.
fn decimal_of(value: &Value, plan: &Plan) -> Result<Decimal, ValueError> {
    match value {
        // precise: Avro `decimal` on bytes, the scale in the writer schema.
        Value::Decimal(d) => {
            let bytes = Vec::<u8>::try_from(d).map_err(|e| format!("bad Avro decimal: {e}"))?;
            Ok(Decimal { unscaled: unscaled_from_be_bytes(&bytes)?, scale: plan.decimal_scale })
        }
        // precise, when the schema's decimal logical type was not recognised.
        Value::Bytes(bytes) | Value::Fixed(_, bytes) => {
            Ok(Decimal { unscaled: unscaled_from_be_bytes(bytes)?, scale: plan.decimal_scale })
        }
        Value::BigDecimal(d) => parse_decimal(&d.to_string()),
        // precise for `numeric` without a declared scale: io.debezium.data.VariableScaleDecimal.
        Value::Record(fields) => {
            let scale = match get(fields, "scale") {
                Some(Value::Int(s)) => {
                    u32::try_from(*s).map_err(|_| format!("VariableScaleDecimal scale {s} is negative"))?
                }
                other => return Err(format!("VariableScaleDecimal scale is {}", other.map_or("missing", kind)).into()),
            };
            let unscaled = match get(fields, "value") {
                Some(Value::Bytes(b)) => unscaled_from_be_bytes(b)?,
                other => return Err(format!("VariableScaleDecimal value is {}", other.map_or("missing", kind)).into()),
            };
            Ok(Decimal { unscaled, scale })
        }
        // string mode ("NaN" and "Infinity" have no decimal value and fail here).
        Value::String(text) => parse_decimal(text),
        // double mode: the shortest decimal that reads back as the same double.
        Value::Double(v) => decimal_from_f64(*v),
        Value::Float(v) if v.is_finite() => parse_decimal(&format!("{v}")),
        other => Err(format!("{} is not a decimal encoding", kind(other)).into()),
    }
}

/// A timestamp in whichever form `time.precision.mode` (or the column type) gave it.
fn timestamp_of(value: &Value, plan: &Plan) -> Result<i64, ValueError> {
    match value {
        // io.debezium.time.ZonedTimestamp (timestamptz), isostring.
        Value::String(text) => parse_timestamp(text),
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => check_timestamp(*us),
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => timestamp_from_int(*ms, TimeMode::Milliseconds),
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => timestamp_from_int(*ns, TimeMode::Nanoseconds),
        Value::Date(days) => timestamp_from_days(*days as i64),
        Value::Long(v) => match plan.int_time {
            IntTime::Unit(mode) => timestamp_from_int(*v, mode),
            IntTime::Days => timestamp_from_days(*v),
        },
        // An int timestamp can only be days (io.debezium.time.Date).
        Value::Int(days) => timestamp_from_days(*days as i64),
        other => Err(format!("{} is not a timestamp encoding", kind(other)).into()),
    }
}

/// The kind of an Avro value, for messages (never the value itself, which may be large).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "a boolean",
        Value::Int(_) => "an int",
        Value::Long(_) => "a long",
        Value::Float(_) => "a float",
        Value::Double(_) => "a double",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
        Value::Fixed(..) => "a fixed",
        Value::Enum(..) => "an enum",
        Value::Union(_, inner) => kind(inner),
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Record(_) => "a record",
        Value::Date(_) => "a date",
        Value::Decimal(_) | Value::BigDecimal(_) => "a decimal",
        Value::TimeMillis(_) | Value::TimeMicros(_) => "a time of day",
        Value::TimestampMillis(_)
        | Value::TimestampMicros(_)
        | Value::TimestampNanos(_)
        | Value::LocalTimestampMillis(_)
        | Value::LocalTimestampMicros(_)
        | Value::LocalTimestampNanos(_) => "a timestamp",
        Value::Duration(_) => "a duration",
        Value::Uuid(_) => "a uuid",
    }
}

#[cfg(test)]
mod tests;
