//! Election safety: at most one leader per term.

use std::collections::BTreeMap;

use super::violation::Violation;

/// A node observed in the leader role in a term, recorded at every role change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderObserved {
    pub term: u64,
    pub node: u64,
}

/// Checks that no two different nodes were observed as leader in the same term. The same node seen
/// several times in a term is fine.
///
/// # Errors
/// [`Violation::TwoLeaders`] for the first observation that names a second leader of a term.
pub fn check_election_safety(observations: &[LeaderObserved]) -> Result<(), Violation> {
    let mut leaders: BTreeMap<u64, u64> = BTreeMap::new();
    for observation in observations {
        let first = *leaders.entry(observation.term).or_insert(observation.node);
        if first != observation.node {
            return Err(Violation::TwoLeaders { term: observation.term, first, second: observation.node });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_per_term_passes() {
        let observations = [
            LeaderObserved { term: 1, node: 1 },
            LeaderObserved { term: 2, node: 2 },
            LeaderObserved { term: 1, node: 1 },
            LeaderObserved { term: 3, node: 1 },
        ];
        assert_eq!(check_election_safety(&observations), Ok(()));
    }

    #[test]
    fn two_leaders_in_one_term_is_a_violation() {
        let observations = [
            LeaderObserved { term: 1, node: 1 },
            LeaderObserved { term: 2, node: 2 },
            LeaderObserved { term: 2, node: 3 },
        ];
        let violation = check_election_safety(&observations).unwrap_err();
        assert_eq!(violation, Violation::TwoLeaders { term: 2, first: 2, second: 3 });
        assert_eq!(violation.to_string(), "term 2 has two leaders: node 2 and node 3");
    }
}
