//! Debezium-shaped Avro records, encoded with apache_avro as Confluent's AvroConverter would,
//! decoded back to exact events; the registry client against a real (tiny) HTTP server.

use super::*;
use crate::decode::json::JsonDecoder;
use crate::decode::value::{format_decimal, rescale};
use crate::decode::SourceMeta;
use crate::position::{Lsn, SourcePosition};
use base64::Engine;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Schemas, as Debezium 2.x + Confluent AvroConverter register them.

const PRECISE: &str = r#"{"type":"bytes","scale":9,"precision":38,"connect.version":1,"connect.parameters":{"scale":"9","connect.decimal.precision":"38"},"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}"#;
const VARIABLE: &str = r#"{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data","fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}],"connect.doc":"Variable scaled decimal","connect.version":1,"connect.name":"io.debezium.data.VariableScaleDecimal"}"#;
const STRING_DECIMAL: &str = r#""string""#;
const DOUBLE_DECIMAL: &str = r#""double""#;
const ZONED: &str = r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTimestamp"}"#;
const JSON_TYPE: &str = r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.data.Json"}"#;

const SOURCE: &str = r#"{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":[
    {"name":"version","type":"string"},
    {"name":"connector","type":"string"},
    {"name":"name","type":"string"},
    {"name":"ts_ms","type":"long"},
    {"name":"snapshot","type":[{"type":"string","connect.version":1,"connect.parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"connect.default":"false","connect.name":"io.debezium.data.Enum"},"null"],"default":"false"},
    {"name":"db","type":"string"},
    {"name":"sequence","type":["null","string"],"default":null},
    {"name":"ts_us","type":["null","long"],"default":null},
    {"name":"ts_ns","type":["null","long"],"default":null},
    {"name":"schema","type":"string"},
    {"name":"table","type":"string"},
    {"name":"txId","type":["null","long"],"default":null},
    {"name":"lsn","type":["null","long"],"default":null},
    {"name":"xmin","type":["null","long"],"default":null}],
  "connect.name":"io.debezium.connector.postgresql.Source"}"#;

const TX_BLOCK: &str = r#"{"type":"record","name":"block","namespace":"event","fields":[{"name":"id","type":"string"},{"name":"total_order","type":"long"},{"name":"data_collection_order","type":"long"}],"connect.version":1,"connect.name":"event.block"}"#;

/// The envelope of `eav.public.<table>`, its row record made of `columns` (JSON field list).
fn envelope(table: &str, columns: &str) -> String {
    format!(
        r#"{{"type":"record","name":"Envelope","namespace":"eav.public.{table}","fields":[
            {{"name":"before","type":["null",{{"type":"record","name":"Value","fields":{columns},"connect.name":"eav.public.{table}.Value"}}],"default":null}},
            {{"name":"after","type":["null","eav.public.{table}.Value"],"default":null}},
            {{"name":"source","type":{SOURCE}}},
            {{"name":"transaction","type":["null",{TX_BLOCK}],"default":null}},
            {{"name":"op","type":"string"}},
            {{"name":"ts_ms","type":["null","long"],"default":null}},
            {{"name":"ts_us","type":["null","long"],"default":null}},
            {{"name":"ts_ns","type":["null","long"],"default":null}}],
          "connect.version":2,"connect.name":"eav.public.{table}.Envelope"}}"#
    )
}

fn value_columns(decimal: &str, timestamp: &str) -> String {
    format!(
        r#"[{{"name":"entity_id","type":"long"}},
            {{"name":"attribute_id","type":"long"}},
            {{"name":"tenant_id","type":"long"}},
            {{"name":"value_text","type":["null","string"],"default":null}},
            {{"name":"value_int","type":["null","long"],"default":null}},
            {{"name":"value_decimal","type":["null",{decimal}],"default":null}},
            {{"name":"value_bool","type":["null","boolean"],"default":null}},
            {{"name":"value_timestamp","type":["null",{timestamp}],"default":null}},
            {{"name":"value_json","type":["null",{JSON_TYPE}],"default":null}},
            {{"name":"updated_at","type":{{"type":"string","connect.version":1,"connect.default":"1970-01-01T00:00:00Z","connect.name":"io.debezium.time.ZonedTimestamp"}},"default":"1970-01-01T00:00:00Z"}}]"#
    )
}

fn values_schema(decimal: &str, timestamp: &str) -> String {
    envelope("entity_values", &value_columns(decimal, timestamp))
}

fn entities_schema() -> String {
    envelope(
        "entities",
        &format!(
            r#"[{{"name":"entity_id","type":"long"}},
                {{"name":"tenant_id","type":"long"}},
                {{"name":"entity_type","type":"string"}},
                {{"name":"hot_attributes","type":{JSON_TYPE}}},
                {{"name":"version","type":"long"}},
                {{"name":"is_deleted","type":"boolean"}},
                {{"name":"created_at","type":{ZONED}}},
                {{"name":"updated_at","type":{ZONED}}}]"#
        ),
    )
}

fn attributes_schema() -> String {
    envelope(
        "attributes",
        &format!(
            r#"[{{"name":"attribute_id","type":"long"}},
                {{"name":"tenant_id","type":"long"}},
                {{"name":"entity_type","type":"string"}},
                {{"name":"name","type":"string"}},
                {{"name":"data_type","type":"string"}},
                {{"name":"is_hot","type":"boolean"}},
                {{"name":"created_at","type":{ZONED}}}]"#
        ),
    )
}

const HEARTBEAT: &str = r#"{"type":"record","name":"Heartbeat","namespace":"io.debezium.connector.common","fields":[{"name":"ts_ms","type":"long"}],"connect.version":1,"connect.name":"io.debezium.connector.common.Heartbeat"}"#;

const TX_METADATA: &str = r#"{"type":"record","name":"TransactionMetadataValue","namespace":"io.debezium.connector.common","fields":[
    {"name":"status","type":"string"},
    {"name":"id","type":"string"},
    {"name":"event_count","type":["null","long"],"default":null},
    {"name":"data_collections","type":["null",{"type":"array","items":{"type":"record","name":"ConnectDefault","namespace":"io.confluent.connect.avro","fields":[{"name":"data_collection","type":"string"},{"name":"event_count","type":"long"}]}}],"default":null},
    {"name":"ts_ms","type":"long"}],
  "connect.version":1,"connect.name":"io.debezium.connector.common.TransactionMetadataValue"}"#;

fn message_schema() -> String {
    format!(
        r#"{{"type":"record","name":"MessageValue","namespace":"io.debezium.connector.postgresql","fields":[
            {{"name":"op","type":"string"}},
            {{"name":"ts_ms","type":["null","long"],"default":null}},
            {{"name":"source","type":{SOURCE}}},
            {{"name":"message","type":{{"type":"record","name":"Message","namespace":"io.debezium.connector.postgresql","fields":[{{"name":"prefix","type":"string"}},{{"name":"content","type":"bytes"}}]}}}}]}}"#
    )
}

// Schema ids the tests register.
const ID_PRECISE: u32 = 1;
const ID_VARIABLE: u32 = 2;
const ID_STRING: u32 = 3;
const ID_ENTITIES: u32 = 4;
const ID_ATTRIBUTES: u32 = 5;
const ID_HEARTBEAT: u32 = 6;
const ID_TX: u32 = 7;
const ID_MESSAGE: u32 = 8;
const ID_ORDERS: u32 = 9;
const ID_DOUBLE: u32 = 10;
const ID_MICROS: u32 = 11;
const ID_NANOS: u32 = 12;
const ID_MILLIS_LOGICAL: u32 = 13;
const ID_DATE: u32 = 14;
const ID_OPTIONAL_HEARTBEAT: u32 = 15;

fn all_schemas() -> Vec<(u32, String)> {
    vec![
        (ID_PRECISE, values_schema(PRECISE, ZONED)),
        (ID_VARIABLE, values_schema(VARIABLE, ZONED)),
        (ID_STRING, values_schema(STRING_DECIMAL, ZONED)),
        (ID_ENTITIES, entities_schema()),
        (ID_ATTRIBUTES, attributes_schema()),
        (ID_HEARTBEAT, HEARTBEAT.to_string()),
        (ID_OPTIONAL_HEARTBEAT, format!(r#"["null",{HEARTBEAT}]"#)),
        (ID_TX, TX_METADATA.to_string()),
        (ID_MESSAGE, message_schema()),
        (ID_ORDERS, envelope("orders", r#"[{"name":"order_id","type":"long"}]"#)),
        (ID_DOUBLE, values_schema(DOUBLE_DECIMAL, ZONED)),
        (
            ID_MICROS,
            values_schema(
                PRECISE,
                r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}"#,
            ),
        ),
        (
            ID_NANOS,
            values_schema(
                PRECISE,
                r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.NanoTimestamp"}"#,
            ),
        ),
        (
            ID_MILLIS_LOGICAL,
            values_schema(
                PRECISE,
                r#"{"type":"long","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Timestamp","logicalType":"timestamp-millis"}"#,
            ),
        ),
        (
            ID_DATE,
            values_schema(PRECISE, r#"{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}"#),
        ),
    ]
}

fn seeded_registry() -> Arc<SchemaRegistry> {
    let registry = SchemaRegistry::new("http://127.0.0.1:9").unwrap();
    for (id, text) in all_schemas() {
        registry.insert_json(id, &text).unwrap();
    }
    Arc::new(registry)
}

fn decoder() -> AvroDecoder {
    AvroDecoder::new(seeded_registry(), DecodeOptions::default(), TableNames::default())
}

fn parsed(id: u32) -> Schema {
    let text = all_schemas().into_iter().find(|(i, _)| *i == id).unwrap().1;
    Schema::parse_str(&text).unwrap()
}

/// Encodes `value` with schema `id` and prefixes the Confluent header.
fn frame(id: u32, value: Value) -> Vec<u8> {
    let datum = apache_avro::to_avro_datum(&parsed(id), value).unwrap();
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&datum);
    bytes
}

// ---------------------------------------------------------------------------------------------
// Values.

fn s(text: &str) -> Value {
    Value::String(text.to_string())
}

/// The non-null branch of `["null", T]`.
fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}

fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

fn opt(v: Option<Value>) -> Value {
    v.map_or_else(null, some)
}

fn rec(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(n, v)| (n.to_string(), v)).collect())
}

/// Big-endian two's complement without redundant sign bytes, as Java's BigInteger writes it.
fn minimal_be(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

const T0: &str = "2024-03-01T10:00:00.123456Z";
const T0_US: i64 = 1_709_287_200_123_456;

struct Src {
    lsn: i64,
    commit_lsn: i64,
    tx_id: i64,
    snapshot: &'static str,
    table: &'static str,
}

const STREAM: Src = Src { lsn: 200, commit_lsn: 150, tx_id: 7, snapshot: "false", table: "entity_values" };

fn source(src: &Src) -> Value {
    rec(vec![
        ("version", s("2.7.0.Final")),
        ("connector", s("postgresql")),
        ("name", s("eav")),
        ("ts_ms", Value::Long(T0_US / 1000)),
        ("snapshot", Value::Union(0, Box::new(s(src.snapshot)))),
        ("db", s("eav")),
        ("sequence", some(s(&format!(r#"["{}","{}"]"#, src.commit_lsn, src.lsn)))),
        ("ts_us", some(Value::Long(T0_US))),
        ("ts_ns", some(Value::Long(T0_US * 1000))),
        ("schema", s("public")),
        ("table", s(src.table)),
        ("txId", some(Value::Long(src.tx_id))),
        ("lsn", some(Value::Long(src.lsn))),
        ("xmin", null()),
    ])
}

fn meta(src: &Src) -> SourceMeta {
    SourceMeta {
        position: SourcePosition { commit_lsn: Lsn(src.commit_lsn as u64), lsn: Lsn(src.lsn as u64) },
        tx_id: Some(src.tx_id),
        commit_time_us: Some(T0_US),
        snapshot: src.snapshot != "false",
    }
}

fn change(src: &Src, op: &str, before: Option<Value>, after: Option<Value>, tx: Option<&str>) -> Value {
    rec(vec![
        ("before", opt(before)),
        ("after", opt(after)),
        ("source", source(src)),
        (
            "transaction",
            opt(tx.map(|id| {
                rec(vec![("id", s(id)), ("total_order", Value::Long(1)), ("data_collection_order", Value::Long(1))])
            })),
        ),
        ("op", s(op)),
        ("ts_ms", some(Value::Long(T0_US / 1000 + 5))),
        ("ts_us", null()),
        ("ts_ns", null()),
    ])
}

#[derive(Clone, Copy)]
enum DecimalForm {
    Precise,
    Variable,
    Text,
    Double,
}

/// A row of `entity_values`, turned into an Avro record, a JSON object and the expected row.
#[derive(Clone, Copy, Default)]
struct V {
    entity_id: i64,
    attribute_id: i64,
    text: Option<&'static str>,
    int: Option<i64>,
    decimal: Option<&'static str>,
    boolean: Option<bool>,
    timestamp: Option<&'static str>,
    json: Option<&'static str>,
}

const TENANT: i64 = 3;

impl V {
    fn avro(&self, form: DecimalForm) -> Value {
        let decimal = self.decimal.map(|text| {
            let d = parse_decimal(text).unwrap();
            match form {
                DecimalForm::Precise => Value::Decimal(apache_avro::Decimal::from(minimal_be(rescale(d, 9).unwrap()))),
                DecimalForm::Variable => {
                    rec(vec![("scale", Value::Int(d.scale as i32)), ("value", Value::Bytes(minimal_be(d.unscaled)))])
                }
                DecimalForm::Text => s(text),
                DecimalForm::Double => Value::Double(text.parse().unwrap()),
            }
        });
        rec(vec![
            ("entity_id", Value::Long(self.entity_id)),
            ("attribute_id", Value::Long(self.attribute_id)),
            ("tenant_id", Value::Long(TENANT)),
            ("value_text", opt(self.text.map(s))),
            ("value_int", opt(self.int.map(Value::Long))),
            ("value_decimal", opt(decimal)),
            ("value_bool", opt(self.boolean.map(Value::Boolean))),
            ("value_timestamp", opt(self.timestamp.map(s))),
            ("value_json", opt(self.json.map(s))),
            ("updated_at", s(T0)),
        ])
    }

    /// The same row as Debezium's JsonConverter writes it in precise mode (scale 9).
    fn json(&self) -> serde_json::Value {
        let decimal = self.decimal.map(|text| {
            let unscaled = rescale(parse_decimal(text).unwrap(), 9).unwrap();
            base64::engine::general_purpose::STANDARD.encode(minimal_be(unscaled))
        });
        serde_json::json!({
            "entity_id": self.entity_id, "attribute_id": self.attribute_id, "tenant_id": TENANT,
            "value_text": self.text, "value_int": self.int, "value_decimal": decimal,
            "value_bool": self.boolean, "value_timestamp": self.timestamp, "value_json": self.json,
            "updated_at": T0,
        })
    }

    fn expected(&self, form: DecimalForm) -> ValueRow {
        let text = |t: Option<&str>| match t {
            None => Field::Null,
            Some(UNAVAILABLE) => Field::Unavailable,
            Some(t) => Field::Value(t.into()),
        };
        ValueRow {
            entity_id: self.entity_id,
            attribute_id: self.attribute_id,
            tenant_id: Some(TENANT),
            value_text: text(self.text),
            value_int: self.int,
            value_decimal: self.decimal.map(|t| {
                let d = parse_decimal(t).unwrap();
                match form {
                    DecimalForm::Precise => Decimal { unscaled: rescale(d, 9).unwrap(), scale: 9 },
                    _ => d,
                }
            }),
            value_bool: self.boolean,
            value_timestamp: self.timestamp.map(|t| parse_timestamp(t).unwrap()),
            value_json: text(self.json),
        }
    }
}

const PRICE: V = V {
    entity_id: 42,
    attribute_id: 7,
    text: None,
    int: None,
    decimal: Some("12.345"),
    boolean: None,
    timestamp: Some(T0),
    json: None,
};

const TOASTED: V = V {
    entity_id: 42,
    attribute_id: 8,
    text: Some(UNAVAILABLE),
    int: Some(-5),
    decimal: Some("-0.000000001"),
    boolean: Some(true),
    timestamp: None,
    json: Some(UNAVAILABLE),
};

// ---------------------------------------------------------------------------------------------
// Decoding.

#[tokio::test]
async fn precise_update_decodes_exactly() {
    let d = decoder();
    let before = V { text: Some("old"), ..TOASTED };
    let after = V { json: Some(r#"{"k":[1,2]}"#), ..TOASTED };
    let record = frame(
        ID_PRECISE,
        change(
            &STREAM,
            "u",
            Some(before.avro(DecimalForm::Precise)),
            Some(after.avro(DecimalForm::Precise)),
            Some("7:200"),
        ),
    );
    let event = d.decode(Some(&record)).await.unwrap();
    let expected = Event::Change {
        op: Op::Update,
        source: SourceMeta {
            position: SourcePosition { commit_lsn: Lsn(150), lsn: Lsn(200) },
            tx_id: Some(7),
            commit_time_us: Some(T0_US),
            snapshot: false,
        },
        // `transaction.id` is "7:200"; with a txId it is not kept.
        tx: None,
        row: RowChange::Value {
            before: Some(ValueRow {
                entity_id: 42,
                attribute_id: 8,
                tenant_id: Some(3),
                value_text: Field::Value("old".into()),
                value_int: Some(-5),
                value_decimal: Some(Decimal { unscaled: -1, scale: 9 }),
                value_bool: Some(true),
                value_timestamp: None,
                value_json: Field::Unavailable,
            }),
            after: Some(ValueRow {
                entity_id: 42,
                attribute_id: 8,
                tenant_id: Some(3),
                value_text: Field::Unavailable,
                value_int: Some(-5),
                value_decimal: Some(Decimal { unscaled: -1, scale: 9 }),
                value_bool: Some(true),
                value_timestamp: None,
                value_json: Field::Value(r#"{"k":[1,2]}"#.into()),
            }),
        },
    };
    assert_eq!(event, expected);

    let record = frame(ID_PRECISE, change(&STREAM, "c", None, Some(PRICE.avro(DecimalForm::Precise)), None));
    let Event::Change { op, tx, row: RowChange::Value { before, after }, .. } = d.decode(Some(&record)).await.unwrap()
    else {
        panic!("not a value change")
    };
    assert_eq!((op, tx, before), (Op::Create, None, None));
    let after = after.unwrap();
    assert_eq!(after.value_decimal, Some(Decimal { unscaled: 12_345_000_000, scale: 9 }));
    assert_eq!(after.value_timestamp, Some(T0_US));
    assert_eq!(format_decimal(12_345_000_000, 9), "12.345000000");
}

#[tokio::test]
async fn every_decimal_form_decodes() {
    let d = decoder();
    for (id, form) in [
        (ID_PRECISE, DecimalForm::Precise),
        (ID_VARIABLE, DecimalForm::Variable),
        (ID_STRING, DecimalForm::Text),
        (ID_DOUBLE, DecimalForm::Double),
    ] {
        for row in [PRICE, TOASTED, V { decimal: Some("99999999999999999999999999999.999999999"), ..PRICE }] {
            if matches!(form, DecimalForm::Double) && row.decimal.is_some_and(|t| t.len() > 15) {
                continue; // not representable as a double
            }
            let record = frame(id, change(&STREAM, "c", None, Some(row.avro(form)), None));
            let event = d.decode(Some(&record)).await.unwrap();
            let Event::Change { row: RowChange::Value { after, .. }, .. } = event else { panic!("{event:?}") };
            assert_eq!(after, Some(row.expected(form)), "schema id {id}");
        }
    }
    // Variable scale keeps each value's own scale.
    let record = frame(ID_VARIABLE, change(&STREAM, "c", None, Some(PRICE.avro(DecimalForm::Variable)), None));
    let Event::Change { row: RowChange::Value { after: Some(row), .. }, .. } = d.decode(Some(&record)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(row.value_decimal, Some(Decimal { unscaled: 12345, scale: 3 }));
}

#[tokio::test]
async fn snapshot_reads_and_deletes() {
    let d = decoder();
    let snap = Src { snapshot: "last", lsn: 500, commit_lsn: 500, ..STREAM };
    let record = frame(ID_VARIABLE, change(&snap, "r", None, Some(PRICE.avro(DecimalForm::Variable)), None));
    assert_eq!(
        d.decode(Some(&record)).await.unwrap(),
        Event::Change {
            op: Op::Read,
            source: meta(&snap),
            tx: None,
            row: RowChange::Value { before: None, after: Some(PRICE.expected(DecimalForm::Variable)) },
        }
    );
    assert!(meta(&snap).snapshot);

    let record = frame(ID_STRING, change(&STREAM, "d", Some(PRICE.avro(DecimalForm::Text)), None, Some("9")));
    assert_eq!(
        d.decode(Some(&record)).await.unwrap(),
        Event::Change {
            op: Op::Delete,
            source: meta(&STREAM),
            tx: None,
            row: RowChange::Value { before: Some(PRICE.expected(DecimalForm::Text)), after: None },
        }
    );

    // A delete without its before-image, a create without its after-image: not Debezium.
    let record = frame(ID_STRING, change(&STREAM, "d", None, None, None));
    assert!(matches!(d.decode(Some(&record)).await, Err(DecodeError::NotDebezium(_))));
    let record = frame(ID_STRING, change(&STREAM, "c", None, None, None));
    assert!(matches!(d.decode(Some(&record)).await, Err(DecodeError::NotDebezium(_))));
}

#[tokio::test]
async fn integer_timestamps_take_their_unit_from_the_schema() {
    let d = decoder();
    let base = V { timestamp: None, ..PRICE };
    let with_ts = |ts: Value| {
        let Value::Record(mut fields) = base.avro(DecimalForm::Precise) else { unreachable!() };
        for (name, v) in fields.iter_mut() {
            if name == "value_timestamp" {
                *v = some(ts.clone());
            }
        }
        Value::Record(fields)
    };
    for (id, ts, expected) in [
        (ID_MICROS, Value::Long(T0_US), T0_US),
        (ID_NANOS, Value::Long(T0_US * 1000 + 789), T0_US),
        (ID_MILLIS_LOGICAL, Value::TimestampMillis(T0_US / 1000), T0_US / 1000 * 1000),
        (ID_DATE, Value::Int(19783), 1_709_251_200_000_000),
    ] {
        let record = frame(id, change(&STREAM, "c", None, Some(with_ts(ts)), None));
        let event = d.decode(Some(&record)).await.unwrap();
        let Event::Change { row: RowChange::Value { after: Some(row), .. }, .. } = event else { panic!("{event:?}") };
        assert_eq!(row.value_timestamp, Some(expected), "schema id {id}");
    }

    // Without the schema text, a plain long falls back to the configured time mode.
    let registry = SchemaRegistry::new("http://127.0.0.1:9").unwrap();
    registry.insert(ID_NANOS, parsed(ID_NANOS));
    let options = DecodeOptions { time_mode: TimeMode::Milliseconds, ..DecodeOptions::default() };
    let d = AvroDecoder::new(Arc::new(registry), options, TableNames::default());
    let record = frame(ID_NANOS, change(&STREAM, "c", None, Some(with_ts(Value::Long(T0_US / 1000))), None));
    let Event::Change { row: RowChange::Value { after: Some(row), .. }, .. } = d.decode(Some(&record)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(row.value_timestamp, Some(T0_US / 1000 * 1000));
    // The decimal scale comes from the parsed schema either way.
    assert_eq!(row.value_decimal, Some(Decimal { unscaled: 12_345_000_000, scale: 9 }));
}

fn entity(hot: &str, deleted: bool) -> Value {
    rec(vec![
        ("entity_id", Value::Long(42)),
        ("tenant_id", Value::Long(TENANT)),
        ("entity_type", s("product")),
        ("hot_attributes", s(hot)),
        ("version", Value::Long(2)),
        ("is_deleted", Value::Boolean(deleted)),
        ("created_at", s(T0)),
        ("updated_at", s(T0)),
    ])
}

#[tokio::test]
async fn entities_and_attributes() {
    let d = decoder();
    let src = Src { table: "entities", ..STREAM };
    let record = frame(
        ID_ENTITIES,
        change(&src, "u", Some(entity(UNAVAILABLE, false)), Some(entity(r#"{"name":"x"}"#, true)), None),
    );
    assert_eq!(
        d.decode(Some(&record)).await.unwrap(),
        Event::Change {
            op: Op::Update,
            source: meta(&src),
            tx: None,
            row: RowChange::Entity {
                before: Some(EntityRow {
                    entity_id: 42,
                    tenant_id: Some(TENANT),
                    entity_type: Some("product".into()),
                    hot_attributes: Field::Unavailable,
                    is_deleted: false,
                }),
                after: Some(EntityRow {
                    entity_id: 42,
                    tenant_id: Some(TENANT),
                    entity_type: Some("product".into()),
                    hot_attributes: Field::Value(r#"{"name":"x"}"#.into()),
                    is_deleted: true,
                }),
            },
        }
    );

    let src = Src { table: "attributes", ..STREAM };
    let attribute = rec(vec![
        ("attribute_id", Value::Long(7)),
        ("tenant_id", Value::Long(TENANT)),
        ("entity_type", s("product")),
        ("name", s("price")),
        ("data_type", s("decimal")),
        ("is_hot", Value::Boolean(true)),
        ("created_at", s(T0)),
    ]);
    let record = frame(ID_ATTRIBUTES, change(&src, "c", None, Some(attribute), None));
    assert_eq!(
        d.decode(Some(&record)).await.unwrap(),
        Event::Change {
            op: Op::Create,
            source: meta(&src),
            tx: None,
            row: RowChange::Attribute {
                before: None,
                after: Some(AttributeRow {
                    attribute_id: 7,
                    tenant_id: TENANT,
                    entity_type: "product".into(),
                    name: "price".into(),
                    data_type: DataType::Decimal,
                    is_hot: true,
                }),
            },
        }
    );
}

#[tokio::test]
async fn control_records() {
    let d = decoder();
    assert_eq!(d.decode(None).await.unwrap(), Event::Tombstone);

    let record = frame(ID_HEARTBEAT, rec(vec![("ts_ms", Value::Long(1))]));
    assert_eq!(d.decode(Some(&record)).await.unwrap(), Event::Heartbeat);
    // An optional value schema: the record inside a union, or its null.
    let record = frame(ID_OPTIONAL_HEARTBEAT, some(rec(vec![("ts_ms", Value::Long(1))])));
    assert_eq!(d.decode(Some(&record)).await.unwrap(), Event::Heartbeat);
    let record = frame(ID_OPTIONAL_HEARTBEAT, null());
    assert_eq!(d.decode(Some(&record)).await.unwrap(), Event::Tombstone);
    // As for JSON, an empty value is a tombstone too.
    assert_eq!(d.decode(Some(&[])).await.unwrap(), Event::Tombstone);

    for (status, begin) in [("BEGIN", true), ("END", false)] {
        let record = frame(
            ID_TX,
            rec(vec![
                ("status", s(status)),
                ("id", s("571:53195832")),
                ("event_count", if begin { null() } else { some(Value::Long(2)) }),
                ("data_collections", null()),
                ("ts_ms", Value::Long(1)),
            ]),
        );
        assert_eq!(d.decode(Some(&record)).await.unwrap(), Event::Transaction { begin });
    }

    let record = frame(
        ID_MESSAGE,
        rec(vec![
            ("op", s("m")),
            ("ts_ms", some(Value::Long(1))),
            ("source", source(&Src { table: "", ..STREAM })),
            ("message", rec(vec![("prefix", s("eavlake")), ("content", Value::Bytes(b"hi".to_vec()))])),
        ]),
    );
    assert_eq!(d.decode(Some(&record)).await.unwrap(), Event::Message);

    let record = frame(ID_PRECISE, change(&STREAM, "t", None, None, None));
    assert_eq!(
        d.decode(Some(&record)).await.unwrap(),
        Event::Truncate { table: Table::EntityValues, source: meta(&STREAM) }
    );

    let orders = Src { table: "orders", ..STREAM };
    let record = frame(ID_ORDERS, change(&orders, "c", None, Some(rec(vec![("order_id", Value::Long(1))])), None));
    assert_eq!(d.decode(Some(&record)).await.unwrap(), Event::OtherTable { table: "orders".into() });

    let record = frame(ID_PRECISE, change(&STREAM, "x", None, None, None));
    assert_eq!(d.decode(Some(&record)).await, Err(DecodeError::UnknownOp("x".into())));
}

#[tokio::test]
async fn malformed_records_are_errors() {
    let d = decoder();
    let good = frame(ID_PRECISE, change(&STREAM, "c", None, Some(PRICE.avro(DecimalForm::Precise)), None));

    let err = d.decode(Some(&good[..3])).await.unwrap_err();
    assert!(matches!(&err, DecodeError::Avro(m) if m.contains("shorter")), "{err}");

    let mut bad_magic = good.clone();
    bad_magic[0] = 1;
    let err = d.decode(Some(&bad_magic)).await.unwrap_err();
    assert!(matches!(&err, DecodeError::Avro(m) if m.contains("magic byte is 0x01")), "{err}");
    assert_eq!(err.reason(), "invalid_avro");

    let mut trailing = good.clone();
    trailing.push(0);
    let err = d.decode(Some(&trailing)).await.unwrap_err();
    assert!(matches!(&err, DecodeError::Avro(m) if m.contains("1 bytes left over")), "{err}");

    let truncated = &good[..good.len() - 4];
    assert!(matches!(d.decode(Some(truncated)).await, Err(DecodeError::Avro(_))));

    // Garbage after a good header: a union index out of range, a negative length…
    for garbage in [vec![0x7F; 16], vec![0x01; 3], vec![0xFF; 40]] {
        let mut record = good[..5].to_vec();
        record.extend(garbage);
        assert!(d.decode(Some(&record)).await.is_err());
    }

    // A row value of the wrong Avro type names the field.
    let bad = rec(vec![("entity_id", s("42"))]);
    let plan = Plan { decimal_scale: 9, int_time: IntTime::Unit(TimeMode::Adaptive) };
    let Value::Record(fields) = bad else { unreachable!() };
    let err = value_row(&fields, "after", &plan).unwrap_err();
    assert_eq!(err, DecodeError::field("after.entity_id", "expected an integer, got a string"));
    assert!(decimal_of(&Value::Boolean(true), &plan).is_err());
    assert!(decimal_of(&s("NaN"), &plan).is_err());
    assert!(decimal_of(&Value::Double(f64::INFINITY), &plan).is_err());
    let millis = Plan { int_time: IntTime::Unit(TimeMode::Milliseconds), ..plan };
    assert!(timestamp_of(&Value::Long(i64::MAX), &millis).is_err());
}

#[tokio::test]
async fn unknown_schema_id_is_a_registry_error() {
    // Nothing listens on port 9 of the loopback: the lookup fails, and says which id it wanted.
    let d = decoder();
    let mut record = frame(ID_PRECISE, change(&STREAM, "c", None, Some(PRICE.avro(DecimalForm::Precise)), None));
    record[1..5].copy_from_slice(&999u32.to_be_bytes());
    let err = d.decode(Some(&record)).await.unwrap_err();
    assert!(matches!(&err, DecodeError::Registry(m) if m.contains("schema id 999")), "{err}");
}

/// Schema id, source, op, before, after, transaction id.
type Case<'a> = (u32, &'a Src, &'a str, Option<V>, Option<V>, Option<&'a str>);

/// The same change through Debezium's JsonConverter (no schemas, precise decimals) and through
/// its AvroConverter decodes to the same event.
#[tokio::test]
async fn json_and_avro_agree() {
    let avro = decoder();
    let mut json = JsonDecoder::new(DecodeOptions::default(), TableNames::default());
    let json_source = |src: &Src| {
        serde_json::json!({
            "version": "2.7.0.Final", "connector": "postgresql", "name": "eav", "ts_ms": T0_US / 1000,
            "snapshot": src.snapshot, "db": "eav", "sequence": format!(r#"["{}","{}"]"#, src.commit_lsn, src.lsn),
            "ts_us": T0_US, "ts_ns": T0_US * 1000, "schema": "public", "table": src.table, "txId": src.tx_id,
            "lsn": src.lsn, "xmin": null,
        })
    };
    let incremental = Src { snapshot: "incremental", ..STREAM };
    let changes: Vec<Case> = vec![
        (ID_PRECISE, &STREAM, "c", None, Some(PRICE), Some("7:200")),
        (ID_PRECISE, &STREAM, "u", Some(V { text: Some("old"), ..TOASTED }), Some(TOASTED), None),
        (ID_PRECISE, &STREAM, "d", Some(PRICE), None, Some("7:200")),
        (ID_PRECISE, &incremental, "r", None, Some(PRICE), None),
    ];
    for (id, src, op, before, after, tx) in changes {
        let record = frame(
            id,
            change(
                src,
                op,
                before.map(|v| v.avro(DecimalForm::Precise)),
                after.map(|v| v.avro(DecimalForm::Precise)),
                tx,
            ),
        );
        let json_record = serde_json::json!({
            "before": before.map(|v| v.json()), "after": after.map(|v| v.json()), "source": json_source(src),
            "transaction": tx.map(|id| serde_json::json!({"id": id, "total_order": 1, "data_collection_order": 1})),
            "op": op, "ts_ms": T0_US / 1000 + 5,
        })
        .to_string();
        let from_avro = avro.decode(Some(&record)).await.unwrap();
        let from_json = json.decode(Some(json_record.as_bytes())).unwrap();
        assert_eq!(from_avro, from_json, "op {op}");
    }

    let src = Src { table: "entities", ..STREAM };
    let record =
        frame(ID_ENTITIES, change(&src, "u", Some(entity(UNAVAILABLE, false)), Some(entity("{}", false)), None));
    let json_entity = |hot: &str| {
        serde_json::json!({"entity_id": 42, "tenant_id": TENANT, "entity_type": "product", "hot_attributes": hot,
            "version": 2, "is_deleted": false, "created_at": T0, "updated_at": T0})
    };
    let json_record = serde_json::json!({
        "before": json_entity(UNAVAILABLE), "after": json_entity("{}"), "source": json_source(&src), "op": "u",
    })
    .to_string();
    assert_eq!(avro.decode(Some(&record)).await.unwrap(), json.decode(Some(json_record.as_bytes())).unwrap());
}

// ---------------------------------------------------------------------------------------------
// The registry client over HTTP.

/// A schema registry on 127.0.0.1 that knows `schemas` (id → response body) and counts requests.
struct Registry {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(schemas: HashMap<u32, String>) -> Registry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let schemas = Arc::new(schemas);
    let counter = requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let schemas = schemas.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("");
                let found = text
                    .starts_with("GET ")
                    .then(|| path.strip_prefix("/schemas/ids/"))
                    .flatten()
                    .and_then(|id| id.parse::<u32>().ok())
                    .and_then(|id| schemas.get(&id).map(|body| (id, body)));
                let (status, body) = match found {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => {
                        let id = path.rsplit('/').next().unwrap_or("");
                        ("404 Not Found", format!(r#"{{"error_code":40403,"message":"Schema {id} not found"}}"#))
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Registry { url, requests, task }
}

fn client_for(server: &Registry) -> SchemaRegistry {
    // No proxy: the test server is on the loopback whatever the environment says.
    let http = reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(10)).build().unwrap();
    SchemaRegistry::with_client(&server.url, http).unwrap()
}

fn registry_body(text: &str) -> String {
    serde_json::json!({ "schema": text }).to_string()
}

#[tokio::test]
async fn registry_fetches_once_per_id() {
    let mut schemas = HashMap::new();
    schemas.insert(ID_PRECISE, registry_body(&values_schema(PRECISE, ZONED)));
    schemas.insert(
        ID_MICROS,
        serde_json::json!({"schema": values_schema(PRECISE, r#"{"type":"long","connect.name":"io.debezium.time.MicroTimestamp"}"#), "schemaType": "AVRO"}).to_string(),
    );
    let server = serve(schemas).await;
    let registry = Arc::new(client_for(&server));

    let first = registry.schema(ID_PRECISE).await.unwrap();
    let second = registry.schema(ID_PRECISE).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(*first, parsed(ID_PRECISE));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    let registered = registry.registered(ID_MICROS).await.unwrap();
    assert!(registered.text.unwrap().contains("MicroTimestamp"));
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);

    // Decoding through the registry: the decoder asks the (warm) client, which asks no one.
    let d = AvroDecoder::new(registry.clone(), DecodeOptions::default(), TableNames::default());
    let record = frame(ID_PRECISE, change(&STREAM, "c", None, Some(PRICE.avro(DecimalForm::Precise)), None));
    for _ in 0..3 {
        let event = d.decode(Some(&record)).await.unwrap();
        assert!(matches!(event, Event::Change { row: RowChange::Value { .. }, .. }));
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn registry_errors_name_the_id() {
    let mut schemas = HashMap::new();
    schemas.insert(20, serde_json::json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}).to_string());
    schemas.insert(21, registry_body(r#"{"type":"record","name":"X","fields":[{"name":"a","type":"nope"}]}"#));
    schemas.insert(22, "<html>oops</html>".to_string());
    let server = serve(schemas).await;
    let registry = client_for(&server);

    let err = registry.schema(7).await.unwrap_err();
    let DecodeError::Registry(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("schema id 7"), "{message}");
    assert!(message.contains("404") && message.contains("Schema 7 not found"), "{message}");
    assert!(message.contains(&format!("{}schemas/ids/7", server.url)), "{message}");
    assert_eq!(err.reason(), "schema_registry");
    // Failures are not cached: the next lookup asks again.
    assert!(registry.schema(7).await.is_err());
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);

    let err = registry.schema(20).await.unwrap_err().to_string();
    assert!(err.contains("schema id 20") && err.contains("PROTOBUF"), "{err}");
    let err = registry.schema(21).await.unwrap_err().to_string();
    assert!(err.contains("schema id 21") && err.contains("not a valid Avro schema"), "{err}");
    let err = registry.schema(22).await.unwrap_err().to_string();
    assert!(err.contains("schema id 22") && err.contains("oops"), "{err}");
}

#[tokio::test]
async fn bad_magic_byte_never_reaches_the_registry() {
    let server = serve(HashMap::new()).await;
    let d = AvroDecoder::new(Arc::new(client_for(&server)), DecodeOptions::default(), TableNames::default());
    let err = d.decode(Some(&[0x7B, 0x22, 0x6F, 0x70, 0x22, 0x3A])).await.unwrap_err();
    assert!(matches!(&err, DecodeError::Avro(m) if m.contains("magic byte")), "{err}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);

    // A good header with an unknown id does ask, and fails as a registry error.
    let err = d.decode(Some(&[0, 0, 0, 0, 5, 0])).await.unwrap_err();
    assert!(matches!(&err, DecodeError::Registry(m) if m.contains("schema id 5")), "{err}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

/// The worker's path: it fetches a record's writer schema first, then decodes without the
/// registry. An unknown id is refused for good (its records are dead letters, and the registry is
/// not asked again); an unreachable registry is a transient failure, remembered nowhere.
#[tokio::test]
async fn prepared_schemas_decode_without_the_registry() {
    let mut schemas = HashMap::new();
    schemas.insert(ID_PRECISE, registry_body(&values_schema(PRECISE, ZONED)));
    let server = serve(schemas).await;
    let d = AvroDecoder::new(Arc::new(client_for(&server)), DecodeOptions::default(), TableNames::default());
    let record = frame(ID_PRECISE, change(&STREAM, "c", None, Some(PRICE.avro(DecimalForm::Precise)), None));
    assert_eq!(d.missing_schema(Some(&record)), Some(ID_PRECISE));
    assert!(matches!(d.decode_ready(Some(&record)), Err(DecodeError::Registry(m)) if m.contains("not fetched")));
    d.prepare(ID_PRECISE).await.unwrap();
    assert_eq!(d.missing_schema(Some(&record)), None);
    assert!(matches!(d.decode_ready(Some(&record)), Ok(Event::Change { .. })));
    assert_eq!(d.missing_schema(None), None, "a tombstone needs no schema");
    assert_eq!(d.missing_schema(Some(b"{}")), None, "not the wire format: decoding says so");

    let mut unknown = record.clone();
    unknown[1..5].copy_from_slice(&77u32.to_be_bytes());
    assert!(matches!(d.prepare(77).await, Err(Failure::Permanent(_))));
    assert_eq!(d.missing_schema(Some(&unknown)), None, "refused ids are not asked for again");
    let err = d.decode_ready(Some(&unknown)).unwrap_err();
    assert!(matches!(&err, DecodeError::Registry(m) if m.contains("Schema 77 not found")), "{err}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);

    // Nothing listens on port 9: try again later, nothing remembered.
    let down = AvroDecoder::new(
        Arc::new(SchemaRegistry::new("http://127.0.0.1:9/").unwrap()),
        DecodeOptions::default(),
        TableNames::default(),
    );
    assert!(matches!(down.prepare(ID_PRECISE).await, Err(Failure::Transient(_))));
    assert_eq!(down.missing_schema(Some(&record)), Some(ID_PRECISE));
}

/// Regression (fuzzing): a transaction-metadata record of 647 bytes whose `data_collections`
/// array declares about 537 million items made apache_avro reserve 30 GB and abort the process.
/// Lengths are capped at MAX_AVRO_LENGTH: it is an `invalid_avro` dead letter.
#[tokio::test]
async fn huge_declared_array_is_an_error_not_an_abort() {
    const CRASH: &str = "AAAAAAcGRU5EGDU3MgICAgICAgIoAgICAgICAgICAgICAgICBAQEBAQEBAQEBAQEBDICAgICAgICKAIEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEAgQEBAQEBAQEBAQEBAQyAgICAgICAgICAgQEBAQEBAQEBAT/////////gwQEBDICAgICAgICKAIEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEAP8EBAQEAgQEBAQEBAQEBAQEBAQ0AgICAgICAigCBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEAgQEBAQEBAQEBAQEBAQyAgICAgICAigCBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQCAgICKAIEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEAgQEBAQEBAQEBAQEBAQxAgICAgICAigCBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBCMEBAQEBAQCAgICAgICAv////8DAAAWMi43LjAuRmluYWwUcG9zdGdyZQIEBAQEBAQEBAQEAgICAgI=";
    let record = base64::engine::general_purpose::STANDARD.decode(CRASH).unwrap();
    let err = decoder().decode(Some(&record)).await.unwrap_err();
    assert_eq!(err.reason(), "invalid_avro", "{err}");
    assert!(err.to_string().starts_with("Avro record: datum does not match writer schema id 7: "), "{err}");
}
