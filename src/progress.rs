//! Progress, stored with the data: per source stream, the last stream position whose changes
//! are durable in the lake, the duplicate filter's mark at that point, and who may write next.
//!
//! The protocol of one flush (see `pipeline`), every step a compare-and-swap on this record:
//! 1. [`ProgressHandle::begin_flush`] records the intent: the objects the flush will write and a
//!    deadline after which the writer gives up.
//! 2. The objects are written (their names are deterministic in the stream positions).
//! 3. [`ProgressHandle::complete_flush`] moves `last_seq` forward and clears the intent.
//!
//! A writer that finds the intent of another ([`ProgressHandle::claim`]) waits for its deadline
//! (plus the allowed clock skew), takes the stream over with a higher epoch, then deletes the
//! objects the intent names. Whatever the moment of a crash, the lake then holds each change
//! once: in an object of a completed flush, or nowhere until the flush is redone. A writer whose
//! stream was claimed by another meets a [`ProgressError::Fenced`] at its next step and writes
//! nothing more: the epoch in the record is the fencing token. Compaction never reads change
//! files beyond `last_seq`.

use crate::dedup::{Mark, RowKey};
use crate::position::{Lsn, SourcePosition};
use crate::sink::{Lake, SinkError, Version};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// The rows applied at `dedup_mark` (several when they came from one multi-row WAL record,
    /// as a `COPY` writes); none in records written before they were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedup_mark_rows: Vec<RowKey>,
    /// Source commit time (µs) of the newest change durable, for lag.
    pub source_ts_us: Option<i64>,
    /// The writer that holds the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// A flush begun and not completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingFlush>,
    /// Dead-letter topic offset from which dead letters of positions after `last_seq` may exist
    /// (the Kafka worker reads from there on takeover so it never produces one twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_scan_from: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub worker: String,
    /// Rises with every takeover: the fencing token.
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFlush {
    pub first_seq: i64,
    pub last_seq: i64,
    /// Objects the flush writes (lake paths).
    pub objects: Vec<String>,
    /// Unix ms after which the writer stops writing them.
    pub deadline_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("progress record `{path}`: {message}")]
    Corrupt { path: String, message: String },
    #[error("progress of {stream} would move back from {recorded} to {proposed}")]
    Backwards { stream: String, recorded: i64, proposed: i64 },
    #[error("stream {stream} was taken over by {by} (epoch {epoch}); this writer stops writing it")]
    Fenced { stream: String, by: String, epoch: u64 },
    #[error("flush of {stream} up to {last_seq} passed its deadline before it was durable")]
    DeadlinePassed { stream: String, last_seq: i64 },
}

impl StreamProgress {
    pub fn new(stream: String, last_seq: i64, mark: Option<&Mark>, source_ts_us: Option<i64>) -> Self {
        let mut record = StreamProgress {
            format_version: FORMAT_VERSION,
            stream,
            last_seq,
            dedup_mark: None,
            dedup_mark_rows: Vec::new(),
            source_ts_us,
            owner: None,
            pending: None,
            dead_letter_scan_from: None,
        };
        record.set_mark(mark);
        record
    }

    /// The duplicate filter's state at `last_seq`.
    pub fn mark(&self) -> Option<Mark> {
        let [c, l] = self.dedup_mark?;
        Some(Mark::new(SourcePosition { commit_lsn: Lsn(c), lsn: Lsn(l) }, self.dedup_mark_rows.iter().copied()))
    }

    fn set_mark(&mut self, mark: Option<&Mark>) {
        self.dedup_mark = mark.map(|m| [m.position.commit_lsn.0, m.position.lsn.0]);
        self.dedup_mark_rows = mark.map(|m| m.rows().collect()).unwrap_or_default();
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

/// How long a flush may take, and how far apart writers' clocks may be.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub flush_deadline: Duration,
    pub clock_skew: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { flush_deadline: Duration::from_secs(30), clock_skew: Duration::from_secs(2) }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A writer's hold on one stream's progress record: the record as last written and its version.
#[derive(Debug)]
pub struct ProgressHandle {
    lake: Lake,
    record: StreamProgress,
    version: Version,
    timing: Timing,
}

impl ProgressHandle {
    /// Takes the stream over for `worker`: finishes off a predecessor's incomplete flush (waits
    /// for its deadline, deletes its objects) and records a higher epoch. A stream never written
    /// starts with `last_seq = first_seq - 1`.
    pub async fn claim(
        lake: &Lake,
        stream: &str,
        worker: &str,
        first_seq: i64,
        timing: Timing,
    ) -> Result<ProgressHandle, ProgressError> {
        let mut handle = Self::fence(lake, stream, worker, first_seq, timing).await?;
        handle.remove_unfinished().await?;
        Ok(handle)
    }

    /// The first half of [`Self::claim`]: records the higher epoch once any pending flush is past
    /// its deadline, keeping that flush's intent in the record.
    ///
    /// Fencing comes before the deletions: the predecessor checks its deadline before its
    /// completing write, but that write can still be on its way when the deadline (and the
    /// allowed skew) has passed. Had the deletions come first, it could land after them and
    /// record as durable a flush whose objects are gone; now it meets the new epoch and fails.
    async fn fence(
        lake: &Lake,
        stream: &str,
        worker: &str,
        first_seq: i64,
        timing: Timing,
    ) -> Result<ProgressHandle, ProgressError> {
        let p = path(stream);
        loop {
            let (bytes, version) = lake.get_versioned(&p).await?;
            let mut record = match bytes {
                Some(b) => parse(p.as_ref(), &b)?,
                None => StreamProgress::new(stream.to_string(), first_seq - 1, None, None),
            };
            if let Some(pending) = &record.pending {
                let wait_until = pending.deadline_ms + timing.clock_skew.as_millis() as i64;
                let now = now_ms();
                if now < wait_until {
                    tracing::info!(
                        stream,
                        wait_ms = wait_until - now,
                        "waiting for the deadline of another writer's flush"
                    );
                    tokio::time::sleep(Duration::from_millis((wait_until - now) as u64)).await;
                    continue; // It may have completed meanwhile: read again.
                }
            }
            let epoch = record.owner.as_ref().map_or(0, |o| o.epoch) + 1;
            record.owner = Some(Owner { worker: worker.to_string(), epoch });
            match lake.put_if(&p, to_bytes(&record), &version).await {
                Ok(version) => return Ok(ProgressHandle { lake: lake.clone(), record, version, timing }),
                // Another writer moved first: look again.
                Err(SinkError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The second half of [`Self::claim`]: deletes the objects of the predecessor's incomplete
    /// flush (redone by this writer from `last_seq`), then clears its intent.
    async fn remove_unfinished(&mut self) -> Result<(), ProgressError> {
        let Some(pending) = self.record.pending.clone() else { return Ok(()) };
        for object in &pending.objects {
            self.lake.delete(&object_store::path::Path::from(object.as_str())).await?;
        }
        tracing::info!(
            stream = self.record.stream,
            first = pending.first_seq,
            last = pending.last_seq,
            objects = pending.objects.len(),
            "removed the objects of an incomplete flush; it will be redone"
        );
        let mut next = self.record.clone();
        next.pending = None;
        // A writer that took the stream over meanwhile deletes the same objects again.
        self.write(next).await
    }

    /// The record as this writer last wrote it.
    pub fn record(&self) -> &StreamProgress {
        &self.record
    }

    /// Records the intent to write `objects` for positions `first_seq..=last_seq`; returns the
    /// deadline (unix ms) by which they must be durable.
    pub async fn begin_flush(
        &mut self,
        first_seq: i64,
        last_seq: i64,
        objects: Vec<String>,
    ) -> Result<i64, ProgressError> {
        let deadline_ms = now_ms() + self.timing.flush_deadline.as_millis() as i64;
        let mut next = self.record.clone();
        next.pending = Some(PendingFlush { first_seq, last_seq, objects, deadline_ms });
        self.write(next).await?;
        Ok(deadline_ms)
    }

    /// Fails once the pending flush's deadline has passed: its objects may be deleted by a
    /// writer taking over, so writing more would leave strays.
    pub fn check_deadline(&self) -> Result<(), ProgressError> {
        match &self.record.pending {
            Some(p) if now_ms() > p.deadline_ms => {
                Err(ProgressError::DeadlinePassed { stream: self.record.stream.clone(), last_seq: p.last_seq })
            }
            _ => Ok(()),
        }
    }

    /// Completes the pending flush (if any: a flush without objects has none): `last_seq`
    /// moves to `last_seq`.
    pub async fn complete_flush(
        &mut self,
        last_seq: i64,
        mark: Option<&Mark>,
        source_ts_us: Option<i64>,
        dead_letter_scan_from: Option<i64>,
    ) -> Result<(), ProgressError> {
        self.check_deadline()?;
        let mut next = self.record.clone();
        next.pending = None;
        if last_seq < next.last_seq {
            return Err(ProgressError::Backwards {
                stream: next.stream.clone(),
                recorded: next.last_seq,
                proposed: last_seq,
            });
        }
        next.last_seq = last_seq;
        next.set_mark(mark);
        next.source_ts_us = source_ts_us;
        if dead_letter_scan_from.is_some() {
            next.dead_letter_scan_from = dead_letter_scan_from;
        }
        self.write(next).await
    }

    async fn write(&mut self, next: StreamProgress) -> Result<(), ProgressError> {
        let p = path(&next.stream);
        match self.lake.put_if(&p, to_bytes(&next), &self.version).await {
            Ok(v) => {
                self.version = v;
                self.record = next;
                Ok(())
            }
            Err(SinkError::Conflict { .. }) => {
                let now = load(&self.lake, &next.stream).await?;
                let owner = now.and_then(|r| r.owner).unwrap_or(Owner { worker: "unknown".into(), epoch: 0 });
                Err(ProgressError::Fenced { stream: next.stream, by: owner.worker, epoch: owner.epoch })
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn to_bytes(record: &StreamProgress) -> Bytes {
    // Plain owned data serialises without error.
    Bytes::from(serde_json::to_vec_pretty(record).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::S3Options;

    fn fast() -> Timing {
        Timing { flush_deadline: Duration::from_millis(200), clock_skew: Duration::from_millis(10) }
    }

    #[tokio::test]
    async fn progress_moves_forward_through_intents() {
        let lake = Lake::open("memory://", &S3Options::default()).unwrap();
        let mut h = ProgressHandle::claim(&lake, "s", "w1", 0, fast()).await.unwrap();
        assert_eq!((h.record().last_seq, h.record().owner.as_ref().map(|o| o.epoch)), (-1, Some(1)));
        // Two rows of one WAL record applied at the mark: both come back.
        let mark =
            Mark::new(SourcePosition { commit_lsn: Lsn(5), lsn: Lsn(9) }, [RowKey::Entity(3), RowKey::Value(3, 4)]);
        h.begin_flush(0, 10, vec!["changes/a.parquet".into()]).await.unwrap();
        h.complete_flush(10, Some(&mark), Some(7), None).await.unwrap();
        let back = load(&lake, "s").await.unwrap().unwrap();
        assert_eq!((back.last_seq, back.mark(), back.pending), (10, Some(mark), None));
        ProgressHandle::claim(&lake, "t", "w1", 1, fast()).await.unwrap();
        assert_eq!(load_all(&lake).await.unwrap().keys().collect::<Vec<_>>(), vec!["s", "t"]);
    }

    /// Two writers fight over one stream: the one taken over is fenced at its next step and
    /// the objects of its unfinished flush are removed by the taker.
    #[tokio::test]
    async fn a_takeover_fences_the_old_writer_and_removes_its_strays() {
        let lake = Lake::open("memory://", &S3Options::default()).unwrap();
        let mut old = ProgressHandle::claim(&lake, "s", "old", 0, fast()).await.unwrap();
        let stray = object_store::path::Path::from("changes/x/s-000-009.parquet");
        old.begin_flush(0, 9, vec![stray.to_string()]).await.unwrap();
        lake.put(&stray, Bytes::from_static(b"rows")).await.unwrap();

        let started = std::time::Instant::now();
        let mut new = ProgressHandle::claim(&lake, "s", "new", 0, fast()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150), "the taker waits for the old deadline");
        assert_eq!(lake.get(&stray).await.unwrap(), None, "the unfinished flush's object is gone");
        assert_eq!((new.record().last_seq, new.record().owner.as_ref().unwrap().epoch), (-1, 2));

        let err = old.complete_flush(9, None, None, None).await.unwrap_err();
        assert!(matches!(err, ProgressError::DeadlinePassed { .. }), "{err}");
        old.record.pending = None; // even on time, the old writer is fenced:
        let err = old.begin_flush(0, 9, vec![]).await.unwrap_err();
        assert_eq!(err.to_string(), "stream s was taken over by new (epoch 2); this writer stops writing it");
        new.begin_flush(0, 5, vec![]).await.unwrap();
        new.complete_flush(5, None, None, Some(3)).await.unwrap();
        assert_eq!(load(&lake, "s").await.unwrap().unwrap().dead_letter_scan_from, Some(3));
    }

    /// The old writer's completing write, checked against its deadline in time but slow on its
    /// way, arrives while the taker is deleting its objects: it must be refused, or the record
    /// would call durable a flush whose objects are gone.
    #[tokio::test]
    async fn a_late_completion_cannot_land_between_the_takeover_and_its_deletions() {
        let lake = Lake::open("memory://", &S3Options::default()).unwrap();
        let mut old = ProgressHandle::claim(&lake, "s", "old", 0, fast()).await.unwrap();
        let object = object_store::path::Path::from("changes/x/s-000-009.parquet");
        old.begin_flush(0, 9, vec![object.to_string()]).await.unwrap();
        lake.put(&object, Bytes::from_static(b"rows")).await.unwrap();
        let mut completed = old.record().clone();
        completed.pending = None;
        completed.last_seq = 9;

        let mut new = ProgressHandle::fence(&lake, "s", "new", 0, fast()).await.unwrap();
        let err = old.write(completed).await.unwrap_err();
        assert!(matches!(err, ProgressError::Fenced { epoch: 2, .. }), "{err}");
        new.remove_unfinished().await.unwrap();
        assert_eq!(lake.get(&object).await.unwrap(), None);
        let back = load(&lake, "s").await.unwrap().unwrap();
        assert_eq!((back.last_seq, back.pending, back.owner.map(|o| o.epoch)), (-1, None, Some(2)));
    }
}
