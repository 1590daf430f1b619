//! The log's in-memory state, and the replay of records that rebuilds it.

use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};

use super::record::Record;

/// Everything the store knows: the compaction point, the raft metadata and
/// the entries after the compaction point.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogState {
    /// The snapshot the log was last compacted to (index 0: none).
    pub snapshot: SnapshotMetadata,
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Contiguous entries from `snapshot.index + 1`.
    pub entries: Vec<Entry>,
}

impl LogState {
    /// The index of the first entry (there may be none yet).
    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    /// The index of the last entry, or the snapshot index if there is none.
    pub fn last_index(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }

    /// Appends entries, discarding the existing ones at or after the first.
    ///
    /// # Panics
    /// If the entries are not contiguous, start at or below the snapshot
    /// index, or leave a gap after the last index: raft never asks for that.
    pub fn append(&mut self, entries: &[Entry]) {
        self.check_append(entries);
        let Some(first) = entries.first() else { return };
        let kept = (first.index - self.first_index()) as usize;
        self.entries.truncate(kept);
        self.entries.extend_from_slice(entries);
    }

    /// Panics unless [`LogState::append`] may take these entries.
    pub fn check_append(&self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        for pair in entries.windows(2) {
            assert_eq!(pair[0].index + 1, pair[1].index, "raft bug: appended entries are not contiguous");
        }
        assert!(
            first.index > self.snapshot.index,
            "raft bug: appending entry {} at or below the snapshot index {}",
            first.index,
            self.snapshot.index
        );
        assert!(
            first.index <= self.last_index() + 1,
            "raft bug: appending entry {} leaves a gap after the last index {}",
            first.index,
            self.last_index()
        );
    }

    /// Drops the entries up to the metadata's index, which must be in the
    /// log. A compaction to an older point than the current one is ignored.
    pub fn compact(&mut self, metadata: &SnapshotMetadata) {
        if metadata.index <= self.snapshot.index {
            return;
        }
        self.check_compact(metadata);
        self.entries.drain(..(metadata.index - self.snapshot.index) as usize);
        self.snapshot = metadata.clone();
    }

    /// Panics if the compaction point is past the last index.
    pub fn check_compact(&self, metadata: &SnapshotMetadata) {
        assert!(
            metadata.index <= self.last_index(),
            "compacting to {} beyond the last index {}",
            metadata.index,
            self.last_index()
        );
    }

    /// The state after replacing the whole log with a snapshot point.
    pub fn restored(&self, metadata: &SnapshotMetadata) -> LogState {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = hard_state.commit.max(metadata.index);
        hard_state.term = hard_state.term.max(metadata.term);
        LogState {
            snapshot: metadata.clone(),
            hard_state,
            conf_state: metadata.get_conf_state().clone(),
            entries: Vec::new(),
        }
    }

    /// Asserts the invariants every operation keeps.
    pub fn check_invariants(&self) {
        for (offset, entry) in self.entries.iter().enumerate() {
            assert_eq!(entry.index, self.first_index() + offset as u64, "log entries are not contiguous");
        }
    }
}

/// Rebuilds a [`LogState`] from records.
///
/// Deleting old segments can remove entries that a later compaction record
/// covers, so replay of the oldest remaining segment may meet an entry past
/// the end of an empty log. It then starts the entries there (`base` is the
/// index before the first entry) and [`Replay::finish`] checks that a
/// compaction reached `base` by the end; otherwise entries are really lost.
#[derive(Debug, Default)]
pub struct Replay {
    state: LogState,
    base: u64,
}

impl Replay {
    /// A replay from the empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn last_index(&self) -> u64 {
        self.base + self.state.entries.len() as u64
    }

    /// Applies one record, or says why it cannot follow the earlier ones.
    pub fn apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Entry(entry) => return self.apply_entry(entry),
            Record::HardState(hard_state) => self.state.hard_state = hard_state,
            Record::ConfState(conf_state) => self.state.conf_state = conf_state,
            Record::Compact(metadata) => self.apply_compact(metadata),
            Record::Restore(metadata) => {
                self.state.entries.clear();
                self.base = metadata.index;
                self.state.snapshot = metadata;
            }
        }
        Ok(())
    }

    fn apply_entry(&mut self, entry: Entry) -> Result<(), String> {
        let index = entry.index;
        if index <= self.state.snapshot.index {
            return Err(format!("entry {index} is at or below the snapshot index {}", self.state.snapshot.index));
        }
        let last = self.last_index();
        if index > last + 1 && !self.state.entries.is_empty() {
            return Err(format!("entry {index} leaves a gap after entry {last}"));
        }
        if index <= self.base || index > last + 1 {
            // Restart the entries here; `finish` checks the gap is covered.
            self.state.entries.clear();
            self.base = index - 1;
        } else {
            self.state.entries.truncate((index - self.base - 1) as usize);
        }
        self.state.entries.push(entry);
        Ok(())
    }

    fn apply_compact(&mut self, metadata: SnapshotMetadata) {
        if metadata.index <= self.state.snapshot.index {
            return;
        }
        let dropped = metadata.index.saturating_sub(self.base).min(self.state.entries.len() as u64);
        self.state.entries.drain(..dropped as usize);
        self.base = self.base.max(metadata.index);
        self.state.snapshot = metadata;
    }

    /// The rebuilt state, or why entries are missing from it.
    pub fn finish(self) -> Result<LogState, String> {
        if self.base != self.state.snapshot.index {
            return Err(format!(
                "entries {} to {} are missing (deleted without a compaction covering them)",
                self.state.snapshot.index + 1,
                self.base
            ));
        }
        Ok(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    fn metadata(index: u64, term: u64) -> SnapshotMetadata {
        SnapshotMetadata { index, term, ..Default::default() }
    }

    fn replay(records: Vec<Record>) -> Result<LogState, String> {
        let mut replay = Replay::new();
        for record in records {
            replay.apply(record)?;
        }
        replay.finish()
    }

    #[test]
    fn append_truncates_the_conflicting_suffix() {
        let mut state = LogState::default();
        state.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        state.append(&[entry(2, 2)]);
        assert_eq!(state.entries, vec![entry(1, 1), entry(2, 2)]);
        state.check_invariants();
    }

    #[test]
    #[should_panic(expected = "leaves a gap")]
    fn append_with_a_gap_panics() {
        LogState::default().append(&[entry(2, 1)]);
    }

    #[test]
    fn replay_matches_live_operations() {
        let mut live = LogState::default();
        live.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        live.append(&[entry(3, 2), entry(4, 2)]);
        live.compact(&metadata(2, 1));
        let records = vec![
            Record::Entry(entry(1, 1)),
            Record::Entry(entry(2, 1)),
            Record::Entry(entry(3, 1)),
            Record::Entry(entry(3, 2)),
            Record::Entry(entry(4, 2)),
            Record::Compact(metadata(2, 1)),
        ];
        assert_eq!(replay(records), Ok(live));
    }

    #[test]
    fn replay_accepts_a_gap_covered_by_a_later_compaction() {
        let records = vec![Record::Entry(entry(11, 2)), Record::Entry(entry(12, 2)), Record::Compact(metadata(11, 2))];
        let state = replay(records).expect("gap is covered");
        assert_eq!(state.entries, vec![entry(12, 2)]);
        assert_eq!(state.first_index(), 12);
    }

    #[test]
    fn replay_rejects_an_uncovered_gap() {
        let error = replay(vec![Record::Entry(entry(5, 1))]).expect_err("entries 1..=4 are missing");
        assert!(error.contains("entries 1 to 4 are missing"), "{error}");
        let error = replay(vec![Record::Entry(entry(1, 1)), Record::Entry(entry(3, 1))]).expect_err("gap");
        assert!(error.contains("gap"), "{error}");
    }
}
