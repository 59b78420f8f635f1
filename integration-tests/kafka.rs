//! Component tests of the Kafka worker on librdkafka's mock cluster (in process, no broker):
//! a workload lands exactly once with its dead letters in the dead-letter topic; two workers of
//! one group share partitions through cooperative rebalances; a worker whose partition is taken
//! over is fenced; offsets are committed after the lake's record. The same behaviours against a
//! real broker, with crashes, are in `kafka_crash.rs`.

#[path = "common/kafka_workload.rs"]
mod kafka_workload;
#[path = "common/lake.rs"]
mod lake;

use eavlake::config::Config;
use eavlake::decode::DecimalMode;
use eavlake::worker::{run_kafka, Shutdown, WorkerReport};
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
    let worker = start(&config);
    let ends = high_watermarks(&bootstrap, TOPIC, 3);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    let report = stop(worker).await;
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
