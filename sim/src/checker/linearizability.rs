//! Per-key linearizability of registers with compare-and-set.
//!
//! Linearizability is compositional (P-compositionality), so each key is checked on its own. For one
//! key the check is a Wing–Gong search with Lowe's just-in-time rule: depth-first, choose which pending
//! operation takes effect next. An operation may go next only if it was invoked no later than the
//! earliest completion among the completed operations not yet placed (otherwise that operation would
//! have to take effect after it returned). Indeterminate operations (no completion) may take effect at
//! any point after their invocation, or never; the search succeeds once every completed operation is
//! placed. Visited (placed set, register) pairs are remembered, and the number of them is bounded: past
//! the budget the verdict is [`Violation::Unknown`], never a hang.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::history::{Kind, Operation};
use super::violation::Violation;

/// Default bound on the states one key's search may visit before answering [`Violation::Unknown`].
pub const VISITED_STATES_PER_KEY_MAX: usize = 1_000_000;

/// Checks every register key of `history` for linearizability, with the default search budget.
///
/// Non-register operations and reads whose outcome is unknown are ignored.
///
/// # Errors
/// [`Violation::NotLinearizable`] for the first key (in key order) that has no linearization, or
/// [`Violation::Unknown`] if a key's search spent [`VISITED_STATES_PER_KEY_MAX`] states.
///
/// # Panics
/// If an operation completed before it was invoked: the recorder is broken.
pub fn check_linearizability(history: &[Operation]) -> Result<(), Violation> {
    check_linearizability_with_budget(history, VISITED_STATES_PER_KEY_MAX)
}

/// Like [`check_linearizability`] with a search budget of `visited_states_max` states per key.
///
/// # Errors
/// As [`check_linearizability`].
///
/// # Panics
/// If `visited_states_max` is zero, or an operation completed before it was invoked.
pub fn check_linearizability_with_budget(history: &[Operation], visited_states_max: usize) -> Result<(), Violation> {
    assert!(visited_states_max > 0, "a search needs at least one state");
    for (key, operations) in partition_by_key(history) {
        Search::new(key, history, &operations, visited_states_max).run()?;
    }
    Ok(())
}

/// A register operation of one key, stripped of the key.
#[derive(Clone, Debug)]
struct RegisterOperation {
    /// Index of the operation in the history.
    position: usize,
    invoked: Duration,
    completed: Option<Duration>,
    action: Action,
}

/// The effect of a register operation.
#[derive(Clone, Copy, Debug)]
enum Action {
    Write(i64),
    Read(Option<i64>),
    CompareAndSet { expected: i64, new: i64, succeeded: Option<bool> },
}

/// Groups the register operations by key, each group in invocation order.
fn partition_by_key(history: &[Operation]) -> BTreeMap<u64, Vec<RegisterOperation>> {
    let mut keys: BTreeMap<u64, Vec<RegisterOperation>> = BTreeMap::new();
    for (position, operation) in history.iter().enumerate() {
        if let Some(completed) = operation.completed {
            assert!(completed >= operation.invoked, "operation #{position} completed before it was invoked");
        }
        if let Some((key, action)) = register_action(&operation.kind) {
            let register_operation =
                RegisterOperation { position, invoked: operation.invoked, completed: operation.completed, action };
            keys.entry(key).or_default().push(register_operation);
        }
    }
    for operations in keys.values_mut() {
        operations.sort_by_key(|operation| operation.invoked);
    }
    keys
}

/// The key and effect of a register operation; `None` for other kinds and for failed reads.
fn register_action(kind: &Kind) -> Option<(u64, Action)> {
    match *kind {
        Kind::Write { key, value } => Some((key, Action::Write(value))),
        Kind::Read { key, observed: Some(observed) } => Some((key, Action::Read(observed))),
        Kind::CompareAndSet { key, expected, new, succeeded } => {
            Some((key, Action::CompareAndSet { expected, new, succeeded }))
        }
        _ => None,
    }
}

/// The register after `action` takes effect on `register`, or `None` if what the action observed
/// contradicts `register`. A compare-and-set with an unknown outcome does what a compare-and-set does.
fn apply(action: Action, register: Option<i64>) -> Option<Option<i64>> {
    match action {
        Action::Write(value) => Some(Some(value)),
        Action::Read(observed) => (observed == register).then_some(register),
        Action::CompareAndSet { expected, new, succeeded } => {
            let matches = register == Some(expected);
            match succeeded {
                Some(true) => matches.then_some(Some(new)),
                Some(false) => (!matches).then_some(register),
                None if matches => Some(Some(new)),
                None => Some(register),
            }
        }
    }
}

/// A set of operation indexes, one bit each.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(length: usize) -> Bitset {
        Bitset(vec![0; length.div_ceil(64)])
    }

    fn contains(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }

    fn with(&self, index: usize) -> Bitset {
        assert!(!self.contains(index), "operation {index} placed twice");
        let mut bitset = self.clone();
        bitset.0[index / 64] |= 1 << (index % 64);
        bitset
    }
}

/// A point of the search: which operations took effect, the register after them, and how many
/// completed operations are still to place.
#[derive(Clone, Debug)]
struct Frame {
    linearized: Bitset,
    register: Option<i64>,
    completed_remaining: usize,
}

/// The depth-first search of one key.
struct Search<'a> {
    key: u64,
    /// The whole history, to quote operations in the report.
    history: &'a [Operation],
    operations: &'a [RegisterOperation],
    completed_total: usize,
    visited: HashSet<(Bitset, Option<i64>)>,
    visited_states_max: usize,
    /// The frame that placed the most completed operations, for the report.
    deepest: Frame,
}

impl<'a> Search<'a> {
    fn new(
        key: u64,
        history: &'a [Operation],
        operations: &'a [RegisterOperation],
        visited_states_max: usize,
    ) -> Search<'a> {
        let completed_total = operations.iter().filter(|operation| operation.completed.is_some()).count();
        let root = Frame { linearized: Bitset::new(operations.len()), register: None, completed_remaining: completed_total };
        Search { key, history, operations, completed_total, visited: HashSet::new(), visited_states_max, deepest: root }
    }

    /// Searches until a linearization is found, every state is exhausted, or the budget is spent.
    fn run(mut self) -> Result<(), Violation> {
        let mut stack = vec![self.deepest.clone()];
        while let Some(frame) = stack.pop() {
            if frame.completed_remaining == 0 {
                return Ok(());
            }
            if frame.completed_remaining < self.deepest.completed_remaining {
                self.deepest = frame.clone();
            }
            for child in self.children(&frame) {
                if self.visited.insert((child.linearized.clone(), child.register)) {
                    stack.push(child);
                }
                if self.visited.len() >= self.visited_states_max {
                    return Err(Violation::Unknown { key: self.key, visited_states: self.visited.len() });
                }
            }
        }
        Err(self.violation())
    }

    /// The frames reachable by placing one more operation after `frame`.
    fn children(&self, frame: &Frame) -> Vec<Frame> {
        let mut children = Vec::new();
        for index in self.candidates(frame) {
            let operation = &self.operations[index];
            let Some(register) = apply(operation.action, frame.register) else { continue };
            // Placing an indeterminate operation that changes nothing only narrows what may follow.
            if operation.completed.is_none() && register == frame.register {
                continue;
            }
            let completed_remaining = frame.completed_remaining - usize::from(operation.completed.is_some());
            children.push(Frame { linearized: frame.linearized.with(index), register, completed_remaining });
        }
        children
    }

    /// Indexes of the unplaced operations that may take effect next: those invoked no later than the
    /// earliest completion among the unplaced completed operations.
    fn candidates(&self, frame: &Frame) -> Vec<usize> {
        let deadline = self.deadline(frame);
        assert!(deadline.is_some(), "a frame with completed operations left has a deadline");
        (0..self.operations.len())
            .filter(|&index| !frame.linearized.contains(index))
            .take_while(|&index| Some(self.operations[index].invoked) <= deadline)
            .collect()
    }

    /// The earliest completion among the completed operations `frame` has not placed.
    fn deadline(&self, frame: &Frame) -> Option<Duration> {
        (0..self.operations.len())
            .filter(|&index| !frame.linearized.contains(index))
            .filter_map(|index| self.operations[index].completed)
            .min()
    }

    /// The report for an exhausted search: what blocked the deepest frame.
    fn violation(&self) -> Violation {
        let frame = &self.deepest;
        let blocked = self
            .candidates(frame)
            .into_iter()
            .filter(|&index| self.operations[index].completed.is_some())
            .take(EXCERPT_OPERATIONS_MAX)
            .map(|index| self.operations[index].position)
            .map(|position| (position, self.history[position].clone()))
            .collect();
        Violation::NotLinearizable {
            key: self.key,
            linearized: self.completed_total - frame.completed_remaining,
            completed: self.completed_total,
            register: frame.register,
            blocked,
        }
    }
}

/// At most this many operations are quoted in a [`Violation::NotLinearizable`].
const EXCERPT_OPERATIONS_MAX: usize = 8;
