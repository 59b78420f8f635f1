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
use crate::config::Config;
use crate::dead_letter::topic::DeadLetterTopic;
use crate::dead_letter::DeadLetterTarget;
use crate::decode::json::JsonDecoder;
use crate::decode::{Event, RowChange};
use crate::metrics::{LatencyHistogram, LatencySummary, RunStats};
use crate::pipeline::{PipelineError, PipelineOptions, StreamPipeline};
use crate::position::KafkaCoords;
use crate::sink::Lake;
use crate::source::kafka::{self, CatalogReader};
use crate::source::Record;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
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
    pub revocations: u64,
    /// Partitions given up because another writer took them over in the lake.
    pub fenced: u64,
    pub catalog_records: u64,
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
    /// When the oldest record not yet flushed arrived.
    oldest: Option<Instant>,
    /// (offset, Kafka timestamp in ms) of records not yet durable, for the latency histogram.
    stamps: std::collections::VecDeque<(i64, i64)>,
}

/// State shared by the poll loop and the rebalance callback (both run on the poll thread).
struct Shared {
    lake: Lake,
    options: PipelineOptions,
    dead_letters: DeadLetterTarget,
    runtime: tokio::runtime::Handle,
    catalog: Mutex<Catalog>,
    parts: Mutex<BTreeMap<(String, i32), Part>>,
    report: Mutex<WorkerReport>,
    latency: Mutex<LatencyHistogram>,
    fatal: Mutex<Option<anyhow::Error>>,
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
        lock(&self.report).assignments += 1;
        lock(&self.parts).insert(
            (topic.to_string(), partition),
            Part { pipeline, topic: topic.into(), partition, next, oldest: None, stamps: Default::default() },
        );
        Ok(next)
    }

    /// Flushes, records and commits a partition, then forgets it.
    fn close_part(&self, consumer: &BaseConsumer<WorkerContext>, topic: &str, partition: i32) {
        let part = lock(&self.parts).remove(&(topic.to_string(), partition));
        if let Some(mut part) = part {
            if let Err(e) = self.flush(consumer, &mut part, false) {
                if !e.is_fenced() {
                    self.fail(anyhow::Error::new(e).context(format!("flushing {topic}[{partition}] on revocation")));
                }
            }
            let mut report = lock(&self.report);
            report.stats.add(&part.pipeline.stats);
            report.revocations += 1;
            tracing::info!(topic, partition, durable = part.pipeline.resume_seq() - 1, "partition given up");
        }
    }

    /// Flushes one partition and commits its offset; `seal` closes its open transaction first.
    fn flush(&self, consumer: &BaseConsumer<WorkerContext>, part: &mut Part, seal: bool) -> Result<(), PipelineError> {
        if seal {
            part.pipeline.seal();
        }
        self.runtime.block_on(part.pipeline.flush())?;
        let durable = part.pipeline.resume_seq() - 1;
        let now = crate::progress::now_ms();
        let mut latency = lock(&self.latency);
        while part.stamps.front().is_some_and(|(offset, _)| *offset <= durable) {
            if let Some((_, ts)) = part.stamps.pop_front() {
                latency.record(now - ts);
            }
        }
        drop(latency);
        part.oldest = if part.pipeline.is_idle() { None } else { Some(Instant::now()) };
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(part.pipeline.resume_seq()));
        // The lake holds the truth; a failed commit only delays what monitoring sees.
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit");
        }
        Ok(())
    }

    /// Applies an attributes record from the catalog topic to the shared catalog and every
    /// partition's.
    fn apply_catalog_record(&self, decoder: &mut JsonDecoder, value: Option<&[u8]>) {
        let Ok(Event::Change { op, row: RowChange::Attribute { before, after }, .. }) = decoder.decode(value) else {
            return;
        };
        lock(&self.catalog).apply(op, before.as_ref(), after.as_ref());
        for part in lock(&self.parts).values_mut() {
            part.pipeline.apply_catalog_change(op, before.as_ref(), after.as_ref());
        }
        lock(&self.report).catalog_records += 1;
    }
}

/// Runs the worker until `shutdown` is requested or a fatal error.
pub async fn run_kafka(config: &Config, shutdown: Shutdown) -> anyhow::Result<WorkerReport> {
    let started = Instant::now();
    if config.kafka.topics.is_empty() && config.kafka.topic_pattern.is_none() {
        anyhow::bail!("config key `kafka.topics`: give the topics to consume (or kafka.topic_pattern)");
    }
    let lake = Lake::open(&config.lake.url, &config.s3_options())?;
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
    let shared = Arc::new(Shared {
        lake,
        options: config.pipeline_options(),
        dead_letters: DeadLetterTarget::Topic(Arc::new(dlq)),
        runtime: tokio::runtime::Handle::current(),
        catalog: Mutex::new(catalog),
        parts: Mutex::new(BTreeMap::new()),
        report: Mutex::new(WorkerReport::default()),
        latency: Mutex::new(LatencyHistogram::default()),
        fatal: Mutex::new(None),
    });
    let config = config.clone();
    let s = shared.clone();
    tokio::task::spawn_blocking(move || poll_loop(&s, &config, &shutdown))
        .await
        .context("the consumer thread panicked")??;
    let mut report = std::mem::take(&mut *lock(&shared.report));
    report.seconds = started.elapsed().as_secs_f64();
    report.latency = lock(&shared.latency).summary();
    if let Some(e) = lock(&shared.fatal).take() {
        return Err(e);
    }
    Ok(report)
}

fn poll_loop(shared: &Arc<Shared>, config: &Config, shutdown: &Shutdown) -> anyhow::Result<()> {
    let k = &config.kafka;
    let timeout = Duration::from_millis(k.request_timeout_ms);
    let mut decoder = JsonDecoder::new(shared.options.decode, shared.options.tables.clone());
    // The catalog first, to its end: values of attributes created before now find their type.
    let catalog = match &k.catalog_topic {
        Some(topic) => CatalogReader::open(k, topic, timeout)?,
        None => None,
    };
    if let Some(c) = &catalog {
        let n = c.catch_up(timeout, |v| shared.apply_catalog_record(&mut decoder, v))?;
        tracing::info!(records = n, attributes = lock(&shared.catalog).len(), "catalog topic read");
    }
    let consumer: BaseConsumer<WorkerContext> = kafka::group_config(k)
        .create_with_context(WorkerContext(shared.clone()))
        .context("creating the Kafka consumer")?;
    let topics = kafka::subscription(k);
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>()).context("subscribing")?;
    tracing::info!(group = %k.group_id, topics = ?topics, "consuming");

    let max_age = Duration::from_millis(config.batch.max_age_ms);
    let mut flush_estimate = Duration::from_millis(50);
    let mut warned_dlq = std::collections::BTreeSet::new();
    while !shutdown.requested() && lock(&shared.fatal).is_none() {
        if let Some(c) = &catalog {
            c.poll_ready(|v| shared.apply_catalog_record(&mut decoder, v))?;
        }
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            match m {
                Err(e) => tracing::warn!(error = %e, "consumer"),
                Ok(m) => {
                    let topic = m.topic();
                    if kafka::is_dead_letter_topic(&k.dead_letter_topic, topic) {
                        if warned_dlq.insert(topic.to_string()) {
                            tracing::warn!(topic, "not consuming a dead-letter topic matched by the subscription");
                        }
                    } else if let Some(part) = lock(&shared.parts).get_mut(&(topic.to_string(), m.partition())) {
                        if m.offset() >= part.next {
                            let coords =
                                KafkaCoords { topic: part.topic.clone(), partition: m.partition(), offset: m.offset() };
                            let rec =
                                Record { key: m.key(), value: m.payload(), seq: m.offset(), kafka: Some(&coords) };
                            part.pipeline.process(&rec);
                            part.next = m.offset() + 1;
                            if let Some(ts) = m.timestamp().to_millis() {
                                part.stamps.push_back((m.offset(), ts));
                            }
                            part.oldest.get_or_insert_with(Instant::now);
                        }
                    }
                }
            }
        }
        // Flushes due: by rows or bytes, by age (early by what flushes take), by total memory.
        let mut due: Vec<((String, i32), bool)> = Vec::new();
        let mut total = 0usize;
        {
            let mut parts = lock(&shared.parts);
            for (key, part) in parts.iter_mut() {
                part.pipeline.tick();
                total += part.pipeline.buffered_bytes();
                let aged = part.oldest.is_some_and(|t| t.elapsed() + flush_estimate >= max_age);
                if aged || part.pipeline.should_flush() {
                    due.push((key.clone(), aged));
                }
            }
            if due.is_empty() && total > config.batch.max_buffered_bytes {
                if let Some((key, _)) = parts.iter().max_by_key(|(_, p)| p.pipeline.buffered_bytes()) {
                    due.push((key.clone(), true));
                }
            }
        }
        for (key, seal) in due {
            let mut parts = lock(&shared.parts);
            let Some(part) = parts.get_mut(&key) else { continue };
            let t = Instant::now();
            match shared.flush(&consumer, part, seal) {
                Ok(()) => flush_estimate = (flush_estimate * 4 + t.elapsed()) / 5,
                Err(e) if e.is_fenced() => {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "partition fenced: giving it up");
                    if let Some(p) = parts.remove(&key) {
                        lock(&shared.report).stats.add(&p.pipeline.stats);
                    }
                    lock(&shared.report).fenced += 1;
                    let mut tpl = TopicPartitionList::new();
                    let _ = tpl.add_partition(&key.0, key.1);
                    let _ = consumer.pause(&tpl);
                }
                Err(e) => {
                    shared.fail(anyhow::Error::new(e).context(format!("flushing {}[{}]", key.0, key.1)));
                    break;
                }
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
