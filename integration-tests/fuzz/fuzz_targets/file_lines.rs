//! The file source's path up to the batches: the input is written as a file, read line by line
//! by `FileSource` and fed to a `StreamPipeline` on an in-memory lake (decode, de-duplication,
//! catalog, parked values, pivot, Arrow batches), without the flush, so it stays fast. `file_run`
//! covers the flush.
#![no_main]

use eavlake::pipeline::{PipelineOptions, StreamPipeline};
use eavlake::sink::Lake;
use eavlake::source::file::FileSource;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"));
    let dir = tempfile_dir();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, data).expect("writing the input file");
    let mut source = FileSource::open(&path).expect("opening the input file");
    let lake = Lake::open("memory://", &Default::default()).expect("a memory lake");
    let options = PipelineOptions { unknown_attribute_wait: 4, max_parked: 4, ..PipelineOptions::default() };
    let mut pipeline =
        runtime.block_on(StreamPipeline::open(lake, source.stream(), options, None)).expect("opening the pipeline");
    while let Some(rec) = source.next_from(1).expect("reading the input file") {
        pipeline.process(&rec);
    }
    pipeline.seal();
});

/// A folder of this process's own (fuzz jobs may run side by side).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("eavlake-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the fuzz folder");
    dir
}
