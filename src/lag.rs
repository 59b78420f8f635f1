//! How far behind the lake is, per partition: the worker's lag metrics and `eavlake lag`; and the
//! last reconcile's outcome, kept in the lake, as metrics.
//!
//! Lag in messages is the broker's high watermark minus the lake's next offset (what the lake
//! holds, not what was committed: the committed offset trails the lake by design). Lag in
//! seconds is 0 when the lake has everything, else the age of the oldest record the lake does
//! not hold yet: the worker knows it for the records it has fetched, `eavlake lag` reads that
//! record's timestamp; for records the worker has not fetched yet the commit time of the last
//! durable change stands in, which overstates the lag of a source that was quiet for a while.

use crate::config::Config;
use crate::metrics::prom::{PartitionLabels, WorkerMetrics};
use crate::position::StreamId;
use crate::progress::now_ms;
use crate::sink::Lake;
use crate::source::kafka;
use anyhow::Context;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the worker stands on one partition; the poll thread keeps it up to date.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    /// Next offset after what the lake holds.
    pub durable_next: i64,
    /// Commit time (µs) of the newest durable change.
    pub durable_source_ts_us: Option<i64>,
    /// Kafka timestamp (ms) of the oldest record that is not durable yet, when known.
    pub oldest_pending_ms: Option<i64>,
    /// When the worker took the partition (ms): a lower bound on how long it has been behind
    /// when nothing else is known.
    pub assigned_ms: i64,
}

/// The partitions a worker holds, by (topic, partition).
pub type Standings = Arc<Mutex<BTreeMap<(String, i32), Standing>>>;

/// Seconds the lake is behind on a partition (see the module's comment).
pub fn lag_seconds(now_ms: i64, high_watermark: i64, s: &Standing) -> f64 {
    if high_watermark <= s.durable_next {
        return 0.0;
    }
    let since_ms = match (s.oldest_pending_ms, s.durable_source_ts_us) {
        (Some(ms), _) => ms,
        (None, Some(us)) => us / 1000,
        (None, None) => s.assigned_ms,
    };
    ((now_ms - since_ms).max(0)) as f64 / 1000.0
}

/// A client that asks brokers for high watermarks; no group, no fetching.
pub struct Watermarks {
    consumer: BaseConsumer<BrokerErrors>,
    timeout: Duration,
}

/// The watermark client's context: librdkafka's last broker error kept (other than "all brokers
/// down"), not logged. A request fails with "broker transport failure" alone; the reason (a
/// certificate refused, a login failed) comes only as such an error.
#[derive(Default)]
pub struct BrokerErrors(Mutex<Option<String>>);

impl ClientContext for BrokerErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        }
    }
}

impl ConsumerContext for BrokerErrors {}

impl Watermarks {
    pub fn new(config: &crate::config::KafkaConfig, timeout: Duration) -> anyhow::Result<Watermarks> {
        let consumer = kafka::client_config(config)
            .create_with_context(BrokerErrors::default())
            .context("creating the watermark client")?;
        Ok(Watermarks { consumer, timeout })
    }

    /// `e` with librdkafka's last broker error, if there is one: its events are read here (they
    /// wait in the client's queue, which nothing else polls).
    fn explained(&self, e: KafkaError) -> anyhow::Error {
        for _ in 0..20 {
            if self.consumer.poll(Duration::from_millis(10)).is_none() {
                break;
            }
        }
        match self.consumer.context().0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(reason) => anyhow::anyhow!("{e} (librdkafka: {reason})"),
            None => e.into(),
        }
    }

    pub fn high(&self, topic: &str, partition: i32) -> anyhow::Result<i64> {
        let (_, high) = self
            .consumer
            .fetch_watermarks(topic, partition, self.timeout)
            .map_err(|e| self.explained(e))
            .with_context(|| format!("high watermark of {topic}[{partition}]"))?;
        Ok(high)
    }

    /// The partitions of the subscription: the listed topics, or those matching the pattern
    /// (dead-letter topics left out).
    pub fn partitions(&self, config: &crate::config::KafkaConfig) -> anyhow::Result<Vec<(String, i32)>> {
        let meta = self
            .consumer
            .fetch_metadata(None, self.timeout)
            .map_err(|e| self.explained(e))
            .context("reading the cluster's metadata")?;
        let pattern = match &config.topic_pattern {
            Some(p) => {
                let p = p.strip_prefix('^').unwrap_or(p);
                Some(regex::Regex::new(&format!("^(?:{p})$")).context("config key `kafka.topic_pattern`")?)
            }
            None => None,
        };
        let mut out = Vec::new();
        for t in meta.topics() {
            let wanted = match &pattern {
                Some(re) => re.is_match(t.name()) && !kafka::is_dead_letter_topic(&config.dead_letter_topic, t.name()),
                None => config.topics.iter().any(|n| n == t.name()),
            };
            if wanted && t.error().is_none() {
                out.extend(t.partitions().iter().map(|p| (t.name().to_string(), p.id())));
            }
        }
        for name in &config.topics {
            if !out.iter().any(|(t, _)| t == name) {
                anyhow::bail!("topic `{name}` (kafka.topics) does not exist");
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Refreshes the worker's lag metrics every `interval` until the runtime ends. A failed
/// watermark request keeps the last known watermark (so lag in seconds keeps growing while
/// brokers are away).
pub async fn keep_lag_metrics(
    watermarks: Watermarks,
    standings: Standings,
    metrics: Arc<WorkerMetrics>,
    interval: Duration,
) {
    let watermarks = Arc::new(watermarks);
    let mut known: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now: BTreeMap<(String, i32), Standing> = standings.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for key in known.keys().filter(|k| !now.contains_key(*k)).cloned().collect::<Vec<_>>() {
            known.remove(&key);
            metrics.forget_partition(&PartitionLabels { topic: key.0, partition: key.1 });
        }
        let keys: Vec<(String, i32)> = now.keys().cloned().collect();
        let w = watermarks.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            keys.into_iter().map(|(t, p)| ((t.clone(), p), w.high(&t, p))).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (key, high) in fetched {
            match high {
                Ok(h) => {
                    known.insert(key, h);
                }
                Err(e) => tracing::debug!(error = %format!("{e:#}"), "lag: keeping the last known watermark"),
            }
        }
        let t = now_ms();
        for (key, standing) in &now {
            let Some(&high) = known.get(key) else { continue };
            let labels = PartitionLabels { topic: key.0.clone(), partition: key.1 };
            metrics.set_lag(&labels, high, standing.durable_next, lag_seconds(t, high, standing));
        }
    }
}

/// Publishes the last reconcile's outcome, kept in the lake by `eavlake reconcile`, every
/// `interval`. A task of its own: a slow store must not hold up the lag figures, which matter
/// most then.
pub async fn keep_reconcile_metrics(lake: Lake, metrics: Arc<WorkerMetrics>, interval: Duration) {
    let prefix = Lake::meta_path(crate::metrics::ReconcileSummary::PREFIX);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // The whole lake's outcome and every scope's (see `ReconcileSummary::fold`).
        let objects = match lake.list(&prefix).await {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "listing the reconcile outcomes");
                continue;
            }
        };
        let mut all = Vec::new();
        for meta in objects.iter().filter(|m| m.location.as_ref().ends_with(".json")) {
            match lake.get(&meta.location).await {
                Ok(Some(bytes)) => match serde_json::from_slice::<crate::metrics::ReconcileSummary>(&bytes) {
                    Ok(r) => all.push(r),
                    Err(e) => tracing::debug!(path = %meta.location, error = %e, "unreadable reconcile outcome"),
                },
                Ok(None) => {}
                Err(e) => tracing::debug!(path = %meta.location, error = %e, "reading a reconcile outcome"),
            }
        }
        if let Some(r) = crate::metrics::ReconcileSummary::fold(all) {
            metrics.set_reconcile(&r);
        }
    }
}

/// One partition in `eavlake lag`.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (`None`: never committed).
    pub committed: Option<i64>,
    /// Next offset after what the lake holds.
    pub lake_next: i64,
    pub high_watermark: i64,
    pub lag_messages: i64,
    pub lag_seconds: f64,
    /// The worker that holds the partition in the lake, with its epoch.
    pub owner: Option<String>,
    /// A flush that was started and not completed (a worker died in it, or is in it now).
    pub flush_pending: bool,
}

/// Messages of each subscribed partition the lake does not hold yet (high watermark minus the
/// lake's next offset), by (topic, partition). Cheap: watermarks and progress records only.
pub async fn lake_behind(k: &crate::config::KafkaConfig, lake: &Lake) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let k = k.clone();
    let highs = blocking(move || {
        let w = Watermarks::new(&k, Duration::from_millis(k.request_timeout_ms))?;
        let mut highs = Vec::new();
        for (t, p) in w.partitions(&k)? {
            let high = w.high(&t, p)?;
            highs.push(((t, p), high));
        }
        Ok(highs)
    })
    .await?;
    let mut out = BTreeMap::new();
    for ((topic, partition), high) in highs {
        let stream = StreamId::Kafka { topic: topic.clone(), partition };
        let record = crate::progress::load(lake, &stream.object_name())
            .await
            .with_context(|| format!("reading the lake's progress of {stream}"))?;
        let next = record.map_or(0, |r| r.last_seq + 1);
        out.insert((topic, partition), (high - next).max(0));
    }
    Ok(out)
}

/// What `eavlake lag` prints: every partition of the subscription.
pub async fn report(config: &Config, lake: &Lake) -> anyhow::Result<Vec<PartitionReport>> {
    let k = config.kafka.clone();
    let timeout = Duration::from_millis(k.request_timeout_ms);
    let (highs, committed) = blocking(move || {
        let w = Watermarks::new(&k, timeout)?;
        let parts = w.partitions(&k)?;
        let mut highs = Vec::new();
        for (t, p) in &parts {
            highs.push(((t.clone(), *p), w.high(t, *p)?));
        }
        let group: BaseConsumer = kafka::client_config(&k)
            .set("group.id", &k.group_id)
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the group client")?;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &parts {
            tpl.add_partition(t, *p);
        }
        let committed = group
            .committed_offsets(tpl, timeout)
            .with_context(|| format!("reading the committed offsets of group `{}`", k.group_id))?;
        let committed: BTreeMap<(String, i32), Option<i64>> = committed
            .elements()
            .iter()
            .map(|e| ((e.topic().to_string(), e.partition()), e.offset().to_raw().filter(|o| *o >= 0)))
            .collect();
        Ok((highs, committed))
    })
    .await?;
    let mut records = Vec::new();
    for ((topic, partition), _) in &highs {
        let stream = StreamId::Kafka { topic: topic.clone(), partition: *partition };
        let record = crate::progress::load(lake, &stream.object_name())
            .await
            .with_context(|| format!("reading the lake's progress of {stream}"))?;
        records.push(record);
    }
    // The timestamp of the first record the lake lacks, on each partition that lags.
    let lagging: Vec<(String, i32, i64)> = highs
        .iter()
        .zip(&records)
        .map(|(((t, p), high), r)| (t.clone(), *p, r.as_ref().map_or(0, |r| r.last_seq + 1), *high))
        .filter(|(_, _, next, high)| next < high)
        .map(|(t, p, next, _)| (t, p, next))
        .collect();
    let k = config.kafka.clone();
    let oldest = blocking(move || first_timestamps(&k, &lagging, timeout.min(Duration::from_secs(10)))).await?;
    let now = now_ms();
    let mut out = Vec::new();
    for (((topic, partition), high), record) in highs.into_iter().zip(records) {
        let lake_next = record.as_ref().map_or(0, |r| r.last_seq + 1);
        let standing = Standing {
            durable_next: lake_next,
            durable_source_ts_us: record.as_ref().and_then(|r| r.source_ts_us),
            oldest_pending_ms: oldest.get(&(topic.clone(), partition)).copied(),
            assigned_ms: now,
        };
        out.push(PartitionReport {
            committed: committed.get(&(topic.clone(), partition)).copied().flatten(),
            lake_next,
            high_watermark: high,
            lag_messages: (high - lake_next).max(0),
            lag_seconds: lag_seconds(now, high, &standing),
            owner: record.as_ref().and_then(|r| r.owner.as_ref()).map(|o| format!("{} (epoch {})", o.worker, o.epoch)),
            flush_pending: record.as_ref().is_some_and(|r| r.pending.is_some()),
            topic,
            partition,
        });
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("the Kafka client thread panicked")?
}

/// Kafka timestamps (ms) of the records at the given offsets, read with a group-less consumer;
/// partitions whose record does not come within `timeout` (deleted by retention, say) are left
/// out.
fn first_timestamps(
    k: &crate::config::KafkaConfig,
    at: &[(String, i32, i64)],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    use rdkafka::Message;
    let mut out = BTreeMap::new();
    if at.is_empty() {
        return Ok(out);
    }
    let consumer: BaseConsumer = kafka::client_config(k)
        .set("group.id", format!("{}-lag", k.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the lag reader")?;
    let mut tpl = TopicPartitionList::new();
    for (t, p, offset) in at {
        tpl.add_partition_offset(t, *p, rdkafka::Offset::Offset(*offset))?;
    }
    consumer.assign(&tpl).context("assigning the lag reader")?;
    let deadline = std::time::Instant::now() + timeout;
    while out.len() < at.len() && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let Some(m) = kafka::transient_ok(m)? else { continue };
        if let (Some(ts), true) =
            (m.timestamp().to_millis(), at.iter().any(|(t, p, _)| t == m.topic() && *p == m.partition()))
        {
            out.entry((m.topic().to_string(), m.partition())).or_insert(ts);
        }
    }
    Ok(out)
}

/// The report as a table, one line a partition, then the totals.
pub fn table(rows: &[PartitionReport]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<32} {:>5} {:>12} {:>12} {:>12} {:>10} {:>10}  OWNER",
        "TOPIC", "PART", "COMMITTED", "LAKE", "HIGH", "LAG", "LAG(s)"
    );
    for r in rows {
        let committed = r.committed.map_or("-".to_string(), |c| c.to_string());
        let owner =
            format!("{}{}", r.owner.as_deref().unwrap_or("-"), if r.flush_pending { ", flush pending" } else { "" });
        let _ = writeln!(
            s,
            "{:<32} {:>5} {:>12} {:>12} {:>12} {:>10} {:>10.1}  {}",
            r.topic, r.partition, committed, r.lake_next, r.high_watermark, r.lag_messages, r.lag_seconds, owner
        );
    }
    let total: i64 = rows.iter().map(|r| r.lag_messages).sum();
    let worst = rows.iter().map(|r| r.lag_seconds).fold(0.0, f64::max);
    let _ = writeln!(s, "{} partitions, lag {total} messages, at most {worst:.1} s", rows.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_seconds_is_the_age_of_what_the_lake_lacks() {
        let s = Standing {
            durable_next: 100,
            durable_source_ts_us: Some(40_000_000),
            oldest_pending_ms: None,
            assigned_ms: 55_000,
        };
        assert_eq!(lag_seconds(100_000, 100, &s), 0.0, "caught up");
        assert_eq!(lag_seconds(100_000, 150, &s), 60.0, "not fetched: since the last durable change");
        let fetched = Standing { oldest_pending_ms: Some(97_500), ..s.clone() };
        assert_eq!(lag_seconds(100_000, 150, &fetched), 2.5, "the oldest record not durable");
        let fresh = Standing { durable_source_ts_us: None, ..s };
        assert_eq!(lag_seconds(100_000, 150, &fresh), 45.0, "nothing known: since assigned");
    }

    #[test]
    fn table_lists_partitions_and_totals() {
        let row = |partition, lag_messages, lag_seconds| PartitionReport {
            topic: "eav.public.entity_changes".into(),
            partition,
            committed: Some(90),
            lake_next: 100,
            high_watermark: 100 + lag_messages,
            lag_messages,
            lag_seconds,
            owner: Some("host-1 (epoch 3)".into()),
            flush_pending: partition == 1,
        };
        let t = table(&[row(0, 0, 0.0), row(1, 25, 7.3)]);
        assert!(t.contains("host-1 (epoch 3), flush pending"), "{t}");
        assert!(t.ends_with("2 partitions, lag 25 messages, at most 7.3 s\n"), "{t}");
    }
}
