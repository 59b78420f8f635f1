//! Positions: where a change sits in the source database's history and in its stream.
//!
//! Two orders matter and they are not the same:
//! - [`SourcePosition`] orders changes as PostgreSQL committed them. Debezium streams whole
//!   transactions in commit order, but the change LSNs of concurrent transactions interleave, so the
//!   change LSN alone does not order them. Debezium's `source.sequence` is
//!   `[last commit LSN before this transaction, this change's LSN]`; that pair never falls along
//!   the stream (it repeats for the rows of one multi-row WAL record, as `COPY` writes them),
//!   which is what duplicate detection needs.
//! - [`StreamPos`] is a record's place in the stream it was read from (a Kafka offset, a line of a
//!   file). Changes of one entity always travel in one stream, so applying them in stream order is
//!   applying them in commit order, snapshots included (their LSNs are all equal).

use std::fmt;

/// A PostgreSQL log sequence number, as the 64-bit integer Debezium puts in `source.lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses either Debezium's integer form (`"22910216"`) or PostgreSQL's `X/Y` text form.
    pub fn parse(text: &str) -> Option<Lsn> {
        // The integer form is on every record (`source.sequence`): read it digit by digit before
        // the general path trims and looks for a slash.
        if let Some(v) = text.bytes().try_fold(0u64, |v, c| {
            let digit = c.checked_sub(b'0').filter(|d| *d <= 9)?;
            v.checked_mul(10)?.checked_add(u64::from(digit))
        }) {
            return (!text.is_empty()).then_some(Lsn(v));
        }
        let text = text.trim();
        if let Some((hi, lo)) = text.split_once('/') {
            let hi = u64::from_str_radix(hi, 16).ok()?;
            let lo = u64::from_str_radix(lo, 16).ok()?;
            if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
                return None;
            }
            return Some(Lsn((hi << 32) | lo));
        }
        text.parse().ok().map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Where a change sits in commit order: `(last commit LSN before its transaction, change LSN)`.
///
/// Non-decreasing along a Debezium stream for streamed (non-snapshot) changes: a change whose
/// position is below the highest one already applied is a re-send (at that position, see
/// [`crate::dedup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SourcePosition {
    pub commit_lsn: Lsn,
    pub lsn: Lsn,
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.commit_lsn, self.lsn)
    }
}

/// The stream a record came from and its place in it.
///
/// `seq` is the Kafka offset, or the 1-based line number for a file source; within one stream it
/// only grows, and the lake applies an entity's rows in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPos {
    pub stream: StreamId,
    pub seq: i64,
}

/// Where a record sits in Kafka, for the lake's `_kafka_*` columns and dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaCoords {
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// Identifies one ordered stream of records: a Kafka topic partition or a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    Kafka { topic: String, partition: i32 },
    File { name: String },
}

impl StreamId {
    /// The first position of the stream: Kafka offsets start at 0, file lines at 1.
    pub fn first_seq(&self) -> i64 {
        match self {
            StreamId::Kafka { .. } => 0,
            StreamId::File { .. } => 1,
        }
    }

    /// A name safe to use inside object names (`[A-Za-z0-9._-]`), unique per stream.
    pub fn object_name(&self) -> String {
        let raw = match self {
            StreamId::Kafka { topic, partition } => format!("{topic}-p{partition}"),
            StreamId::File { name } => format!("file-{name}"),
        };
        raw.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
            .collect()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Kafka { topic, partition } => write!(f, "{topic}[{partition}]"),
            StreamId::File { name } => write!(f, "file:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parses_both_forms() {
        assert_eq!(Lsn::parse("22910216"), Some(Lsn(22910216)));
        assert_eq!(Lsn::parse("16/B374D848"), Some(Lsn((0x16 << 32) | 0xB374D848)));
        assert_eq!(Lsn::parse("x/1"), None);
        assert_eq!(Lsn::parse(""), None);
        assert_eq!(Lsn::parse(" 42 "), Some(Lsn(42)));
        assert_eq!(Lsn::parse("18446744073709551615"), Some(Lsn(u64::MAX)));
        assert_eq!(Lsn::parse("18446744073709551616"), None);
        assert_eq!(Lsn::parse("-1"), None);
        assert_eq!(Lsn((0x16 << 32) | 0xB374D848).to_string(), "16/B374D848");
    }

    #[test]
    fn positions_order_by_commit_then_change_lsn() {
        // T2 commits first although T1 wrote earlier: T1's later change has a lower change LSN
        // than T2's, yet comes after it in commit order.
        let t2 = SourcePosition { commit_lsn: Lsn(90), lsn: Lsn(110) };
        let t1 = SourcePosition { commit_lsn: Lsn(120), lsn: Lsn(100) };
        assert!(t1 > t2);
    }

    #[test]
    fn stream_object_names_are_safe() {
        let s = StreamId::Kafka { topic: "eav.public/x".into(), partition: 3 };
        assert_eq!(s.object_name(), "eav.public_x-p3");
    }
}
