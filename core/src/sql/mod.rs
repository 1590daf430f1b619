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
mod classify;
mod digest;
mod random;
mod reader;
mod rowids;
mod session;
mod state_machine;
mod value;

pub use reader::Reader;
pub use state_machine::SqliteStateMachine;

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
    /// SQLite's message, or why deeb refused the statement.
    pub message: String,
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
