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
//! - scale-out (`EAVLAKE_BENCH_MODE=scale`): the same backlog over 8 partitions consumed by 1
//!   and by 2 worker processes of one group (alternately, `EAVLAKE_BENCH_RUNS` times each):
//!   records per second to durable, CPU-seconds per record (all workers together), and each
//!   worker's peak RSS; then the latency at `EAVLAKE_BENCH_RATE` with 1 and with 2 workers.
//!
//! Run: `cargo bench --bench kafka_worker` (`EAVLAKE_BENCH_EVENTS`, default 1000000 change
//! events). Records are keyed as Debezium keys them (by entity_id) over 4 partitions (8 in the
//! scale-out mode); transaction markers are left out, as Debezium writes them to a topic of
//! their own.
//!
//! `EAVLAKE_BENCH_BINS=A,B` measures other builds of eavlake (say, the release build against
//! `integration-tests/pgo.sh`'s): the throughput runs alternate over them, each with its own
//! medians; the other measurements take the first.

#[path = "common/kafka_broker.rs"]
mod kafka_broker;
#[path = "common/kafka_workload.rs"]
mod kafka_workload;

use kafka_workload::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
const SCALE_PARTITIONS: i32 = 8;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The eavlake binaries to measure: `EAVLAKE_BENCH_BINS` (comma-separated), else this build's.
fn worker_bins() -> Vec<PathBuf> {
    match std::env::var("EAVLAKE_BENCH_BINS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').map(|b| PathBuf::from(b.trim())).collect(),
        _ => vec![PathBuf::from(env!("CARGO_BIN_EXE_eavlake"))],
    }
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
    cpu_seconds: f64,
    report: serde_json::Value,
}

/// One worker process of a [`run_workers`] round.
struct Worker {
    peak_rss_kib: u64,
    cpu_seconds: f64,
    report: serde_json::Value,
}

/// User + system CPU time of a live process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) and its closing parenthesis.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / per_second // utime, stime (fields 14 and 15)
}

/// A topic the workers read, and where its broker is.
struct Topic<'a> {
    bootstrap: &'a str,
    name: &'a str,
    partitions: i32,
}

/// Starts `n` workers of one group at once, lets `during` run (producing, say), waits until the
/// lake has every partition to its end, stops them with SIGTERM and returns the seconds from
/// their start and each one's figures (CPU read just before the stop).
async fn run_workers(
    bin: &Path,
    n: usize,
    config: &Path,
    lake: &Path,
    topic: Topic<'_>,
    during: impl std::future::Future<Output = ()>,
) -> (f64, Vec<Worker>) {
    let started = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(bin)
                .args(["run", "--source", "kafka", "--config"])
                .arg(config)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    during.await;
    let ends = high_watermarks(topic.bootstrap, topic.name, topic.partitions);
    wait_for_lake(lake, topic.name, &ends, Duration::from_secs(600)).await;
    let seconds = started.elapsed().as_secs_f64();
    let figures: Vec<(u64, f64)> = children.iter().map(|c| (peak_rss_kib(c.id()), cpu_seconds(c.id()))).collect();
    for c in &children {
        // SAFETY: SIGTERM to a child this benchmark started.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    let workers = children
        .into_iter()
        .zip(figures)
        .map(|(c, (peak_rss_kib, cpu_seconds))| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "worker exit: {}", out.status);
            let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            Worker { peak_rss_kib, cpu_seconds, report }
        })
        .collect();
    (seconds, workers)
}

/// Starts a worker, lets `during` run (producing, say), waits until the lake has every partition
/// to its end, stops the worker with SIGTERM and returns its report.
async fn run_worker(
    bin: &Path,
    config: &Path,
    lake: &Path,
    bootstrap: &str,
    topic: &str,
    during: impl std::future::Future<Output = ()>,
) -> Run {
    let (seconds, mut workers) =
        run_workers(bin, 1, config, lake, Topic { bootstrap, name: topic, partitions: PARTITIONS }, during).await;
    let w = workers.remove(0);
    Run { seconds, peak_rss_kib: w.peak_rss_kib, cpu_seconds: w.cpu_seconds, report: w.report }
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
    let bins = worker_bins();
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
    if std::env::var("EAVLAKE_BENCH_MODE").is_ok_and(|m| m == "scale") {
        scale_out(
            &bins[0],
            &rt,
            &broker,
            dir.path(),
            &spec(events, 1),
            runs,
            rate,
            seconds,
            &spec(rate * seconds * 8 / 10, 2),
        );
        return;
    }

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
    let mut rates = vec![Vec::new(); bins.len()];
    let mut cpu_per_record = vec![Vec::new(); bins.len()];
    for i in 0..runs {
        for (b, bin) in bins.iter().enumerate() {
            let group = format!("backlog{i}-{b}");
            let (config, lake) = write_config(dir.path(), &broker.bootstrap, "bench.backlog", &group, 1000);
            let run = rt.block_on(run_worker(bin, &config, &lake, &broker.bootstrap, "bench.backlog", async {}));
            let records = run.report["stats"]["records"].as_u64().unwrap_or(0);
            assert_eq!(records, produced.records, "the worker read the whole backlog");
            // From the first partition assigned: joining the group is not throughput.
            let joined = run.report["first_assignment_s"].as_f64().unwrap_or(0.0);
            let busy = run.seconds - joined;
            let per_s = records as f64 / busy;
            println!(
                "throughput run {} of {}: {:.0} records/s ({:.0} change events/s), {:.2} s after joining the group in {:.2} s ({:.2} s waiting for flushes), {:.2} CPU-s, peak RSS {} MiB",
                i + 1,
                bin.display(),
                per_s,
                events as f64 / busy,
                busy,
                joined,
                run.report["flush_seconds"].as_f64().unwrap_or(0.0),
                run.cpu_seconds,
                run.peak_rss_kib / 1024
            );
            rates[b].push(per_s);
            cpu_per_record[b].push(run.cpu_seconds * 1e6 / records.max(1) as f64);
            std::fs::remove_dir_all(&lake).ok();
        }
    }
    for ((bin, rates), cpu) in bins.iter().zip(rates).zip(cpu_per_record) {
        if !rates.is_empty() {
            let (rate, cpu) = (median(rates), median(cpu));
            println!(
                "throughput median of {}: {rate:.0} records/s, {cpu:.2} CPU-µs per record over {runs} runs",
                bin.display()
            );
        }
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
    let run = rt.block_on(run_worker(&bins[0], &config, &lake, &broker.bootstrap, "bench.live", producing));
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

/// 1 against 2 workers of one group on 8 partitions: a backlog, then a steady producer.
#[allow(clippy::too_many_arguments)]
fn scale_out(
    bin: &Path,
    rt: &tokio::runtime::Runtime,
    broker: &kafka_broker::KafkaBroker,
    dir: &Path,
    backlog: &eavlake::workload::WorkloadSpec,
    runs: u64,
    rate: u64,
    seconds: u64,
    live: &eavlake::workload::WorkloadSpec,
) {
    let topic = "bench.scale";
    broker.create_topic(topic, SCALE_PARTITIONS);
    let produced =
        rt.block_on(produce_workload_with(&broker.bootstrap, topic, SCALE_PARTITIONS, backlog, 0, false, None));
    println!(
        "scale-out backlog: {} change events in {} records over {SCALE_PARTITIONS} partitions",
        backlog.events, produced.records
    );
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu_per_record: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..runs {
        // Alternately, so that a change of the machine's load hits both alike.
        for n in [1usize, 2] {
            let group = format!("scale{n}w{i}");
            let (config, lake) = write_config(dir, &broker.bootstrap, topic, &group, 1000);
            let (secs, workers) = rt.block_on(run_workers(
                bin,
                n,
                &config,
                &lake,
                Topic { bootstrap: &broker.bootstrap, name: topic, partitions: SCALE_PARTITIONS },
                async {},
            ));
            // From the first partition assigned to any of them: joining the group is not throughput.
            let joined =
                workers.iter().filter_map(|w| w.report["first_assignment_s"].as_f64()).fold(f64::INFINITY, f64::min);
            let busy = secs - if joined.is_finite() { joined } else { 0.0 };
            let read: u64 = workers.iter().map(|w| w.report["stats"]["records"].as_u64().unwrap_or(0)).sum();
            let cpu: f64 = workers.iter().map(|w| w.cpu_seconds).sum();
            let per_s = produced.records as f64 / busy;
            let cpu_us = cpu / produced.records as f64 * 1e6;
            println!(
                "run {} with {n} worker(s): {per_s:.0} records/s to durable over {busy:.2} s; {cpu:.2} CPU-s ({cpu_us:.2} µs/record); \
                 records read {read} ({} re-read after rebalances); per worker: {}",
                i + 1,
                read.saturating_sub(produced.records),
                workers
                    .iter()
                    .map(|w| format!(
                        "{} records, {} partitions, {:.2} CPU-s, peak RSS {} MiB",
                        w.report["stats"]["records"],
                        w.report["assignments"],
                        w.cpu_seconds,
                        w.peak_rss_kib / 1024
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            rates[n - 1].push(per_s);
            cpu_per_record[n - 1].push(cpu_us);
            std::fs::remove_dir_all(&lake).ok();
        }
    }
    for n in [1usize, 2] {
        println!(
            "scale-out median with {n} worker(s): {:.0} records/s, {:.2} CPU-µs per record ({runs} runs)",
            median(rates[n - 1].clone()),
            median(cpu_per_record[n - 1].clone())
        );
    }

    // Lag while keeping up with a steady producer, 1 then 2 workers.
    for n in [1usize, 2] {
        let topic = format!("bench.scale.live{n}");
        broker.create_topic(&topic, SCALE_PARTITIONS);
        let (config, lake) = write_config(dir, &broker.bootstrap, &topic, &format!("scalelive{n}"), 1000);
        let b = broker.bootstrap.clone();
        let t = topic.clone();
        let live = live.clone();
        let producing = async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            produce_workload_with(&b, &t, SCALE_PARTITIONS, &live, rate, false, None).await;
        };
        let (_, workers) = rt.block_on(run_workers(
            bin,
            n,
            &config,
            &lake,
            Topic { bootstrap: &broker.bootstrap, name: &topic, partitions: SCALE_PARTITIONS },
            producing,
        ));
        let cpu: f64 = workers.iter().map(|w| w.cpu_seconds).sum();
        println!(
            "latency at {rate} records/s for {seconds} s with {n} worker(s), flush age 1 s: {}; {cpu:.2} CPU-s in all",
            workers
                .iter()
                .map(|w| {
                    let l = &w.report["latency"];
                    format!(
                        "p50 {} ms, p99 {} ms, max {} ms over {} records (peak RSS {} MiB)",
                        l["p50_ms"],
                        l["p99_ms"],
                        l["max_ms"],
                        l["count"],
                        w.peak_rss_kib / 1024
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}
