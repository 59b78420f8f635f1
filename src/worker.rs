//! `eavlake run --source kafka`: the long-running worker. One member of a Kafka consumer group;
//! each assigned partition is a [`StreamPipeline`] of its own.
//!
//! How exactly-once holds (see `progress` for the protocol of one flush):
//! - On assignment, the partition's pipeline takes the stream over in the lake and the consumer
//!   starts at the lake's record + 1, whatever Kafka's committed offset says.
//! - A partition's Kafka offset is committed only after its flush is recorded in the lake.
//! - On revocation the partition is flushed and committed before it is given up. A worker that
//!   lost a partition without knowing (a zombie) is fenced by the lake at its next flush.
//!
//! Threads: the consumer is polled on one blocking thread, which runs decoding and pivoting and
//! waits for flushes (Parquet encoding runs on the runtime's blocking pool, so the second core
//! works during a flush). Waiting for a flush is the backpressure: nothing is fetched meanwhile,
//! and the memory held is bounded by `batch.max_buffered_bytes` over all partitions.

use crate::catalog::Catalog;
use crate::config::{Config, KafkaConfig};
use crate::dead_letter::topic::DeadLetterTopic;
use crate::dead_letter::DeadLetterTarget;
use crate::decode::registry::Failure;
use crate::decode::{Decoder, Event, RowChange};
use crate::lag::{Standing, Standings};
use crate::metrics::http::Health;
use crate::metrics::prom::{PartitionLabels, WorkerMetrics};
use crate::metrics::{LatencyHistogram, LatencySummary, RunStats};
use crate::pipeline::{PipelineError, PipelineOptions, StreamPipeline};
use crate::position::KafkaCoords;
use crate::sink::Lake;
use crate::source::kafka::{self, CatalogReader};
use crate::source::Record;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a worker did until it stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerReport {
    pub stats: RunStats,
    pub assignments: u64,
    /// Seconds from start to the first partition assigned (joining the group).
    pub first_assignment_s: Option<f64>,
    pub revocations: u64,
    /// Partitions given up because another writer took them over in the lake.
    pub fenced: u64,
    pub catalog_records: u64,
    /// Time the consumer thread spent waiting for flushes.
    pub flush_seconds: f64,
    /// From each record's Kafka timestamp to the end of the flush that made it durable.
    pub latency: LatencySummary,
    pub seconds: f64,
}

/// Asks a worker to stop: the first request finishes cleanly (flush, record, commit, leave the
/// group).
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// SIGTERM or SIGINT asks for a clean stop; a second one exits at once (code 130). Nothing is
    /// lost either way: what was not recorded in the lake is read again by the next owner.
    pub fn on_signals(&self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                seen += 1;
                if seen == 1 {
                    tracing::info!("stop requested: flushing, recording progress, committing, leaving the group");
                    me.request();
                } else {
                    tracing::warn!("second stop signal: exiting now; unrecorded work is redone by the next owner");
                    std::process::exit(130);
                }
            }
        });
        Ok(())
    }
}

/// One assigned partition.
struct Part {
    pipeline: StreamPipeline,
    topic: Arc<str>,
    partition: i32,
    /// Next offset expected; anything below was processed already.
    next: i64,
    /// No record at or past `next` since the partition was (re)assigned or sought.
    resuming: bool,
    /// Kafka is delivering records below `next` (warned about once per episode).
    went_back: bool,
    /// When the oldest record not yet flushed arrived.
    oldest: Option<Instant>,
    /// (offset, Kafka timestamp in ms) of records not yet durable, for the latency histogram.
    stamps: std::collections::VecDeque<(i64, i64)>,
    /// The pipeline's counts as last published to the metrics.
    published: RunStats,
    labels: PartitionLabels,
}

/// State shared by the poll loop and the rebalance callback (both run on the poll thread).
struct Shared {
    lake: Lake,
    options: PipelineOptions,
    dead_letters: DeadLetterTarget,
    dead_letter_template: String,
    runtime: tokio::runtime::Handle,
    started: Instant,
    catalog: Mutex<Catalog>,
    parts: Mutex<BTreeMap<(String, i32), Part>>,
    report: Mutex<WorkerReport>,
    latency: Mutex<LatencyHistogram>,
    fatal: Mutex<Option<anyhow::Error>>,
    metrics: Arc<WorkerMetrics>,
    health: Arc<Health>,
    standings: Standings,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere poisons nothing we cannot still read.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct WorkerContext(Arc<Shared>);

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut start = TopicPartitionList::new();
                for e in tpl.elements() {
                    if kafka::is_dead_letter_topic(&self.0.dead_letter_template, e.topic()) {
                        // Matched by a topic pattern: never read (its records are ours).
                        tracing::info!(topic = e.topic(), "not consuming a dead-letter topic");
                        continue;
                    }
                    match self.0.open_part(e.topic(), e.partition()) {
                        Ok(next) => {
                            let _ = start.add_partition_offset(e.topic(), e.partition(), Offset::Offset(next));
                        }
                        Err(err) => self.0.fail(err.context(format!("taking over {}[{}]", e.topic(), e.partition()))),
                    }
                }
                let r = if cooperative { consumer.incremental_assign(&start) } else { consumer.assign(&start) };
                if let Err(e) = r {
                    self.0.fail(anyhow::Error::new(e).context("assigning partitions"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for e in tpl.elements() {
                    self.0.close_part(consumer, e.topic(), e.partition());
                }
                let r = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "unassigning partitions");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                if !cooperative {
                    let _ = consumer.unassign();
                }
            }
        }
    }
}

impl Shared {
    fn fail(&self, e: anyhow::Error) {
        tracing::error!(error = %format!("{e:#}"), "worker stops");
        lock(&self.fatal).get_or_insert(e);
    }

    /// Takes a partition over in the lake; returns the offset to start from.
    fn open_part(&self, topic: &str, partition: i32) -> anyhow::Result<i64> {
        let stream = kafka::stream_of(topic, partition);
        let boot = lock(&self.catalog).clone();
        let pipeline = self.runtime.block_on(StreamPipeline::open_with(
            self.lake.clone(),
            stream.clone(),
            self.options.clone(),
            Some(boot),
            self.dead_letters.clone(),
        ))?;
        let next = pipeline.resume_seq();
        tracing::info!(stream = %stream, from = next, "partition assigned");
        let mut report = lock(&self.report);
        report.assignments += 1;
        report.first_assignment_s.get_or_insert(self.started.elapsed().as_secs_f64());
        drop(report);
        let standing = Standing {
            durable_next: next,
            durable_source_ts_us: pipeline.durable_source_ts_us(),
            oldest_pending_ms: None,
            assigned_ms: crate::progress::now_ms(),
        };
        lock(&self.standings).insert((topic.to_string(), partition), standing);
        let labels = PartitionLabels { topic: topic.to_string(), partition };
        let part = Part {
            pipeline,
            topic: topic.into(),
            partition,
            next,
            resuming: true,
            went_back: false,
            oldest: None,
            stamps: Default::default(),
            published: RunStats::default(),
            labels,
        };
        let mut parts = lock(&self.parts);
        parts.insert((topic.to_string(), partition), part);
        self.metrics.rebalance("assigned", parts.len());
        Ok(next)
    }

    /// Flushes, records and commits a partition, then forgets it.
    fn close_part(&self, consumer: &BaseConsumer<WorkerContext>, topic: &str, partition: i32) {
        let part = lock(&self.parts).remove(&(topic.to_string(), partition));
        if let Some(mut part) = part {
            if let Err(e) = self.flush(consumer, &mut part, false) {
                // Fenced or late: the next owner redoes it.
                if !e.is_fenced() && !e.is_late() {
                    self.fail(anyhow::Error::new(e).context(format!("flushing {topic}[{partition}] on revocation")));
                }
            }
            self.forget(&mut part);
            lock(&self.report).revocations += 1;
            self.metrics.rebalance("revoked", lock(&self.parts).len());
            tracing::info!(topic, partition, durable = part.pipeline.resume_seq() - 1, "partition given up");
        }
    }

    /// Publishes a partition's last counts and drops its lag series: it leaves this worker.
    fn forget(&self, part: &mut Part) {
        self.metrics.publish_stats(&part.pipeline.stats, &mut part.published);
        lock(&self.report).stats.add(&part.pipeline.stats);
        lock(&self.standings).remove(&(part.topic.to_string(), part.partition));
        self.metrics.forget_partition(&part.labels);
    }

    /// Flushes one partition and commits its offset; `seal` closes its open transaction first.
    fn flush(&self, consumer: &BaseConsumer<WorkerContext>, part: &mut Part, seal: bool) -> Result<(), PipelineError> {
        self.flush_many(consumer, vec![(part, seal)]).pop().unwrap_or(Ok(()))
    }

    /// Flushes partitions side by side (their objects are encoded and written concurrently),
    /// then records latencies and commits each one that succeeded.
    fn flush_many(
        &self,
        consumer: &BaseConsumer<WorkerContext>,
        mut parts: Vec<(&mut Part, bool)>,
    ) -> Vec<Result<(), PipelineError>> {
        for (part, seal) in parts.iter_mut() {
            if *seal {
                part.pipeline.seal();
            }
        }
        self.metrics.set_in_flight(parts.len() as i64);
        let results =
            self.runtime.block_on(futures::future::join_all(parts.iter_mut().map(|(p, _)| p.pipeline.flush())));
        self.metrics.set_in_flight(0);
        let now = crate::progress::now_ms();
        let mut tpl = TopicPartitionList::new();
        for ((part, _), result) in parts.iter_mut().zip(&results) {
            if result.is_err() {
                continue;
            }
            let durable = part.pipeline.resume_seq() - 1;
            let mut latency = lock(&self.latency);
            while part.stamps.front().is_some_and(|(offset, _)| *offset <= durable) {
                if let Some((_, ts)) = part.stamps.pop_front() {
                    latency.record(now - ts);
                }
            }
            drop(latency);
            self.published_flush(part, now);
            part.oldest = if part.pipeline.is_idle() { None } else { Some(Instant::now()) };
            let _ = tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(durable + 1));
        }
        if results.iter().any(Result::is_ok) {
            self.health.flushed();
            self.metrics.flushed_at(now as f64 / 1000.0);
        }
        // The lake holds the truth; a failed commit only delays what monitoring sees.
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "offset commit");
            }
        }
        results
    }

    /// Publishes what a successful flush of `part` made durable at `now_ms`: objects, latencies
    /// from the source commit, the partition's standing.
    fn published_flush(&self, part: &mut Part, now_ms: i64) {
        self.metrics.flush_outcome("ok");
        for w in part.pipeline.take_written() {
            self.metrics.file_written(&w.entity_type, w.rows, w.bytes);
        }
        let metrics = &self.metrics;
        let labels = &part.labels;
        part.pipeline.take_durable_commit_times(|commit_us, n| {
            metrics.latency(labels, (now_ms * 1000 - commit_us).max(0) as f64 / 1e6, n);
        });
        if let Some(s) = lock(&self.standings).get_mut(&(part.topic.to_string(), part.partition)) {
            s.durable_next = part.pipeline.resume_seq();
            s.durable_source_ts_us = part.pipeline.durable_source_ts_us();
            s.oldest_pending_ms = part.stamps.front().map(|(_, ts)| *ts);
        }
    }

    /// Publishes the counts of every partition and what `/readyz` judges by.
    fn publish_round(&self, parts: &mut BTreeMap<(String, i32), Part>, buffered: usize) {
        let mut standings = lock(&self.standings);
        for part in parts.values_mut() {
            self.metrics.publish_stats(&part.pipeline.stats, &mut part.published);
            if let Some(s) = standings.get_mut(&(part.topic.to_string(), part.partition)) {
                s.oldest_pending_ms = part.stamps.front().map(|(_, ts)| *ts);
            }
        }
        drop(standings);
        self.metrics.set_buffered(buffered);
        self.metrics.set_catalog_attributes(lock(&self.catalog).len());
        self.health.polled(parts.len(), buffered);
    }

    /// Fetches an Avro record's writer schema if it is new. While the registry cannot answer,
    /// waits (the partition's records wait with it: a registry outage must not turn records into
    /// dead letters); `false` when a stop was asked for meanwhile. An id the registry refuses
    /// makes the record a dead letter, as it should.
    fn schema_ready(&self, value: Option<&[u8]>, shutdown: &Shutdown) -> bool {
        let Some(avro) = &self.options.avro else { return true };
        let Some(id) = avro.missing_schema(value) else { return true };
        let mut delay = Duration::from_millis(200);
        loop {
            match self.runtime.block_on(avro.prepare(id)) {
                Ok(()) => return true,
                Err(Failure::Permanent(e)) => {
                    tracing::warn!(schema_id = id, error = %e, "writer schema refused: its records are dead letters");
                    return true;
                }
                Err(Failure::Transient(e)) => {
                    tracing::warn!(schema_id = id, error = %e, retry_in_ms = delay.as_millis() as u64, "schema registry");
                    if shutdown.requested() {
                        return false;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Applies an attributes record from the catalog topic to the shared catalog and every
    /// partition's.
    fn apply_catalog_record(&self, decoder: &mut Decoder, value: Option<&[u8]>, shutdown: &Shutdown) {
        if !self.schema_ready(value, shutdown) {
            return;
        }
        let Ok(Event::Change { op, source, row: RowChange::Attribute { before, after }, .. }) = decoder.decode(value)
        else {
            return;
        };
        let at = Some(source.position);
        lock(&self.catalog).apply(op, before.as_ref(), after.as_ref(), at);
        for part in lock(&self.parts).values_mut() {
            part.pipeline.apply_catalog_change(op, before.as_ref(), after.as_ref(), at);
        }
        lock(&self.report).catalog_records += 1;
    }
}

fn check_topics(config: &Config) -> anyhow::Result<()> {
    if config.kafka.topics.is_empty() && config.kafka.topic_pattern.is_none() {
        anyhow::bail!("config key `kafka.topics`: give the topics to consume (or kafka.topic_pattern)");
    }
    Ok(())
}

/// Runs the worker until `shutdown` is requested or a fatal error.
pub async fn run_kafka(config: &Config, shutdown: Shutdown) -> anyhow::Result<WorkerReport> {
    // Before the lake is opened (a local lake's folder would be created).
    check_topics(config)?;
    let lake = Lake::open(&config.lake.url, &config.s3_options())?;
    run_kafka_on(config, lake, shutdown).await
}

/// [`run_kafka`] on a lake opened by the caller.
pub async fn run_kafka_on(config: &Config, lake: Lake, shutdown: Shutdown) -> anyhow::Result<WorkerReport> {
    let started = Instant::now();
    check_topics(config)?;
    lake.ensure_settings(config.lake.range_size, config.lake.decimal_scale).await?;
    let timeout = Duration::from_millis(config.kafka.request_timeout_ms);
    let dlq = DeadLetterTopic::new(&kafka::client_config(&config.kafka), &config.kafka.dead_letter_topic, timeout)?;
    let mut catalog = match lake.get(&Lake::meta_path("catalog.json")).await? {
        Some(bytes) => Catalog::from_json(&bytes)?,
        None => Catalog::default(),
    };
    if let Some(url) = &config.catalog.bootstrap_postgres_url {
        let boot = Catalog::bootstrap_from_postgres(url.expose(), &config.tables.attributes)
            .await
            .context("bootstrapping the catalog")?;
        for attr in boot.all() {
            catalog.upsert(attr.clone());
        }
    }
    let metrics = Arc::new(WorkerMetrics::new(&crate::dead_letter::REASONS));
    // Not ready after this long without a poll round, or without a flush while rows wait: a
    // flush may take its deadline, and a record may wait a flush age for it.
    let stale_after = 2 * config.batch.max_age_ms + config.batch.flush_deadline_ms;
    let health = Arc::new(Health::new(stale_after.max(30_000) as i64));
    if !config.metrics.listen.is_empty() {
        crate::metrics::http::serve(&config.metrics.listen, metrics.clone(), health.clone()).await?;
    }
    let standings = Standings::default();
    let lag_task = tokio::spawn(crate::lag::keep_lag_metrics(
        crate::lag::Watermarks::new(&config.kafka, timeout.min(Duration::from_millis(config.metrics.lag_interval_ms)))?,
        standings.clone(),
        metrics.clone(),
        Duration::from_millis(config.metrics.lag_interval_ms),
    ));
    let reconcile_task = tokio::spawn(crate::lag::keep_reconcile_metrics(
        lake.clone(),
        metrics.clone(),
        Duration::from_millis(config.metrics.lag_interval_ms),
    ));
    let avro = match (&config.decode.format, &config.decode.schema_registry_url) {
        (crate::config::Format::Avro, Some(url)) => {
            let registry = Arc::new(crate::decode::registry::SchemaRegistry::new(url.expose())?);
            let p = config.pipeline_options();
            Some(Arc::new(crate::decode::avro::AvroDecoder::new(registry, p.decode, p.tables)))
        }
        _ => None,
    };
    let options = PipelineOptions { detailed_metrics: true, avro, ..config.pipeline_options() };
    let shared = Arc::new(Shared {
        lake,
        options,
        dead_letters: DeadLetterTarget::Topic(Arc::new(dlq)),
        dead_letter_template: config.kafka.dead_letter_topic.clone(),
        runtime: tokio::runtime::Handle::current(),
        started,
        catalog: Mutex::new(catalog),
        parts: Mutex::new(BTreeMap::new()),
        report: Mutex::new(WorkerReport::default()),
        latency: Mutex::new(LatencyHistogram::default()),
        fatal: Mutex::new(None),
        metrics,
        health,
        standings,
    });
    let config = config.clone();
    let s = shared.clone();
    tokio::task::spawn_blocking(move || poll_loop(&s, &config, &shutdown))
        .await
        .context("the consumer thread panicked")??;
    lag_task.abort();
    reconcile_task.abort();
    let mut report = std::mem::take(&mut *lock(&shared.report));
    report.seconds = started.elapsed().as_secs_f64();
    report.latency = lock(&shared.latency).summary();
    if let Some(e) = lock(&shared.fatal).take() {
        return Err(e);
    }
    Ok(report)
}

/// A consumer group member subscribed to the configured topics.
fn subscribe(shared: &Arc<Shared>, k: &KafkaConfig) -> anyhow::Result<BaseConsumer<WorkerContext>> {
    let consumer: BaseConsumer<WorkerContext> = kafka::group_config(k)
        .create_with_context(WorkerContext(shared.clone()))
        .context("creating the Kafka consumer")?;
    let topics = kafka::subscription(k);
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>()).context("subscribing")?;
    tracing::info!(group = %k.group_id, topics = ?topics, "consuming");
    Ok(consumer)
}

/// When a consumer that failed fatally may be replaced. Each broker restart (or coordinator
/// move) can fence the static member once, and restarts may come less than a minute apart (a
/// rolling restart); a second failure within a minute with the brokers up all along is likely
/// another worker with the same `group.instance.id`, which replacing would only make worse.
#[derive(Debug, Default)]
struct Replacements {
    last: Option<Instant>,
    /// The consumer lost its brokers or its group's coordinator since `last`.
    outage: bool,
}

impl Replacements {
    /// Notes a non-fatal consumer error.
    fn saw(&mut self, e: &KafkaError) {
        self.outage |= kafka::is_transient(e);
    }

    /// Whether a consumer that failed fatally at `now` may be replaced (counted as replaced if
    /// so), or the worker should stop.
    fn may_replace(&mut self, now: Instant) -> bool {
        let recent = self.last.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60));
        if recent && !self.outage {
            return false;
        }
        *self = Replacements { last: Some(now), outage: false };
        true
    }
}

fn poll_loop(shared: &Arc<Shared>, config: &Config, shutdown: &Shutdown) -> anyhow::Result<()> {
    let k = &config.kafka;
    let timeout = Duration::from_millis(k.request_timeout_ms);
    let o = &shared.options;
    let mut decoder = Decoder::new(o.decode, o.tables.clone(), o.avro.as_ref());
    // The catalog first, to its end: values of attributes created before now find their type.
    let catalog = match &k.catalog_topic {
        Some(topic) => CatalogReader::open(k, topic, timeout)?,
        None => None,
    };
    if let Some(c) = &catalog {
        let n = c.catch_up(timeout, |v| shared.apply_catalog_record(&mut decoder, v, shutdown))?;
        tracing::info!(records = n, attributes = lock(&shared.catalog).len(), "catalog topic read");
    }
    let mut consumer = subscribe(shared, k)?;
    let mut replacements = Replacements::default();

    let max_age = Duration::from_millis(config.batch.max_age_ms);
    let max_age_ms = config.batch.max_age_ms as i64;
    use crate::progress::now_ms;
    let mut flush_estimate = Duration::from_millis(50);
    // Data partitions paused while changes wait for a catalog that may be behind.
    let mut held = false;
    while !shutdown.requested() && lock(&shared.fatal).is_none() {
        if let Some(c) = &catalog {
            c.poll_ready(|v| shared.apply_catalog_record(&mut decoder, v, shutdown))?;
        }
        // A change waits for its attribute, and the catalog reader lost its broker and is not
        // seen read to its end since (it may reconnect after this consumer): the data waits for
        // it, rather than records going by until the change's wait in records is over. (Seen
        // after a broker restart: the backlog that Debezium published once the broker was back
        // took values of attributes created meanwhile past that wait.) The wait in time still
        // runs, and bounds the hold: a catalog never seen at its end (control records of a
        // transactional producer at its end, say) holds the data no longer than that.
        let waiting = lock(&shared.parts).values().any(|p| p.pipeline.waits_for_catalog());
        let hold = waiting && catalog.as_ref().is_some_and(|c| c.may_be_behind(Duration::from_millis(500)));
        if hold || held {
            // The partitions this worker reads (a fenced one stays paused), again each round:
            // those assigned meanwhile start unpaused.
            let owned: Vec<(Arc<str>, i32, i64)> =
                lock(&shared.parts).values().map(|p| (p.topic.clone(), p.partition, p.next)).collect();
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, _) in &owned {
                let _ = tpl.add_partition(topic, *partition);
            }
            // Not fatal: at worst the values wait in records, as without a hold.
            if let Err(e) = if hold { consumer.pause(&tpl) } else { consumer.resume(&tpl) } {
                tracing::warn!(error = %e, hold, "pausing or resuming the data partitions");
            }
            if !hold {
                // Where each was: records fetched before the pause were dropped by librdkafka. A
                // record past `next` after this is reported (`resuming`), one before it skipped.
                for (topic, partition, next) in owned {
                    if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(next), timeout) {
                        tracing::warn!(%topic, partition, next, error = %e, "seeking a resumed partition");
                    }
                    if let Some(p) = lock(&shared.parts).get_mut(&(topic.to_string(), partition)) {
                        p.resuming = true;
                    }
                }
            }
            if hold != held {
                tracing::info!(held = hold, "data partitions held while the catalog may be behind");
            }
            held = hold;
        }
        // A burst of records, then the flush decisions (the clock is read once per burst).
        let mut wait = Duration::from_millis(20);
        let mut fatal = None;
        for _ in 0..1024 {
            let Some(m) = consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            match m {
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                    fatal = Some(e);
                    break;
                }
                Err(e) => {
                    replacements.saw(&e);
                    tracing::warn!(error = %e, "consumer")
                }
                Ok(m) => {
                    if !shared.schema_ready(m.payload(), shutdown) {
                        // Stopping: this record was not processed; the next owner reads it.
                        break;
                    }
                    let topic = m.topic();
                    if let Some(part) = lock(&shared.parts).get_mut(&(topic.to_string(), m.partition())) {
                        if m.offset() < part.next {
                            // Never what was asked for (an assignment or seek starts at `next`):
                            // librdkafka went back by itself, after an offset reset or a log
                            // truncation it detected, or the topic was recreated under its name.
                            // Records below `next` are not read again (the lake holds those read
                            // before); here they may be other records.
                            if !std::mem::replace(&mut part.went_back, true) {
                                shared.metrics.offset_jump("went_back");
                                tracing::warn!(
                                    topic,
                                    partition = m.partition(),
                                    expected = part.next,
                                    got = m.offset(),
                                    "Kafka went back below the lake's position"
                                );
                            }
                        } else {
                            part.went_back = false;
                            if std::mem::take(&mut part.resuming) && m.offset() > part.next {
                                // Kafka gave a later offset than the one asked for. Benign for
                                // transaction markers or records compacted away; otherwise the
                                // records in between were deleted (retention) before the lake got
                                // them, or the consumer did not start where it was told.
                                shared.metrics.offset_jump("resumed_past");
                                tracing::warn!(
                                    topic,
                                    partition = m.partition(),
                                    expected = part.next,
                                    got = m.offset(),
                                    "partition resumed past the lake's record"
                                );
                            }
                            let coords =
                                KafkaCoords { topic: part.topic.clone(), partition: m.partition(), offset: m.offset() };
                            let rec = Record {
                                key: m.key(),
                                value: m.payload(),
                                text: None,
                                seq: m.offset(),
                                kafka: Some(&coords),
                                oversized: None,
                            };
                            part.pipeline.process(&rec);
                            part.next = m.offset() + 1;
                            if let Some(ts) = m.timestamp().to_millis() {
                                part.stamps.push_back((m.offset(), ts));
                            }
                            if part.oldest.is_none() {
                                // Age counts from the record's Kafka timestamp (what latency is
                                // measured from), but a backlog's old records count as half a
                                // flush age old, not older: they must not force a flush each.
                                let behind = m.timestamp().to_millis().map_or(0, |ts| now_ms() - ts);
                                let behind = Duration::from_millis(behind.clamp(0, max_age_ms / 2) as u64);
                                part.oldest = Some(Instant::now().checked_sub(behind).unwrap_or_else(Instant::now));
                            }
                        }
                    }
                }
            }
        }
        // After a fatal error the consumer neither fetches nor rejoins the group: polling it
        // would stall the worker for good. Seen after a broker outage longer than the session
        // timeout with static membership: librdkafka reset its member id, then sent the commits
        // it had deferred with the empty id, and the coordinator answered FENCED_INSTANCE_ID.
        // A new consumer joins again as the same static member; partitions resume from the lake.
        if let Some(e) = fatal {
            if !replacements.may_replace(Instant::now()) {
                shared.fail(anyhow::Error::new(e).context("the Kafka consumer failed again after being replaced"));
                break;
            }
            tracing::error!(error = %e, "Kafka consumer failed: replacing it");
            let keys: Vec<(String, i32)> = lock(&shared.parts).keys().cloned().collect();
            for (topic, partition) in keys {
                shared.close_part(&consumer, &topic, partition);
            }
            drop(consumer);
            consumer = subscribe(shared, k)?;
            held = false;
            continue;
        }
        // Flushes due: by rows or bytes, by age (early by what flushes take; partitions half way
        // there go along, so that flushes come together), by total memory.
        let mut parts = lock(&shared.parts);
        let now = Instant::now();
        // A flush is started so that it ends within the age: early by one and a half times what
        // flushes took lately, and by a poll's wait.
        let margin = flush_estimate * 3 / 2 + Duration::from_millis(20);
        let age = |p: &Part| p.oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t) + margin);
        let any_aged = parts.values().any(|p| age(p) >= max_age);
        let mut total = 0usize;
        let mut due: Vec<((String, i32), bool)> = Vec::new();
        for (key, part) in parts.iter_mut() {
            part.pipeline.tick();
            total += part.pipeline.buffered_bytes();
            let aged = age(part) >= max_age || (any_aged && age(part) >= max_age / 2);
            if aged || part.pipeline.should_flush() {
                due.push((key.clone(), aged));
            }
        }
        shared.publish_round(&mut parts, total);
        if due.is_empty() && total > config.batch.max_buffered_bytes {
            if let Some((key, _)) = parts.iter().max_by_key(|(_, p)| p.pipeline.buffered_bytes()) {
                due.push((key.clone(), true));
            }
        }
        if due.is_empty() {
            continue;
        }
        let t = Instant::now();
        let seal: BTreeMap<(String, i32), bool> = due.into_iter().collect();
        // Each due partition, and whether its open transaction is sealed first.
        let (keys, flushing): (Vec<_>, Vec<(&mut Part, bool)>) =
            parts.iter_mut().filter_map(|(key, part)| seal.get(key).map(|s| (key.clone(), (part, *s)))).unzip();
        let results = shared.flush_many(&consumer, flushing);
        lock(&shared.report).flush_seconds += t.elapsed().as_secs_f64();
        shared.metrics.flush_round(t.elapsed().as_secs_f64());
        flush_estimate = (flush_estimate * 4 + t.elapsed()) / 5;
        let mut redo = Vec::new();
        for (key, result) in keys.into_iter().zip(results) {
            match result {
                Ok(()) => {}
                Err(e) if e.is_late() => {
                    tracing::warn!(topic = %key.0, partition = key.1, error = %e, "flush too slow: redoing it");
                    shared.metrics.flush_outcome("late");
                    if let Some(mut p) = parts.remove(&key) {
                        shared.forget(&mut p);
                    }
                    redo.push(key);
                }
                Err(e) if e.is_fenced() => {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "partition fenced: giving it up");
                    shared.metrics.flush_outcome("fenced");
                    if let Some(mut p) = parts.remove(&key) {
                        shared.forget(&mut p);
                    }
                    lock(&shared.report).fenced += 1;
                    let mut tpl = TopicPartitionList::new();
                    let _ = tpl.add_partition(&key.0, key.1);
                    let _ = consumer.pause(&tpl);
                }
                Err(e) => {
                    shared.metrics.flush_outcome("failed");
                    shared.fail(anyhow::Error::new(e).context(format!("flushing {}[{}]", key.0, key.1)));
                    break;
                }
            }
        }
        drop(parts);
        // A late flush is redone by taking the partition over again: the claim waits out the
        // deadline and removes what the flush wrote; reading resumes at the lake's record.
        for (topic, partition) in redo {
            match shared.open_part(&topic, partition) {
                Ok(next) => {
                    if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(next), timeout) {
                        shared.fail(anyhow::Error::new(e).context(format!("seeking {topic}[{partition}] to {next}")));
                    }
                }
                Err(e) => shared.fail(e.context(format!("taking {topic}[{partition}] over again"))),
            }
        }
    }
    if lock(&shared.fatal).is_some() {
        // Leave without flushing: the lake's records stand, the next owner redoes the rest.
        return Ok(());
    }
    // Clean stop: flush and commit every partition, then leave the group.
    let keys: Vec<(String, i32)> = lock(&shared.parts).keys().cloned().collect();
    for (topic, partition) in keys {
        shared.close_part(&consumer, &topic, partition);
    }
    consumer.unsubscribe();
    drop(consumer);
    tracing::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn a_failed_consumer_is_replaced_unless_it_fails_again_soon_with_the_brokers_up() {
        let t0 = Instant::now();
        let mut r = Replacements::default();
        assert!(r.may_replace(t0), "the first failure");
        // Again 20 s later after an outage (a rolling restart): replaced again.
        r.saw(&KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown));
        assert!(r.may_replace(t0 + Duration::from_secs(20)));
        // Again 20 s after that, the brokers up all along (an error that is no outage): stop.
        r.saw(&KafkaError::MessageConsumption(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!r.may_replace(t0 + Duration::from_secs(40)));
        // A minute after the last replacement, whatever happened: replaced.
        assert!(r.may_replace(t0 + Duration::from_secs(81)));
    }
}
