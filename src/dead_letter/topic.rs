//! Dead letters to a Kafka topic, the way Kafka Connect writes them: the original key and value
//! bytes unchanged, and the `__connect.errors.*` headers (topic, partition, offset, exception
//! class and message) plus eavlake's reason code in `eavlake.reason`.
//!
//! Contract: [`DeadLetterTopic::deliver`] returns once the broker acknowledged every dead letter
//! (the stream's progress moves past them only afterwards). Dead letters of one source partition
//! always go to the same dead-letter partition (source partition modulo the partition count), so
//! a writer taking a stream over finds, with [`DeadLetterTopic::already_delivered`], the dead
//! letters its predecessor produced but did not record, and does not produce them twice.

use super::DeadLetter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const HEADER_TOPIC: &str = "__connect.errors.topic";
pub const HEADER_PARTITION: &str = "__connect.errors.partition";
pub const HEADER_OFFSET: &str = "__connect.errors.offset";
pub const HEADER_CLASS: &str = "__connect.errors.exception.class.name";
pub const HEADER_MESSAGE: &str = "__connect.errors.exception.message";
pub const HEADER_REASON: &str = "eavlake.reason";

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter topic `{topic}`: {message}")]
    Kafka { topic: String, message: String },
    #[error("dead letter of {topic}[{partition}] offset {offset} not acknowledged: {message}")]
    NotAcknowledged { topic: String, partition: i32, offset: i64, message: String },
}

/// Collects delivery reports: (index of the dead letter, offset or error).
#[derive(Default)]
struct Reports(Mutex<Vec<(usize, Result<i64, String>)>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let r = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((index, r));
    }
}

/// Produces dead letters for any source topic to `<template with {topic} replaced>`.
///
/// A plain producer polled only while delivering (dead letters are rare): rdkafka's
/// `FutureProducer` keeps a thread polling all the time, which cost 7% of the worker's CPU.
pub struct DeadLetterTopic {
    producer: Arc<BaseProducer<Reports>>,
    /// One delivery at a time: the reports collected belong to it.
    delivering: tokio::sync::Mutex<()>,
    /// Client settings for reading the dead-letter topic back (takeover).
    reader: ClientConfig,
    template: String,
    timeout: Duration,
    /// Partition count of each dead-letter topic, read once: a dead letter must not cost a
    /// metadata request (and the mapping must not move under a running worker).
    partitions: std::sync::Mutex<std::collections::HashMap<String, i32>>,
}

impl DeadLetterTopic {
    /// `client` carries the connection settings (brokers, TLS, SASL); `template` names the
    /// dead-letter topic, `{topic}` standing for the source topic.
    pub fn new(client: &ClientConfig, template: &str, timeout: Duration) -> Result<DeadLetterTopic, DeadLetterError> {
        let err =
            |e: rdkafka::error::KafkaError| DeadLetterError::Kafka { topic: template.into(), message: e.to_string() };
        let mut producer = client.clone();
        // Broker-side dedup of the producer's own retries; `all` so an acknowledged dead
        // letter survives a broker failure.
        producer.set("enable.idempotence", "true").set("acks", "all");
        let mut reader = client.clone();
        reader.set("enable.auto.commit", "false").set("group.id", "eavlake-dead-letter-scan");
        Ok(DeadLetterTopic {
            producer: Arc::new(producer.create_with_context(Reports::default()).map_err(err)?),
            delivering: tokio::sync::Mutex::new(()),
            reader,
            template: template.into(),
            timeout,
            partitions: Default::default(),
        })
    }

    pub fn topic_for(&self, source_topic: &str) -> String {
        self.template.replace("{topic}", source_topic)
    }

    /// The dead-letter partition of a source partition.
    fn partition_for(&self, dlq: &str, source_partition: i32) -> i32 {
        let known = self.partitions.lock().unwrap_or_else(|e| e.into_inner()).get(dlq).copied();
        let count = known.unwrap_or_else(|| {
            let count = self
                .producer
                .client()
                .fetch_metadata(Some(dlq), self.timeout)
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
                .unwrap_or(0);
            if count > 0 {
                self.partitions.lock().unwrap_or_else(|e| e.into_inner()).insert(dlq.to_string(), count);
            }
            count
        });
        // A topic not created yet is auto-created with at least one partition.
        if count > 0 {
            source_partition.rem_euclid(count)
        } else {
            0
        }
    }

    /// Produces the dead letters, skipping positions in `already` (delivered by a predecessor),
    /// and waits for every acknowledgement. Returns the dead-letter offset just past the last one
    /// produced, from which a successor has to look for dead letters not yet recorded.
    pub async fn deliver(
        &self,
        letters: &[DeadLetter],
        already: &BTreeSet<i64>,
    ) -> Result<Option<i64>, DeadLetterError> {
        let _one = self.delivering.lock().await;
        let mut sent = Vec::new();
        for (index, d) in letters.iter().enumerate().filter(|(_, d)| !already.contains(&d.seq)) {
            let Some(k) = &d.kafka else { continue };
            let dlq = self.topic_for(&k.topic);
            let (partition, offset) = (k.partition.to_string(), k.offset.to_string());
            let headers = OwnedHeaders::new()
                .insert(Header { key: HEADER_TOPIC, value: Some(&*k.topic) })
                .insert(Header { key: HEADER_PARTITION, value: Some(&partition) })
                .insert(Header { key: HEADER_OFFSET, value: Some(&offset) })
                .insert(Header { key: HEADER_CLASS, value: Some(d.class) })
                .insert(Header { key: HEADER_MESSAGE, value: Some(&d.message) })
                .insert(Header { key: HEADER_REASON, value: Some(d.reason) });
            let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&dlq, index)
                .partition(self.partition_for(&dlq, k.partition))
                .headers(headers);
            if let Some(key) = &d.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &d.value {
                record = record.payload(value.as_slice());
            }
            while let Err((e, r)) = self.producer.send(record) {
                if !matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ) {
                    return Err(not_acknowledged(d, e.to_string()));
                }
                record = r;
                self.producer.poll(Duration::from_millis(10));
            }
            sent.push(index);
        }
        if sent.is_empty() {
            return Ok(None);
        }
        let producer = self.producer.clone();
        let timeout = self.timeout;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        let reports = std::mem::take(&mut *self.producer.context().0.lock().unwrap_or_else(|e| e.into_inner()));
        let mut next_scan = None;
        for (index, r) in &reports {
            match r {
                Ok(offset) => next_scan = Some(next_scan.unwrap_or(0).max(offset + 1)),
                Err(message) => return Err(not_acknowledged(&letters[*index], message.clone())),
            }
        }
        if reports.len() < sent.len() {
            let why = match flushed {
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(())) => "no delivery report".into(),
            };
            let unreported = sent.iter().find(|i| !reports.iter().any(|(j, _)| j == *i)).copied().unwrap_or(sent[0]);
            return Err(not_acknowledged(&letters[unreported], why));
        }
        Ok(next_scan)
    }

    /// Source offsets after `after_seq` of `topic[partition]` that already have a dead letter,
    /// reading the dead-letter partition from `scan_from` (its start if `None`) to its end.
    pub async fn already_delivered(
        &self,
        topic: &str,
        partition: i32,
        after_seq: i64,
        scan_from: Option<i64>,
    ) -> Result<BTreeSet<i64>, DeadLetterError> {
        let dlq = self.topic_for(topic);
        let dlq_partition = self.partition_for(&dlq, partition);
        let reader = self.reader.clone();
        let timeout = self.timeout;
        let (topic, dlq2) = (topic.to_string(), dlq.clone());
        tokio::task::spawn_blocking(move || {
            scan(&reader, &dlq2, dlq_partition, scan_from, timeout, &topic, partition, after_seq)
        })
        .await
        .map_err(|e| DeadLetterError::Kafka { topic: dlq.clone(), message: e.to_string() })?
        .map_err(|message| DeadLetterError::Kafka { topic: dlq, message })
    }
}

fn not_acknowledged(d: &DeadLetter, message: String) -> DeadLetterError {
    let (topic, partition) = d.kafka.as_ref().map_or((String::new(), -1), |k| (k.topic.to_string(), k.partition));
    DeadLetterError::NotAcknowledged { topic, partition, offset: d.seq, message }
}

#[allow(clippy::too_many_arguments)]
fn scan(
    reader: &ClientConfig,
    dlq: &str,
    dlq_partition: i32,
    scan_from: Option<i64>,
    timeout: Duration,
    topic: &str,
    partition: i32,
    after_seq: i64,
) -> Result<BTreeSet<i64>, String> {
    let consumer: BaseConsumer = reader.create().map_err(|e| e.to_string())?;
    let (low, high) = match consumer.fetch_watermarks(dlq, dlq_partition, timeout) {
        Ok(w) => w,
        // No dead-letter topic yet: nothing was delivered.
        Err(rdkafka::error::KafkaError::MetadataFetch(_)) => return Ok(BTreeSet::new()),
        Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) => {
            return Ok(BTreeSet::new())
        }
        Err(e) => return Err(e.to_string()),
    };
    let start = scan_from.unwrap_or(low).max(low);
    let mut found = BTreeSet::new();
    if start >= high {
        return Ok(found);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(dlq, dlq_partition, Offset::Offset(start)).map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout.max(Duration::from_secs(10));
    loop {
        if std::time::Instant::now() > deadline {
            return Err(format!("reading partition {dlq_partition} from {start} to {high} timed out"));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.map_err(|e| e.to_string())?;
        if let Some(h) = m.headers() {
            let get = |key: &str| {
                h.iter().find(|x| x.key == key).and_then(|x| x.value).and_then(|v| std::str::from_utf8(v).ok())
            };
            let ours = get(HEADER_TOPIC) == Some(topic) && get(HEADER_PARTITION) == Some(&partition.to_string());
            if let Some(offset) =
                get(HEADER_OFFSET).and_then(|o| o.parse::<i64>().ok()).filter(|o| ours && *o > after_seq)
            {
                found.insert(offset);
            }
        }
        if m.offset() + 1 >= high {
            return Ok(found);
        }
    }
}
