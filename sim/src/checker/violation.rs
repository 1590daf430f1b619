//! What a checker reports when a history breaks an invariant.

use std::fmt;
use std::time::Duration;

use super::committed::CommittedEntry;
use super::convergence::ReplicaState;
use super::history::Operation;

/// A broken invariant, or a checker that could not decide. `position` fields are indexes into the
/// history slice the checker was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// No linearization of `key` exists. The search got furthest with `linearized` of the key's
    /// `completed` operations placed, leaving the register at `register`; from there none of
    /// `blocked` (the pending completed operations that could go next) fitted.
    NotLinearizable {
        key: u64,
        linearized: usize,
        completed: usize,
        register: Option<i64>,
        blocked: Vec<(usize, Operation)>,
    },
    /// The linearizability search of `key` visited `visited_states` states without a verdict.
    Unknown { key: u64, visited_states: usize },
    /// A bank read saw a total other than the initial one.
    BankTotal { position: usize, operation: Operation, expected: i64, observed: i64 },
    /// The history has no final read of the set, so nothing can be checked.
    SetFinalMissing,
    /// An acknowledged insert is missing from the final set read at `final_position`.
    SetLost { value: i64, insert_position: usize, final_position: usize },
    /// A value appears more than once in the final set read at `final_position`.
    SetDuplicate { value: i64, final_position: usize },
    /// The final set read at `final_position` holds a value no client tried to insert.
    SetUnexpected { value: i64, final_position: usize },
    /// Two nodes were leader in the same term.
    TwoLeaders { term: u64, first: u64, second: u64 },
    /// A node granted its vote to two candidates in one term.
    TwoVotes { node: u64, term: u64, first: u64, second: u64 },
    /// Two different entries were reported committed or applied at the same index.
    CommittedConflict { index: u64, first: CommittedEntry, second: CommittedEntry },
    /// The convergence check was given no live replica.
    NoReplicas,
    /// Some replicas differ from `reference` in applied index or digest.
    Divergence { reference: ReplicaState, differing: Vec<ReplicaState> },
    /// No leader was seen after the network healed.
    NoLeaderAfterHeal { bound: Duration },
    /// A leader was seen only `delay` after the heal, later than `bound`.
    LeaderLate { delay: Duration, bound: Duration },
    /// Operations were still waiting for an outcome at the end of the liveness phase.
    OperationsInFlight { count: usize },
    /// The SQL workload saw something its statements rule out (see `check_sql`).
    Sql { detail: String },
    /// Two nodes' logs hold the same term at `agreed` but differ at the
    /// lower index `differs` (Log Matching).
    LogMismatch { nodes: (u64, u64), agreed: u64, differs: u64 },
    /// After the heal, `node`'s log is not a prefix of the leader's: it
    /// differs at `index`, or goes past the leader's last index there.
    LogNotPrefix { node: u64, leader: u64, index: u64 },
    /// Node `node`'s read `token` got read index `index`, below the index
    /// `applied` on some node when it asked.
    ReadIndexBehind { node: u64, token: u64, index: u64, applied: u64 },
    /// Live members that never reported their state, so convergence could
    /// not be judged over every one of them.
    Unanswered { nodes: Vec<u64> },
    /// After the heal and a leader, the workload completed fewer determinate
    /// writes or reads than required: a seed that only timed out proves
    /// nothing.
    NoProgressAfterHeal { writes: usize, reads: usize },
}

impl Violation {
    /// Whether the checker gave up rather than found a violation.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Violation::Unknown { .. })
    }
}

impl std::error::Error for Violation {}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotLinearizable { key, linearized, completed, register, blocked } => {
                write!(
                    formatter,
                    "key {key} is not linearizable: at best {linearized} of {completed} completed operations \
                     linearize, leaving the register {}, and none of these fits next:",
                    Register(*register)
                )?;
                for (position, operation) in blocked {
                    write!(formatter, "\n  operation #{position}: {operation}")?;
                }
                Ok(())
            }
            Violation::Unknown { key, visited_states } => {
                write!(formatter, "key {key}: linearizability unknown, search budget of {visited_states} states spent")
            }
            Violation::BankTotal { position, operation, expected, observed } => {
                write!(formatter, "bank total {observed} instead of {expected} at operation #{position}: {operation}")
            }
            Violation::SetFinalMissing => write!(formatter, "set history has no final read"),
            Violation::SetLost { value, insert_position, final_position } => write!(
                formatter,
                "set value {value}, acknowledged by operation #{insert_position}, is missing from the final read \
                 #{final_position}"
            ),
            Violation::SetDuplicate { value, final_position } => {
                write!(formatter, "set value {value} appears twice in the final read #{final_position}")
            }
            Violation::SetUnexpected { value, final_position } => {
                write!(formatter, "set value {value} in the final read #{final_position} was never inserted")
            }
            Violation::TwoLeaders { term, first, second } => {
                write!(formatter, "term {term} has two leaders: node {first} and node {second}")
            }
            Violation::TwoVotes { node, term, first, second } => {
                write!(formatter, "node {node} voted twice in term {term}: for node {first} and for node {second}")
            }
            Violation::CommittedConflict { index, first, second } => write!(
                formatter,
                "index {index} committed twice with different entries: node {} saw {:#x}, node {} saw {:#x}",
                first.node, first.digest, second.node, second.digest
            ),
            Violation::NoReplicas => write!(formatter, "no live replica to compare"),
            Violation::Divergence { reference, differing } => {
                write!(formatter, "replicas diverge from {reference}:")?;
                for replica in differing {
                    write!(formatter, "\n  {replica}")?;
                }
                Ok(())
            }
            Violation::NoLeaderAfterHeal { bound } => {
                write!(formatter, "no leader after the heal (bound {bound:?})")
            }
            Violation::LeaderLate { delay, bound } => {
                write!(formatter, "the first leader came {delay:?} after the heal, over the bound {bound:?}")
            }
            Violation::OperationsInFlight { count } => {
                write!(formatter, "{count} operations still in flight at the end of the liveness phase")
            }
            Violation::Sql { detail } => write!(formatter, "{detail}"),
            Violation::LogMismatch { nodes, agreed, differs } => write!(
                formatter,
                "nodes {} and {} both hold an entry of the same term at index {agreed} but differ at index {differs}",
                nodes.0, nodes.1
            ),
            Violation::ReadIndexBehind { node, token, index, applied } => write!(
                formatter,
                "node {node}'s read {token} got read index {index}, but index {applied} was already applied when it asked"
            ),
            Violation::LogNotPrefix { node, leader, index } => write!(
                formatter,
                "after the heal node {node}'s log is not a prefix of leader {leader}'s: they part at index {index}"
            ),
            Violation::Unanswered { nodes } => {
                write!(formatter, "live members {nodes:?} never reported their applied index and digest")
            }
            Violation::NoProgressAfterHeal { writes, reads } => write!(
                formatter,
                "after the heal only {writes} write(s) and {reads} read(s) completed with a known outcome \
                 (at least one of each is required)"
            ),
        }
    }
}

/// Formats a register state.
struct Register(Option<i64>);

impl fmt::Display for Register {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(formatter, "holding {value}"),
            None => write!(formatter, "absent"),
        }
    }
}
