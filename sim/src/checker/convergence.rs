//! Replica convergence: after the liveness phase every live replica applied the same log to the same
//! state.

use std::fmt;

use super::violation::Violation;

/// What one live replica reports at the end of the liveness phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub node: u64,
    pub applied_index: u64,
    /// Ordered hash of every table.
    pub digest: u64,
}

/// Checks that every one of `members` reported, and that all `replicas`
/// have the applied index and digest of the first one.
///
/// # Errors
/// [`Violation::NoReplicas`] for an empty slice; [`Violation::Unanswered`]
/// naming members without a report; [`Violation::Divergence`] naming the
/// first replica and every replica that differs from it.
pub fn check_convergence(members: &[u64], replicas: &[ReplicaState]) -> Result<(), Violation> {
    let Some(&reference) = replicas.first() else { return Err(Violation::NoReplicas) };
    let missing: Vec<u64> =
        members.iter().copied().filter(|member| !replicas.iter().any(|replica| replica.node == *member)).collect();
    if !missing.is_empty() {
        return Err(Violation::Unanswered { nodes: missing });
    }
    let differing: Vec<ReplicaState> = replicas
        .iter()
        .filter(|replica| (replica.applied_index, replica.digest) != (reference.applied_index, reference.digest))
        .copied()
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    assert!(differing.len() < replicas.len(), "the reference never differs from itself");
    Err(Violation::Divergence { reference, differing })
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "node {} (applied {}, digest {:#x})", self.node, self.applied_index, self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes_of(replicas: &[ReplicaState]) -> Vec<u64> {
        replicas.iter().map(|replica| replica.node).collect()
    }

    #[test]
    fn a_member_that_never_answered_is_a_violation() {
        let replicas = [
            ReplicaState { node: 1, applied_index: 9, digest: 0xd },
            ReplicaState { node: 3, applied_index: 9, digest: 0xd },
        ];
        assert_eq!(check_convergence(&[1, 2, 3], &replicas), Err(Violation::Unanswered { nodes: vec![2] }));
    }

    #[test]
    fn equal_replicas_pass() {
        let replicas = [
            ReplicaState { node: 1, applied_index: 9, digest: 0xd },
            ReplicaState { node: 2, applied_index: 9, digest: 0xd },
            ReplicaState { node: 3, applied_index: 9, digest: 0xd },
        ];
        assert_eq!(check_convergence(&nodes_of(&replicas), &replicas), Ok(()));
    }

    #[test]
    fn differing_replicas_are_named() {
        let reference = ReplicaState { node: 1, applied_index: 9, digest: 0xd };
        let behind = ReplicaState { node: 2, applied_index: 8, digest: 0xd };
        let different = ReplicaState { node: 4, applied_index: 9, digest: 0xe };
        let replicas = [reference, behind, ReplicaState { node: 3, ..reference }, different];
        let violation = check_convergence(&nodes_of(&replicas), &replicas).unwrap_err();
        assert_eq!(violation, Violation::Divergence { reference, differing: vec![behind, different] });
        assert_eq!(
            violation.to_string(),
            "replicas diverge from node 1 (applied 9, digest 0xd):\n  node 2 (applied 8, digest 0xd)\n  \
             node 4 (applied 9, digest 0xe)"
        );
    }

    #[test]
    fn no_replicas_is_a_violation() {
        assert_eq!(check_convergence(&[], &[]), Err(Violation::NoReplicas));
    }
}
