//! History checkers: pure functions that judge what the simulator recorded.
//!
//! The simulator records client operations as a [`history::Operation`] list and god's-eye observations
//! (leaders, committed entries, replica digests, liveness timings) as small structs. At the end of a run
//! (or continuously, for the cheap checks) it hands them to the `check_*` functions here. Each returns
//! `Ok(())` or a [`Violation`] whose `Display` names the key, term, index, node or operations involved.
//!
//! The checkers use only `std`, so they build the same in normal and `--cfg madsim` builds.
//!
//! | checker | invariant (SIM-NOTES §8) |
//! |---|---|
//! | [`check_linearizability`] | 6. per-key linearizability of registers with compare-and-set |
//! | [`check_bank`] | 6. bank total |
//! | [`check_set`] | 6. no lost, duplicate or invented set inserts |
//! | [`check_sql`] | 6. the SQL workload: cascades, triggers, conflict clauses, AUTOINCREMENT, DDL, large rows |
//! | [`check_election_safety`] | 1. at most one leader per term |
//! | [`check_votes`] | 1. at most one vote per node per term |
//! | [`check_committed`] | 3. a committed index never maps to two entries |
//! | [`log_matching::check_log_matching`] | 2. Log Matching over every node's whole log, uncommitted suffixes included |
//! | [`read_index::ReadIndexes`] | 6. a read's index reaches every entry applied before it asked (ReadIndex) |
//! | [`check_convergence`] | 5. every live replica answers, and all agree on applied index and digest |
//! | [`check_liveness`] | 7. a leader soon after heal, no operation left in flight |
//! | [`progress::check_progress`] | 7. after the heal, writes and reads get known outcomes (no vacuous seed) |
//!
//! A [`Violation::Unknown`] means a checker ran out of its search budget; the run counts as failed
//! (hygiene, §8.8) but the history is not known to be wrong.

pub mod bank;
pub mod committed;
pub mod convergence;
pub mod elections;
pub mod history;
pub mod linearizability;
pub mod liveness;
pub mod log_matching;
pub mod progress;
pub mod read_index;
pub mod set;
pub mod sql;
pub mod violation;

pub use bank::check_bank;
pub use committed::{check_committed, CommittedEntry};
pub use convergence::{check_convergence, ReplicaState};
pub use elections::{check_election_safety, check_votes, LeaderObserved, VoteObserved};
pub use history::{Kind, Operation, SqlEvent, SqlFinal, SqlOutcome};
pub use linearizability::{check_linearizability, check_linearizability_with_budget, VISITED_STATES_PER_KEY_MAX};
pub use liveness::{check_liveness, LivenessObservation};
pub use set::check_set;
pub use sql::check_sql;
pub use violation::Violation;
