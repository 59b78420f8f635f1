//! Reading a local lake back for tests: the current state as (entity type, tenant, entity) →
//! attribute → value, in the workload's ground-truth terms, and the keys of change rows.
#![allow(dead_code)]

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
use eavlake::columns;
use eavlake::decode::DataType;
use eavlake::workload::Expected;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub type State = BTreeMap<(String, i64, i64), BTreeMap<String, Expected>>;

pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
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
pub fn read_current(lake: &Path) -> State {
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

pub fn assert_same_state(actual: &State, expected: &State) {
    let missing: Vec<_> = expected.keys().filter(|k| !actual.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing in lake: {missing:?}; extra in lake: {extra:?}");
    for (key, want) in expected {
        assert_eq!(&actual[key], want, "entity {key:?}");
    }
    assert_eq!(actual.len(), expected.len());
}

/// Every batch of every change file, with the entity type of its folder.
fn change_batches(lake: &Path) -> Vec<(String, arrow::record_batch::RecordBatch)> {
    let mut out = Vec::new();
    for path in parquet_files(&lake.join("changes")) {
        let entity_type = path.strip_prefix(lake.join("changes")).unwrap().components().next().unwrap();
        let entity_type = entity_type.as_os_str().to_str().unwrap().to_string();
        let file = std::fs::File::open(&path).unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
            out.push((entity_type.clone(), batch.unwrap()));
        }
    }
    out
}

/// Every change row's (entity type, entity id, `_seq`, `_kafka_partition` or -1): a change
/// landed twice shows up as a repeated key.
pub fn change_row_keys(lake: &Path) -> Vec<(String, i64, i64, i64)> {
    let mut out = Vec::new();
    for (entity_type, batch) in change_batches(lake) {
        let ids = batch.column_by_name(columns::ENTITY_ID).unwrap().as_primitive::<Int64Type>().clone();
        let seqs = batch.column_by_name(columns::SEQ).unwrap().as_primitive::<Int64Type>().clone();
        let parts = batch
            .column_by_name(columns::KAFKA_PARTITION)
            .map(|c| c.as_primitive::<arrow::datatypes::Int32Type>().clone());
        for r in 0..batch.num_rows() {
            let p = parts.as_ref().map_or(-1, |c| if c.is_null(r) { -1 } else { c.value(r) as i64 });
            out.push((entity_type.clone(), ids.value(r), seqs.value(r), p));
        }
    }
    out.sort();
    out
}

/// Checks tenant isolation on disk: every Parquet object under `changes/` and `current/` holds
/// only rows whose `tenant_id` is the one its `tenant_id=<t>` folder names. Returns the tenants
/// seen, with their files.
pub fn assert_rows_under_their_tenant(lake: &Path) -> BTreeMap<i64, usize> {
    let mut files_per_tenant = BTreeMap::new();
    for area in ["changes", "current"] {
        for path in parquet_files(&lake.join(area)) {
            let tenant: i64 = path
                .components()
                .find_map(|c| c.as_os_str().to_str()?.strip_prefix("tenant_id=")?.parse().ok())
                .unwrap_or_else(|| panic!("{} is not under a tenant_id=<t> folder", path.display()));
            let file = std::fs::File::open(&path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column_by_name(columns::TENANT_ID).expect("a tenant_id column");
                let others: Vec<i64> =
                    col.as_primitive::<Int64Type>().values().iter().copied().filter(|t| *t != tenant).collect();
                assert!(others.is_empty(), "{} holds rows of tenants {others:?}", path.display());
            }
            *files_per_tenant.entry(tenant).or_insert(0) += 1;
        }
    }
    files_per_tenant
}

/// Every change row, value for value: (entity type, tenant, entity, `_seq`) → column → value as
/// text (nulls left out), to compare a lake before and after a rewrite.
pub fn change_rows(lake: &Path) -> BTreeMap<(String, i64, i64, i64), BTreeMap<String, String>> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = BTreeMap::new();
    for (entity_type, batch) in change_batches(lake) {
        let col = |name| batch.column_by_name(name).unwrap().as_primitive::<Int64Type>().clone();
        let (tenants, ids, seqs) = (col(columns::TENANT_ID), col(columns::ENTITY_ID), col(columns::SEQ));
        let schema = batch.schema();
        let opts = FormatOptions::default();
        // Timestamps as µs integers (named time zones need chrono-tz to be displayed).
        let arrays: Vec<arrow::array::ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                arrow::datatypes::DataType::Timestamp(_, _) => {
                    arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).unwrap()
                }
                _ => c.clone(),
            })
            .collect();
        let formatters: Vec<ArrayFormatter> =
            arrays.iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
        for r in 0..batch.num_rows() {
            let cells = (0..batch.num_columns())
                .filter(|&c| batch.column(c).is_valid(r))
                .map(|c| (schema.field(c).name().clone(), formatters[c].value(r).to_string()))
                .collect();
            let key = (entity_type.clone(), tenants.value(r), ids.value(r), seqs.value(r));
            assert!(out.insert(key.clone(), cells).is_none(), "{key:?} twice");
        }
    }
    out
}

/// The exactly-once check after a run of workers: compacts the lake as its configuration says,
/// then the current state must equal `truth` and no change row may appear twice.
pub async fn assert_exactly_once(config: &Path, lake: &Path, truth: &State) {
    let c = eavlake::config::Config::load(config).unwrap();
    let store = eavlake::sink::Lake::open(&c.lake.url, &c.s3_options()).unwrap();
    eavlake::run::compact(&c, &store).await.unwrap();
    assert_same_state(&read_current(lake), truth);
    let keys = change_row_keys(lake);
    let unique: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a change row landed twice");
}
