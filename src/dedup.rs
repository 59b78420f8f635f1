//! Dropping Debezium's re-sends.
//!
//! After a restart Debezium resumes from its last flushed offset and publishes a tail of changes
//! again, with the same source positions and new stream offsets. Along one stream, streamed
//! changes arrive in strictly increasing [`SourcePosition`] (commit order, then change LSN within
//! the transaction), so a change at or below the highest position already applied is a re-send.
//! The change LSN alone would not do: LSNs of concurrent transactions interleave, and a
//! transaction that committed later may hold changes with lower LSNs than one committed before.
//!
//! Snapshot reads (`op = r`) all carry the snapshot's LSN and are idempotent upserts, so they are
//! never dropped and never move the mark.

use crate::decode::SourceMeta;
use crate::position::SourcePosition;

/// Verdict on one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// Already applied: at or below the mark.
    Duplicate {
        mark: SourcePosition,
    },
}

/// Duplicate filter for one stream. Its mark is part of the stream's progress, saved with the
/// data so that re-sends spanning a restart of eavlake are caught too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dedup {
    mark: Option<SourcePosition>,
}

impl Dedup {
    pub fn resume(mark: Option<SourcePosition>) -> Dedup {
        Dedup { mark }
    }

    /// The highest position applied so far.
    pub fn mark(&self) -> Option<SourcePosition> {
        self.mark
    }

    /// Decides on a change and, when it is applied, raises the mark.
    pub fn check(&mut self, source: &SourceMeta) -> Verdict {
        if source.snapshot {
            return Verdict::Apply;
        }
        match self.mark {
            Some(mark) if source.position <= mark => Verdict::Duplicate { mark },
            _ => {
                self.mark = Some(source.position);
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
        SourceMeta { position: SourcePosition { commit_lsn: Lsn(commit), lsn: Lsn(lsn) }, ..SourceMeta::default() }
    }

    #[test]
    fn interleaved_transactions_are_not_mistaken_for_resends() {
        let mut d = Dedup::default();
        // T2 (changes at 110, 115) commits before T1 (changes at 100, 130).
        assert_eq!(d.check(&at(90, 110)), Verdict::Apply);
        assert_eq!(d.check(&at(90, 115)), Verdict::Apply);
        assert_eq!(d.check(&at(120, 100)), Verdict::Apply, "lower change LSN, later transaction");
        assert_eq!(d.check(&at(120, 130)), Verdict::Apply);
        // Debezium restarts and re-sends from T2's second change.
        assert!(matches!(d.check(&at(90, 115)), Verdict::Duplicate { .. }));
        assert!(matches!(d.check(&at(120, 100)), Verdict::Duplicate { .. }));
        assert!(matches!(d.check(&at(120, 130)), Verdict::Duplicate { .. }));
        assert_eq!(d.check(&at(140, 135)), Verdict::Apply);
        assert_eq!(d.mark(), Some(SourcePosition { commit_lsn: Lsn(140), lsn: Lsn(135) }));
    }

    #[test]
    fn snapshot_reads_always_apply() {
        let mut d = Dedup::resume(Some(SourcePosition { commit_lsn: Lsn(500), lsn: Lsn(500) }));
        let mut snap = at(10, 10);
        snap.snapshot = true;
        assert_eq!(d.check(&snap), Verdict::Apply);
        assert_eq!(d.check(&snap), Verdict::Apply);
        assert_eq!(d.mark(), Some(SourcePosition { commit_lsn: Lsn(500), lsn: Lsn(500) }));
    }
}
