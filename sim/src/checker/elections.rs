//! Election safety: at most one leader per term, and (what it rests on) at
//! most one vote per node per term.

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

/// A node granted its vote to `candidate` in `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteObserved {
    pub node: u64,
    pub term: u64,
    pub candidate: u64,
}

/// Checks that no node granted votes to two different candidates in one term
/// (a vote granted again to the same candidate is fine).
///
/// # Errors
/// [`Violation::TwoVotes`] for the first vote that contradicts an earlier one.
pub fn check_votes(votes: &[VoteObserved]) -> Result<(), Violation> {
    let mut granted: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for vote in votes {
        let first = *granted.entry((vote.node, vote.term)).or_insert(vote.candidate);
        if first != vote.candidate {
            return Err(Violation::TwoVotes { node: vote.node, term: vote.term, first, second: vote.candidate });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vote_per_node_and_term_passes() {
        let votes = [
            VoteObserved { node: 1, term: 2, candidate: 2 },
            VoteObserved { node: 1, term: 2, candidate: 2 },
            VoteObserved { node: 1, term: 3, candidate: 3 },
            VoteObserved { node: 3, term: 2, candidate: 3 },
        ];
        assert_eq!(check_votes(&votes), Ok(()));
    }

    #[test]
    fn two_candidates_in_one_term_from_one_node_is_a_violation() {
        let votes = [
            VoteObserved { node: 1, term: 2, candidate: 2 },
            VoteObserved { node: 3, term: 2, candidate: 3 },
            VoteObserved { node: 1, term: 2, candidate: 3 },
        ];
        let violation = check_votes(&votes).unwrap_err();
        assert_eq!(violation, Violation::TwoVotes { node: 1, term: 2, first: 2, second: 3 });
        assert_eq!(violation.to_string(), "node 1 voted twice in term 2: for node 2 and for node 3");
    }

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
