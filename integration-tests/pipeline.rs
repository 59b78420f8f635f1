//! Pipeline tests on small, hand-made Debezium streams: each test writes a few JSON lines (the
//! PostgreSQL connector's no-schema form, one helper per source table), runs them through
//! `eavlake run`'s file job (or the [`StreamPipeline`] driven by hand, to crash it or compact
//! between flushes), and reads the lake back from Parquet and JSON lines to check exact outcomes:
//! the current state value for value, the change files, the dead letters and the run's counters.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType as ArrowType, Int64Type, SchemaRef};
use base64::Engine;
use eavlake::columns;
use eavlake::compact::CompactStats;
use eavlake::config::Config;
use eavlake::decode::{DataType, DecimalMode};
use eavlake::metrics::RunStats;
use eavlake::pipeline::StreamPipeline;
use eavlake::run::RunReport;
use eavlake::sink::Lake;
use eavlake::source::file::FileSource;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Debezium records, as the PostgreSQL connector writes them through JsonConverter with
// `schemas.enable=false`.

/// Source commit time of the first transaction: 2024-03-01T10:00:00Z.
const TS0_MS: i64 = 1_709_287_200_000;
const FIRST_TX: i64 = 770;

/// Where a change sits in the source's history.
#[derive(Debug, Clone, Copy)]
struct At {
    tx: i64,
    /// Debezium's `sequence[0]`: the last commit LSN before the change's transaction.
    commit: u64,
    lsn: u64,
}

/// Hands out positions the way PostgreSQL and Debezium do: transactions in commit order, each
/// carrying the last commit LSN before it, and its changes at rising LSNs.
struct Wal {
    tx: i64,
    commit: u64,
    lsn: u64,
}

impl Wal {
    fn new() -> Wal {
        Wal { tx: FIRST_TX, commit: 22_900_000, lsn: 22_900_000 }
    }

    /// Position of the first change of a new transaction.
    fn tx(&mut self) -> At {
        self.tx += 1;
        self.commit = self.lsn + 16;
        self.lsn += 64;
        At { tx: self.tx, commit: self.commit, lsn: self.lsn }
    }

    /// Position of the next change of the current transaction.
    fn same(&mut self) -> At {
        self.lsn += 8;
        At { tx: self.tx, commit: self.commit, lsn: self.lsn }
    }
}

fn ts_ms(at: At) -> i64 {
    TS0_MS + (at.tx - FIRST_TX) * 1_000
}

fn source(table: &str, at: At) -> String {
    let ms = ts_ms(at);
    format!(
        r#"{{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":{ms},"snapshot":"false","db":"eavstore","sequence":"[\"{c}\",\"{l}\"]","ts_us":{us},"ts_ns":{ns},"schema":"public","table":"{table}","txId":{tx},"lsn":{l},"xmin":null}}"#,
        c = at.commit,
        l = at.lsn,
        us = ms * 1_000,
        ns = ms * 1_000_000,
        tx = at.tx,
    )
}

fn envelope(table: &str, op: &str, before: Option<String>, after: Option<String>, at: At) -> String {
    format!(
        r#"{{"before":{},"after":{},"source":{},"transaction":{{"id":"{}:{}","total_order":1,"data_collection_order":1}},"op":"{op}","ts_ms":{}}}"#,
        before.as_deref().unwrap_or("null"),
        after.as_deref().unwrap_or("null"),
        source(table, at),
        // Debezium's PostgreSQL transaction id is `txId:LSN` with each event's own LSN.
        at.tx,
        at.lsn,
        ts_ms(at) + 333,
    )
}

/// A row of `attributes` (entity type `customer`).
#[derive(Debug, Clone)]
struct Attr {
    id: i64,
    tenant: i64,
    name: &'static str,
    data_type: &'static str,
    hot: bool,
}

fn attr(id: i64, name: &'static str, data_type: &'static str) -> Attr {
    Attr { id, tenant: 1, name, data_type, hot: false }
}

/// A change of `attributes`.
fn attribute(op: &str, before: Option<&Attr>, after: Option<&Attr>, at: At) -> String {
    let image = |a: &Attr| {
        format!(
            r#"{{"attribute_id":{},"tenant_id":{},"entity_type":"customer","name":"{}","data_type":"{}","is_hot":{},"created_at":"2024-03-01T10:00:00Z"}}"#,
            a.id, a.tenant, a.name, a.data_type, a.hot
        )
    };
    envelope("attributes", op, before.map(image), after.map(image), at)
}

/// A row of `entities` (entity type `customer`); `hot` is the `hot_attributes` JSONB as text,
/// or Debezium's TOAST placeholder.
#[derive(Debug, Clone)]
struct Ent {
    id: i64,
    tenant: i64,
    hot: String,
    /// `is_deleted`: deleted logically.
    deleted: bool,
}

fn ent(id: i64) -> Ent {
    Ent { id, tenant: 1, hot: "{}".into(), deleted: false }
}

/// A change of `entities`.
fn entity(op: &str, before: Option<&Ent>, after: Option<&Ent>, at: At) -> String {
    let image = |e: &Ent| {
        format!(
            r#"{{"entity_id":{},"tenant_id":{},"entity_type":"customer","hot_attributes":{},"version":1,"is_deleted":{},"created_at":"2024-03-01T10:00:00Z","updated_at":"2024-03-01T10:00:00Z"}}"#,
            e.id,
            e.tenant,
            serde_json::to_string(&e.hot).unwrap(),
            e.deleted
        )
    };
    envelope("entities", op, before.map(image), after.map(image), at)
}

/// A cold value, in its typed column.
#[derive(Debug, Clone)]
enum V {
    Text(&'static str),
    Int(i64),
    /// `value_text` is Debezium's placeholder for an unchanged TOASTed value.
    Toast,
}

/// A row of `entity_values`.
#[derive(Debug, Clone)]
struct Val {
    entity: i64,
    attr: i64,
    tenant: i64,
    v: V,
}

fn val(entity: i64, attr: i64, v: V) -> Val {
    Val { entity, attr, tenant: 1, v }
}

/// A change of `entity_values`.
fn value(op: &str, before: Option<&Val>, after: Option<&Val>, at: At) -> String {
    let image = |v: &Val| {
        let (text, int) = match &v.v {
            V::Text(s) => (serde_json::to_string(s).unwrap(), "null".to_string()),
            V::Int(i) => ("null".to_string(), i.to_string()),
            V::Toast => ("\"__debezium_unavailable_value\"".to_string(), "null".to_string()),
        };
        format!(
            r#"{{"entity_id":{},"attribute_id":{},"tenant_id":{},"value_text":{text},"value_int":{int},"value_decimal":null,"value_bool":null,"value_timestamp":null,"value_json":null,"updated_at":"2024-03-01T10:00:00Z"}}"#,
            v.entity, v.attr, v.tenant
        )
    };
    envelope("entity_values", op, before.map(image), after.map(image), at)
}

/// `TRUNCATE entity_values`.
fn truncate(table: &str, at: At) -> String {
    format!(r#"{{"source":{},"op":"t","ts_ms":{}}}"#, source(table, at), ts_ms(at) + 100)
}

/// `pg_logical_emit_message(true, 'eavlake', 'repair')`.
fn message(at: At) -> String {
    let s = source("", at).replace(r#""schema":"public""#, r#""schema":"""#);
    format!(r#"{{"op":"m","ts_ms":{},"source":{s},"message":{{"prefix":"eavlake","content":"cmVwYWly"}}}}"#, ts_ms(at))
}

// ---------------------------------------------------------------------------------------------
// Running.

fn config(lake: &Path) -> Config {
    let mut c = Config::default();
    c.lake.url = lake.to_str().unwrap().to_string();
    c.decode.decimal_handling_mode = DecimalMode::String;
    c
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Writes `lines` to `file` and runs `eavlake run --source file:<file>` on them.
async fn run(config: &Config, file: &Path, lines: &[String]) -> RunReport {
    write_lines(file, lines);
    eavlake::run::run_file(config, file).await.unwrap()
}

async fn compact(config: &Config) -> CompactStats {
    let lake = Lake::open(&config.lake.url, &config.s3_options()).unwrap();
    eavlake::run::compact(config, &lake).await.unwrap()
}

/// `eavlake run`'s loop driven by hand, so that a test can stop it where it likes: dropping it
/// without [`Driver::finish`] is a crash, and the lake can be compacted between flushes.
struct Driver {
    pipeline: StreamPipeline,
    source: FileSource,
    from: i64,
}

impl Driver {
    async fn open(config: &Config, file: &Path) -> Driver {
        let lake = Lake::open(&config.lake.url, &config.s3_options()).unwrap();
        let source = FileSource::open(file).unwrap();
        let pipeline = StreamPipeline::open(lake, source.stream(), config.pipeline_options(), None).await.unwrap();
        let from = pipeline.resume_seq();
        Driver { pipeline, source, from }
    }

    /// Processes the next `n` records, flushing whenever the batches call for it.
    async fn step(&mut self, n: usize) {
        for _ in 0..n {
            let rec = self.source.next_from(self.from).unwrap().expect("the file has more records");
            self.pipeline.process(&rec);
            if self.pipeline.should_flush() {
                self.pipeline.flush().await.unwrap();
            }
        }
    }

    /// Processes the rest of the file and finishes, as the end of a file run does.
    async fn finish(mut self) -> RunStats {
        while let Some(rec) = self.source.next_from(self.from).unwrap() {
            self.pipeline.process(&rec);
            if self.pipeline.should_flush() {
                self.pipeline.flush().await.unwrap();
            }
        }
        self.pipeline.finish().await.unwrap();
        self.pipeline.stats.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the lake back.

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_with(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn read_parquet(path: &Path) -> (SchemaRef, Vec<RecordBatch>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches = builder.build().unwrap().map(|b| b.unwrap()).collect();
    (schema, batches)
}

/// An attribute value as read back.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Int(i64),
    Text(String),
}

fn t(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

fn n(i: i64) -> Cell {
    Cell::Int(i)
}

fn cell(col: &ArrayRef, dt: DataType, row: usize) -> Option<Cell> {
    if col.is_null(row) {
        return None;
    }
    Some(match dt {
        DataType::Int => Cell::Int(col.as_primitive::<Int64Type>().value(row)),
        DataType::Text | DataType::Json => Cell::Text(col.as_string::<i32>().value(row).to_string()),
        other => panic!("these tests use no {other:?} attributes"),
    })
}

/// The non-null attribute cells of one row.
fn cells(batch: &RecordBatch, row: usize) -> BTreeMap<String, Cell> {
    let mut out = BTreeMap::new();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        let Some((_, dt)) = columns::attribute_of(field) else { continue };
        if let Some(c) = cell(batch.column(i), dt, row) {
            out.insert(field.name().clone(), c);
        }
    }
    out
}

fn int64_column(batch: &RecordBatch, name: &str) -> Vec<i64> {
    batch.column_by_name(name).unwrap().as_primitive::<Int64Type>().values().to_vec()
}

/// (tenant, entity) → attribute → value, without nulls.
type State = BTreeMap<(i64, i64), BTreeMap<String, Cell>>;

/// Expected attribute values of one entity.
type Attrs<'a> = &'a [(&'a str, Cell)];

fn state(entries: &[(i64, i64, Attrs)]) -> State {
    entries
        .iter()
        .map(|(tenant, id, attrs)| {
            ((*tenant, *id), attrs.iter().map(|(name, c)| (name.to_string(), c.clone())).collect())
        })
        .collect()
}

/// The current state of entity type `customer`; an entity found twice fails the test.
fn read_current(lake: &Path) -> State {
    let mut out = State::new();
    for path in files_with(&lake.join("current/customer"), "parquet") {
        for batch in read_parquet(&path).1 {
            let tenants = int64_column(&batch, columns::TENANT_ID);
            let ids = int64_column(&batch, columns::ENTITY_ID);
            for row in 0..batch.num_rows() {
                let key = (tenants[row], ids[row]);
                assert!(out.insert(key, cells(&batch, row)).is_none(), "entity {key:?} twice in current/");
            }
        }
    }
    out
}

/// Attribute columns of the current-state files: name → Arrow type (the same in every file).
fn current_columns(lake: &Path) -> BTreeMap<String, ArrowType> {
    let mut out = BTreeMap::new();
    for path in files_with(&lake.join("current/customer"), "parquet") {
        for field in read_parquet(&path).0.fields() {
            if columns::attribute_of(field).is_some() {
                let before = out.insert(field.name().clone(), field.data_type().clone());
                assert!(before.is_none_or(|b| &b == field.data_type()), "{} differs between files", field.name());
            }
        }
    }
    out
}

/// One change row, as read back from `changes/`.
#[derive(Debug, Clone, PartialEq)]
struct ChangeRow {
    entity: i64,
    seq: i64,
    op: String,
    cells: BTreeMap<String, Cell>,
}

/// One change file: its name, its schema and its rows.
#[derive(Debug)]
struct ChangeFile {
    name: String,
    schema: SchemaRef,
    rows: Vec<ChangeRow>,
}

impl ChangeFile {
    fn column_type(&self, name: &str) -> Option<ArrowType> {
        self.schema.field_with_name(name).ok().map(|f| f.data_type().clone())
    }
}

fn change_files(lake: &Path) -> Vec<ChangeFile> {
    let mut out = Vec::new();
    for path in files_with(&lake.join("changes"), "parquet") {
        let (schema, batches) = read_parquet(&path);
        let mut rows = Vec::new();
        for batch in &batches {
            let ids = int64_column(batch, columns::ENTITY_ID);
            let seqs = int64_column(batch, columns::SEQ);
            let ops = batch.column_by_name(columns::OP).unwrap().as_string::<i32>().clone();
            for r in 0..batch.num_rows() {
                rows.push(ChangeRow {
                    entity: ids[r],
                    seq: seqs[r],
                    op: ops.value(r).to_string(),
                    cells: cells(batch, r),
                });
            }
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        out.push(ChangeFile { name, schema, rows });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every change row of the lake as (entity, _seq), sorted.
fn change_keys(lake: &Path) -> Vec<(i64, i64)> {
    let mut keys: Vec<(i64, i64)> =
        change_files(lake).iter().flat_map(|f| f.rows.iter().map(|r| (r.entity, r.seq))).collect();
    keys.sort();
    keys
}

/// Every dead-letter line of the lake, in line order.
fn dead_letters(lake: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = files_with(&lake.join("dead_letters"), "jsonl")
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<_>>()
        })
        .collect();
    out.sort_by_key(|v| v["line"].as_i64());
    out
}

fn file_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_with(dir, "parquet")
        .into_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().to_str().unwrap().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// The change file name of a flush of `events.jsonl` covering lines `first..=last`.
fn flush_name(first: i64, last: i64) -> String {
    format!("file-events.jsonl-{first:012}-{last:012}.parquet")
}

// ---------------------------------------------------------------------------------------------
// 1. Unknown attributes wait for the catalog.

/// A value whose attribute (99) is not in the catalog yet waits; when the attributes `c` event
/// for 99 arrives a few lines later, the value is applied: the current state has it, and nothing
/// is a dead letter.
#[tokio::test]
async fn value_of_an_unknown_attribute_waits_for_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let (name, score) = (attr(1, "name", "text"), attr(99, "score", "int"));
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&name), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        // Line 4: attribute 99 is not known yet.
        value("c", None, Some(&val(1, 99, V::Int(7))), w.tx()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
        // Line 7: the catalog learns attribute 99.
        attribute("c", None, Some(&score), w.tx()),
        entity("c", None, Some(&ent(3)), w.tx()),
        value("c", None, Some(&val(3, 99, V::Int(9))), w.same()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;

    assert_eq!(report.stats.dead_letter_total(), 0, "{:?}", report.stats.dead_letters);
    assert_eq!((report.stats.changes, report.stats.catalog_changes), (7, 2));
    assert!(dead_letters(&lake).is_empty());
    assert_eq!(
        read_current(&lake),
        state(&[
            (1, 1, &[("name", t("Ada")), ("score", n(7))]),
            (1, 2, &[("name", t("Bob"))]),
            (1, 3, &[("score", n(9))]),
        ])
    );
    assert_eq!(current_columns(&lake)["score"], ArrowType::Int64);
}

/// A value moved by one update (Debezium sends a change of the primary key so when the topic is
/// keyed by other columns, `message.key.columns`): to another attribute of the entity, to
/// another entity, and to an attribute the catalog learns a few lines later (the move waits,
/// then lands whole). The old rows' values are gone from the current state.
#[tokio::test]
async fn a_value_moved_by_one_update_leaves_its_old_row() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let (name, nick, alias) = (attr(1, "name", "text"), attr(2, "nick", "text"), attr(3, "alias", "text"));
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&name), w.tx()),
        attribute("c", None, Some(&nick), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        entity("c", None, Some(&ent(2)), w.same()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
        value("c", None, Some(&val(2, 2, V::Text("B"))), w.same()),
        entity("c", None, Some(&ent(3)), w.same()),
        value("u", Some(&val(1, 1, V::Text("Ada"))), Some(&val(1, 2, V::Text("Ada"))), w.tx()),
        value("u", Some(&val(2, 1, V::Text("Bob"))), Some(&val(3, 1, V::Text("Bob"))), w.tx()),
        // Attribute 3 is not known yet: the move waits for it.
        value("u", Some(&val(2, 2, V::Text("B"))), Some(&val(2, 3, V::Text("B"))), w.tx()),
        attribute("c", None, Some(&alias), w.tx()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;

    assert_eq!(report.stats.dead_letter_total(), 0, "{:?}", report.stats.dead_letters);
    assert_eq!(
        read_current(&lake),
        state(&[(1, 1, &[("nick", t("Ada"))]), (1, 2, &[("alias", t("B"))]), (1, 3, &[("name", t("Bob"))])])
    );
}

/// With `catalog.unknown_attribute_wait = 3`, a value whose attribute arrives only 5 records
/// later gives up: it becomes a dead letter (reason `unknown_attribute`, its line number, the
/// record as it was), and everything else still lands, including later values of the attribute.
#[tokio::test]
async fn value_of_an_attribute_that_stays_unknown_becomes_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.catalog.unknown_attribute_wait = 3;
    let (name, score) = (attr(1, "name", "text"), attr(99, "score", "int"));
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&name), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        // Line 4: waits for records 5, 6, 7, then gives up.
        value("c", None, Some(&val(1, 99, V::Int(7))), w.tx()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
        entity("c", None, Some(&ent(3)), w.tx()),
        value("c", None, Some(&val(3, 1, V::Text("Cy"))), w.same()),
        // Line 9: 5 records after line 4, too late.
        attribute("c", None, Some(&score), w.tx()),
        entity("c", None, Some(&ent(4)), w.tx()),
        value("c", None, Some(&val(4, 99, V::Int(11))), w.same()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;

    assert_eq!(report.stats.dead_letters, BTreeMap::from([("unknown_attribute", 1)]));
    let dl = dead_letters(&lake);
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["line"], 4);
    assert_eq!(dl[0]["reason"], "unknown_attribute");
    assert_eq!(dl[0]["stream"], "file-events.jsonl");
    assert_eq!(dl[0]["value"], lines[3].as_str());
    assert_eq!(dl[0]["message"], "attribute id 99 is not in the catalog");
    assert_eq!(
        read_current(&lake),
        state(&[
            (1, 1, &[("name", t("Ada"))]),
            (1, 2, &[("name", t("Bob"))]),
            (1, 3, &[("name", t("Cy"))]),
            (1, 4, &[("score", n(11))]),
        ])
    );
}

/// The bound is inclusive: with `catalog.unknown_attribute_wait = 3`, a value waits for 3
/// further records, so an attribute arriving as the 3rd record after the value still places it.
#[tokio::test]
async fn value_waits_for_exactly_unknown_attribute_wait_records() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.catalog.unknown_attribute_wait = 3;
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        // Line 4 waits for records 5, 6 and 7.
        value("c", None, Some(&val(1, 99, V::Int(7))), w.tx()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
        attribute("c", None, Some(&attr(99, "score", "int")), w.tx()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;

    assert_eq!(report.stats.dead_letters, BTreeMap::new());
    assert_eq!(
        read_current(&lake),
        state(&[(1, 1, &[("name", t("Ada")), ("score", n(7))]), (1, 2, &[("name", t("Bob"))])])
    );
}

/// A new entity and a value of a not-yet-known attribute in one transaction, the entity's own
/// row folding a later change too, and the transaction over before the catalog learns the
/// attribute: the waiting value must still land on the new entity (it exists: its insert is in
/// the very same transaction).
#[tokio::test]
async fn parked_value_of_an_entity_created_in_the_same_transaction_lands() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let (name, score) = (attr(1, "name", "text"), attr(99, "score", "int"));
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&name), w.tx()),
        entity("c", None, Some(&ent(7)), w.tx()),
        // Waits for the catalog; the rest of the transaction goes on.
        value("c", None, Some(&val(7, 99, V::Int(5))), w.same()),
        value("c", None, Some(&val(7, 1, V::Text("Eve"))), w.same()),
        // Another transaction ends entity 7's before the catalog learns attribute 99.
        entity("c", None, Some(&ent(8)), w.tx()),
        attribute("c", None, Some(&score), w.tx()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;

    assert_eq!(report.stats.dead_letter_total(), 0);
    assert_eq!(report.stats.changes, 4);
    // The waiting value becomes a row of its own with `_seq` 3; the entity's row has `_seq` 2
    // (a row sorts by its first change), so compaction creates the entity before the value.
    assert_eq!(change_keys(&lake), [(7, 2), (7, 3), (8, 5)]);
    assert_eq!(read_current(&lake), state(&[(1, 7, &[("name", t("Eve")), ("score", n(5))]), (1, 8, &[])]));
}

/// The wait is bounded in records, whatever the records are: with a wait of 3, a value followed
/// by 4 catalog records (say, a snapshot of other attributes) and then its own attribute has
/// waited too long and is a dead letter, as it would be had the 4 records been value changes.
#[tokio::test]
async fn parked_value_expires_after_its_wait_even_among_catalog_records() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.catalog.unknown_attribute_wait = 3;
    let mut w = Wal::new();
    let mut lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        value("c", None, Some(&val(1, 99, V::Int(7))), w.tx()),
    ];
    for (id, name) in [(10, "f10"), (11, "f11"), (12, "f12"), (13, "f13")] {
        lines.push(attribute("c", None, Some(&attr(id, name, "text")), w.tx()));
    }
    lines.push(attribute("c", None, Some(&attr(99, "score", "int")), w.tx()));
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;

    assert_eq!(report.stats.dead_letters, BTreeMap::from([("unknown_attribute", 1)]));
    assert_eq!(read_current(&lake), state(&[(1, 1, &[("name", t("Ada"))])]));
}

// ---------------------------------------------------------------------------------------------
// 2. A new attribute mid-stream.

/// An attribute created mid-stream becomes a new column without a restart: change files
/// flushed before the catalog knew it lack the column, those flushed after have it (typed
/// Int64, null for rows that did not set it), and the current state has it.
#[tokio::test]
async fn new_attribute_mid_stream_becomes_a_new_column() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.batch.max_rows = 1;
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
        // Line 6: a new attribute.
        attribute("c", None, Some(&attr(2, "age", "int")), w.tx()),
        entity("c", None, Some(&ent(3)), w.tx()),
        value("c", None, Some(&val(3, 1, V::Text("Cy"))), w.same()),
        value("c", None, Some(&val(3, 2, V::Int(30))), w.same()),
        value("c", None, Some(&val(1, 2, V::Int(36))), w.tx()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;
    assert_eq!(report.stats.dead_letter_total(), 0);

    let files = change_files(&lake);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, [flush_name(1, 3), flush_name(4, 6), flush_name(7, 9), flush_name(10, 10)]);
    // Entity 1's insert was flushed before line 6: no `age` column.
    assert_eq!(files[0].column_type("age"), None);
    assert_eq!(
        files[0].rows,
        [ChangeRow { entity: 1, seq: 2, op: "c".into(), cells: cells_of(&[("name", t("Ada"))]) }]
    );
    // Entity 2's row reached its batch after line 6 (its transaction ended at line 7).
    for f in &files[1..] {
        assert_eq!(f.column_type("age"), Some(ArrowType::Int64), "{}", f.name);
    }
    assert_eq!(files[1].rows[0].cells, cells_of(&[("name", t("Bob"))]));
    assert_eq!(files[2].rows[0].cells, cells_of(&[("age", n(30)), ("name", t("Cy"))]));
    assert_eq!(files[3].rows[0], ChangeRow { entity: 1, seq: 10, op: "u".into(), cells: cells_of(&[("age", n(36))]) });

    assert_eq!(
        read_current(&lake),
        state(&[
            (1, 1, &[("name", t("Ada")), ("age", n(36))]),
            (1, 2, &[("name", t("Bob"))]),
            (1, 3, &[("name", t("Cy")), ("age", n(30))]),
        ])
    );
    assert_eq!(
        current_columns(&lake),
        BTreeMap::from([("age".into(), ArrowType::Int64), ("name".into(), ArrowType::Utf8)])
    );
}

fn cells_of(attrs: &[(&str, Cell)]) -> BTreeMap<String, Cell> {
    attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

// ---------------------------------------------------------------------------------------------
// 3. Data type changes.

/// The stream of the type-change tests: `age` int and `code` text, two entities, then `age`
/// becomes text and `code` int (lines 9 and 10), then a third entity with values of the new
/// types.
fn type_change_stream() -> Vec<String> {
    let (age, code) = (attr(5, "age", "int"), attr(6, "code", "text"));
    let (age_text, code_int) = (attr(5, "age", "text"), attr(6, "code", "int"));
    let mut w = Wal::new();
    vec![
        attribute("c", None, Some(&age), w.tx()),
        attribute("c", None, Some(&code), w.same()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 5, V::Int(42))), w.same()),
        value("c", None, Some(&val(1, 6, V::Text("abc"))), w.same()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 5, V::Int(7))), w.same()),
        value("c", None, Some(&val(2, 6, V::Text("12"))), w.same()),
        attribute("u", Some(&age), Some(&age_text), w.tx()),
        attribute("u", Some(&code), Some(&code_int), w.tx()),
        entity("c", None, Some(&ent(3)), w.tx()),
        value("c", None, Some(&val(3, 5, V::Text("hello"))), w.same()),
        value("c", None, Some(&val(3, 6, V::Int(5))), w.same()),
    ]
}

fn type_change_current() -> State {
    // `code` "abc" of entity 1 has no int value: null, counted.
    state(&[
        (1, 1, &[("age", t("42"))]),
        (1, 2, &[("age", t("7")), ("code", n(12))]),
        (1, 3, &[("age", t("hello")), ("code", n(5))]),
    ])
}

/// An attribute's type change mid-stream never corrupts a file: change files written before
/// the change still read with the old types (`age` Int64, `code` Utf8), later ones with the new
/// (`age` Utf8, `code` Int64). The current state has the new types with old values converted
/// (42 → "42", "12" → 12); "abc" cannot become an int: null in current and counted in
/// `values_not_convertible`. Nothing panics.
#[tokio::test]
async fn attribute_type_change_keeps_old_files_and_converts_current() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.batch.max_rows = 1;
    let report = run(&cfg, &dir.path().join("events.jsonl"), &type_change_stream()).await;
    assert_eq!(report.stats.dead_letter_total(), 0, "{:?}", report.stats.dead_letters);
    assert_eq!(report.compaction.as_ref().unwrap().values_not_convertible, 1);

    let files = change_files(&lake);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, [flush_name(1, 5), flush_name(6, 9), flush_name(10, 13)]);
    for f in &files[..2] {
        assert_eq!(f.column_type("age"), Some(ArrowType::Int64), "{}", f.name);
        assert_eq!(f.column_type("code"), Some(ArrowType::Utf8), "{}", f.name);
    }
    assert_eq!(files[0].rows[0].cells, cells_of(&[("age", n(42)), ("code", t("abc"))]));
    assert_eq!(files[1].rows[0].cells, cells_of(&[("age", n(7)), ("code", t("12"))]));
    assert_eq!(files[2].column_type("age"), Some(ArrowType::Utf8));
    assert_eq!(files[2].column_type("code"), Some(ArrowType::Int64));
    assert_eq!(files[2].rows[0].cells, cells_of(&[("age", t("hello")), ("code", n(5))]));

    assert_eq!(
        current_columns(&lake),
        BTreeMap::from([("age".into(), ArrowType::Utf8), ("code".into(), ArrowType::Int64)])
    );
    assert_eq!(read_current(&lake), type_change_current());
}

/// The same type changes with the default batch size, so that the rows before and after the
/// change are flushed together: they need two files (a file never mixes two types in one
/// column), and every row must land in one of them.
#[tokio::test]
async fn attribute_type_change_inside_one_flush_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let report = run(&cfg, &dir.path().join("events.jsonl"), &type_change_stream()).await;
    assert_eq!(report.stats.dead_letter_total(), 0);
    assert_eq!(report.stats.rows_written, 3);

    let keys = change_keys(&lake);
    assert_eq!(keys, [(1, 3), (2, 6), (3, 11)], "one change row per entity");
    assert_eq!(read_current(&lake), type_change_current());
}

// ---------------------------------------------------------------------------------------------
// 4. TRUNCATE and logical decoding messages.

/// A TRUNCATE (op `t`) is not applied but kept: a dead letter with reason `truncate` whose
/// `value` is the record byte for byte. A logical decoding message (op `m`) is not table data:
/// counted in `stats.messages`, not a dead letter. The changes around both land.
#[tokio::test]
async fn truncate_is_a_dead_letter_and_message_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        truncate("entity_values", w.tx()),
        message(w.tx()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;

    assert_eq!(report.stats.messages, 1);
    assert_eq!(report.stats.dead_letters, BTreeMap::from([("truncate", 1)]));
    assert_eq!(report.stats.changes, 4);
    let dl = dead_letters(&lake);
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["line"], 4);
    assert_eq!(dl[0]["reason"], "truncate");
    assert_eq!(dl[0]["value"], lines[3].as_str());
    assert!(dl[0].get("value_base64").is_none());
    assert_eq!(read_current(&lake), state(&[(1, 1, &[("name", t("Ada"))]), (1, 2, &[("name", t("Bob"))])]));
}

// ---------------------------------------------------------------------------------------------
// 5. TOAST.

/// Debezium's TOAST placeholder in a later transaction (so a later flush, with
/// `batch.max_rows = 1`) keeps the earlier value: `value_text` of a cold attribute and
/// `hot_attributes` of an entity both read `__debezium_unavailable_value`, and the current state
/// still has the values of the insert.
#[tokio::test]
async fn toast_placeholder_keeps_the_earlier_value() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.batch.max_rows = 1;
    let bio = attr(1, "bio", "text");
    let tier = Attr { hot: true, ..attr(2, "tier", "text") };
    let gold = Ent { hot: r#"{"tier": "gold"}"#.into(), ..ent(1) };
    let toasted = Ent { hot: "__debezium_unavailable_value".into(), ..ent(1) };
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&bio), w.tx()),
        attribute("c", None, Some(&tier), w.same()),
        entity("c", None, Some(&gold), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("a long biography"))), w.same()),
        value("u", Some(&val(1, 1, V::Toast)), Some(&val(1, 1, V::Toast)), w.tx()),
        entity("u", None, Some(&toasted), w.tx()),
        entity("c", None, Some(&Ent { hot: r#"{"tier": "silver"}"#.into(), ..ent(2) }), w.tx()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;
    assert_eq!(report.stats.dead_letter_total(), 0, "{:?}", report.stats.dead_letters);

    // The insert and each TOAST update are in files of their own.
    let files = change_files(&lake);
    let rows: Vec<(String, i64, i64)> =
        files.iter().flat_map(|f| f.rows.iter().map(|r| (f.name.clone(), r.entity, r.seq))).collect();
    assert_eq!(
        rows,
        [(flush_name(1, 4), 1, 3), (flush_name(5, 5), 1, 5), (flush_name(6, 6), 1, 6), (flush_name(7, 7), 2, 7)]
    );
    assert_eq!(files[1].rows[0].cells, BTreeMap::new(), "the TOAST update sets nothing");
    assert_eq!(files[2].rows[0].cells, BTreeMap::new(), "the TOAST update sets nothing");

    assert_eq!(
        read_current(&lake),
        state(&[(1, 1, &[("bio", t("a long biography")), ("tier", t("gold"))]), (1, 2, &[("tier", t("silver"))])])
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Debezium re-sends across runs.

/// Debezium restarts and re-sends its last 3 changes (same source positions, new lines) after a
/// first run of eavlake has ended: the second run, resuming after the first's progress, drops
/// exactly those 3 as duplicates (the dedup mark travels in the progress record), writes no
/// change row for them, and applies the new changes once.
#[tokio::test]
async fn debezium_resend_spanning_two_runs_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let file = dir.path().join("events.jsonl");
    let mut w = Wal::new();
    let mut lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
        value("u", Some(&val(1, 1, V::Text("Ada"))), Some(&val(1, 1, V::Text("Ada L."))), w.tx()),
    ];
    let first = run(&cfg, &file, &lines).await;
    assert_eq!((first.stats.changes, first.stats.duplicates), (5, 0));
    let after_first = change_keys(&lake);
    assert_eq!(after_first, [(1, 2), (1, 6), (2, 4)]);

    // Lines 7-9: the re-send of lines 4-6; then new changes.
    let resent: Vec<String> = lines[3..6].to_vec();
    lines.extend(resent);
    lines.push(entity("c", None, Some(&ent(3)), w.tx()));
    lines.push(value("c", None, Some(&val(3, 1, V::Text("Cy"))), w.same()));
    lines.push(value("u", Some(&val(2, 1, V::Text("Bob"))), Some(&val(2, 1, V::Text("Bob B."))), w.tx()));
    let second = run(&cfg, &file, &lines).await;

    assert_eq!(second.resumed_at_line, 7);
    assert_eq!(second.stats.records, 6);
    assert_eq!(second.stats.duplicates, 3);
    assert_eq!(second.stats.changes, 3);
    assert_eq!(second.stats.dead_letter_total(), 0);
    assert_eq!(change_keys(&lake), [(1, 2), (1, 6), (2, 4), (2, 12), (3, 10)], "nothing from lines 7-9");
    assert_eq!(
        read_current(&lake),
        state(&[(1, 1, &[("name", t("Ada L."))]), (1, 2, &[("name", t("Bob B."))]), (1, 3, &[("name", t("Cy"))])])
    );
}

/// A `COPY`'s rows share their WAL record's LSN, so one source position: each is a change of its
/// own, not a re-send of the first. A first run ends inside the record; Debezium then restarts
/// and re-sends from inside it. The second run applies the record's other rows and drops exactly
/// the re-sent ones (the rows applied at the mark travel in the progress record).
#[tokio::test]
async fn rows_of_one_copy_record_share_a_position_and_all_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let file = dir.path().join("events.jsonl");
    let mut w = Wal::new();
    let mut lines = vec![attribute("c", None, Some(&attr(1, "name", "text")), w.tx())];
    let (entities, values) = (w.tx(), w.same());
    lines.extend((1..=3).map(|id| entity("c", None, Some(&ent(id)), entities)));
    let first = run(&cfg, &file, &lines[..3]).await;
    assert_eq!((first.stats.changes, first.stats.duplicates), (2, 0), "entities 1 and 2 of the record");

    let names = ["Ada", "Bob", "Cy"];
    lines.extend((1..=3).map(|id| value("c", None, Some(&val(id, 1, V::Text(names[id as usize - 1]))), values)));
    // Debezium's re-send from entity 2 on: lines 8-12 repeat lines 3-7.
    let resent: Vec<String> = lines[2..7].to_vec();
    lines.extend(resent);
    lines.push(value("u", Some(&val(2, 1, V::Text("Bob"))), Some(&val(2, 1, V::Text("Bob B."))), w.tx()));
    let second = run(&cfg, &file, &lines).await;

    assert_eq!(second.resumed_at_line, 4);
    assert_eq!((second.stats.changes, second.stats.duplicates), (5, 5));
    assert_eq!(second.stats.dead_letter_total(), 0);
    let keys = change_keys(&lake);
    assert!(keys.iter().all(|(_, line)| *line <= 7 || *line == 13), "nothing from the re-send: {keys:?}");
    assert_eq!(
        read_current(&lake),
        state(&[(1, 1, &[("name", t("Ada"))]), (1, 2, &[("name", t("Bob B."))]), (1, 3, &[("name", t("Cy"))])])
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Compaction is idempotent and incremental.

/// Compacting twice writes nothing the second time; a later run (another stream) with changes
/// of tenant 1 only rewrites tenant 1's range, and tenant 2's current-state object stays the
/// same, byte for byte.
#[tokio::test]
async fn compaction_is_idempotent_and_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let t1 = attr(1, "name", "text");
    let t2 = Attr { tenant: 2, ..attr(2, "name", "text") };
    let ent2 = |id| Ent { tenant: 2, ..ent(id) };
    let val2 = |e, s| Val { tenant: 2, ..val(e, 2, V::Text(s)) };
    let mut w = Wal::new();
    let day1 = vec![
        attribute("c", None, Some(&t1), w.tx()),
        attribute("c", None, Some(&t2), w.same()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        entity("c", None, Some(&ent2(3)), w.tx()),
        value("c", None, Some(&val2(3, "Cy")), w.same()),
        entity("c", None, Some(&ent2(4)), w.tx()),
        value("c", None, Some(&val2(4, "Di")), w.same()),
    ];
    let first = run(&cfg, &dir.path().join("day1.jsonl"), &day1).await;
    let c = first.compaction.unwrap();
    assert_eq!((c.ranges_written, c.rows_applied, c.live_entities), (2, 3, 3));

    let again = compact(&cfg).await;
    assert_eq!(again, CompactStats::default(), "nothing new: nothing read, nothing written");

    let tenant1 = lake.join("current/customer/tenant_id=1");
    let tenant2 = lake.join("current/customer/tenant_id=2");
    let (t1_before, t2_before) = (file_bytes(&tenant1), file_bytes(&tenant2));
    assert_eq!(t2_before.keys().collect::<Vec<_>>(), ["entities-000000000000-000000099999.parquet"]);

    let day2 = vec![
        value("u", Some(&val(1, 1, V::Text("Ada"))), Some(&val(1, 1, V::Text("Ada L."))), w.tx()),
        entity("c", None, Some(&ent(5)), w.tx()),
        value("c", None, Some(&val(5, 1, V::Text("Eve"))), w.same()),
    ];
    let second = run(&cfg, &dir.path().join("day2.jsonl"), &day2).await;
    let c = second.compaction.unwrap();
    assert_eq!((c.ranges_written, c.change_files_read, c.rows_applied, c.live_entities), (1, 1, 2, 2));
    assert_eq!(file_bytes(&tenant2), t2_before, "tenant 2's current state is untouched");
    assert_ne!(file_bytes(&tenant1), t1_before);
    assert_eq!(
        read_current(&lake),
        state(&[
            (1, 1, &[("name", t("Ada L."))]),
            (1, 5, &[("name", t("Eve"))]),
            (2, 3, &[("name", t("Cy"))]),
            (2, 4, &[("name", t("Di"))]),
        ])
    );
    assert_eq!(compact(&cfg).await.ranges_written, 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Entity id ranges.

/// With `lake.range_size = 10`, entities 5, 15 and 25 land in three current-state objects
/// named `entities-<lo>-<hi>.parquet`, each entity in exactly its own. Deleting entity 15 later
/// empties its range: the object stays, readable, with 0 rows; the untouched range 0-9 is not
/// rewritten.
#[tokio::test]
async fn entities_land_in_their_id_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.lake.range_size = 10;
    let file = dir.path().join("events.jsonl");
    let mut w = Wal::new();
    let mut lines = vec![attribute("c", None, Some(&attr(1, "name", "text")), w.tx())];
    for (id, name) in [(5, "five"), (15, "fifteen"), (25, "twenty-five")] {
        lines.push(entity("c", None, Some(&ent(id)), w.tx()));
        lines.push(value("c", None, Some(&val(id, 1, V::Text(name))), w.same()));
    }
    let first = run(&cfg, &file, &lines).await;
    assert_eq!(first.compaction.unwrap().ranges_written, 3);

    let dir_current = lake.join("current/customer/tenant_id=1");
    let ids_in = |name: &str| -> Vec<i64> {
        read_parquet(&dir_current.join(name)).1.iter().flat_map(|b| int64_column(b, columns::ENTITY_ID)).collect()
    };
    let range_files = [
        "entities-000000000000-000000000009.parquet",
        "entities-000000000010-000000000019.parquet",
        "entities-000000000020-000000000029.parquet",
    ];
    assert_eq!(file_bytes(&dir_current).keys().map(String::as_str).collect::<Vec<_>>(), range_files);
    assert_eq!([ids_in(range_files[0]), ids_in(range_files[1]), ids_in(range_files[2])], [[5], [15], [25]]);
    let range0 = std::fs::read(dir_current.join(range_files[0])).unwrap();

    // Entity 15 is deleted (its values cascade), entity 25 renamed.
    lines.push(entity("d", Some(&ent(15)), None, w.tx()));
    lines.push(value("d", Some(&val(15, 1, V::Text("fifteen"))), None, w.same()));
    lines.push(value("u", Some(&val(25, 1, V::Text("twenty-five"))), Some(&val(25, 1, V::Text("25"))), w.tx()));
    let second = run(&cfg, &file, &lines).await;
    let c = second.compaction.unwrap();
    assert_eq!((c.ranges_written, c.live_entities), (2, 1));

    assert_eq!(file_bytes(&dir_current).keys().map(String::as_str).collect::<Vec<_>>(), range_files);
    assert_eq!(std::fs::read(dir_current.join(range_files[0])).unwrap(), range0, "range 0-9 not rewritten");
    let (schema, batches) = read_parquet(&dir_current.join(range_files[1]));
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    assert!(schema.field_with_name(columns::ENTITY_ID).is_ok() && schema.field_with_name("name").is_ok());
    assert_eq!(read_current(&lake), state(&[(1, 5, &[("name", t("five"))]), (1, 25, &[("name", t("25"))])]));
}

/// A logically deleted entity leaves the current state and comes back with its values when it
/// is un-deleted, including a value written while it was deleted (the store kept them all;
/// Debezium sends only the entity's row at the un-delete). Meanwhile its values wait in one
/// object under `_eavlake/retired/`, named by the range's current object, replaced by a new one
/// at each compaction that changes it, and gone once no entity of the range is retired. A
/// physically deleted entity is forgotten.
#[tokio::test]
async fn a_logically_deleted_entity_comes_back_with_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let file = dir.path().join("events.jsonl");
    let retired_dir = lake.join("_eavlake/retired/customer/tenant_id=1");
    let current = lake.join("current/customer/tenant_id=1/entities-000000000000-000000099999.parquet");
    let named = || {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&current).unwrap()).unwrap();
        let kv = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
        kv.into_iter().find(|kv| kv.key == columns::META_RETIRED).and_then(|kv| kv.value)
    };
    let retired_files = || files_with(&retired_dir, "parquet");
    let gone = |e: Ent| Ent { deleted: true, ..e };
    let mut w = Wal::new();
    let mut lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        attribute("c", None, Some(&attr(2, "age", "int")), w.same()),
    ];
    for (id, name) in [(1, "Ada"), (2, "Bo"), (3, "Cy")] {
        lines.push(entity("c", None, Some(&ent(id)), w.tx()));
        lines.push(value("c", None, Some(&val(id, 1, V::Text(name))), w.same()));
        lines.push(value("c", None, Some(&val(id, 2, V::Int(30 + id))), w.same()));
    }
    run(&cfg, &file, &lines).await;
    assert!(named().is_none() && retired_files().is_empty());

    // 1 and 2 deleted logically; 1 gets a new age meanwhile.
    lines.push(entity("u", Some(&ent(1)), Some(&gone(ent(1))), w.tx()));
    lines.push(entity("u", Some(&ent(2)), Some(&gone(ent(2))), w.tx()));
    lines.push(value("u", Some(&val(1, 2, V::Int(31))), Some(&val(1, 2, V::Int(41))), w.tx()));
    let c = run(&cfg, &file, &lines).await.compaction.unwrap();
    assert_eq!((c.live_entities, c.retired_entities), (1, 2));
    assert_eq!(read_current(&lake), state(&[(1, 3, &[("name", t("Cy")), ("age", n(33))])]));
    let first = retired_files();
    assert_eq!(first.len(), 1);
    assert_eq!(named().as_deref(), first[0].strip_prefix(&lake).unwrap().to_str());
    let retired_ids: Vec<i64> =
        read_parquet(&first[0]).1.iter().flat_map(|b| int64_column(b, columns::ENTITY_ID)).collect();
    assert_eq!(retired_ids, [1, 2]);

    // Only 3, which is live, changes: the range's new current object names the same retired one.
    lines.push(value("u", Some(&val(3, 2, V::Int(33))), Some(&val(3, 2, V::Int(34))), w.tx()));
    let c = run(&cfg, &file, &lines).await.compaction.unwrap();
    assert_eq!((c.ranges_written, c.retired_entities), (1, 2));
    assert_eq!(retired_files(), first);
    assert_eq!(named().as_deref(), first[0].strip_prefix(&lake).unwrap().to_str());

    // 2 deleted for good (its values cascade): the retired object is rewritten.
    lines.push(entity("d", Some(&gone(ent(2))), None, w.tx()));
    lines.push(value("d", Some(&val(2, 1, V::Text("Bo"))), None, w.same()));
    lines.push(value("d", Some(&val(2, 2, V::Int(32))), None, w.same()));
    let c = run(&cfg, &file, &lines).await.compaction.unwrap();
    assert_eq!((c.live_entities, c.retired_entities), (1, 1));
    let second = retired_files();
    assert_eq!(second.len(), 1, "the version it replaced is deleted");
    assert_ne!(second, first);

    // 1 un-deleted: its hot attributes set anew, its values back; no entity left retired.
    lines.push(entity("u", Some(&gone(ent(1))), Some(&ent(1)), w.tx()));
    let c = run(&cfg, &file, &lines).await.compaction.unwrap();
    assert_eq!((c.live_entities, c.retired_entities), (2, 0));
    assert_eq!(
        read_current(&lake),
        state(&[(1, 1, &[("name", t("Ada")), ("age", n(41))]), (1, 3, &[("name", t("Cy")), ("age", n(34))])])
    );
    assert!(named().is_none() && retired_files().is_empty());

    // 2 comes back by an insert: nothing of the deleted one.
    lines.push(entity("c", None, Some(&ent(2)), w.tx()));
    run(&cfg, &file, &lines).await;
    assert_eq!(read_current(&lake).get(&(1, 2)), Some(&BTreeMap::new()));
}

/// An object of logically deleted entities that no current object names (left by a compaction
/// that died between its two writes) is deleted by a later compaction of the tenant once it is
/// a day old; a younger one (maybe about to be named) and the named one stay.
#[tokio::test]
async fn a_compaction_deletes_day_old_retired_objects_nobody_names() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let file = dir.path().join("events.jsonl");
    let retired_dir = lake.join("_eavlake/retired/customer/tenant_id=1");
    let mut w = Wal::new();
    let mut lines = vec![attribute("c", None, Some(&attr(1, "name", "text")), w.tx())];
    for id in [1, 2] {
        lines.push(entity("c", None, Some(&ent(id)), w.tx()));
        lines.push(value("c", None, Some(&val(id, 1, V::Text("x"))), w.same()));
    }
    lines.push(entity("u", Some(&ent(1)), Some(&Ent { deleted: true, ..ent(1) }), w.tx()));
    run(&cfg, &file, &lines).await;
    let named = files_with(&retired_dir, "parquet");
    assert_eq!(named.len(), 1);
    let orphan = |name: &str, age_hours: u64| {
        let path = retired_dir.join(name);
        std::fs::copy(&named[0], &path).unwrap();
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_hours * 3600);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
        path
    };
    let old = orphan("entities-000000000000-000000099999-dead-1.parquet", 25);
    let young = orphan("entities-000000000000-000000099999-dead-2.parquet", 23);

    lines.push(value("u", Some(&val(2, 1, V::Text("x"))), Some(&val(2, 1, V::Text("y"))), w.tx()));
    let c = run(&cfg, &file, &lines).await.compaction.unwrap();
    assert_eq!(c.retired_objects_swept, 1);
    assert!(!old.exists() && young.exists() && named[0].exists());
}

/// A purge reaches logically deleted entities too: their rows go from the retired object,
/// which stays (emptied) while the current object names it, and an un-delete after the purge
/// brings nothing back. A purge of the whole tenant removes it.
#[tokio::test]
async fn a_purge_removes_logically_deleted_entities_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let file = dir.path().join("events.jsonl");
    let retired_dir = lake.join("_eavlake/retired/customer/tenant_id=1");
    let store = Lake::open(lake.to_str().unwrap(), &Default::default()).unwrap();
    let purge = |ids: Option<Vec<i64>>| {
        let opts = eavlake::purge::rewrite::PurgeOptions {
            tenant_id: 1,
            entity_ids: ids,
            wait: std::time::Duration::ZERO,
            by: "test".into(),
        };
        let store = store.clone();
        async move { eavlake::purge::rewrite::purge(&store, &opts).await.unwrap() }
    };
    let retired_ids = || -> Vec<i64> {
        files_with(&retired_dir, "parquet")
            .iter()
            .flat_map(|f| read_parquet(f).1)
            .flat_map(|b| int64_column(&b, columns::ENTITY_ID))
            .collect()
    };
    let gone = |e: Ent| Ent { deleted: true, ..e };
    let mut w = Wal::new();
    let mut lines = vec![attribute("c", None, Some(&attr(1, "name", "text")), w.tx())];
    for (id, name) in [(1, "Ada"), (2, "Bo"), (3, "Cy")] {
        lines.push(entity("c", None, Some(&ent(id)), w.tx()));
        lines.push(value("c", None, Some(&val(id, 1, V::Text(name))), w.same()));
    }
    lines.push(entity("u", Some(&ent(1)), Some(&gone(ent(1))), w.tx()));
    lines.push(entity("u", Some(&ent(2)), Some(&gone(ent(2))), w.tx()));
    run(&cfg, &file, &lines).await;
    assert_eq!(retired_ids(), [1, 2]);

    let report = purge(Some(vec![1])).await;
    assert_eq!(report.rows_removed["customer"].current, 1, "{}", report.to_table());
    assert_eq!(retired_ids(), [2]);
    purge(Some(vec![2])).await;
    assert_eq!(retired_ids(), Vec::<i64>::new());
    assert_eq!(files_with(&retired_dir, "parquet").len(), 1, "emptied, not deleted: the current object names it");

    lines.push(entity("u", Some(&gone(ent(1))), Some(&ent(1)), w.tx()));
    lines.push(entity("u", Some(&gone(ent(2))), Some(&ent(2)), w.tx()));
    run(&cfg, &file, &lines).await;
    assert_eq!(read_current(&lake), state(&[(1, 3, &[("name", t("Cy"))])]));

    purge(None).await;
    assert!(files_with(&lake.join("_eavlake/retired"), "parquet").is_empty() && !retired_dir.exists());
}

// ---------------------------------------------------------------------------------------------
// 9. Dead letters keep the bytes.

/// A line that is not UTF-8 becomes a dead letter (`invalid_utf8`) whose `value_base64`
/// decodes to exactly the bytes of the line; the lines around it land.
#[tokio::test]
async fn invalid_utf8_line_is_kept_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let mut w = Wal::new();
    let bad: Vec<u8> =
        b"{\"before\":null,\"after\":{\"entity_id\":9,\"value_text\":\"caf\xe9 \xff\xfe\"},\"op\":\"c\"}".to_vec();
    let lines: Vec<Vec<u8>> = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()).into_bytes(),
        entity("c", None, Some(&ent(1)), w.tx()).into_bytes(),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()).into_bytes(),
        bad.clone(),
        entity("c", None, Some(&ent(2)), w.tx()).into_bytes(),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()).into_bytes(),
    ];
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, [lines.join(&b'\n'), b"\n".to_vec()].concat()).unwrap();
    let report = eavlake::run::run_file(&cfg, &file).await.unwrap();

    assert_eq!(report.stats.dead_letters, BTreeMap::from([("invalid_utf8", 1)]));
    let dl = dead_letters(&lake);
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["line"], 4);
    assert!(dl[0].get("value").is_none(), "not text: only base64");
    let decoded = base64::engine::general_purpose::STANDARD.decode(dl[0]["value_base64"].as_str().unwrap()).unwrap();
    assert_eq!(decoded, bad);
    assert_eq!(read_current(&lake), state(&[(1, 1, &[("name", t("Ada"))]), (1, 2, &[("name", t("Bob"))])]));
}

// ---------------------------------------------------------------------------------------------
// 10. Huge transactions folded in slices.

/// One transaction inserting 5 entities with values, folded 2 entities at a time
/// (`batch.max_pending_entities = 2`, `batch.max_rows = 1` to flush every slice), then an update
/// and a delete.
fn huge_transaction_stream() -> Vec<String> {
    let mut w = Wal::new();
    let mut lines = vec![attribute("c", None, Some(&attr(1, "name", "text")), w.tx())];
    for (id, name) in [(1, "n1"), (2, "n2"), (3, "n3"), (4, "n4"), (5, "n5")] {
        let at = if id == 1 { w.tx() } else { w.same() };
        lines.push(entity("c", None, Some(&ent(id)), at));
        lines.push(value("c", None, Some(&val(id, 1, V::Text(name))), w.same()));
    }
    lines.push(value("u", Some(&val(1, 1, V::Text("n1"))), Some(&val(1, 1, V::Text("n1b"))), w.tx()));
    lines.push(entity("d", Some(&ent(3)), None, w.tx()));
    lines.push(value("d", Some(&val(3, 1, V::Text("n3"))), None, w.same()));
    lines
}

fn huge_transaction_current() -> State {
    state(&[
        (1, 1, &[("name", t("n1b"))]),
        (1, 2, &[("name", t("n2"))]),
        (1, 4, &[("name", t("n4"))]),
        (1, 5, &[("name", t("n5"))]),
    ])
}

fn sliced_config(lake: &Path) -> Config {
    let mut c = config(lake);
    c.batch.max_pending_entities = 2;
    c.batch.max_rows = 1;
    c
}

/// A run that ends in the middle of a huge transaction (the file was cut after entity 4's
/// insert, before its value), then a run of the whole file under the same name and lake, give
/// the same current state as one run of the whole file on a fresh lake.
#[tokio::test]
async fn huge_transaction_cut_in_the_middle_resumes_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let lines = huge_transaction_stream();

    let fresh = dir.path().join("fresh-lake");
    let whole = run(&sliced_config(&fresh), &dir.path().join("whole/events.jsonl"), &lines).await;
    assert!(whole.stats.flushes >= 4, "slices were flushed: {} flushes", whole.stats.flushes);
    assert_eq!(read_current(&fresh), huge_transaction_current());

    let lake = dir.path().join("lake");
    let cfg = sliced_config(&lake);
    let cut = run(&cfg, &dir.path().join("part/events.jsonl"), &lines[..8]).await;
    assert_eq!((cut.stats.records, cut.stats.dead_letter_total()), (8, 0));
    let rest = run(&cfg, &dir.path().join("full/events.jsonl"), &lines).await;
    assert_eq!(rest.resumed_at_line, 9);
    assert_eq!((rest.stats.records, rest.stats.duplicates, rest.stats.dead_letter_total()), (6, 0, 0));

    assert_eq!(read_current(&lake), read_current(&fresh));
    assert_eq!(read_current(&lake), huge_transaction_current());
    let keys = change_keys(&lake);
    assert_eq!(keys.len(), keys.iter().collect::<BTreeSet<_>>().len(), "a change row twice: {keys:?}");
}

/// A crash (the pipeline dropped without finishing) right after a slice of the huge transaction
/// was flushed: the restart resumes inside the transaction, after the durable slice, and ends in
/// the same current state as an uninterrupted run, with no change row written twice.
#[tokio::test]
async fn crash_after_a_slice_flush_resumes_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let lines = huge_transaction_stream();
    let file = dir.path().join("events.jsonl");
    write_lines(&file, &lines);
    let lake = dir.path().join("lake");
    let cfg = sliced_config(&lake);

    let mut d = Driver::open(&cfg, &file).await;
    // Line 6 (entity 3's insert) opens the second slice: entities 1 and 2 are flushed.
    d.step(7).await;
    assert_eq!(d.pipeline.resume_seq(), 6);
    drop(d);

    let d = Driver::open(&cfg, &file).await;
    assert_eq!(d.from, 6, "resumes inside the transaction, after the durable slice");
    let stats = d.finish().await;
    assert_eq!((stats.duplicates, stats.dead_letter_total()), (0, 0));
    compact(&cfg).await;

    assert_eq!(read_current(&lake), huge_transaction_current());
    let keys = change_keys(&lake);
    assert_eq!(keys.len(), keys.iter().collect::<BTreeSet<_>>().len(), "a change row twice: {keys:?}");
}

/// Two streams of one lake (two Kafka partitions; here two files), each carrying the catalog's
/// changes, save the catalog they know at their flushes. The one behind must not take back from
/// the saved catalog an attribute the other has learnt and moved past: restarted, that stream
/// resumes after the attribute's creation, and an entity using it would wait for it in vain and
/// become a dead letter (the entity lost, its later updates with it). Seen in the Kafka crash
/// test, about one run in seven.
#[tokio::test]
async fn a_stream_behind_does_not_take_an_attribute_back_from_the_saved_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let name = Attr { hot: true, ..attr(1, "name", "text") };
    let tier = Attr { hot: true, ..attr(2, "tier", "text") };
    let mut w = Wal::new();
    let (a1, a2, e1, e2) = (w.tx(), w.tx(), w.tx(), w.tx());
    let with = |id: i64, hot: &str| Ent { hot: hot.into(), ..ent(id) };
    let ahead = vec![
        attribute("c", None, Some(&name), a1),
        attribute("c", None, Some(&tier), a2),
        entity("c", None, Some(&with(2, r#"{"name":"Bo","tier":"gold"}"#)), e2),
    ];
    let behind = vec![attribute("c", None, Some(&name), a1), entity("c", None, Some(&with(1, r#"{"name":"Al"}"#)), e1)];
    let (ahead_file, behind_file) = (dir.path().join("ahead.jsonl"), dir.path().join("behind.jsonl"));
    write_lines(&ahead_file, &ahead);
    write_lines(&behind_file, &behind);

    // Both start; the stream ahead learns `tier` and records it; then the one behind flushes
    // what it knows.
    let mut a = Driver::open(&cfg, &ahead_file).await;
    let mut b = Driver::open(&cfg, &behind_file).await;
    a.step(2).await;
    a.pipeline.flush().await.unwrap();
    b.step(2).await;
    b.pipeline.flush().await.unwrap();
    // The stream ahead crashes and resumes after `tier`'s creation.
    drop(a);
    let a = Driver::open(&cfg, &ahead_file).await;
    assert_eq!(a.from, 3, "line 3, the entity using `tier`");
    let stats = a.finish().await;
    assert_eq!(stats.dead_letter_total(), 0, "{:?}", stats.dead_letters);
    b.finish().await;
    compact(&cfg).await;

    assert!(dead_letters(&lake).is_empty());
    assert_eq!(
        read_current(&lake),
        state(&[(1, 1, &[("name", t("Al"))]), (1, 2, &[("name", t("Bo")), ("tier", t("gold"))])])
    );
}

/// The reverse of the case above: the stream ahead has seen an attribute retyped (int to text)
/// and saved that; the stream behind, restarted before the retype, replays a value written
/// while the attribute was still an int. Typed by the saved catalog (text) the value would be a
/// type_mismatch dead letter; typed by the catalog as of its own position it lands as the int it
/// was, and the current state converts it like any value of before a retype. A value the stream
/// behind writes after the retype's position is typed as text.
#[tokio::test]
async fn a_restarted_stream_types_its_replayed_values_as_of_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let (score, score_text) = (attr(1, "score", "int"), attr(1, "score", "text"));
    let mut w = Wal::new();
    // Positions in source order, each value in its entity's transaction.
    let (a1, e1, e1_value, e2, e2_value, retype, later) = (w.tx(), w.tx(), w.same(), w.tx(), w.same(), w.tx(), w.tx());
    let ahead = vec![
        attribute("c", None, Some(&score), a1),
        entity("c", None, Some(&ent(2)), e2),
        value("c", None, Some(&val(2, 1, V::Int(5))), e2_value),
        attribute("u", Some(&score), Some(&score_text), retype),
    ];
    let behind = vec![
        attribute("c", None, Some(&score), a1),
        entity("c", None, Some(&ent(1)), e1),
        value("c", None, Some(&val(1, 1, V::Int(7))), e1_value),
        value("u", Some(&val(1, 1, V::Int(7))), Some(&val(1, 1, V::Text("high"))), later),
    ];
    let (ahead_file, behind_file) = (dir.path().join("ahead.jsonl"), dir.path().join("behind.jsonl"));
    write_lines(&ahead_file, &ahead);
    write_lines(&behind_file, &behind);

    // The stream behind makes the attribute's creation durable, then the one ahead runs to its
    // end (the retype saved in the lake's catalog); the one behind crashes and resumes.
    let mut b = Driver::open(&cfg, &behind_file).await;
    b.step(1).await;
    b.pipeline.flush().await.unwrap();
    drop(b);
    let a = Driver::open(&cfg, &ahead_file).await;
    a.finish().await;
    let b = Driver::open(&cfg, &behind_file).await;
    assert_eq!(b.from, 2, "line 2, entity 1 with its int value");
    let stats = b.finish().await;
    assert_eq!(stats.dead_letter_total(), 0, "{:?}", stats.dead_letters);
    compact(&cfg).await;

    assert!(dead_letters(&lake).is_empty());
    let files = change_files(&lake);
    let typed: Vec<(i64, Option<ArrowType>)> =
        files.iter().flat_map(|f| f.rows.iter().map(|r| (r.entity, f.column_type("score")))).collect();
    assert!(typed.contains(&(1, Some(ArrowType::Int64))), "the replayed value stays an int: {typed:?}");
    assert!(typed.contains(&(1, Some(ArrowType::Utf8))), "the later one is text: {typed:?}");
    assert_eq!(read_current(&lake), state(&[(1, 1, &[("score", t("high"))]), (1, 2, &[("score", t("5"))])]));
}

/// With the catalog topic, a worker reads the attributes' changes ahead of the data partitions:
/// a retype may reach a stream before values written under the old type. They wait for the
/// stream's own changes to reach their positions: the value written before the retype lands as
/// an int, the one after it as text.
#[tokio::test]
async fn attribute_changes_from_the_catalog_topic_apply_at_their_positions() {
    use eavlake::decode::{AttributeRow, Op};
    use eavlake::position::{Lsn, SourcePosition};
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let row = |data_type| AttributeRow {
        attribute_id: 1,
        tenant_id: 1,
        entity_type: "customer".into(),
        name: "score".into(),
        data_type,
        is_hot: false,
    };
    let (score, score_text) = (row(DataType::Int), row(DataType::Text));
    let pos = |at: At| Some(SourcePosition { commit_lsn: Lsn(at.commit), lsn: Lsn(at.lsn) });
    let mut w = Wal::new();
    let (created, e1, e1_value, retype, e2, e2_value) = (w.tx(), w.tx(), w.same(), w.tx(), w.tx(), w.same());
    let lines = vec![
        entity("c", None, Some(&ent(1)), e1),
        value("c", None, Some(&val(1, 1, V::Int(7))), e1_value),
        entity("c", None, Some(&ent(2)), e2),
        value("c", None, Some(&val(2, 1, V::Text("high"))), e2_value),
    ];
    let file = dir.path().join("events.jsonl");
    write_lines(&file, &lines);

    let mut d = Driver::open(&cfg, &file).await;
    d.pipeline.apply_catalog_change(Op::Create, None, Some(&score), pos(created));
    d.pipeline.apply_catalog_change(Op::Update, Some(&score), Some(&score_text), pos(retype));
    d.step(2).await;
    assert_eq!(d.pipeline.catalog().get(1).map(|a| a.data_type), Some(DataType::Int), "not at the retype yet");
    let stats = d.finish().await;
    assert_eq!(stats.dead_letter_total(), 0, "{:?}", stats.dead_letters);
    compact(&cfg).await;

    let typed: Vec<(i64, Option<ArrowType>)> = change_files(&lake)
        .iter()
        .flat_map(|f| f.rows.iter().map(|r| (r.entity, f.column_type("score"))).collect::<Vec<_>>())
        .collect();
    assert_eq!(BTreeSet::from_iter(typed), BTreeSet::from([(1, Some(ArrowType::Int64)), (2, Some(ArrowType::Utf8))]));
    assert_eq!(read_current(&lake), state(&[(1, 1, &[("score", t("7"))]), (1, 2, &[("score", t("high"))])]));
}

/// The source clock flaps across midnight between the transactions of one flush (two servers
/// whose clocks disagree, say): each entity's earlier update lands in one day's change file and
/// its later update in the other's, entity 1 one way and entity 2 the other, so that whichever
/// file is read first, one of them has its updates in two files out of stream order.
/// Compaction applies the rows of a flush in stream order, whatever file they are in: the later
/// update wins for both.
#[tokio::test]
async fn a_clock_flapping_across_midnight_keeps_stream_order() {
    const DAY_MS: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut w = Wal::new();
    let text = |s: &'static str| V::Text(s);
    let (a1, a2, a3) = (val(1, 1, text("a1")), val(1, 1, text("a2")), val(1, 1, text("a3")));
    let (b1, b2, b3) = (val(2, 1, text("b1")), val(2, 1, text("b2")), val(2, 1, text("b3")));
    let mut lines = vec![attribute("c", None, Some(&attr(1, "name", "text")), w.tx())];
    lines.push(entity("c", None, Some(&ent(1)), w.tx()));
    lines.push(value("c", None, Some(&a1), w.same()));
    lines.push(entity("c", None, Some(&ent(2)), w.same()));
    lines.push(value("c", None, Some(&b1), w.same()));
    // The next day by the source clock: ts_ms, and ts_us and ts_ns, which begin with its digits.
    let next_day = |line: String, at: At| line.replace(&ts_ms(at).to_string(), &(ts_ms(at) + DAY_MS).to_string());
    let at = w.tx();
    lines.push(next_day(value("u", Some(&a1), Some(&a2), at), at));
    lines.push(value("u", Some(&a2), Some(&a3), w.tx()));
    lines.push(value("u", Some(&b1), Some(&b2), w.tx()));
    let at = w.tx();
    lines.push(next_day(value("u", Some(&b2), Some(&b3), at), at));

    let report = run(&config(&lake), &dir.path().join("events.jsonl"), &lines).await;
    assert_eq!((report.stats.dead_letter_total(), report.stats.flushes), (0, 1));
    let days: BTreeSet<String> = files_with(&lake.join("changes"), "parquet")
        .iter()
        .map(|p| p.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(days, BTreeSet::from(["date=2024-03-01".to_string(), "date=2024-03-02".to_string()]));
    assert_eq!(read_current(&lake), state(&[(1, 1, &[("name", t("a3"))]), (1, 2, &[("name", t("b3"))])]));
}

// ---------------------------------------------------------------------------------------------
// Parked changes across flushes.

/// Two values wait for their attributes across flushes (`batch.max_rows = 1`), and the lake is
/// compacted between flushes, as `eavlake compact` may be while a worker runs. The first
/// value's row is written (line 10's flush) into a file that also holds a later row, past the
/// durable position, while the second value still waits; compaction meanwhile applies the
/// durable files up to line 7. Once everything is durable, the first value must be in the
/// current state, as it is when the lake is compacted only at the end.
#[tokio::test]
async fn parked_value_survives_compaction_between_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        value("c", None, Some(&val(1, 99, V::Int(7))), w.tx()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
        entity("c", None, Some(&ent(3)), w.tx()),
        value("c", None, Some(&val(2, 98, V::Int(1))), w.tx()),
        entity("c", None, Some(&ent(4)), w.tx()),
        attribute("c", None, Some(&attr(99, "score", "int")), w.tx()),
        attribute("c", None, Some(&attr(98, "weight", "int")), w.tx()),
    ];
    let file = dir.path().join("events.jsonl");
    write_lines(&file, &lines);
    let expected = state(&[
        (1, 1, &[("name", t("Ada")), ("score", n(7))]),
        (1, 2, &[("name", t("Bob")), ("weight", n(1))]),
        (1, 3, &[]),
        (1, 4, &[]),
    ]);

    // Compacted once, at the end.
    let reference = dir.path().join("reference-lake");
    let mut cfg = config(&reference);
    cfg.batch.max_rows = 1;
    run(&cfg, &file, &lines).await;
    assert_eq!(read_current(&reference), expected);

    // Compacted between flushes too.
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.batch.max_rows = 1;
    let mut d = Driver::open(&cfg, &file).await;
    d.step(10).await;
    compact(&cfg).await;
    let stats = d.finish().await;
    assert_eq!(stats.dead_letter_total(), 0);
    compact(&cfg).await;
    assert_eq!(read_current(&lake), expected);
}

/// A crash while a value waits for its attribute, after a flush that wrote rows past the
/// durable position (`batch.max_rows = 2`): the restart resumes before the waiting value and
/// folds those changes again. Every change row must still be in `changes/` exactly once.
#[tokio::test]
async fn crash_with_a_parked_value_writes_each_change_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        value("c", None, Some(&val(1, 99, V::Int(7))), w.tx()),
        entity("c", None, Some(&ent(2)), w.tx()),
        value("c", None, Some(&val(2, 1, V::Text("Bob"))), w.same()),
        entity("c", None, Some(&ent(3)), w.tx()),
        attribute("c", None, Some(&attr(99, "score", "int")), w.tx()),
    ];
    let file = dir.path().join("events.jsonl");
    write_lines(&file, &lines);
    let lake = dir.path().join("lake");
    let mut cfg = config(&lake);
    cfg.batch.max_rows = 2;

    let mut d = Driver::open(&cfg, &file).await;
    // Line 7 ends entity 2's transaction: 2 rows, past the flush limit; but the value of line 4
    // still waits, and rows after it are held back rather than written past the durable
    // position.
    d.step(7).await;
    assert_eq!(d.pipeline.resume_seq(), 1);
    drop(d);

    let d = Driver::open(&cfg, &file).await;
    let stats = d.finish().await;
    assert_eq!(stats.dead_letter_total(), 0);
    compact(&cfg).await;
    assert_eq!(
        read_current(&lake),
        state(&[(1, 1, &[("name", t("Ada")), ("score", n(7))]), (1, 2, &[("name", t("Bob"))]), (1, 3, &[])])
    );
    assert_eq!(change_keys(&lake), [(1, 2), (1, 4), (2, 5), (3, 7)], "each change row once");
}

/// Entity ids far apart in one change file (id blocks of different writers) touch only the
/// ranges that hold them, not every range between.
#[tokio::test]
async fn compaction_touches_only_the_ranges_that_have_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let name = attr(1, "name", "text");
    let mut w = Wal::new();
    let far = 2_000_000_005;
    let lines = vec![
        attribute("c", None, Some(&name), w.tx()),
        entity("c", None, Some(&ent(5)), w.tx()),
        value("c", None, Some(&val(5, 1, V::Text("near"))), w.same()),
        entity("c", None, Some(&ent(far)), w.same()),
        value("c", None, Some(&val(far, 1, V::Text("far"))), w.same()),
    ];
    let report = run(&cfg, &dir.path().join("far.jsonl"), &lines).await;
    assert_eq!(report.compaction.unwrap().ranges_written, 2);
    let objects: Vec<String> = file_bytes(&lake.join("current/customer/tenant_id=1")).into_keys().collect();
    assert_eq!(objects, ["entities-000000000000-000000099999.parquet", "entities-002000000000-002000099999.parquet"]);
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation.

#[path = "common/lake.rs"]
mod lake_files;

/// Rows whose tenant disagrees with their entity's become dead letters (`tenant_mismatch`) and
/// are never written under either tenant: a value row of tenant 2 in the transaction that creates
/// tenant 1's entity, a value row of tenant 2 for that entity in a later transaction (the
/// pivot remembers the entity's tenant), and an update moving the entity to tenant 2. Every
/// object under `tenant_id=<t>` holds rows of tenant t only.
#[tokio::test]
async fn rows_of_another_tenant_become_dead_letters_and_are_never_cross_written() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(&lake);
    let name = attr(1, "name", "text");
    let nick = Attr { tenant: 2, ..attr(2, "nickname", "text") };
    let theirs = |entity| Val { tenant: 2, ..val(entity, 2, V::Text("intruder")) };
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&name), w.tx()),
        attribute("c", None, Some(&nick), w.same()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        // Line 5: tenant 2's value for tenant 1's entity, same transaction.
        value("c", None, Some(&theirs(1)), w.same()),
        // Line 6: the same, in a later transaction.
        value("c", None, Some(&theirs(1)), w.tx()),
        // Line 7: the entity moved to tenant 2.
        entity("u", Some(&ent(1)), Some(&Ent { tenant: 2, ..ent(1) }), w.tx()),
        // Tenant 2's own entity and value land.
        entity("c", None, Some(&Ent { tenant: 2, ..ent(2) }), w.tx()),
        value("c", None, Some(&theirs(2)), w.same()),
    ];
    let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;

    assert_eq!(report.stats.dead_letters, BTreeMap::from([("tenant_mismatch", 3)]));
    let dl = dead_letters(&lake);
    let got: Vec<(i64, &str, &str)> = dl
        .iter()
        .map(|d| (d["line"].as_i64().unwrap(), d["reason"].as_str().unwrap(), d["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (5, "tenant_mismatch", "row of tenant 2 refers to entity 1 of tenant 1"),
            (6, "tenant_mismatch", "row of tenant 2 refers to entity 1 of tenant 1"),
            (7, "tenant_mismatch", "row of tenant 2 refers to entity 1 (its before-image) of tenant 1"),
        ]
    );
    assert_eq!(dl[1]["value"], lines[5].as_str(), "kept byte for byte");
    assert_eq!(read_current(&lake), state(&[(1, 1, &[("name", t("Ada"))]), (2, 2, &[("nickname", t("intruder"))])]));
    // Entity 1 is nowhere under tenant 2, in change rows or current state.
    for path in files_with(&lake.join("changes"), "parquet").iter().chain(&files_with(&lake.join("current"), "parquet"))
    {
        if path.to_str().unwrap().contains("tenant_id=2") {
            let (_, batches) = read_parquet(path);
            let ids: Vec<i64> = batches.iter().flat_map(|b| int64_column(b, columns::ENTITY_ID)).collect();
            assert_eq!(ids, [2], "{}", path.display());
        }
    }
    assert_eq!(lake_files::assert_rows_under_their_tenant(&lake).keys().copied().collect::<Vec<_>>(), [1, 2]);
}

/// `[tenants] deny = [2]`: tenant 2's changes are skipped and counted, not dead letters, and
/// nothing of it is written; `allow = [2]` is the mirror image.
#[tokio::test]
async fn changes_of_a_denied_tenant_are_skipped_and_counted() {
    let nick = Attr { tenant: 2, ..attr(2, "nickname", "text") };
    let mut w = Wal::new();
    let lines = vec![
        attribute("c", None, Some(&attr(1, "name", "text")), w.tx()),
        attribute("c", None, Some(&nick), w.same()),
        entity("c", None, Some(&ent(1)), w.tx()),
        value("c", None, Some(&val(1, 1, V::Text("Ada"))), w.same()),
        entity("c", None, Some(&Ent { tenant: 2, ..ent(2) }), w.tx()),
        value("c", None, Some(&Val { tenant: 2, ..val(2, 2, V::Text("Bo")) }), w.same()),
        value("u", None, Some(&Val { tenant: 2, ..val(2, 2, V::Text("Bob")) }), w.tx()),
    ];
    for (allow, deny, skipped, expected) in [
        (vec![], vec![2], 3, state(&[(1, 1, &[("name", t("Ada"))])])),
        (vec![2], vec![], 2, state(&[(2, 2, &[("nickname", t("Bob"))])])),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let mut cfg = config(&lake);
        cfg.tenants.allow = allow;
        cfg.tenants.deny = deny;
        let report = run(&cfg, &dir.path().join("events.jsonl"), &lines).await;
        assert_eq!(report.stats.tenant_skipped, skipped, "{:?}", report.stats);
        assert_eq!(report.stats.dead_letter_total(), 0);
        assert_eq!(report.stats.changes, 5 - skipped);
        assert_eq!(read_current(&lake), expected);
        let tenants = lake_files::assert_rows_under_their_tenant(&lake);
        assert_eq!(tenants.keys().copied().collect::<Vec<_>>(), expected.keys().map(|k| k.0).collect::<Vec<_>>());
    }
}

// Limits.

/// A file with one line past each limit, or holding a value its column cannot, between good
/// lines: each bad line is a dead letter naming its reason, its line and what was wrong (the
/// attribute or entity), and every good line reaches the lake, the run going on to the end.
#[tokio::test]
async fn each_limit_is_a_dead_letter_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let file = dir.path().join("events.jsonl");
    let mut config = config(&lake);
    config.limits.max_record_bytes = 4096;
    config.limits.max_attributes_per_row = 3;
    config.limits.max_json_depth = 8;
    config.limits.max_json_bytes = 512;
    let mut wal = Wal::new();
    let prefs = Attr { hot: true, ..attr(3, "prefs", "json") };
    let catalog = [attr(1, "name", "text"), attr(2, "age", "int"), prefs, attr(4, "credit", "decimal")];
    let catalog = catalog.into_iter().chain([attr(5, "born", "timestamp"), attr(6, "nick", "text")]);
    let mut lines: Vec<Vec<u8>> = catalog.map(|a| attribute("c", None, Some(&a), wal.tx()).into_bytes()).collect();
    let good_value = |entity, attr, v, at| value("c", None, Some(&val(entity, attr, v)), at);
    let mut push = |line: String| lines.push(line.into_bytes());
    // 7, 8: entity 1 with its name.
    push(entity("c", None, Some(&ent(1)), wal.tx()));
    push(good_value(1, 1, V::Text("Ada"), wal.same()));
    // 9: a line past max_record_bytes.
    push(entity("c", None, Some(&Ent { hot: format!(r#"{{"prefs":"{}"}}"#, "p".repeat(5000)), ..ent(9) }), wal.tx()));
    // 10, 12: entity 2 with its name; 11: its age in a line that is not UTF-8.
    push(entity("c", None, Some(&ent(2)), wal.tx()));
    let mut not_utf8 = good_value(2, 2, V::Text("Caf\u{e9}"), wal.same()).into_bytes();
    let at = not_utf8.iter().position(|b| *b == 0xC3).unwrap();
    not_utf8[at] = 0xFF;
    lines.push(not_utf8);
    let mut push = |line: String| lines.push(line.into_bytes());
    push(good_value(2, 1, V::Text("Bo"), wal.same()));
    // 13: an int past i64; 14: a decimal of 39 digits; 15: a year past 9999; 16: NaN.
    let int = good_value(2, 2, V::Int(7), wal.same());
    push(int.replace(r#""value_int":7"#, r#""value_int":9223372036854775808"#));
    let decimal = good_value(2, 4, V::Int(7), wal.same()).replace(r#""value_int":7"#, r#""value_int":null"#);
    push(decimal.replace(r#""value_decimal":null"#, &format!(r#""value_decimal":"{}""#, "9".repeat(39))));
    let born = good_value(2, 5, V::Int(7), wal.same()).replace(r#""value_int":7"#, r#""value_int":null"#);
    push(born.replace(r#""value_timestamp":null"#, r#""value_timestamp":"+10000-01-01T00:00:00""#));
    push(decimal.replace(r#""value_decimal":null"#, r#""value_decimal":"NaN""#));
    // 17: hot JSONB nested too deep; 18: too large.
    let deep = format!(r#"{{"prefs":{}1{}}}"#, "[".repeat(8), "]".repeat(8));
    push(entity("c", None, Some(&Ent { hot: deep, ..ent(3) }), wal.tx()));
    let large = format!(r#"{{"prefs":"{}"}}"#, "q".repeat(600));
    push(entity("c", None, Some(&Ent { hot: large, ..ent(4) }), wal.tx()));
    // 19 to 22: entity 5 (its hot prefs, set to null, is one cell), name, age, then nick: four.
    push(entity("c", None, Some(&ent(5)), wal.tx()));
    push(good_value(5, 1, V::Text("Cy"), wal.same()));
    push(good_value(5, 2, V::Int(40), wal.same()));
    push(good_value(5, 6, V::Text("cy"), wal.same()));
    // 23: the last, good.
    push(entity("c", None, Some(&ent(6)), wal.tx()));
    std::fs::write(&file, lines.iter().flat_map(|l| l.iter().chain(b"\n")).copied().collect::<Vec<u8>>()).unwrap();

    let report = eavlake::run::run_file(&config, &file).await.unwrap();
    assert_eq!(report.stats.records, 23);

    let dl = dead_letters(&lake);
    let got: Vec<(i64, &str)> =
        dl.iter().map(|d| (d["line"].as_i64().unwrap(), d["reason"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [
            (9, "record_too_large"),
            (11, "invalid_utf8"),
            (13, "value_out_of_range"),
            (14, "value_out_of_range"),
            (15, "value_out_of_range"),
            (16, "value_out_of_range"),
            (17, "json_too_deep"),
            (18, "json_too_large"),
            (22, "too_many_attributes"),
        ]
    );
    let message = |line: i64| dl.iter().find(|d| d["line"] == line).unwrap()["message"].as_str().unwrap().to_string();
    assert_eq!(
        message(9),
        format!(
            "record of {} bytes is over limits.max_record_bytes (4096); the dead letter holds its first 4096 bytes",
            lines[8].len()
        )
    );
    let cut = dl.iter().find(|d| d["line"] == 9).unwrap()["value"].as_str().unwrap().as_bytes().to_vec();
    assert_eq!(cut, lines[8][..4096]);
    assert!(message(11).starts_with("record is not valid UTF-8: invalid utf-8 sequence"), "{}", message(11));
    assert_eq!(
        message(13),
        "field `value_int`: integer `9223372036854775808` is beyond the range of a 64-bit integer (attribute 2)"
    );
    assert_eq!(
        message(14),
        format!("field `value_decimal`: `{}` has more than 38 digits (attribute 4)", "9".repeat(39))
    );
    assert_eq!(
        message(15),
        "field `value_timestamp`: timestamp 253402300800000000 µs is outside years 1 to 9999 (attribute 5)"
    );
    assert_eq!(message(16), "field `value_decimal`: `NaN` is not a finite number (attribute 4)");
    assert_eq!(message(17), "hot_attributes: JSON nested over limits.max_json_depth (8) levels deep");
    assert_eq!(message(18), "hot_attributes: 612 bytes of JSON, over limits.max_json_bytes (512)");
    assert_eq!(message(22), "entity 5: 4 attributes in one row, over limits.max_attributes_per_row (3)");
    // The dead letters hold the lines byte for byte (the one that is not UTF-8 as base64).
    let bad_utf8 = dl.iter().find(|d| d["line"] == 11).unwrap()["value_base64"].as_str().unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(bad_utf8).unwrap(), lines[10]);
    assert_eq!(dl.iter().find(|d| d["line"] == 13).unwrap()["value"].as_str().unwrap().as_bytes(), lines[12]);
    for reason in ["record_too_large", "invalid_utf8", "json_too_deep", "json_too_large", "too_many_attributes"] {
        assert_eq!(report.stats.dead_letters.get(reason), Some(&1), "{reason}");
    }
    assert_eq!(report.stats.dead_letters.get("value_out_of_range"), Some(&4));

    assert_eq!(
        read_current(&lake),
        state(&[
            (1, 1, &[("name", t("Ada"))]),
            (1, 2, &[("name", t("Bo"))]),
            (1, 5, &[("age", n(40)), ("name", t("Cy"))]),
            (1, 6, &[]),
        ])
    );
}
