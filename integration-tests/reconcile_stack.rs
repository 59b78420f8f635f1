//! `eavlake reconcile` on the real stack: PostgreSQL, Kafka, Debezium in Kafka Connect and an
//! `eavlake run --source kafka` worker writing a local lake (see e2e.rs for the full stack).
//!
//! A clean run agrees; drift is made on purpose in three ways (a current object removed, a value
//! changed with its capture disabled, an entity deleted outside capture) and reconcile names
//! exactly those entities and attributes; `--repair --wait` heals them through Debezium (an
//! incremental snapshot requested in its signal table, and a delete carried by the capture) and a
//! second run agrees; with the worker paused mid-workload, what differs is lag, not drift.

#[path = "common/kafka_broker.rs"]
mod kafka_broker;
#[path = "common/lake.rs"]
mod lake;
#[path = "common/stack.rs"]
mod stack;

use eavlake::config::Config;
use eavlake::reconcile::{reconcile, ReconcileOptions};
use eavlake::workload::postgres::{drive, DriveSpec};
use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

const DATA: &str = "eav.public.entity_changes";
const CATALOG: &str = "eav.public.attributes";

struct Worker(Option<Child>);

impl Worker {
    fn start(config: &std::path::Path, log: &std::path::Path) -> Worker {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_eavlake"))
            .args(["run", "--source", "kafka", "--config"])
            .arg(config)
            .env("RUST_LOG", "eavlake=info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Worker(Some(child))
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spec(transactions: u64, seed: u64) -> DriveSpec {
    DriveSpec { transactions, bulk_size: 300, seed, pause: Duration::from_millis(5), ..DriveSpec::default() }
}

/// Waits until a reconcile agrees (the lake has caught up).
async fn agree_within(opts: &ReconcileOptions, within: Duration) -> eavlake::reconcile::Report {
    let deadline = Instant::now() + within;
    loop {
        let r = reconcile(opts).await.unwrap();
        if r.is_clean() || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_on_the_real_stack() {
    let pg = stack::Postgres::start();
    let kafka = kafka_broker::KafkaBroker::start();
    kafka.create_topic(DATA, 4);
    kafka.create_topic(CATALOG, 1);
    let connect = stack::Connect::start(&kafka.bootstrap, &pg.url);
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let config_path = dir.path().join("worker.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[lake]
url = "{lake}"
range_size = 2000
[decode]
decimal_handling_mode = "string"
[batch]
max_age_ms = 1000
[catalog]
unknown_attribute_wait_ms = 10000
[kafka]
brokers = "{bootstrap}"
group_id = "reconcile"
topics = ["{DATA}"]
catalog_topic = "{CATALOG}"
"#,
            lake = lake_dir.display(),
            bootstrap = kafka.bootstrap
        ),
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let log = dir.path().join("worker.log");
    let mut worker = Worker::start(&config_path, &log);
    drive(&pg.url, &spec(120, 21)).await.unwrap();

    let opts = ReconcileOptions {
        postgres_url: eavlake::secret::SecretUrl::new(pg.url.clone()),
        lake_url: lake_dir.to_str().unwrap().to_string(),
        lag_wait: Duration::from_secs(5),
        kafka: Some(config.kafka.clone()),
        ..ReconcileOptions::default()
    };
    // A clean run agrees (once the capture has delivered everything).
    let r = agree_within(&opts, Duration::from_secs(120)).await;
    assert!(r.is_clean(), "{}\nworker log:\n{}", r.to_table(), std::fs::read_to_string(&log).unwrap_or_default());
    let lake = eavlake::sink::Lake::open(lake_dir.to_str().unwrap(), &config.s3_options()).unwrap();
    eavlake::run::compact(&config, &lake).await.unwrap();
    assert!(reconcile(&opts).await.unwrap().is_clean());

    let (client, conn) = tokio_postgres::connect(&pg.url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // 1. A current object removed.
    let files = lake::parquet_files(&lake_dir.join("current"));
    let removed = files.iter().find(|f| f.to_str().unwrap().contains("tenant_id=1/")).unwrap().clone();
    let removed_ids: BTreeSet<i64> = {
        let bytes = bytes::Bytes::from(std::fs::read(&removed).unwrap());
        let obj = eavlake::sink::parquet::ParquetObject::open(removed.to_str().unwrap(), bytes).unwrap();
        let mut ids = BTreeSet::new();
        for b in obj.read(obj.row_groups_for(i64::MIN, i64::MAX)).unwrap() {
            use arrow::array::AsArray;
            let col = b.column_by_name("entity_id").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
            ids.extend(col.values().iter().copied());
        }
        ids
    };
    std::fs::remove_file(&removed).unwrap();
    // With its change files (all applied to the current objects by the compaction above):
    // otherwise the lake's current state would rebuild the removed range from them, as the next
    // compaction would.
    let tenant_dir = removed.parent().unwrap();
    let entity_type = tenant_dir.parent().unwrap().file_name().unwrap();
    std::fs::remove_dir_all(lake_dir.join("changes").join(entity_type).join("tenant_id=1")).unwrap();
    // 2. and 3. With the capture of entities and entity_values disabled (out of the
    //    publication): a value changed, an entity deleted.
    client.batch_execute("ALTER PUBLICATION eavlake SET TABLE attributes, debezium_signal").await.unwrap();
    let row = client
        .query_one(
            "SELECT v.entity_id, v.attribute_id, a.name FROM entity_values v JOIN attributes a USING (attribute_id)
             JOIN entities e USING (entity_id)
             WHERE a.data_type = 'int' AND v.value_int IS NOT NULL AND NOT e.is_deleted AND e.tenant_id = 2
             ORDER BY v.entity_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (changed, attr_id, attr): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    client
        .execute(
            "UPDATE entity_values SET value_int = value_int + 1000 WHERE entity_id = $1 AND attribute_id = $2",
            &[&changed, &attr_id],
        )
        .await
        .unwrap();
    let deleted: i64 = client
        .query_one(
            "SELECT entity_id FROM entities WHERE tenant_id NOT IN (1, 2) AND NOT is_deleted ORDER BY entity_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client.execute("DELETE FROM entities WHERE entity_id = $1", &[&deleted]).await.unwrap();
    client
        .batch_execute("ALTER PUBLICATION eavlake SET TABLE attributes, entities, entity_values, debezium_signal")
        .await
        .unwrap();

    let r = reconcile(&opts).await.unwrap();
    assert_eq!(r.exit_code(), 1);
    let ids = |v: &[eavlake::reconcile::EntityRef]| v.iter().map(|e| e.entity_id).collect::<BTreeSet<_>>();
    assert_eq!(ids(&r.missing_in_lake), removed_ids, "{}", r.to_table());
    assert_eq!(ids(&r.extra_in_lake), BTreeSet::from([deleted]), "{}", r.to_table());
    assert_eq!(r.different.len(), 1, "{}", r.to_table());
    assert_eq!(r.different[0].entity.entity_id, changed);
    assert_eq!(r.different[0].attributes.len(), 1);
    assert_eq!(r.different[0].attributes[0].name, attr);

    // --repair --wait heals them through Debezium; a second run agrees.
    let repair =
        ReconcileOptions { repair: true, wait: true, repair_timeout: Duration::from_secs(120), ..opts.clone() };
    let r = reconcile(&repair).await.unwrap();
    assert_eq!(r.repaired, Some(true), "{}\nworker log tail:\n{}", r.to_json(), tail(&log));
    assert!(reconcile(&opts).await.unwrap().is_clean());

    // The worker stopped mid-workload: what differs then is lag, not drift. Reconcile starts
    // once the workload is over (a workload still running past lag_wait would be drift, rightly)
    // and the worker comes back while it waits. The second half of the workload runs after the
    // stop, so that the lake surely lags (a stop at a fixed moment once came after a fast
    // workload had all landed).
    let load = {
        let url = pg.url.clone();
        tokio::spawn(async move { drive(&url, &spec(30, 22)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.stop();
    load.await.unwrap();
    drive(&pg.url, &spec(30, 23)).await.unwrap();
    let lagging = ReconcileOptions { lag_wait: Duration::from_secs(180), ..opts.clone() };
    let check = tokio::spawn(async move { reconcile(&lagging).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _worker = Worker::start(&config_path, &log);
    let r = check.await.unwrap().unwrap();
    if !r.is_clean() {
        let standing = eavlake::lag::report(&config, &lake).await.map(|rows| eavlake::lag::table(&rows));
        let connect_errors = std::fs::read_to_string(connect.dir().join("connect.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("Exception"))
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>();
        let slot = client
            .query_one(
                "SELECT format('%s active=%s confirmed=%s wal=%s', slot_name, active, confirmed_flush_lsn, pg_current_wal_lsn()) FROM pg_replication_slots",
                &[],
            )
            .await
            .map(|r| r.get::<_, String>(0));
        tokio::time::sleep(Duration::from_secs(15)).await;
        let again =
            reconcile(&ReconcileOptions { lag_wait: Duration::ZERO, ..opts.clone() }).await.map(|r| r.to_table());
        panic!(
            "{}\nslot: {slot:?}\nreconcile 15 s later: {again:?}\neavlake lag:\n{standing:?}\nworker log tail:\n{}\nKafka Connect's warnings and errors (last 40):\n{}",
            r.to_table(),
            tail(&log),
            connect_errors[connect_errors.len().saturating_sub(40)..].join("\n")
        );
    }
    assert!(!r.lag.is_empty(), "the paused worker left entities behind: {}", r.to_json());
}

fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}
