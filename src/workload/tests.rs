//! Tests of the generator against eavlake's own decoder and against an independent, naive replay
//! of the decoded stream.

use super::*;
use crate::decode::json::{hot_decimal, hot_timestamp, JsonDecoder};
use crate::decode::value::rescale;
use crate::decode::{
    AttributeRow, DecimalMode, DecodeOptions, EntityRow, Event, Field, Op, RowChange, TableNames, ValueRow,
};
use crate::dedup::RowKey;
use crate::position::SourcePosition;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};

fn spec(events: u64, format: WorkloadFormat) -> WorkloadSpec {
    WorkloadSpec { events, format, ..WorkloadSpec::default() }
}

fn run(spec: &WorkloadSpec) -> (Vec<u8>, GroundTruth) {
    let mut out = Vec::new();
    let truth = generate(spec, &mut out).expect("generation into a Vec cannot fail");
    (out, truth)
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    assert_eq!(v.pop(), Some(&b""[..]), "output ends with a newline");
    v
}

fn decoder(format: WorkloadFormat) -> JsonDecoder {
    let options = match format {
        WorkloadFormat::Plain => DecodeOptions { decimal_mode: DecimalMode::String, ..DecodeOptions::default() },
        WorkloadFormat::WithSchemas => DecodeOptions::default(),
    };
    JsonDecoder::new(options, TableNames::default())
}

const FORMATS: [WorkloadFormat; 2] = [WorkloadFormat::Plain, WorkloadFormat::WithSchemas];

#[test]
fn deterministic_for_a_seed() {
    for format in FORMATS {
        let s = WorkloadSpec { events: 5_000, format, ..WorkloadSpec::default() };
        let (a, ta) = run(&s);
        let (b, tb) = run(&s);
        assert!(a == b, "same seed, same bytes");
        assert_eq!(ta, tb);
        let (c, _) = run(&WorkloadSpec { seed: 43, ..s });
        assert!(a != c, "another seed, another stream");
    }
}

#[test]
fn counts_match_the_spec() {
    for format in FORMATS {
        let s = spec(10_000, format);
        let (out, truth) = run(&s);
        let lines = lines(&out);
        assert_eq!(truth.change_events, s.events);
        assert!(truth.duplicates > 0);
        assert_eq!(truth.lines, lines.len() as u64);
        let begins = lines.iter().filter(|l| contains(l, b"\"status\":\"BEGIN\"")).count() as u64;
        let ends = lines.iter().filter(|l| contains(l, b"\"status\":\"END\"")).count() as u64;
        assert_eq!((begins, ends), (truth.transactions, truth.transactions));
        let reasons: HashSet<&str> = truth.dead_letters.iter().map(|(_, r)| *r).collect();
        assert_eq!(reasons.len(), 4, "every poison kind occurs: {reasons:?}");
        assert!(truth.current.len() > 100);
        // Several commit dates, as the lake partitions by date.
        let dates: HashSet<String> = lines
            .iter()
            .filter_map(|l| find_after(l, b"\"status\":\"END\""))
            .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .filter_map(|v| v.pointer("/ts_ms").or(v.pointer("/payload/ts_ms")).and_then(|t| t.as_i64()))
            .map(|ms| crate::decode::value::date_of(ms * 1000))
            .collect();
        assert!(dates.len() >= 3, "{dates:?}");
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn find_after<'a>(line: &'a [u8], needle: &[u8]) -> Option<&'a [u8]> {
    contains(line, needle).then_some(line)
}

#[test]
fn both_formats_decode_except_the_poison() {
    for format in FORMATS {
        let (out, truth) = run(&spec(10_000, format));
        let mut dec = decoder(format);
        let expected: HashMap<u64, &str> = truth.dead_letters.iter().copied().collect();
        let (mut changes, mut tombstones) = (0u64, 0u64);
        for (i, line) in lines(&out).into_iter().enumerate() {
            let n = i as u64 + 1;
            match dec.decode(Some(line)) {
                Ok(ev) => {
                    if let Some(reason) = expected.get(&n) {
                        assert!(
                            matches!(reason, &"unknown_attribute" | &"type_mismatch"),
                            "line {n} should not decode ({reason})"
                        );
                    }
                    match ev {
                        Event::Change { .. } => changes += 1,
                        Event::Tombstone => tombstones += 1,
                        Event::Transaction { .. } | Event::Heartbeat => {}
                        other => panic!("line {n}: unexpected {other:?}"),
                    }
                }
                Err(e) => assert_eq!(expected.get(&n), Some(&e.reason()), "line {n}: {e}"),
            }
        }
        let catalog_poison =
            truth.dead_letters.iter().filter(|(_, r)| matches!(*r, "unknown_attribute" | "type_mismatch")).count();
        assert_eq!(changes, truth.change_events + truth.duplicates + catalog_poison as u64);
        assert!(tombstones > 0);
    }
}

/// Positions never fall along the stream except in re-sends; a bulk load's rows share theirs
/// (rows of one WAL record, as `COPY` writes them), while change LSNs go back (interleaved
/// transactions).
#[test]
fn positions_never_fall_while_lsns_do() {
    for format in FORMATS {
        let (out, truth) = run(&spec(20_000, format));
        let mut dec = decoder(format);
        let mut max: Option<SourcePosition> = None;
        let mut rows_at_max: HashSet<RowKey> = HashSet::new();
        let mut max_lsn = 0;
        let (mut dups, mut lsn_regressions, mut shared) = (0, 0, 0);
        let mut seen: HashSet<&[u8]> = HashSet::new();
        for line in lines(&out) {
            let Ok(Event::Change { op, source, row, .. }) = dec.decode(Some(line)) else { continue };
            if source.snapshot {
                continue;
            }
            let key = RowKey::of(op, &row).expect("every change has its row's key");
            let resent = match max {
                Some(m) if source.position < m => true,
                Some(m) if source.position == m => rows_at_max.contains(&key),
                _ => false,
            };
            if resent {
                dups += 1;
                assert!(seen.contains(line), "a re-send repeats an earlier record byte for byte");
                continue;
            }
            if max == Some(source.position) {
                shared += 1;
            } else {
                rows_at_max.clear();
            }
            rows_at_max.insert(key);
            if source.position.lsn.0 < max_lsn {
                lsn_regressions += 1;
            }
            max_lsn = max_lsn.max(source.position.lsn.0);
            max = Some(source.position);
            seen.insert(line);
        }
        assert_eq!(dups, truth.duplicates);
        assert!(lsn_regressions > 0, "interleaved transactions make change LSNs go back");
        assert!(shared > 100, "bulk loads' rows share positions: {shared}");
    }
}

/// A replay as naive as possible: tables as maps keyed by primary key, the catalog to name and
/// type values, no cleverness beyond dropping re-sends: changes of a row at a position applied
/// before.
#[derive(Default)]
struct Replay {
    attributes: HashMap<i64, AttributeRow>,
    entities: HashMap<i64, EntityRow>,
    values: HashMap<(i64, i64), ValueRow>,
    applied: HashSet<(SourcePosition, RowKey)>,
    dead: Vec<(u64, &'static str)>,
    duplicates: u64,
}

fn keep<T: Clone>(new: Field<T>, old: Option<&Field<T>>) -> Field<T> {
    match (new, old) {
        (Field::Unavailable, Some(old)) => old.clone(),
        (Field::Unavailable, None) => panic!("placeholder for a value never seen"),
        (new, _) => new,
    }
}

impl Replay {
    fn apply(&mut self, n: u64, ev: Event) {
        let Event::Change { op, source, row, .. } = ev else { return };
        if !source.snapshot {
            let key = RowKey::of(op, &row).expect("every change has its row's key");
            if !self.applied.insert((source.position, key)) {
                self.duplicates += 1;
                return;
            }
        }
        match row {
            RowChange::Attribute { after, .. } => {
                let a = after.expect("attribute inserts only");
                self.attributes.insert(a.attribute_id, a);
            }
            RowChange::Entity { before, after } => {
                if op == Op::Delete {
                    let b = before.expect("delete with before image");
                    assert!(b.tenant_id.is_some() && b.entity_type.is_some(), "REPLICA IDENTITY FULL");
                    self.entities.remove(&b.entity_id);
                    return;
                }
                let mut a = after.expect("after image");
                let old = self.entities.get(&a.entity_id);
                a.hot_attributes = keep(a.hot_attributes, old.map(|o| &o.hot_attributes));
                self.entities.insert(a.entity_id, a);
            }
            RowChange::Value { before, after } => {
                let row = after.as_ref().or(before.as_ref()).expect("an image");
                let Some(attr) = self.attributes.get(&row.attribute_id) else {
                    self.dead.push((n, "unknown_attribute"));
                    return;
                };
                if !column_matches(row, attr.data_type) {
                    self.dead.push((n, "type_mismatch"));
                    return;
                }
                assert!(!attr.is_hot, "hot attributes never live in entity_values");
                let key = (row.entity_id, row.attribute_id);
                if op == Op::Delete {
                    assert!(self.values.remove(&key).is_some(), "delete of an existing value");
                    return;
                }
                let mut a = after.expect("after image");
                let old = self.values.get(&key);
                a.value_text = keep(a.value_text, old.map(|o| &o.value_text));
                a.value_json = keep(a.value_json, old.map(|o| &o.value_json));
                self.values.insert(key, a);
            }
        }
    }

    fn current(&self) -> BTreeMap<(String, i64, i64), BTreeMap<String, Expected>> {
        let by_name: HashMap<(i64, &str, &str), &AttributeRow> =
            self.attributes.values().map(|a| ((a.tenant_id, a.entity_type.as_str(), a.name.as_str()), a)).collect();
        let mut out = BTreeMap::new();
        for e in self.entities.values().filter(|e| !e.is_deleted) {
            let tenant = e.tenant_id.expect("tenant");
            let etype = e.entity_type.as_deref().expect("type").to_string();
            let mut attrs = BTreeMap::new();
            let Field::Value(hot) = &e.hot_attributes else { panic!("hot attributes unknown") };
            let hot: BTreeMap<String, Box<RawValue>> = serde_json::from_str(hot).expect("hot JSONB");
            for (name, raw) in hot {
                if raw.get() == "null" {
                    continue;
                }
                let a = by_name.get(&(tenant, etype.as_str(), name.as_str())).expect("hot key in the catalog");
                assert!(a.is_hot);
                let raw = raw.get();
                let v = match a.data_type {
                    DataType::Text => Expected::Text(serde_json::from_str(raw).expect("string")),
                    DataType::Int => Expected::Int(serde_json::from_str(raw).expect("int")),
                    DataType::Decimal => {
                        Expected::Decimal(rescale(hot_decimal(raw).expect("decimal"), 9).expect("scale"))
                    }
                    DataType::Bool => Expected::Bool(serde_json::from_str(raw).expect("bool")),
                    DataType::Timestamp => Expected::Timestamp(hot_timestamp(raw).expect("timestamp")),
                    DataType::Json => Expected::Json(serde_json::from_str(raw).expect("json")),
                };
                attrs.insert(name, v);
            }
            out.insert((etype, tenant, e.entity_id), attrs);
        }
        for ((entity, attribute), v) in &self.values {
            let a = &self.attributes[attribute];
            let Some(e) = self.entities.get(entity) else { panic!("value of a deleted entity {entity}") };
            assert_eq!((e.tenant_id, e.entity_type.as_deref()), (Some(a.tenant_id), Some(a.entity_type.as_str())));
            assert_eq!(v.tenant_id, e.tenant_id);
            if e.is_deleted {
                continue;
            }
            let value = match a.data_type {
                DataType::Text => field(&v.value_text).map(Expected::Text),
                DataType::Int => v.value_int.map(Expected::Int),
                DataType::Decimal => v.value_decimal.map(|d| Expected::Decimal(rescale(d, 9).expect("scale"))),
                DataType::Bool => v.value_bool.map(Expected::Bool),
                DataType::Timestamp => v.value_timestamp.map(Expected::Timestamp),
                DataType::Json => {
                    field(&v.value_json).map(|j| Expected::Json(serde_json::from_str(&j).expect("json value")))
                }
            };
            if let Some(value) = value {
                let key = (a.entity_type.clone(), a.tenant_id, *entity);
                out.get_mut(&key).expect("live entity").insert(a.name.clone(), value);
            }
        }
        out
    }
}

fn field(f: &Field<compact_str::CompactString>) -> Option<String> {
    match f {
        Field::Value(v) => Some(v.to_string()),
        Field::Null => None,
        Field::Unavailable => panic!("placeholder left after replay"),
    }
}

/// Only the column of the attribute's type may be non-null.
fn column_matches(v: &ValueRow, t: DataType) -> bool {
    let set = [
        (DataType::Text, !v.value_text.is_null()),
        (DataType::Int, v.value_int.is_some()),
        (DataType::Decimal, v.value_decimal.is_some()),
        (DataType::Bool, v.value_bool.is_some()),
        (DataType::Timestamp, v.value_timestamp.is_some()),
        (DataType::Json, !v.value_json.is_null()),
    ];
    set.iter().all(|(ty, present)| !present || *ty == t)
}

#[test]
fn replay_agrees_with_the_ground_truth() {
    for (format, seed, events, max_bulk) in
        [(WorkloadFormat::Plain, 42, 30_000, 1000), (WorkloadFormat::WithSchemas, 7, 12_000, 50)]
    {
        let s = WorkloadSpec { events, format, seed, max_bulk, tenants: 3, ..WorkloadSpec::default() };
        let (out, truth) = run(&s);
        let mut dec = decoder(format);
        let mut replay = Replay::default();
        for (i, line) in lines(&out).into_iter().enumerate() {
            let n = i as u64 + 1;
            match dec.decode(Some(line)) {
                Ok(ev) => replay.apply(n, ev),
                Err(e) => replay.dead.push((n, e.reason())),
            }
        }
        assert_eq!(replay.dead, truth.dead_letters);
        assert_eq!(replay.duplicates, truth.duplicates);
        let catalog: BTreeMap<(i64, String, String), DataType> = replay
            .attributes
            .values()
            .map(|a| ((a.tenant_id, a.entity_type.clone(), a.name.clone()), a.data_type))
            .collect();
        assert_eq!(catalog, truth.catalog);
        assert!(catalog.len() > 3 * 26, "attributes were added while running");
        let current = replay.current();
        assert_eq!(current.len(), truth.current.len());
        for (key, attrs) in &truth.current {
            assert_eq!(current.get(key), Some(attrs), "entity {key:?}");
        }
        // Every data type occurs, hot and cold.
        let kinds: HashSet<std::mem::Discriminant<Expected>> =
            truth.current.values().flat_map(|m| m.values()).map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), 6);
    }
}

#[test]
fn tiny_and_odd_specs() {
    for events in [0, 1, 7, 100, 300, 2_000] {
        for tenants in [0, 1, 5] {
            for format in FORMATS {
                let s = WorkloadSpec { events, tenants, format, max_bulk: 0, ..WorkloadSpec::default() };
                let (out, truth) = run(&s);
                assert_eq!(truth.change_events, events, "{s:?}");
                assert_eq!(truth.lines, lines(&out).len() as u64);
                let mut dec = decoder(format);
                let dead: HashSet<u64> = truth.dead_letters.iter().map(|(n, _)| *n).collect();
                for (i, line) in lines(&out).into_iter().enumerate() {
                    let r = dec.decode(Some(line));
                    assert!(r.is_ok() || dead.contains(&(i as u64 + 1)), "{s:?} line {}: {r:?}", i + 1);
                }
            }
        }
    }
}

#[test]
fn records_look_like_debezium() {
    let (out, truth) = run(&spec(3_000, WorkloadFormat::Plain));
    let lines = lines(&out);
    let parsed: Vec<Option<serde_json::Value>> = lines.iter().map(|l| serde_json::from_slice(l).ok()).collect();
    // The snapshot first, marked first … last, at one LSN.
    let first = parsed[0].as_ref().expect("JSON");
    assert_eq!(first["op"], "r");
    assert_eq!(first["source"]["snapshot"], "first");
    assert_eq!(first["source"]["table"], "attributes");
    let mut keys: Vec<&str> = first.as_object().map(|o| o.keys().map(|k| k.as_str()).collect()).unwrap_or_default();
    keys.sort_unstable();
    let mut sorted = vec!["after", "before", "op", "source", "transaction", "ts_ms", "ts_ns", "ts_us"];
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    let source_keys: Vec<&str> =
        first["source"].as_object().map(|o| o.keys().map(|k| k.as_str()).collect()).unwrap_or_default();
    assert_eq!(source_keys.len(), 14);
    let snapshot_lsn = &first["source"]["lsn"];
    let last_snap = parsed.iter().flatten().rfind(|v| v["op"] == "r").expect("snapshot");
    assert_eq!(last_snap["source"]["snapshot"], "last");
    assert_eq!(&last_snap["source"]["lsn"], snapshot_lsn);
    assert_eq!(first["source"]["sequence"], format!("[null,\"{}\"]", snapshot_lsn));
    // Raw byte order is Debezium's, not serde_json's sorted map.
    assert!(lines[0].starts_with(b"{\"before\":null,\"after\":{\"attribute_id\":"));
    assert!(contains(
        lines[0],
        b",\"source\":{\"version\":\"2.7.3.Final\",\"connector\":\"postgresql\",\"name\":\"eav\","
    ));

    let mut deletes = 0;
    let mut in_tx: Option<(String, u64)> = None;
    for (i, v) in parsed.iter().enumerate() {
        let Some(v) = v else { continue };
        if v["op"] == "d" {
            deletes += 1;
            assert_eq!(lines[i + 1], b"null", "tombstone after a delete");
            assert!(v["after"].is_null() && v["before"].is_object());
        }
        match v["status"].as_str() {
            Some("BEGIN") => {
                assert!(v["event_count"].is_null() && v["data_collections"].is_null());
                in_tx = Some((v["id"].as_str().unwrap_or_default().to_string(), 0));
            }
            Some("END") => {
                let (id, count) = in_tx.take().expect("END after BEGIN");
                assert_eq!(v["id"], id);
                let collections = v["data_collections"].as_array().expect("collections");
                let sum: u64 = collections.iter().filter_map(|c| c["event_count"].as_u64()).sum();
                assert_eq!(v["event_count"].as_u64(), Some(sum));
                // Re-sends may land inside a transaction's frame only between transactions.
                assert_eq!(count, sum, "transaction {id}");
            }
            _ => {}
        }
        if let (Some((id, count)), Some(tx)) = (in_tx.as_mut(), v.get("transaction").filter(|t| !t.is_null())) {
            // Ids are `txId:LSN`, the LSN each event's own: the txId part tells the transaction.
            let xid = |s: &str| s.split(':').next().unwrap_or_default().to_string();
            if xid(tx["id"].as_str().unwrap_or_default()) == xid(id) {
                *count += 1;
                assert_eq!(tx["total_order"].as_u64(), Some(*count));
            }
        }
        if v["source"]["table"] == "entity_values" {
            if let Some(d) = v["after"]["value_decimal"].as_str() {
                let (_, frac) = d.split_once('.').expect("plain decimal");
                assert_eq!(frac.len(), 9, "{d}");
            }
        }
        if v["source"]["table"] == "entities" && v["op"] == "c" {
            let hot = v["after"]["hot_attributes"].as_str().expect("jsonb text");
            assert!(hot.starts_with('{') && !hot.contains("\",\"") && !hot.contains("\":\""), "{hot}");
        }
    }
    assert!(deletes > 0);
    let toasted = lines.iter().filter(|l| contains(l, b"__debezium_unavailable_value")).count();
    assert!(toasted >= 2);
    assert!(!truth.dead_letters.is_empty());
}

#[test]
fn schemas_travel_with_every_record() {
    let (out, _) = run(&spec(2_000, WorkloadFormat::WithSchemas));
    let mut decimals = 0;
    for line in lines(&out) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if v.is_null() || v.get("hello").is_some() {
            continue;
        }
        assert!(v["schema"].is_object() && v["payload"].is_object(), "{v}");
        if v["payload"]["source"]["table"] == "entity_values" {
            if let Some(d) = v["payload"]["after"]["value_decimal"].as_str() {
                assert!(crate::decode::value::unscaled_from_base64(d).is_ok());
                decimals += 1;
            }
            assert!(v["schema"]["name"].as_str().is_some_and(|n| n.ends_with("entity_values.Envelope")));
        }
    }
    assert!(decimals > 0);
}

/// `cargo test --release --lib workload::tests::speed -- --ignored --nocapture`
/// (`WORKLOAD_EVENTS=10000000` for another size).
#[test]
#[ignore]
fn speed() {
    let events = std::env::var("WORKLOAD_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    for format in FORMATS {
        let s = WorkloadSpec { events, format, ..WorkloadSpec::default() };
        let mut sink = CountingSink(0);
        let t = std::time::Instant::now();
        let truth = generate(&s, &mut sink).expect("generate");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{format:?}: {} events, {} lines, {:.0} MB in {secs:.2} s: {:.0} events/s, {} live entities",
            truth.change_events,
            truth.lines,
            sink.0 as f64 / 1e6,
            truth.change_events as f64 / secs,
            truth.current.len()
        );
    }
}

struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a sample to `WORKLOAD_OUT` for inspection.
#[test]
#[ignore]
fn sample() {
    let events = std::env::var("WORKLOAD_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let path = std::env::var("WORKLOAD_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("workload.jsonl"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let truth = generate(&WorkloadSpec { events, ..WorkloadSpec::default() }, &mut f).expect("generate");
    println!("{:?}", (truth.lines, truth.change_events, truth.duplicates, truth.transactions, truth.dead_letters));
}
