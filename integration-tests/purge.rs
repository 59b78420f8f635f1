//! `eavlake purge` on a lake made from a real PostgreSQL store (integration-tests/stack/
//! postgres.sh; the lake is written as the worker writes it, see `common/pg_capture.rs`): the
//! purged rows are gone from every object of `changes/` and `current/`, everything else is
//! intact value for value, a later capture of purged entities writes nothing of them, and
//! `eavlake reconcile` still agrees with the store.

#[path = "common/lake.rs"]
mod lake;
#[path = "common/pg_capture.rs"]
mod pg_capture;
#[path = "common/stack.rs"]
mod stack;

use eavlake::purge::rewrite::{purge, PurgeOptions};
use eavlake::reconcile::{reconcile, ReconcileOptions};
use eavlake::sink::Lake;
use eavlake::workload::postgres::{drive, DriveSpec};
use pg_capture::{capture, config, connect};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

fn reconcile_options(pg_url: &str, lake: &Path, tenant: i64) -> ReconcileOptions {
    ReconcileOptions {
        postgres_url: eavlake::secret::SecretUrl::new(pg_url),
        lake_url: lake.to_str().unwrap().to_string(),
        tenant: Some(tenant),
        lag_wait: Duration::from_secs(1),
        ..ReconcileOptions::default()
    }
}

fn tenant_folders(lake: &Path, tenant: i64) -> Vec<String> {
    let mut found = Vec::new();
    for area in ["changes", "current", "_eavlake/retired"] {
        // Logically deleted entities (`_eavlake/retired/`) exist only if the workload left some.
        for ty in std::fs::read_dir(lake.join(area)).into_iter().flatten().flatten() {
            let dir = ty.path().join(format!("tenant_id={tenant}"));
            if dir.exists() {
                found.push(dir.display().to_string());
            }
        }
    }
    found
}

/// Whole tenant 1, then three entities of tenant 2 (through the `eavlake purge` binary, JSON
/// report): exactly their rows go, nothing else changes, and the store agrees with the lake for
/// tenant 2 (once the purged entities are deleted there too) and tenant 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_exactly_the_tenants_rows_and_reconcile_agrees() {
    let pg = stack::Postgres::start();
    let spec =
        DriveSpec { tenants: 3, transactions: 60, connections: 2, bulk_size: 200, seed: 5, ..DriveSpec::default() };
    drive(&pg.url, &spec).await.expect("workload");
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    capture(&pg.url, &lake, &dir.path().join("capture-1.jsonl"), None).await;

    let current_before = lake::read_current(&lake);
    let changes_before = lake::change_rows(&lake);
    assert!(!tenant_folders(&lake, 1).is_empty());
    let in_tenant = |t: i64| current_before.keys().filter(move |k| k.1 == t).map(|k| k.2);
    // Three of tenant 2's entities, spread over its ids.
    let tenant2: Vec<i64> = in_tenant(2).collect();
    let victims: BTreeSet<i64> = tenant2.iter().copied().step_by((tenant2.len() / 3).max(1)).take(3).collect();
    assert_eq!(victims.len(), 3, "tenant 2 has {} entities", tenant2.len());

    // 1. The whole of tenant 1.
    let store = Lake::open(lake.to_str().unwrap(), &Default::default()).unwrap();
    let opts = PurgeOptions { tenant_id: 1, entity_ids: None, wait: Duration::ZERO, by: "test".into() };
    let report = purge(&store, &opts).await.unwrap();
    let tenant1_changes = changes_before.keys().filter(|k| k.1 == 1).count() as u64;
    let tenant1_current = current_before.keys().filter(|k| k.1 == 1).count() as u64;
    assert_eq!(report.rows_removed.values().map(|r| r.changes).sum::<u64>(), tenant1_changes);
    assert_eq!(report.rows_removed.values().map(|r| r.current).sum::<u64>(), tenant1_current);
    assert_eq!((report.files_rewritten, report.files_deleted), (0, report.files_scanned));
    assert!(tenant_folders(&lake, 1).is_empty(), "{:?}", tenant_folders(&lake, 1));

    // 2. Three entities of tenant 2, through the command line.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_eavlake"));
    cmd.args(["purge", "--lake", lake.to_str().unwrap(), "--tenant", "2", "--no-wait", "--format", "json"]);
    for id in &victims {
        cmd.args(["--entity-id", &id.to_string()]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let victim_changes = changes_before.keys().filter(|k| k.1 == 2 && victims.contains(&k.2)).count() as u64;
    let removed = |area: &str| -> u64 {
        json["rows_removed"].as_object().unwrap().values().map(|r| r[area].as_u64().unwrap()).sum()
    };
    assert_eq!((removed("changes"), removed("current")), (victim_changes, 3), "{json}");
    assert!(json["files_rewritten"].as_u64().unwrap() >= 1, "{json}");
    assert_eq!(json["entity_ids"], serde_json::json!(victims.iter().collect::<Vec<_>>()));

    // Gone from every object; everything else intact, value for value.
    let gone = |tenant: i64, id: i64| tenant == 1 || (tenant == 2 && victims.contains(&id));
    let mut expected_current = current_before.clone();
    expected_current.retain(|k, _| !gone(k.1, k.2));
    lake::assert_same_state(&lake::read_current(&lake), &expected_current);
    let mut expected_changes = changes_before.clone();
    expected_changes.retain(|k, _| !gone(k.1, k.2));
    assert_eq!(lake::change_rows(&lake), expected_changes);
    lake::assert_rows_under_their_tenant(&lake);

    // 3. A capture of the purged entities arriving later (a lagging writer): its rows are
    //    dropped at the flush and compaction leaves them out.
    let late = eavlake::run::run_file(&config(&lake), &{
        let file = dir.path().join("capture-2.jsonl");
        capture_file_of(&pg.url, &lake, &file, &victims).await;
        file
    })
    .await
    .unwrap();
    assert!(late.stats.purged_rows_dropped >= 3, "{:?}", late.stats);
    assert_eq!(late.stats.rows_written, 0, "{:?}", late.stats);
    lake::assert_same_state(&lake::read_current(&lake), &expected_current);
    assert_eq!(lake::change_rows(&lake), expected_changes);

    // 4. The store forgets them too; the lake agrees with it for tenants 2 and 3.
    let client = connect(&pg.url).await;
    let ids: Vec<i64> = victims.iter().copied().collect();
    client.execute("DELETE FROM entity_values WHERE entity_id = ANY($1)", &[&ids]).await.unwrap();
    client.execute("DELETE FROM entities WHERE entity_id = ANY($1)", &[&ids]).await.unwrap();
    for tenant in [2, 3] {
        let r = reconcile(&reconcile_options(&pg.url, &lake, tenant)).await.unwrap();
        assert!(r.is_clean(), "tenant {tenant}: {}", r.to_table());
        assert!(r.lake_entities > 0);
    }

    // A purge that fails says so with exit code 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eavlake"))
        .args(["purge", "--lake", lake.to_str().unwrap(), "--tenant", "2", "--no-wait", "--format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format `xml`: expected `table` or `json`"));
}

/// The capture of only `ids`, written to `file` (the lake is not touched: the caller runs it).
async fn capture_file_of(pg_url: &str, lake: &Path, file: &Path, ids: &BTreeSet<i64>) {
    // `capture` runs the file itself; capture into a scratch lake, keep the file.
    let scratch = lake.with_file_name("scratch-lake");
    let ids: Vec<i64> = ids.iter().copied().collect();
    capture(pg_url, &scratch, file, Some(&ids)).await;
}
