//! Golden tests of the embedded default: a generated workload (many tenants, two entity types,
//! inserts, updates, deletes, hot and cold attributes, attributes added mid-stream, interleaved
//! transactions, Debezium re-sends, TOAST placeholders, bad lines) goes through `eavlake run
//! --source file:`, and the current state read back from Parquet must equal the workload's own
//! ground truth, value for value; the dead letters must be exactly the bad lines.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
use eavlake::columns;
use eavlake::config::Config;
use eavlake::decode::{DataType, DecimalMode};
use eavlake::workload::{generate, Expected, GroundTruth, WorkloadFormat, WorkloadSpec};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type State = BTreeMap<(String, i64, i64), BTreeMap<String, Expected>>;

fn write_workload(dir: &Path, spec: &WorkloadSpec) -> (PathBuf, GroundTruth) {
    let path = dir.join("events.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let truth = generate(spec, &mut file).unwrap();
    std::io::Write::flush(&mut file).unwrap();
    (path, truth)
}

fn config(lake: &Path, format: WorkloadFormat) -> Config {
    let mut c = Config::default();
    c.lake.url = lake.to_str().unwrap().to_string();
    // Small objects and batches, so that many flushes, ranges and slices are exercised.
    c.lake.range_size = 5_000;
    c.batch.max_rows = 3_000;
    c.batch.max_pending_entities = 400;
    c.decode.decimal_handling_mode = match format {
        WorkloadFormat::Plain => DecimalMode::String,
        WorkloadFormat::WithSchemas => DecimalMode::Precise,
    };
    c
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Reads `current/` back into (entity type, tenant, entity) → attribute → value.
fn read_current(lake: &Path) -> State {
    let mut state = State::new();
    for path in parquet_files(&lake.join("current")) {
        let entity_type = path.strip_prefix(lake.join("current")).unwrap().components().next().unwrap();
        let entity_type = entity_type.as_os_str().to_str().unwrap().to_string();
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let tenants = batch.column_by_name(columns::TENANT_ID).unwrap().as_primitive::<Int64Type>().clone();
            let ids = batch.column_by_name(columns::ENTITY_ID).unwrap().as_primitive::<Int64Type>().clone();
            for row in 0..batch.num_rows() {
                let mut attrs = BTreeMap::new();
                for (i, field) in batch.schema().fields().iter().enumerate() {
                    let Some((_, dt)) = columns::attribute_of(field) else { continue };
                    let col = batch.column(i);
                    if col.is_null(row) {
                        continue;
                    }
                    let v = match dt {
                        DataType::Int => Expected::Int(col.as_primitive::<Int64Type>().value(row)),
                        DataType::Decimal => Expected::Decimal(col.as_primitive::<Decimal128Type>().value(row)),
                        DataType::Bool => Expected::Bool(col.as_boolean().value(row)),
                        DataType::Timestamp => {
                            Expected::Timestamp(col.as_primitive::<TimestampMicrosecondType>().value(row))
                        }
                        DataType::Text => Expected::Text(col.as_string::<i32>().value(row).to_string()),
                        DataType::Json => {
                            Expected::Json(serde_json::from_str(col.as_string::<i32>().value(row)).unwrap())
                        }
                    };
                    attrs.insert(field.name().clone(), v);
                }
                let key = (entity_type.clone(), tenants.value(row), ids.value(row));
                assert!(state.insert(key.clone(), attrs).is_none(), "entity {key:?} appears twice in current/");
            }
        }
    }
    state
}

fn assert_same_state(actual: &State, expected: &State) {
    let missing: Vec<_> = expected.keys().filter(|k| !actual.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing in lake: {missing:?}; extra in lake: {extra:?}");
    for (key, want) in expected {
        assert_eq!(&actual[key], want, "entity {key:?}");
    }
    assert_eq!(actual.len(), expected.len());
}

/// Reads every dead-letter file: (line, reason).
fn read_dead_letters(lake: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut stack = vec![lake.join("dead_letters")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
                continue;
            }
            for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                out.push((v["line"].as_u64().unwrap(), v["reason"].as_str().unwrap().to_string()));
            }
        }
    }
    out.sort();
    out
}

fn expected_dead_letters(truth: &GroundTruth) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = truth.dead_letters.iter().map(|(l, r)| (*l, r.to_string())).collect();
    v.sort();
    v
}

fn golden(format: WorkloadFormat) {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkloadSpec { events: 40_000, tenants: 6, seed: 7, format, max_bulk: 300, ..WorkloadSpec::default() };
    let (events, truth) = write_workload(dir.path(), &spec);
    let lake = dir.path().join("lake");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(eavlake::run::run_file(&config(&lake, format), &events)).unwrap();

    assert_eq!(report.stats.duplicates, truth.duplicates, "re-sent changes dropped");
    assert!(report.stats.flushes > 3, "several flushes: {}", report.stats.flushes);
    assert_eq!(read_dead_letters(&lake), expected_dead_letters(&truth));
    assert_same_state(&read_current(&lake), &truth.current);
    assert!(truth.current.len() > 1000, "a workload worth the name: {} entities", truth.current.len());

    // A second run of the same file finds everything durable: nothing is written twice.
    let again = rt.block_on(eavlake::run::run_file(&config(&lake, format), &events)).unwrap();
    assert_eq!(again.stats.records, 0);
    assert_eq!(again.resumed_at_line as u64, truth.lines + 1);
    assert_same_state(&read_current(&lake), &truth.current);
}

#[test]
fn golden_plain_json() {
    golden(WorkloadFormat::Plain);
}

#[test]
fn golden_json_with_schemas() {
    golden(WorkloadFormat::WithSchemas);
}

/// A run cut short (the file ended half way, as after a crash of the writer) and resumed later
/// on the whole file lands every change exactly once: same current state, and no change row
/// twice in `changes/`.
#[test]
fn resumed_run_lands_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkloadSpec { events: 20_000, tenants: 4, seed: 11, ..WorkloadSpec::default() };
    let (events, truth) = write_workload(dir.path(), &spec);
    let text = std::fs::read_to_string(&events).unwrap();
    let half: String = text.lines().take(text.lines().count() / 2).flat_map(|l| [l, "\n"]).collect();
    let partial = dir.path().join("part").join("events.jsonl");
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, half).unwrap();

    let lake = dir.path().join("lake");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = rt.block_on(eavlake::run::run_file(&config(&lake, WorkloadFormat::Plain), &partial)).unwrap();
    assert!(first.stats.records > 0);
    let second = rt.block_on(eavlake::run::run_file(&config(&lake, WorkloadFormat::Plain), &events)).unwrap();
    assert!(second.resumed_at_line > 1, "resumed after the first run's progress");
    assert_same_state(&read_current(&lake), &truth.current);
    assert_eq!(read_dead_letters(&lake), expected_dead_letters(&truth));

    // Every (entity, stream position) appears in at most one change row.
    let mut seen = std::collections::HashSet::new();
    for path in parquet_files(&lake.join("changes")) {
        let file = std::fs::File::open(&path).unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let ids = batch.column_by_name(columns::ENTITY_ID).unwrap().as_primitive::<Int64Type>().clone();
            let seqs = batch.column_by_name(columns::SEQ).unwrap().as_primitive::<Int64Type>().clone();
            for r in 0..batch.num_rows() {
                assert!(seen.insert((ids.value(r), seqs.value(r))), "change row twice: {path:?}");
            }
        }
    }
}
