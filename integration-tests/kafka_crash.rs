//! Crash tests of `eavlake run --source kafka` against a real Kafka broker (KRaft, from Maven
//! Central jars, started by `integration-tests/stack/kafka.sh`).
//!
//! A producer writes a generated workload of 100K Debezium change events (with re-sends and
//! poison records) while the worker process is killed at 20 random moments (more, up to 40, until three have cut a flush; SIGKILL, half of
//! them inside a flush; every fifth a double SIGTERM) and restarted; a last worker catches up and is stopped with SIGTERM (exit 0). The lake must then
//! hold every change exactly once (current state equal to the workload's ground truth, no change
//! row twice) and the dead-letter topic exactly the poison records, bytes unchanged.
//!
//! And the broker down for longer than the group's session timeout mid-stream: the worker comes
//! back by itself (a new consumer if the old one was fenced) and the lake holds every change once;
//! and the broker restarted while attributes are created: their values wait for the catalog.

#[path = "common/kafka_broker.rs"]
mod kafka_broker;
#[path = "common/kafka_workload.rs"]
mod kafka_workload;
#[path = "common/lake.rs"]
mod lake;
#[path = "common/worker_process.rs"]
mod worker_process;

use kafka_workload::*;
use lake::assert_exactly_once;
use std::time::{Duration, Instant};
use worker_process::{spawn_worker, wait_for_flush, write_config};

const TOPIC: &str = "eav.public.entity_values";
const PARTITIONS: i32 = 4;

/// Static membership: a restarted worker takes its place in the group at once.
const STATIC_MEMBER: &str = "\"group.instance.id\" = \"crash-worker-1\"";

/// A small deterministic generator for the kill moments (the seed is printed).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One test at a time: each runs a broker and a worker, and two at once on two cores push
/// flushes past their deadline far more often than the kill schedule means to.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_20_random_moments_loses_and_duplicates_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = kafka_broker::KafkaBroker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    broker.create_topic(&format!("{TOPIC}.dlq"), 2);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let properties = format!("{STATIC_MEMBER}\n\"session.timeout.ms\" = \"10000\"");
    let config = write_config(dir.path(), &broker.bootstrap, &lake, TOPIC, "crash", &properties);
    let log = dir.path().join("worker.log");

    let spec = eavlake::workload::WorkloadSpec {
        events: 100_000,
        tenants: 6,
        seed: 2026,
        max_bulk: 500,
        ..eavlake::workload::WorkloadSpec::default()
    };
    let producing = {
        let b = broker.bootstrap.clone();
        tokio::spawn(async move { produce_workload(&b, TOPIC, PARTITIONS, &spec, 12_000).await })
    };

    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill moments seed: {seed}");
    let redone = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.matches("removed the objects of an incomplete flush").count()
    };
    let mut kills = 0;
    // 20 kills, and more (40 at most) until three have landed inside a flush: how often a kill
    // catches a flush open depends on the machine's load (once in 20 kills, in one run of 36).
    while kills < 20 || (redone() < 3 && kills < 40) {
        let mut worker = spawn_worker(&config, &log, None);
        let wait = Duration::from_millis(200 + next(&mut seed) % 1300);
        tokio::time::sleep(wait).await;
        if kills % 2 == 1 {
            // Every other kill lands inside a flush: between its intent and its completion.
            wait_for_flush(&lake, Duration::from_secs(3)).await;
        }
        if let Some(status) = worker.try_wait().unwrap() {
            panic!("worker exited by itself ({status}); log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        if kills % 5 == 4 {
            // An impatient operator: SIGTERM twice. The second exits at once (130), or the first
            // had already finished its clean stop (0); either way nothing may be lost.
            // SAFETY: signals to a child this test started.
            unsafe {
                libc::kill(worker.id() as i32, libc::SIGTERM);
                libc::kill(worker.id() as i32, libc::SIGTERM);
            }
            let status = worker.wait().unwrap();
            assert!(matches!(status.code(), Some(130) | Some(0)), "double SIGTERM: {status}");
        } else {
            worker.kill().unwrap(); // SIGKILL
            worker.wait().unwrap();
        }
        kills += 1;
    }
    let produced = producing.await.unwrap();
    eprintln!("{} records produced, {} poison", produced.records, produced.expected_dead.len());

    // A last worker catches up; SIGTERM stops it cleanly within a bound.
    let mut worker = spawn_worker(&config, &log, None);
    let ends = high_watermarks(&broker.bootstrap, TOPIC, PARTITIONS);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(180)).await;
    let status = worker_process::stop(&mut worker, Duration::from_secs(30)).await;
    assert!(status.success(), "clean stop exits 0: {status}");
    let text = std::fs::read_to_string(&log).unwrap();
    let clean = text.matches("stopped cleanly").count();
    assert!((1..=5).contains(&clean), "the last worker (and perhaps a double-SIGTERM one) stopped cleanly: {clean}");

    // EAVLAKE_KEEP_TEST_LAKE=1 keeps the lake and the workers' log for a look after a failure.
    let _dir = if std::env::var_os("EAVLAKE_KEEP_TEST_LAKE").is_some() {
        eprintln!("kept {}", dir.keep().display());
        None
    } else {
        Some(dir)
    };
    assert_exactly_once(&config, &lake, &produced.truth.current).await;
    assert_dead_letters_exactly(&broker.bootstrap, &format!("{TOPIC}.dlq"), &produced);
    // Offsets were committed (after the lake's record) up to the end.
    assert!(text.contains("resuming from the lake's progress record"));
    let redone = text.matches("removed the objects of an incomplete flush").count();
    eprintln!("{redone} flushes were cut by a kill and redone");
    assert!(redone >= 3, "kills landed inside flushes: {redone}");
}

/// The broker down for longer than the session timeout, mid-stream, twice within a minute (a
/// rolling restart): each time librdkafka gives the partitions up as lost and resets its member
/// id; the offset commits it deferred meanwhile go out with that empty id once the broker is back,
/// and the coordinator, which still knows the static member, answers FENCED_INSTANCE_ID: a fatal
/// error, after which the consumer neither fetches nor rejoins. The worker must replace its
/// consumer each time (a second fatal error within a minute stops it only when no outage explains
/// it) and catch up, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_past_the_session_timeout_then_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = kafka_broker::KafkaBroker::start();
    broker.create_topic(TOPIC, 2);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // Deferred commits wait a session timeout for the coordinator: the broker is back within it,
    // and the worker reconnects at once.
    let properties =
        format!("{STATIC_MEMBER}\n\"session.timeout.ms\" = \"10000\"\n\"reconnect.backoff.max.ms\" = \"500\"");
    let config = write_config(dir.path(), &broker.bootstrap, &lake, TOPIC, "crash", &properties);
    let log = dir.path().join("worker.log");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    // No poison records: a dead letter due while the broker is down is not acknowledged within
    // `request_timeout_ms` and stops the worker (a known gap, see the README), which is not the
    // case under test. Produced over about 40 s, so that both outages come mid-stream.
    let spec = eavlake::workload::WorkloadSpec {
        events: 40_000,
        tenants: 4,
        seed: 77,
        max_bulk: 200,
        poison: false,
        ..eavlake::workload::WorkloadSpec::default()
    };
    let producing = {
        let b = broker.bootstrap.clone();
        tokio::spawn(async move { produce_workload(&b, TOPIC, 2, &spec, 1_000).await })
    };
    let mut worker = spawn_worker(&config, &log, None);
    let until = Instant::now() + Duration::from_secs(30);
    while (0..2).any(|p| lake_progress(&lake, TOPIC, p).is_none()) {
        assert!(Instant::now() < until, "no partitions within 30 s; log:\n{}", text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for outage in 1..=2 {
        let given_up = text().matches("partition given up").count();
        let assigned = text().matches("partition assigned").count();
        broker.stop();
        let until = Instant::now() + Duration::from_secs(30);
        while text().matches("partition given up").count() < given_up + 2 {
            assert!(Instant::now() < until, "outage {outage}: the session did not time out; log:\n{}", text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // What the partitions' last flushes made durable as they were given up.
        let before: Vec<Option<i64>> = (0..2).map(|p| lake_progress(&lake, TOPIC, p)).collect();
        broker.start_again();
        // Back at work: both partitions assigned again, and their progress past where it was
        // (the workload is still being produced).
        let until = Instant::now() + Duration::from_secs(40);
        while text().matches("partition assigned").count() < assigned + 2
            || (0..2).any(|p| lake_progress(&lake, TOPIC, p) <= before[p as usize])
        {
            assert!(worker.try_wait().unwrap().is_none(), "outage {outage}: the worker exited; log:\n{}", text());
            assert!(Instant::now() < until, "outage {outage}: the worker did not resume; log:\n{}", text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let produced = producing.await.unwrap();
    let ends = high_watermarks(&broker.bootstrap, TOPIC, 2);
    let caught_up =
        tokio::time::timeout(Duration::from_secs(40), wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(3600)));
    assert!(caught_up.await.is_ok(), "the worker did not catch up after the outages; log:\n{}", text());
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited; log:\n{}", text());
    let replaced = text().matches("Kafka consumer failed: replacing it").count();
    // Usually 2; fewer when the broker took longer than a session timeout to come back (the
    // deferred commits then expire unsent): a slow machine.
    eprintln!("the consumer was replaced {replaced} time(s)");
    worker.kill().unwrap();
    worker.wait().unwrap();

    assert_exactly_once(&config, &lake, &produced.truth.current).await;
}

/// Values of attributes created while the broker restarts: the producer's backlog reaches the
/// worker at once when the broker is back, and its data consumer, reconnecting within 50 ms here,
/// would read far past a value's wait of 1,500 records before the catalog topic's consumer (on
/// its own reconnect schedule) delivers the attribute: the values would become dead letters. The
/// worker holds its data partitions until the catalog is read to its end, and the lake holds
/// every change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_attributes_created_across_a_broker_restart_wait_for_the_catalog() {
    const CATALOG: &str = "eav.public.attributes";
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = kafka_broker::KafkaBroker::start();
    broker.create_topic(TOPIC, 2);
    broker.create_topic(CATALOG, 1);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // librdkafka's own reconnect schedule (backoff up to 10 s, with jitter) for the data consumer.
    let config = write_config(dir.path(), &broker.bootstrap, &lake, TOPIC, "catalog-restart", "");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("unknown_attribute_wait = 200000", "unknown_attribute_wait = 1500")
        .replace("unknown_attribute_wait_ms = 8000", "unknown_attribute_wait_ms = 30000")
        .replace("[kafka.properties]", &format!("catalog_topic = \"{CATALOG}\"\n[kafka.properties]"));
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("worker.log");
    let spec = eavlake::workload::WorkloadSpec {
        events: 40_000,
        tenants: 4,
        seed: 91,
        max_bulk: 200,
        poison: false,
        ..eavlake::workload::WorkloadSpec::default()
    };
    let producing = {
        let b = broker.bootstrap.clone();
        tokio::spawn(async move { produce_workload_with(&b, TOPIC, 2, &spec, 2_000, false, Some(CATALOG)).await })
    };
    let mut worker = spawn_worker(&config, &log, None);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        broker.restart();
    }
    let produced = producing.await.unwrap();
    let ends = high_watermarks(&broker.bootstrap, TOPIC, 2);
    let caught_up =
        tokio::time::timeout(Duration::from_secs(60), wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(3600)));
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(caught_up.await.is_ok(), "the worker did not catch up after the restarts; log:\n{}", text());
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited; log:\n{}", text());
    worker.kill().unwrap();
    worker.wait().unwrap();
    eprintln!(
        "the worker held its data partitions for the catalog {} time(s); {} records produced",
        text().matches("\"held\":true").count(),
        produced.records
    );
    let dead = read_dead_letters(&broker.bootstrap, &format!("{TOPIC}.dlq"));
    assert!(dead.is_empty(), "dead letters: {:?}", dead.values().map(|d| &d.0).collect::<Vec<_>>());
    assert_exactly_once(&config, &lake, &produced.truth.current).await;
}

/// Records deleted from a partition (by retention, or DeleteRecords) before the lake read them:
/// Kafka starts the worker past where the lake's record says to resume. The worker cannot get
/// them back, but it says so, with both offsets, and goes on with what is there. (Here the
/// deleted records are tombstones, which carry no change: the lake must still hold every change
/// of the workload once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_before_the_lake_read_them_are_reported() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::FutureRecord;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let _one = ONE_AT_A_TIME.lock().await;
    let broker = kafka_broker::KafkaBroker::start();
    broker.create_topic(TOPIC, 2);
    let producer = producer(&broker.bootstrap);
    for _ in 0..100 {
        let tombstone = FutureRecord::<[u8], [u8]>::to(TOPIC).partition(0).key(b"gone");
        producer.send(tombstone, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &broker.bootstrap).create().unwrap();
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset(TOPIC, 0, Offset::Offset(100)).unwrap();
    let deleted = admin.delete_records(&upto, &AdminOptions::new()).await.unwrap();
    assert!(deleted.elements().iter().all(|e| e.error().is_ok()), "{deleted:?}");
    let spec = eavlake::workload::WorkloadSpec {
        events: 3_000,
        tenants: 2,
        seed: 5,
        poison: false,
        ..eavlake::workload::WorkloadSpec::default()
    };
    let produced = produce_workload(&broker.bootstrap, TOPIC, 2, &spec, 0).await;

    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let config = write_config(dir.path(), &broker.bootstrap, &lake, TOPIC, "deleted", "");
    let log = dir.path().join("worker.log");
    let mut worker = spawn_worker(&config, &log, None);
    let ends = high_watermarks(&broker.bootstrap, TOPIC, 2);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    worker.kill().unwrap();
    worker.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "partition resumed past the lake's record")
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, for partition 0 only; log:\n{text}");
    let w = &warnings[0]["fields"];
    assert_eq!((w["partition"].as_i64(), w["expected"].as_i64(), w["got"].as_i64()), (Some(0), Some(0), Some(100)));
    assert_exactly_once(&config, &lake, &produced.truth.current).await;
}

/// The topic deleted and created again under its name while the worker runs (which the runbook
/// warns against: its offsets start again below the lake's records). The worker cannot tell the
/// new records from old ones by offset; it says that Kafka went back below the lake's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_recreated_under_its_name_is_reported() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::FutureRecord;
    use rdkafka::ClientConfig;

    let _one = ONE_AT_A_TIME.lock().await;
    let broker = kafka_broker::KafkaBroker::start();
    broker.create_topic(TOPIC, 1);
    let spec = eavlake::workload::WorkloadSpec {
        events: 1_000,
        tenants: 2,
        seed: 9,
        poison: false,
        ..eavlake::workload::WorkloadSpec::default()
    };
    produce_workload(&broker.bootstrap, TOPIC, 1, &spec, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let config = write_config(dir.path(), &broker.bootstrap, &lake, TOPIC, "recreated", "");
    let log = dir.path().join("worker.log");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut worker = spawn_worker(&config, &log, None);
    let ends = high_watermarks(&broker.bootstrap, TOPIC, 1);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &broker.bootstrap).create().unwrap();
    admin.delete_topics(&[TOPIC], &AdminOptions::new()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.create_topic(TOPIC, 1);
    let producer = producer(&broker.bootstrap);
    let until = Instant::now() + Duration::from_secs(90);
    while !text().contains("Kafka went back below the lake's position") {
        assert!(Instant::now() < until, "no warning within 90 s; log:\n{}", text());
        let tombstone = FutureRecord::<[u8], [u8]>::to(TOPIC).partition(0).key(b"new");
        producer.send(tombstone, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    let warning = text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "Kafka went back below the lake's position")
        .unwrap();
    let w = &warning["fields"];
    assert_eq!(w["expected"].as_i64(), Some(ends[&0]), "{warning}");
    assert!(w["got"].as_i64().is_some_and(|got| got < ends[&0]), "{warning}");
}
