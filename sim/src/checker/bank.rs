//! Bank invariant: transfers move money between accounts, so every successful read of the total sees
//! the initial total.

use super::history::{Kind, Operation};
use super::violation::Violation;

/// Checks that every successful [`Kind::BankRead`] in `history` saw `initial_total`. Failed reads and
/// all other kinds are ignored.
///
/// # Errors
/// [`Violation::BankTotal`] for the first read that saw another total.
pub fn check_bank(history: &[Operation], initial_total: i64) -> Result<(), Violation> {
    for (position, operation) in history.iter().enumerate() {
        let Kind::BankRead { total: Some(observed) } = operation.kind else { continue };
        if observed != initial_total {
            return Err(Violation::BankTotal {
                position,
                operation: operation.clone(),
                expected: initial_total,
                observed,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bank_read(total: Option<i64>) -> Operation {
        Operation {
            client: 1,
            invoked: Duration::from_nanos(1),
            completed: Some(Duration::from_nanos(2)),
            kind: Kind::BankRead { total },
        }
    }

    fn transfer() -> Operation {
        let kind = Kind::Transfer { from: 1, to: 2, amount: 30, succeeded: None };
        Operation { client: 2, invoked: Duration::from_nanos(1), completed: None, kind }
    }

    #[test]
    fn reads_of_the_initial_total_pass() {
        let history = vec![bank_read(Some(100)), transfer(), bank_read(None), bank_read(Some(100))];
        assert_eq!(check_bank(&history, 100), Ok(()));
    }

    #[test]
    fn a_read_of_another_total_is_a_violation() {
        let history = vec![bank_read(Some(100)), transfer(), bank_read(Some(70))];
        let violation = check_bank(&history, 100).unwrap_err();
        assert_eq!(
            violation,
            Violation::BankTotal { position: 2, operation: history[2].clone(), expected: 100, observed: 70 }
        );
        assert!(violation.to_string().contains("bank total 70 instead of 100 at operation #2"));
    }
}
