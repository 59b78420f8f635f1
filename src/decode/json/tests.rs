//! `JsonDecoder::decode` on records shaped exactly like the Debezium PostgreSQL connector's
//! output through Kafka Connect's `JsonConverter`, with `schemas.enable=false` (bare payloads)
//! and `schemas.enable=true` (`{"schema":…,"payload":…}`).

use super::*;
use crate::decode::*;
use crate::position::{Lsn, SourcePosition};

// ---------------------------------------------------------------------------------------------
// Schemas, as JsonConverter embeds them for the connector's envelopes.

const SOURCE_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"}"#;

const TRANSACTION_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},{"type":"int64","optional":false,"field":"data_collection_order"}],"optional":true,"name":"event.block","version":1,"field":"transaction"}"#;

const ATTRIBUTES_COLUMNS: &str = r#"[{"type":"int64","optional":false,"field":"attribute_id"},{"type":"int64","optional":false,"field":"tenant_id"},{"type":"string","optional":false,"field":"entity_type"},{"type":"string","optional":false,"field":"name"},{"type":"string","optional":false,"field":"data_type"},{"type":"boolean","optional":false,"default":false,"field":"is_hot"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"created_at"}]"#;

const ENTITIES_COLUMNS: &str = r#"[{"type":"int64","optional":false,"field":"entity_id"},{"type":"int64","optional":false,"field":"tenant_id"},{"type":"string","optional":false,"field":"entity_type"},{"type":"string","optional":false,"name":"io.debezium.data.Json","version":1,"default":"{}","field":"hot_attributes"},{"type":"int64","optional":false,"default":1,"field":"version"},{"type":"boolean","optional":false,"default":false,"field":"is_deleted"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"created_at"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"updated_at"}]"#;

/// `numeric(38, 9)` in `decimal.handling.mode=precise`.
const DECIMAL_PRECISE_9: &str = r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"9","connect.decimal.precision":"38"},"field":"value_decimal"}"#;
/// `numeric(12, 2)` in `decimal.handling.mode=precise`.
const DECIMAL_PRECISE_2: &str = r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"12"},"field":"value_decimal"}"#;
/// `numeric` without precision in `decimal.handling.mode=precise`.
const DECIMAL_VARIABLE: &str = r#"{"type":"struct","fields":[{"type":"int32","optional":false,"field":"scale"},{"type":"bytes","optional":false,"field":"value"}],"optional":true,"name":"io.debezium.data.VariableScaleDecimal","version":1,"doc":"Variable scaled decimal","field":"value_decimal"}"#;
const DECIMAL_STRING: &str = r#"{"type":"string","optional":true,"field":"value_decimal"}"#;
const DECIMAL_DOUBLE: &str = r#"{"type":"double","optional":true,"field":"value_decimal"}"#;
/// `Decimal` without its `scale` parameter: not something the connector writes.
const DECIMAL_NO_SCALE: &str = r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"connect.decimal.precision":"38"},"field":"value_decimal"}"#;

/// `timestamptz`, whatever the `time.precision.mode`.
const TIME_ZONED: &str = r#"{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"value_timestamp"}"#;
/// `timestamp(6)` in `adaptive` / `adaptive_time_microseconds` mode.
const TIME_MICRO: &str = r#"{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","version":1,"field":"value_timestamp"}"#;
/// `timestamp(3)` in `adaptive` mode.
const TIME_MILLIS: &str =
    r#"{"type":"int64","optional":true,"name":"io.debezium.time.Timestamp","version":1,"field":"value_timestamp"}"#;
/// `timestamp` in `connect` mode.
const TIME_CONNECT: &str = r#"{"type":"int64","optional":true,"name":"org.apache.kafka.connect.data.Timestamp","version":1,"field":"value_timestamp"}"#;
/// `timestamp` in `nanoseconds` mode.
const TIME_NANO: &str =
    r#"{"type":"int64","optional":true,"name":"io.debezium.time.NanoTimestamp","version":1,"field":"value_timestamp"}"#;
/// `date` in `adaptive` mode.
const TIME_DATE: &str =
    r#"{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"value_timestamp"}"#;

/// The columns of `entity_values`, with the given schemas of `value_decimal` and
/// `value_timestamp`.
fn value_columns(decimal: &str, timestamp: &str) -> String {
    format!(
        r#"[{{"type":"int64","optional":false,"field":"entity_id"}},{{"type":"int64","optional":false,"field":"attribute_id"}},{{"type":"int64","optional":false,"field":"tenant_id"}},{{"type":"string","optional":true,"field":"value_text"}},{{"type":"int64","optional":true,"field":"value_int"}},{decimal},{{"type":"boolean","optional":true,"field":"value_bool"}},{timestamp},{{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1,"field":"value_json"}},{{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"updated_at"}}]"#
    )
}

/// The envelope schema of `eav.public.<table>` whose row struct has `columns`.
fn envelope_schema(table: &str, columns: &str) -> String {
    format!(
        r#"{{"type":"struct","fields":[{{"type":"struct","fields":{columns},"optional":true,"name":"eav.public.{table}.Value","field":"before"}},{{"type":"struct","fields":{columns},"optional":true,"name":"eav.public.{table}.Value","field":"after"}},{SOURCE_SCHEMA},{TRANSACTION_SCHEMA},{{"type":"string","optional":false,"field":"op"}},{{"type":"int64","optional":true,"field":"ts_ms"}},{{"type":"int64","optional":true,"field":"ts_us"}},{{"type":"int64","optional":true,"field":"ts_ns"}}],"optional":false,"name":"eav.public.{table}.Envelope","version":1}}"#
    )
}

fn attributes_schema() -> String {
    envelope_schema("attributes", ATTRIBUTES_COLUMNS)
}

fn entities_schema() -> String {
    envelope_schema("entities", ENTITIES_COLUMNS)
}

fn values_schema(decimal: &str, timestamp: &str) -> String {
    envelope_schema("entity_values", &value_columns(decimal, timestamp))
}

/// The `entity_values` schema of the reference store: `numeric(38, 9)` precise, `timestamptz`.
fn reference_values_schema() -> String {
    values_schema(DECIMAL_PRECISE_9, TIME_ZONED)
}

/// What JsonConverter writes with `schemas.enable=true`.
fn with_schema(schema: &str, payload: &str) -> String {
    format!(r#"{{"schema":{schema},"payload":{payload}}}"#)
}

// ---------------------------------------------------------------------------------------------
// Payloads. Streaming changes are of transaction 771 (sequence ["22910216","22910504"]), snapshot
// reads of the snapshot at LSN 22905000.

const ATTRIBUTE_CREATE: &str = r#"{"before":null,
"after":{"attribute_id":17,"tenant_id":42,"entity_type":"customer","name":"loyalty_tier","data_type":"text","is_hot":true,"created_at":"2024-03-01T10:00:00.123456Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"attributes","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":1,"data_collection_order":1},
"op":"c","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

const ATTRIBUTE_UPDATE: &str = r#"{"before":{"attribute_id":18,"tenant_id":42,"entity_type":"customer","name":"balance","data_type":"int","is_hot":false,"created_at":"2024-02-01T08:00:00Z"},
"after":{"attribute_id":18,"tenant_id":42,"entity_type":"customer","name":"balance","data_type":"decimal","is_hot":false,"created_at":"2024-02-01T08:00:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"attributes","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":1,"data_collection_order":1},
"op":"u","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

const ATTRIBUTE_DELETE: &str = r#"{"before":{"attribute_id":19,"tenant_id":42,"entity_type":"customer","name":"fax","data_type":"text","is_hot":false,"created_at":"2023-01-01T00:00:00Z"},
"after":null,
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"attributes","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":1,"data_collection_order":1},
"op":"d","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

const ATTRIBUTE_READ: &str = r#"{"before":null,
"after":{"attribute_id":20,"tenant_id":42,"entity_type":"order","name":"placed_at","data_type":"timestamp","is_hot":true,"created_at":"2023-06-01T12:00:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287100000,"snapshot":"first","db":"eavstore","sequence":"[null,\"22905000\"]","ts_us":1709287100000000,"ts_ns":1709287100000000000,"schema":"public","table":"attributes","txId":768,"lsn":22905000,"xmin":null},
"transaction":null,
"op":"r","ts_ms":1709287100050,"ts_us":1709287100050000,"ts_ns":1709287100050000000}"#;

const ENTITY_CREATE: &str = r#"{"before":null,
"after":{"entity_id":1001,"tenant_id":42,"entity_type":"customer","hot_attributes":"{\"score\": 42, \"loyalty_tier\": \"gold\"}","version":1,"is_deleted":false,"created_at":"2024-03-01T10:00:00.123456Z","updated_at":"2024-03-01T10:00:00.123456Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entities","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":1,"data_collection_order":1},
"op":"c","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

const ENTITY_UPDATE: &str = r#"{"before":{"entity_id":1001,"tenant_id":42,"entity_type":"customer","hot_attributes":"{\"score\": 42, \"loyalty_tier\": \"gold\"}","version":1,"is_deleted":false,"created_at":"2024-03-01T10:00:00.123456Z","updated_at":"2024-03-01T10:00:00.123456Z"},
"after":{"entity_id":1001,"tenant_id":42,"entity_type":"customer","hot_attributes":"{\"score\": 43, \"loyalty_tier\": \"platinum\"}","version":2,"is_deleted":false,"created_at":"2024-03-01T10:00:00.123456Z","updated_at":"2024-03-01T10:05:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entities","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":2,"data_collection_order":1},
"op":"u","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

/// An update from a table with REPLICA IDENTITY DEFAULT: no before image.
const ENTITY_UPDATE_NO_BEFORE: &str = r#"{"before":null,
"after":{"entity_id":1001,"tenant_id":42,"entity_type":"customer","hot_attributes":"{\"score\": 44}","version":3,"is_deleted":false,"created_at":"2024-03-01T10:00:00.123456Z","updated_at":"2024-03-01T10:06:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entities","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":3,"data_collection_order":2},
"op":"u","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

const ENTITY_DELETE: &str = r#"{"before":{"entity_id":1001,"tenant_id":42,"entity_type":"customer","hot_attributes":"{\"score\": 44}","version":3,"is_deleted":false,"created_at":"2024-03-01T10:00:00.123456Z","updated_at":"2024-03-01T10:06:00Z"},
"after":null,
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entities","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":4,"data_collection_order":3},
"op":"d","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

const ENTITY_READ: &str = r#"{"before":null,
"after":{"entity_id":2002,"tenant_id":42,"entity_type":"order","hot_attributes":"{}","version":7,"is_deleted":true,"created_at":"2023-06-01T12:00:00Z","updated_at":"2023-07-01T12:00:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287100000,"snapshot":"true","db":"eavstore","sequence":"[null,\"22905000\"]","ts_us":1709287100000000,"ts_ns":1709287100000000000,"schema":"public","table":"entities","txId":768,"lsn":22905000,"xmin":null},
"transaction":null,
"op":"r","ts_ms":1709287100050,"ts_us":1709287100050000,"ts_ns":1709287100050000000}"#;

const VALUE_CREATE: &str = r#"{"before":null,
"after":{"entity_id":1001,"attribute_id":17,"tenant_id":42,"value_text":"Ada Lovelace","value_int":null,"value_decimal":null,"value_bool":null,"value_timestamp":null,"value_json":null,"updated_at":"2024-03-01T10:00:00.123456Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entity_values","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":2,"data_collection_order":1},
"op":"c","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

/// value_decimal 12.34 → 150.5 (`numeric(38, 9)`, precise: base64 of the unscaled value).
const VALUE_UPDATE: &str = r#"{"before":{"entity_id":1001,"attribute_id":18,"tenant_id":42,"value_text":null,"value_int":null,"value_decimal":"At+FdQA=","value_bool":null,"value_timestamp":null,"value_json":null,"updated_at":"2024-03-01T10:00:00.123456Z"},
"after":{"entity_id":1001,"attribute_id":18,"tenant_id":42,"value_text":null,"value_int":null,"value_decimal":"Iwp/wQA=","value_bool":null,"value_timestamp":null,"value_json":null,"updated_at":"2024-03-01T10:05:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entity_values","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":3,"data_collection_order":2},
"op":"u","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

const VALUE_DELETE: &str = r#"{"before":{"entity_id":1001,"attribute_id":21,"tenant_id":42,"value_text":null,"value_int":null,"value_decimal":null,"value_bool":true,"value_timestamp":null,"value_json":null,"updated_at":"2024-03-01T10:00:00.123456Z"},
"after":null,
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entity_values","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":4,"data_collection_order":3},
"op":"d","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

const VALUE_READ: &str = r#"{"before":null,
"after":{"entity_id":2002,"attribute_id":20,"tenant_id":42,"value_text":null,"value_int":null,"value_decimal":null,"value_bool":null,"value_timestamp":"2024-03-01T10:00:00.123456Z","value_json":null,"updated_at":"2023-07-01T12:00:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287100000,"snapshot":"last","db":"eavstore","sequence":"[null,\"22905000\"]","ts_us":1709287100000000,"ts_ns":1709287100000000000,"schema":"public","table":"entity_values","txId":768,"lsn":22905000,"xmin":null},
"transaction":null,
"op":"r","ts_ms":1709287100050,"ts_us":1709287100050000,"ts_ns":1709287100050000000}"#;

/// An entity_values change with `DECIMAL` and `TIMESTAMP` standing for the raw JSON of
/// `value_decimal` and `value_timestamp` (see [`numbers`]).
const VALUE_NUMBERS: &str = r#"{"before":null,
"after":{"entity_id":1001,"attribute_id":22,"tenant_id":42,"value_text":null,"value_int":null,"value_decimal":DECIMAL,"value_bool":null,"value_timestamp":TIMESTAMP,"value_json":null,"updated_at":"2024-03-01T10:00:00.123456Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entity_values","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":2,"data_collection_order":1},
"op":"c","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

/// TOAST: an update that did not touch the large `hot_attributes`, so Debezium could not read it.
const ENTITY_UPDATE_TOASTED: &str = r#"{"before":null,
"after":{"entity_id":1001,"tenant_id":42,"entity_type":"customer","hot_attributes":"__debezium_unavailable_value","version":4,"is_deleted":false,"created_at":"2024-03-01T10:00:00.123456Z","updated_at":"2024-03-01T10:07:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entities","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":1,"data_collection_order":1},
"op":"u","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

/// TOAST in entity_values: before and after both carry the placeholder for the large columns.
const VALUE_UPDATE_TOASTED: &str = r#"{"before":{"entity_id":1001,"attribute_id":23,"tenant_id":42,"value_text":"__debezium_unavailable_value","value_int":null,"value_decimal":null,"value_bool":null,"value_timestamp":null,"value_json":"__debezium_unavailable_value","updated_at":"2024-03-01T10:00:00.123456Z"},
"after":{"entity_id":1001,"attribute_id":23,"tenant_id":42,"value_text":"__debezium_unavailable_value","value_int":null,"value_decimal":null,"value_bool":null,"value_timestamp":null,"value_json":"__debezium_unavailable_value","updated_at":"2024-03-01T10:07:00Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entity_values","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":2,"data_collection_order":1},
"op":"u","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

/// A value_json change (jsonb arrives as JSON text inside a string).
const VALUE_JSON_CREATE: &str = r#"{"before":null,
"after":{"entity_id":1001,"attribute_id":24,"tenant_id":42,"value_text":null,"value_int":null,"value_decimal":null,"value_bool":null,"value_timestamp":null,"value_json":"{\"tags\": [\"a\", \"b\"], \"n\": 1}","updated_at":"2024-03-01T10:00:00.123456Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"entity_values","txId":771,"lsn":22910504,"xmin":null},
"transaction":{"id":"771:22910504","total_order":2,"data_collection_order":1},
"op":"c","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

/// An int value with `SEQUENCE`, `SNAPSHOT` and `TS` standing for `source.sequence`,
/// `source.snapshot` and the source's `ts_ms`/`ts_us` pair (see [`source_of`]).
const VALUE_SOURCE: &str = r#"{"before":null,
"after":{"entity_id":1001,"attribute_id":25,"tenant_id":42,"value_text":null,"value_int":-7,"value_decimal":null,"value_bool":null,"value_timestamp":null,"value_json":null,"updated_at":"2024-03-01T10:00:00.123456Z"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav",TS,"snapshot":SNAPSHOT,"db":"eavstore",SEQUENCE"schema":"public","table":"entity_values","txId":771,"lsn":22910504,"xmin":null},
"transaction":null,
"op":"OP","ts_ms":1709287200456}"#;

/// TRUNCATE of entity_values (no images).
const TRUNCATE: &str = r#"{"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287300000,"snapshot":"false","db":"eavstore","sequence":"[\"22990000\",\"22990312\"]","ts_us":1709287300000123,"ts_ns":1709287300000123000,"schema":"public","table":"entity_values","txId":790,"lsn":22990312,"xmin":null},
"op":"t","ts_ms":1709287300100,"ts_us":1709287300100000,"ts_ns":1709287300100000000}"#;

/// `pg_logical_emit_message(true, 'eavlake', 'repair')`.
const MESSAGE: &str = r#"{"op":"m","ts_ms":1709287300100,"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287300000,"snapshot":"false","db":"eavstore","sequence":"[\"22990000\",\"22990400\"]","ts_us":1709287300000000,"ts_ns":1709287300000000000,"schema":"","table":"","txId":791,"lsn":22990400,"xmin":null},"message":{"prefix":"eavlake","content":"cmVwYWly"}}"#;

const MESSAGE_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"prefix"},{"type":"bytes","optional":true,"field":"content"}],"optional":false,"name":"io.debezium.connector.postgresql.Message","version":1,"field":"message"}],"optional":false,"name":"io.debezium.connector.postgresql.MessageValue","version":1}"#;

const HEARTBEAT: &str = r#"{"ts_ms":1709287200999}"#;
const HEARTBEAT_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"int64","optional":false,"field":"ts_ms"}],"optional":false,"name":"io.debezium.connector.common.Heartbeat","version":1}"#;

const TX_BEGIN: &str =
    r#"{"status":"BEGIN","id":"771:22910216","event_count":null,"data_collections":null,"ts_ms":1709287200123}"#;
const TX_END: &str = r#"{"status":"END","id":"771:22910216","event_count":3,"data_collections":[{"data_collection":"public.entities","event_count":1},{"data_collection":"public.entity_values","event_count":2}],"ts_ms":1709287200123}"#;
const TX_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"status"},{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":true,"field":"event_count"},{"type":"array","items":{"type":"struct","fields":[{"type":"string","optional":false,"field":"data_collection"},{"type":"int64","optional":false,"field":"event_count"}],"optional":false},"optional":true,"field":"data_collections"},{"type":"int64","optional":false,"field":"ts_ms"}],"optional":false,"name":"io.debezium.connector.common.TransactionMetadataValue","version":1}"#;

/// Debezium's signal table, written by `eavlake reconcile --repair`.
const SIGNAL_CREATE: &str = r#"{"before":null,
"after":{"id":"repair-42-0001","type":"execute-snapshot","data":"{\"data-collections\": [\"public.entities\"], \"type\": \"incremental\"}"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"debezium_signal","txId":771,"lsn":22910504,"xmin":null},
"transaction":null,
"op":"c","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

/// Another table whose `name` column is a number: it does not fit eavlake's row images.
const OTHER_TABLE_MISFIT: &str = r#"{"before":null,
"after":{"id":3,"name":500,"entity_id":"not-a-number"},
"source":{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1709287200123,"snapshot":"false","db":"eavstore","sequence":"[\"22910216\",\"22910504\"]","ts_us":1709287200123456,"ts_ns":1709287200123456000,"schema":"public","table":"tenant_quota","txId":771,"lsn":22910504,"xmin":null},
"transaction":null,
"op":"c","ts_ms":1709287200456,"ts_us":1709287200456789,"ts_ns":1709287200456789000}"#;

// ---------------------------------------------------------------------------------------------
// Helpers.

fn decoder() -> JsonDecoder {
    JsonDecoder::new(DecodeOptions::default(), TableNames::default())
}

fn decoder_with(decimal_mode: DecimalMode, time_mode: TimeMode, decimal_scale: u32) -> JsonDecoder {
    JsonDecoder::new(DecodeOptions { decimal_mode, time_mode, decimal_scale }, TableNames::default())
}

fn decode(record: &str) -> Result<Event, DecodeError> {
    decoder().decode(Some(record.as_bytes()))
}

/// Source of the streaming fixtures: transaction 771, change LSN 22910504.
fn streaming() -> SourceMeta {
    SourceMeta {
        position: SourcePosition { commit_lsn: Lsn(22910216), lsn: Lsn(22910504) },
        tx_id: Some(771),
        commit_time_us: Some(1_709_287_200_123_456),
        snapshot: false,
    }
}

/// Source of the snapshot fixtures: snapshot LSN 22905000.
fn snapshot() -> SourceMeta {
    SourceMeta {
        position: SourcePosition { commit_lsn: Lsn(22905000), lsn: Lsn(22905000) },
        tx_id: Some(768),
        commit_time_us: Some(1_709_287_100_000_000),
        snapshot: true,
    }
}

/// The fixtures' `transaction.id` is "771:22910504", and their source block has a txId: it is
/// not kept (see `Event::Change`).
fn tx() -> Option<String> {
    None
}

fn attribute(id: i64, entity_type: &str, name: &str, data_type: DataType, is_hot: bool) -> AttributeRow {
    AttributeRow {
        attribute_id: id,
        tenant_id: 42,
        entity_type: entity_type.into(),
        name: name.into(),
        data_type,
        is_hot,
    }
}

fn entity(id: i64, entity_type: &str, hot: Field<String>, is_deleted: bool) -> EntityRow {
    EntityRow {
        entity_id: id,
        tenant_id: Some(42),
        entity_type: Some(entity_type.into()),
        hot_attributes: hot,
        is_deleted,
    }
}

fn hot(json: &str) -> Field<String> {
    Field::Value(json.to_string())
}

/// An entity_values row of tenant 42 with every typed column null.
fn value(entity_id: i64, attribute_id: i64) -> ValueRow {
    ValueRow {
        entity_id,
        attribute_id,
        tenant_id: Some(42),
        value_text: Field::Null,
        value_int: None,
        value_decimal: None,
        value_bool: None,
        value_timestamp: None,
        value_json: Field::Null,
    }
}

fn dec(unscaled: i128, scale: u32) -> Decimal {
    Decimal { unscaled, scale }
}

/// Asserts that `record` decodes to `expected` both bare and wrapped in `schema`.
fn assert_both_forms(record: &str, schema: &str, expected: &Event) {
    assert_eq!(&decode(record).unwrap(), expected, "without schema");
    assert_eq!(&decode(&with_schema(schema, record)).unwrap(), expected, "with schema");
}

/// VALUE_NUMBERS with the given raw JSON for value_decimal and value_timestamp.
fn numbers(decimal: &str, timestamp: &str) -> String {
    VALUE_NUMBERS.replace("DECIMAL", decimal).replace("TIMESTAMP", timestamp)
}

/// The event VALUE_NUMBERS decodes to.
fn numbers_event(value_decimal: Option<Decimal>, value_timestamp: Option<i64>) -> Event {
    Event::Change {
        op: Op::Create,
        source: streaming(),
        tx: tx(),
        row: RowChange::Value {
            before: None,
            after: Some(ValueRow { value_decimal, value_timestamp, ..value(1001, 22) }),
        },
    }
}

/// VALUE_SOURCE with the given `source` pieces and op.
fn source_record(op: &str, sequence: Option<&str>, snapshot: &str, ts: &str) -> String {
    let sequence = match sequence {
        Some(s) => format!(r#""sequence":{s},"#),
        None => String::new(),
    };
    VALUE_SOURCE.replace("SEQUENCE", &sequence).replace("SNAPSHOT", snapshot).replace("TS", ts).replace("OP", op)
}

/// The `source` block VALUE_SOURCE decodes to.
fn source_of(record: &str) -> SourceMeta {
    match decode(record).unwrap() {
        Event::Change { source, .. } => source,
        other => panic!("not a change: {other:?}"),
    }
}

const TS_BOTH: &str = r#""ts_ms":1709287200123,"ts_us":1709287200123456"#;

/// 2024-03-01T10:00:00Z in µs.
const BASE_US: i64 = 1_709_287_200_000_000;

// ---------------------------------------------------------------------------------------------
// Row changes of the three tables, with and without embedded schemas.

/// Without `source.txId`, `transaction.id` is what tells the transaction: kept.
#[test]
fn transaction_id_is_kept_without_a_tx_id() {
    let record = ATTRIBUTE_CREATE.replace(r#""txId":771"#, r#""txId":null"#);
    assert_ne!(record, ATTRIBUTE_CREATE);
    let Ok(Event::Change { source, tx, .. }) = decode(&record) else { panic!("{:?}", decode(&record)) };
    assert_eq!((source.tx_id, tx.as_deref()), (None, Some("771:22910504")));
}

#[test]
fn attribute_create_decodes() {
    let expected = Event::Change {
        op: Op::Create,
        source: streaming(),
        tx: tx(),
        row: RowChange::Attribute {
            before: None,
            after: Some(attribute(17, "customer", "loyalty_tier", DataType::Text, true)),
        },
    };
    assert_both_forms(ATTRIBUTE_CREATE, &attributes_schema(), &expected);
}

#[test]
fn attribute_update_decodes_both_images() {
    let expected = Event::Change {
        op: Op::Update,
        source: streaming(),
        tx: tx(),
        row: RowChange::Attribute {
            before: Some(attribute(18, "customer", "balance", DataType::Int, false)),
            after: Some(attribute(18, "customer", "balance", DataType::Decimal, false)),
        },
    };
    assert_both_forms(ATTRIBUTE_UPDATE, &attributes_schema(), &expected);
}

#[test]
fn attribute_delete_decodes_the_before_image() {
    let expected = Event::Change {
        op: Op::Delete,
        source: streaming(),
        tx: tx(),
        row: RowChange::Attribute {
            before: Some(attribute(19, "customer", "fax", DataType::Text, false)),
            after: None,
        },
    };
    assert_both_forms(ATTRIBUTE_DELETE, &attributes_schema(), &expected);
}

#[test]
fn attribute_snapshot_read_decodes() {
    let expected = Event::Change {
        op: Op::Read,
        source: snapshot(),
        tx: None,
        row: RowChange::Attribute {
            before: None,
            after: Some(attribute(20, "order", "placed_at", DataType::Timestamp, true)),
        },
    };
    assert_both_forms(ATTRIBUTE_READ, &attributes_schema(), &expected);
}

#[test]
fn entity_create_keeps_hot_attributes_as_json_text() {
    let expected = Event::Change {
        op: Op::Create,
        source: streaming(),
        tx: tx(),
        row: RowChange::Entity {
            before: None,
            after: Some(entity(1001, "customer", hot(r#"{"score": 42, "loyalty_tier": "gold"}"#), false)),
        },
    };
    assert_both_forms(ENTITY_CREATE, &entities_schema(), &expected);
}

#[test]
fn entity_update_decodes_both_images() {
    let expected = Event::Change {
        op: Op::Update,
        source: streaming(),
        tx: tx(),
        row: RowChange::Entity {
            before: Some(entity(1001, "customer", hot(r#"{"score": 42, "loyalty_tier": "gold"}"#), false)),
            after: Some(entity(1001, "customer", hot(r#"{"score": 43, "loyalty_tier": "platinum"}"#), false)),
        },
    };
    assert_both_forms(ENTITY_UPDATE, &entities_schema(), &expected);
}

/// REPLICA IDENTITY DEFAULT: an update without a before image is still a valid change.
#[test]
fn entity_update_without_before_image_has_before_none() {
    let expected = Event::Change {
        op: Op::Update,
        source: streaming(),
        tx: tx(),
        row: RowChange::Entity { before: None, after: Some(entity(1001, "customer", hot(r#"{"score": 44}"#), false)) },
    };
    assert_both_forms(ENTITY_UPDATE_NO_BEFORE, &entities_schema(), &expected);
}

#[test]
fn entity_delete_decodes_the_full_before_image() {
    let expected = Event::Change {
        op: Op::Delete,
        source: streaming(),
        tx: tx(),
        row: RowChange::Entity { before: Some(entity(1001, "customer", hot(r#"{"score": 44}"#), false)), after: None },
    };
    assert_both_forms(ENTITY_DELETE, &entities_schema(), &expected);
}

#[test]
fn entity_snapshot_read_keeps_is_deleted() {
    let expected = Event::Change {
        op: Op::Read,
        source: snapshot(),
        tx: None,
        row: RowChange::Entity { before: None, after: Some(entity(2002, "order", hot("{}"), true)) },
    };
    assert_both_forms(ENTITY_READ, &entities_schema(), &expected);
}

#[test]
fn value_create_decodes_value_text() {
    let expected = Event::Change {
        op: Op::Create,
        source: streaming(),
        tx: tx(),
        row: RowChange::Value {
            before: None,
            after: Some(ValueRow { value_text: Field::Value("Ada Lovelace".into()), ..value(1001, 17) }),
        },
    };
    assert_both_forms(VALUE_CREATE, &reference_values_schema(), &expected);
}

#[test]
fn value_update_decodes_precise_decimals_of_both_images() {
    let expected = Event::Change {
        op: Op::Update,
        source: streaming(),
        tx: tx(),
        row: RowChange::Value {
            before: Some(ValueRow { value_decimal: Some(dec(12_340_000_000, 9)), ..value(1001, 18) }),
            after: Some(ValueRow { value_decimal: Some(dec(150_500_000_000, 9)), ..value(1001, 18) }),
        },
    };
    assert_both_forms(VALUE_UPDATE, &reference_values_schema(), &expected);
}

#[test]
fn value_delete_decodes_the_full_before_image() {
    let expected = Event::Change {
        op: Op::Delete,
        source: streaming(),
        tx: tx(),
        row: RowChange::Value { before: Some(ValueRow { value_bool: Some(true), ..value(1001, 21) }), after: None },
    };
    assert_both_forms(VALUE_DELETE, &reference_values_schema(), &expected);
}

#[test]
fn value_snapshot_read_decodes_a_zoned_timestamp() {
    let expected = Event::Change {
        op: Op::Read,
        source: snapshot(),
        tx: None,
        row: RowChange::Value {
            before: None,
            after: Some(ValueRow { value_timestamp: Some(BASE_US + 123_456), ..value(2002, 20) }),
        },
    };
    assert_both_forms(VALUE_READ, &reference_values_schema(), &expected);
}

#[test]
fn value_json_arrives_as_its_json_text() {
    let expected = Event::Change {
        op: Op::Create,
        source: streaming(),
        tx: tx(),
        row: RowChange::Value {
            before: None,
            after: Some(ValueRow {
                value_json: Field::Value(r#"{"tags": ["a", "b"], "n": 1}"#.into()),
                ..value(1001, 24)
            }),
        },
    };
    assert_both_forms(VALUE_JSON_CREATE, &reference_values_schema(), &expected);
}

/// Table names come from `TableNames`, not from the fixtures' defaults.
#[test]
fn configured_table_names_classify_changes() {
    let tables = TableNames {
        attributes: "eav_attributes".into(),
        entities: "eav_entities".into(),
        entity_values: "eav_values".into(),
    };
    let mut d = JsonDecoder::new(DecodeOptions::default(), tables);
    let renamed = VALUE_CREATE.replace(r#""table":"entity_values""#, r#""table":"eav_values""#);
    let expected = Event::Change {
        op: Op::Create,
        source: streaming(),
        tx: tx(),
        row: RowChange::Value {
            before: None,
            after: Some(ValueRow { value_text: Field::Value("Ada Lovelace".into()), ..value(1001, 17) }),
        },
    };
    assert_eq!(d.decode(Some(renamed.as_bytes())), Ok(expected));
    assert_eq!(d.decode(Some(VALUE_CREATE.as_bytes())), Ok(Event::OtherTable { table: "entity_values".into() }));
}

// ---------------------------------------------------------------------------------------------
// Records that are not row changes.

#[test]
fn truncate_gives_truncate_of_its_table() {
    let expected = Event::Truncate {
        table: Table::EntityValues,
        source: SourceMeta {
            position: SourcePosition { commit_lsn: Lsn(22990000), lsn: Lsn(22990312) },
            tx_id: Some(790),
            commit_time_us: Some(1_709_287_300_000_123),
            snapshot: false,
        },
    };
    assert_both_forms(TRUNCATE, &reference_values_schema(), &expected);
    let entities = TRUNCATE.replace(r#""table":"entity_values""#, r#""table":"entities""#);
    assert!(matches!(decode(&entities), Ok(Event::Truncate { table: Table::Entities, .. })));
}

#[test]
fn logical_decoding_message_gives_message() {
    assert_eq!(decode(MESSAGE), Ok(Event::Message));
    assert_eq!(decode(&with_schema(MESSAGE_SCHEMA, MESSAGE)), Ok(Event::Message));
}

#[test]
fn tombstones_in_every_form() {
    let mut d = decoder();
    assert_eq!(d.decode(None), Ok(Event::Tombstone));
    assert_eq!(d.decode(Some(b"null")), Ok(Event::Tombstone));
    assert_eq!(d.decode(Some(b"")), Ok(Event::Tombstone));
    assert_eq!(d.decode(Some(b" null\n")), Ok(Event::Tombstone));
    // An embedded schema with a null payload.
    assert_eq!(d.decode(Some(with_schema(&entities_schema(), "null").as_bytes())), Ok(Event::Tombstone));
}

#[test]
fn heartbeat_with_and_without_schema() {
    assert_eq!(decode(HEARTBEAT), Ok(Event::Heartbeat));
    assert_eq!(decode(&with_schema(HEARTBEAT_SCHEMA, HEARTBEAT)), Ok(Event::Heartbeat));
}

#[test]
fn transaction_metadata_begin_and_end() {
    let begin = Event::Transaction { begin: true };
    let end = Event::Transaction { begin: false };
    assert_eq!(decode(TX_BEGIN), Ok(begin.clone()));
    assert_eq!(decode(TX_END), Ok(end.clone()));
    assert_eq!(decode(&with_schema(TX_SCHEMA, TX_BEGIN)), Ok(begin));
    assert_eq!(decode(&with_schema(TX_SCHEMA, TX_END)), Ok(end));
}

#[test]
fn transaction_metadata_with_unknown_status_names_the_field() {
    let err = decode(&TX_END.replace(r#""END""#, r#""COMMIT""#)).unwrap_err();
    assert_eq!(err, DecodeError::field("status", "unknown transaction status `COMMIT`"));
    assert_eq!(err.reason(), "bad_field");
    assert_eq!(err.to_string(), "field `status`: unknown transaction status `COMMIT`");
}

#[test]
fn signal_table_change_is_other_table() {
    let expected = Event::OtherTable { table: "debezium_signal".into() };
    assert_eq!(decode(SIGNAL_CREATE), Ok(expected.clone()));
    let schema = envelope_schema(
        "debezium_signal",
        r#"[{"type":"string","optional":false,"field":"id"},{"type":"string","optional":false,"field":"type"},{"type":"string","optional":true,"field":"data"}]"#,
    );
    assert_eq!(decode(&with_schema(&schema, SIGNAL_CREATE)), Ok(expected));
}

/// Columns of other tables need not fit eavlake's row images.
#[test]
fn other_table_with_misfit_columns_is_other_table() {
    let expected = Event::OtherTable { table: "tenant_quota".into() };
    assert_eq!(decode(OTHER_TABLE_MISFIT), Ok(expected.clone()));
    let schema = envelope_schema(
        "tenant_quota",
        r#"[{"type":"int32","optional":false,"field":"id"},{"type":"int32","optional":false,"field":"name"},{"type":"string","optional":true,"field":"entity_id"}]"#,
    );
    assert_eq!(decode(&with_schema(&schema, OTHER_TABLE_MISFIT)), Ok(expected));
}

#[test]
fn truncate_of_another_table_is_other_table() {
    let other = TRUNCATE.replace(r#""table":"entity_values""#, r#""table":"debezium_signal""#);
    assert_eq!(decode(&other), Ok(Event::OtherTable { table: "debezium_signal".into() }));
}

// ---------------------------------------------------------------------------------------------
// TOAST placeholder.

#[test]
fn unavailable_hot_attributes_is_field_unavailable() {
    let expected = Event::Change {
        op: Op::Update,
        source: streaming(),
        tx: tx(),
        row: RowChange::Entity { before: None, after: Some(entity(1001, "customer", Field::Unavailable, false)) },
    };
    assert_both_forms(ENTITY_UPDATE_TOASTED, &entities_schema(), &expected);
}

#[test]
fn unavailable_value_text_and_value_json_are_field_unavailable() {
    let toasted = ValueRow { value_text: Field::Unavailable, value_json: Field::Unavailable, ..value(1001, 23) };
    let expected = Event::Change {
        op: Op::Update,
        source: streaming(),
        tx: tx(),
        row: RowChange::Value { before: Some(toasted.clone()), after: Some(toasted) },
    };
    assert_both_forms(VALUE_UPDATE_TOASTED, &reference_values_schema(), &expected);
}

// ---------------------------------------------------------------------------------------------
// Decimals in every decimal.handling.mode.

/// Without a schema, a precise decimal's scale is `DecodeOptions::decimal_scale`.
#[test]
fn precise_decimal_without_schema_takes_the_configured_scale() {
    let mut d = decoder_with(DecimalMode::Precise, TimeMode::Adaptive, 9);
    assert_eq!(
        d.decode(Some(numbers(r#""At+FdQA=""#, "null").as_bytes())),
        Ok(numbers_event(Some(dec(12_340_000_000, 9)), None))
    );
    assert_eq!(
        d.decode(Some(numbers(r#""/SB6iwA=""#, "null").as_bytes())),
        Ok(numbers_event(Some(dec(-12_340_000_000, 9)), None))
    );
    assert_eq!(d.decode(Some(numbers(r#""AA==""#, "null").as_bytes())), Ok(numbers_event(Some(dec(0, 9)), None)));
    let mut d2 = decoder_with(DecimalMode::Precise, TimeMode::Adaptive, 2);
    assert_eq!(d2.decode(Some(numbers(r#""BNI=""#, "null").as_bytes())), Ok(numbers_event(Some(dec(1234, 2)), None)));
    assert_eq!(d2.decode(Some(numbers(r#""+y4=""#, "null").as_bytes())), Ok(numbers_event(Some(dec(-1234, 2)), None)));
}

/// The schema's `scale` parameter wins over the configured one.
#[test]
fn precise_decimal_with_schema_takes_the_schema_scale() {
    let mut d = decoder_with(DecimalMode::Precise, TimeMode::Adaptive, 9);
    let schema = values_schema(DECIMAL_PRECISE_2, TIME_ZONED);
    assert_eq!(
        d.decode(Some(with_schema(&schema, &numbers(r#""BNI=""#, "null")).as_bytes())),
        Ok(numbers_event(Some(dec(1234, 2)), None))
    );
    assert_eq!(
        d.decode(Some(with_schema(&schema, &numbers(r#""+y4=""#, "null")).as_bytes())),
        Ok(numbers_event(Some(dec(-1234, 2)), None))
    );
}

#[test]
fn variable_scale_decimal_with_and_without_schema() {
    let schema = values_schema(DECIMAL_VARIABLE, TIME_ZONED);
    for (raw, expected) in [
        (r#"{"scale":2,"value":"BNI="}"#, dec(1234, 2)),
        (r#"{"scale":2,"value":"+y4="}"#, dec(-1234, 2)),
        (r#"{"scale":0,"value":"BQ=="}"#, dec(5, 0)),
    ] {
        let record = numbers(raw, "null");
        assert_eq!(decode(&record), Ok(numbers_event(Some(expected), None)), "{raw} without schema");
        assert_eq!(
            decode(&with_schema(&schema, &record)),
            Ok(numbers_event(Some(expected), None)),
            "{raw} with schema"
        );
    }
}

/// With a VariableScaleDecimal schema, a bare string is not a decimal.
#[test]
fn variable_scale_schema_rejects_a_string_value() {
    let schema = values_schema(DECIMAL_VARIABLE, TIME_ZONED);
    let err = decode(&with_schema(&schema, &numbers(r#""BNI=""#, "null"))).unwrap_err();
    assert_eq!(err, DecodeError::field("value_decimal", "VariableScaleDecimal must be an object"));
    assert_eq!(err.to_string(), "field `value_decimal`: VariableScaleDecimal must be an object");
}

#[test]
fn string_mode_decimal_keeps_its_written_scale() {
    let mut d = decoder_with(DecimalMode::String, TimeMode::Adaptive, 9);
    let schema = values_schema(DECIMAL_STRING, TIME_ZONED);
    for (raw, expected) in
        [(r#""12.340000000""#, dec(12_340_000_000, 9)), (r#""-0.5""#, dec(-5, 1)), (r#""42""#, dec(42, 0))]
    {
        let record = numbers(raw, "null");
        assert_eq!(d.decode(Some(record.as_bytes())), Ok(numbers_event(Some(expected), None)), "{raw} bare");
        // With the schema, a default (precise) decoder reads it as text too.
        assert_eq!(
            decode(&with_schema(&schema, &record)),
            Ok(numbers_event(Some(expected), None)),
            "{raw} with schema"
        );
    }
}

#[test]
fn double_mode_decimal_reads_the_written_number() {
    let mut d = decoder_with(DecimalMode::Double, TimeMode::Adaptive, 9);
    let schema = values_schema(DECIMAL_DOUBLE, TIME_ZONED);
    for (raw, expected) in [
        ("12.34", dec(1234, 2)),
        ("-12.34", dec(-1234, 2)),
        ("1.0E10", dec(10_000_000_000, 0)),
        ("2.5E-3", dec(25, 4)),
        ("0.0", dec(0, 1)),
    ] {
        let record = numbers(raw, "null");
        assert_eq!(d.decode(Some(record.as_bytes())), Ok(numbers_event(Some(expected), None)), "{raw} bare");
        assert_eq!(
            decode(&with_schema(&schema, &record)),
            Ok(numbers_event(Some(expected), None)),
            "{raw} with schema"
        );
    }
}

/// Double mode writes NaN and infinities as strings: no decimal column holds them.
#[test]
fn double_mode_nan_is_out_of_range() {
    let mut d = decoder_with(DecimalMode::Double, TimeMode::Adaptive, 9);
    for (text, shown) in [("NaN", "`NaN`"), ("Infinity", "`Infinity`"), ("-Infinity", "`-Infinity`")] {
        let err = d.decode(Some(numbers(&format!("\"{text}\""), "null").as_bytes())).unwrap_err();
        assert_eq!(
            err,
            DecodeError::OutOfRange {
                field: "value_decimal".into(),
                message: format!("{shown} is not a finite number (attribute 22)")
            }
        );
        assert_eq!(err.reason(), "value_out_of_range");
    }
}

#[test]
fn decimal_schema_without_scale_is_a_bad_schema() {
    let schema = values_schema(DECIMAL_NO_SCALE, TIME_ZONED);
    let err = decode(&with_schema(&schema, &numbers(r#""BNI=""#, "null"))).unwrap_err();
    assert_eq!(err, DecodeError::field("schema", "Decimal without a scale parameter"));
    assert_eq!(err.to_string(), "field `schema`: Decimal without a scale parameter");
}

#[test]
fn schema_cache_reuses_one_entry_per_schema_text() {
    let mut d = decoder();
    let schema = values_schema(DECIMAL_PRECISE_2, TIME_ZONED);
    let record = with_schema(&schema, &numbers(r#""BNI=""#, "null"));
    for _ in 0..2 {
        assert_eq!(d.decode(Some(record.as_bytes())), Ok(numbers_event(Some(dec(1234, 2)), None)));
    }
    assert_eq!(d.schema_cache.len(), 1);
}

/// Two schemas in one decoder: each record is read with its own schema's scale.
#[test]
fn schema_cache_keeps_each_schema_its_own_scale() {
    let mut d = decoder();
    let nine = with_schema(&values_schema(DECIMAL_PRECISE_9, TIME_ZONED), &numbers(r#""BNI=""#, "null"));
    let two = with_schema(&values_schema(DECIMAL_PRECISE_2, TIME_ZONED), &numbers(r#""BNI=""#, "null"));
    for _ in 0..2 {
        assert_eq!(d.decode(Some(nine.as_bytes())), Ok(numbers_event(Some(dec(1234, 9)), None)));
        assert_eq!(d.decode(Some(two.as_bytes())), Ok(numbers_event(Some(dec(1234, 2)), None)));
    }
    assert_eq!(d.schema_cache.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Times in every time.precision.mode.

#[test]
fn zoned_timestamps_with_any_fraction_and_offset() {
    for (raw, expected) in [
        (r#""2024-03-01T10:00:00Z""#, BASE_US),
        (r#""2024-03-01T10:00:00.1Z""#, BASE_US + 100_000),
        (r#""2024-03-01T10:00:00.123Z""#, BASE_US + 123_000),
        (r#""2024-03-01T10:00:00.123456Z""#, BASE_US + 123_456),
        (r#""2024-03-01T10:00:00.123456789Z""#, BASE_US + 123_456),
        (r#""2024-03-01T12:00:00.5+02:00""#, BASE_US + 500_000),
        (r#""2024-03-01T04:30:00-05:30""#, BASE_US),
        (r#""1969-12-31T23:59:59.5Z""#, -500_000),
    ] {
        let record = numbers("null", raw);
        assert_eq!(decode(&record), Ok(numbers_event(None, Some(expected))), "{raw} bare");
        assert_eq!(
            decode(&with_schema(&reference_values_schema(), &record)),
            Ok(numbers_event(None, Some(expected))),
            "{raw} with schema"
        );
    }
}

#[test]
fn micro_timestamp_with_schema_and_adaptive_without() {
    let record = numbers("null", "1709287200123456");
    let expected = numbers_event(None, Some(BASE_US + 123_456));
    assert_eq!(
        decoder_with(DecimalMode::Precise, TimeMode::Adaptive, 9).decode(Some(record.as_bytes())),
        Ok(expected.clone())
    );
    // The schema says µs even when the configuration says ms.
    let schema = values_schema(DECIMAL_PRECISE_9, TIME_MICRO);
    let mut d = decoder_with(DecimalMode::Precise, TimeMode::Milliseconds, 9);
    assert_eq!(d.decode(Some(with_schema(&schema, &record).as_bytes())), Ok(expected));
}

#[test]
fn millisecond_timestamps_with_schema_and_connect_mode_without() {
    let record = numbers("null", "1709287200123");
    let expected = numbers_event(None, Some(BASE_US + 123_000));
    for schema in [values_schema(DECIMAL_PRECISE_9, TIME_MILLIS), values_schema(DECIMAL_PRECISE_9, TIME_CONNECT)] {
        assert_eq!(decode(&with_schema(&schema, &record)), Ok(expected.clone()));
    }
    for mode in [TimeMode::Connect, TimeMode::Milliseconds] {
        let mut d = decoder_with(DecimalMode::Precise, mode, 9);
        assert_eq!(d.decode(Some(record.as_bytes())), Ok(expected.clone()), "{mode:?}");
    }
}

#[test]
fn nano_timestamps_with_schema_and_nanoseconds_mode_without() {
    let record = numbers("null", "1709287200123456789");
    let expected = numbers_event(None, Some(BASE_US + 123_456));
    let schema = values_schema(DECIMAL_PRECISE_9, TIME_NANO);
    assert_eq!(decode(&with_schema(&schema, &record)), Ok(expected.clone()));
    let mut d = decoder_with(DecimalMode::Precise, TimeMode::Nanoseconds, 9);
    assert_eq!(d.decode(Some(record.as_bytes())), Ok(expected));
}

/// Negative µs and ns values before the epoch round towards the past.
#[test]
fn timestamps_before_the_epoch() {
    let schema = values_schema(DECIMAL_PRECISE_9, TIME_NANO);
    assert_eq!(decode(&with_schema(&schema, &numbers("null", "-1500"))), Ok(numbers_event(None, Some(-2))));
    assert_eq!(decode(&numbers("null", "-1500")), Ok(numbers_event(None, Some(-1500))));
}

#[test]
fn date_schema_reads_days_since_the_epoch() {
    let schema = values_schema(DECIMAL_PRECISE_9, TIME_DATE);
    // 2024-03-01 is day 19783.
    let record = with_schema(&schema, &numbers("null", "19783"));
    assert_eq!(decode(&record), Ok(numbers_event(None, Some(1_709_251_200_000_000))));
}

// ---------------------------------------------------------------------------------------------
// Source metadata.

#[test]
fn sequence_gives_commit_lsn_and_change_lsn() {
    let record = source_record("c", Some(r#""[\"22910216\",\"22910504\"]""#), r#""false""#, TS_BOTH);
    assert_eq!(source_of(&record), streaming());
}

#[test]
fn sequence_without_commit_lsn_uses_the_change_lsn() {
    let record = source_record("c", Some(r#""[null,\"22910504\"]""#), r#""false""#, TS_BOTH);
    let expected =
        SourceMeta { position: SourcePosition { commit_lsn: Lsn(22910504), lsn: Lsn(22910504) }, ..streaming() };
    assert_eq!(source_of(&record), expected);
}

#[test]
fn missing_sequence_uses_the_change_lsn() {
    for sequence in [None, Some("null")] {
        let record = source_record("c", sequence, r#""false""#, TS_BOTH);
        let expected =
            SourceMeta { position: SourcePosition { commit_lsn: Lsn(22910504), lsn: Lsn(22910504) }, ..streaming() };
        assert_eq!(source_of(&record), expected, "{sequence:?}");
    }
}

/// Postgres' `X/Y` text form of an LSN in the sequence.
#[test]
fn sequence_in_pg_lsn_text_form() {
    let record = source_record("c", Some(r#""[\"0/15D9A08\",\"22910504\"]""#), r#""false""#, TS_BOTH);
    let expected =
        SourceMeta { position: SourcePosition { commit_lsn: Lsn(0x15D9A08), lsn: Lsn(22910504) }, ..streaming() };
    assert_eq!(source_of(&record), expected);
}

#[test]
fn snapshot_flag_in_every_form() {
    let seq = Some(r#""[\"22910216\",\"22910504\"]""#);
    for (op, snapshot, expected) in [
        ("c", r#""false""#, false),
        ("c", "false", false),
        ("c", "null", false),
        ("r", r#""true""#, true),
        ("r", r#""first""#, true),
        ("r", r#""last""#, true),
        ("r", r#""incremental""#, true),
        ("r", "true", true),
        // A read is a snapshot read whatever the flag says.
        ("r", r#""false""#, true),
    ] {
        let record = source_record(op, seq, snapshot, TS_BOTH);
        assert_eq!(source_of(&record).snapshot, expected, "op {op}, snapshot {snapshot}");
    }
}

#[test]
fn commit_time_prefers_ts_us_over_ts_ms() {
    let seq = Some(r#""[\"22910216\",\"22910504\"]""#);
    let both = source_record("c", seq, r#""false""#, r#""ts_ms":1709287200123,"ts_us":1709287200123456"#);
    assert_eq!(source_of(&both).commit_time_us, Some(1_709_287_200_123_456));
    let ms_only = source_record("c", seq, r#""false""#, r#""ts_ms":1709287200123"#);
    assert_eq!(source_of(&ms_only).commit_time_us, Some(1_709_287_200_123_000));
}

#[test]
fn value_int_is_read() {
    let record = source_record("c", Some(r#""[\"22910216\",\"22910504\"]""#), r#""false""#, TS_BOTH);
    let expected = Event::Change {
        op: Op::Create,
        source: streaming(),
        tx: None,
        row: RowChange::Value { before: None, after: Some(ValueRow { value_int: Some(-7), ..value(1001, 25) }) },
    };
    assert_eq!(decode(&record), Ok(expected));
}

// ---------------------------------------------------------------------------------------------
// Bad input.

/// The parser's own wording (and how it counts positions) is not pinned: the variant and the
/// reason are.
fn assert_invalid_json(err: &DecodeError) {
    assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
    assert_eq!(err.reason(), "invalid_json");
    assert!(err.to_string().starts_with("record is not valid JSON: "), "{err}");
}

#[test]
fn truncated_json_is_invalid_json() {
    // Cut after `"attribute_id":17,` on the second line.
    let truncated = &VALUE_CREATE[..60];
    assert!(truncated.ends_with(r#""attribute_id":17,"#));
    assert_invalid_json(&decode(truncated).unwrap_err());
}

/// The cursor skips fields it does not read without checking them: broken JSON inside one is
/// still called broken JSON, and well-formed JSON of another shape is not.
#[test]
fn broken_json_in_skipped_fields_is_invalid_json() {
    assert_invalid_json(&decode(r#"{"a": tru}"#).unwrap_err());
    assert_invalid_json(&decode(r#"{"payload": this is not JSON"#).unwrap_err());
    assert_eq!(decode(r#"{"a": true}"#).unwrap_err().reason(), "not_debezium");
}

#[test]
fn json_that_is_not_debezium_is_not_debezium() {
    let err = decode(r#"{"hello":"world"}"#).unwrap_err();
    assert_eq!(err, DecodeError::NotDebezium("no `op` field".into()));
    assert_eq!(err.reason(), "not_debezium");
    assert_eq!(err.to_string(), "record is not a Debezium change event: no `op` field");
    let array = decode("[1,2,3]").unwrap_err();
    assert_eq!(array.reason(), "not_debezium");
}

#[test]
fn unknown_op_is_unknown_op() {
    let err = decode(&VALUE_CREATE.replace(r#""op":"c""#, r#""op":"x""#)).unwrap_err();
    assert_eq!(err, DecodeError::UnknownOp("x".into()));
    assert_eq!(err.reason(), "unknown_op");
    assert_eq!(err.to_string(), "unknown op `x`");
}

#[test]
fn create_without_after_is_not_debezium() {
    let record = VALUE_CREATE.replacen(r#""after":{"#, r#""after":null,"unused":{"#, 1);
    let err = decode(&record).unwrap_err();
    assert_eq!(err, DecodeError::NotDebezium("op `c` without `after` image".into()));
    assert_eq!(err.reason(), "not_debezium");
    assert_eq!(err.to_string(), "record is not a Debezium change event: op `c` without `after` image");
}

#[test]
fn delete_without_before_is_not_debezium() {
    let record = VALUE_DELETE.replacen(r#""before":{"#, r#""before":null,"unused":{"#, 1);
    let err = decode(&record).unwrap_err();
    assert_eq!(err, DecodeError::NotDebezium("op `d` without `before` image".into()));
}

#[test]
fn change_without_source_is_not_debezium() {
    let err = decode(r#"{"before":null,"after":{"entity_id":1},"op":"c","ts_ms":1709287200456}"#).unwrap_err();
    assert_eq!(err, DecodeError::NotDebezium("no `source` block".into()));
}

#[test]
fn wrongly_typed_field_is_a_bad_field_naming_it() {
    let record = VALUE_CREATE.replace(r#""entity_id":1001"#, r#""entity_id":"1001""#);
    for record in [record.clone(), with_schema(&reference_values_schema(), &record)] {
        let err = decode(&record).unwrap_err();
        assert_eq!(err.reason(), "bad_field");
        let DecodeError::BadField { field, message } = &err else { panic!("{err:?}") };
        assert_eq!(field, "after.entity_id");
        assert!(message.contains(r#""1001""#), "{message}");
        assert!(err.to_string().starts_with("field `after.entity_id`: "), "{err}");
    }
    let record = VALUE_DELETE.replace(r#""value_bool":true"#, r#""value_bool":"yes""#);
    let err = decode(&record).unwrap_err();
    assert!(matches!(&err, DecodeError::BadField { field, .. } if field == "before.value_bool"), "{err:?}");
}

#[test]
fn missing_required_column_names_the_field() {
    let record = ATTRIBUTE_CREATE.replace(r#""name":"loyalty_tier","#, "");
    let err = decode(&record).unwrap_err();
    assert_eq!(err, DecodeError::field("after.name", "missing"));
    assert_eq!(err.to_string(), "field `after.name`: missing");
    let record = VALUE_DELETE.replacen(r#""attribute_id":21,"#, "", 1);
    assert_eq!(decode(&record).unwrap_err(), DecodeError::field("before.attribute_id", "missing"));
}

#[test]
fn unknown_data_type_names_the_field() {
    let err = decode(&ATTRIBUTE_CREATE.replace(r#""data_type":"text""#, r#""data_type":"money""#)).unwrap_err();
    assert_eq!(err, DecodeError::field("data_type", "unknown data type `money`"));
    assert_eq!(err.reason(), "bad_field");
    assert_eq!(err.to_string(), "field `data_type`: unknown data type `money`");
}

#[test]
fn bad_base64_names_the_field() {
    let err = decode(&numbers(r#""!!not base64""#, "null")).unwrap_err();
    assert_eq!(err, DecodeError::field("value_decimal", "`!!not base64` is not base64 (Invalid symbol 33, offset 0.)"));
    assert_eq!(err.reason(), "bad_field");
    assert_eq!(err.to_string(), "field `value_decimal`: `!!not base64` is not base64 (Invalid symbol 33, offset 0.)");
}

#[test]
fn bad_variable_scale_decimal_names_the_field() {
    let err = decode(&numbers(r#"{"value":"BNI="}"#, "null")).unwrap_err();
    assert_eq!(err.reason(), "bad_field");
    assert_eq!(
        err,
        DecodeError::field("value_decimal", "bad VariableScaleDecimal: missing field `scale` at line 1 column 16")
    );
}

#[test]
fn bad_timestamp_text_names_the_field() {
    let err = decode(&numbers("null", r#""yesterday""#)).unwrap_err();
    assert_eq!(err, DecodeError::field("value_timestamp", "`yesterday` is not an ISO-8601 timestamp"));
    assert_eq!(err.to_string(), "field `value_timestamp`: `yesterday` is not an ISO-8601 timestamp");
    let err = decode(&numbers("null", "1.5")).unwrap_err();
    assert_eq!(err, DecodeError::field("value_timestamp", "`1.5` is not an integer timestamp"));
}

#[test]
fn bad_sequence_text_names_the_field() {
    let record = source_record("c", Some(r#""[\"abc\",\"22910504\"]""#), r#""false""#, TS_BOTH);
    let err = decode(&record).unwrap_err();
    assert_eq!(err.reason(), "bad_field");
    // The text may be shown as written in the record (still JSON-escaped) or unescaped.
    let DecodeError::BadField { field, message } = &err else { panic!("{err:?}") };
    assert_eq!(field, "source.sequence");
    assert!(message.contains("abc") && message.ends_with(r#"` is not ["<lsn>", "<lsn>"]"#), "{message}");
    assert!(err.to_string().starts_with("field `source.sequence`: `["), "{err}");
}

// ---------------------------------------------------------------------------------------------
// JSON forms the connector's records may take.

#[test]
fn escaped_strings_are_unescaped() {
    let record = VALUE_CREATE.replace(
        r#""value_text":"Ada Lovelace""#,
        r#""value_text":"Ada \"Countess\" \\ of\nLovelace \u00E9\u2713 \uD83D\uDE00 \/""#,
    );
    let expected = Event::Change {
        op: Op::Create,
        source: streaming(),
        tx: tx(),
        row: RowChange::Value {
            before: None,
            after: Some(ValueRow {
                value_text: Field::Value("Ada \"Countess\" \\ of\nLovelace é✓ 😀 /".into()),
                ..value(1001, 17)
            }),
        },
    };
    assert_eq!(decode(&record), Ok(expected));
    let record = ENTITY_CREATE.replace(
        r#""hot_attributes":"{\"score\": 42, \"loyalty_tier\": \"gold\"}""#,
        r#""hot_attributes":"{\"motto\": \"say \\\"hi\\\"\", \"city\": \"Z\u00FCrich\"}""#,
    );
    let Ok(Event::Change { row: RowChange::Entity { after: Some(after), .. }, .. }) = decode(&record) else {
        panic!("{:?}", decode(&record))
    };
    assert_eq!(after.hot_attributes, hot(r#"{"motto": "say \"hi\"", "city": "Zürich"}"#));
}

/// Whitespace between tokens (pretty-printed records) changes nothing.
#[test]
fn insignificant_whitespace_is_ignored() {
    let spaced = |r: &str| r.replace("\":", "\" :\t").replace(",\"", ",\n  \"").replace('{', "{ ").replace('}', " }");
    let expected = decode(VALUE_UPDATE).unwrap();
    assert_eq!(decode(&spaced(VALUE_UPDATE)), Ok(expected.clone()));
    assert_eq!(decode(&spaced(&with_schema(&reference_values_schema(), VALUE_UPDATE))), Ok(expected));
    let expected = decode(VALUE_READ).unwrap();
    assert_eq!(decode(&spaced(VALUE_READ)), Ok(expected));
    assert_eq!(
        decode(&spaced(&numbers(r#"{"scale":2,"value":"BNI="}"#, "1709287200123456"))),
        Ok(numbers_event(Some(dec(1234, 2)), Some(BASE_US + 123_456)))
    );
}

/// JSON objects are unordered: a payload before its schema is read with that schema.
#[test]
fn payload_before_schema_is_read_with_the_schema() {
    let schema = values_schema(DECIMAL_PRECISE_2, TIME_MILLIS);
    let record = format!(r#"{{"payload":{},"schema":{schema}}}"#, numbers(r#""BNI=""#, "1709287200123"));
    assert_eq!(decode(&record), Ok(numbers_event(Some(dec(1234, 2)), Some(BASE_US + 123_000))));
}

#[test]
fn trailing_garbage_is_invalid_json() {
    assert_invalid_json(&decode(&format!("{VALUE_CREATE} x")).unwrap_err());
    assert_invalid_json(&decode(&format!("{VALUE_CREATE}{VALUE_CREATE}")).unwrap_err());
}

#[test]
fn integer_out_of_range_is_a_bad_field() {
    let record = VALUE_CREATE.replace(r#""entity_id":1001"#, r#""entity_id":9223372036854775808"#);
    let err = decode(&record).unwrap_err();
    assert!(matches!(&err, DecodeError::BadField { field, .. } if field == "after.entity_id"), "{err:?}");
    let record = VALUE_CREATE.replace(r#""attribute_id":17"#, r#""attribute_id":17.5"#);
    let err = decode(&record).unwrap_err();
    assert!(matches!(&err, DecodeError::BadField { field, .. } if field == "after.attribute_id"), "{err:?}");
}

/// Another table's images may hold nested objects, arrays and strings with braces.
#[test]
fn other_table_with_nested_columns_is_other_table() {
    let record = OTHER_TABLE_MISFIT.replace(
        r#""after":{"id":3,"name":500,"entity_id":"not-a-number"}"#,
        r#""after":{"id":3,"name":{"first":"}{","tags":["]",{"x":"\"}"}]},"entity_id":[1,{"a":null}],"tenant_id":true}"#,
    );
    assert_eq!(decode(&record), Ok(Event::OtherTable { table: "tenant_quota".into() }));
    let before = record.replace(r#""before":null"#, r#""before":{"name":[{"}":"{"}],"id":2}"#);
    assert_eq!(decode(&before), Ok(Event::OtherTable { table: "tenant_quota".into() }));
}

#[test]
fn empty_object_is_not_debezium() {
    assert_eq!(decode("{}"), Err(DecodeError::NotDebezium("no `op` field".into())));
}

// ---------------------------------------------------------------------------------------------
// Limits and ranges (found by fuzzing or required of every decoder).

/// Regression (fuzzing): `payload` inside `payload` was read recursively, so a record nesting
/// enough of them overflowed the stack. Only the record's own `payload` is an envelope now.
#[test]
fn nested_payloads_do_not_recurse() {
    let depth = 200_000;
    let record = format!("{}null{}", r#"{"payload":"#.repeat(depth), "}".repeat(depth));
    let err = decode(&record).unwrap_err();
    assert_eq!(err, DecodeError::NotDebezium("no `op` field".into()));
    // One level, the schema form, still reads.
    assert!(decode(&format!(r#"{{"schema":null,"payload":{VALUE_CREATE}}}"#)).is_ok());
}

#[test]
fn invalid_utf8_has_its_own_reason() {
    let mut bytes = VALUE_CREATE.as_bytes().to_vec();
    let at = VALUE_CREATE.find("Lovelace").unwrap();
    bytes[at] = 0xFF;
    let err = decoder().decode(Some(&bytes)).unwrap_err();
    assert_eq!(err.reason(), "invalid_utf8");
    assert_eq!(
        err.to_string(),
        format!("record is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index {at}")
    );
    let garbage = decoder().decode(Some(b"\xff\xfe{\"op\":\"c\"}")).unwrap_err();
    assert_eq!(garbage, DecodeError::InvalidUtf8("invalid utf-8 sequence of 1 bytes from index 0".into()));
}

/// Numbers beyond their column: an int past i64, a decimal past Decimal128's 38 digits, a
/// timestamp outside years 1 to 9999, in each encoding that can carry them. Each names its
/// attribute.
#[test]
fn values_beyond_their_column_are_out_of_range() {
    let out = |d: &mut JsonDecoder, record: &str, field: &str, message: &str| {
        let err = d.decode(Some(record.as_bytes())).unwrap_err();
        assert_eq!(err, DecodeError::OutOfRange { field: field.into(), message: message.into() }, "{record}");
        assert_eq!(err.reason(), "value_out_of_range");
    };
    let source = source_record("c", None, r#""false""#, TS_BOTH);
    assert!(decoder().decode(Some(source.as_bytes())).is_ok(), "{source}");
    for big in ["9223372036854775808", "-99999999999999999999"] {
        let record = source.replace(r#""value_int":-7"#, &format!(r#""value_int":{big}"#));
        assert_ne!(record, source);
        let message = format!("integer `{big}` is beyond the range of a 64-bit integer (attribute 25)");
        out(&mut decoder(), &record, "value_int", &message);
    }
    let mut strings = decoder_with(DecimalMode::String, TimeMode::Adaptive, 9);
    let nines = "9".repeat(39);
    let err = strings.decode(Some(numbers(&format!("\"{nines}\""), "null").as_bytes())).unwrap_err();
    assert_eq!(err.reason(), "value_out_of_range", "{err}");
    assert_eq!(err.to_string(), format!("field `value_decimal`: `{nines}` has more than 38 digits (attribute 22)"));
    // 10^38 fits an i128 but not Decimal128(38, 0): the pivot's rescale refuses it (pivot tests).
    // Years past 9999 in every timestamp encoding.
    out(
        &mut decoder(),
        &numbers("null", "253402300800000000"),
        "value_timestamp",
        "timestamp 253402300800000000 µs is outside years 1 to 9999 (attribute 22)",
    );
    out(
        &mut decoder(),
        &numbers("null", r#""+10000-01-01T00:00:00""#),
        "value_timestamp",
        "timestamp 253402300800000000 µs is outside years 1 to 9999 (attribute 22)",
    );
    let mut millis = decoder_with(DecimalMode::Precise, TimeMode::Milliseconds, 9);
    out(
        &mut millis,
        &numbers("null", "9223372036854775807"),
        "value_timestamp",
        "timestamp 9223372036854775807 is out of range (attribute 22)",
    );
    out(
        &mut decoder(),
        &numbers("null", "99999999999999999999"),
        "value_timestamp",
        "integer timestamp `99999999999999999999` is beyond the range of a 64-bit integer (attribute 22)",
    );
    // Year 1 and 9999 themselves are fine.
    assert!(decoder().decode(Some(numbers("null", r#""0001-01-01T00:00:00Z""#).as_bytes())).is_ok());
    assert!(decoder().decode(Some(numbers("null", r#""9999-12-31T23:59:59.999999Z""#).as_bytes())).is_ok());
}

/// Decimal and timestamp strings are read without a copy when they have no escapes, and
/// unescaped when they do.
#[test]
fn json_text_borrows_plain_strings_and_unescapes_others() {
    assert!(matches!(json_text(r#""12.50""#), Ok(Cow::Borrowed("12.50"))));
    assert!(matches!(json_text(r#""""#), Ok(Cow::Borrowed(""))));
    assert_eq!(json_text(r#""1\u0032.5""#).unwrap(), "12.5");
    assert_eq!(json_text(r#""a\"b""#).unwrap(), "a\"b");
    for bad in [r#"""#, r#""abc"#, r#""a"b""#, "12"] {
        assert!(json_text(bad).is_err(), "{bad}");
    }
    assert_eq!(decimal_from_json(r#""1\u0032.5""#, DecimalCodec::Text).unwrap(), Decimal { unscaled: 125, scale: 1 });
}

/// `source.sequence` read where it stands gives what the general path gives, for its usual
/// forms, and leaves every other form (and the cursor) to the general path.
#[test]
fn sequence_read_in_place_agrees_with_the_general_path() {
    let forms = [
        r#""[\"22797690300\",\"22797688460\"]""#,
        r#""[null,\"22905000\"]""#,
        r#""[\"1\",\"2\"]""#,
        r#""[\"123456789012345678\",\"2\"]""#,
        r#""[\"1234567890123456789\",\"2\"]""#,
        r#""[\"0/15D9A08\",\"22910504\"]""#,
        r#""[\"150\",null]""#,
        r#""[\"150\",\"x\"]""#,
        r#""[\"150\"]""#,
        r#""[]""#,
        r#""[ \"150\",\"200\"]""#,
        r#""[\"\",\"200\"]""#,
        r#""[\"150\",\"200\"]"#,
        r#""[\"150"#,
        "null",
    ];
    for form in forms {
        let text = format!("{form},");
        let mut c = Cursor::new(&text);
        match sequence_lsn(&mut c) {
            Some(first) => {
                let raw = form.trim_matches('"');
                assert_eq!(Ok(first), parse_sequence(raw), "{form}");
                assert_eq!(c.rest(), ",", "{form}");
            }
            None => assert_eq!(c.rest(), text, "{form}"),
        }
    }
    // The usual forms take the fast path.
    assert!(sequence_lsn(&mut Cursor::new(forms[0])).is_some());
    assert!(sequence_lsn(&mut Cursor::new(forms[1])).is_some());
}

/// The envelope's `ts_ms` only tells a heartbeat (nothing but a time) from a record of no known
/// shape; its value is passed over.
#[test]
fn envelope_ts_ms_is_only_looked_for() {
    assert_eq!(decode(r#"{"ts_ms":1709287200999}"#), Ok(Event::Heartbeat));
    assert!(matches!(decode(r#"{"ts_ms":null}"#), Err(DecodeError::NotDebezium(_))));
    assert!(matches!(decode(r#"{"other":1}"#), Err(DecodeError::NotDebezium(_))));
    let seq = Some(r#""[\"22910216\",\"22910504\"]""#);
    let record = source_record("c", seq, r#""false""#, TS_BOTH);
    let odd_time = record.replace(r#""ts_ms":1709287200456}"#, r#""ts_ms":"later"}"#);
    assert_ne!(odd_time, record);
    assert_eq!(decode(&odd_time), decode(&record));
}
