//! Log Matching, checked across nodes from god's-eye copies of their logs
//! (fed by the nodes' `LogReset`/`LogAppended` events): if two logs hold an
//! entry with the same index and term, they are identical up to it. Only
//! applied entries are checked elsewhere; this covers the uncommitted
//! suffixes where a log that truncates wrongly hides.

use std::collections::BTreeMap;

use super::violation::Violation;

/// One node's log: index -> (term, crc32c of the data).
pub type LogCopy = BTreeMap<u64, (u64, u32)>;

/// Checks every pair of logs.
///
/// # Errors
/// [`Violation::LogMismatch`] naming the two nodes, the index where both
/// hold the same term, and a lower index where they differ.
pub fn check_log_matching(logs: &BTreeMap<u64, LogCopy>) -> Result<(), Violation> {
    let nodes: Vec<(&u64, &LogCopy)> = logs.iter().collect();
    for (i, (a, log_a)) in nodes.iter().enumerate() {
        for (b, log_b) in &nodes[i + 1..] {
            // The highest index both hold with the same term.
            let Some(agreed) = log_a
                .iter()
                .rev()
                .find(|(index, (term, _))| log_b.get(index).is_some_and(|(other, _)| other == term))
                .map(|(index, _)| *index)
            else {
                continue;
            };
            for (index, entry) in log_a.range(..=agreed) {
                if let Some(other) = log_b.get(index) {
                    if other != entry {
                        return Err(Violation::LogMismatch { nodes: (**a, **b), agreed, differs: *index });
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(entries: &[(u64, u64, u32)]) -> LogCopy {
        entries.iter().map(|&(index, term, crc)| (index, (term, crc))).collect()
    }

    #[test]
    fn logs_that_agree_or_only_diverge_at_the_end_pass() {
        let mut logs = BTreeMap::new();
        logs.insert(1, log(&[(1, 1, 10), (2, 1, 20), (3, 2, 30)]));
        logs.insert(2, log(&[(1, 1, 10), (2, 1, 20), (3, 3, 31), (4, 3, 41)]));
        logs.insert(3, log(&[(2, 1, 20)]));
        assert_eq!(check_log_matching(&logs), Ok(()));
    }

    #[test]
    fn a_stale_suffix_behind_overwritten_entries_is_caught() {
        // Node 2 overwrote 2..3 with term 3 but kept 4 of term 2, which
        // node 1 (the deposed leader) also holds.
        let mut logs = BTreeMap::new();
        logs.insert(1, log(&[(1, 1, 10), (2, 2, 20), (3, 2, 30), (4, 2, 40)]));
        logs.insert(2, log(&[(1, 1, 10), (2, 3, 21), (3, 3, 31), (4, 2, 40)]));
        assert_eq!(check_log_matching(&logs), Err(Violation::LogMismatch { nodes: (1, 2), agreed: 4, differs: 2 }));
    }
}
