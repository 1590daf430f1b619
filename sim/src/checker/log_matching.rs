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
    for (i, &(&a, log_a)) in nodes.iter().enumerate() {
        for &(&b, log_b) in &nodes[i + 1..] {
            check_pair((a, log_a), (b, log_b))?;
        }
    }
    Ok(())
}

/// Checks node `node`'s log against every other.
///
/// # Errors
/// As [`check_log_matching`].
pub fn check_log_matching_of(logs: &BTreeMap<u64, LogCopy>, node: u64) -> Result<(), Violation> {
    let Some(log) = logs.get(&node) else { return Ok(()) };
    for (&other, other_log) in logs.iter().filter(|(&other, _)| other != node) {
        // In node order, as the whole check reports them.
        match node < other {
            true => check_pair((node, log), (other, other_log))?,
            false => check_pair((other, other_log), (node, log))?,
        }
    }
    Ok(())
}

/// After the heal, once the members agree on an applied index: every
/// member's log is a prefix of the leader's (each entry both hold is the
/// same, and none goes past the leader's last index). Entries a copy lacks
/// (compacted before a restart or a snapshot install) are not compared.
///
/// # Errors
/// [`Violation::LogNotPrefix`] for the first member that is not.
pub fn check_prefix_of_leader(logs: &BTreeMap<u64, LogCopy>, leader: u64, members: &[u64]) -> Result<(), Violation> {
    let Some(leader_log) = logs.get(&leader) else { return Ok(()) };
    let leader_last = leader_log.keys().next_back().copied().unwrap_or(0);
    for &node in members.iter().filter(|&&node| node != leader) {
        let Some(log) = logs.get(&node) else { continue };
        for (&index, entry) in log {
            let parts = index > leader_last || leader_log.get(&index).is_some_and(|other| other != entry);
            if parts {
                return Err(Violation::LogNotPrefix { node, leader, index });
            }
        }
    }
    Ok(())
}

fn check_pair((a, log_a): (u64, &LogCopy), (b, log_b): (u64, &LogCopy)) -> Result<(), Violation> {
    // The highest index both hold with the same term.
    let Some(agreed) = log_a
        .iter()
        .rev()
        .find(|(index, (term, _))| log_b.get(index).is_some_and(|(other, _)| other == term))
        .map(|(index, _)| *index)
    else {
        return Ok(());
    };
    for (index, entry) in log_a.range(..=agreed) {
        if let Some(other) = log_b.get(index) {
            if other != entry {
                return Err(Violation::LogMismatch { nodes: (a, b), agreed, differs: *index });
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
    fn after_the_heal_every_log_is_a_prefix_of_the_leaders() {
        let mut logs = BTreeMap::new();
        logs.insert(1, log(&[(1, 1, 10), (2, 1, 20), (3, 3, 31)]));
        logs.insert(2, log(&[(1, 1, 10), (2, 1, 20)]));
        logs.insert(3, log(&[(3, 3, 31)])); // compacted below 3
        assert_eq!(check_prefix_of_leader(&logs, 1, &[1, 2, 3]), Ok(()));
        // A stale entry of an old term where the leader has another.
        logs.insert(2, log(&[(1, 1, 10), (2, 1, 20), (3, 2, 30)]));
        assert_eq!(
            check_prefix_of_leader(&logs, 1, &[1, 2, 3]),
            Err(Violation::LogNotPrefix { node: 2, leader: 1, index: 3 })
        );
        // A suffix past the leader's last index.
        logs.insert(2, log(&[(1, 1, 10), (2, 1, 20), (3, 3, 31), (4, 2, 40)]));
        assert_eq!(
            check_prefix_of_leader(&logs, 1, &[2]),
            Err(Violation::LogNotPrefix { node: 2, leader: 1, index: 4 })
        );
    }

    #[test]
    fn a_stale_suffix_behind_overwritten_entries_is_caught() {
        // Node 2 overwrote 2..3 with term 3 but kept 4 of term 2, which
        // node 1 (the deposed leader) also holds.
        let mut logs = BTreeMap::new();
        logs.insert(1, log(&[(1, 1, 10), (2, 2, 20), (3, 2, 30), (4, 2, 40)]));
        logs.insert(2, log(&[(1, 1, 10), (2, 3, 21), (3, 3, 31), (4, 2, 40)]));
        assert_eq!(check_log_matching(&logs), Err(Violation::LogMismatch { nodes: (1, 2), agreed: 4, differs: 2 }));
        let expected = Err(Violation::LogMismatch { nodes: (1, 2), agreed: 4, differs: 2 });
        assert_eq!(check_log_matching_of(&logs, 2), expected);
        assert_eq!(check_log_matching_of(&logs, 1), expected);
        // A third log that agrees with both where they agree is not to blame.
        logs.insert(3, log(&[(1, 1, 10)]));
        assert_eq!(check_log_matching_of(&logs, 3), Ok(()));
    }
}
