//! The event loop: one task owns the core `Node`, feeds it inputs from a
//! bounded channel and timers, and carries out its outputs.
//!
//! Order per round (the core's contract): feed one input, drain
//! `poll_output` carrying out each output, then sleep until
//! `poll_timeout` or the next input.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deeb_core::disk::Disk;
use deeb_core::node::{
    AppliedEntries, AppliedLog, ExecutedBatch, InstalledSnapshot, LogReadError, ReceivedSnapshot, SnapshotReceiveError,
    SnapshotReceiver, SnapshotTaken,
};
use deeb_core::sql::QueryError;

use crate::backend::{Backend, BackendReader as Reader};
use deeb_core::{
    AdminError, ClientToken, Consistency, MemberChange, Node, NodeId, Output, ReadError, Readers as _, Role, Status,
    WriteError, WriteOutcome,
};
use deeb_proto::{SnapshotHeader, Statement};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::hooks::{Job, NodeClock, WorkTime};
use crate::identity::PeerIdentities;
use crate::metrics::Metrics;
use crate::peer::PeerSenders;
use crate::snapshot;

/// One input to the event loop.
pub enum Input {
    /// Raft messages from a peer.
    Peer { from: NodeId, from_address: String, messages: Vec<Vec<u8>> },
    /// A client write.
    Write { statements: Vec<Statement>, key: Option<String>, reply: oneshot::Sender<Result<WriteOutcome, WriteError>> },
    /// A piece of a whole-database restore (answered like a write).
    Restore { part: deeb_proto::RestorePart, reply: oneshot::Sender<Result<WriteOutcome, WriteError>> },
    /// A client read: answered with a reader once it may run.
    Read { consistency: Consistency, reply: oneshot::Sender<Result<Reader, ReadError>> },
    /// A membership change or leader transfer.
    Admin { request: AdminRequest, reply: oneshot::Sender<Result<(), AdminError>> },
    /// A status report.
    Status { reply: oneshot::Sender<Status> },
    /// The state digest at the applied index (a full scan; for checks).
    Digest { reply: oneshot::Sender<Result<(u64, u64), String>> },
    /// Applied log entries, for the change stream.
    Log { from: u64, max_bytes: u64, reply: oneshot::Sender<Result<AppliedLog, LogReadError>> },
    /// A member's address.
    Address { id: NodeId, reply: oneshot::Sender<Option<String>> },
    /// A peer starts streaming a snapshot to us.
    SnapshotStart { header: SnapshotHeader, reply: oneshot::Sender<Result<SnapshotReceiver, SnapshotReceiveError>> },
    /// A snapshot stream arrived complete and checked.
    SnapshotReceived { received: ReceivedSnapshot },
    /// Our snapshot stream to `to` finished.
    SnapshotSent { to: NodeId, delivered: bool },
    /// The snapshot `Output::TakeSnapshot` asked for was taken (or not).
    SnapshotTaken { taken: SnapshotTaken },
    /// The batch `Output::ExecuteBatch` handed out ran (with the state
    /// machine, which comes back with it).
    BatchExecuted { executed: Box<ExecutedBatch<Backend>> },
    /// The entries `Output::ApplyEntries` handed out were applied (the
    /// state machine comes back with them).
    EntriesApplied { applied: Box<AppliedEntries<Backend>> },
    /// The snapshot `Output::InstallSnapshot` handed out was installed (the
    /// state machine comes back with it).
    SnapshotInstalled { installed: Box<InstalledSnapshot<Backend>> },
    /// A peer could not be reached.
    Unreachable { to: NodeId },
}

impl Input {
    /// The kind of input, for logs.
    fn name(&self) -> &'static str {
        match self {
            Input::Peer { .. } => "Peer",
            Input::Write { .. } => "Write",
            Input::Restore { .. } => "Restore",
            Input::Read { .. } => "Read",
            Input::Admin { .. } => "Admin",
            Input::Status { .. } => "Status",
            Input::Digest { .. } => "Digest",
            Input::Log { .. } => "Log",
            Input::Address { .. } => "Address",
            Input::SnapshotStart { .. } => "SnapshotStart",
            Input::SnapshotReceived { .. } => "SnapshotReceived",
            Input::SnapshotSent { .. } => "SnapshotSent",
            Input::SnapshotTaken { .. } => "SnapshotTaken",
            Input::BatchExecuted { .. } => "BatchExecuted",
            Input::EntriesApplied { .. } => "EntriesApplied",
            Input::SnapshotInstalled { .. } => "SnapshotInstalled",
            Input::Unreachable { .. } => "Unreachable",
        }
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An admin request.
#[derive(Debug)]
pub enum AdminRequest {
    Change(Vec<MemberChange>),
    Transfer(NodeId),
}

/// Why the event loop ended with an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stopped(pub String);

/// A client waiting for the node's answer.
enum Pending {
    Write(oneshot::Sender<Result<WriteOutcome, WriteError>>),
    Read(oneshot::Sender<Result<Reader, ReadError>>),
    Admin(oneshot::Sender<Result<(), AdminError>>),
}

/// The node's time: since the loop started, on the host's clock or the
/// simulator's.
pub(crate) struct LoopClock {
    start: Instant,
    node_clock: Option<Arc<dyn NodeClock>>,
}

impl LoopClock {
    pub(crate) fn new(start: Instant, node_clock: Option<Arc<dyn NodeClock>>) -> Self {
        Self { start, node_clock }
    }

    pub(crate) fn now(&self) -> Duration {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        self.node_clock.as_ref().map_or(elapsed, |clock| clock.read(elapsed))
    }

    /// When to wake for the node's next timeout (`poll_timeout`). On a
    /// drifting clock this is approximate; the loop wakes and asks again.
    fn wake_at(&self, node_deadline: Duration) -> Instant {
        match self.node_clock {
            None => self.start + node_deadline,
            Some(_) => Instant::now() + node_deadline.saturating_sub(self.now()).max(DRIFTING_WAKE_MIN),
        }
    }
}

/// An event-loop round (one input and its outputs) longer than this is
/// logged: raft's heartbeats and votes waited for it.
const SLOW_ROUND: Duration = Duration::from_millis(100);

/// A drifting clock's wake-ups are approximate: never spin below this.
const DRIFTING_WAKE_MIN: Duration = Duration::from_micros(100);

/// The loop's state. Owned by one task.
pub(crate) struct EventLoop<D: Disk> {
    node: Node<D, Backend>,
    clock: LoopClock,
    inputs: mpsc::Receiver<Input>,
    loopback: mpsc::Sender<Input>,
    pending: BTreeMap<ClientToken, Pending>,
    next_token: u64,
    peers: PeerSenders,
    learned_addresses: BTreeMap<NodeId, String>,
    snapshot_chunk_bytes_max: usize,
    /// The simulator's model of slow worker jobs (none for real).
    work_time: Option<Arc<dyn WorkTime>>,
    shutting_down: bool,
    metrics: Metrics,
    /// The peers' recorded identities, forgotten as their removals apply.
    removals: Option<Removals>,
}

/// What [`EventLoop::forget_removed_peers`] compares against.
struct Removals {
    identities: PeerIdentities,
    /// The members the last time it looked.
    members: BTreeSet<NodeId>,
}

impl<D: Disk> EventLoop<D> {
    /// A loop over an opened node, on the clock its `now` was read from.
    pub(crate) fn new(
        node: Node<D, Backend>,
        clock: LoopClock,
        inputs: mpsc::Receiver<Input>,
        loopback: mpsc::Sender<Input>,
        peers: PeerSenders,
        snapshot_chunk_bytes_max: usize,
        (work_time, metrics): (Option<Arc<dyn WorkTime>>, Metrics),
    ) -> Self {
        Self {
            node,
            clock,
            inputs,
            loopback,
            pending: BTreeMap::new(),
            next_token: 0,
            peers,
            learned_addresses: BTreeMap::new(),
            snapshot_chunk_bytes_max,
            work_time,
            shutting_down: false,
            metrics,
            removals: None,
        }
    }

    /// Forgets a peer's data-directory identity once its removal applies
    /// here (see [`PeerIdentities::forget`]); on start, those of peers
    /// outside the applied configuration, if this node has one.
    pub(crate) fn forgetting_removed_peers(mut self, identities: PeerIdentities) -> Self {
        let members: BTreeSet<NodeId> = self.node.member_ids().collect();
        if !members.is_empty() {
            identities.set_members(members.iter().map(|id| id.0));
            for peer in identities.known().into_iter().filter(|peer| !members.contains(&NodeId(*peer))) {
                if let Err(error) = identities.forget(peer) {
                    tracing::warn!(peer, %error, "could not forget a removed peer's identity");
                }
            }
        }
        self.removals = Some(Removals { identities, members });
        self
    }

    fn forget_removed_peers(&mut self) {
        let Some(removals) = self.removals.as_mut() else { return };
        if self.node.member_ids().eq(removals.members.iter().copied()) {
            return;
        }
        let members: BTreeSet<NodeId> = self.node.member_ids().collect();
        if !members.is_empty() {
            removals.identities.set_members(members.iter().map(|id| id.0));
        }
        for removed in removals.members.difference(&members) {
            if let Err(error) = removals.identities.forget(removed.0) {
                tracing::warn!(peer = removed.0, %error, "could not forget a removed peer's identity");
            }
        }
        removals.members = members;
    }

    /// Runs until `shutdown` resolves (then hands leadership away, bounded
    /// by `transfer_timeout`) or the node stops on a fatal error.
    ///
    /// # Errors
    /// The node stopped (disk failure, divergence); the process must exit.
    pub(crate) async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        transfer_timeout: Duration,
    ) -> Result<(), Stopped> {
        tokio::pin!(shutdown);
        self.drain_outputs()?;
        loop {
            let deadline = self.clock.wake_at(self.node.poll_timeout());
            let input = tokio::select! {
                biased;
                () = &mut shutdown => break,
                input = self.inputs.recv() => match input {
                    Some(input) => Some(input),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => None,
            };
            let started = Instant::now();
            let what = match input {
                Some(input) => {
                    let name = input.name();
                    self.handle(input);
                    name
                }
                None => {
                    self.node.handle_timeout(self.now());
                    "Tick"
                }
            };
            self.drain_outputs()?;
            self.metrics.observe_leader(self.node.leader().map(|id| id.0));
            // Heartbeats wait while a round runs: say when one was long.
            let took = started.elapsed();
            if took > SLOW_ROUND {
                tracing::warn!(
                    node = self.node.id().0,
                    input = what,
                    ms = took.as_millis() as u64,
                    "slow event loop round"
                );
            }
        }
        self.leave(transfer_timeout).await
    }

    fn now(&self) -> Duration {
        self.clock.now()
    }

    fn token(&mut self, pending: Pending) -> ClientToken {
        self.next_token += 1;
        let token = ClientToken(self.next_token);
        self.pending.insert(token, pending);
        token
    }

    /// Feeds one input to the node.
    fn handle(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Peer { from, from_address, messages } => self.step_peer(now, from, from_address, &messages),
            Input::Write { reply, .. } | Input::Restore { reply, .. } if self.shutting_down => {
                drop(reply.send(Err(WriteError::Stopped)))
            }
            Input::Read { reply, .. } if self.shutting_down => drop(reply.send(Err(ReadError::Stopped))),
            Input::Admin { reply, .. } if self.shutting_down => drop(reply.send(Err(AdminError::Stopped))),
            Input::Write { statements, key, reply } => {
                let token = self.token(Pending::Write(reply));
                if let Err(error) = self.node.submit_keyed_write(now, token, statements, key) {
                    self.answer_write(token, Err(error));
                }
            }
            Input::Restore { part, reply } => {
                let token = self.token(Pending::Write(reply));
                if let Err(error) = self.node.submit_restore_part(now, token, part) {
                    self.answer_write(token, Err(error));
                }
            }
            Input::Read { consistency, reply } => {
                let token = self.token(Pending::Read(reply));
                if let Err(error) = self.node.submit_read(now, token, consistency) {
                    self.answer_read(token, Err(error));
                }
            }
            Input::Admin { request, reply } => self.admin(now, request, reply),
            Input::Status { reply } => drop(reply.send(self.node.status())),
            Input::Log { from, max_bytes, reply } => {
                let _ = reply.send(self.node.applied_entries(from, max_bytes));
            }
            Input::Digest { reply } => {
                // A full scan: on a worker, from one read transaction.
                let readers = self.node.readers();
                self.off_loop(Job::Digest, move || {
                    let digest = readers.digest().map(|(applied, digest)| (applied.index, digest));
                    let _ = reply.send(digest.map_err(|error| error.to_string()));
                    None
                });
            }
            Input::Address { id, reply } => drop(reply.send(self.address(id))),
            Input::SnapshotStart { header, reply } => drop(reply.send(self.node.snapshot_receiver(header))),
            Input::SnapshotReceived { received } => self.node.install_received(now, received),
            Input::SnapshotSent { to, delivered } => self.node.report_snapshot(to, delivered),
            Input::SnapshotTaken { taken } => self.node.snapshot_taken(now, taken),
            Input::BatchExecuted { executed } => self.node.batch_executed(now, *executed),
            Input::EntriesApplied { applied } => self.node.entries_applied(now, *applied),
            Input::SnapshotInstalled { installed } => self.node.snapshot_installed(now, *installed),
            Input::Unreachable { to } => self.node.report_unreachable(to),
        }
    }

    fn step_peer(&mut self, now: Duration, from: NodeId, from_address: String, messages: &[Vec<u8>]) {
        if !from_address.is_empty() && from.0 != 0 {
            self.learned_addresses.insert(from, from_address);
        }
        if let Err(error) = self.node.step(now, messages) {
            tracing::warn!(node = self.node.id().0, from = from.0, %error, "refused peer messages");
        }
    }

    fn admin(&mut self, now: Duration, request: AdminRequest, reply: oneshot::Sender<Result<(), AdminError>>) {
        let token = self.token(Pending::Admin(reply));
        let result = match request {
            AdminRequest::Change(changes) => self.node.change_membership(now, token, changes),
            AdminRequest::Transfer(target) => self.node.transfer_leader(now, token, target),
        };
        if let Err(error) = result {
            self.answer_admin(token, Err(error));
        }
    }

    /// A peer's address: the replicated member list first, then what peers
    /// told us about themselves.
    fn address(&self, id: NodeId) -> Option<String> {
        let known = self.node.address(id).filter(|address| !address.is_empty()).map(str::to_owned);
        known.or_else(|| self.learned_addresses.get(&id).cloned())
    }

    fn drain_outputs(&mut self) -> Result<(), Stopped> {
        while let Some(output) = self.node.poll_output() {
            self.carry_out(output)?;
        }
        self.forget_removed_peers();
        Ok(())
    }

    fn carry_out(&mut self, output: Output) -> Result<(), Stopped> {
        match output {
            Output::Send { to, messages } => {
                let address = self.address(to);
                self.peers.send(to, address, messages);
            }
            Output::SendSnapshot { to, header } => self.send_snapshot(to, header),
            Output::TakeSnapshot => self.take_snapshot(),
            Output::RemoveFile { path } => self.off_loop(Job::RemoveFile, move || {
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "could not remove a snapshot file");
                }
                None
            }),
            Output::ExecuteBatch => self.execute_batch(),
            Output::ApplyEntries => self.apply_entries(),
            Output::InstallSnapshot => self.install_snapshot(),
            Output::WriteDone { token, result } => self.answer_write(token, result),
            Output::ReadReady { token } => {
                let reader = self.node.reader().map_err(|error| ReadError::Query(QueryError::Sql(error.to_string())));
                self.answer_read(token, reader);
            }
            Output::ReadFailed { token, error } => self.answer_read(token, Err(error)),
            Output::AdminDone { token, result } => self.answer_admin(token, result),
            Output::Stopped { reason } => return Err(Stopped(reason)),
        }
        Ok(())
    }

    /// Takes a snapshot on a worker: the loop goes on with raft meanwhile,
    /// and learns the result as an input.
    fn take_snapshot(&mut self) {
        let Some(snapshot) = self.node.snapshot_to_take() else { return };
        self.off_loop(Job::Snapshot, move || Some(Input::SnapshotTaken { taken: snapshot.take() }));
    }

    /// Runs the leader's batch (every request's SQL) on a worker, which
    /// holds the writer connection meanwhile: a statement that runs for
    /// seconds leaves heartbeats, votes and reads flowing.
    fn execute_batch(&mut self) {
        let Some(batch) = self.node.batch_to_execute() else { return };
        self.metrics.batch(batch.requests(), batch.on_top());
        self.off_loop(Job::Batch, move || Some(Input::BatchExecuted { executed: Box::new(batch.execute()) }));
    }

    /// Applies committed entries (a follower's row changes, the leader's
    /// COMMIT with its fsync) on a worker, which holds the writer meanwhile.
    fn apply_entries(&mut self) {
        let Some(entries) = self.node.entries_to_apply() else { return };
        self.off_loop(Job::Apply, move || Some(Input::EntriesApplied { applied: Box::new(entries.apply()) }));
    }

    /// Installs a received snapshot (a copy of the whole file into the
    /// database) on a worker, which holds the writer meanwhile.
    fn install_snapshot(&mut self) {
        let Some(snapshot) = self.node.snapshot_to_install() else { return };
        self.off_loop(Job::Install, move || Some(Input::SnapshotInstalled { installed: Box::new(snapshot.install()) }));
    }

    /// Runs blocking work (SQL, file copies) off the event loop and hands
    /// its result, if any, back to the loop as an input: on a blocking
    /// thread for real; under the simulator, which has no threads, as a
    /// task of its own (the loop's other inputs run meanwhile, for as long
    /// as the simulator's `work_time` says). The one place the two differ.
    fn off_loop(&self, job: Job, work: impl FnOnce() -> Option<Input> + Send + 'static) {
        let loopback = self.loopback.clone();
        let delay = self.work_time.as_ref().map_or(Duration::ZERO, |work_time| work_time.draw(job));
        let metrics = self.metrics.clone();
        let work = move || {
            let started = std::time::Instant::now();
            let input = work();
            metrics.job(job, started.elapsed());
            input
        };
        #[cfg(not(madsim))]
        tokio::task::spawn_blocking(move || {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            if let Some(input) = work() {
                let _ = loopback.blocking_send(input);
            }
        });
        #[cfg(madsim)]
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(input) = work() {
                let _ = loopback.send(input).await;
            }
        });
    }

    fn send_snapshot(&mut self, to: NodeId, mut header: SnapshotHeader) {
        (header.from_identity, header.cluster_id) = self.peers.credentials();
        let file = self.node.snapshot_file(header.index);
        let (Some(file), Some(address)) = (file, self.address(to)) else {
            tracing::warn!(node = self.node.id().0, to = to.0, index = header.index, "cannot send snapshot");
            self.node.report_snapshot(to, false);
            return;
        };
        let loopback = self.loopback.clone();
        let chunk_bytes_max = self.snapshot_chunk_bytes_max;
        let security = self.peers.security();
        tokio::spawn(async move {
            let delivered = match snapshot::send(&security, file, header, &address, chunk_bytes_max).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(to = to.0, %address, %error, "snapshot transfer failed");
                    false
                }
            };
            let _ = loopback.send(Input::SnapshotSent { to, delivered }).await;
        });
    }

    fn answer_write(&mut self, token: ClientToken, result: Result<WriteOutcome, WriteError>) {
        if let Some(Pending::Write(reply)) = self.pending.remove(&token) {
            let _ = reply.send(result);
        }
    }

    fn answer_read(&mut self, token: ClientToken, result: Result<Reader, ReadError>) {
        if let Some(Pending::Read(reply)) = self.pending.remove(&token) {
            let _ = reply.send(result);
        }
    }

    fn answer_admin(&mut self, token: ClientToken, result: Result<(), AdminError>) {
        if let Some(Pending::Admin(reply)) = self.pending.remove(&token) {
            let _ = reply.send(result);
        }
    }

    /// Graceful exit: refuse new requests and, if leading, hand leadership to
    /// the most caught-up other voter, waiting at most `timeout`.
    async fn leave(mut self, timeout: Duration) -> Result<(), Stopped> {
        self.shutting_down = true;
        let Some(target) = self.transfer_target() else { return Ok(()) };
        tracing::info!(node = self.node.id().0, target = target.0, "shutting down: transferring leadership");
        let (reply, mut done) = oneshot::channel();
        self.admin(self.now(), AdminRequest::Transfer(target), reply);
        let deadline = Instant::now() + timeout;
        loop {
            self.drain_outputs()?;
            if self.node.status().role != Role::Leader {
                return Ok(());
            }
            let wake = deadline.min(self.clock.wake_at(self.node.poll_timeout()));
            tokio::select! {
                biased;
                _ = &mut done => return Ok(()),
                input = self.inputs.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(wake) => self.node.handle_timeout(self.now()),
            }
            if Instant::now() >= deadline {
                tracing::warn!(node = self.node.id().0, "leadership transfer did not finish in time");
                return Ok(());
            }
        }
    }

    fn transfer_target(&self) -> Option<NodeId> {
        let status = self.node.status();
        if status.role != Role::Leader {
            return None;
        }
        let others = status.members.iter().filter(|member| !member.learner && member.id != status.id);
        others.max_by_key(|member| member.matched).map(|member| member.id)
    }
}
