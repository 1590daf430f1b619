//! The SQLite state machine with row-change capture.
//!
//! INTERFACE SKETCH: bodies are to be written; signatures may be refined.
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

use std::path::Path;

use deeb_proto::{Op, QueryChunk, Statement, StatementResult, WriteBatch};
use thiserror::Error;

/// A failure of the database itself (I/O, corruption). Stops the node.
#[derive(Debug, Error)]
pub enum SqlError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Other(String),
}

/// A client's request failed; nothing of it was applied. Returned to the
/// client as data, never a replication failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("statement {statement_index}: {message}")]
pub struct RequestError {
    pub statement_index: usize,
    pub message: String,
}

/// Applying a committed entry failed.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// This replica's data differs from the leader's. Stop; never guess.
    #[error("replica divergence at index {index}: {reason}")]
    Divergence { index: u64, reason: String },
    #[error(transparent)]
    Sql(#[from] SqlError),
}

/// A query was refused or failed. Returned to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    #[error("not a read-only statement: {0}")]
    NotReadOnly(String),
    #[error("{0}")]
    Sql(String),
}

/// The index and term of the last entry applied to the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
}

/// What one successful request produced on the leader.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Executed {
    pub ops: Vec<Op>,
    pub results: Vec<StatementResult>,
}

/// The database of one node: a writer connection (WAL mode) plus read-only
/// connections handed out as [`Reader`]s.
pub struct StateMachine {}

impl StateMachine {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path, seed: u64) -> Result<Self, SqlError> {
        let _ = (path, seed);
        todo!()
    }

    pub fn applied(&self) -> Applied {
        todo!()
    }

    /// The raft ConfState (rust-protobuf bytes) as of `applied`, if any.
    pub fn conf_state(&self) -> Result<Option<Vec<u8>>, SqlError> {
        todo!()
    }

    /// Node id -> address, as of `applied`.
    pub fn members(&self) -> Result<Vec<(u64, String)>, SqlError> {
        todo!()
    }

    /// Leader: opens the batch transaction. `next_index` seeds SQLite's PRNG.
    pub fn begin_batch(&mut self, next_index: u64) -> Result<(), SqlError> {
        let _ = next_index;
        todo!()
    }

    /// Leader: runs one request inside a savepoint of the open batch. The
    /// inner `Err` is the client's error (rolled back to the savepoint).
    pub fn execute_request(&mut self, statements: &[Statement]) -> Result<Result<Executed, RequestError>, SqlError> {
        let _ = statements;
        todo!()
    }

    /// Leader: the batch's entry applied: record `applied` and COMMIT.
    pub fn commit_batch(&mut self, applied: Applied) -> Result<(), SqlError> {
        let _ = applied;
        todo!()
    }

    /// Leader: drop the open batch (leadership lost, proposal refused).
    pub fn rollback_batch(&mut self) -> Result<(), SqlError> {
        todo!()
    }

    /// True while a batch transaction is open.
    pub fn batch_open(&self) -> bool {
        todo!()
    }

    /// Applies a committed batch executed elsewhere (or rolled back here).
    pub fn apply_batch(&mut self, batch: &WriteBatch, applied: Applied) -> Result<(), ApplyError> {
        let _ = (batch, applied);
        todo!()
    }

    /// Applies an entry with no SQL (leader no-op): records `applied`.
    pub fn apply_empty(&mut self, applied: Applied) -> Result<(), SqlError> {
        let _ = applied;
        todo!()
    }

    /// Applies a membership change: records the new conf state and member
    /// addresses (`None` address removes the member) and `applied`.
    pub fn apply_membership(
        &mut self,
        applied: Applied,
        conf_state: &[u8],
        members: &[(u64, Option<String>)],
    ) -> Result<(), SqlError> {
        let _ = (applied, conf_state, members);
        todo!()
    }

    /// Opens a read-only connection.
    pub fn reader(&self) -> Result<Reader, SqlError> {
        todo!()
    }

    /// Ordered hash of the schema and every table's rows (`_deeb_meta`
    /// excluded, `sqlite_sequence` included).
    pub fn digest(&self) -> Result<u64, SqlError> {
        todo!()
    }

    /// Writes a consistent copy of the database to `dest` (from a read
    /// transaction, so writes go on) and returns the point it reflects.
    pub fn create_snapshot(&self, dest: &Path) -> Result<Applied, SqlError> {
        let _ = dest;
        todo!()
    }

    /// Replaces the whole database with the snapshot file at `src`,
    /// atomically (a crash halfway leaves the old state).
    pub fn install_snapshot(&mut self, src: &Path) -> Result<Applied, SqlError> {
        let _ = src;
        todo!()
    }
}

/// A read-only connection. `Send`, so a host may run queries off its event
/// loop.
pub struct Reader {}

impl Reader {
    /// Runs a read-only statement, handing the result to `sink` in chunks of
    /// at most `rows_max` rows and about `bytes_max` bytes; the first chunk
    /// carries the columns. Stops early when `sink` returns false.
    pub fn query(
        &self,
        statement: &Statement,
        rows_max: usize,
        bytes_max: usize,
        sink: &mut dyn FnMut(QueryChunk) -> bool,
    ) -> Result<(), QueryError> {
        let _ = (statement, rows_max, bytes_max, sink);
        todo!()
    }
}
