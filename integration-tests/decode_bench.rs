//! Benchmark of the JSON decoder alone: generated Debezium records (the same generator as
//! `eavlake generate`), held in memory, decoded again and again; prints records and bytes per
//! second (median of the passes). Decoding is about half of a file run's CPU, so this is where
//! a change to `src/decode` is measured first, away from Parquet and the page cache.
//!
//!   cargo bench --bench decode                        # 100K events, plain JSON, 5 passes
//!   EAVLAKE_BENCH_EVENTS=20000 EAVLAKE_BENCH_SCHEMAS=1 cargo bench --bench decode
//!
//! Under `valgrind --tool=callgrind` (EAVLAKE_BENCH_PASSES=1) the instruction count per record
//! is a figure that does not move with the machine's load.

use eavlake::decode::json::JsonDecoder;
use eavlake::decode::{DecimalMode, DecodeOptions, Event, TableNames};
use eavlake::workload::{generate, WorkloadFormat, WorkloadSpec};
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let events = env_usize("EAVLAKE_BENCH_EVENTS", 100_000);
    let passes = env_usize("EAVLAKE_BENCH_PASSES", 5).max(1);
    let schemas = std::env::var("EAVLAKE_BENCH_SCHEMAS").is_ok_and(|v| v == "1");
    let spec = WorkloadSpec {
        events: events as u64,
        format: if schemas { WorkloadFormat::WithSchemas } else { WorkloadFormat::Plain },
        poison: false,
        ..WorkloadSpec::default()
    };
    let mut text = Vec::new();
    generate(&spec, &mut text).expect("generating into memory cannot fail");
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let options = DecodeOptions {
        decimal_mode: if schemas { DecimalMode::Precise } else { DecimalMode::String },
        ..DecodeOptions::default()
    };

    let mut times = Vec::new();
    let mut changes = 0usize;
    for _ in 0..passes {
        // A decoder per pass, as a run has one per stream: it learns the keys afresh.
        let mut decoder = JsonDecoder::new(options, TableNames::default());
        let start = Instant::now();
        changes = 0;
        for line in &lines {
            match decoder.decode(Some(line)) {
                Ok(Event::Change { .. }) => changes += 1,
                Ok(_) => {}
                Err(e) => panic!("generated record refused: {e}"),
            }
        }
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "decode: {} records ({} changes, {:.1} MB, {}), median of {passes} passes: {:.3} s = {:.0} records/s, {:.0} MB/s, {:.0} ns/record",
        lines.len(),
        changes,
        text.len() as f64 / 1e6,
        if schemas { "embedded schemas" } else { "plain JSON" },
        median,
        lines.len() as f64 / median,
        text.len() as f64 / 1e6 / median,
        median * 1e9 / lines.len() as f64,
    );
}
