//! `NodeHandle`: how request handlers talk to the event loop.

use std::time::Duration;

use crate::backend::BackendReader as Reader;
use deeb_core::node::{AppliedLog, LogReadError};
use deeb_core::{Consistency, MemberChange, NodeId, Status, WriteOutcome};
use deeb_proto::Statement;
use tokio::sync::{mpsc, oneshot};

use crate::errors::ServerError;
use crate::event_loop::{AdminRequest, Input};

/// A cloneable way to submit requests to the node's event loop. Every call
/// is bounded by the request timeout.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    inputs: mpsc::Sender<Input>,
    request_timeout: Duration,
    id: NodeId,
}

impl NodeHandle {
    pub(crate) fn new(inputs: mpsc::Sender<Input>, request_timeout: Duration, id: NodeId) -> Self {
        Self { inputs, request_timeout, id }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The request timeout requests through this handle are bounded by.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Submits a write (with the client's idempotency key, if any) and waits
    /// for it to commit.
    ///
    /// # Errors
    /// The node's `WriteError`, a full queue, a timeout, or shutdown.
    pub async fn write(&self, statements: Vec<Statement>, key: Option<String>) -> Result<WriteOutcome, ServerError> {
        Ok(self.call(|reply| Input::Write { statements, key, reply }).await??)
    }

    /// Proposes a piece of a whole-database restore (applied when this
    /// returns `Ok`).
    ///
    /// # Errors
    /// As [`Self::write`].
    pub async fn restore_part(&self, part: deeb_proto::RestorePart) -> Result<WriteOutcome, ServerError> {
        Ok(self.call(|reply| Input::Restore { part, reply }).await??)
    }

    /// Waits until a read at `consistency` may run, and returns the
    /// connection to run it on.
    ///
    /// # Errors
    /// The node's `ReadError`, a full queue, a timeout, or shutdown.
    pub async fn read(&self, consistency: Consistency) -> Result<Reader, ServerError> {
        Ok(self.call(|reply| Input::Read { consistency, reply }).await??)
    }

    /// Changes the membership (applied when this returns `Ok`).
    ///
    /// # Errors
    /// The node's `AdminError`, a full queue, a timeout, or shutdown.
    pub async fn change_membership(&self, changes: Vec<MemberChange>) -> Result<(), ServerError> {
        Ok(self.call(|reply| Input::Admin { request: AdminRequest::Change(changes), reply }).await??)
    }

    /// Transfers leadership to `target` (done when this returns `Ok`).
    ///
    /// # Errors
    /// The node's `AdminError`, a full queue, a timeout, or shutdown.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), ServerError> {
        Ok(self.call(|reply| Input::Admin { request: AdminRequest::Transfer(target), reply }).await??)
    }

    /// The node's status.
    ///
    /// # Errors
    /// A full queue, a timeout, or shutdown.
    pub async fn status(&self) -> Result<Status, ServerError> {
        self.call(|reply| Input::Status { reply }).await
    }

    /// The state digest and the applied index it was computed at.
    ///
    /// # Errors
    /// The database could not be read, a full queue, a timeout, or shutdown.
    pub async fn digest(&self) -> Result<(u64, u64), ServerError> {
        self.call(|reply| Input::Digest { reply }).await?.map_err(ServerError::Internal)
    }

    /// The applied log entries from `from` on (about `max_bytes` of them,
    /// at least one if there is one), and the applied index.
    ///
    /// # Errors
    /// `from` is below the log's first index, the log cannot be read, a
    /// full queue, a timeout, or shutdown.
    pub async fn applied_entries(&self, from: u64, max_bytes: u64) -> Result<AppliedLog, ServerError> {
        match self.call(|reply| Input::Log { from, max_bytes, reply }).await? {
            Ok(log) => Ok(log),
            Err(LogReadError::Compacted { first_index }) => Err(ServerError::Compacted { first_index }),
            Err(error @ LogReadError::Log(_)) => Err(ServerError::Internal(error.to_string())),
        }
    }

    /// The address of `id`, from the replicated member list or from peers'
    /// messages.
    ///
    /// # Errors
    /// A full queue, a timeout, or shutdown.
    pub async fn address(&self, id: NodeId) -> Result<Option<String>, ServerError> {
        self.call(|reply| Input::Address { id, reply }).await
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> Result<T, ServerError> {
        let (reply, answer) = oneshot::channel();
        self.inputs.try_send(make(reply)).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ServerError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => ServerError::ShuttingDown,
        })?;
        let timeout_ms = u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX);
        match tokio::time::timeout(self.request_timeout, answer).await {
            Err(_) => Err(ServerError::Timeout(timeout_ms)),
            Ok(Err(_)) => Err(ServerError::ShuttingDown),
            Ok(Ok(value)) => Ok(value),
        }
    }
}
