//! Committed entries, applied off the node: the state machine travels to
//! the host's worker with the steps the node planned for a run of write
//! entries (commit the leader's open batch, apply another's row changes,
//! record an empty entry), and comes back once they are done. The node
//! answers the clients of those entries only then. Membership changes,
//! rare and small, apply on the node itself, between such runs.

use deeb_proto::WriteBatch;

use super::writes::Outcomes;
use crate::sql::{Applied, ApplyError};
use crate::state_machine::StateMachine;

/// A run of committed entries to apply, with the state machine. The host
/// takes it with `Node::entries_to_apply` after `Output::ApplyEntries`,
/// runs [`EntriesToApply::apply`] on its worker and hands the result to
/// `Node::entries_applied`.
pub struct EntriesToApply<S> {
    pub(super) sm: S,
    pub(super) steps: Vec<Step>,
}

/// What applying one entry takes.
pub(super) enum Step {
    /// The leader's own batch, the last kept in its open transaction:
    /// commit that transaction as the entry.
    Commit(Applied),
    /// The leader's own batch, kept in its open transaction with later
    /// ones: committed with the last of them (the next steps).
    Kept(Applied),
    /// Row changes executed elsewhere (or on this node, then dropped).
    Apply(Box<WriteBatch>, Applied),
    /// An entry with no data (a new leader's first).
    Empty(Applied),
}

/// Applied entries on their way back to the node.
pub struct AppliedEntries<S> {
    pub(super) sm: S,
    /// How many steps were done before one failed.
    pub(super) done: usize,
    /// What each done step's requests did, where the state machine told.
    pub(super) outcomes: Vec<Option<Outcomes>>,
    pub(super) result: Result<(), StepError>,
}

/// Why a step failed: the database, divergence, or a step the state
/// machine's state did not allow (a bug in the node's ordering).
#[derive(Debug)]
pub(super) enum StepError {
    Apply(ApplyError),
    /// The batch transaction was open (`open`) where it must not be, or
    /// closed where it must be open.
    Transaction {
        index: u64,
        open: bool,
    },
}

impl<S: StateMachine> EntriesToApply<S> {
    /// Applies the steps in order, stopping at the first that fails.
    pub fn apply(mut self) -> AppliedEntries<S> {
        let (mut done, mut outcomes) = (0, Vec::new());
        let mut result = Ok(());
        for step in std::mem::take(&mut self.steps) {
            result = run_step(&mut self.sm, step);
            if result.is_err() {
                break;
            }
            done += 1;
            outcomes.push(self.sm.take_outcomes());
        }
        AppliedEntries { sm: self.sm, done, outcomes, result }
    }
}

fn run_step<S: StateMachine>(sm: &mut S, step: Step) -> Result<(), StepError> {
    let sql = |error| StepError::Apply(ApplyError::Sql(error));
    match step {
        Step::Commit(applied) => sm.commit_batch(applied).map_err(sql),
        Step::Kept(applied) if !sm.batch_open() => Err(StepError::Transaction { index: applied.index, open: false }),
        Step::Kept(_) => Ok(()),
        Step::Apply(_, applied) | Step::Empty(applied) if sm.batch_open() => {
            Err(StepError::Transaction { index: applied.index, open: true })
        }
        Step::Apply(batch, applied) => sm.apply_batch(&batch, applied).map_err(StepError::Apply),
        Step::Empty(applied) => sm.apply_empty(applied).map_err(sql),
    }
}
