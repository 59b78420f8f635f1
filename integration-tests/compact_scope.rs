//! Compaction split over processes: `eavlake compact` with disjoint scopes (`--shard I/N`,
//! `--entity-range`, `--tenant`), run side by side as separate processes on one lake, must leave
//! exactly the current state (same objects, same rows and metadata, the same logically deleted
//! entities kept, no stray object of them) that one unscoped compaction leaves,
//! equal to the workload's ground truth; scopes that overlap entirely (two unscoped compactions
//! at once) must too; a range that would cut a range object in two is refused.

#[path = "common/lake.rs"]
mod lake;

use arrow::array::RecordBatch;
use eavlake::columns;
use lake::{assert_same_state, parquet_files, read_current, State};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RANGE_SIZE: i64 = 2000;

fn eavlake(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eavlake"));
    cmd.args(args).env("RUST_LOG", "warn");
    cmd
}

fn ok(out: Output, what: &str) -> serde_json::Value {
    assert!(out.status.success(), "{what}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: report `{last}`: {e}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Starts one `eavlake compact` per scope at once and waits for all; returns their reports.
fn compact_side_by_side(config: &Path, lake: &Path, scopes: &[&[&str]]) -> Vec<serde_json::Value> {
    let children: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let mut cmd = eavlake(&["compact", "--config"]);
            cmd.arg(config).arg("--lake").arg(lake).args(*scope);
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .zip(scopes)
        .map(|(c, s)| ok(c.wait_with_output().unwrap(), &format!("compact {s:?}")))
        .collect()
}

/// A Parquet object's rows and key-value metadata.
fn read_object(path: &Path) -> (Vec<RecordBatch>, Vec<(String, Option<String>)>) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let kv = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    let rows = reader.build().unwrap().map(|b| b.unwrap()).collect();
    (rows, kv.into_iter().map(|kv| (kv.key, kv.value)).collect())
}

/// A current object as compared: its name, rows and metadata, but for the name of the object
/// of its logically deleted entities (new at every write), of which the rows.
#[derive(PartialEq)]
struct CurrentObject {
    path: PathBuf,
    rows: Vec<RecordBatch>,
    metadata: Vec<(String, Option<String>)>,
    retired: Vec<RecordBatch>,
}

/// The current objects by name, and the retired objects they name.
fn current_objects(lake: &Path) -> Vec<CurrentObject> {
    parquet_files(&lake.join("current"))
        .into_iter()
        .map(|p| {
            let (rows, mut metadata) = read_object(&p);
            let named = metadata.iter().position(|(k, _)| k == columns::META_RETIRED).map(|i| metadata.remove(i));
            let retired = named.map_or_else(Vec::new, |(_, name)| read_object(&lake.join(name.unwrap())).0);
            CurrentObject { path: p.strip_prefix(lake).unwrap().to_path_buf(), rows, metadata, retired }
        })
        .collect()
}

/// Every object of logically deleted entities is named by a current object: a compaction that
/// lost a race deleted the one it wrote, the winner the version it replaced.
fn assert_every_retired_object_named(lake: &Path, what: &str) {
    let mut named: Vec<String> = parquet_files(&lake.join("current"))
        .iter()
        .filter_map(|p| read_object(p).1.into_iter().find(|(k, _)| k == columns::META_RETIRED)?.1)
        .collect();
    let mut found: Vec<String> = parquet_files(&lake.join("_eavlake/retired"))
        .iter()
        .map(|p| p.strip_prefix(lake).unwrap().to_str().unwrap().to_string())
        .collect();
    named.sort();
    found.sort();
    assert!(!found.is_empty(), "{what}: the workload deletes entities logically");
    assert_eq!(found, named, "{what}: retired objects");
}

fn sum(reports: &[serde_json::Value], key: &str) -> u64 {
    reports.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum()
}

#[test]
fn disjoint_scopes_side_by_side_equal_one_compaction_and_overlaps_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let spec = eavlake::workload::WorkloadSpec { events: 60_000, tenants: 5, seed: 10, ..Default::default() };
    let events = dir.path().join("events.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&events).unwrap());
    let truth = eavlake::workload::generate(&spec, &mut file).unwrap();
    std::io::Write::flush(&mut file).unwrap();
    drop(file);
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!("[lake]\nrange_size = {RANGE_SIZE}\n[decode]\ndecimal_handling_mode = \"string\"\n[batch]\nmax_rows = 3000\n"),
    )
    .unwrap();

    // The change rows, not compacted: the starting point of every variant.
    let base = dir.path().join("base");
    let mut run = eavlake(&["run", "--no-compact", "--config"]);
    run.arg(&config).arg("--lake").arg(&base).arg("--source").arg(format!("file:{}", events.display()));
    ok(run.output().unwrap(), "file run");
    let lake_for = |name: &str| {
        let l = dir.path().join(name);
        copy_dir(&base, &l);
        l
    };

    let single = lake_for("single");
    let one = compact_side_by_side(&config, &single, &[&[]]);
    let expected = current_objects(&single);
    let ranges = one[0]["ranges_written"].as_u64().unwrap();
    assert!(ranges >= 10, "enough range objects to split: {ranges}");
    let expected_state: State = read_current(&single);
    assert_same_state(&expected_state, &truth.current);
    assert_every_retired_object_named(&single, "single");

    // Partitions of the ranges into disjoint scopes, each run at the same time: shards, entity
    // ranges split at the middle range object, one process per tenant.
    let mut starts: Vec<i64> = expected
        .iter()
        .filter_map(|o| o.path.file_name()?.to_str()?.strip_prefix("entities-")?.split('-').next()?.parse().ok())
        .collect();
    starts.sort_unstable();
    let middle = starts[starts.len() / 2];
    let tenants: std::collections::BTreeSet<i64> = truth.current.keys().map(|(_, t, _)| *t).collect();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let variants: Vec<(&str, Vec<Vec<String>>)> = vec![
        ("shards", (0..3).map(|i| strings(&["--shard", &format!("{i}/3")])).collect()),
        (
            "ranges",
            vec![
                strings(&["--entity-range", &format!("..{middle}")]),
                strings(&["--entity-range", &format!("{middle}..")]),
            ],
        ),
        ("tenants", tenants.iter().map(|t| strings(&["--tenant", &t.to_string()])).collect()),
    ];
    for (name, scopes) in variants {
        let lake = lake_for(name);
        let scopes: Vec<Vec<&str>> = scopes.iter().map(|s| s.iter().map(String::as_str).collect()).collect();
        let scopes: Vec<&[&str]> = scopes.iter().map(Vec::as_slice).collect();
        let reports = compact_side_by_side(&config, &lake, &scopes);
        assert_eq!(sum(&reports, "ranges_written"), ranges, "{name}: every range written by exactly one scope");
        assert_eq!(sum(&reports, "ranges_redone"), 0, "{name}: disjoint scopes never meet");
        let got = current_objects(&lake);
        let names = |v: &[CurrentObject]| v.iter().map(|o| o.path.clone()).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&expected), "{name}: the same current objects");
        assert!(got == expected, "{name}: the current objects are row for row those of one compaction");
        assert_every_retired_object_named(&lake, name);
    }

    // Overlapping scopes: two whole compactions and a shard at once. A range replaced by
    // another while folded is folded again; the outcome is the same state.
    let lake = lake_for("overlap");
    let reports = compact_side_by_side(&config, &lake, &[&[], &[], &["--shard", "0/2"]]);
    let redone = sum(&reports, "ranges_redone");
    eprintln!("overlapping compactions: {redone} ranges folded again after a conflict");
    assert_same_state(&read_current(&lake), &truth.current);
    assert!(current_objects(&lake) == expected, "overlap: row for row those of one compaction");
    assert_every_retired_object_named(&lake, "overlap");

    // Half a range object is refused, by name of the rule.
    let out = eavlake(&["compact", "--entity-range", "1000..4000", "--config"])
        .arg(&config)
        .arg("--lake")
        .arg(&base)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--entity-range 1000..4000: both ends must be multiples of lake.range_size (2000)"),
        "refusal: {err}"
    );
}
