//! Kafka as a source: client settings, the consumer group's subscription, and the catalog topic.
//!
//! Every topic partition is one stream ([`StreamId::Kafka`]); its `seq` is the Kafka offset.
//! Offsets are never committed automatically: the worker commits a partition's offset only after
//! the lake recorded the partition's progress (see `worker`), and on (re)assignment resumes from
//! the lake's record, so the committed offset is what monitoring tools see, not the truth.

use crate::config::KafkaConfig;
use crate::position::StreamId;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::Duration;

/// Connection settings shared by every client: brokers and the pass-through properties (TLS,
/// SASL, …).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in &kafka.properties.0 {
        c.set(k, v);
    }
    c
}

/// The consumer group member's settings: cooperative rebalancing, no automatic commits.
pub fn group_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    // Pass-through properties win, except these two, which the exactly-once design needs.
    for (k, v) in &kafka.properties.0 {
        if k != "enable.auto.commit" && k != "enable.auto.offset.store" {
            c.set(k, v);
        }
    }
    if !kafka.properties.0.contains_key("partition.assignment.strategy") {
        c.set("partition.assignment.strategy", "cooperative-sticky");
    }
    // librdkafka prefetches up to 64 MiB by default: a quarter keeps memory flat, and the worker
    // fed on a backlog if the fetcher looks again soon once the queue has room (by default it
    // waits a second: 404K records took 8 s instead of 1.4 s).
    for (key, value) in [("queued.max.messages.kbytes", "16384"), ("fetch.queue.backoff.ms", "10")] {
        if !kafka.properties.0.contains_key(key) {
            c.set(key, value);
        }
    }
    c
}

/// What the group subscribes to: the topic names, or `^pattern` (librdkafka's regex form).
pub fn subscription(kafka: &KafkaConfig) -> Vec<String> {
    match &kafka.topic_pattern {
        Some(p) if p.starts_with('^') => vec![p.clone()],
        Some(p) => vec![format!("^{p}")],
        None => kafka.topics.clone(),
    }
}

/// Whether `topic` is a dead-letter topic by the `{topic}` template (a broad pattern must not
/// make the worker consume its own dead letters).
pub fn is_dead_letter_topic(template: &str, topic: &str) -> bool {
    match template.split_once("{topic}") {
        Some((pre, post)) => topic.len() > pre.len() + post.len() && topic.starts_with(pre) && topic.ends_with(post),
        None => topic == template,
    }
}

pub fn stream_of(topic: &str, partition: i32) -> StreamId {
    StreamId::Kafka { topic: topic.to_string(), partition }
}

/// The catalog topic, read whole by every worker: assigned (not subscribed), from the start.
///
/// It also says whether it may be behind ([`CatalogReader::may_be_behind`]): after it lost its
/// broker it may reconnect later than the data consumer, which would then read values of
/// attributes the catalog has not delivered yet.
pub struct CatalogReader {
    consumer: BaseConsumer,
    topic: String,
    /// Next offset to read, per partition.
    next: std::cell::RefCell<std::collections::BTreeMap<i32, i64>>,
    /// Lost its broker since it was last seen read to its end.
    lost: std::cell::Cell<bool>,
}

impl CatalogReader {
    /// `None` when the topic does not exist (yet): the catalog then comes from the lake, the
    /// bootstrap, and attribute changes on the group's own topics.
    pub fn open(kafka: &KafkaConfig, topic: &str, timeout: Duration) -> anyhow::Result<Option<CatalogReader>> {
        use anyhow::Context;
        let mut c = client_config(kafka);
        c.set("group.id", format!("{}-catalog", kafka.group_id))
            .set("enable.auto.commit", "false")
            // If librdkafka loses its place (a broker restart can make it reset the offset), it
            // reads the catalog again from the start (idempotent) rather than from the end, which
            // would skip the attributes created meanwhile.
            .set("auto.offset.reset", "earliest")
            // Back soon after its broker: data waits for it meanwhile (see `may_be_behind`).
            .set("reconnect.backoff.max.ms", "1000")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = c.create().context("creating the catalog topic's consumer")?;
        let meta = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("reading the metadata of catalog topic `{topic}`"))?;
        let partitions: Vec<i32> = meta
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            tracing::warn!(topic, "catalog topic not found; attributes come from the lake and the data topics");
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let next = partitions.iter().map(|p| (*p, 0)).collect();
        Ok(Some(CatalogReader {
            consumer,
            topic: topic.to_string(),
            next: std::cell::RefCell::new(next),
            lost: std::cell::Cell::new(false),
        }))
    }

    /// Reads every catalog record present when called, handing each value to `apply`.
    pub fn catch_up(&self, timeout: Duration, mut apply: impl FnMut(Option<&[u8]>)) -> anyhow::Result<u64> {
        let meta = self.consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let mut ends = std::collections::BTreeMap::new();
        for t in meta.topics() {
            for p in t.partitions() {
                let (_, high) = self.consumer.fetch_watermarks(&self.topic, p.id(), timeout)?;
                ends.insert(p.id(), high);
            }
        }
        let mut read = 0;
        let deadline = std::time::Instant::now() + timeout;
        let mut next: std::collections::BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
        while next.iter().any(|(p, n)| *n < ends[p]) {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("catalog topic `{}`: not read to its end within {timeout:?}", self.topic);
            }
            if let Some(m) = self.consumer.poll(Duration::from_millis(100)) {
                let Some(m) = transient_ok(m)? else { continue };
                apply(m.payload());
                next.insert(m.partition(), m.offset() + 1);
                read += 1;
            } else {
                // Partitions whose log starts later (retention) count as read up to their start.
                for (p, n) in next.iter_mut() {
                    if let Ok((low, _)) = self.consumer.fetch_watermarks(&self.topic, *p, timeout) {
                        *n = (*n).max(low);
                    }
                }
            }
        }
        *self.next.borrow_mut() = next;
        Ok(read)
    }

    /// Reads what is ready now without waiting.
    pub fn poll_ready(&self, mut apply: impl FnMut(Option<&[u8]>)) -> anyhow::Result<()> {
        while let Some(m) = self.consumer.poll(Duration::ZERO) {
            match transient_ok(m)? {
                Some(m) => {
                    apply(m.payload());
                    self.next.borrow_mut().insert(m.partition(), m.offset() + 1);
                }
                None => self.lost.set(true),
            }
        }
        Ok(())
    }

    /// Whether the catalog may hold records this reader has not delivered: it lost its broker
    /// and has not been seen read to its end since. Asks the broker (within `timeout`) only in
    /// that case; a connected reader is taken as current, its fetches arriving within
    /// milliseconds of the records.
    pub fn may_be_behind(&self, timeout: Duration) -> bool {
        if !self.lost.get() {
            return false;
        }
        let at_end = self.next.borrow().iter().all(|(p, next)| {
            matches!(self.consumer.fetch_watermarks(&self.topic, *p, timeout), Ok((low, high)) if *next >= high || low >= high)
        });
        self.lost.set(!at_end);
        !at_end
    }
}

/// A message, or `None` for the errors librdkafka reports while it reconnects by itself (a
/// broker restarting, a leader moving): those are logged, not fatal.
pub fn transient_ok<M>(m: rdkafka::error::KafkaResult<M>) -> rdkafka::error::KafkaResult<Option<M>> {
    match m {
        Ok(m) => Ok(Some(m)),
        Err(e) if is_transient(&e) => {
            tracing::warn!(error = %e, "Kafka (librdkafka retries)");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Errors of a consumer that librdkafka recovers from by itself.
pub fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::OperationTimedOut
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::NetworkException
                | C::RequestTimedOut
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::UnknownTopicOrPartition
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topics_are_recognised() {
        assert!(is_dead_letter_topic("{topic}.dlq", "eav.public.entity_values.dlq"));
        assert!(!is_dead_letter_topic("{topic}.dlq", "eav.public.entity_values"));
        assert!(is_dead_letter_topic("dlq-{topic}", "dlq-x"));
        assert!(is_dead_letter_topic("all.dlq", "all.dlq"));
    }

    #[test]
    fn group_settings_keep_commits_manual() {
        let mut k = KafkaConfig::default();
        k.properties.0.insert("enable.auto.commit".into(), "true".into());
        k.properties.0.insert("security.protocol".into(), "SSL".into());
        let c = group_config(&k);
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("security.protocol"), Some("SSL"));
        assert_eq!(c.get("partition.assignment.strategy"), Some("cooperative-sticky"));
        k.topic_pattern = Some("eav\\.public\\..*".into());
        assert_eq!(subscription(&k), vec!["^eav\\.public\\..*".to_string()]);
    }
}
