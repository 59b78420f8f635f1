//! Dead letters: records that could not be used, kept byte for byte with why and where.
//!
//! A dead letter never stops its stream and is never dropped silently: it is written before the
//! stream's progress moves past it. The file source writes them into the lake as JSON lines
//! (`dead_letters/<stream>/<first>-<last>.jsonl`, one object per flush); the Kafka worker
//! produces them to a dead-letter topic with Kafka Connect's error headers.

pub mod topic;

use crate::decode::DecodeError;
use crate::pivot::PivotError;
use crate::position::KafkaCoords;
use base64::Engine;
use serde::Serialize;

/// Every reason code a dead letter can carry (decode, pivot, truncate): metrics start each at 0.
pub const REASONS: [&str; 18] = [
    "invalid_json",
    "invalid_utf8",
    "record_too_large",
    "not_debezium",
    "bad_field",
    "unknown_op",
    "invalid_avro",
    "schema_registry",
    "unknown_attribute",
    "type_mismatch",
    "value_out_of_range",
    "tenant_mismatch",
    "missing_before_image",
    "bad_hot_attributes",
    "too_many_attributes",
    "json_too_large",
    "json_too_deep",
    "truncate",
];

/// Where a stream's dead letters go.
#[derive(Clone, Default)]
pub enum DeadLetterTarget {
    /// Lake objects `dead_letters/<stream>/<first>-<last>.jsonl` (file runs).
    #[default]
    Lake,
    /// A dead-letter topic (the Kafka worker).
    Topic(std::sync::Arc<topic::DeadLetterTopic>),
}

/// One unusable record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Stream position (Kafka offset or file line).
    pub seq: i64,
    pub kafka: Option<KafkaCoords>,
    pub key: Option<Vec<u8>>,
    /// The record's value exactly as read.
    pub value: Option<Vec<u8>>,
    /// Stable reason code (`invalid_json`, `unknown_attribute`, …).
    pub reason: &'static str,
    /// Error class, as in Kafka Connect's `__connect.errors.exception.class.name`.
    pub class: &'static str,
    pub message: String,
}

impl DeadLetter {
    pub fn from_failed_decode(value: Option<&[u8]>, seq: i64, kafka: Option<KafkaCoords>, err: &DecodeError) -> Self {
        Self::new(value, seq, kafka, err.reason(), "eavlake::decode::DecodeError", err.to_string())
    }

    pub fn from_failed_pivot(value: Option<&[u8]>, seq: i64, kafka: Option<KafkaCoords>, err: &PivotError) -> Self {
        Self::new(value, seq, kafka, err.reason(), "eavlake::pivot::PivotError", err.to_string())
    }

    /// A truncate: valid, but nothing the change rows can represent (see `pipeline`).
    pub fn from_truncate(value: Option<&[u8]>, seq: i64, kafka: Option<KafkaCoords>, table: &str) -> Self {
        let message = format!("TRUNCATE of {table} is not applied to the lake; re-snapshot the table");
        Self::new(value, seq, kafka, "truncate", "eavlake::pipeline::Truncate", message)
    }

    fn new(
        value: Option<&[u8]>,
        seq: i64,
        kafka: Option<KafkaCoords>,
        reason: &'static str,
        class: &'static str,
        message: String,
    ) -> Self {
        DeadLetter { seq, kafka, key: None, value: value.map(<[u8]>::to_vec), reason, class, message }
    }

    /// Returns the same dead letter with the record key attached.
    pub fn with_key(mut self, key: Option<&[u8]>) -> Self {
        self.key = key.map(<[u8]>::to_vec);
        self
    }

    /// One line of the dead-letter file: the position, the reason, and the record (as text when
    /// it is UTF-8, base64 otherwise, so nothing is altered).
    pub fn to_json_line(&self, stream: &str) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            stream: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            line: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            topic: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            partition: Option<i32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            offset: Option<i64>,
            reason: &'a str,
            class: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            value_base64: Option<String>,
        }
        let (value, value_base64) = match self.value.as_deref() {
            None => (None, None),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => (Some(text), None),
                Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(bytes))),
            },
        };
        let line = Line {
            stream,
            line: self.kafka.is_none().then_some(self.seq),
            topic: self.kafka.as_ref().map(|k| &*k.topic),
            partition: self.kafka.as_ref().map(|k| k.partition),
            offset: self.kafka.as_ref().map(|k| k.offset),
            reason: self.reason,
            class: self.class,
            message: &self.message,
            value,
            value_base64,
        };
        // Plain strings and numbers serialise without error.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lines_keep_the_record_exactly() {
        let err = DecodeError::Json("EOF while parsing".into());
        let dl = DeadLetter::from_failed_decode(Some(b"{\"op\":"), 7, None, &err);
        let line: serde_json::Value = serde_json::from_str(&dl.to_json_line("file-x")).unwrap();
        assert_eq!(line["line"], 7);
        assert_eq!(line["reason"], "invalid_json");
        assert_eq!(line["value"], "{\"op\":");
        assert_eq!(line["message"], "record is not valid JSON: EOF while parsing");

        let dl = DeadLetter::from_failed_decode(Some(&[0xff, 0x00]), 8, None, &err);
        let line: serde_json::Value = serde_json::from_str(&dl.to_json_line("file-x")).unwrap();
        assert_eq!(line["value_base64"], "/wA=");
    }
}
