//! State machine safety: an index reported committed or applied anywhere always holds the same entry.

use std::collections::BTreeMap;

use super::violation::Violation;

/// A node reported the entry at `index` committed or applied. `digest` identifies the entry: its term,
/// or better a hash of (term, data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    pub node: u64,
    pub index: u64,
    pub digest: u64,
}

/// Checks that no index was reported with two different digests.
///
/// # Errors
/// [`Violation::CommittedConflict`] naming the first report of the index and the first one that
/// contradicts it.
pub fn check_committed(entries: &[CommittedEntry]) -> Result<(), Violation> {
    let mut first_reports: BTreeMap<u64, CommittedEntry> = BTreeMap::new();
    for entry in entries {
        let first = *first_reports.entry(entry.index).or_insert(*entry);
        assert_eq!(first.index, entry.index);
        if first.digest != entry.digest {
            return Err(Violation::CommittedConflict { index: entry.index, first, second: *entry });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_entry_everywhere_passes() {
        let entries = [
            CommittedEntry { node: 1, index: 1, digest: 0xa },
            CommittedEntry { node: 2, index: 1, digest: 0xa },
            CommittedEntry { node: 2, index: 2, digest: 0xb },
        ];
        assert_eq!(check_committed(&entries), Ok(()));
    }

    #[test]
    fn two_entries_at_one_index_is_a_violation() {
        let first = CommittedEntry { node: 1, index: 5, digest: 0xa };
        let second = CommittedEntry { node: 3, index: 5, digest: 0xb };
        let violation = check_committed(&[first, CommittedEntry { node: 2, index: 4, digest: 0xc }, second]);
        assert_eq!(violation, Err(Violation::CommittedConflict { index: 5, first, second }));
        assert_eq!(
            violation.unwrap_err().to_string(),
            "index 5 committed twice with different entries: node 1 saw 0xa, node 3 saw 0xb"
        );
    }
}
