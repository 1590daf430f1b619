//! The client history the simulator records and the checkers read.
//!
//! Times are simulated time since the start of the run. An operation whose `completed` is `None` is
//! indeterminate: the client timed out or was told "outcome unknown", so it may have taken effect at
//! any time after `invoked`, or never.

use std::fmt;
use std::time::Duration;

/// One client operation: when it was invoked, when (if ever) its outcome came back, and what it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client (session) that issued the operation.
    pub client: u64,
    /// Simulated time at which the client sent the request.
    pub invoked: Duration,
    /// Simulated time at which the client learnt the outcome; `None` when the outcome is unknown.
    pub completed: Option<Duration>,
    /// What the operation did and what it observed.
    pub kind: Kind,
}

/// What an operation did. Register kinds work on a key whose initial state is absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Set `key` to `value`. Record only writes that succeeded or whose outcome is unknown.
    Write { key: u64, value: i64 },
    /// Read `key`. `observed` is `Some(None)` when the row was absent, `None` when the read failed
    /// (the checkers ignore such reads).
    Read { key: u64, observed: Option<Option<i64>> },
    /// A bounded-stale read of `key`: it must see every write acknowledged
    /// more than `allowed` before it was invoked (its bound, stretched by
    /// the slowest clock the seed allows, since the node measures the bound
    /// on its own clock). `observed` as for `Read`.
    StaleRead { key: u64, observed: Option<Option<i64>>, allowed: Duration },
    /// Set `key` to `new` if it holds `expected`. `succeeded` is `None` when the outcome is unknown;
    /// `Some(false)` means the value was not `expected`, `Some(true)` that it was and is now `new`.
    CompareAndSet { key: u64, expected: i64, new: i64, succeeded: Option<bool> },
    /// Read the sum of every bank account; `None` when the read failed.
    BankRead { total: Option<i64> },
    /// Move `amount` from account `from` to account `to`; `succeeded` is `None` when unknown.
    Transfer { from: u64, to: u64, amount: i64, succeeded: Option<bool> },
    /// Insert `value` into the set; `acknowledged` when the server confirmed it.
    SetInsert { value: i64, acknowledged: bool },
    /// The final read of the whole set, after the liveness phase.
    SetFinal { values: Vec<i64> },
    /// An operation of the SQL workload (foreign keys, triggers, conflict clauses, AUTOINCREMENT,
    /// DDL, large rows), judged by `check_sql`.
    Sql(SqlEvent),
}

/// What the SQL workload did or saw. Values are unique per run unless said otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlEvent {
    /// An acknowledged AUTOINCREMENT insert: the id it was given and the log index it applied at
    /// (requests batched into one entry share an index).
    AutoIncrement { id: i64, index: u64 },
    /// A request that must end in a statement error (a trigger's `RAISE(ROLLBACK)`, an
    /// `INSERT OR ROLLBACK` conflict): none of `poison` may ever appear.
    MustFail { what: &'static str, poison: Vec<i64>, outcome: SqlOutcome },
    /// An insert into the audited table (an AFTER INSERT trigger copies its value into the audit
    /// table). `permanent` for a plain insert, whose row is never replaced; `false` for
    /// `INSERT OR REPLACE`, whose row a later replace may remove (its audit row stays).
    Audited { value: i64, acknowledged: bool, permanent: bool },
    /// An acknowledged `INSERT OR IGNORE` of a value that is always present: `rows` affected.
    Ignored { rows: u64 },
    /// An insert into the `ON DELETE SET NULL` child table, whose rows are never deleted.
    NullableChild { id: i64, acknowledged: bool },
    /// A read of invariant counts that must all be zero (named by `INVARIANT_NAMES`).
    Invariants { counts: Vec<i64> },
    /// A read, invoked after a parent's delete or rename was acknowledged, of how many children
    /// still point at its old id: must be zero (parent ids are never reused).
    GoneParent { parent: i64, children: i64 },
    /// An insert of a large row.
    Blob { id: i64, acknowledged: bool },
    /// A delete of a large row was sent (whatever its outcome).
    BlobDelete { id: i64 },
    /// An acknowledged `ALTER TABLE ... ADD COLUMN c<column>`.
    AddColumn { column: i64 },
    /// A statement error the operation does not allow.
    UnexpectedError { what: &'static str, message: String },
    /// The final reads of the SQL tables, after the liveness phase.
    Final(Box<SqlFinal>),
}

/// The final reads of the SQL tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlFinal {
    /// Values in the audit table (one row each).
    pub audit: Vec<i64>,
    /// Values in the audited table.
    pub audited: Vec<i64>,
    /// Ids in the set-null child table.
    pub nullable_children: Vec<i64>,
    /// Large rows: id and length.
    pub blobs: Vec<(i64, i64)>,
    /// The `n` of every column `c<n>` added to the DDL table.
    pub columns: Vec<i64>,
}

/// What a client saw of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlOutcome {
    Acknowledged,
    StatementError,
    /// Not applied for another reason (no leader, queue full).
    NotApplied,
    /// Timed out or broke in flight.
    Unknown,
}

impl Operation {
    /// Whether the outcome of the operation never came back.
    pub fn is_indeterminate(&self) -> bool {
        self.completed.is_none()
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "client {} [{:?}, ", self.client, self.invoked)?;
        match self.completed {
            Some(completed) => write!(formatter, "{completed:?}")?,
            None => write!(formatter, "?")?,
        }
        write!(formatter, "] {}", self.kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Write { key, value } => write!(formatter, "write key {key} := {value}"),
            Kind::Read { key, observed } => write!(formatter, "read key {key} -> {}", Observed(*observed)),
            Kind::StaleRead { key, observed, allowed } => {
                write!(formatter, "stale read (allowed {allowed:?}) key {key} -> {}", Observed(*observed))
            }
            Kind::CompareAndSet { key, expected, new, succeeded } => {
                write!(formatter, "cas key {key} {expected} -> {new} {}", Outcome(*succeeded))
            }
            Kind::BankRead { total: Some(total) } => write!(formatter, "bank read total {total}"),
            Kind::BankRead { total: None } => write!(formatter, "bank read failed"),
            Kind::Transfer { from, to, amount, succeeded } => {
                write!(formatter, "transfer {amount} from {from} to {to} {}", Outcome(*succeeded))
            }
            Kind::SetInsert { value, acknowledged } => {
                let state = if *acknowledged { "acknowledged" } else { "unacknowledged" };
                write!(formatter, "set insert {value} {state}")
            }
            Kind::SetFinal { values } => write!(formatter, "set final read of {} values", values.len()),
            Kind::Sql(event) => write!(formatter, "sql {event}"),
        }
    }
}

impl fmt::Display for SqlEvent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlEvent::AutoIncrement { id, index } => {
                write!(formatter, "autoincrement insert got id {id} at index {index}")
            }
            SqlEvent::MustFail { what, poison, outcome } => write!(formatter, "{what} (values {poison:?}) {outcome:?}"),
            SqlEvent::Audited { value, acknowledged, permanent } => {
                let how = if *permanent { "insert" } else { "insert or replace" };
                write!(formatter, "audited {how} {value} {}", Outcome(Some(*acknowledged)))
            }
            SqlEvent::Ignored { rows } => write!(formatter, "insert or ignore of a present value: {rows} rows"),
            SqlEvent::NullableChild { id, acknowledged } => {
                write!(formatter, "set-null child insert {id} {}", Outcome(Some(*acknowledged)))
            }
            SqlEvent::Invariants { counts } => write!(formatter, "invariant counts {counts:?}"),
            SqlEvent::GoneParent { parent, children } => {
                write!(formatter, "{children} children of deleted or renamed parent {parent}")
            }
            SqlEvent::Blob { id, acknowledged } => write!(formatter, "large row {id} {}", Outcome(Some(*acknowledged))),
            SqlEvent::BlobDelete { id } => write!(formatter, "large row {id} deleted"),
            SqlEvent::AddColumn { column } => write!(formatter, "column c{column} added"),
            SqlEvent::UnexpectedError { what, message } => write!(formatter, "{what}: unexpected error {message:?}"),
            SqlEvent::Final(read) => write!(
                formatter,
                "final read: {} audit rows, {} audited rows, {} set-null children, {} large rows, columns {:?}",
                read.audit.len(),
                read.audited.len(),
                read.nullable_children.len(),
                read.blobs.len(),
                read.columns
            ),
        }
    }
}

/// Formats what a read saw.
struct Observed(Option<Option<i64>>);

impl fmt::Display for Observed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(Some(value)) => write!(formatter, "{value}"),
            Some(None) => write!(formatter, "absent"),
            None => write!(formatter, "failed"),
        }
    }
}

/// Formats a success flag that may be unknown.
struct Outcome(Option<bool>);

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(true) => write!(formatter, "ok"),
            Some(false) => write!(formatter, "failed"),
            None => write!(formatter, "unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_client_times_and_kind() {
        let operation = Operation {
            client: 3,
            invoked: Duration::from_nanos(10),
            completed: None,
            kind: Kind::Read { key: 7, observed: Some(None) },
        };
        assert_eq!(operation.to_string(), "client 3 [10ns, ?] read key 7 -> absent");
        assert!(operation.is_indeterminate());
    }
}
