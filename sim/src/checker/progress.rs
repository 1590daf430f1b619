//! Progress: once faults stop and a leader is seen, the workload must get
//! answers. A seed whose every operation timed out would pass every other
//! checker without having tested anything.

use std::time::Duration;

use super::history::{Kind, Operation};
use super::violation::Violation;

/// Checks that at least one write and one read invoked at or after
/// `settled` (the heal, once a leader was seen) completed with a known
/// outcome.
///
/// # Errors
/// [`Violation::NoProgressAfterHeal`] with the counts found.
pub fn check_progress(history: &[Operation], settled: Duration) -> Result<(), Violation> {
    let (mut writes, mut reads) = (0, 0);
    for operation in history.iter().filter(|operation| operation.invoked >= settled && operation.completed.is_some()) {
        match &operation.kind {
            Kind::Write { .. }
            | Kind::CompareAndSet { succeeded: Some(_), .. }
            | Kind::Transfer { succeeded: Some(_), .. }
            | Kind::SetInsert { acknowledged: true, .. } => writes += 1,
            Kind::Read { observed: Some(_), .. }
            | Kind::StaleRead { observed: Some(_), .. }
            | Kind::BankRead { total: Some(_) } => reads += 1,
            _ => {}
        }
    }
    if writes == 0 || reads == 0 {
        return Err(Violation::NoProgressAfterHeal { writes, reads });
    }
    Ok(())
}

/// Operations with a known outcome and without one, for the run summary.
pub fn outcome_counts(history: &[Operation]) -> (usize, usize) {
    let determinate = history.iter().filter(|operation| operation.completed.is_some()).count();
    (determinate, history.len() - determinate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(invoked: u64, completed: Option<u64>, kind: Kind) -> Operation {
        Operation {
            client: 1,
            invoked: Duration::from_secs(invoked),
            completed: completed.map(Duration::from_secs),
            kind,
        }
    }

    #[test]
    fn a_write_and_a_read_after_the_heal_pass() {
        let history = [
            operation(11, Some(12), Kind::Write { key: 1, value: 5 }),
            operation(12, Some(13), Kind::Read { key: 1, observed: Some(Some(5)) }),
        ];
        assert_eq!(check_progress(&history, Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn only_timeouts_or_only_earlier_answers_fail() {
        let history = [
            operation(5, Some(6), Kind::Write { key: 1, value: 5 }),
            operation(11, None, Kind::Write { key: 1, value: 6 }),
            operation(12, Some(13), Kind::Read { key: 1, observed: Some(Some(5)) }),
            operation(12, Some(13), Kind::Read { key: 1, observed: None }),
        ];
        assert_eq!(
            check_progress(&history, Duration::from_secs(10)),
            Err(Violation::NoProgressAfterHeal { writes: 0, reads: 1 })
        );
        assert_eq!(outcome_counts(&history), (3, 1));
    }
}
