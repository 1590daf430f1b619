//! The SQLite state machine with row-change capture.
//!
//! The leader runs each client request once, inside a savepoint, with a
//! SQLite session attached per statement, and replicates the row changes
//! (changesets) plus DDL texts. Followers apply those changesets with triggers
//! off; any conflict, or a change SQLite would skip silently (missing table,
//! column count mismatch), is divergence and stops the node.
//!
//! Internal state lives in tables named `_deeb_*` in the same database, so it
//! is written in the same transaction as the entry it reflects and travels in
//! snapshots: `_deeb_meta` (applied index and term, conf state) and
//! `_deeb_members` (node id -> address). Client SQL may not touch them.

use std::time::Duration;

use deeb_proto::{Op, StatementResult};
use thiserror::Error;

mod apply;
pub mod changes;
mod classify;
pub mod complete;
mod digest;
pub mod dump;
pub mod load;
mod random;
mod reader;
pub mod requests;
pub mod restore;
mod rowids;
pub mod seed;
mod session;
mod state_machine;
mod value;

pub use reader::Reader;
pub use state_machine::{file_digest, SqliteReaders, SqliteSnapshotTaker, SqliteStateMachine};
pub use value::{from_sql as value_from_sql, to_sql as value_to_sql};

/// The host's monotonic clock, read while a statement runs to enforce its
/// deadline (the core never reads a clock itself).
pub type Clock = Box<dyn Fn() -> Duration + Send>;

/// Bounds on one client write request on the leader. A request that
/// exceeds one fails with an error naming it; the node goes on.
#[derive(Clone, Debug)]
pub struct WriteLimits {
    /// Wall-clock time one statement may run (needs a [`Clock`]).
    pub statement_timeout: Duration,
    /// SQLite VM steps one statement may run (deterministic).
    pub statement_steps_max: u64,
    /// Bytes of row changes one request may make; also the largest
    /// string, blob or row a statement may build.
    pub row_changes_bytes_max: usize,
}

impl Default for WriteLimits {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(5),
            statement_steps_max: 200_000_000,
            row_changes_bytes_max: 16 * 1024 * 1024,
        }
    }
}

/// A failure of the database itself (I/O, corruption). Stops the node.
#[derive(Debug, Error)]
pub enum SqlError {
    /// An error from SQLite.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Any other failure (misuse, I/O, an invalid snapshot).
    #[error("{0}")]
    Other(String),
}

/// A client's request failed; nothing of it was applied. Returned to the
/// client as data, never a replication failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("statement {statement_index}: {message}")]
pub struct RequestError {
    /// The index of the failing statement within the request.
    pub statement_index: usize,
    /// What kind of failure (a stable code for clients).
    pub class: ErrorClass,
    /// SQLite's extended result code, when SQLite failed the statement.
    pub sqlite_code: Option<i32>,
    /// SQLite's message, or why deeb refused the statement.
    pub message: String,
}

impl RequestError {
    /// Statement `statement_index` of the request failed with `error`.
    pub fn new(statement_index: usize, error: StatementError) -> Self {
        let StatementError { class, sqlite_code, message } = error;
        RequestError { statement_index, class, sqlite_code, message }
    }
}

/// The class of a client statement's failure. Clients see it as a stable
/// code (the proto's `ErrorCode`), so they never parse message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// SQLite could not prepare or run it: syntax, a missing table or
    /// column, wrong parameters, a type error.
    Sql,
    /// A constraint failed: UNIQUE, NOT NULL, CHECK, FOREIGN KEY (also at
    /// the end of the request), or a trigger's `RAISE`.
    Constraint,
    /// deeb refuses the statement before or instead of replicating it (the
    /// README's "SQL support" lists each refusal and why).
    Refused,
    /// A size limit: the request's row changes, a value's size, the rows a
    /// write may return.
    Limit,
    /// The statement's deadline or its step bound stopped it.
    Timeout,
}

/// Why one client statement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementError {
    pub class: ErrorClass,
    pub sqlite_code: Option<i32>,
    pub message: String,
}

impl StatementError {
    fn with_class(class: ErrorClass, message: impl Into<String>) -> Self {
        StatementError { class, sqlite_code: None, message: message.into() }
    }

    /// deeb refuses the statement.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::with_class(ErrorClass::Refused, message)
    }

    /// The statement crossed a size limit.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::with_class(ErrorClass::Limit, message)
    }

    /// The statement ran out of time or steps.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::with_class(ErrorClass::Timeout, message)
    }

    /// A constraint failed where deeb, not SQLite, found it.
    pub fn constraint(message: impl Into<String>) -> Self {
        Self::with_class(ErrorClass::Constraint, message)
    }

    /// SQLite's own error for the statement, classed by its result code.
    pub fn sqlite(error: &rusqlite::Error) -> Self {
        let (class, sqlite_code) = match error.sqlite_error() {
            Some(e) => {
                let class = match e.code {
                    rusqlite::ErrorCode::ConstraintViolation => ErrorClass::Constraint,
                    // An exhausted AUTOINCREMENT counter answers SQLITE_FULL.
                    rusqlite::ErrorCode::TooBig | rusqlite::ErrorCode::DiskFull => ErrorClass::Limit,
                    _ => ErrorClass::Sql,
                };
                (class, Some(e.extended_code))
            }
            None => (ErrorClass::Sql, None),
        };
        StatementError { class, sqlite_code, message: error.to_string() }
    }
}

/// deeb's refusals are written as text where they are decided.
impl From<String> for StatementError {
    fn from(message: String) -> Self {
        StatementError::refused(message)
    }
}

/// Applying a committed entry failed.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// This replica's data differs from the leader's. Stop; never guess.
    #[error("replica divergence at index {index}: {reason}")]
    Divergence {
        /// The log index of the entry being applied.
        index: u64,
        /// What differed (names the table).
        reason: String,
    },
    /// The database itself failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
}

/// A query was refused or failed. Returned to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    /// The statement could write, or is refused on the read path.
    #[error("not a read-only statement: {0}")]
    NotReadOnly(String),
    /// SQLite's error message (syntax, missing table, bad parameters...).
    #[error("{0}")]
    Sql(String),
    /// The statement was stopped: its deadline passed, its client went
    /// away, or the node is shutting down.
    #[error("{0}")]
    Stopped(String),
    /// A row of the result is larger than any row a write may build.
    #[error("{0}")]
    Limit(String),
}

/// The index and term of the last entry applied to the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The raft log index.
    pub index: u64,
    /// The raft term of that entry.
    pub term: u64,
}

/// What one successful request produced on the leader.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Executed {
    /// The ops to replicate (DDL texts and changesets), in order.
    pub ops: Vec<Op>,
    /// One result per statement.
    pub results: Vec<StatementResult>,
}

#[cfg(test)]
mod tests;
