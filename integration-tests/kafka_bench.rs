//! Benchmark of `eavlake run --source kafka` through a real Kafka broker (KRaft, started from
//! Maven Central jars by `integration-tests/stack/kafka.sh`):
//!
//! - sustained throughput: a backlog of a generated workload is consumed from the start by a
//!   fresh worker process; records per second from its start until the lake has recorded every
//!   partition to its end, and the process's peak RSS; `EAVLAKE_BENCH_RUNS` runs (default 3),
//!   median reported;
//! - latency: a worker keeps up with a producer writing `EAVLAKE_BENCH_RATE` records a second
//!   (default 20000) for `EAVLAKE_BENCH_SECONDS` (default 20), with a 1 s flush age; p50/p99/max
//!   from each record's Kafka timestamp to the end of the flush that made it durable (the
//!   worker's own histogram, printed in its report).
//!
//! Run: `cargo bench --bench kafka_worker` (`EAVLAKE_BENCH_EVENTS`, default 1000000 change
//! events). Records are keyed as Debezium keys them (by entity_id) over 4 partitions; transaction
//! markers are left out, as Debezium writes them to a topic of their own.

#[path = "common/kafka_broker.rs"]
mod kafka_broker;
#[path = "common/kafka_workload.rs"]
mod kafka_workload;

use kafka_workload::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn write_config(dir: &Path, bootstrap: &str, topic: &str, group: &str, max_age_ms: u64) -> (PathBuf, PathBuf) {
    let lake = dir.join(format!("lake-{group}"));
    let path = dir.join(format!("{group}.toml"));
    let text = format!(
        r#"
[lake]
url = "{lake}"
[decode]
decimal_handling_mode = "string"
[batch]
max_age_ms = {max_age_ms}
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
topics = ["{topic}"]
[metrics]
# The HTTP listener runs (and is scraped by nobody) on a port of its own.
listen = "127.0.0.1:0"
"#,
        lake = lake.display()
    );
    std::fs::write(&path, text).unwrap();
    (path, lake)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Run {
    seconds: f64,
    peak_rss_kib: u64,
    report: serde_json::Value,
}

/// Starts a worker, lets `during` run (producing, say), waits until the lake has every partition
/// to its end, stops the worker with SIGTERM and returns its report.
async fn run_worker(
    config: &Path,
    lake: &Path,
    bootstrap: &str,
    topic: &str,
    during: impl std::future::Future<Output = ()>,
) -> Run {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_eavlake"))
        .args(["run", "--source", "kafka", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    during.await;
    let ends = high_watermarks(bootstrap, topic, PARTITIONS);
    wait_for_lake(lake, topic, &ends, Duration::from_secs(600)).await;
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_kib = peak_rss_kib(child.id());
    // SAFETY: SIGTERM to a child this benchmark started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "worker exit: {}", out.status);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    Run { seconds, peak_rss_kib, report }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let events = env_u64("EAVLAKE_BENCH_EVENTS", 1_000_000);
    let runs = env_u64("EAVLAKE_BENCH_RUNS", 3).max(1);
    let rate = env_u64("EAVLAKE_BENCH_RATE", 20_000);
    let seconds = env_u64("EAVLAKE_BENCH_SECONDS", 20);
    let latency_only = std::env::var_os("EAVLAKE_BENCH_SKIP_THROUGHPUT").is_some();
    let throughput_only = std::env::var_os("EAVLAKE_BENCH_SKIP_LATENCY").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let broker = kafka_broker::KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = |events, seed| eavlake::workload::WorkloadSpec {
        events,
        tenants: 8,
        seed,
        poison: false,
        ..eavlake::workload::WorkloadSpec::default()
    };

    // Sustained throughput on a backlog.
    let runs = if latency_only { 0 } else { runs };
    broker.create_topic("bench.backlog", PARTITIONS);
    let events = if latency_only { 1000 } else { events };
    let produced = rt.block_on(produce_workload_with(
        &broker.bootstrap,
        "bench.backlog",
        PARTITIONS,
        &spec(events, 1),
        0,
        false,
        None,
    ));
    println!("backlog: {} change events in {} records over {PARTITIONS} partitions", events, produced.records);
    let mut rates = Vec::new();
    for i in 0..runs {
        let (config, lake) = write_config(dir.path(), &broker.bootstrap, "bench.backlog", &format!("backlog{i}"), 1000);
        let run = rt.block_on(run_worker(&config, &lake, &broker.bootstrap, "bench.backlog", async {}));
        let records = run.report["stats"]["records"].as_u64().unwrap_or(0);
        assert_eq!(records, produced.records, "the worker read the whole backlog");
        // From the first partition assigned: joining the group is not throughput.
        let joined = run.report["first_assignment_s"].as_f64().unwrap_or(0.0);
        let busy = run.seconds - joined;
        let per_s = records as f64 / busy;
        println!(
            "throughput run {}: {:.0} records/s ({:.0} change events/s), {:.2} s after joining the group in {:.2} s ({:.2} s waiting for flushes), peak RSS {} MiB",
            i + 1,
            per_s,
            events as f64 / busy,
            busy,
            joined,
            run.report["flush_seconds"].as_f64().unwrap_or(0.0),
            run.peak_rss_kib / 1024
        );
        rates.push(per_s);
        std::fs::remove_dir_all(&lake).ok();
    }
    if !rates.is_empty() {
        println!("throughput median: {:.0} records/s over {runs} runs", median(rates));
    }
    if throughput_only {
        return;
    }

    // Latency while keeping up with a steady producer, flush age 1 s.
    broker.create_topic("bench.live", PARTITIONS);
    let (config, lake) = write_config(dir.path(), &broker.bootstrap, "bench.live", "live", 1000);
    let live_events = rate * seconds * 8 / 10; // re-sends, tombstones and heartbeats are records too
    let b = broker.bootstrap.clone();
    let producing = async move {
        // Give the worker time to join the group first: latency is what is measured.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let p = produce_workload_with(&b, "bench.live", PARTITIONS, &spec(live_events, 2), rate, false, None).await;
        println!("live: {} records at up to {rate}/s", p.records);
    };
    let run = rt.block_on(run_worker(&config, &lake, &broker.bootstrap, "bench.live", producing));
    let l = &run.report["latency"];
    println!(
        "latency at {rate} records/s, flush age 1 s: p50 {} ms, p99 {} ms, max {} ms over {} records; peak RSS {} MiB",
        l["p50_ms"],
        l["p99_ms"],
        l["max_ms"],
        l["count"],
        run.peak_rss_kib / 1024
    );
}
