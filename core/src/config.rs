//! Node configuration and the limits on every queue, batch and buffer.

use std::time::Duration;

use crate::ids::NodeId;

/// Everything a node needs to know that is not in its data directory.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero, never reused for a wiped disk).
    pub id: NodeId,
    /// Seeds all randomness in the node (election timeouts, SQLite's PRNG).
    pub seed: u64,
    /// Milliseconds per raft tick.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomized in
    /// `[election_ticks, 2 * election_ticks)`).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Take a snapshot after this many applied entries.
    pub snapshot_interval_entries: u64,
    /// Entries the log keeps below the applied index when it is compacted:
    /// the log is compacted to the newest snapshot at least this far behind
    /// (or to the newest one when a peer needs it), so a follower that is
    /// briefly behind catches up from the log rather than by a full copy.
    pub compaction_lag_entries: u64,
    /// Log segment size before a new segment file is started.
    pub segment_bytes_max: u64,
    /// The wall clock (milliseconds since the Unix epoch) when the node's
    /// `now` was zero: a batch's proposal time is this plus `now`, for the
    /// change stream's timestamps (replicas never read it). 0 in the
    /// simulator.
    pub clock_epoch_unix_ms: u64,
    /// The limits.
    pub limits: Limits,
    /// Deliberately injected bugs, for proving the simulator catches them.
    /// All off by default, and switchable only in builds with the
    /// `mutations` feature (the simulator's).
    pub mutations: Mutations,
}

impl Config {
    /// A configuration with default settings for node `id`.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            seed: id.0,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_interval_entries: 10_000,
            compaction_lag_entries: 1_000,
            segment_bytes_max: 16 * 1024 * 1024,
            clock_epoch_unix_ms: 0,
            limits: Limits::default(),
            mutations: Mutations::default(),
        }
    }

    /// The shortest election timeout (`election_ticks` ticks).
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.tick_ms.saturating_mul(self.election_ticks as u64))
    }

    /// The time a write statement may run. Statements run on the host's
    /// worker, not on the loop that sends heartbeats, so it may exceed the
    /// election timeout.
    pub fn write_statement_timeout(&self) -> Duration {
        self.limits.write_statement_timeout
    }
}

/// Limits on everything that grows. Exceeding one is a clear error to the
/// client, never unbounded memory.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes in one client write request (SQL text plus parameters).
    pub request_bytes_max: usize,
    /// Statements in one client write request.
    pub statements_per_request_max: usize,
    /// Requests waiting at the leader for the next batch.
    pub write_queue_max: usize,
    /// Requests in one batch (one raft entry).
    pub batch_requests_max: usize,
    /// Batches the leader keeps proposed and not yet committed (its
    /// pipeline): the next executes while earlier ones replicate, all in
    /// one open transaction committed with the last. 1 runs one batch at
    /// a time. (A backend that cannot pipeline runs one at a time.)
    pub batches_in_flight_max: usize,
    /// Bytes of changesets in one batch; a request that would exceed it
    /// waits for the next batch, and a request larger than it on its own
    /// is refused.
    pub batch_bytes_max: usize,
    /// Reads waiting for ReadIndex or for apply to catch up.
    pub pending_reads_max: usize,
    /// Admin requests (membership, transfer) in progress.
    pub pending_admin_max: usize,
    /// Bytes of raft entries in one append message.
    pub raft_message_bytes_max: u64,
    /// Append messages in flight to one follower.
    pub raft_inflight_messages_max: usize,
    /// Bytes in one snapshot chunk.
    pub snapshot_chunk_bytes_max: usize,
    /// Rows in one query result chunk.
    pub query_chunk_rows_max: usize,
    /// Bytes (approximate) in one query result chunk.
    pub query_chunk_bytes_max: usize,
    /// Ticks a read waits for ReadIndex before it fails.
    pub read_timeout_ticks: u64,
    /// Wall-clock time one write statement may run on the leader, measured
    /// with the host's clock ([`crate::Node::set_clock`]).
    pub write_statement_timeout: Duration,
    /// SQLite VM steps one statement (write or read) may run: a
    /// deterministic bound that also holds without a clock (simulator,
    /// tests).
    pub statement_steps_max: u64,
    /// Bytes of row changes one write request may make, checked while it
    /// runs; also the largest string, blob or row a write may build.
    pub request_row_changes_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_bytes_max: 4 * 1024 * 1024,
            statements_per_request_max: 1_000,
            write_queue_max: 10_000,
            batch_requests_max: 1_024,
            batches_in_flight_max: 4,
            batch_bytes_max: 16 * 1024 * 1024,
            pending_reads_max: 10_000,
            pending_admin_max: 16,
            raft_message_bytes_max: 1024 * 1024,
            raft_inflight_messages_max: 256,
            snapshot_chunk_bytes_max: 1024 * 1024,
            query_chunk_rows_max: 1_000,
            query_chunk_bytes_max: 1024 * 1024,
            read_timeout_ticks: 50,
            write_statement_timeout: Duration::from_secs(5),
            statement_steps_max: 200_000_000,
            request_row_changes_bytes_max: 16 * 1024 * 1024,
        }
    }
}

/// Declares [`Mutations`]: one switch per injected bug. Without the
/// `mutations` feature the struct is empty and every switch reads `false`,
/// a constant the compiler folds away: the released binary (built without
/// it) has no configuration that turns off fsync or vote persistence.
macro_rules! mutations {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Known bug classes that can be switched on at run time, so the
        /// simulator can show it catches each one (a checker that never
        /// fails proves nothing). The fields exist only with the
        /// `mutations` feature, which only the simulator enables.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Mutations {
            $(
                $(#[doc = $doc])*
                #[cfg(feature = "mutations")]
                pub $name: bool,
            )*
        }

        impl Mutations {
            $(
                $(#[doc = $doc])*
                #[inline]
                pub fn $name(&self) -> bool {
                    #[cfg(feature = "mutations")]
                    return self.$name;
                    #[cfg(not(feature = "mutations"))]
                    return false;
                }
            )*

            /// True if any mutation is on.
            pub fn any(&self) -> bool {
                *self != Self::default()
            }
        }
    };
}

mutations! {
    /// Serve linearizable reads locally, without ReadIndex.
    read_without_read_index,
    /// Serve a read once ReadIndex answers, before applying up to it.
    read_before_apply,
    /// Never fsync the log: acknowledge what a crash can lose.
    skip_log_sync,
    /// Send votes and append responses before what they promise is synced
    /// (the sync happens at the next ready instead).
    send_before_sync,
    /// Persist the hard state without the vote.
    forget_vote,
    /// Answer a proposal when any entry at its index applies.
    match_index_only,
    /// Replicate parameterless statements as SQL text to re-execute instead
    /// of their row changes.
    replicate_statements,
    /// Recover the log without verifying record checksums: a garbled record
    /// whose payload still decodes is believed, one that does not decode
    /// ends the log as if torn (SIM-NOTES M17).
    skip_record_checksums,
    /// Apply committed changesets with foreign keys on, so a follower runs
    /// the cascades the changeset already carries (issue 9's first defect).
    follower_foreign_keys,
    /// The leader ignores idempotency keys: a retried write applies again.
    ignore_idempotency_keys,
    /// Persist the hard state (and its commit index) before the entries
    /// in the same call: a crash between the two writes leaves a commit
    /// index past the log (issue 11, blind spot 3).
    hard_state_before_entries,
    /// Record the applied index in a transaction of its own after the
    /// batch's: a crash between the two leaves the batch applied and the
    /// index behind it, so the restarted node applies it again (issue 10).
    applied_index_outside_batch,
    /// Install a received snapshot with `synchronous=OFF`: the copy is not
    /// synced before the log is compacted past it, so a crash can leave
    /// the old database under a log that no longer has what it lacks.
    snapshot_install_unsynced,
    /// Compact the log to a snapshot without first making the state
    /// machine durable through it (no checkpoint after taking it, the
    /// durable mark ignored): a crash can then leave the database, whose
    /// commits are not synced, behind the log's first entry.
    compact_before_durable,
    /// Bound stale reads by the last leader contact, not by a read index
    /// the node has applied: a node that hears a leader but lags (or a
    /// leader deposed without knowing) serves data older than the bound.
    stale_bound_on_leader_contact,
    /// A follower overwriting conflicting entries keeps the old entries
    /// past the new ones (issue 11, blind spot 4).
    keep_stale_suffix,
    /// ReadIndex contexts are the host's bare request counter, which every
    /// node restarts from 1 (issue 11, blind spot 5): an answer to a read
    /// from before a restart can complete a new read with an old index.
    bare_read_contexts,
    /// A read that arrives while a ReadIndex round is in flight joins that
    /// round, whose index was asked for before the read arrived: it can
    /// miss a write acknowledged in between (issue 15's batched ReadIndex).
    read_joins_round_in_flight,
    /// Serve a lease read (or a stale read on the leader) at once, not once
    /// the committed index applied: the leader answers its writes when they
    /// commit, so such a read can miss one (issue 15's acknowledgement at
    /// commit).
    lease_read_before_apply,
    /// A request whose SQL ends the leader's transaction in a batch
    /// executing on top of batches in flight (its pipeline) starts a new
    /// transaction and goes on, as a batch with nothing under it does: the
    /// batches in flight are gone from it, yet still counted on to commit
    /// with it (issue 15's pipelined group commit).
    pipeline_over_lost_transaction,
}
