//! Liveness: once faults stop with a healthy majority, a leader appears within a bound and every
//! operation gets an outcome.

use std::time::Duration;

use super::violation::Violation;

/// What the simulator saw in the liveness phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessObservation {
    /// When the last fault was healed.
    pub healed: Duration,
    /// When a leader was first seen at or after `healed`; `None` if never.
    pub leader_seen: Option<Duration>,
    /// How long after `healed` a leader must appear.
    pub leader_bound: Duration,
    /// Operations with neither an outcome nor an "indeterminate" mark at the end of the phase.
    pub operations_in_flight: usize,
}

/// Checks that a leader appeared within the bound after the heal and that no operation is in flight.
///
/// # Errors
/// [`Violation::NoLeaderAfterHeal`], [`Violation::LeaderLate`] or [`Violation::OperationsInFlight`], in
/// that order of precedence.
///
/// # Panics
/// If the leader was seen before the heal: the simulator is broken.
pub fn check_liveness(observation: &LivenessObservation) -> Result<(), Violation> {
    let bound = observation.leader_bound;
    let Some(leader_seen) = observation.leader_seen else { return Err(Violation::NoLeaderAfterHeal { bound }) };
    assert!(leader_seen >= observation.healed, "a leader seen after the heal is seen after the heal");
    let delay = leader_seen - observation.healed;
    if delay > bound {
        return Err(Violation::LeaderLate { delay, bound });
    }
    if observation.operations_in_flight > 0 {
        return Err(Violation::OperationsInFlight { count: observation.operations_in_flight });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(leader_seen: Option<u64>, operations_in_flight: usize) -> LivenessObservation {
        LivenessObservation {
            healed: Duration::from_secs(10),
            leader_seen: leader_seen.map(Duration::from_secs),
            leader_bound: Duration::from_secs(5),
            operations_in_flight,
        }
    }

    #[test]
    fn a_leader_within_the_bound_and_nothing_in_flight_passes() {
        assert_eq!(check_liveness(&observation(Some(15), 0)), Ok(()));
    }

    #[test]
    fn no_leader_is_a_violation() {
        let bound = Duration::from_secs(5);
        assert_eq!(check_liveness(&observation(None, 0)), Err(Violation::NoLeaderAfterHeal { bound }));
    }

    #[test]
    fn a_late_leader_is_a_violation() {
        let violation = check_liveness(&observation(Some(16), 0)).unwrap_err();
        assert_eq!(violation, Violation::LeaderLate { delay: Duration::from_secs(6), bound: Duration::from_secs(5) });
        assert_eq!(violation.to_string(), "the first leader came 6s after the heal, over the bound 5s");
    }

    #[test]
    fn operations_in_flight_are_a_violation() {
        assert_eq!(check_liveness(&observation(Some(11), 2)), Err(Violation::OperationsInFlight { count: 2 }));
    }
}
