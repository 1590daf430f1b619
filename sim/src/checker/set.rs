//! Set invariant: no acknowledged insert is lost, none is applied twice, and nothing is invented.

use std::collections::{BTreeMap, BTreeSet};

use super::history::{Kind, Operation};
use super::violation::Violation;

/// Checks every [`Kind::SetFinal`] read in `history` against the [`Kind::SetInsert`]s: each
/// acknowledged insert is present, no value appears twice, and every value was attempted (unacknowledged
/// inserts may or may not be present).
///
/// # Errors
/// [`Violation::SetFinalMissing`] if there is no final read; otherwise the first of
/// [`Violation::SetDuplicate`], [`Violation::SetUnexpected`] or [`Violation::SetLost`] found.
pub fn check_set(history: &[Operation]) -> Result<(), Violation> {
    let (attempted, acknowledged) = inserts(history);
    let mut final_reads = 0;
    for (final_position, operation) in history.iter().enumerate() {
        let Kind::SetFinal { values } = &operation.kind else { continue };
        final_reads += 1;
        check_final(final_position, values, &attempted, &acknowledged)?;
    }
    if final_reads == 0 {
        return Err(Violation::SetFinalMissing);
    }
    Ok(())
}

/// Every attempted insert value, and each acknowledged value with the position of its first
/// acknowledged insert.
fn inserts(history: &[Operation]) -> (BTreeSet<i64>, BTreeMap<i64, usize>) {
    let mut attempted = BTreeSet::new();
    let mut acknowledged = BTreeMap::new();
    for (position, operation) in history.iter().enumerate() {
        let Kind::SetInsert { value, acknowledged: was_acknowledged } = operation.kind else { continue };
        attempted.insert(value);
        if was_acknowledged {
            acknowledged.entry(value).or_insert(position);
        }
    }
    assert!(acknowledged.len() <= attempted.len());
    (attempted, acknowledged)
}

/// Checks one final read, found at `final_position`.
fn check_final(
    final_position: usize,
    values: &[i64],
    attempted: &BTreeSet<i64>,
    acknowledged: &BTreeMap<i64, usize>,
) -> Result<(), Violation> {
    let mut seen = BTreeSet::new();
    for &value in values {
        if !seen.insert(value) {
            return Err(Violation::SetDuplicate { value, final_position });
        }
        if !attempted.contains(&value) {
            return Err(Violation::SetUnexpected { value, final_position });
        }
    }
    for (&value, &insert_position) in acknowledged {
        if !seen.contains(&value) {
            return Err(Violation::SetLost { value, insert_position, final_position });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn operation(kind: Kind) -> Operation {
        Operation { client: 1, invoked: Duration::from_nanos(1), completed: Some(Duration::from_nanos(2)), kind }
    }

    fn insert(value: i64, acknowledged: bool) -> Operation {
        operation(Kind::SetInsert { value, acknowledged })
    }

    fn final_read(values: Vec<i64>) -> Operation {
        operation(Kind::SetFinal { values })
    }

    #[test]
    fn acknowledged_inserts_present_and_unacknowledged_optional_pass() {
        let history = vec![insert(1, true), insert(2, false), insert(3, false), final_read(vec![3, 1])];
        assert_eq!(check_set(&history), Ok(()));
    }

    #[test]
    fn a_lost_acknowledged_insert_is_a_violation() {
        let history = vec![insert(1, true), insert(2, true), final_read(vec![1])];
        let violation = check_set(&history).unwrap_err();
        assert_eq!(violation, Violation::SetLost { value: 2, insert_position: 1, final_position: 2 });
        assert!(violation.to_string().contains("set value 2, acknowledged by operation #1, is missing"));
    }

    #[test]
    fn a_duplicate_value_is_a_violation() {
        let history = vec![insert(1, true), final_read(vec![1, 1])];
        assert_eq!(check_set(&history), Err(Violation::SetDuplicate { value: 1, final_position: 1 }));
    }

    #[test]
    fn a_value_never_inserted_is_a_violation() {
        let history = vec![insert(1, true), final_read(vec![1, 9])];
        assert_eq!(check_set(&history), Err(Violation::SetUnexpected { value: 9, final_position: 1 }));
    }

    #[test]
    fn a_history_without_final_read_is_a_violation() {
        assert_eq!(check_set(&[insert(1, true)]), Err(Violation::SetFinalMissing));
    }
}
