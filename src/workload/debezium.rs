//! Writes records exactly as the Debezium PostgreSQL connector and Kafka Connect's
//! `JsonConverter` put them on the wire: row images, change envelopes, transaction metadata,
//! heartbeats and tombstones, with or without embedded schemas.
//!
//! Everything is written by hand into a byte buffer rather than through `serde_json`: the
//! generator feeds benchmarks of millions of events, and building a `Value` tree per record would
//! cost more than the rest of the generator together. Field order, number and time formats follow
//! what Debezium 2.x/3.x emits (Jackson output: no spaces, `\uXXXX` escapes in upper case), and
//! the JSONB text inside string fields follows PostgreSQL's `jsonb_out` (`{"a": 1, "b": "x"}`).

use super::model::{AttrDef, Entity, Val};
use crate::decode::{DataType, Table};
use base64::Engine;
use std::collections::VecDeque;
use std::io::{self, Write};

/// Debezium's placeholder for an unchanged TOASTed column it could not read.
pub(crate) const UNAVAILABLE: &str = "__debezium_unavailable_value";
/// `source.version`.
const CONNECTOR_VERSION: &str = "2.7.3.Final";
/// `topic.prefix` of the simulated connector (`source.name`, schema names).
const SERVER_NAME: &str = "eav";
/// The captured database (`source.db`).
const DATABASE: &str = "eavstore";

pub(crate) fn table_name(table: Table) -> &'static str {
    match table {
        Table::Attributes => "attributes",
        Table::Entities => "entities",
        Table::EntityValues => "entity_values",
    }
}

pub(crate) fn table_index(table: Table) -> usize {
    match table {
        Table::Attributes => 0,
        Table::Entities => 1,
        Table::EntityValues => 2,
    }
}

pub(crate) const TABLES: [Table; 3] = [Table::Attributes, Table::Entities, Table::EntityValues];

// ---------------------------------------------------------------------------------------------
// Scalars.

/// "00" … "99": integers are written two digits at a time (they are most of the bytes).
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

#[inline]
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[v as usize * 2..v as usize * 2 + 2]);
    } else {
        i -= 1;
        tmp[i] = b'0' + v as u8;
    }
    out.extend_from_slice(&tmp[i..]);
}

#[inline]
pub(crate) fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_u128(out: &mut Vec<u8>, mut v: u128) {
    if v <= u64::MAX as u128 {
        return push_u64(out, v as u64);
    }
    let mut tmp = [0u8; 40];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// `v` as exactly `width` digits, zero-padded (`v` < 10^width, `width` <= 20).
#[inline]
fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut i = width;
    while i >= 2 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if i == 1 {
        tmp[0] = b'0' + (v % 10) as u8;
    }
    out.extend_from_slice(&tmp[..width]);
}

/// The decimal scale of `entity_values.value_decimal` (numeric(38, 9)).
pub(crate) const SCALE: u32 = 9;
const SCALE_FACTOR: u128 = 1_000_000_000;

/// `BigDecimal.toPlainString()` at the column scale: `12.340000000` (decimal.handling.mode=string).
pub(crate) fn push_decimal_plain(out: &mut Vec<u8>, unscaled: i128) {
    if unscaled < 0 {
        out.push(b'-');
    }
    let mag = unscaled.unsigned_abs();
    push_u128(out, mag / SCALE_FACTOR);
    out.push(b'.');
    push_padded(out, (mag % SCALE_FACTOR) as u64, SCALE as usize);
}

/// The shortest decimal text of a scale-9 value (`12.5`, `3`): how an application writes a number
/// into JSON, and how PostgreSQL's numeric keeps it.
pub(crate) fn push_decimal_short(out: &mut Vec<u8>, unscaled: i128) {
    if unscaled < 0 {
        out.push(b'-');
    }
    let mag = unscaled.unsigned_abs();
    push_u128(out, mag / SCALE_FACTOR);
    let mut frac = (mag % SCALE_FACTOR) as u64;
    if frac != 0 {
        let mut width = SCALE as usize;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        out.push(b'.');
        push_padded(out, frac, width);
    }
}

/// Kafka Connect's Decimal (decimal.handling.mode=precise): base64 of the minimal big-endian
/// two's-complement bytes of the unscaled value, as `BigInteger.toByteArray()` gives them.
pub(crate) fn push_decimal_base64(out: &mut Vec<u8>, unscaled: i128) {
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        // A leading byte is redundant when it only repeats the sign of the next one.
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    let mut enc = [0u8; 24];
    match base64::engine::general_purpose::STANDARD.encode_slice(&bytes[start..], &mut enc) {
        Ok(n) => out.extend_from_slice(&enc[..n]),
        // 16 bytes never need more than 24 characters; keep a correct path all the same.
        Err(_) => out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&bytes[start..]).as_bytes()),
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// How a timestamp's fraction and offset are written.
#[derive(Clone, Copy)]
pub(crate) enum TimeStyle {
    /// Debezium's ZonedTimestamp for timestamptz(6): UTC, always six fraction digits, `Z`.
    Zoned,
    /// Application JSON (Python `isoformat()`): fraction only when non-zero, `±HH:MM` offset.
    Offset(i32),
}

/// `µs` since the epoch as ISO-8601 text (no quotes).
pub(crate) fn push_timestamp(out: &mut Vec<u8>, us: i64, style: TimeStyle) {
    let offset_min = match style {
        TimeStyle::Zoned => 0,
        TimeStyle::Offset(m) => m,
    };
    let local = us + offset_min as i64 * 60_000_000;
    let secs = local.div_euclid(1_000_000);
    let micros = local.rem_euclid(1_000_000) as u64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u64;
    push_padded(out, y.max(0) as u64, 4);
    out.push(b'-');
    push_padded(out, m as u64, 2);
    out.push(b'-');
    push_padded(out, d as u64, 2);
    out.push(b'T');
    push_padded(out, sod / 3600, 2);
    out.push(b':');
    push_padded(out, sod / 60 % 60, 2);
    out.push(b':');
    push_padded(out, sod % 60, 2);
    match style {
        TimeStyle::Zoned => {
            out.push(b'.');
            push_padded(out, micros, 6);
            out.push(b'Z');
        }
        TimeStyle::Offset(m) => {
            if micros != 0 {
                out.push(b'.');
                push_padded(out, micros, 6);
            }
            out.push(if m < 0 { b'-' } else { b'+' });
            let a = m.unsigned_abs() as u64;
            push_padded(out, a / 60, 2);
            out.push(b':');
            push_padded(out, a % 60, 2);
        }
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Bytes that JSON strings must escape: control characters, `"` and `\\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// JSON string body escaping. `upper` picks Jackson's `\u001F` over PostgreSQL's `\u001f`.
#[inline]
fn push_escaped(out: &mut Vec<u8>, s: &[u8], upper: bool) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        if !NEEDS_ESCAPE[b as usize] {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            _ => {
                let hex = if upper { HEX_UPPER } else { HEX_LOWER };
                out.extend_from_slice(b"\\u00");
                out.push(hex[(b >> 4) as usize]);
                out.push(hex[(b & 15) as usize]);
            }
        }
    }
    out.extend_from_slice(&s[start..]);
}

/// A JSON string as Jackson writes it.
#[inline]
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s.as_bytes(), true);
    out.push(b'"');
}

/// A JSON string as PostgreSQL's jsonb output writes it.
pub(crate) fn push_pg_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s.as_bytes(), false);
    out.push(b'"');
}

/// jsonb orders object keys by length, then bytewise; `jsonb_out` prints them in that order.
pub(crate) fn jsonb_key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// The offset an application used when it wrote a hot timestamp into JSONB. Derived from the
/// value so that the same value always renders the same (before and after images must agree).
fn hot_time_style(us: i64) -> TimeStyle {
    match us.rem_euclid(5) {
        0 | 1 => TimeStyle::Zoned,
        2 => TimeStyle::Offset(0),
        3 => TimeStyle::Offset(120),
        _ => TimeStyle::Offset(-300),
    }
}

/// A hot attribute's value inside the jsonb text.
fn push_hot_value(out: &mut Vec<u8>, v: Option<&Val>) {
    match v {
        None => out.extend_from_slice(b"null"),
        Some(Val::Text(t)) => push_pg_str(out, t),
        Some(Val::Int(i)) => push_i64(out, *i),
        Some(Val::Dec(d)) => push_decimal_short(out, *d),
        Some(Val::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Val::Ts(us)) => {
            out.push(b'"');
            push_timestamp(out, *us, hot_time_style(*us));
            out.push(b'"');
        }
        Some(Val::Json(j)) => out.extend_from_slice(j.as_bytes()),
    }
}

/// `entities.hot_attributes` as `jsonb_out` prints it. `hot` is kept in jsonb key order.
pub(crate) fn push_hot_jsonb(out: &mut Vec<u8>, defs: &[AttrDef], hot: &[(u16, Option<Val>)]) {
    out.push(b'{');
    for (i, (def, v)) in hot.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        push_pg_str(out, &defs[*def as usize].name);
        out.extend_from_slice(b": ");
        push_hot_value(out, v.as_ref());
    }
    out.push(b'}');
}

// ---------------------------------------------------------------------------------------------
// Row images (the `before` / `after` structs).

/// A row of `attributes`.
pub(crate) fn attribute_row(
    out: &mut Vec<u8>,
    attribute_id: i64,
    tenant_id: i64,
    entity_type: &str,
    def: &AttrDef,
    created_us: i64,
) {
    out.extend_from_slice(b"{\"attribute_id\":");
    push_i64(out, attribute_id);
    out.extend_from_slice(b",\"tenant_id\":");
    push_i64(out, tenant_id);
    out.extend_from_slice(b",\"entity_type\":");
    push_json_str(out, entity_type);
    out.extend_from_slice(b",\"name\":");
    push_json_str(out, &def.name);
    out.extend_from_slice(b",\"data_type\":\"");
    out.extend_from_slice(def.dtype.as_str().as_bytes());
    out.extend_from_slice(b"\",\"is_hot\":");
    out.extend_from_slice(if def.hot { b"true" } else { b"false" });
    out.extend_from_slice(b",\"created_at\":\"");
    push_timestamp(out, created_us, TimeStyle::Zoned);
    out.extend_from_slice(b"\"}");
}

/// A row of `entities`. With `toasted`, `hot_attributes` is the TOAST placeholder (an update
/// that did not touch the column, whose old value PostgreSQL did not log).
pub(crate) fn entity_row(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    entity_type: &str,
    defs: &[AttrDef],
    e: &Entity,
    toasted: bool,
) {
    out.extend_from_slice(b"{\"entity_id\":");
    push_i64(out, e.id);
    out.extend_from_slice(b",\"tenant_id\":");
    push_i64(out, e.tenant_id());
    out.extend_from_slice(b",\"entity_type\":");
    push_json_str(out, entity_type);
    out.extend_from_slice(b",\"hot_attributes\":");
    if toasted {
        push_json_str(out, UNAVAILABLE);
    } else {
        scratch.clear();
        push_hot_jsonb(scratch, defs, &e.hot);
        out.push(b'"');
        push_escaped(out, scratch, true);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"version\":");
    push_i64(out, e.version);
    out.extend_from_slice(b",\"is_deleted\":");
    out.extend_from_slice(if e.deleted { b"true" } else { b"false" });
    out.extend_from_slice(b",\"created_at\":\"");
    push_timestamp(out, e.created_us, TimeStyle::Zoned);
    out.extend_from_slice(b"\",\"updated_at\":\"");
    push_timestamp(out, e.updated_us, TimeStyle::Zoned);
    out.extend_from_slice(b"\"}");
}

/// What the typed value columns of an `entity_values` row hold.
#[derive(Clone, Copy)]
pub(crate) enum ValueCols<'a> {
    /// The value in the column of its type, the other columns null. `None`: all null.
    Value(Option<&'a Val>),
    /// The column of `DataType` carries the TOAST placeholder (unchanged TOASTed text/json).
    Toasted(DataType),
    /// A wrong row (poison): `value_text` set whatever the attribute's type.
    TextOnly(&'a str),
}

/// A row of `entity_values`. `precise`: decimals as Kafka Connect Decimal bytes (base64), else
/// as plain text.
#[allow(clippy::too_many_arguments)]
pub(crate) fn value_row(
    out: &mut Vec<u8>,
    precise: bool,
    entity_id: i64,
    attribute_id: i64,
    tenant_id: i64,
    cols: ValueCols,
    updated_us: i64,
) {
    out.extend_from_slice(b"{\"entity_id\":");
    push_i64(out, entity_id);
    out.extend_from_slice(b",\"attribute_id\":");
    push_i64(out, attribute_id);
    out.extend_from_slice(b",\"tenant_id\":");
    push_i64(out, tenant_id);
    let toasted = match cols {
        ValueCols::Toasted(t) => Some(t),
        _ => None,
    };
    let val = match cols {
        ValueCols::Value(v) => v,
        _ => None,
    };
    out.extend_from_slice(b",\"value_text\":");
    match (val, toasted, cols) {
        (Some(Val::Text(t)), _, _) => push_json_str(out, t),
        (_, Some(DataType::Text), _) => push_json_str(out, UNAVAILABLE),
        (_, _, ValueCols::TextOnly(t)) => push_json_str(out, t),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value_int\":");
    match val {
        Some(Val::Int(i)) => push_i64(out, *i),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value_decimal\":");
    match val {
        Some(Val::Dec(d)) => {
            out.push(b'"');
            if precise {
                push_decimal_base64(out, *d);
            } else {
                push_decimal_plain(out, *d);
            }
            out.push(b'"');
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value_bool\":");
    match val {
        Some(Val::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value_timestamp\":");
    match val {
        Some(Val::Ts(us)) => {
            out.push(b'"');
            push_timestamp(out, *us, TimeStyle::Zoned);
            out.push(b'"');
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value_json\":");
    match (val, toasted) {
        (Some(Val::Json(j)), _) => push_json_str(out, j),
        (_, Some(DataType::Json)) => push_json_str(out, UNAVAILABLE),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"updated_at\":\"");
    push_timestamp(out, updated_us, TimeStyle::Zoned);
    out.extend_from_slice(b"\"}");
}

// ---------------------------------------------------------------------------------------------
// Records.

/// The parts of `source` that vary.
pub(crate) struct SourceInfo {
    pub table: Table,
    /// `source.snapshot`: `"false"` when streaming, else the snapshot marker.
    pub snapshot: &'static str,
    /// Commit time (streaming) or read time (snapshot), µs.
    pub ts_us: i64,
    pub tx_id: i64,
    pub lsn: u64,
    /// `sequence[0]`, the previous transaction's commit LSN; `None` during the snapshot.
    pub last_commit: Option<u64>,
}

/// The `transaction` block of a streamed change.
pub(crate) struct TxBlock<'a> {
    pub id: &'a str,
    pub total_order: u64,
    pub data_collection_order: u64,
}

fn push_source(out: &mut Vec<u8>, s: &SourceInfo) {
    out.extend_from_slice(b"{\"version\":\"");
    out.extend_from_slice(CONNECTOR_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"connector\":\"postgresql\",\"name\":\"");
    out.extend_from_slice(SERVER_NAME.as_bytes());
    out.extend_from_slice(b"\",\"ts_ms\":");
    push_i64(out, s.ts_us.div_euclid(1000));
    out.extend_from_slice(b",\"snapshot\":\"");
    out.extend_from_slice(s.snapshot.as_bytes());
    out.extend_from_slice(b"\",\"db\":\"");
    out.extend_from_slice(DATABASE.as_bytes());
    // `sequence` is a JSON array serialised into a string.
    out.extend_from_slice(b"\",\"sequence\":\"[");
    match s.last_commit {
        Some(c) => {
            out.extend_from_slice(b"\\\"");
            push_u64(out, c);
            out.extend_from_slice(b"\\\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\\\"");
    push_u64(out, s.lsn);
    out.extend_from_slice(b"\\\"]\",\"ts_us\":");
    push_i64(out, s.ts_us);
    out.extend_from_slice(b",\"ts_ns\":");
    push_i64(out, s.ts_us.saturating_mul(1000));
    out.extend_from_slice(b",\"schema\":\"public\",\"table\":\"");
    out.extend_from_slice(table_name(s.table).as_bytes());
    out.extend_from_slice(b"\",\"txId\":");
    push_i64(out, s.tx_id);
    out.extend_from_slice(b",\"lsn\":");
    push_u64(out, s.lsn);
    out.extend_from_slice(b",\"xmin\":null}");
}

/// One change record (no trailing newline). `proc_ns` is when the connector produced it (the
/// envelope's `ts_ms`/`ts_us`/`ts_ns`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn change_record(
    out: &mut Vec<u8>,
    schemas: Option<&Schemas>,
    op: u8,
    before: Option<&[u8]>,
    after: Option<&[u8]>,
    source: &SourceInfo,
    tx: Option<&TxBlock>,
    proc_ns: i64,
) {
    if let Some(s) = schemas {
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(s.tables[table_index(source.table)].as_bytes());
        out.extend_from_slice(b",\"payload\":");
    }
    out.extend_from_slice(b"{\"before\":");
    out.extend_from_slice(before.unwrap_or(b"null"));
    out.extend_from_slice(b",\"after\":");
    out.extend_from_slice(after.unwrap_or(b"null"));
    out.extend_from_slice(b",\"source\":");
    push_source(out, source);
    out.extend_from_slice(b",\"transaction\":");
    match tx {
        Some(t) => {
            out.extend_from_slice(b"{\"id\":");
            push_json_str(out, t.id);
            out.extend_from_slice(b",\"total_order\":");
            push_u64(out, t.total_order);
            out.extend_from_slice(b",\"data_collection_order\":");
            push_u64(out, t.data_collection_order);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"op\":\"");
    out.push(op);
    out.extend_from_slice(b"\",\"ts_ms\":");
    push_i64(out, proc_ns.div_euclid(1_000_000));
    out.extend_from_slice(b",\"ts_us\":");
    push_i64(out, proc_ns.div_euclid(1000));
    out.extend_from_slice(b",\"ts_ns\":");
    push_i64(out, proc_ns);
    out.push(b'}');
    if schemas.is_some() {
        out.push(b'}');
    }
}

/// A transaction metadata record (`provide.transaction.metadata=true`). `end`: the per-table
/// event counts, in order of first appearance.
pub(crate) fn transaction_record(
    out: &mut Vec<u8>,
    schemas: Option<&Schemas>,
    id: &str,
    end: Option<&[(Table, u64)]>,
    ts_ms: i64,
) {
    if let Some(s) = schemas {
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(s.transaction.as_bytes());
        out.extend_from_slice(b",\"payload\":");
    }
    out.extend_from_slice(if end.is_some() {
        b"{\"status\":\"END\",\"id\":"
    } else {
        b"{\"status\":\"BEGIN\",\"id\":"
    });
    push_json_str(out, id);
    match end {
        None => out.extend_from_slice(b",\"event_count\":null,\"data_collections\":null"),
        Some(counts) => {
            out.extend_from_slice(b",\"event_count\":");
            push_u64(out, counts.iter().map(|(_, n)| n).sum());
            out.extend_from_slice(b",\"data_collections\":[");
            for (i, (table, n)) in counts.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"data_collection\":\"public.");
                out.extend_from_slice(table_name(*table).as_bytes());
                out.extend_from_slice(b"\",\"event_count\":");
                push_u64(out, *n);
                out.push(b'}');
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b",\"ts_ms\":");
    push_i64(out, ts_ms);
    out.push(b'}');
    if schemas.is_some() {
        out.push(b'}');
    }
}

/// A heartbeat record (`heartbeat.interval.ms`).
pub(crate) fn heartbeat_record(out: &mut Vec<u8>, schemas: Option<&Schemas>, ts_ms: i64) {
    if let Some(s) = schemas {
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(s.heartbeat.as_bytes());
        out.extend_from_slice(b",\"payload\":");
    }
    out.extend_from_slice(b"{\"ts_ms\":");
    push_i64(out, ts_ms);
    out.push(b'}');
    if schemas.is_some() {
        out.push(b'}');
    }
}

// ---------------------------------------------------------------------------------------------
// Embedded schemas (JsonConverter schemas.enable=true).

/// The value schemas JsonConverter embeds, rendered once: they are the same on every record of a
/// table.
pub(crate) struct Schemas {
    tables: [String; 3],
    transaction: String,
    heartbeat: String,
}

/// Epoch: Debezium's fallback default for a NOT NULL timestamptz whose default (`now()`) it
/// cannot evaluate.
const EPOCH_DEFAULT: &str = "\"1970-01-01T00:00:00Z\"";

fn field(ty: &str, optional: bool, default: Option<&str>, name: &str) -> String {
    match default {
        Some(d) => format!(r#"{{"type":"{ty}","optional":{optional},"default":{d},"field":"{name}"}}"#),
        None => format!(r#"{{"type":"{ty}","optional":{optional},"field":"{name}"}}"#),
    }
}

fn logical(ty: &str, optional: bool, logical: &str, params: Option<&str>, default: Option<&str>, name: &str) -> String {
    let mut s = format!(r#"{{"type":"{ty}","optional":{optional},"name":"{logical}","version":1"#);
    if let Some(p) = params {
        s.push_str(&format!(r#","parameters":{p}"#));
    }
    if let Some(d) = default {
        s.push_str(&format!(r#","default":{d}"#));
    }
    s.push_str(&format!(r#","field":"{name}"}}"#));
    s
}

fn zoned(optional: bool, name: &str) -> String {
    let default = if optional { None } else { Some(EPOCH_DEFAULT) };
    logical("string", optional, "io.debezium.time.ZonedTimestamp", None, default, name)
}

fn row_fields(table: Table) -> Vec<String> {
    match table {
        Table::Attributes => vec![
            field("int64", false, None, "attribute_id"),
            field("int64", false, None, "tenant_id"),
            field("string", false, None, "entity_type"),
            field("string", false, None, "name"),
            field("string", false, None, "data_type"),
            field("boolean", false, Some("false"), "is_hot"),
            zoned(false, "created_at"),
        ],
        Table::Entities => vec![
            field("int64", false, None, "entity_id"),
            field("int64", false, None, "tenant_id"),
            field("string", false, None, "entity_type"),
            logical("string", false, "io.debezium.data.Json", None, Some("\"{}\""), "hot_attributes"),
            field("int64", false, Some("1"), "version"),
            field("boolean", false, Some("false"), "is_deleted"),
            zoned(false, "created_at"),
            zoned(false, "updated_at"),
        ],
        Table::EntityValues => vec![
            field("int64", false, None, "entity_id"),
            field("int64", false, None, "attribute_id"),
            field("int64", false, None, "tenant_id"),
            field("string", true, None, "value_text"),
            field("int64", true, None, "value_int"),
            logical(
                "bytes",
                true,
                "org.apache.kafka.connect.data.Decimal",
                Some(r#"{"scale":"9","connect.decimal.precision":"38"}"#),
                None,
                "value_decimal",
            ),
            field("boolean", true, None, "value_bool"),
            zoned(true, "value_timestamp"),
            logical("string", true, "io.debezium.data.Json", None, None, "value_json"),
            zoned(false, "updated_at"),
        ],
    }
}

fn envelope_schema(table: Table) -> String {
    let prefix = format!("{SERVER_NAME}.public.{}", table_name(table));
    let row = row_fields(table).join(",");
    let image = |which: &str| {
        format!(r#"{{"type":"struct","fields":[{row}],"optional":true,"name":"{prefix}.Value","field":"{which}"}}"#)
    };
    let source = [
        field("string", false, None, "version"),
        field("string", false, None, "connector"),
        field("string", false, None, "name"),
        field("int64", false, None, "ts_ms"),
        logical(
            "string",
            true,
            "io.debezium.data.Enum",
            Some(r#"{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"}"#),
            Some("\"false\""),
            "snapshot",
        ),
        field("string", false, None, "db"),
        field("string", true, None, "sequence"),
        field("int64", true, None, "ts_us"),
        field("int64", true, None, "ts_ns"),
        field("string", false, None, "schema"),
        field("string", false, None, "table"),
        field("int64", true, None, "txId"),
        field("int64", true, None, "lsn"),
        field("int64", true, None, "xmin"),
    ]
    .join(",");
    let block = [
        field("string", false, None, "id"),
        field("int64", false, None, "total_order"),
        field("int64", false, None, "data_collection_order"),
    ]
    .join(",");
    format!(
        concat!(
            r#"{{"type":"struct","fields":[{before},{after},"#,
            r#"{{"type":"struct","fields":[{source}],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"}},"#,
            r#"{{"type":"struct","fields":[{block}],"optional":true,"name":"event.block","version":1,"field":"transaction"}},"#,
            r#"{op},{ts_ms},{ts_us},{ts_ns}],"optional":false,"name":"{prefix}.Envelope","version":2}}"#
        ),
        before = image("before"),
        after = image("after"),
        source = source,
        block = block,
        op = field("string", false, None, "op"),
        ts_ms = field("int64", true, None, "ts_ms"),
        ts_us = field("int64", true, None, "ts_us"),
        ts_ns = field("int64", true, None, "ts_ns"),
        prefix = prefix,
    )
}

impl Schemas {
    pub(crate) fn new() -> Schemas {
        let collection = format!(
            r#"{{"type":"struct","fields":[{},{}],"optional":true,"name":"event.collection","version":1}}"#,
            field("string", false, None, "data_collection"),
            field("int64", false, None, "event_count")
        );
        let transaction = format!(
            r#"{{"type":"struct","fields":[{},{},{},{{"type":"array","items":{collection},"optional":true,"field":"data_collections"}},{}],"optional":false,"name":"io.debezium.connector.common.TransactionMetadataValue","version":1}}"#,
            field("string", false, None, "status"),
            field("string", false, None, "id"),
            field("int64", true, None, "event_count"),
            field("int64", false, None, "ts_ms"),
        );
        let heartbeat = format!(
            r#"{{"type":"struct","fields":[{}],"optional":false,"name":"io.debezium.connector.common.Heartbeat","version":1}}"#,
            field("int64", false, None, "ts_ms")
        );
        Schemas { tables: TABLES.map(envelope_schema), transaction, heartbeat }
    }
}

// ---------------------------------------------------------------------------------------------
// The output stream.

/// Buffers lines for the caller's writer, counts them, and remembers the last change records so
/// that a Debezium restart can re-send them byte for byte.
pub(crate) struct Sink<'w> {
    out: &'w mut dyn Write,
    pub buf: Vec<u8>,
    pub lines: u64,
    /// The last streamed change records, each with whether a tombstone followed it.
    recent: VecDeque<(Vec<u8>, bool)>,
    recent_cap: usize,
    /// Whether the last line written went into `recent`.
    last_remembered: bool,
}

const FLUSH_AT: usize = 1 << 20;

impl<'w> Sink<'w> {
    pub(crate) fn new(out: &'w mut dyn Write, recent_cap: usize) -> Sink<'w> {
        Sink {
            out,
            buf: Vec::with_capacity(FLUSH_AT + (64 << 10)),
            lines: 0,
            recent: VecDeque::new(),
            recent_cap,
            last_remembered: false,
        }
    }

    /// Where the next line starts in `buf`.
    #[inline]
    pub(crate) fn start(&self) -> usize {
        self.buf.len()
    }

    /// Ends the line begun at `start`; `remember`: a streamed change that a restart may re-send.
    /// Returns its 1-based line number.
    pub(crate) fn end_line(&mut self, start: usize, remember: bool) -> io::Result<u64> {
        self.last_remembered = remember && self.recent_cap > 0;
        if self.last_remembered {
            let (mut line, _) =
                if self.recent.len() == self.recent_cap { self.recent.pop_front() } else { None }.unwrap_or_default();
            line.clear();
            line.extend_from_slice(&self.buf[start..]);
            self.recent.push_back((line, false));
        }
        self.buf.push(b'\n');
        self.lines += 1;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(self.lines)
    }

    /// A Kafka tombstone (null value), as a file source shows it.
    pub(crate) fn tombstone(&mut self) -> io::Result<u64> {
        if self.last_remembered {
            if let Some(last) = self.recent.back_mut() {
                last.1 = true;
            }
        }
        let start = self.start();
        self.buf.extend_from_slice(b"null");
        self.end_line(start, false)
    }

    /// Drops the remembered records (after a restart, re-sends start over).
    pub(crate) fn forget(&mut self) {
        self.recent.clear();
        self.last_remembered = false;
    }

    pub(crate) fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// Writes the last `n` remembered change records again (with the tombstones that followed
    /// them), as Debezium does after a restart from an offset older than what it had sent.
    pub(crate) fn resend(&mut self, n: usize) -> io::Result<()> {
        let skip = self.recent.len().saturating_sub(n);
        for (line, tombstone) in self.recent.iter().skip(skip) {
            self.buf.extend_from_slice(line);
            self.buf.push(b'\n');
            self.lines += 1;
            if *tombstone {
                self.buf.extend_from_slice(b"null\n");
                self.lines += 1;
            }
        }
        self.last_remembered = false;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.flush()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    #[test]
    fn decimals_in_every_form() {
        assert_eq!(s(|o| push_decimal_plain(o, 12_340_000_000)), "12.340000000");
        assert_eq!(s(|o| push_decimal_plain(o, -5)), "-0.000000005");
        assert_eq!(s(|o| push_decimal_plain(o, 0)), "0.000000000");
        assert_eq!(s(|o| push_decimal_short(o, 12_500_000_000)), "12.5");
        assert_eq!(s(|o| push_decimal_short(o, -3_000_000_000)), "-3");
        assert_eq!(s(|o| push_decimal_short(o, 1)), "0.000000001");
        // BigInteger.toByteArray(): minimal two's complement, a 0x00 only to keep a sign bit clear.
        assert_eq!(s(|o| push_decimal_base64(o, 123)), "ew==");
        assert_eq!(s(|o| push_decimal_base64(o, 128)), "AIA=");
        assert_eq!(s(|o| push_decimal_base64(o, -123)), "hQ==");
        assert_eq!(s(|o| push_decimal_base64(o, 0)), "AA==");
        for v in [0i128, 1, -1, 127, 128, -128, -129, i64::MAX as i128 * 1000, -(10i128.pow(37)), 10i128.pow(38) - 1] {
            let text = s(|o| push_decimal_base64(o, v));
            assert_eq!(crate::decode::value::unscaled_from_base64(&text), Ok(v), "{v}");
        }
    }

    #[test]
    fn timestamps() {
        let base = 1_709_287_200_000_000; // 2024-03-01T10:00:00Z
        assert_eq!(s(|o| push_timestamp(o, base + 5, TimeStyle::Zoned)), "2024-03-01T10:00:00.000005Z");
        assert_eq!(s(|o| push_timestamp(o, base, TimeStyle::Offset(120))), "2024-03-01T12:00:00+02:00");
        assert_eq!(
            s(|o| push_timestamp(o, base + 250_000, TimeStyle::Offset(-300))),
            "2024-03-01T05:00:00.250000-05:00"
        );
        assert_eq!(s(|o| push_timestamp(o, -1, TimeStyle::Zoned)), "1969-12-31T23:59:59.999999Z");
        for us in [base, -86_400_000_001, 951_782_400_000_000 /* 2000-02-29 */, 4_102_444_800_000_000] {
            for style in [TimeStyle::Zoned, TimeStyle::Offset(0), TimeStyle::Offset(-300)] {
                let text = s(|o| push_timestamp(o, us, style));
                assert_eq!(crate::decode::value::parse_timestamp(&text), Ok(us), "{text}");
            }
        }
    }

    #[test]
    fn escaping_matches_jackson_and_postgres() {
        assert_eq!(s(|o| push_json_str(o, "a\"b\\c\nd\u{1}é")), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(s(|o| push_pg_str(o, "\u{1f}")), "\"\\u001f\"");
        assert_eq!(jsonb_key_cmp("zz", "aaa"), std::cmp::Ordering::Less);
    }

    #[test]
    fn schemas_are_valid_json() {
        let s = Schemas::new();
        for text in s.tables.iter().chain([&s.transaction, &s.heartbeat]) {
            let v: serde_json::Value = serde_json::from_str(text).expect("schema JSON");
            assert_eq!(v["type"], "struct");
        }
        let v: serde_json::Value = serde_json::from_str(&s.tables[2]).unwrap_or_default();
        let after = &v["fields"][1]["fields"];
        assert_eq!(after[5]["name"], "org.apache.kafka.connect.data.Decimal");
        assert_eq!(after[5]["parameters"]["scale"], "9");
    }
}
