//! Scale-out of `eavlake run --source kafka`: several worker processes in one consumer group on
//! a real Kafka broker (KRaft, from Maven Central jars, started by
//! `integration-tests/stack/kafka.sh`), 8 partitions, while a producer keeps writing:
//!
//! 1. a first worker takes every partition;
//! 2. a second joins: the group rebalances and the partitions are shared;
//! 3. the first leaves gracefully (SIGTERM: flush, record, commit, leave, exit 0) and a third
//!    joins;
//! 4. the second is SIGKILLed inside a flush: the third takes its partitions over after the
//!    session timeout and redoes the unfinished flush;
//! 5. the third catches up and stops cleanly.
//!
//! The lake must then hold every change exactly once (current state equal to the workload's
//! ground truth, no change row twice), and the dead-letter topic exactly the poison records.
//! Membership is dynamic (no `group.instance.id`): a leaving worker hands its partitions back at
//! once, a killed one after the session timeout.

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
use std::path::Path;
use std::time::{Duration, Instant};
use worker_process::{spawn_worker, stop, wait_for_flush, write_config};

const TOPIC: &str = "eav.public.entity_changes";
const PARTITIONS: i32 = 8;

fn text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Waits until `log` has said "partition assigned" at least `n` times.
async fn wait_for_assignments(log: &Path, n: usize, within: Duration) {
    let until = Instant::now() + within;
    while text(log).matches("partition assigned").count() < n {
        assert!(Instant::now() < until, "fewer than {n} partitions assigned within {within:?}; log:\n{}", text(log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(p: &Path) -> serde_json::Value {
    let t = text(p);
    serde_json::from_str(t.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("worker report in {}: {e}: `{t}`", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_joining_leaving_and_killed_under_load_lose_and_duplicate_nothing() {
    let broker = kafka_broker::KafkaBroker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    broker.create_topic(&format!("{TOPIC}.dlq"), 2);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // The smallest session timeout the broker allows by default: a killed worker's partitions
    // move 6 s after its last heartbeat.
    let properties = "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"";
    let config = write_config(dir.path(), &broker.bootstrap, &lake, TOPIC, "scale", properties);
    let logs: Vec<_> = (1..=3).map(|i| dir.path().join(format!("worker{i}.log"))).collect();
    let reports: Vec<_> = (1..=3).map(|i| dir.path().join(format!("worker{i}.json"))).collect();

    // About 30 s of traffic (about 3 records per change event: attribute changes and transaction
    // markers go to every partition): every step below happens while records keep coming.
    let spec = eavlake::workload::WorkloadSpec {
        events: 30_000,
        tenants: 6,
        seed: 4242,
        max_bulk: 300,
        ..eavlake::workload::WorkloadSpec::default()
    };
    let production_started = Instant::now();
    let producing = {
        let b = broker.bootstrap.clone();
        tokio::spawn(async move { produce_workload(&b, TOPIC, PARTITIONS, &spec, 3_000).await })
    };

    let mut first = spawn_worker(&config, &logs[0], Some(&reports[0]));
    wait_for_assignments(&logs[0], PARTITIONS as usize, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut second = spawn_worker(&config, &logs[1], Some(&reports[1]));
    wait_for_assignments(&logs[1], 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!producing.is_finished(), "the producer was still writing when the group changed");

    let status = stop(&mut first, Duration::from_secs(30)).await;
    assert!(status.success(), "the first worker left cleanly: {status}; log:\n{}", text(&logs[0]));
    let r1 = report(&reports[0]);
    assert!(r1["revocations"].as_u64().unwrap_or(0) >= 1, "the second worker's arrival took partitions: {r1}");

    let mut third = spawn_worker(&config, &logs[2], Some(&reports[2]));
    wait_for_assignments(&logs[2], 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!producing.is_finished(), "the producer was still writing when a worker was killed");
    // Inside a flush when one comes within 3 s: the taker must redo it.
    wait_for_flush(&lake, Duration::from_secs(3)).await;
    assert!(second.try_wait().unwrap().is_none(), "the second worker exited by itself; log:\n{}", text(&logs[1]));
    second.kill().unwrap(); // SIGKILL
    second.wait().unwrap();
    // The margin the steps above leave before the producer ends (about 28 s in): printed so
    // that a slower machine's shrinking margin shows before the assertions above fail.
    eprintln!("the second worker was killed {:.1} s into production", production_started.elapsed().as_secs_f64());

    let produced = producing.await.unwrap();
    eprintln!("{} records produced, {} poison", produced.records, produced.expected_dead.len());
    let ends = high_watermarks(&broker.bootstrap, TOPIC, PARTITIONS);
    wait_for_lake(&lake, TOPIC, &ends, Duration::from_secs(60)).await;
    let status = stop(&mut third, Duration::from_secs(30)).await;
    assert!(status.success(), "the third worker stopped cleanly: {status}; log:\n{}", text(&logs[2]));
    let r3 = report(&reports[2]);
    // Its share at the join, then the killed worker's partitions.
    assert!(r3["assignments"].as_u64().unwrap_or(0) >= 2, "the third worker took partitions over: {r3}");

    assert_exactly_once(&config, &lake, &produced.truth.current).await;
    assert_dead_letters_exactly(&broker.bootstrap, &format!("{TOPIC}.dlq"), &produced);
    let taken_over = text(&logs[2]).matches("removed the objects of an incomplete flush").count();
    eprintln!(
        "first worker: {} records; third: {} records, {} assignment rounds; {taken_over} unfinished flushes redone",
        r1["stats"]["records"], r3["stats"]["records"], r3["assignments"]
    );
}
