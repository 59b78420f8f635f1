//! Sources: where Debezium records come from. Each source is one or more ordered streams
//! ([`crate::position::StreamId`]); a record carries its place in its stream.
//!
//! - [`file`]: Debezium record values, one JSON document per line (the embedded default).
//! - [`kafka`]: the Debezium topics, through a consumer group.

pub mod file;
pub mod kafka;

use crate::position::KafkaCoords;

/// One record as read, borrowed from the source's buffer until the next read.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// `value` as text, when the source already found it valid UTF-8 while reading it (a
    /// mapped file's ASCII lines): the decoder need not check it again.
    pub text: Option<&'a str>,
    /// Place in the stream: Kafka offset, or 1-based file line.
    pub seq: i64,
    pub kafka: Option<&'a KafkaCoords>,
    /// Set when the source cut the record short (a file line past `limits.max_record_bytes`):
    /// its real length; `value` holds its beginning.
    pub oversized: Option<usize>,
}
