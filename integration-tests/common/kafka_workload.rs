//! A generated workload put into Kafka the way a Debezium deployment keys it, and what to expect
//! back: each entity's changes in the partition of its entity_id; the attributes' changes and
//! transaction markers in every partition (each partition's pipeline then sees the catalog in
//! stream order, so the workload's ground truth holds per partition); unkeyable lines by line
//! number. Also reads dead-letter topics and waits for a lake to reach the end of a topic.
#![allow(dead_code)]

use eavlake::workload::{generate, GroundTruth, WorkloadSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where each line goes: `Some(partitions)`, or `None` to leave it out.
pub fn route(line: &str, line_no: u64, partitions: i32, markers: bool) -> Option<Vec<i32>> {
    let everywhere = Some((0..partitions).collect());
    let by_line = Some(vec![(line_no % partitions as u64) as i32]);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { return by_line };
    let payload = v.get("payload").unwrap_or(&v);
    if payload.get("status").is_some() {
        // Transaction markers: Debezium puts them on a topic of their own, which eavlake does
        // not need (a transaction ends where the next begins, or at a flush by age).
        return if markers { everywhere } else { None };
    }
    match payload.pointer("/source/table").and_then(|t| t.as_str()) {
        Some("attributes") => everywhere,
        Some(_) => {
            let id = ["/after/entity_id", "/before/entity_id"].iter().find_map(|p| payload.pointer(p)?.as_i64());
            id.map_or(by_line, |id| Some(vec![id.rem_euclid(partitions as i64) as i32]))
        }
        None => by_line,
    }
}

/// What was produced: the ground truth, and where each dead letter is expected
/// ((partition, offset) → (reason, value bytes)).
pub struct Produced {
    pub truth: GroundTruth,
    pub expected_dead: BTreeMap<(i32, i64), (String, Vec<u8>)>,
    pub records: u64,
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Order within a partition must survive retries.
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Generates `spec` and produces it into `topic` (`partitions` partitions), `per_second` records
/// a second at most (0: as fast as possible).
pub async fn produce_workload(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    spec: &WorkloadSpec,
    per_second: u64,
) -> Produced {
    produce_workload_with(bootstrap, topic, partitions, spec, per_second, true, None).await
}

/// [`produce_workload`], with transaction markers left out unless `markers`, and the attributes'
/// changes in `catalog_topic` (one partition) if given.
pub async fn produce_workload_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    spec: &WorkloadSpec,
    per_second: u64,
    markers: bool,
    catalog_topic: Option<&str>,
) -> Produced {
    let mut text = Vec::new();
    let truth = generate(spec, &mut text).unwrap();
    let poison: BTreeMap<u64, &str> = truth.dead_letters.iter().map(|(l, r)| (*l, *r)).collect();
    let producer = producer(bootstrap);
    let mut expected_dead = BTreeMap::new();
    let mut pending = Vec::new();
    let started = Instant::now();
    let mut records = 0u64;
    for (i, line) in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let line_no = i as u64 + 1;
        let s = std::str::from_utf8(line).unwrap_or("");
        let is_catalog = catalog_topic.is_some() && s.contains("\"table\":\"attributes\"");
        let (to, targets) = match catalog_topic {
            Some(c) if is_catalog => (c, vec![0]),
            _ => (topic, route(s, line_no, partitions, markers).unwrap_or_default()),
        };
        for p in targets {
            let value = if line == b"null" { None } else { Some(line.to_vec()) };
            let key = format!("{line_no}");
            let mut rec = FutureRecord::<str, [u8]>::to(to).partition(p).key(&key);
            if let Some(v) = &value {
                rec = rec.payload(v.as_slice());
            }
            let fut = loop {
                match producer.send_result(rec) {
                    Ok(f) => break f,
                    Err((e, r)) => {
                        assert!(
                            matches!(
                                e,
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull
                                )
                            ),
                            "produce: {e}"
                        );
                        rec = r;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            };
            pending.push((line_no, line.to_vec(), fut));
            records += 1;
        }
        if pending.len() >= 2000 || (per_second > 0 && pending.len() as u64 >= (per_second / 50).max(1)) {
            for (line_no, bytes, fut) in pending.drain(..) {
                let d = fut.await.unwrap().unwrap_or_else(|(e, _)| panic!("produce line {line_no}: {e}"));
                if let Some(reason) = poison.get(&line_no) {
                    expected_dead.insert((d.partition, d.offset), (reason.to_string(), bytes));
                }
            }
        }
        if per_second > 0 {
            let due = Duration::from_secs_f64(records as f64 / per_second as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    for (line_no, bytes, fut) in pending {
        let d = fut.await.unwrap().unwrap_or_else(|(e, _)| panic!("produce line {line_no}: {e}"));
        if let Some(reason) = poison.get(&line_no) {
            expected_dead.insert((d.partition, d.offset), (reason.to_string(), bytes));
        }
    }
    Produced { truth, expected_dead, records }
}

/// One dead letter as read back: source (partition, offset) → (reason, value, headers).
pub type DeadLetters = BTreeMap<(i32, i64), (String, Vec<u8>, BTreeMap<String, String>)>;

/// Reads a whole dead-letter topic.
pub fn read_dead_letters(bootstrap: &str, dlq: &str) -> DeadLetters {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "test-reader").create().unwrap();
    let mut out = DeadLetters::new();
    let Ok(meta) = c.fetch_metadata(Some(dlq), Duration::from_secs(10)) else { return out };
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for t in meta.topics() {
        for p in t.partitions() {
            let (_, high) = c.fetch_watermarks(dlq, p.id(), Duration::from_secs(10)).unwrap();
            if high > 0 {
                ends.insert(p.id(), high);
                tpl.add_partition_offset(dlq, p.id(), Offset::Beginning).unwrap();
            }
        }
    }
    if ends.is_empty() {
        return out;
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = BTreeMap::new();
    while done.len() < ends.len() && Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            for x in h.iter() {
                headers.insert(x.key.to_string(), String::from_utf8_lossy(x.value.unwrap_or_default()).to_string());
            }
        }
        let partition: i32 = headers["__connect.errors.partition"].parse().unwrap();
        let offset: i64 = headers["__connect.errors.offset"].parse().unwrap();
        let reason = headers["eavlake.reason"].clone();
        let dup = out.insert((partition, offset), (reason, m.payload().unwrap_or_default().to_vec(), headers));
        assert!(dup.is_none(), "dead letter of ({partition}, {offset}) delivered twice");
        if m.offset() + 1 >= ends[&m.partition()] {
            done.insert(m.partition(), ());
        }
    }
    out
}

/// The dead-letter topic must hold exactly the poison records produced, bytes unchanged, each once.
pub fn assert_dead_letters_exactly(bootstrap: &str, dlq: &str, produced: &Produced) {
    let dead = read_dead_letters(bootstrap, dlq);
    let got: Vec<_> = dead.iter().map(|(k, (r, v, _))| (*k, r.clone(), v.clone())).collect();
    let want: Vec<_> = produced.expected_dead.iter().map(|(k, (r, v))| (*k, r.clone(), v.clone())).collect();
    assert_eq!(got, want, "the dead-letter topic holds exactly the poison records");
}

/// High watermarks of a topic's partitions. A broker just (re)started answers "not leader" for a
/// moment: asked again for up to 30 s.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let high = |p: i32| loop {
        match c.fetch_watermarks(topic, p, Duration::from_secs(10)) {
            Ok((_, high)) => return high,
            Err(e) if Instant::now() < deadline => {
                eprintln!("high watermark of {topic}[{p}]: {e} (asking again)");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("high watermark of {topic}[{p}]: {e}"),
        }
    };
    (0..partitions).map(|p| (p, high(p))).collect()
}

/// The lake's recorded progress of `topic[p]` (last durable offset), if any.
pub fn lake_progress(lake: &Path, topic: &str, partition: i32) -> Option<i64> {
    let name = eavlake::position::StreamId::Kafka { topic: topic.into(), partition }.object_name();
    let bytes = std::fs::read(lake.join("_eavlake/progress").join(format!("{name}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["last_seq"].as_i64()
}

/// Waits until the lake has recorded every partition up to its high watermark.
pub async fn wait_for_lake(lake: &Path, topic: &str, ends: &BTreeMap<i32, i64>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let behind: Vec<(i32, Option<i64>, i64)> = ends
            .iter()
            .map(|(p, high)| (*p, lake_progress(lake, topic, *p), *high))
            .filter(|(_, got, high)| got.is_none_or(|g| g + 1 < *high))
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lake not caught up within {within:?}: (partition, recorded, high) {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One record of a topic of plain-JSON Debezium envelopes, as a failed comparison with Postgres
/// needs it: where it is, which entity, and its source position.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub partition: i32,
    pub offset: i64,
    /// `entity_id` of the row image (`after`, else `before`).
    pub entity_id: Option<i64>,
    /// `attribute_id` of the row image (`entity_values`).
    pub attribute_id: Option<i64>,
    pub op: String,
    pub table: String,
    /// `source.sequence` (`["<last commit lsn>","<lsn>"]`) and `source.lsn`.
    pub sequence: String,
    pub lsn: Option<i64>,
    /// `is_deleted` of the row image (`entities`).
    pub is_deleted: Option<bool>,
}

/// Every record of `topic` up to its current ends, tombstones included (`op` "tombstone", the
/// ids from the key); records that are not JSON are left out.
pub fn scan_envelopes(bootstrap: &str, topic: &str, partitions: i32) -> Vec<Envelope> {
    let ends = high_watermarks(bootstrap, topic, partitions);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-scanner")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, high) in &ends {
        if *high > 0 {
            tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
        }
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    let wanted = ends.values().filter(|h| **h > 0).count();
    // A few seconds per million records here; generous for a loaded machine, where an explanation
    // cut short would hide the records it is for.
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.len() < wanted && Instant::now() < deadline {
        let Some(Ok(m)) = c.poll(Duration::from_millis(200)) else { continue };
        if m.offset() + 1 >= ends[&m.partition()] {
            done.insert(m.partition());
        }
        let value = match m.payload().map(serde_json::from_slice::<serde_json::Value>) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => continue,
            None => None,
        };
        let Some(v) = value else {
            let key = m.key().and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()).unwrap_or_default();
            out.push(Envelope {
                partition: m.partition(),
                offset: m.offset(),
                entity_id: key["entity_id"].as_i64(),
                attribute_id: key["attribute_id"].as_i64(),
                op: "tombstone".into(),
                table: String::new(),
                sequence: String::new(),
                lsn: None,
                is_deleted: None,
            });
            continue;
        };
        let image = if v["after"].is_object() { &v["after"] } else { &v["before"] };
        out.push(Envelope {
            partition: m.partition(),
            offset: m.offset(),
            entity_id: image["entity_id"].as_i64(),
            attribute_id: image["attribute_id"].as_i64(),
            op: v["op"].as_str().unwrap_or("?").to_string(),
            table: v["source"]["table"].as_str().unwrap_or("?").to_string(),
            sequence: v["source"]["sequence"].as_str().unwrap_or_default().to_string(),
            lsn: v["source"]["lsn"].as_i64(),
            is_deleted: image["is_deleted"].as_bool(),
        });
    }
    if done.len() < wanted {
        eprintln!("scan of {topic}: INCOMPLETE, {} records read before the deadline", out.len());
    }
    out
}
