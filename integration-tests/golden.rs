//! Golden tests of the embedded default: a generated workload (many tenants, two entity types,
//! inserts, updates, deletes, hot and cold attributes, attributes added mid-stream, interleaved
//! transactions, Debezium re-sends, TOAST placeholders, bad lines) goes through `eavlake run
//! --source file:`, and the current state read back from Parquet must equal the workload's own
//! ground truth, value for value; the dead letters must be exactly the bad lines.

use eavlake::config::Config;
use eavlake::decode::DecimalMode;
use eavlake::workload::{generate, GroundTruth, WorkloadFormat, WorkloadSpec};
use std::path::{Path, PathBuf};

#[path = "common/lake.rs"]
mod lake;
use lake::{assert_rows_under_their_tenant, assert_same_state, change_row_keys, read_current};

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
    // Tenant isolation on disk: each object under tenant_id=<t> holds rows of tenant t only.
    let tenants = assert_rows_under_their_tenant(&lake);
    assert_eq!(tenants.len(), spec.tenants as usize, "{tenants:?}");

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
    let keys = change_row_keys(&lake);
    let unique: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a change row landed twice");
}
