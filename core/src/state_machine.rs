//! The seam between the node and the database it replicates.
//!
//! The node decides what happens and in which order (raft); a
//! [`StateMachine`] does it to the data. On the leader it runs client
//! requests inside one open batch and turns each into ops (row changes,
//! schema text) that are proposed as one log entry; once that entry
//! commits, the batch is kept. Every other replica applies the committed
//! entry's ops. Reads, snapshots and digests look at the applied state.
//!
//! The SQLite backend is [`crate::sql::SqliteStateMachine`]; every backend
//! passes the scenarios of [`crate::conformance`].

use std::path::Path;

use deeb_proto::{Statement, StatementResult, WriteBatch};

use crate::sql::{Applied, ApplyError, Clock, Executed, RequestError, SqlError, WriteLimits};

/// Takes one snapshot off the node.
pub trait SnapshotTaker: Send + 'static {
    /// Writes a snapshot of the applied state (as of one read transaction)
    /// to `dest`, a new file, and syncs it; returns the entry it reflects
    /// and the raft configuration as of that entry (read from the copy).
    fn take(self, dest: &Path) -> Result<TakenSnapshot, SqlError>;
}

/// Opens readers of the applied state without the state machine, which may
/// be away on the host's worker running a batch: reads and digests go on
/// meanwhile. Each reader sees committed state only.
pub trait Readers: Clone + Send + 'static {
    /// A read-only view of the applied state (its queries may run on
    /// another thread).
    type Reader: Send + 'static;

    /// Opens a reader.
    fn open(&self) -> Result<Self::Reader, SqlError>;

    /// The applied entry and a hash of the applied state, equal on replicas
    /// that hold the same data, both read in one read transaction.
    fn digest(&self) -> Result<(Applied, u64), SqlError>;
}

/// What a snapshot file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenSnapshot {
    pub applied: Applied,
    /// The encoded raft configuration as of `applied`, if any was applied.
    pub conf_state: Option<Vec<u8>>,
    /// The state machine itself was durable through `applied` when the
    /// taker returned, so the log may be compacted to it. (Commits need
    /// not be synced one by one: the log is the durable record. But a
    /// crash must never leave the database behind the log's start.)
    pub durable: bool,
}

/// The replicated database, as the node drives it. Errors of type
/// [`SqlError`] and [`ApplyError::Sql`] are failures of the database itself
/// and stop the node; a client's failing request is a [`RequestError`] and
/// an entry that does not fit this replica's data is
/// [`ApplyError::Divergence`].
pub trait StateMachine {
    /// Opens readers of the applied state, off the node.
    type Readers: Readers;

    /// Takes a snapshot off the node (the host runs it on a worker while
    /// the node goes on), from one read transaction of the applied state.
    type Snapshots: SnapshotTaker;

    /// Sets the bounds on each client request (statement time and steps,
    /// row-change bytes).
    fn set_limits(&mut self, limits: WriteLimits);

    /// Gives the backend the host's clock for statement deadlines.
    fn set_clock(&mut self, clock: Clock);

    /// The last entry whose effects are in the database.
    fn applied(&self) -> Applied;

    /// The raft configuration as of [`Self::applied`], encoded, if any was
    /// ever applied.
    fn conf_state(&self) -> Result<Option<Vec<u8>>, SqlError>;

    /// The members' addresses as of [`Self::applied`].
    fn members(&self) -> Result<Vec<(u64, String)>, SqlError>;

    /// Leader: opens the batch that will be proposed at `next_index`, on
    /// top of the batches kept in the open transaction, if any (see
    /// [`Self::pipelines_batches`]).
    fn begin_batch(&mut self, next_index: u64) -> Result<(), SqlError>;

    /// True for a backend that may execute a batch on top of batches
    /// proposed and not yet committed, all in one open transaction that
    /// [`Self::commit_batch`] commits once the last of them commits (the
    /// leader's pipeline). False: one batch at a time, and
    /// [`Self::keep_batch`] and [`Self::rollback_all`] need not
    /// distinguish the executing batch from kept ones.
    fn pipelines_batches(&self) -> bool {
        false
    }

    /// Leader: the executing batch was proposed; it stays in the open
    /// transaction, and a later [`Self::begin_batch`] opens on top of it.
    fn keep_batch(&mut self) -> Result<(), SqlError> {
        Ok(())
    }

    /// Leader: drops the open transaction with every batch in it, kept or
    /// executing (leadership lost).
    fn rollback_all(&mut self) -> Result<(), SqlError> {
        self.rollback_batch()
    }

    /// True for a request this backend runs in an entry of its own, when
    /// the entry commits, on every replica (the leader too): MySQL commits
    /// implicitly around a schema change, so it cannot wait in an open
    /// batch. The leader's client gets the outcome from
    /// [`Self::take_outcomes`].
    fn runs_alone(&self, _statements: &[Statement]) -> bool {
        false
    }

    /// False for a backend that cannot install a SQLite file restored
    /// through the log ([`deeb_proto::RestorePart`]): the leader refuses
    /// such pieces before they are proposed.
    fn takes_restores(&self) -> bool {
        true
    }

    /// The outcome of each write of the batch just applied by
    /// [`Self::apply_batch`], for a backend whose requests may run only
    /// then (see [`Self::runs_alone`]); `None` keeps the results
    /// [`Self::execute_request`] gave.
    fn take_outcomes(&mut self) -> Option<Vec<Result<Vec<StatementResult>, RequestError>>> {
        None
    }

    /// Leader: runs one client request in the open batch. The inner error
    /// is the client's; if the request ended the batch itself,
    /// [`Self::batch_open`] is false afterwards.
    fn execute_request(&mut self, statements: &[Statement]) -> Result<Result<Executed, RequestError>, SqlError>;

    /// Leader: records the idempotency key of the request just executed,
    /// with its results, in the open batch. Replicas record the keys of the
    /// writes in [`Self::apply_batch`], and both forget old keys at the same
    /// entries, so the record is replicated state.
    fn record_request(&mut self, key: &str, results: &[StatementResult]) -> Result<(), SqlError>;

    /// The index and results recorded for an idempotency key, if it is
    /// still remembered (the open batch included).
    fn recorded_request(&self, key: &str) -> Result<Option<(u64, Vec<StatementResult>)>, SqlError>;

    /// True while a batch transaction is open (a batch executing, or
    /// batches kept).
    fn batch_open(&self) -> bool;

    /// True once the open batch has run as long as one statement may (the
    /// rest of the queue waits for the next batch).
    fn batch_time_spent(&self) -> bool;

    /// Leader: commits the open transaction (every batch kept, and the one
    /// executing) as the entry `applied`, that of its last batch.
    fn commit_batch(&mut self, applied: Applied) -> Result<(), SqlError>;

    /// Leader: drops the executing batch; batches kept before it stay.
    /// With none kept, the transaction ends.
    fn rollback_batch(&mut self) -> Result<(), SqlError>;

    /// Applies a committed batch executed elsewhere (or dropped here).
    fn apply_batch(&mut self, batch: &WriteBatch, applied: Applied) -> Result<(), ApplyError>;

    /// Records an entry with no data (a new leader's first entry).
    fn apply_empty(&mut self, applied: Applied) -> Result<(), SqlError>;

    /// Records a membership change: the new raft configuration and member
    /// addresses (`None` removes one).
    fn apply_membership(
        &mut self,
        applied: Applied,
        conf_state: &[u8],
        members: &[(u64, Option<String>)],
    ) -> Result<(), SqlError>;

    /// What opens readers of the applied state (and digests it) without
    /// the state machine; taken once, after [`Self::set_limits`].
    fn readers(&self) -> Self::Readers;

    /// A reader of the applied state.
    fn reader(&self) -> Result<<Self::Readers as Readers>::Reader, SqlError> {
        self.readers().open()
    }

    /// A hash of the applied state, equal on replicas that hold the same
    /// data.
    fn digest(&self) -> Result<u64, SqlError> {
        Ok(self.readers().digest()?.1)
    }

    /// Writes a snapshot of the applied state to `dest` (a new file);
    /// returns the entry it reflects.
    fn create_snapshot(&self, dest: &Path) -> Result<Applied, SqlError>;

    /// A taker of snapshots that runs without the state machine, so the
    /// node need not wait for it.
    fn snapshot_taker(&self) -> Result<Self::Snapshots, SqlError>;

    /// Replaces the whole state with the snapshot at `src`, atomically: if
    /// it fails, the old state is intact. Durable when it returns.
    fn install_snapshot(&mut self, src: &Path) -> Result<Applied, SqlError>;
}
