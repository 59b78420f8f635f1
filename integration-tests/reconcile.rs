//! `eavlake reconcile` against a real PostgreSQL (integration-tests/stack/postgres.sh) and a lake
//! in the worker's real format.
//!
//! The lake is made the way the worker makes it: Postgres' rows are written out as Debezium JSON
//! change events (streamed creates whose source positions end at Postgres' WAL position of the
//! moment, like a capture that has caught up) and run through the file pipeline and compaction
//! (`eavlake::run::run_file`). Drift is then made on purpose behind the capture's back.

#[path = "common/lake.rs"]
mod lake;
#[path = "common/pg_capture.rs"]
mod pg_capture;
#[path = "common/ports.rs"]
mod ports;
#[path = "common/stack.rs"]
mod stack;

use pg_capture::{capture, connect};

use eavlake::reconcile::{reconcile, EntityRef, ReconcileOptions, Report};
use eavlake::workload::postgres::{drive, DriveSpec};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn options(pg_url: &str, lake: &Path) -> ReconcileOptions {
    ReconcileOptions {
        postgres_url: eavlake::secret::SecretUrl::new(pg_url),
        lake_url: lake.to_str().unwrap().to_string(),
        // Drift here is made behind the capture's back: the lake will not move.
        lag_wait: Duration::from_secs(1),
        // Small, so that the bisection goes several levels deep on a few thousand cells.
        bisection_factor: 4,
        bisection_threshold: 16,
        ..ReconcileOptions::default()
    }
}

fn refs(v: &[EntityRef]) -> BTreeSet<i64> {
    v.iter().map(|e| e.entity_id).collect()
}

fn entity_ids_of(file: &Path) -> BTreeSet<i64> {
    use arrow::array::AsArray;
    let bytes = bytes::Bytes::from(std::fs::read(file).unwrap());
    let obj = eavlake::sink::parquet::ParquetObject::open(file.to_str().unwrap(), bytes).unwrap();
    let mut out = BTreeSet::new();
    for b in obj.read(obj.row_groups_for(i64::MIN, i64::MAX)).unwrap() {
        let ids = b.column_by_name("entity_id").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
        out.extend(ids.values().iter().copied());
    }
    out
}

struct Setup {
    pg: stack::Postgres,
    dir: tempfile::TempDir,
}

impl Setup {
    fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }
}

/// A store with traffic, and its lake, agreeing.
async fn setup(seed: u64) -> Setup {
    let pg = stack::Postgres::start();
    let spec = DriveSpec { tenants: 3, transactions: 80, connections: 2, bulk_size: 300, seed, ..DriveSpec::default() };
    drive(&pg.url, &spec).await.expect("workload");
    let dir = tempfile::tempdir().unwrap();
    let s = Setup { pg, dir };
    capture(&s.pg.url, &s.lake(), &s.dir.path().join("capture-1.jsonl"), None).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agrees_then_names_exactly_the_drift() {
    let s = setup(11).await;
    let lake = s.lake();

    // A clean run agrees, with both defaults and a deep bisection.
    let r = reconcile(&options(&s.pg.url, &lake)).await.unwrap();
    assert!(r.is_clean(), "{}", r.to_table());
    assert_eq!(r.exit_code(), 0);
    assert!(r.lake_entities > 500 && r.lake_cells > r.lake_entities, "{r:?}");
    assert_eq!(r.lake_cells, r.postgres_cells);
    let defaults = ReconcileOptions { lag_wait: Duration::ZERO, ..options(&s.pg.url, &lake) };
    let defaults = ReconcileOptions { bisection_factor: 32, bisection_threshold: 2048, ..defaults };
    assert!(reconcile(&defaults).await.unwrap().is_clean());

    let client = connect(&s.pg.url).await;
    // 1. A current object removed: its entities are missing from the lake.
    let files = lake::parquet_files(&lake.join("current"));
    let removed =
        files.iter().find(|f| f.to_str().unwrap().contains("tenant_id=1/")).expect("a tenant 1 object").clone();
    let removed_ids = entity_ids_of(&removed);
    assert!(!removed_ids.is_empty());
    std::fs::remove_file(&removed).unwrap();

    // 2. A cold decimal and a hot attribute changed in Postgres (outside any capture), in
    //    tenant 2.
    let row = client
        .query_one(
            "SELECT v.entity_id, a.name, trim_scale(v.value_decimal)::text FROM entity_values v JOIN attributes a USING (attribute_id)
             JOIN entities e USING (entity_id)
             WHERE a.data_type = 'decimal' AND v.value_decimal IS NOT NULL AND NOT e.is_deleted AND e.tenant_id = 2
             ORDER BY v.entity_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (changed_id, changed_attr): (i64, String) = (row.get(0), row.get(1));
    client
        .execute(
            "UPDATE entity_values SET value_decimal = value_decimal + 1.25
             WHERE entity_id = $1 AND attribute_id = (SELECT attribute_id FROM attributes a JOIN entities e
                 ON e.tenant_id = a.tenant_id AND e.entity_type = a.entity_type WHERE e.entity_id = $1 AND a.name = $2)",
            &[&changed_id, &changed_attr],
        )
        .await
        .unwrap();
    let new_value: String = client
        .query_one(
            "SELECT trim_scale(v.value_decimal)::text FROM entity_values v JOIN attributes a USING (attribute_id)
             WHERE v.entity_id = $1 AND a.name = $2",
            &[&changed_id, &changed_attr],
        )
        .await
        .unwrap()
        .get(0);
    let old_value: String = row.get(2);
    let hot = client
        .query_one(
            "SELECT e.entity_id, a.name FROM entities e JOIN attributes a ON a.tenant_id = e.tenant_id
                 AND a.entity_type = e.entity_type AND a.is_hot AND a.data_type = 'text'
             WHERE NOT e.is_deleted AND e.tenant_id = 2 AND e.entity_id <> $1 ORDER BY e.entity_id DESC LIMIT 1",
            &[&changed_id],
        )
        .await
        .unwrap();
    let (hot_id, hot_attr): (i64, String) = (hot.get(0), hot.get(1));
    client
        .execute(
            "UPDATE entities SET hot_attributes = hot_attributes || jsonb_build_object($2::text, 'drifted ✓ \"quoted\"'::text)
             WHERE entity_id = $1",
            &[&hot_id, &hot_attr],
        )
        .await
        .unwrap();

    // 3. An entity deleted in Postgres (tenant 3): extra in the lake.
    let deleted: i64 = client
        .query_one(
            "SELECT entity_id FROM entities WHERE tenant_id = 3 AND NOT is_deleted ORDER BY entity_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client.execute("DELETE FROM entities WHERE entity_id = $1", &[&deleted]).await.unwrap();

    let r = reconcile(&options(&s.pg.url, &lake)).await.unwrap();
    assert_eq!(r.exit_code(), 1, "{}", r.to_table());
    assert_eq!(refs(&r.missing_in_lake), removed_ids, "{}", r.to_table());
    assert_eq!(refs(&r.extra_in_lake), BTreeSet::from([deleted]));
    assert_eq!(r.different.len(), 2, "{}", r.to_table());
    let decimal = r.different.iter().find(|d| d.entity.entity_id == changed_id).expect("the changed decimal");
    assert_eq!(decimal.attributes.len(), 1, "{:?}", decimal);
    assert_eq!(decimal.attributes[0].name, changed_attr);
    assert_eq!(decimal.attributes[0].postgres.as_deref(), Some(new_value.as_str()));
    assert_eq!(decimal.attributes[0].lake.as_deref(), Some(old_value.as_str()));
    let text = r.different.iter().find(|d| d.entity.entity_id == hot_id).expect("the changed hot attribute");
    assert_eq!(text.attributes.len(), 1, "{:?}", text);
    assert_eq!(text.attributes[0].name, hot_attr);
    assert_eq!(text.attributes[0].postgres.as_deref(), Some("drifted ✓ \"quoted\""));
    assert!(r.lag.is_empty());

    // The JSON output carries the same, in a stable shape.
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["status"], "drift");
    assert_eq!(json["extra_in_lake"][0]["entity_id"], deleted);
    assert_eq!(json["missing_in_lake"].as_array().unwrap().len(), removed_ids.len());
    let d = json["different"].as_array().unwrap().iter().find(|d| d["entity_id"] == changed_id).unwrap();
    assert_eq!(d["tenant_id"], 2);
    assert_eq!(d["attributes"][0]["name"], changed_attr.as_str());
    assert_eq!(d["attributes"][0]["postgres"], new_value.as_str());
    assert_eq!(d["attributes"][0]["lake"], old_value.as_str());
    assert!(r.to_metrics().contains("eavlake_reconcile_entities{kind=\"different\"} 2"));

    // Scoping: each drift belongs to one tenant.
    let only = |tenant: i64| ReconcileOptions { tenant: Some(tenant), ..options(&s.pg.url, &lake) };
    let r2 = reconcile(&only(2)).await.unwrap();
    assert!(r2.missing_in_lake.is_empty() && r2.extra_in_lake.is_empty() && r2.different.len() == 2);
    let r3 = reconcile(&only(3)).await.unwrap();
    assert_eq!(refs(&r3.extra_in_lake), BTreeSet::from([deleted]));
    assert!(r3.missing_in_lake.is_empty() && r3.different.is_empty());
    let range = ReconcileOptions { entity_range: Some((changed_id, changed_id + 1)), ..options(&s.pg.url, &lake) };
    let r4 = reconcile(&range).await.unwrap();
    assert_eq!(r4.different.len(), 1);
    assert!(r4.missing_in_lake.is_empty() && r4.extra_in_lake.is_empty());
    // --repair asks Debezium (through its signal table) to re-snapshot exactly the drifted
    // entities Postgres still has; the one deleted there is inserted and deleted again in one
    // transaction, for the capture to carry its delete (no trace left in Postgres). No Debezium
    // runs here, so --wait gives up after its timeout, reporting nothing repaired.
    let repair = ReconcileOptions {
        repair: true,
        wait: true,
        repair_timeout: Duration::from_secs(2),
        ..options(&s.pg.url, &lake)
    };
    let r = reconcile(&repair).await.unwrap();
    assert_eq!(r.repaired, Some(false));
    assert!(r.not_repairable.is_empty());
    let gone: i64 =
        client.query_one("SELECT count(*) FROM entities WHERE entity_id = $1", &[&deleted]).await.unwrap().get(0);
    assert_eq!(gone, 0);
    let signals = client.query("SELECT id, type, data FROM debezium_signal ORDER BY id", &[]).await.unwrap();
    assert_eq!(signals.len(), r.repair_signals.len());
    let mut asked: BTreeSet<i64> = BTreeSet::new();
    for row in &signals {
        assert_eq!(row.get::<_, &str>(1), "execute-snapshot");
        let data: serde_json::Value = serde_json::from_str(row.get(2)).unwrap();
        assert_eq!(data["type"], "incremental");
        assert_eq!(data["data-collections"], serde_json::json!(["public.entities", "public.entity_values"]));
        let conds = data["additional-conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        let filter = conds[0]["filter"].as_str().unwrap();
        assert_eq!(conds[1]["filter"].as_str().unwrap(), filter);
        let list = filter.strip_prefix("entity_id IN (").and_then(|f| f.strip_suffix(')')).unwrap();
        asked.extend(list.split(',').map(|i| i.parse::<i64>().unwrap()));
    }
    let mut want: BTreeSet<i64> = removed_ids.clone();
    want.extend([changed_id, hot_id]);
    assert_eq!(asked, want);

    let types: Vec<String> = client
        .query("SELECT DISTINCT entity_type FROM entities", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for et in types {
        let r5 =
            reconcile(&ReconcileOptions { entity_type: Some(et.clone()), ..options(&s.pg.url, &lake) }).await.unwrap();
        assert!(r5.drifted().all(|e| e.entity_type == et));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_behind_is_lag_not_drift() {
    let s = setup(12).await;
    let lake = s.lake();
    let client = connect(&s.pg.url).await;
    // Changes the capture has not delivered yet.
    let ids: Vec<i64> = client
        .query("SELECT entity_id FROM entities WHERE NOT is_deleted ORDER BY entity_id DESC LIMIT 5", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    client
        .execute(
            "UPDATE entity_values SET value_int = value_int + 7 WHERE entity_id = ANY($1) AND value_int IS NOT NULL",
            &[&ids],
        )
        .await
        .unwrap();
    client
        .execute("UPDATE entities SET hot_attributes = hot_attributes - 'nonexistent', version = version + 1 WHERE entity_id = ANY($1)", &[&ids])
        .await
        .unwrap();
    let changed: BTreeSet<i64> = client
        .query(
            "SELECT DISTINCT entity_id FROM entity_values WHERE entity_id = ANY($1) AND value_int IS NOT NULL",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!changed.is_empty());

    let opts = ReconcileOptions { lag_wait: Duration::from_secs(60), ..options(&s.pg.url, &lake) };
    let task = tokio::spawn(async move { reconcile(&opts).await });
    // The capture catches up while reconcile waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    capture(&s.pg.url, &lake, &s.dir.path().join("capture-2.jsonl"), Some(&ids)).await;
    let r: Report = task.await.unwrap().unwrap();
    assert!(r.is_clean(), "{}", r.to_table());
    assert_eq!(r.exit_code(), 0);
    assert_eq!(refs(&r.lag), changed, "{}", r.to_json());

    // The same drift with the lake not catching up is drift, after the bounded wait.
    let drifted = *changed.first().expect("checked above");
    client
        .execute(
            "UPDATE entity_values SET value_int = value_int + 1 WHERE entity_id = $1 AND value_int IS NOT NULL",
            &[&drifted],
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let r =
        reconcile(&ReconcileOptions { lag_wait: Duration::from_secs(2), ..options(&s.pg.url, &lake) }).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(r.different.len(), 1, "{}", r.to_table());
    assert!(r.lag.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_values_hash_alike_on_both_sides() {
    let pg = stack::Postgres::start();
    let client = connect(&pg.url).await;
    // JSON canonical form, compared with Postgres' own jsonb output.
    let inputs = [
        r#"{"b": 1, "a": {"d": [1, 2.50, 1e2, -0.0], "c": "é\n\"x\"\\/\u0001😀"}, "aa": null}"#,
        r#"{"a":1,"a":2}"#,
        "[1.0, 1, 1E-3, 12.3400, 0.000]",
        r#""\ud83d\ude00 unicode ü""#,
        "{}",
        "[]",
        "123456789012345678901234567890.5",
    ];
    for input in inputs {
        let pg_text: String = client.query_one("SELECT $1::text::jsonb::text", &[&input]).await.unwrap().get(0);
        assert_eq!(eavlake::reconcile::checksum::canonical_json(input).unwrap(), pg_text, "{input}");
    }
    // The cell hash is Postgres' own hashtextextended, reimplemented: bit for bit, any length
    // (the 12-byte blocks and every tail length), any seed.
    let mut texts: Vec<String> = (0..40).map(|n| "aé☃😀xyz".chars().cycle().take(n).collect()).collect();
    texts.push(String::new());
    for (i, t) in texts.iter().enumerate() {
        for seed in [0i64, 1, -1, i64::MIN, 0x1234_5678_9abc_def0, i as i64 * 7919] {
            let want: i64 = client.query_one("SELECT hashtextextended($1, $2)", &[t, &seed]).await.unwrap().get(0);
            assert_eq!(
                eavlake::reconcile::checksum::hash_bytes_extended(t.as_bytes(), seed as u64) as i64,
                want,
                "{t:?} {seed}"
            );
        }
    }
    // An entity of tricky values in every type, captured, agrees.
    client
        .batch_execute(
            r#"
            INSERT INTO attributes (attribute_id, tenant_id, entity_type, name, data_type, is_hot) VALUES
              (1, 1, 'thing', 'hot_dec', 'decimal', true), (2, 1, 'thing', 'hot_ts', 'timestamp', true),
              (3, 1, 'thing', 'hot_json', 'json', true), (4, 1, 'thing', 'hot_text', 'text', true),
              (5, 1, 'thing', 'dec', 'decimal', false), (6, 1, 'thing', 'ts', 'timestamp', false),
              (7, 1, 'thing', 'js', 'json', false), (8, 1, 'thing', 'txt', 'text', false),
              (9, 1, 'thing', 'flag', 'bool', false), (10, 1, 'thing', 'n', 'int', false),
              (11, 1, 'thing', 'hot_flag', 'bool', true), (12, 1, 'thing', 'hot_n', 'int', true);
            INSERT INTO entities (entity_id, tenant_id, entity_type, hot_attributes) VALUES
              (1, 1, 'thing', '{"hot_dec": 12.50, "hot_ts": "2024-02-29T23:59:59.999999+01:00", "hot_json": {"z": [1.0, {"b": 1, "a": "\\u00e9"}]}, "hot_text": "tab\there ☃", "hot_flag": false, "hot_n": -9223372036854775808}'),
              (2, 1, 'thing', '{"hot_dec": "-0.000000001", "hot_ts": 1709287200123456, "hot_json": "just a string", "hot_text": null}'),
              (3, 1, 'thing', '{}');
            -- Soft-deleted, with values left behind: not present, on either side.
            INSERT INTO entities (entity_id, tenant_id, entity_type, hot_attributes, is_deleted) VALUES
              (4, 1, 'thing', '{"hot_n": 1}', true);
            INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_int) VALUES (4, 10, 1, 5);
            INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_decimal) VALUES (1, 5, 1, 100.000000000), (2, 5, 1, -0.5);
            INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_timestamp) VALUES (1, 6, 1, '1969-12-31 23:59:59.000001+00'), (2, 6, 1, '2262-04-11 23:47:16.854775+00');
            INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_json) VALUES (1, 7, 1, '{"k": 1e3, "kk": [true, null]}'), (2, 7, 1, '"\u2028 line sep"');
            INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_text) VALUES (1, 8, 1, E'multi\nline \\ back'), (2, 8, 1, '');
            INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_bool) VALUES (1, 9, 1, true);
            INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_int) VALUES (1, 10, 1, 0), (2, 10, 1, NULL);
            "#,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    capture(&pg.url, &lake, &dir.path().join("capture-1.jsonl"), None).await;
    let r = reconcile(&options(&pg.url, &lake)).await.unwrap();
    assert!(r.is_clean(), "{}", r.to_table());
    assert_eq!(r.lake_entities, 3);
    // 3 presence cells, 9 hot and 10 cold non-null values.
    assert_eq!(r.lake_cells, 22, "{}", r.to_json());

    // A timestamp off by one microsecond is found, and shown readably.
    client.execute("UPDATE entity_values SET value_timestamp = value_timestamp + interval '1 microsecond' WHERE entity_id = 1 AND attribute_id = 6", &[]).await.unwrap();
    let r = reconcile(&options(&pg.url, &lake)).await.unwrap();
    assert_eq!(r.different.len(), 1);
    let a = &r.different[0].attributes[0];
    assert_eq!(
        (a.name.as_str(), a.postgres.as_deref(), a.lake.as_deref()),
        ("ts", Some("1969-12-31T23:59:59.000002Z"), Some("1969-12-31T23:59:59.000001Z"))
    );
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eavlake"))
        .arg("reconcile")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run eavlake");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_bad_input() {
    let s = setup(13).await;
    let lake = s.lake();
    let lake_s = lake.to_str().unwrap();
    // Agreement: 0, with a table; drift: 1, with JSON.
    let (code, out, err) = run_cli(&["--postgres", &s.pg.url, "--lake", lake_s, "--lag-wait", "0"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("AGREE"), "{out}");
    let client = connect(&s.pg.url).await;
    let victim: i64 =
        client.query_one("SELECT entity_id FROM entities WHERE NOT is_deleted LIMIT 1", &[]).await.unwrap().get(0);
    client.execute("DELETE FROM entities WHERE entity_id = $1", &[&victim]).await.unwrap();
    let metrics = s.dir.path().join("reconcile.prom");
    let (code, out, err) = run_cli(&[
        "--postgres",
        &s.pg.url,
        "--lake",
        lake_s,
        "--lag-wait",
        "0",
        "--format",
        "json",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["extra_in_lake"][0]["entity_id"], victim);
    assert!(std::fs::read_to_string(&metrics).unwrap().contains("eavlake_reconcile_agree 0"));

    // Two scoped runs side by side (the victim's tenant drifts, another agrees): each keeps its
    // own outcome in the lake, and neither replaces the whole lake's.
    let victim_tenant = json["extra_in_lake"][0]["tenant_id"].as_i64().unwrap();
    let other_tenant: i64 = client
        .query_one("SELECT min(tenant_id) FROM entities WHERE tenant_id <> $1", &[&victim_tenant])
        .await
        .unwrap()
        .get(0);
    let scoped = |tenant: i64| {
        let (url, lake) = (s.pg.url.clone(), lake_s.to_string());
        std::thread::spawn(move || {
            run_cli(&["--postgres", &url, "--lake", &lake, "--lag-wait", "0", "--tenant", &tenant.to_string()])
        })
    };
    let (drifted, clean) = (scoped(victim_tenant), scoped(other_tenant));
    let (drifted, clean) = (drifted.join().unwrap(), clean.join().unwrap());
    assert_eq!(drifted.0, 1, "{}\n{}", drifted.1, drifted.2);
    assert_eq!(clean.0, 0, "{}\n{}", clean.1, clean.2);
    let kept = |name: &str| -> serde_json::Value {
        let path = lake.join("_eavlake/reconcile").join(name);
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
    };
    let whole = kept("last.json");
    assert_eq!((whole["status"].as_str(), whole["scope"].as_str()), (Some("drift"), Some("")));
    let one = kept(&format!("scoped/tenant={victim_tenant}.json"));
    assert_eq!((one["status"].as_str(), one["extra_in_lake"].as_u64()), (Some("drift"), Some(1)));
    let two = kept(&format!("scoped/tenant={other_tenant}.json"));
    assert_eq!((two["status"].as_str(), two["scoped"].as_bool()), (Some("agree"), Some(true)));

    // An unreachable database: 2, naming it.
    let port = ports::free_port();
    let dead = format!("postgres://postgres@127.0.0.1:{port}/eav");
    let (code, _, err) = run_cli(&["--postgres", &dead, "--lake", lake_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot connect"), "{err}");
    // A missing lake, and a folder that is not a lake: 2.
    let missing = s.dir.path().join("nowhere");
    let (code, _, err) = run_cli(&["--postgres", &s.pg.url, "--lake", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such folder"), "{err}");
    assert!(!missing.exists(), "reconcile must not create a lake");
    let empty = s.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = run_cli(&["--postgres", &s.pg.url, "--lake", empty.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an eavlake lake"), "{err}");
    // A database without the EAV tables.
    let other = s.pg.url.replace("/eav", "/postgres");
    let (code, _, err) = run_cli(&["--postgres", &other, "--lake", lake_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no table `attributes`"), "{err}");
    // A lake of another schema: the same attribute ids mean other attributes.
    client.execute("UPDATE attributes SET name = name || '_other'", &[]).await.unwrap();
    let (code, _, err) = run_cli(&["--postgres", &s.pg.url, "--lake", lake_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a lake of"), "{err}");
    // Bad flags: 2.
    let (code, _, err) = run_cli(&["--postgres", &s.pg.url, "--lake", lake_s, "--entity-range", "9..3"]);
    assert_eq!(code, 2, "{err}");
}
