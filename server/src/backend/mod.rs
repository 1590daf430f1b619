//! The database each node replicates into: SQLite in the data directory
//! (the default, and the only one in the simulator), or the node's own
//! MySQL/MariaDB server beside it (`--backend mysql`). One enum over both
//! keeps the event loop, the read path and the API free of the choice.

#[cfg(not(madsim))]
pub mod mysql;

use std::path::Path;

use deeb_core::sql::{
    Applied, ApplyError, Clock, Executed, QueryError, Reader, RequestError, SqlError, SqliteReaders,
    SqliteSnapshotTaker, SqliteStateMachine, WriteLimits,
};
use deeb_core::{Readers, SnapshotTaker, StateMachine, TakenSnapshot};
use deeb_proto::{QueryChunk, Statement, StatementResult, WriteBatch};

/// Runs the same expression on whichever backend `$value` holds.
macro_rules! each {
    ($value:expr, $enum:ident, $inner:ident => $body:expr) => {
        match $value {
            $enum::Sqlite($inner) => $body,
            #[cfg(not(madsim))]
            $enum::Mysql($inner) => $body,
        }
    };
}

/// A node's state machine.
pub enum Backend {
    Sqlite(SqliteStateMachine),
    #[cfg(not(madsim))]
    Mysql(mysql::MysqlStateMachine),
}

/// Opens readers of either backend.
#[derive(Clone)]
pub enum BackendReaders {
    Sqlite(SqliteReaders),
    #[cfg(not(madsim))]
    Mysql(mysql::MysqlReaders),
}

/// A reader of either backend's applied state. (The SQLite one, the common
/// case, is held inline: no allocation per read.)
#[allow(clippy::large_enum_variant)]
pub enum BackendReader {
    Sqlite(Reader),
    #[cfg(not(madsim))]
    Mysql(mysql::MysqlReader),
}

/// Takes a snapshot of either backend.
pub enum BackendSnapshots {
    Sqlite(SqliteSnapshotTaker),
    #[cfg(not(madsim))]
    Mysql(mysql::MysqlSnapshotTaker),
}

impl BackendReader {
    /// The SQLite reader, for what only the SQLite backend has (backups of
    /// its file, the change stream's decoding).
    pub fn sqlite(&self) -> Option<&Reader> {
        match self {
            BackendReader::Sqlite(reader) => Some(reader),
            #[cfg(not(madsim))]
            BackendReader::Mysql(_) => None,
        }
    }

    /// Runs a read-only query, streaming its chunks (see
    /// [`Reader::query_until`]).
    ///
    /// # Errors
    /// The query is refused, fails, or is stopped.
    pub fn query_until(
        &self,
        statement: &Statement,
        rows_max: usize,
        bytes_max: usize,
        stop: Box<dyn FnMut() -> Option<String> + '_>,
        sink: &mut dyn FnMut(QueryChunk) -> bool,
    ) -> Result<(), QueryError> {
        each!(self, BackendReader, reader => reader.query_until(statement, rows_max, bytes_max, stop, sink))
    }

    /// True if a short query may run on the caller's task: SQLite answers
    /// from memory; MySQL is a network round trip away.
    pub fn runs_inline(&self) -> bool {
        matches!(self, BackendReader::Sqlite(_))
    }
}

impl Readers for BackendReaders {
    type Reader = BackendReader;

    fn open(&self) -> Result<BackendReader, SqlError> {
        Ok(match self {
            BackendReaders::Sqlite(readers) => BackendReader::Sqlite(readers.open()?),
            #[cfg(not(madsim))]
            BackendReaders::Mysql(readers) => BackendReader::Mysql(readers.open()?),
        })
    }

    fn digest(&self) -> Result<(Applied, u64), SqlError> {
        each!(self, BackendReaders, readers => readers.digest())
    }
}

impl SnapshotTaker for BackendSnapshots {
    fn take(self, dest: &Path) -> Result<TakenSnapshot, SqlError> {
        each!(self, BackendSnapshots, taker => taker.take(dest))
    }
}

impl StateMachine for Backend {
    type Readers = BackendReaders;
    type Snapshots = BackendSnapshots;

    fn set_limits(&mut self, limits: WriteLimits) {
        each!(self, Backend, sm => sm.set_limits(limits))
    }

    fn set_clock(&mut self, clock: Clock) {
        each!(self, Backend, sm => sm.set_clock(clock))
    }

    fn applied(&self) -> Applied {
        each!(self, Backend, sm => sm.applied())
    }

    fn conf_state(&self) -> Result<Option<Vec<u8>>, SqlError> {
        each!(self, Backend, sm => sm.conf_state())
    }

    fn members(&self) -> Result<Vec<(u64, String)>, SqlError> {
        each!(self, Backend, sm => sm.members())
    }

    fn runs_alone(&self, statements: &[Statement]) -> bool {
        each!(self, Backend, sm => sm.runs_alone(statements))
    }

    fn takes_restores(&self) -> bool {
        each!(self, Backend, sm => sm.takes_restores())
    }

    fn take_outcomes(&mut self) -> Option<Vec<Result<Vec<StatementResult>, RequestError>>> {
        each!(self, Backend, sm => sm.take_outcomes())
    }

    fn begin_batch(&mut self, next_index: u64) -> Result<(), SqlError> {
        each!(self, Backend, sm => sm.begin_batch(next_index))
    }

    fn execute_request(&mut self, statements: &[Statement]) -> Result<Result<Executed, RequestError>, SqlError> {
        each!(self, Backend, sm => sm.execute_request(statements))
    }

    fn record_request(&mut self, key: &str, results: &[StatementResult]) -> Result<(), SqlError> {
        each!(self, Backend, sm => sm.record_request(key, results))
    }

    fn recorded_request(&self, key: &str) -> Result<Option<(u64, Vec<StatementResult>)>, SqlError> {
        each!(self, Backend, sm => sm.recorded_request(key))
    }

    fn batch_open(&self) -> bool {
        each!(self, Backend, sm => sm.batch_open())
    }

    fn batch_time_spent(&self) -> bool {
        each!(self, Backend, sm => sm.batch_time_spent())
    }

    fn commit_batch(&mut self, applied: Applied) -> Result<(), SqlError> {
        each!(self, Backend, sm => sm.commit_batch(applied))
    }

    fn rollback_batch(&mut self) -> Result<(), SqlError> {
        each!(self, Backend, sm => sm.rollback_batch())
    }

    fn pipelines_batches(&self) -> bool {
        each!(self, Backend, sm => sm.pipelines_batches())
    }

    fn keep_batch(&mut self) -> Result<(), SqlError> {
        each!(self, Backend, sm => sm.keep_batch())
    }

    fn rollback_all(&mut self) -> Result<(), SqlError> {
        each!(self, Backend, sm => sm.rollback_all())
    }

    fn apply_batch(&mut self, batch: &WriteBatch, applied: Applied) -> Result<(), ApplyError> {
        each!(self, Backend, sm => sm.apply_batch(batch, applied))
    }

    fn apply_empty(&mut self, applied: Applied) -> Result<(), SqlError> {
        each!(self, Backend, sm => sm.apply_empty(applied))
    }

    fn apply_membership(
        &mut self,
        applied: Applied,
        conf_state: &[u8],
        members: &[(u64, Option<String>)],
    ) -> Result<(), SqlError> {
        each!(self, Backend, sm => sm.apply_membership(applied, conf_state, members))
    }

    fn readers(&self) -> BackendReaders {
        match self {
            Backend::Sqlite(sm) => BackendReaders::Sqlite(sm.readers()),
            #[cfg(not(madsim))]
            Backend::Mysql(sm) => BackendReaders::Mysql(sm.readers()),
        }
    }

    fn create_snapshot(&self, dest: &Path) -> Result<Applied, SqlError> {
        each!(self, Backend, sm => sm.create_snapshot(dest))
    }

    fn snapshot_taker(&self) -> Result<BackendSnapshots, SqlError> {
        Ok(match self {
            Backend::Sqlite(sm) => BackendSnapshots::Sqlite(StateMachine::snapshot_taker(sm)?),
            #[cfg(not(madsim))]
            Backend::Mysql(sm) => BackendSnapshots::Mysql(sm.snapshot_taker()?),
        })
    }

    fn install_snapshot(&mut self, src: &Path) -> Result<Applied, SqlError> {
        each!(self, Backend, sm => sm.install_snapshot(src))
    }
}
