//! Dropping Debezium's re-sends.
//!
//! After a restart Debezium resumes from its last flushed offset and publishes a tail of changes
//! again, with the same source positions and new stream offsets. Along one stream, streamed
//! changes arrive in non-decreasing [`SourcePosition`] (commit order, then change LSN within the
//! transaction), so a change below the highest position already applied is a re-send.
//! The change LSN alone would not do: LSNs of concurrent transactions interleave, and a
//! transaction that committed later may hold changes with lower LSNs than one committed before.
//!
//! Positions repeat: the rows of one multi-row WAL record (`COPY` writes up to 1,000 rows per
//! record) all carry that record's LSN. So at the highest position the filter also keeps which
//! rows it applied there ([`RowKey`]: a row's primary key), and a change at that position is a
//! re-send only if its row is among them. Rows of one WAL record are distinct rows of one table,
//! so a new row there is a new change.
//!
//! Snapshot reads (`op = r`) all carry the snapshot's LSN and are idempotent upserts, so they are
//! never dropped and never move the mark.

use crate::decode::{Op, RowChange, SourceMeta};
use crate::position::SourcePosition;
use serde::{Deserialize, Serialize};

/// Verdict on one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// Already applied: below the mark, or a row already applied at the mark.
    Duplicate,
}

/// A changed row's primary key, as far as telling rows of one WAL record apart needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKey {
    Attribute(i64),
    Entity(i64),
    /// `(entity_id, attribute_id)`.
    Value(i64, i64),
}

impl RowKey {
    /// The key of the image `op` uses (the old one for a delete); `None` when that image is
    /// missing.
    pub fn of(op: Op, row: &RowChange) -> Option<RowKey> {
        fn image<'a, T>(op: Op, before: &'a Option<T>, after: &'a Option<T>) -> Option<&'a T> {
            if op == Op::Delete { before } else { after }.as_ref()
        }
        match row {
            RowChange::Attribute { before, after } => {
                image(op, before, after).map(|r| RowKey::Attribute(r.attribute_id))
            }
            RowChange::Entity { before, after } => image(op, before, after).map(|r| RowKey::Entity(r.entity_id)),
            RowChange::Value { before, after } => {
                image(op, before, after).map(|r| RowKey::Value(r.entity_id, r.attribute_id))
            }
        }
    }
}

/// The filter's state: the highest position applied and the rows applied at exactly that
/// position. It is part of a stream's progress, saved with the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub position: SourcePosition,
    /// In the order applied. The first is held inline: nearly every position has one row, and
    /// a mark is copied for every change (as the state before it), so that copy allocates nothing.
    first: Option<RowKey>,
    more: Vec<RowKey>,
}

impl Mark {
    /// A mark at `position` with `rows` applied there. No rows means not known (a change
    /// without a key, or a progress record written before rows were kept): every change at
    /// `position` then counts as applied, as it did before rows were kept.
    pub fn new(position: SourcePosition, rows: impl IntoIterator<Item = RowKey>) -> Mark {
        let mut rows = rows.into_iter();
        Mark { position, first: rows.next(), more: rows.collect() }
    }

    pub fn rows(&self) -> impl Iterator<Item = RowKey> + '_ {
        self.first.iter().chain(&self.more).copied()
    }

    fn rows_len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// The earlier of two states of one filter: the lower position or, at one position, the
    /// fewer rows (rows at a position are only ever added).
    pub fn earliest(a: Option<Mark>, b: Option<Mark>) -> Option<Mark> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if (b.position, b.rows_len()) < (a.position, a.rows_len()) { b } else { a }),
            // No mark is the earliest state of all.
            _ => None,
        }
    }
}

/// Duplicate filter for one stream. Its mark is part of the stream's progress, saved with the
/// data so that re-sends spanning a restart of eavlake are caught too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dedup {
    mark: Option<Mark>,
}

impl Dedup {
    pub fn resume(mark: Option<Mark>) -> Dedup {
        Dedup { mark }
    }

    /// The filter's state: the highest position applied, and its rows.
    pub fn mark(&self) -> Option<&Mark> {
        self.mark.as_ref()
    }

    /// Decides on a change of `row` (its key, see [`RowKey::of`]) and, when it is applied,
    /// raises the mark or adds the row to it.
    pub fn check(&mut self, source: &SourceMeta, row: Option<RowKey>) -> Verdict {
        if source.snapshot {
            return Verdict::Apply;
        }
        match &mut self.mark {
            Some(mark) if source.position < mark.position => Verdict::Duplicate,
            Some(mark) if source.position == mark.position => match (row, mark.first) {
                // A further row of the mark's WAL record.
                (Some(key), Some(_)) if !mark.rows().any(|r| r == key) => {
                    mark.more.push(key);
                    Verdict::Apply
                }
                _ => Verdict::Duplicate,
            },
            Some(mark) => {
                mark.position = source.position;
                mark.first = row;
                mark.more.clear();
                Verdict::Apply
            }
            None => {
                self.mark = Some(Mark::new(source.position, row));
                Verdict::Apply
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Lsn;

    fn at(commit: u64, lsn: u64) -> SourceMeta {
        SourceMeta { position: pos(commit, lsn), ..SourceMeta::default() }
    }

    fn pos(commit: u64, lsn: u64) -> SourcePosition {
        SourcePosition { commit_lsn: Lsn(commit), lsn: Lsn(lsn) }
    }

    const E1: Option<RowKey> = Some(RowKey::Entity(1));

    #[test]
    fn interleaved_transactions_are_not_mistaken_for_resends() {
        let mut d = Dedup::default();
        // T2 (changes at 110, 115) commits before T1 (changes at 100, 130).
        assert_eq!(d.check(&at(90, 110), E1), Verdict::Apply);
        assert_eq!(d.check(&at(90, 115), E1), Verdict::Apply);
        assert_eq!(d.check(&at(120, 100), E1), Verdict::Apply, "lower change LSN, later transaction");
        assert_eq!(d.check(&at(120, 130), E1), Verdict::Apply);
        // Debezium restarts and re-sends from T2's second change.
        assert_eq!(d.check(&at(90, 115), E1), Verdict::Duplicate);
        assert_eq!(d.check(&at(120, 100), E1), Verdict::Duplicate);
        assert_eq!(d.check(&at(120, 130), E1), Verdict::Duplicate);
        assert_eq!(d.check(&at(140, 135), E1), Verdict::Apply);
        assert_eq!(d.mark(), Some(&Mark::new(pos(140, 135), E1)));
    }

    #[test]
    fn rows_of_one_wal_record_are_all_applied_and_their_resends_dropped() {
        // A COPY: three entities, one WAL record, one position; then the next record.
        let mut d = Dedup::default();
        let copied = [RowKey::Entity(1), RowKey::Entity(2), RowKey::Value(1, 7)];
        for key in copied {
            assert_eq!(d.check(&at(90, 100), Some(key)), Verdict::Apply, "{key:?}");
        }
        assert_eq!(d.mark(), Some(&Mark::new(pos(90, 100), copied)));
        // Debezium restarts inside the record and re-sends part of it, then what follows.
        assert_eq!(d.check(&at(90, 100), Some(RowKey::Entity(2))), Verdict::Duplicate);
        assert_eq!(d.check(&at(90, 100), Some(RowKey::Value(1, 7))), Verdict::Duplicate);
        assert_eq!(d.check(&at(90, 100), Some(RowKey::Entity(3))), Verdict::Apply, "a row not sent before");
        assert_eq!(d.check(&at(90, 120), E1), Verdict::Apply);
        // Rows of a record below the mark are re-sends, whatever the row.
        assert_eq!(d.check(&at(90, 100), Some(RowKey::Entity(4))), Verdict::Duplicate);
    }

    #[test]
    fn a_mark_without_rows_counts_every_change_at_its_position_as_applied() {
        // A progress record written before rows were kept, or a change without a key.
        let mut d = Dedup::resume(Some(Mark::new(pos(90, 100), None)));
        assert_eq!(d.check(&at(90, 100), E1), Verdict::Duplicate);
        let mut d = Dedup::default();
        assert_eq!(d.check(&at(90, 100), None), Verdict::Apply);
        assert_eq!(d.check(&at(90, 100), E1), Verdict::Duplicate);
        assert_eq!(d.check(&at(90, 100), None), Verdict::Duplicate);
    }

    #[test]
    fn earliest_of_two_states() {
        let one = Mark::new(pos(90, 100), E1);
        let two = Mark::new(pos(90, 100), [RowKey::Entity(1), RowKey::Entity(2)]);
        let later = Mark::new(pos(95, 10), E1);
        assert_eq!(Mark::earliest(Some(two.clone()), Some(one.clone())), Some(one.clone()));
        assert_eq!(Mark::earliest(Some(one.clone()), Some(later.clone())), Some(one.clone()));
        assert_eq!(Mark::earliest(Some(later), Some(two.clone())), Some(two));
        assert_eq!(Mark::earliest(None, Some(one)), None);
    }

    #[test]
    fn row_keys_come_from_the_image_the_operation_uses() {
        use crate::decode::{Field, ValueRow};
        let value = |entity_id| ValueRow {
            entity_id,
            attribute_id: 7,
            tenant_id: None,
            value_text: Field::Null,
            value_int: Some(1),
            value_decimal: None,
            value_bool: None,
            value_timestamp: None,
            value_json: Field::Null,
        };
        let row = RowChange::Value { before: Some(value(1)), after: Some(value(2)) };
        assert_eq!(RowKey::of(Op::Update, &row), Some(RowKey::Value(2, 7)));
        assert_eq!(RowKey::of(Op::Delete, &row), Some(RowKey::Value(1, 7)));
        assert_eq!(RowKey::of(Op::Delete, &RowChange::Value { before: None, after: Some(value(2)) }), None);
    }

    #[test]
    fn snapshot_reads_always_apply() {
        let mut d = Dedup::resume(Some(Mark::new(pos(500, 500), E1)));
        let mut snap = at(10, 10);
        snap.snapshot = true;
        assert_eq!(d.check(&snap, E1), Verdict::Apply);
        assert_eq!(d.check(&snap, E1), Verdict::Apply);
        assert_eq!(d.mark(), Some(&Mark::new(pos(500, 500), E1)));
    }
}
