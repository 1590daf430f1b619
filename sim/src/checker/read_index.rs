//! Read indexes: a read's index holds every entry committed before it asked.
//!
//! A ReadIndex read is linearizable because the index raft confirms for it
//! is at least the commit index when it was asked: an entry applied on any
//! node before the read asked was committed by then, so the read's index
//! must reach it. The data checks see a read that used an older index only
//! when a write to the key it reads lies in between and has not been
//! applied where it runs; this sees every such read. It is fed from the
//! nodes' events as they happen (`Applied`, `ReadIndexAsked`,
//! `ReadIndexConfirmed`).

use std::collections::BTreeMap;

use super::Violation;

/// What the read indexes must reach, as the nodes report.
#[derive(Debug, Default)]
pub struct ReadIndexes {
    /// The highest index applied on any node so far (so committed).
    applied_max: u64,
    /// Per (node, token): the highest index applied anywhere when the read
    /// asked. A node counts tokens from 1 at every start, so a later read
    /// with the same token replaces an earlier one.
    floors: BTreeMap<(u64, u64), u64>,
    violation: Option<Violation>,
}

impl ReadIndexes {
    /// `index` was applied on some node.
    pub fn applied(&mut self, index: u64) {
        self.applied_max = self.applied_max.max(index);
    }

    /// Node `node`'s read `token` asked for a read index.
    pub fn asked(&mut self, node: u64, token: u64) {
        self.floors.insert((node, token), self.applied_max);
    }

    /// Node `node`'s read `token` got read index `index`; the first read
    /// whose index falls below what was applied when it asked is kept.
    pub fn confirmed(&mut self, node: u64, token: u64, index: u64) {
        let Some(floor) = self.floors.remove(&(node, token)) else { return };
        if index < floor && self.violation.is_none() {
            self.violation = Some(Violation::ReadIndexBehind { node, token, index, applied: floor });
        }
    }

    /// The first read that got an index behind what was applied when it
    /// asked.
    ///
    /// # Errors
    /// That read, as a violation.
    pub fn check(&self) -> Result<(), Violation> {
        self.violation.clone().map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_behind_what_was_applied_when_the_read_asked_is_reported() {
        let mut indexes = ReadIndexes::default();
        indexes.applied(7);
        indexes.asked(2, 1);
        indexes.confirmed(2, 1, 5);
        let violation = indexes.check().expect_err("index 5 is behind applied 7");
        assert_eq!(violation, Violation::ReadIndexBehind { node: 2, token: 1, index: 5, applied: 7 });
        assert!(violation.to_string().contains("read index 5"), "{violation}");
    }

    #[test]
    fn an_index_reaching_what_was_applied_passes() {
        let mut indexes = ReadIndexes::default();
        indexes.applied(7);
        indexes.asked(2, 1);
        indexes.applied(9);
        indexes.confirmed(2, 1, 7);
        assert_eq!(indexes.check(), Ok(()));
    }

    /// The bare-counter bug: a read of the node's previous run, answered
    /// late, and a read of the new run with the same token.
    #[test]
    fn a_late_answer_to_an_earlier_run_is_judged_against_the_new_read() {
        let mut indexes = ReadIndexes::default();
        indexes.applied(3);
        indexes.asked(1, 4);
        // The node restarts; writes commit; its new run's read 4 asks.
        indexes.applied(10);
        indexes.asked(1, 4);
        indexes.confirmed(1, 4, 3);
        assert!(matches!(indexes.check(), Err(Violation::ReadIndexBehind { index: 3, applied: 10, .. })));
    }

    #[test]
    fn an_answer_for_no_read_that_asked_is_ignored() {
        let mut indexes = ReadIndexes::default();
        indexes.applied(10);
        indexes.confirmed(1, 4, 3);
        assert_eq!(indexes.check(), Ok(()));
    }
}
