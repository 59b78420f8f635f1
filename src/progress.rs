//! Progress, stored with the data: per source stream, the last stream position whose changes
//! are durable in the lake, and the duplicate filter's mark at that point.
//!
//! A stream's record is written only after every object of a flush is durable, and it only moves
//! forward. Restarts resume after it; compaction never reads change files beyond it (a flush in
//! progress may have written some of its objects but not all).

use crate::position::{Lsn, SourcePosition};
use crate::sink::{Lake, SinkError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const FORMAT_VERSION: u32 = 1;

/// The progress record of one stream (`_eavlake/progress/<stream>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamProgress {
    pub format_version: u32,
    /// The stream's object name ([`crate::position::StreamId::object_name`]).
    pub stream: String,
    /// Last stream position (Kafka offset, file line) whose changes are durable.
    pub last_seq: i64,
    /// Highest source position applied, as `[commit_lsn, lsn]`.
    pub dedup_mark: Option<[u64; 2]>,
    /// Source commit time (µs) of the newest change durable, for lag.
    pub source_ts_us: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("progress record `{path}`: {message}")]
    Corrupt { path: String, message: String },
    #[error("progress of {stream} would move back from {recorded} to {proposed}")]
    Backwards { stream: String, recorded: i64, proposed: i64 },
}

impl StreamProgress {
    pub fn new(stream: String, last_seq: i64, mark: Option<SourcePosition>, source_ts_us: Option<i64>) -> Self {
        StreamProgress {
            format_version: FORMAT_VERSION,
            stream,
            last_seq,
            dedup_mark: mark.map(|m| [m.commit_lsn.0, m.lsn.0]),
            source_ts_us,
        }
    }

    pub fn mark(&self) -> Option<SourcePosition> {
        self.dedup_mark.map(|[c, l]| SourcePosition { commit_lsn: Lsn(c), lsn: Lsn(l) })
    }
}

fn path(stream: &str) -> object_store::path::Path {
    Lake::meta_path(&format!("progress/{stream}.json"))
}

/// Reads one stream's progress.
pub async fn load(lake: &Lake, stream: &str) -> Result<Option<StreamProgress>, ProgressError> {
    let p = path(stream);
    let Some(bytes) = lake.get(&p).await? else { return Ok(None) };
    parse(p.as_ref(), &bytes).map(Some)
}

fn parse(path: &str, bytes: &[u8]) -> Result<StreamProgress, ProgressError> {
    let corrupt = |message: String| ProgressError::Corrupt { path: path.to_string(), message };
    let p: StreamProgress = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if p.format_version != FORMAT_VERSION {
        return Err(corrupt(format!("format_version {} is not supported", p.format_version)));
    }
    Ok(p)
}

/// Reads every stream's progress, by stream name.
pub async fn load_all(lake: &Lake) -> Result<BTreeMap<String, StreamProgress>, ProgressError> {
    let mut out = BTreeMap::new();
    for meta in lake.list(&Lake::meta_path("progress")).await? {
        let Some(bytes) = lake.get(&meta.location).await? else { continue };
        let p = parse(meta.location.as_ref(), &bytes)?;
        out.insert(p.stream.clone(), p);
    }
    Ok(out)
}

/// Records a stream's progress; refuses to move it backwards.
pub async fn save(lake: &Lake, progress: &StreamProgress) -> Result<(), ProgressError> {
    if let Some(existing) = load(lake, &progress.stream).await? {
        if existing.last_seq > progress.last_seq {
            return Err(ProgressError::Backwards {
                stream: progress.stream.clone(),
                recorded: existing.last_seq,
                proposed: progress.last_seq,
            });
        }
    }
    // Plain owned data serialises without error.
    let bytes = serde_json::to_vec_pretty(progress).unwrap_or_default();
    lake.put(&path(&progress.stream), Bytes::from(bytes)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::S3Options;

    #[tokio::test]
    async fn progress_only_moves_forward() {
        let lake = Lake::open("memory://", &S3Options::default()).unwrap();
        let mark = SourcePosition { commit_lsn: Lsn(5), lsn: Lsn(9) };
        save(&lake, &StreamProgress::new("s".into(), 10, Some(mark), None)).await.unwrap();
        let back = load(&lake, "s").await.unwrap().unwrap();
        assert_eq!((back.last_seq, back.mark()), (10, Some(mark)));
        let err = save(&lake, &StreamProgress::new("s".into(), 9, None, None)).await.unwrap_err();
        assert_eq!(err.to_string(), "progress of s would move back from 10 to 9");
        save(&lake, &StreamProgress::new("t".into(), 1, None, None)).await.unwrap();
        assert_eq!(load_all(&lake).await.unwrap().keys().collect::<Vec<_>>(), vec!["s", "t"]);
    }
}
