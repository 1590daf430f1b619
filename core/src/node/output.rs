//! What the node hands back to its host, and the errors clients see.

use deeb_proto::{SnapshotHeader, StatementResult};
use thiserror::Error;

use crate::ids::{LogIndex, NodeId};
use crate::sql::{QueryError, RequestError};

/// A host-chosen number that routes a reply to the client that asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientToken(pub u64);

/// One effect the host must carry out, drained with `Node::poll_output`.
#[derive(Debug)]
pub enum Output {
    /// Raft messages (rust-protobuf encoded `eraftpb::Message`) for a peer.
    /// Already persisted where raft requires it: send them as they come.
    Send { to: NodeId, messages: Vec<Vec<u8>> },
    /// Stream the snapshot file `header.index` to `to`, in chunks read with
    /// `Node::snapshot_file`, then report with `Node::report_snapshot`.
    SendSnapshot { to: NodeId, header: SnapshotHeader },
    /// Take a snapshot off the node: take it with `Node::snapshot_to_take`,
    /// run `SnapshotToTake::take` on a worker (the node goes on
    /// meanwhile), then report with `Node::snapshot_taken`.
    TakeSnapshot,
    /// Execute the leader's next batch off the node: take it with
    /// `Node::batch_to_execute`, run `BatchToExecute::execute` on a worker
    /// (it holds the state machine; the node goes on with raft and reads
    /// meanwhile), then report with `Node::batch_executed`.
    ExecuteBatch,
    /// Apply committed entries off the node: take them with
    /// `Node::entries_to_apply`, run `EntriesToApply::apply` on a worker
    /// (it holds the state machine), then report with
    /// `Node::entries_applied`; their clients are answered then.
    ApplyEntries,
    /// Install a received snapshot off the node: take it with
    /// `Node::snapshot_to_install`, run `SnapshotToInstall::install` on a
    /// worker (it holds the state machine; copying gigabytes takes
    /// seconds), then report with `Node::snapshot_installed`.
    InstallSnapshot,
    /// Remove this file (a snapshot the node no longer keeps, already
    /// renamed out of the way) off the node: unlinking gigabytes takes a
    /// while. Nothing depends on when it happens.
    RemoveFile { path: std::path::PathBuf },
    /// A write finished (or failed) for good.
    WriteDone { token: ClientToken, result: Result<WriteOutcome, WriteError> },
    /// The read may run now on a `Reader` (this node has applied enough).
    ReadReady { token: ClientToken },
    /// The read cannot be served.
    ReadFailed { token: ClientToken, error: ReadError },
    /// An admin request finished.
    AdminDone { token: ClientToken, result: Result<(), AdminError> },
    /// The node hit a fatal error (disk, divergence) and stopped. The host
    /// must exit; restarting recovers from disk.
    Stopped { reason: String },
}

/// The result of a committed write.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOutcome {
    /// One per statement, in order.
    pub results: Vec<StatementResult>,
    /// The log index of the entry that carried it.
    pub index: LogIndex,
}

/// Why a write was not applied (or may not have been).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WriteError {
    #[error("not the leader (leader: {})", display_leader(*.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("node {node} is not a member of the cluster (removed, or not yet joined); use another node")]
    NotMember { node: NodeId },
    #[error("{what} is {size}, over the limit of {max}")]
    TooLarge { what: &'static str, size: usize, max: usize },
    #[error("write queue full ({max} requests waiting); retry later")]
    QueueFull { max: usize },
    #[error("{0}")]
    Statement(#[from] RequestError),
    #[error("outcome unknown: leadership changed before the write was known to commit")]
    OutcomeUnknown,
    #[error("bad request: {0}")]
    Invalid(String),
    #[error("node stopped")]
    Stopped,
}

/// Why a read cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadError {
    #[error("no leader known; cannot confirm a linearizable read")]
    NoLeader,
    #[error("not the leader (leader: {}); lease reads run on the leader", display_leader(*.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("node {node} is not a member of the cluster (removed, or not yet joined); use another node")]
    NotMember { node: NodeId },
    #[error("read timed out waiting for the leader to confirm its commit index")]
    Timeout,
    #[error("leader lease not held (no quorum contact recently); use linearizable")]
    LeaseExpired,
    #[error("too stale: {} and no leader heard within the bound of {max_ms} ms", confirmed(*.staleness_ms))]
    TooStale {
        /// Since this node's data was last confirmed current; `u64::MAX`
        /// if it never was in this run.
        staleness_ms: u64,
        max_ms: u64,
    },
    #[error("too many reads waiting ({max}); retry later")]
    QueueFull { max: usize },
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("node stopped")]
    Stopped,
}

/// Why an admin request failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AdminError {
    #[error("not the leader (leader: {})", display_leader(*.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("node {node} is not a member of the cluster (removed, or not yet joined); use another node")]
    NotMember { node: NodeId },
    #[error("a membership change is already in progress; retry when it is applied")]
    ChangeInProgress,
    #[error("too many admin requests in progress ({max})")]
    QueueFull { max: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("outcome unknown: leadership changed before the change was known to commit")]
    OutcomeUnknown,
    #[error("leader transfer to {0} did not complete in time")]
    TransferTimeout(NodeId),
    #[error("node stopped")]
    Stopped,
}

fn confirmed(staleness_ms: u64) -> String {
    match staleness_ms {
        u64::MAX => "data not confirmed current since this node started".to_owned(),
        ms => format!("data last confirmed current {ms} ms ago"),
    }
}

fn display_leader(leader: Option<NodeId>) -> String {
    leader.map_or_else(|| "unknown".to_owned(), |id| id.to_string())
}
