//! Per-key linearizability of registers with compare-and-set.
//!
//! Linearizability is compositional (P-compositionality), so each key is checked on its own. For one
//! key the check is a Wing–Gong search with Lowe's just-in-time rule: depth-first, choose which pending
//! operation takes effect next. An operation may go next only if it was invoked no later than the
//! earliest completion among the completed operations not yet placed (otherwise that operation would
//! have to take effect after it returned). Indeterminate operations (no completion) may take effect at
//! any point after their invocation, or never; the search succeeds once every completed operation is
//! placed. A bounded-stale read counts as invoked as early as its staleness allows: it may take
//! effect at any point from then until it returned. Visited (placed set, register) pairs are remembered, and the number of them is bounded: past
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
        let operations = drop_unobserved_indeterminate(operations);
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
            let invoked = match operation.kind {
                Kind::StaleRead { allowed, .. } => operation.invoked.saturating_sub(allowed),
                _ => operation.invoked,
            };
            let register_operation = RegisterOperation { position, invoked, completed: operation.completed, action };
            keys.entry(key).or_default().push(register_operation);
        }
    }
    for operations in keys.values_mut() {
        operations.sort_by_key(|operation| operation.invoked);
    }
    keys
}

/// Drops indeterminate writes (and compare-and-sets) whose value nothing
/// ever observed, unless a definitely failed compare-and-set completes after
/// the operation was invoked.
///
/// Sound: linearizing such an operation can only make later reads see a
/// value no read saw, so leaving it out ("it never took effect", always
/// allowed for an indeterminate operation) is at least as good, except to
/// explain a compare-and-set that failed because the value had changed; and
/// that needs the write placed before the compare-and-set completes, which
/// is impossible if it was invoked after. It removes the search's worst
/// blow-up: many timed-out writes while the cluster is unavailable.
fn drop_unobserved_indeterminate(operations: Vec<RegisterOperation>) -> Vec<RegisterOperation> {
    let last_failed_compare_and_set = operations
        .iter()
        .filter(|operation| matches!(operation.action, Action::CompareAndSet { succeeded: Some(false), .. }))
        .filter_map(|operation| operation.completed)
        .max();
    let observed: std::collections::HashSet<i64> = operations
        .iter()
        .filter_map(|operation| match operation.action {
            Action::Read(observed) => observed,
            // A compare-and-set that may have succeeded needs its expected
            // value written first (one whose outcome is unknown included).
            Action::CompareAndSet { expected, succeeded: Some(true) | None, .. } => Some(expected),
            _ => None,
        })
        .collect();
    let failed_compare_and_sets = operations
        .iter()
        .filter(|operation| matches!(operation.action, Action::CompareAndSet { succeeded: Some(false), .. }))
        .count();
    // Unobserved timed-out plain writes all have the same effect (a value
    // nobody sees), so a linearization needs at most one per failed
    // compare-and-set, and the earliest-invoked ones can stand in for any
    // others (the i-th earliest is invoked no later than the i-th placement).
    let mut interchangeable_writes_kept = 0;
    operations
        .into_iter()
        .filter(|operation| {
            let written = match operation.action {
                Action::Write(value) | Action::CompareAndSet { new: value, .. } => Some(value),
                Action::Read(_) => None,
            };
            if operation.completed.is_some() || written.is_none_or(|value| observed.contains(&value)) {
                return true;
            }
            let may_explain_a_failure = last_failed_compare_and_set.is_some_and(|last| last >= operation.invoked);
            if !may_explain_a_failure {
                return false;
            }
            if matches!(operation.action, Action::Write(_)) {
                interchangeable_writes_kept += 1;
                return interchangeable_writes_kept <= failed_compare_and_sets;
            }
            true
        })
        .collect()
}

/// The key and effect of a register operation; `None` for other kinds and for failed reads.
fn register_action(kind: &Kind) -> Option<(u64, Action)> {
    match *kind {
        Kind::Write { key, value } => Some((key, Action::Write(value))),
        Kind::Read { key, observed: Some(observed) } | Kind::StaleRead { key, observed: Some(observed), .. } => {
            Some((key, Action::Read(observed)))
        }
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
        let root =
            Frame { linearized: Bitset::new(operations.len()), register: None, completed_remaining: completed_total };
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A value no generated history writes.
    const NEVER_WRITTEN: i64 = 1_000_000;

    fn operation(invoked: u64, completed: Option<u64>, kind: Kind) -> Operation {
        Operation {
            client: invoked,
            invoked: Duration::from_nanos(invoked),
            completed: completed.map(Duration::from_nanos),
            kind,
        }
    }

    fn write(key: u64, value: i64, invoked: u64, completed: Option<u64>) -> Operation {
        operation(invoked, completed, Kind::Write { key, value })
    }

    fn read(key: u64, observed: Option<i64>, invoked: u64, completed: u64) -> Operation {
        operation(invoked, Some(completed), Kind::Read { key, observed: Some(observed) })
    }

    fn compare_and_set(key: u64, swap: (i64, i64), succeeded: Option<bool>, interval: (u64, Option<u64>)) -> Operation {
        let (expected, new) = swap;
        operation(interval.0, interval.1, Kind::CompareAndSet { key, expected, new, succeeded })
    }

    /// Asserts that `history` is not linearizable on `key` and returns the violation.
    fn assert_not_linearizable(history: &[Operation], key: u64) -> Violation {
        let violation = check_linearizability(history).unwrap_err();
        assert!(
            matches!(violation, Violation::NotLinearizable { key: found, .. } if found == key),
            "unexpected verdict: {violation}"
        );
        violation
    }

    #[test]
    fn stale_read_after_a_completed_write_is_not_linearizable() {
        let history = vec![write(1, 1, 0, Some(10)), read(1, None, 20, 30)];
        let violation = check_linearizability(&history).unwrap_err();
        let expected = Violation::NotLinearizable {
            key: 1,
            linearized: 1,
            completed: 2,
            register: Some(1),
            blocked: vec![(1, history[1].clone())],
        };
        assert_eq!(violation, expected);
        assert_eq!(
            violation.to_string(),
            "key 1 is not linearizable: at best 1 of 2 completed operations linearize, leaving the register \
             holding 1, and none of these fits next:\n  operation #1: client 20 [20ns, 30ns] read key 1 -> absent"
        );
    }

    fn stale_read(key: u64, observed: Option<i64>, interval: (u64, u64), allowed: u64) -> Operation {
        let kind = Kind::StaleRead { key, observed: Some(observed), allowed: Duration::from_nanos(allowed) };
        operation(interval.0, Some(interval.1), kind)
    }

    #[test]
    fn a_stale_read_may_miss_writes_acknowledged_within_its_allowance_only() {
        // 2 overwrote 1 and was acknowledged at 30; the read starts at 50.
        let history = |allowed| {
            vec![write(1, 1, 0, Some(10)), write(1, 2, 20, Some(30)), stale_read(1, Some(1), (50, 60), allowed)]
        };
        assert_eq!(check_linearizability(&history(25)), Ok(()));
        assert_eq!(check_linearizability(&history(20)), Ok(()), "acknowledged exactly at the allowance's edge");
        assert_not_linearizable(&history(19), 1);
        // Never a value from before the allowance, nor one never written.
        let older = vec![
            write(1, 1, 0, Some(10)),
            write(1, 2, 20, Some(30)),
            write(1, 3, 40, Some(45)),
            stale_read(1, Some(1), (50, 60), 15),
        ];
        assert_not_linearizable(&older, 1);
        assert_not_linearizable(&[write(1, 1, 0, Some(10)), stale_read(1, Some(7), (50, 60), 1_000)], 1);
    }

    #[test]
    fn concurrent_write_and_read_linearize_in_either_order() {
        let read_before = vec![write(1, 1, 0, Some(10)), read(1, None, 5, 15)];
        assert_eq!(check_linearizability(&read_before), Ok(()));
        let read_after = vec![write(1, 1, 0, Some(10)), read(1, Some(1), 5, 15)];
        assert_eq!(check_linearizability(&read_after), Ok(()));
    }

    #[test]
    fn indeterminate_write_observed_later_is_linearizable() {
        let history = vec![write(1, 1, 0, None), read(1, None, 10, 20), read(1, Some(1), 30, 40)];
        assert_eq!(check_linearizability(&history), Ok(()));
    }

    #[test]
    fn indeterminate_write_never_observed_is_linearizable() {
        let history = vec![write(1, 1, 0, None), read(1, None, 20, 30), read(1, None, 40, 50)];
        assert_eq!(check_linearizability(&history), Ok(()));
    }

    #[test]
    fn indeterminate_write_observed_then_unobserved_is_not_linearizable() {
        let history = vec![write(1, 1, 0, None), read(1, Some(1), 20, 30), read(1, None, 40, 50)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn read_of_a_value_never_written_is_not_linearizable() {
        let history = vec![write(1, 1, 0, Some(10)), read(1, Some(2), 5, 15)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn read_going_back_in_time_is_not_linearizable() {
        let history = vec![write(1, 1, 0, Some(10)), write(1, 2, 20, Some(30)), read(1, Some(1), 40, 50)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn successful_compare_and_set_from_the_current_value_is_linearizable() {
        let history = vec![
            write(1, 1, 0, Some(10)),
            compare_and_set(1, (1, 2), Some(true), (20, Some(30))),
            read(1, Some(2), 40, 50),
        ];
        assert_eq!(check_linearizability(&history), Ok(()));
    }

    #[test]
    fn successful_compare_and_set_whose_expected_value_was_never_current_is_not_linearizable() {
        let history = vec![write(1, 1, 0, Some(10)), compare_and_set(1, (5, 2), Some(true), (20, Some(30)))];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn failed_compare_and_set_while_the_value_differs_is_linearizable() {
        let history = vec![
            write(1, 1, 0, Some(10)),
            compare_and_set(1, (5, 2), Some(false), (20, Some(30))),
            read(1, Some(1), 40, 50),
        ];
        assert_eq!(check_linearizability(&history), Ok(()));
    }

    #[test]
    fn failed_compare_and_set_while_the_value_is_expected_is_not_linearizable() {
        let history = vec![write(1, 1, 0, Some(10)), compare_and_set(1, (1, 2), Some(false), (20, Some(30)))];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn compare_and_set_with_unknown_outcome_may_or_may_not_take_effect() {
        let unknown = compare_and_set(1, (1, 2), None, (20, None));
        for observed in [1, 2] {
            let history = vec![write(1, 1, 0, Some(10)), unknown.clone(), read(1, Some(observed), 40, 50)];
            assert_eq!(check_linearizability(&history), Ok(()), "observed {observed}");
        }
        let history = vec![write(1, 1, 0, Some(10)), unknown, read(1, Some(3), 40, 50)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn failed_reads_are_ignored() {
        let failed_read = operation(20, Some(30), Kind::Read { key: 1, observed: None });
        let history = vec![write(1, 1, 0, Some(10)), failed_read];
        assert_eq!(check_linearizability(&history), Ok(()));
    }

    #[test]
    fn keys_are_checked_separately_and_the_violation_names_the_key() {
        let history = vec![
            write(1, 1, 0, Some(10)),
            write(2, 7, 0, Some(10)),
            read(1, Some(1), 20, 30),
            read(2, Some(1), 20, 30),
            operation(20, Some(30), Kind::BankRead { total: Some(3) }),
        ];
        let violation = assert_not_linearizable(&history, 2);
        assert!(violation.to_string().starts_with("key 2 is not linearizable"), "{violation}");
    }

    #[test]
    fn exhausted_budget_answers_unknown() {
        let mut history: Vec<Operation> = (0..10).map(|value| write(1, value, 0, Some(100))).collect();
        history.push(read(1, Some(NEVER_WRITTEN), 0, 100));
        assert_eq!(
            check_linearizability_with_budget(&history, 5),
            Err(Violation::Unknown { key: 1, visited_states: 5 })
        );
        assert!(check_linearizability_with_budget(&history, 5).unwrap_err().is_unknown());
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn many_unobserved_timed_out_writes_cost_nothing() {
        // 60 overlapping timed-out writes nobody saw, around definite ops:
        // without pruning this blows any small budget.
        let mut history: Vec<Operation> = (0..60).map(|value| write(1, 100 + value, 0, None)).collect();
        history.push(write(1, 1, 0, Some(10)));
        history.push(read(1, Some(1), 20, 30));
        assert_eq!(check_linearizability_with_budget(&history, 200), Ok(()));
        // A stale read is still caught.
        history.push(write(1, 2, 40, Some(50)));
        history.push(read(1, Some(1), 60, 70));
        assert!(matches!(check_linearizability_with_budget(&history, 200), Err(Violation::NotLinearizable { .. })));
    }

    #[test]
    fn timed_out_writes_after_the_last_failed_compare_and_set_are_pruned() {
        let mut history = vec![
            write(1, 1, 0, Some(10)),
            compare_and_set(1, (5, 9), Some(false), (20, Some(30))),
            read(1, Some(1), 40, 50),
        ];
        history.extend((0..60).map(|value| write(1, 100 + value, 60, None)));
        history.push(read(1, Some(1), 70, 80));
        assert_eq!(check_linearizability_with_budget(&history, 200), Ok(()));
    }

    #[test]
    fn many_timed_out_writes_before_one_failed_compare_and_set_stay_cheap() {
        let mut history = vec![write(1, 1, 0, Some(10))];
        history.extend((0..40).map(|value| write(1, 100 + value, 20, None)));
        // Fails because the value changed: one timed-out write explains it.
        history.push(compare_and_set(1, (1, 9), Some(false), (30, Some(40))));
        assert_eq!(check_linearizability_with_budget(&history, 500), Ok(()));
        // Two failures with 1 written and read between: two timed-out writes
        // are needed, and the two earliest are kept.
        history.push(write(1, 1, 45, Some(46)));
        history.push(read(1, Some(1), 50, 60));
        history.push(compare_and_set(1, (1, 9), Some(false), (70, Some(80))));
        assert_eq!(check_linearizability_with_budget(&history, 5_000), Ok(()));
        // Without a second timed-out write invoked in time, it is a violation.
        let mut late = history.clone();
        late.retain(|operation| operation.completed.is_some());
        late.push(write(1, 100, 20, None));
        assert!(matches!(check_linearizability(&late), Err(Violation::NotLinearizable { .. })));
    }

    #[test]
    fn chained_compare_and_sets_with_unknown_outcomes_explain_a_read() {
        // Found by the generator: 0 -> 3 -> 1 by two timed-out compare-and-sets,
        // then a read of 1. The first one's value (3) is seen only by the
        // second one's expectation; it must not be pruned as unobserved.
        let history = vec![
            write(1, 0, 0, Some(10)),
            compare_and_set(1, (0, 3), None, (20, None)),
            compare_and_set(1, (3, 1), None, (30, None)),
            read(1, Some(1), 40, 50),
        ];
        assert_eq!(check_linearizability(&history), Ok(()));
    }

    #[test]
    fn an_unobserved_timed_out_write_still_explains_a_failed_compare_and_set() {
        // The CAS expected 1 and failed although only 1 was ever observed:
        // only the timed-out write of 7 (never read) explains it.
        let history = vec![
            write(1, 1, 0, Some(10)),
            read(1, Some(1), 20, 30),
            write(1, 7, 35, None),
            compare_and_set(1, (1, 9), Some(false), (40, Some(50))),
        ];
        assert_eq!(check_linearizability(&history), Ok(()));
    }

    #[test]
    fn random_sequential_history_of_200_operations_is_linearizable() {
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        let steps: Vec<Step> = (0..200)
            .map(|_| Step {
                kind: random.below(4) as u8,
                key: random.below(2),
                value: random.below(4) as i64,
                new: random.below(4) as i64,
                before: random.below(5),
                after: random.below(5),
                fate: DEFINITE,
            })
            .collect();
        let history = build_history(&steps);
        assert_eq!(history.len(), 200);
        assert_eq!(check_linearizability(&history), Ok(()));
    }

    proptest! {
        #[test]
        fn generated_histories_linearize_until_a_read_is_corrupted(
            steps in proptest::collection::vec(step_strategy(), 1..60),
            pick in any::<usize>(),
        ) {
            let mut history = build_history(&steps);
            prop_assert_eq!(check_linearizability(&history), Ok(()));
            let definite_reads: Vec<usize> = (0..history.len())
                .filter(|&position| {
                    let operation = &history[position];
                    operation.completed.is_some() && matches!(operation.kind, Kind::Read { observed: Some(_), .. })
                })
                .collect();
            prop_assume!(!definite_reads.is_empty());
            let position = definite_reads[pick % definite_reads.len()];
            let Kind::Read { key, observed } = &mut history[position].kind else { unreachable!("picked a read") };
            *observed = Some(Some(NEVER_WRITTEN));
            let key = *key;
            let verdict = check_linearizability(&history);
            prop_assert!(
                matches!(verdict, Err(Violation::NotLinearizable { key: found, .. }) if found == key),
                "verdict {:?}", verdict
            );
        }
    }

    /// The step happened and its outcome came back.
    const DEFINITE: u8 = 9;
    /// The step happened but its outcome is unknown.
    const INDETERMINATE_APPLIED: u8 = 0;
    /// The step's outcome is unknown and it never took effect (reads: failed).
    const INDETERMINATE_LOST: u8 = 1;

    /// One step of a generated sequential execution. `kind`: 0 write, 1 and 3 read, 2 compare-and-set
    /// from `value` to `new`. The step takes effect at its linearization point; its interval starts
    /// `before` and ends `after` nanoseconds around it. `fate` is one of the constants above (2..=9 are
    /// definite).
    #[derive(Clone, Debug)]
    struct Step {
        kind: u8,
        key: u64,
        value: i64,
        new: i64,
        before: u64,
        after: u64,
        fate: u8,
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        (0u8..4, 0u64..3, 0i64..4, 0i64..4, 0u64..40, 0u64..40, 0u8..10).prop_map(
            |(kind, key, value, new, before, after, fate)| Step { kind, key, value, new, before, after, fate },
        )
    }

    /// Runs `steps` against a model register per key, one step every 10 ns, and records what clients saw.
    /// Every operation's interval contains its linearization point, so the history is linearizable.
    fn build_history(steps: &[Step]) -> Vec<Operation> {
        let mut registers: BTreeMap<u64, Option<i64>> = BTreeMap::new();
        let mut history = Vec::with_capacity(steps.len());
        for (number, step) in steps.iter().enumerate() {
            let point = 100 + 10 * number as u64;
            let register = registers.entry(step.key).or_default();
            let definite = !matches!(step.fate, INDETERMINATE_APPLIED | INDETERMINATE_LOST);
            let applies = step.fate != INDETERMINATE_LOST;
            let kind = match step.kind {
                0 => {
                    if applies {
                        *register = Some(step.value);
                    }
                    Kind::Write { key: step.key, value: step.value }
                }
                2 => {
                    let succeeded = *register == Some(step.value);
                    if succeeded && applies {
                        *register = Some(step.new);
                    }
                    let succeeded = definite.then_some(succeeded);
                    Kind::CompareAndSet { key: step.key, expected: step.value, new: step.new, succeeded }
                }
                _ => Kind::Read { key: step.key, observed: definite.then_some(*register) },
            };
            let completed = definite.then_some(point + step.after);
            history.push(operation(point - step.before, completed, kind));
        }
        history
    }

    /// A small deterministic generator for the fixed random history.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }
}
