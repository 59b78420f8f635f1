//! One stream through the pipeline: decode → drop duplicates → catalog / pivot → batches →
//! lake, with dead letters and progress.
//!
//! Contract with the source: records are fed in stream order with [`StreamPipeline::process`];
//! [`StreamPipeline::flush`] makes everything up to [`StreamPipeline::durable_seq`] durable
//! (intent, change files, dead letters, catalog, then the progress record, in that order; see
//! `progress`), so after a crash the stream resumes after the recorded position and redoes at most
//! one flush, whose unfinished objects the next writer removes first. Opening a pipeline takes
//! the stream over ([`ProgressHandle::claim`]); a pipeline whose stream was taken over by another
//! writer gets [`ProgressError::Fenced`] from its next flush and must be dropped.
//!
//! A change whose attribute the catalog does not know yet waits (parked) for up to
//! `unknown_attribute_wait` further records; if the catalog learns the attribute meanwhile the
//! change is applied (as a row of its own), otherwise it becomes a dead letter.
//!
//! The catalog a stream types its changes by is the catalog as of its own position: it starts
//! from the lake's as of its resume position ([`Catalog::as_of`]), and attribute changes learnt
//! ahead of it (saved by streams further on, or read from the catalog topic) wait until its own
//! changes reach their positions. So a value replayed after a restart keeps the type its
//! attribute had when it was written, even if another stream has since seen the attribute
//! retyped or removed.

use crate::catalog::{Attribute, AttributeVersion, Catalog, CatalogChange};
use crate::dead_letter::{DeadLetter, DeadLetterTarget};
use crate::decode::avro::AvroDecoder;
use crate::decode::{DecodeError, DecodeOptions, Decoder, Event, Op, RowChange, SourceMeta, TableNames};
use crate::dedup::{Dedup, Mark, RowKey, Verdict};
use crate::metrics::RunStats;
use crate::pivot::{FinishedBatch, Origin, Pivot, PivotError};
use crate::position::{SourcePosition, StreamId};
use crate::progress::{ProgressError, ProgressHandle, Timing};
use crate::purge::{PurgeError, PurgeSet};
use crate::sink::parquet::encode;
use crate::sink::{Lake, SinkError};
use crate::source::Record;
use crate::tenancy::TenantFilter;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;

/// Settings of a stream pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub decode: DecodeOptions,
    pub tables: TableNames,
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush when about this many bytes are buffered.
    pub flush_bytes: usize,
    /// Entities of one transaction folded at once (bounds memory on huge transactions).
    pub max_pending_entities: usize,
    /// Records a change with an unknown attribute waits for the catalog.
    pub unknown_attribute_wait: u64,
    /// And time, for a source that may go quiet (see [`StreamPipeline::tick`]).
    pub unknown_attribute_wait_time: std::time::Duration,
    /// Changes that may wait at once; beyond, they become dead letters at once.
    pub max_parked: usize,
    /// Tenants written; changes of the others are skipped (counted in `tenant_skipped`).
    pub tenants: TenantFilter,
    /// Entities whose tenant the pivot remembers across transactions (see `tenancy`).
    pub remembered_entities: usize,
    /// What one record may hold (see `limits`).
    pub limits: crate::limits::Limits,
    /// Parquet objects encoded at once during a flush, each on a thread of the blocking pool
    /// (several partitions flushing together overlap their encoding). 0: one at a time on the
    /// stream's own thread, for a lone stream whose reading waits for its flushes anyway.
    pub encode_parallelism: usize,
    /// Flush deadline and clock skew between writers (see `progress`).
    pub timing: Timing,
    /// Who writes: recorded as the stream's owner.
    pub writer: String,
    /// Keep what the worker's metrics need: commit times of changes
    /// ([`StreamPipeline::take_durable_commit_times`]) and the objects written
    /// ([`StreamPipeline::take_written`]). A file run has no use for them.
    pub detailed_metrics: bool,
    /// Records are Avro (Confluent wire format) decoded by this, not JSON. Whoever feeds the
    /// pipeline fetches each record's writer schema first (see `decode::Decoder`).
    pub avro: Option<Arc<AvroDecoder>>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            decode: DecodeOptions::default(),
            tables: TableNames::default(),
            // Measured on 1M events: 250K rows peaked at 150 MiB RSS, 100K at 100 MiB, for the
            // same CPU time.
            flush_rows: 100_000,
            flush_bytes: 32 << 20,
            max_pending_entities: 100_000,
            unknown_attribute_wait: 10_000,
            unknown_attribute_wait_time: std::time::Duration::from_secs(30),
            max_parked: 10_000,
            tenants: TenantFilter::default(),
            remembered_entities: crate::pivot::DEFAULT_REMEMBERED_ENTITIES,
            limits: crate::limits::Limits::default(),
            encode_parallelism: 2,
            timing: Timing::default(),
            writer: default_writer_name(),
            detailed_metrics: false,
            avro: None,
        }
    }
}

/// `<host>-<pid>`: tells an operator which process holds a stream.
pub fn default_writer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}-{}", if host.is_empty() { "eavlake" } else { &host }, std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Progress(#[from] ProgressError),
    #[error("catalog in the lake: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("encoding task failed: {0}")]
    Task(String),
    #[error(transparent)]
    DeadLetter(#[from] crate::dead_letter::topic::DeadLetterError),
    #[error(transparent)]
    Purge(#[from] PurgeError),
}

impl PipelineError {
    /// The stream was taken over by another writer: drop the pipeline, write nothing more.
    pub fn is_fenced(&self) -> bool {
        matches!(self, PipelineError::Progress(ProgressError::Fenced { .. }))
    }

    /// The flush ran past its deadline (a slow or unreachable store): its objects may be
    /// removed by whoever takes the stream next. Drop the pipeline; a new one (after a new
    /// claim, which removes them) redoes the work.
    pub fn is_late(&self) -> bool {
        matches!(self, PipelineError::Progress(ProgressError::DeadlinePassed { .. }))
    }
}

/// A change waiting for the catalog.
struct Parked {
    value: Option<Vec<u8>>,
    origin: Origin,
    op: Op,
    source: SourceMeta,
    tx: Option<String>,
    row: RowChange,
    /// Record count at which it gives up.
    deadline: u64,
    parked_at: std::time::Instant,
    /// Duplicate mark before it: what progress may record while it is not durable.
    mark_before: Option<Mark>,
    error: PivotError,
}

/// The pipeline of one stream.
pub struct StreamPipeline {
    stream: StreamId,
    name: String,
    lake: Lake,
    options: PipelineOptions,
    progress: ProgressHandle,
    dead_letters: DeadLetterTarget,
    /// Positions after the durable one whose dead letters a predecessor already delivered.
    already_dead_lettered: std::collections::BTreeSet<i64>,
    decoder: Decoder,
    dedup: Dedup,
    catalog: Catalog,
    catalog_saved: u64,
    /// Position of the newest change this stream has reached: where its catalog stands.
    catalog_at: Option<SourcePosition>,
    /// Attribute changes after `catalog_at`, in order of position, applied when reached.
    catalog_ahead: VecDeque<AttributeVersion>,
    pivot: Pivot,
    /// The lake's purges: their rows are left out of every flush (re-read at each flush).
    purges: PurgeSet,
    dead: Vec<DeadLetter>,
    /// Rows past the durable position (after a change still waiting), held for a later flush.
    carry: Vec<FinishedBatch>,
    parked: VecDeque<Parked>,
    /// Duplicate mark before the oldest change still in the pivot's open transaction.
    mark_before_pending: Option<Mark>,
    /// Last position whose records are durable.
    durable: i64,
    /// Last position processed.
    seen: i64,
    newest_source_ts: Option<i64>,
    /// What the lake's record says of the durable position's commit time.
    durable_source_ts: Option<i64>,
    /// Commit times of changes not yet handed over (see `detailed_metrics`).
    commit_times: VecDeque<CommitTimes>,
    /// Change objects written, not yet handed over.
    written: Vec<WrittenObject>,
    pub stats: RunStats,
}

/// A run of changes with one commit time.
struct CommitTimes {
    last_seq: i64,
    commit_time_us: i64,
    changes: u64,
}

/// A change object a flush wrote.
#[derive(Debug, Clone)]
pub struct WrittenObject {
    pub entity_type: Arc<str>,
    pub rows: usize,
    pub bytes: usize,
}

impl StreamPipeline {
    /// Opens the pipeline of `stream`, taking it over and resuming from the lake's progress
    /// record and catalog.
    pub async fn open(
        lake: Lake,
        stream: StreamId,
        options: PipelineOptions,
        bootstrap: Option<Catalog>,
    ) -> Result<StreamPipeline, PipelineError> {
        Self::open_with(lake, stream, options, bootstrap, DeadLetterTarget::Lake).await
    }

    /// [`Self::open`] with dead letters going to `dead_letters`.
    pub async fn open_with(
        lake: Lake,
        stream: StreamId,
        options: PipelineOptions,
        bootstrap: Option<Catalog>,
        dead_letters: DeadLetterTarget,
    ) -> Result<StreamPipeline, PipelineError> {
        let name = stream.object_name();
        let progress = ProgressHandle::claim(&lake, &name, &options.writer, stream.first_seq(), options.timing).await?;
        let recorded = progress.record().clone();
        let mut known = match lake.get(&Lake::meta_path("catalog.json")).await? {
            Some(bytes) => Catalog::from_json(&bytes)?,
            None => Catalog::default(),
        };
        if let Some(boot) = bootstrap {
            known.merge(&boot);
        }
        let recorded_mark = recorded.mark();
        let (catalog, ahead) = known.as_of(recorded_mark.as_ref().map(|m| m.position));
        let purges = PurgeSet::load(&lake).await?;
        let durable = recorded.last_seq;
        if durable >= stream.first_seq() {
            tracing::info!(stream = %stream, after = durable, "resuming from the lake's progress record");
        }
        let already_dead_lettered = match (&dead_letters, &stream) {
            (DeadLetterTarget::Topic(t), StreamId::Kafka { topic, partition }) => {
                t.already_delivered(topic, *partition, durable, recorded.dead_letter_scan_from).await?
            }
            _ => Default::default(),
        };
        Ok(StreamPipeline {
            decoder: Decoder::new(options.decode, options.tables.clone(), options.avro.as_ref()),
            pivot: Pivot::new(options.decode.decimal_scale, options.max_pending_entities)
                .with_remembered_entities(options.remembered_entities)
                .with_limits(options.limits),
            stream,
            name,
            lake,
            options,
            progress,
            dead_letters,
            already_dead_lettered,
            catalog_at: recorded_mark.as_ref().map(|m| m.position),
            dedup: Dedup::resume(recorded_mark),
            purges,
            catalog_saved: u64::MAX,
            catalog,
            catalog_ahead: ahead.into(),
            dead: Vec::new(),
            carry: Vec::new(),
            parked: VecDeque::new(),
            mark_before_pending: None,
            durable,
            seen: durable,
            newest_source_ts: recorded.source_ts_us,
            durable_source_ts: recorded.source_ts_us,
            commit_times: VecDeque::new(),
            written: Vec::new(),
            stats: RunStats::default(),
        })
    }

    /// First stream position not yet durable: where a source resumes.
    pub fn resume_seq(&self) -> i64 {
        self.durable + 1
    }

    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Processes one record. Never fails on bad input: that becomes a dead letter.
    pub fn process(&mut self, rec: &Record) {
        self.stats.records += 1;
        self.seen = rec.seq;
        self.expire_parked(false);
        let origin = Origin { seq: rec.seq, kafka: rec.kafka.cloned() };
        // Checked before decoding: an oversized record is not read at all (a file source has
        // kept only its beginning, `rec.oversized` telling its real length).
        let len = rec.oversized.unwrap_or_else(|| rec.value.map_or(0, <[u8]>::len));
        let decoded = if len > self.options.limits.max_record_bytes {
            Err(DecodeError::too_large(len, self.options.limits.max_record_bytes, rec.oversized.is_some()))
        } else if let Some(text) = rec.text {
            self.decoder.decode_text(text)
        } else {
            self.decoder.decode(rec.value)
        };
        match decoded {
            Err(e) => {
                tracing::debug!(stream = %self.stream, seq = rec.seq, error = %e, "dead letter");
                self.stats.count_dead_letter(e.reason());
                self.dead.push(DeadLetter::from_failed_decode(rec.value, rec.seq, origin.kafka, &e).with_key(rec.key));
            }
            Ok(Event::Change { op, source, tx, mut row }) => {
                self.catch_up_catalog(source.position);
                let mark_before = self.dedup.mark().cloned();
                if self.dedup.check(&source, RowKey::of(op, &row)) == Verdict::Duplicate {
                    self.stats.duplicates += 1;
                    return;
                }
                if let Some(ts) = source.commit_time_us {
                    self.newest_source_ts = Some(self.newest_source_ts.map_or(ts, |n| n.max(ts)));
                }
                if let RowChange::Attribute { before, after } = &row {
                    self.apply_catalog(op, before.as_ref(), after.as_ref(), Some(source.position));
                    return;
                }
                if self.skips_tenant(op, &row) {
                    return;
                }
                match self.pivot.apply(&self.catalog, op, &source, tx.as_deref(), &mut row, &origin) {
                    Ok(entity_type) => {
                        self.stats.count_applied(entity_type.as_deref());
                        self.applied(rec.seq, source.commit_time_us);
                        // This change opened the fold (possibly closing the previous one): the
                        // mark before it is what progress may record while the fold is open.
                        if self.pivot.pending_first_seq() == Some(rec.seq) {
                            self.mark_before_pending = mark_before;
                        }
                    }
                    Err(e) if e.may_resolve() && self.parked.len() < self.options.max_parked => {
                        self.parked.push_back(Parked {
                            value: rec.value.map(<[u8]>::to_vec),
                            origin,
                            op,
                            source,
                            tx,
                            row,
                            deadline: self.stats.records + self.options.unknown_attribute_wait,
                            parked_at: std::time::Instant::now(),
                            mark_before,
                            error: e,
                        });
                    }
                    Err(e) => self.dead_letter_pivot(rec.value, origin, &e),
                }
            }
            Ok(Event::Transaction { begin, .. }) => {
                self.stats.transaction_markers += 1;
                if !begin {
                    self.pivot.end_transaction(&self.catalog);
                }
            }
            Ok(Event::Truncate { table, .. }) => {
                // A truncate has no rows to fold; applying it to the current state needs a fresh
                // snapshot of the table. It is kept, visibly, rather than dropped.
                let table = self.options.tables.name(table);
                let dl = DeadLetter::from_truncate(rec.value, rec.seq, origin.kafka, table).with_key(rec.key);
                self.stats.count_dead_letter(dl.reason);
                self.dead.push(dl);
            }
            Ok(Event::Heartbeat) => self.stats.heartbeats += 1,
            Ok(Event::Tombstone) => self.stats.tombstones += 1,
            Ok(Event::Message) => self.stats.messages += 1,
            Ok(Event::OtherTable { .. }) => self.stats.other_tables += 1,
        }
    }

    /// Whether a change belongs to a tenant the configuration does not write; counts it if so.
    /// A value row without `tenant_id` takes its attribute's tenant; when neither is known the
    /// change goes on (to wait for the catalog) and is checked again when it is retried.
    fn skips_tenant(&mut self, op: Op, row: &RowChange) -> bool {
        if self.options.tenants.is_open() {
            return false;
        }
        let tenant = match row {
            RowChange::Entity { before, after } => {
                let image = if op == Op::Delete { before.as_ref() } else { after.as_ref() };
                image.and_then(|e| e.tenant_id)
            }
            RowChange::Value { before, after } => {
                let image = if op == Op::Delete { before.as_ref() } else { after.as_ref() };
                image.and_then(|v| v.tenant_id.or_else(|| self.catalog.get(v.attribute_id).map(|a| a.tenant_id)))
            }
            RowChange::Attribute { .. } => None,
        };
        match tenant {
            Some(t) if !self.options.tenants.allows(t) => {
                self.stats.tenant_skipped += 1;
                true
            }
            _ => false,
        }
    }

    /// Keeps, when commit times are kept, the commit time of an applied change (counted with
    /// `RunStats::count_applied`).
    fn applied(&mut self, seq: i64, commit_time_us: Option<i64>) {
        if let (true, Some(ts)) = (self.options.detailed_metrics, commit_time_us) {
            // One entry per run of changes with the same commit time (a transaction).
            match self.commit_times.back_mut() {
                Some(last) if last.commit_time_us == ts && last.last_seq <= seq => {
                    last.last_seq = seq;
                    last.changes += 1;
                }
                _ => self.commit_times.push_back(CommitTimes { last_seq: seq, commit_time_us: ts, changes: 1 }),
            }
        }
    }

    /// Hands over the commit times of the changes made durable by the flushes so far: `(commit
    /// time in µs, number of changes)`. Kept only with [`PipelineOptions::detailed_metrics`].
    pub fn take_durable_commit_times(&mut self, mut each: impl FnMut(i64, u64)) {
        while self.commit_times.front().is_some_and(|c| c.last_seq <= self.durable) {
            if let Some(c) = self.commit_times.pop_front() {
                each(c.commit_time_us, c.changes);
            }
        }
    }

    /// Hands over the change objects written by the flushes so far.
    pub fn take_written(&mut self) -> Vec<WrittenObject> {
        std::mem::take(&mut self.written)
    }

    /// Commit time (µs) of the newest change made durable; from the lake's record until this
    /// pipeline flushes.
    pub fn durable_source_ts_us(&self) -> Option<i64> {
        self.durable_source_ts
    }

    fn dead_letter_pivot(&mut self, value: Option<&[u8]>, origin: Origin, e: &PivotError) {
        tracing::debug!(stream = %self.stream, seq = origin.seq, error = %e, "dead letter");
        self.stats.count_dead_letter(e.reason());
        self.dead.push(DeadLetter::from_failed_pivot(value, origin.seq, origin.kafka, e));
    }

    /// Applies an attributes change that arrived on another stream (the Kafka worker's catalog
    /// topic): at once if this stream's changes have reached its position, else when they do.
    pub fn apply_catalog_change(
        &mut self,
        op: Op,
        before: Option<&crate::decode::AttributeRow>,
        after: Option<&crate::decode::AttributeRow>,
        at: Option<SourcePosition>,
    ) {
        self.apply_catalog(op, before, after, at);
    }

    /// Bytes buffered for the next flush (about).
    pub fn buffered_bytes(&self) -> usize {
        self.pivot.batches.bytes() + self.carry.iter().map(|b| b.batch.get_array_memory_size()).sum::<usize>()
    }

    /// Whether a change waits for its attribute to reach the catalog.
    pub fn waits_for_catalog(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Whether nothing waits to be made durable.
    pub fn is_idle(&self) -> bool {
        self.pivot.batches.rows() == 0
            && self.pivot.pending_first_seq().is_none()
            && self.parked.is_empty()
            && self.carry.is_empty()
    }

    /// Closes the open transaction, so that the next flush includes it. For flushes by age:
    /// Debezium's end-of-transaction marker travels on another topic, so a quiet stream would
    /// otherwise hold its last transaction back. A transaction that goes on after this point
    /// becomes two rows per entity instead of one, each a true state.
    pub fn seal(&mut self) {
        self.pivot.end_transaction(&self.catalog);
    }

    fn apply_catalog(
        &mut self,
        op: Op,
        before: Option<&crate::decode::AttributeRow>,
        after: Option<&crate::decode::AttributeRow>,
        at: Option<SourcePosition>,
    ) {
        self.stats.catalog_changes += 1;
        let Some((attribute_id, state)) = Catalog::state_after(op, before, after) else { return };
        match at {
            // Learnt ahead of this stream's own changes (the catalog topic): kept until reached.
            Some(at) if self.catalog_at.is_none_or(|now| at > now) => {
                let i = self.catalog_ahead.partition_point(|v| v.at <= at);
                self.catalog_ahead.insert(i, AttributeVersion { attribute_id, at, state });
            }
            _ => self.apply_attribute(attribute_id, state, at),
        }
    }

    /// Applies the attribute changes learnt ahead that this stream's changes have now reached.
    fn catch_up_catalog(&mut self, at: SourcePosition) {
        if self.catalog_at.is_some_and(|now| now >= at) {
            return;
        }
        self.catalog_at = Some(at);
        while self.catalog_ahead.front().is_some_and(|v| v.at <= at) {
            if let Some(v) = self.catalog_ahead.pop_front() {
                self.apply_attribute(v.attribute_id, v.state, Some(v.at));
            }
        }
    }

    fn apply_attribute(&mut self, attribute_id: i64, state: Option<Attribute>, at: Option<SourcePosition>) {
        // Rows folded so far were typed by the catalog as it was: they go to the batches
        // before a changed type could meet them.
        if let Some(a) = &state {
            let retyped = |old: &Attribute| old.data_type != a.data_type || *old.name != *a.name;
            if self.catalog.is_current_at(attribute_id, at) && self.catalog.get(attribute_id).is_some_and(retyped) {
                self.pivot.end_transaction(&self.catalog);
            }
        }
        if let CatalogChange::Added | CatalogChange::Altered { .. } = self.catalog.set_version(attribute_id, state, at)
        {
            self.retry_parked();
        }
    }

    /// Applies the parked changes the catalog can now place.
    fn retry_parked(&mut self) {
        let mut still = VecDeque::new();
        while let Some(mut p) = self.parked.pop_front() {
            // Its tenant may have been unknown while it waited (a value row without tenant_id).
            if self.skips_tenant(p.op, &p.row) {
                continue;
            }
            match self.pivot.apply(&self.catalog, p.op, &p.source, p.tx.as_deref(), &mut p.row, &p.origin) {
                Ok(entity_type) => {
                    self.stats.count_applied(entity_type.as_deref());
                    self.applied(p.origin.seq, p.source.commit_time_us);
                    // Its row stands on its own: close it so it is not mixed with the open
                    // transaction's rows.
                    self.pivot.end_transaction(&self.catalog);
                }
                Err(e) if e.may_resolve() => still.push_back(Parked { error: e, ..p }),
                Err(e) => self.dead_letter_pivot(p.value.as_deref(), p.origin, &e),
            }
        }
        self.parked = still;
    }

    /// Gives up, by time, on changes waiting for the catalog: a live source calls this now and
    /// then, as a quiet stream brings no records to count. (A file run does not: its outcome
    /// depends on its input only.)
    pub fn tick(&mut self) {
        while self.parked.front().is_some_and(|p| p.parked_at.elapsed() >= self.options.unknown_attribute_wait_time) {
            let Some(p) = self.parked.pop_front() else { break };
            self.dead_letter_pivot(p.value.as_deref(), p.origin, &p.error);
        }
    }

    /// Turns parked changes past their deadline (or all, at the end) into dead letters.
    fn expire_parked(&mut self, all: bool) {
        while let Some(p) = self.parked.front() {
            // `deadline` is the last record it may wait through; expiry runs before each record.
            if !all && p.deadline >= self.stats.records {
                break;
            }
            let Some(p) = self.parked.pop_front() else { break };
            self.dead_letter_pivot(p.value.as_deref(), p.origin, &p.error);
        }
    }

    /// Whether buffered rows call for a flush. While a change waits for the catalog, rows after
    /// it are held back (a flush would write rows past the position progress can record, and a
    /// restart would write them again), up to four times the limits; the wait is bounded by
    /// `unknown_attribute_wait` records.
    pub fn should_flush(&self) -> bool {
        let factor = if self.parked.is_empty() { 1 } else { 4 };
        self.pivot.batches.rows() >= self.options.flush_rows * factor
            || self.pivot.batches.bytes() >= self.options.flush_bytes * factor
    }

    /// Last position whose records would be durable after a flush now: everything seen, less
    /// the open transaction and the parked changes.
    pub fn durable_seq(&self) -> i64 {
        let mut d = self.seen;
        if let Some(s) = self.pivot.pending_first_seq() {
            d = d.min(s - 1);
        }
        if let Some(p) = self.parked.front() {
            d = d.min(p.origin.seq - 1);
        }
        d.max(self.durable)
    }

    /// The duplicate mark that goes with [`Self::durable_seq`].
    fn durable_mark(&self) -> Option<Mark> {
        let mut mark = self.dedup.mark().cloned();
        if self.pivot.pending_first_seq().is_some() {
            mark = self.mark_before_pending.clone();
        }
        if let Some(p) = self.parked.front() {
            mark = Mark::earliest(mark, p.mark_before.clone());
        }
        mark
    }

    /// Ends the input: closes the open transaction, gives up on parked changes, flushes.
    pub async fn finish(&mut self) -> Result<(), PipelineError> {
        self.pivot.end_transaction(&self.catalog);
        self.expire_parked(true);
        self.flush().await
    }

    /// Makes everything up to [`Self::durable_seq`] durable, then records the progress.
    pub async fn flush(&mut self) -> Result<(), PipelineError> {
        let last = self.durable_seq();
        let mut batches = std::mem::take(&mut self.carry);
        batches.extend(
            self.pivot.batches.finish().map_err(|e| PipelineError::Task(format!("sorting a flush's rows: {e}")))?,
        );
        // Rows past `last` (they follow a change that still waits) would be written again by a
        // restart, which resumes at `last + 1`: they wait for a later flush. Rows of the open
        // transaction's slices are the exception (a huge transaction cannot be held whole).
        let slices_from = self.pivot.pending_first_seq().unwrap_or(i64::MAX);
        let (batches, carry) = split_rows(batches, |seq| seq <= last || seq >= slices_from)?;
        self.carry = carry;
        // A purge recorded before this flush started waits for it to be over before rewriting
        // the lake: rows it names must not be written from now on.
        self.purges.refresh(&self.lake).await?;
        let batches = self.drop_purged(batches)?;
        let first = self.durable + 1;
        let max_row_seq = batches.iter().map(|b| max_seq(&b.batch)).max().unwrap_or(last);
        // Normally `last`; past it only when a huge transaction was folded in slices.
        let name_last = last.max(max_row_seq);
        if batches.is_empty() && last == self.durable {
            return Ok(());
        }
        // Dead letters of records past the durable position stay for the next flush: a restart
        // reads those records again and would deliver them twice.
        let (durable_dead, later): (Vec<DeadLetter>, Vec<DeadLetter>) =
            std::mem::take(&mut self.dead).into_iter().partition(|d| d.seq <= last);
        self.dead = later;
        let file = format!("{}-{first:012}-{name_last:012}", self.name);
        let paths = part_paths(&batches, &file);
        let dead_letter_object = match (&self.dead_letters, durable_dead.is_empty()) {
            (DeadLetterTarget::Lake, false) => Some(Lake::dead_letter_path(&self.name, first, last)),
            _ => None,
        };
        let objects: Vec<String> = paths.iter().chain(dead_letter_object.iter()).map(|p| p.to_string()).collect();
        // Dead letters too need the intent: it fences a writer taken over before it delivers.
        if !objects.is_empty() || !durable_dead.is_empty() {
            self.progress.begin_flush(first, last, objects).await?;
        }
        self.write_batches(batches, paths).await?;
        let mut dead_letter_scan_from = None;
        if !durable_dead.is_empty() {
            self.progress.check_deadline()?;
            match (&self.dead_letters, dead_letter_object) {
                (DeadLetterTarget::Topic(topic), _) => {
                    dead_letter_scan_from = topic.deliver(&durable_dead, &self.already_dead_lettered).await?;
                }
                (DeadLetterTarget::Lake, Some(path)) => {
                    let mut text = String::new();
                    for d in &durable_dead {
                        text.push_str(&d.to_json_line(&self.name));
                        text.push('\n');
                    }
                    self.lake.put(&path, Bytes::from(text)).await?;
                }
                (DeadLetterTarget::Lake, None) => {}
            }
        }
        self.already_dead_lettered = self.already_dead_lettered.split_off(&(last + 1));
        if self.catalog.version() != self.catalog_saved {
            save_catalog(&self.lake, &self.catalog).await?;
            self.catalog_saved = self.catalog.version();
        }
        self.progress
            .complete_flush(last, self.durable_mark().as_ref(), self.newest_source_ts, dead_letter_scan_from)
            .await?;
        self.durable = last;
        self.durable_source_ts = self.newest_source_ts;
        self.stats.flushes += 1;
        Ok(())
    }

    /// The batches without the rows of purged tenants and entities.
    fn drop_purged(&mut self, batches: Vec<FinishedBatch>) -> Result<Vec<FinishedBatch>, PipelineError> {
        if self.purges.is_empty() {
            return Ok(batches);
        }
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let (kept, removed) = self.purges.filter_batch(b.tenant_id, &b.batch, &self.name)?;
            self.stats.purged_rows_dropped += removed as u64;
            if let Some(batch) = kept {
                out.push(FinishedBatch { batch, ..b });
            }
        }
        Ok(out)
    }

    /// Encodes and writes a flush's batches to `paths`, checking the flush's deadline before
    /// each write.
    async fn write_batches(
        &mut self,
        batches: Vec<FinishedBatch>,
        paths: Vec<object_store::path::Path>,
    ) -> Result<(), PipelineError> {
        let progress = &self.progress;
        let on_pool = self.options.encode_parallelism > 0;
        let jobs = batches.into_iter().zip(paths).map(|(b, path)| {
            let lake = self.lake.clone();
            async move {
                let rows = b.batch.num_rows();
                let entity_type = b.entity_type.clone();
                let p = path.to_string();
                let bytes = if on_pool {
                    tokio::task::spawn_blocking(move || encode(&p, &[b.batch], vec![]))
                        .await
                        .map_err(|e| PipelineError::Task(e.to_string()))??
                } else {
                    encode(&p, &[b.batch], vec![])?
                };
                let len = bytes.len();
                progress.check_deadline()?;
                lake.put(&path, bytes).await?;
                Ok::<_, PipelineError>(WrittenObject { entity_type, rows, bytes: len })
            }
        });
        let mut results = futures::stream::iter(jobs).buffer_unordered(self.options.encode_parallelism.max(1));
        while let Some(r) = results.next().await {
            let w = r?;
            self.stats.rows_written += w.rows as u64;
            self.stats.files_written += 1;
            self.stats.bytes_written += w.bytes as u64;
            if self.options.detailed_metrics {
                self.written.push(w);
            }
        }
        Ok(())
    }
}

/// Saves what a stream knows of the catalog into the lake's, which all the lake's streams share:
/// merged into it ([`Catalog::merge`]) with a compare-and-swap, never written over it, so that a
/// stream behind the others does not take back attributes they have learnt and moved past.
async fn save_catalog(lake: &Lake, catalog: &Catalog) -> Result<(), PipelineError> {
    let path = Lake::meta_path("catalog.json");
    let mut tries = 0;
    loop {
        let (bytes, version) = lake.get_versioned(&path).await?;
        let mut merged = match bytes {
            Some(b) => Catalog::from_json(&b)?,
            None => Catalog::default(),
        };
        merged.merge(catalog);
        match lake.put_if(&path, Bytes::from(merged.to_json()), &version).await {
            Ok(_) => return Ok(()),
            // Another stream saved meanwhile: merge into what it wrote. Each conflict is another
            // stream's progress, so a few tries do.
            Err(SinkError::Conflict { .. }) if tries < 16 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A flush's object names: `<file>.parquet`; a second batch of the same entity type, tenant and
/// date (an attribute changed type within the flush) `<file>.1.parquet`, …
fn part_paths(batches: &[FinishedBatch], file: &str) -> Vec<object_store::path::Path> {
    batches
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let same =
                |o: &FinishedBatch| o.entity_type == b.entity_type && o.tenant_id == b.tenant_id && o.date == b.date;
            let part = batches[..i].iter().filter(|o| same(o)).count();
            let name = if part == 0 { format!("{file}.parquet") } else { format!("{file}.{part}.parquet") };
            Lake::changes_path(&b.entity_type, b.tenant_id, &b.date, &name)
        })
        .collect()
}

/// Splits batches into the rows whose `_seq` passes `now` and the rest.
fn split_rows(
    batches: Vec<FinishedBatch>,
    now: impl Fn(i64) -> bool,
) -> Result<(Vec<FinishedBatch>, Vec<FinishedBatch>), PipelineError> {
    use arrow::array::{AsArray, BooleanArray};
    let (mut write, mut keep) = (Vec::new(), Vec::new());
    for b in batches {
        let Some(seqs) = b
            .batch
            .column_by_name(crate::columns::SEQ)
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
        else {
            write.push(b);
            continue;
        };
        if seqs.values().iter().all(|s| now(*s)) {
            write.push(b);
            continue;
        }
        let mask: BooleanArray = seqs.values().iter().map(|s| Some(now(*s))).collect();
        let not: BooleanArray = seqs.values().iter().map(|s| Some(!now(*s))).collect();
        let err = |e: arrow::error::ArrowError| PipelineError::Task(format!("splitting rows: {e}"));
        let now_rows = arrow::compute::filter_record_batch(&b.batch, &mask).map_err(err)?;
        let later_rows = arrow::compute::filter_record_batch(&b.batch, &not).map_err(err)?;
        if now_rows.num_rows() > 0 {
            write.push(FinishedBatch { batch: now_rows, ..b.clone() });
        }
        keep.push(FinishedBatch { batch: later_rows, ..b });
    }
    Ok((write, keep))
}

fn max_seq(batch: &arrow::record_batch::RecordBatch) -> i64 {
    use arrow::array::AsArray;
    batch
        .column_by_name(crate::columns::SEQ)
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
        .and_then(arrow::compute::max)
        .unwrap_or(0)
}
