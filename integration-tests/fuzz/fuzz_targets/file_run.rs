//! The whole `eavlake run` file job on small inputs: the input is written as a file and run
//! into a fresh in-memory lake (decode, pivot, flush to Parquet, dead letters, progress,
//! compaction). Whatever the file holds, the run must succeed: bad lines are dead letters.
#![no_main]

use eavlake::config::Config;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
    });
    let dir = std::env::temp_dir().join(format!("eavlake-fuzz-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the fuzz folder");
    let path = dir.join("events.jsonl");
    std::fs::write(&path, data).expect("writing the input file");
    let mut config = Config::default();
    // A new in-memory store per run: nothing carries over between inputs.
    config.lake.url = "memory://".into();
    config.catalog.unknown_attribute_wait = 4;
    if let Err(e) = runtime.block_on(eavlake::run::run_file(&config, &path)) {
        panic!("a file run failed on its input: {e:#}");
    }
});
