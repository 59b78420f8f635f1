//! Component tests of the Kafka worker on librdkafka's mock cluster (in process, no broker):
//! a workload lands exactly once with its dead letters in the dead-letter topic; two workers of
//! one group share partitions through cooperative rebalances; a worker whose partition is taken
//! over is fenced; offsets are committed after the lake's record. The same behaviours against a
//! real broker, with crashes, are in `kafka_crash.rs`.

#[path = "common/flaky_store.rs"]
mod flaky_store;
#[path = "common/kafka_workload.rs"]
mod kafka_workload;
#[path = "common/lake.rs"]
mod lake;

use eavlake::config::Config;
use eavlake::decode::DecimalMode;
use eavlake::worker::{run_kafka, run_kafka_on, Shutdown, WorkerReport};
use eavlake::workload::WorkloadSpec;
use kafka_workload::*;
use lake::{assert_same_state, change_row_keys, read_current};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::Path;
use std::time::Duration;

const TOPIC: &str = "eav.public.entity_values";

fn config(bootstrap: &str, lake: &Path, group: &str) -> Config {
    let mut c = Config::default();
    c.lake.url = lake.to_str().unwrap().to_string();
    c.lake.range_size = 5_000;
    c.decode.decimal_handling_mode = DecimalMode::String;
    c.kafka.brokers = bootstrap.to_string();
    c.kafka.group_id = group.to_string();
    c.kafka.topics = vec![TOPIC.to_string()];
    c.kafka.request_timeout_ms = 10_000;
    c.batch.max_rows = 2_000;
    c.batch.max_age_ms = 300;
    c.batch.flush_deadline_ms = 2_000;
    c.batch.clock_skew_ms = 50;
    c.catalog.unknown_attribute_wait_ms = 500;
    // Several workers share a test process: no HTTP listener (the real-stack test scrapes one).
    c.metrics.listen = String::new();
    // The mock cluster's group coordinator is quick to give up on a silent member.
    c.kafka.properties.0.insert("session.timeout.ms".into(), "6000".into());
    c.kafka.properties.0.insert("heartbeat.interval.ms".into(), "500".into());
    c
}

fn spec(events: u64, seed: u64) -> WorkloadSpec {
    WorkloadSpec { events, tenants: 4, seed, max_bulk: 200, ..WorkloadSpec::default() }
}

fn cluster(partitions: i32) -> MockCluster<'static, DefaultProducerContext> {
    let c = MockCluster::new(1).unwrap();
    c.create_topic(TOPIC, partitions, 1).unwrap();
    c.create_topic(&format!("{TOPIC}.dlq"), 2, 1).unwrap();
    c
}

fn start(config: &Config) -> (Shutdown, tokio::task::JoinHandle<anyhow::Result<WorkerReport>>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let shutdown = Shutdown::default();
    let (c, s) = (config.clone(), shutdown.clone());
    (shutdown, tokio::spawn(async move { run_kafka(&c, s).await }))
}

async fn stop(w: (Shutdown, tokio::task::JoinHandle<anyhow::Result<WorkerReport>>)) -> WorkerReport {
    w.0.request();
    tokio::time::timeout(Duration::from_secs(30), w.1).await.expect("stops in time").unwrap().unwrap()
}

async fn compact(config: &Config) {
    let lake = eavlake::sink::Lake::open(&config.lake.url, &config.s3_options()).unwrap();
    eavlake::run::compact(config, &lake).await.unwrap();
}

/// Checks the lake against what was produced: the current state equals the ground truth, no
/// change row twice, and the dead-letter topic holds exactly the poison records, bytes unchanged,
/// with Kafka Connect's headers.
fn assert_exactly_once(bootstrap: &str, lake: &Path, produced: &Produced) {
    assert_same_state(&read_current(lake), &produced.truth.current);
    let keys = change_row_keys(lake);
    let unique: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a change row landed twice");
    let dead = read_dead_letters(bootstrap, &format!("{TOPIC}.dlq"));
    let got: Vec<_> = dead.iter().map(|(k, (r, v, _))| (*k, r.clone(), v.clone())).collect();
    let want: Vec<_> = produced.expected_dead.iter().map(|(k, (r, v))| (*k, r.clone(), v.clone())).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "dead letters: {:?} vs expected {:?}",
        dead.keys(),
        produced.expected_dead.keys()
    );
    assert_eq!(got, want);
    for (_, _, h) in dead.values() {
        assert_eq!(h["__connect.errors.topic"], TOPIC);
        assert!(
            !h["__connect.errors.exception.class.name"].is_empty()
                && !h["__connect.errors.exception.message"].is_empty()
        );
    }
}

fn committed(bootstrap: &str, group: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(TOPIC, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_lands_a_workload_exactly_once_with_dead_letters_in_a_topic() {
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let produced = produce_workload(&bootstrap, TOPIC, 3, &spec(15_000, 3), 0).await;
    assert!(!produced.expected_dead.is_empty(), "the workload has poison records");
    let config = config(&bootstrap, &lake, "g1");
    let store = eavlake::sink::Lake::open(&config.lake.url, &config.s3_options()).unwrap();
    let ends = high_watermarks(&bootstrap, TOPIC, 3);
    // `eavlake lag` before: everything is lag, nothing committed, nobody holds a partition.
    let before = eavlake::lag::report(&config, &store).await.unwrap();
    let lags: Vec<(i32, Option<i64>, i64, i64)> =
        before.iter().map(|r| (r.partition, r.committed, r.lake_next, r.lag_messages)).collect();
    assert_eq!(lags, ends.iter().map(|(p, end)| (*p, None, 0, *end)).collect::<Vec<_>>());
    assert!(before.iter().all(|r| r.owner.is_none() && r.lag_seconds > 0.0), "{before:?}");
    let worker = start(&config);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    let report = stop(worker).await;
    // …and after: no lag, the committed offsets are the lake's.
    let after = eavlake::lag::report(&config, &store).await.unwrap();
    for r in &after {
        assert_eq!((r.lag_messages, r.lag_seconds, r.committed), (0, 0.0, Some(ends[&r.partition])), "{r:?}");
        assert!(r.owner.as_deref().is_some_and(|o| o.contains("epoch 1")), "{r:?}");
    }
    assert!(eavlake::lag::table(&after).contains("3 partitions, lag 0 messages"));
    assert_eq!(report.assignments, 3);
    assert_eq!(report.stats.records, produced.records);
    compact(&config).await;
    assert_exactly_once(&bootstrap, &lake, &produced);
    // Offsets were committed after the lake's record: the next record to read.
    let want: Vec<i64> = ends.values().copied().collect();
    assert_eq!(committed(&bootstrap, "g1", 3), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_partitions_and_hand_over_cleanly() {
    let cluster = cluster(4);
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let config = config(&bootstrap, &lake, "g2");
    let a = start(&config);
    // Records keep arriving while the second worker joins and the group rebalances.
    let producing = {
        let b = bootstrap.clone();
        tokio::spawn(async move { produce_workload(&b, TOPIC, 4, &spec(12_000, 5), 4_000).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = start(&config);
    let produced = producing.await.unwrap();
    let ends = high_watermarks(&bootstrap, TOPIC, 4);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    let (ra, rb) = (stop(a).await, stop(b).await);
    assert!(ra.revocations >= 1, "the first worker handed partitions over: {ra:?}");
    assert!(rb.assignments >= 1, "the second worker got partitions: {rb:?}");
    assert_eq!((ra.fenced, rb.fenced), (0, 0), "a cooperative hand-over fences nobody");
    compact(&config).await;
    assert_exactly_once(&bootstrap, &lake, &produced);
}

/// Two workers of different groups fight over the same partitions (as a zombie that lost
/// them without knowing would): whoever took a partition over last writes it, the other is
/// fenced at its next flush, and the lake still holds each change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_partition_was_taken_over_is_fenced() {
    let cluster = cluster(2);
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let producing = {
        let b = bootstrap.clone();
        tokio::spawn(async move { produce_workload(&b, TOPIC, 2, &spec(10_000, 9), 2_000).await })
    };
    let a = start(&config(&bootstrap, &lake, "zombie"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let b = start(&config(&bootstrap, &lake, "usurper"));
    let produced = producing.await.unwrap();
    let ends = high_watermarks(&bootstrap, TOPIC, 2);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    let (ra, rb) = (stop(a).await, stop(b).await);
    assert_eq!(ra.fenced, 2, "the first worker lost both partitions to the second: {ra:?}");
    assert_eq!(rb.fenced, 0);
    compact(&config(&bootstrap, &lake, "x")).await;
    assert_exactly_once(&bootstrap, &lake, &produced);
}

/// The store fails now and then (retried, nothing lost), then for good: the worker stops with an
/// error naming what failed, no partition's committed offset is past the lake's record, and a
/// worker started once the store is back lands everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_never_pass_what_the_store_has_not_made_durable() {
    use std::sync::atomic::Ordering;
    let cluster = cluster(2);
    let bootstrap = cluster.bootstrap_servers();
    let store = flaky_store::flaky();
    store.fail_every.store(7, Ordering::SeqCst);
    let lake = eavlake::sink::Lake::from_store(store.clone(), "flaky://");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("lake");
    let producing = {
        let b = bootstrap.clone();
        tokio::spawn(async move { produce_workload(&b, TOPIC, 2, &spec(8_000, 13), 4_000).await })
    };
    let config = config(&bootstrap, &local, "g3");
    let shutdown = Shutdown::default();
    let worker = {
        let (c, l, s) = (config.clone(), lake.clone(), shutdown.clone());
        tokio::spawn(async move { run_kafka_on(&c, l, s).await })
    };
    let ready = std::time::Instant::now() + Duration::from_secs(20);
    while store.injected.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < ready {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.down.store(true, Ordering::SeqCst);
    let err = tokio::time::timeout(Duration::from_secs(30), worker).await.expect("stops").unwrap().unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("the store is down"), "{err}");
    assert!(store.injected.load(Ordering::SeqCst) > 0, "transient failures were injected and retried");
    let produced = producing.await.unwrap();
    store.copy_to(&local).await;
    for (p, offset) in committed(&bootstrap, "g3", 2).into_iter().enumerate() {
        let recorded = lake_progress(&local, TOPIC, p as i32).unwrap_or(-1);
        assert!(offset <= recorded + 1, "partition {p}: committed {offset}, lake has up to {recorded}");
    }

    store.down.store(false, Ordering::SeqCst);
    let worker = {
        let (c, l, s) = (config.clone(), lake.clone(), shutdown.clone());
        tokio::spawn(async move { run_kafka_on(&c, l, s).await })
    };
    let ends = high_watermarks(&bootstrap, TOPIC, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        store.copy_to(&local).await;
        if ends.iter().all(|(p, h)| lake_progress(&local, TOPIC, *p).is_some_and(|d| d + 1 >= *h)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the second worker did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.request();
    worker.await.unwrap().unwrap();
    std::fs::remove_dir_all(&local).unwrap();
    store.copy_to(&local).await;
    compact(&config).await;
    assert_exactly_once(&bootstrap, &local, &produced);
}

/// The attributes' changes travel on a topic of their own, which every worker reads whole:
/// values of attributes the worker learns while running wait for the catalog topic and land
/// typed. The workload's transaction markers are left out, as Debezium writes them elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_topic_types_values_learned_while_running() {
    const CATALOG: &str = "eav.public.attributes";
    let cluster = cluster(2);
    cluster.create_topic(CATALOG, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut config = config(&bootstrap, &lake, "g4");
    config.kafka.catalog_topic = Some(CATALOG.to_string());
    let worker = start(&config);
    let produced = produce_workload_with(&bootstrap, TOPIC, 2, &spec(10_000, 17), 5_000, false, Some(CATALOG)).await;
    let ends = high_watermarks(&bootstrap, TOPIC, 2);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    let report = stop(worker).await;
    assert!(report.catalog_records > 50, "attributes came from the catalog topic: {report:?}");
    compact(&config).await;
    assert_exactly_once(&bootstrap, &lake, &produced);
}

/// The lake's record is the truth, not Kafka's committed offsets: a group whose offsets say
/// "all read" still fills an empty lake from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_resumes_from_the_lake_not_from_committed_offsets() {
    let cluster = cluster(2);
    let bootstrap = cluster.bootstrap_servers();
    let produced = produce_workload(&bootstrap, TOPIC, 2, &spec(4_000, 19), 0).await;
    let ends = high_watermarks(&bootstrap, TOPIC, 2);
    {
        let c: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "g5").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for (p, high) in &ends {
            tpl.add_partition_offset(TOPIC, *p, Offset::Offset(*high)).unwrap();
        }
        c.commit(&tpl, rdkafka::consumer::CommitMode::Sync).unwrap();
    }
    assert_eq!(committed(&bootstrap, "g5", 2), ends.values().copied().collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let config = config(&bootstrap, &lake, "g5");
    let worker = start(&config);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    let report = stop(worker).await;
    assert_eq!(report.stats.records, produced.records, "every record read again");
    compact(&config).await;
    assert_exactly_once(&bootstrap, &lake, &produced);
}

/// Topics by pattern, as Debezium names them: the worker finds the entity topic by a regular
/// expression and leaves alone the dead-letter topic the same pattern matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_by_pattern_skip_dead_letter_topics() {
    let cluster = cluster(2);
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let produced = produce_workload(&bootstrap, TOPIC, 2, &spec(3_000, 23), 0).await;
    let mut config = config(&bootstrap, &lake, "g6");
    config.kafka.topics.clear();
    config.kafka.topic_pattern = Some(r"eav\.public\..*".to_string());
    let worker = start(&config);
    let ends = high_watermarks(&bootstrap, TOPIC, 2);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    let report = stop(worker).await;
    assert_eq!(report.stats.records, produced.records, "only the entity topic's records: {report:?}");
    compact(&config).await;
    assert_exactly_once(&bootstrap, &lake, &produced);
}

/// The catalog topic's reader says it may be behind once it has lost its broker, until it has
/// read the topic to its end again: meanwhile the worker holds its data partitions, so that a
/// data consumer back first does not take values past their wait for an attribute the catalog
/// has not delivered yet. Connected and read to its end, it is current.
#[test]
fn the_catalog_reader_may_be_behind_after_losing_its_broker() {
    use eavlake::source::kafka::CatalogReader;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    const CATALOG: &str = "eav.public.attributes";
    let c = MockCluster::new(1).unwrap();
    c.create_topic(CATALOG, 1, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", c.bootstrap_servers()).create().unwrap();
    let produce = |value: &str| {
        producer.send(BaseRecord::<[u8], [u8]>::to(CATALOG).payload(value.as_bytes())).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    produce("first");
    let mut k = Config::default().kafka;
    k.brokers = c.bootstrap_servers();
    k.group_id = "catalog-test".into();
    let reader = CatalogReader::open(&k, CATALOG, Duration::from_secs(10)).unwrap().expect("the topic exists");
    assert_eq!(reader.catch_up(Duration::from_secs(10), |_| ()).unwrap(), 1);
    assert!(!reader.may_be_behind(Duration::from_secs(1)), "read to its end and connected");

    c.broker_down(1).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        reader.poll_ready(|_| ()).unwrap();
        if reader.may_be_behind(Duration::from_millis(200)) {
            break;
        }
        assert!(std::time::Instant::now() < until, "the reader never noticed its broker was down");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.broker_up(1).unwrap();
    produce("second");
    // Back, with a record it has not read: behind until it has read it.
    assert!(reader.may_be_behind(Duration::from_secs(5)));
    let mut read = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while read.is_empty() {
        reader.poll_ready(|v| read.push(v.map(<[u8]>::to_vec))).unwrap();
        assert!(std::time::Instant::now() < until, "the second record never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read, vec![Some(b"second".to_vec())]);
    assert!(!reader.may_be_behind(Duration::from_secs(5)), "read to its end again");
    assert!(!reader.may_be_behind(Duration::from_secs(5)), "and current from then on");
}
