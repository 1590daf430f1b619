//! Node-to-node transport: one sender task per peer with a bounded queue
//! that batches raft messages into `RaftBatch` calls, and the `Peer` gRPC
//! service that feeds incoming batches and snapshot streams to the loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deeb_core::NodeId;
use deeb_proto::peer_client::PeerClient;
use deeb_proto::peer_server::Peer;
use deeb_proto::{RaftAck, RaftBatch, RelayedAddresses, SnapshotAck, SnapshotChunk};
use std::collections::VecDeque;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::client::channel;
use crate::errors::{to_status, ServerError};
use crate::event_loop::Input;
use crate::hooks::TransportFaults;
use crate::identity::{ClusterId, PeerIdentities};
use crate::metrics::Metrics;
use crate::security::{ConnInfo, Security};
use crate::snapshot;

/// The loop's outbound side: a queue per peer.
pub(crate) struct PeerSenders {
    me: NodeId,
    my_address: String,
    addresses: ClientAddresses,
    my_identity: u64,
    cluster: ClusterId,
    loopback: mpsc::Sender<Input>,
    senders: BTreeMap<NodeId, PeerSender>,
    queue_max: usize,
    faults: Option<Arc<dyn TransportFaults>>,
    security: Arc<Security>,
    metrics: Metrics,
    dead_after: Duration,
}

struct PeerSender {
    address: String,
    queue: mpsc::Sender<Vec<u8>>,
}

impl PeerSenders {
    /// Senders for node `me`, whose peer listener other nodes reach at
    /// `my_address`, relaying the client `addresses` it knows (its own
    /// included), and whose
    /// data directory is `my_identity`, in `cluster` (see `crate::identity`).
    pub(crate) fn new(
        me: NodeId,
        (my_address, addresses): (String, ClientAddresses),
        (my_identity, cluster): (u64, ClusterId),
        loopback: mpsc::Sender<Input>,
        queue_max: usize,
        (security, metrics): (Arc<Security>, Metrics),
    ) -> Self {
        let senders = BTreeMap::new();
        let faults = None;
        let dead_after = PEER_CALL_TIMEOUT;
        Self {
            me,
            my_address,
            addresses,
            my_identity,
            cluster,
            loopback,
            senders,
            queue_max,
            faults,
            security,
            metrics,
            dead_after,
        }
    }

    /// A connection that leaves a batch unanswered this long is given up
    /// (see [`Link`]); an election timeout.
    pub(crate) fn dead_after(&mut self, dead_after: Duration) {
        self.dead_after = dead_after;
    }

    /// TLS for calls to other nodes.
    pub(crate) fn security(&self) -> Arc<Security> {
        self.security.clone()
    }

    /// This node's data-directory identity and cluster id, for the
    /// snapshots it sends.
    pub(crate) fn credentials(&self) -> (u64, u64) {
        (self.my_identity, self.cluster.get())
    }

    /// The simulator's duplication and reordering of outgoing batches.
    pub(crate) fn inject_faults(&mut self, faults: Option<Arc<dyn TransportFaults>>) {
        self.faults = faults;
    }

    /// Queues messages for `to`. A full queue drops them (raft retransmits);
    /// an unknown address reports the peer unreachable.
    pub(crate) fn send(&mut self, to: NodeId, address: Option<String>, messages: Vec<Vec<u8>>) {
        let Some(address) = address else {
            tracing::debug!(to = to.0, "no address for peer; dropping messages");
            let _ = self.loopback.try_send(Input::Unreachable { to });
            return;
        };
        let stale = self.senders.get(&to).is_none_or(|s| s.address != address || s.queue.is_closed());
        if stale {
            let sender = self.spawn_sender(to, address);
            self.senders.insert(to, sender);
        }
        let queue = &self.senders[&to].queue;
        let dropped = messages.into_iter().map(|message| queue.try_send(message)).filter(Result::is_err).count();
        if dropped > 0 {
            tracing::debug!(to = to.0, dropped, "peer queue full; dropped raft messages");
        }
    }

    fn spawn_sender(&self, to: NodeId, address: String) -> PeerSender {
        let (queue, receiver) = mpsc::channel(self.queue_max);
        let task = SenderTask {
            me: self.me,
            my_address: self.my_address.clone(),
            addresses: self.addresses.clone(),
            my_identity: self.my_identity,
            cluster: self.cluster.clone(),
            to,
            address: address.clone(),
            loopback: self.loopback.clone(),
            faults: self.faults.clone(),
            security: self.security.clone(),
            metrics: self.metrics.clone(),
            dead_after: self.dead_after,
            requeue: queue.downgrade(),
        };
        tokio::spawn(task.run(receiver));
        PeerSender { address, queue }
    }
}

/// Delivers one peer's queue, reconnecting with backoff.
struct SenderTask {
    me: NodeId,
    my_address: String,
    addresses: ClientAddresses,
    my_identity: u64,
    cluster: ClusterId,
    to: NodeId,
    address: String,
    loopback: mpsc::Sender<Input>,
    faults: Option<Arc<dyn TransportFaults>>,
    security: Arc<Security>,
    metrics: Metrics,
    dead_after: Duration,
    /// This peer's queue, for injected faults' late copies (weak: the task
    /// ends when the queue's owner drops it).
    requeue: mpsc::WeakSender<Vec<u8>>,
}

impl SenderTask {
    async fn run(self, mut queue: mpsc::Receiver<Vec<u8>>) {
        let mut link: Option<Link> = None;
        // Certificates read again (SIGHUP): connect afresh with them.
        let mut generation = self.security.generation();
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut messages = Vec::new();
            let waited = tokio::select! {
                biased;
                message = queue.recv() => match message {
                    Some(message) => {
                        messages.push(message);
                        Ok(())
                    }
                    None => return,
                },
                waited = Link::wait(link.as_mut()) => waited,
            };
            let mut bytes = messages.first().map_or(0, Vec::len);
            while !messages.is_empty() && messages.len() < BATCH_MESSAGES_MAX && bytes < PEER_BATCH_BYTES_MAX {
                let Ok(message) = queue.try_recv() else { break };
                bytes += message.len();
                messages.push(message);
            }
            // No messages: the link is due a probe (or failed).
            let batch = self.batch(messages);
            if !batch.messages.is_empty() && self.detach_faulty(&batch) {
                continue;
            }
            if generation != self.security.generation() {
                generation = self.security.generation();
                link = None;
            }
            let sent = match waited {
                Ok(()) => self.deliver(&mut link, batch, bytes).await,
                Err(error) => Err(error),
            };
            match sent {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    self.metrics.peer_sent(self.to.0, bytes);
                }
                Err(error) => {
                    tracing::debug!(to = self.to.0, address = %self.address, %error, "peer unreachable");
                    link = None;
                    let _ = self.loopback.try_send(Input::Unreachable { to: self.to });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    // What queued meanwhile is stale; raft resends what matters.
                    while queue.try_recv().is_ok() {}
                }
            }
        }
    }

    /// A batch of `messages` from this node, with its credentials and the
    /// addresses it relays.
    fn batch(&self, messages: Vec<Vec<u8>>) -> RaftBatch {
        let mine = self.addresses.get(self.me.0).unwrap_or_default();
        RaftBatch {
            from: self.me.0,
            messages,
            from_address: self.my_address.clone(),
            from_client_address: mine.client,
            from_http_address: mine.http,
            from_identity: self.my_identity,
            cluster_id: self.cluster.get(),
            relayed: self.addresses.relayable(self.me.0, self.to.0),
        }
    }

    /// Sends `batch` (`bytes` of messages) on the open link, opening one
    /// first if there is none.
    async fn deliver(&self, link: &mut Option<Link>, batch: RaftBatch, bytes: usize) -> Result<(), String> {
        let open = match link {
            Some(open) => open,
            None => link.insert(Link::open(&self.security, &self.address, self.dead_after).await?),
        };
        open.send(batch, bytes).await
    }

    /// Injected faults only: puts copies of `batch`'s messages back in this
    /// peer's queue later, to go in a later batch on the same link
    /// (duplicated, and reordered behind what was sent meanwhile). True if
    /// the batch itself is held back (then it is one of those copies). Not
    /// a connection per copy: the simulator's servers take new connections
    /// one at a time, and a copy per batch flooded them.
    fn detach_faulty(&self, batch: &RaftBatch) -> bool {
        let Some(faults) = &self.faults else { return false };
        let plan = faults.plan(self.me, self.to);
        let held_back = (!plan.delay.is_zero()).then_some(plan.delay);
        for delay in plan.copies.into_iter().chain(held_back) {
            let (requeue, messages) = (self.requeue.clone(), batch.messages.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Some(queue) = requeue.upgrade() else { return };
                for message in messages {
                    if queue.try_send(message).is_err() {
                        return;
                    }
                }
            });
        }
        held_back.is_some()
    }
}

/// One peer's connection and the long-lived `RaftStream` call on it:
/// batches stream through, many in flight, instead of one round trip each
/// (under packet loss TCP then recovers a lost segment from the ones after
/// it rather than waiting out a retransmission timeout per batch). The peer
/// answers every batch in order; a batch left unanswered for `dead_after`
/// (an election timeout), or a call that ended, fails the link, and the
/// sender connects afresh: a connection that looks open but carries
/// nothing (a partition that healed while TCP backs off) is noticed within
/// that time. At most `LINK_WINDOW_BATCHES` batches and
/// `LINK_WINDOW_BYTES` bytes are unanswered at once.
///
/// While a batch is unanswered for longer than a few answer times, the
/// sender sends an empty batch (a probe) now and then: a lost segment with
/// nothing after it waits out the kernel's loss probe or retransmission
/// timer (200 ms and more), whereas segments after it make the receiver
/// acknowledge selectively and the sender retransmit at once. Without
/// probes, 30% packet loss between nodes cut writes to about a tenth of what
/// they are with them.
struct Link {
    batches: mpsc::Sender<RaftBatch>,
    /// How many batches the peer has answered, from `answers`.
    answered: watch::Receiver<u64>,
    /// Reads the call's answers.
    answers: JoinHandle<()>,
    /// When each unanswered batch was sent, and its bytes, oldest first.
    unanswered: VecDeque<(Instant, usize)>,
    unanswered_bytes: usize,
    /// Batches sent on this link.
    sent: u64,
    /// When the last batch (or probe) was sent.
    last_sent: Instant,
    /// The shortest time from sending a batch to its answer seen on this
    /// link: the path's round trip without losses (a smoothed time would
    /// grow with the losses the probes are for, and probe ever later).
    answer_time: Duration,
    dead_after: Duration,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.answers.abort();
    }
}

impl Link {
    async fn open(security: &Security, address: &str, dead_after: Duration) -> Result<Link, String> {
        let channel = channel(security, address, PEER_CALL_TIMEOUT).await.map_err(|error| error.to_string())?;
        let mut client = PeerClient::new(channel);
        let (batches, stream) = mpsc::channel(LINK_WINDOW_BATCHES);
        let (count, answered) = watch::channel(0);
        // The call is made here, not awaited by the sender: batches flow
        // before the peer's response headers arrive.
        let answers = tokio::spawn(async move {
            let Ok(response) = client.raft_stream(ReceiverStream::new(stream)).await else { return };
            let mut answers = response.into_inner();
            while let Ok(Some(_)) = answers.message().await {
                count.send_modify(|count| *count += 1);
            }
            // Dropping `count` tells the sender the call ended.
        });
        let (unanswered, last_sent, answer_time) = (VecDeque::new(), Instant::now(), PROBE_AFTER_MAX);
        Ok(Link {
            batches,
            answered,
            answers,
            unanswered,
            unanswered_bytes: 0,
            sent: 0,
            last_sent,
            answer_time,
            dead_after,
        })
    }

    /// Waits while `link` has batches unanswered, taking the answers as they
    /// come: returns when a probe is due, or an error when the link failed.
    /// Never returns without an open link or with every batch answered.
    async fn wait(link: Option<&mut Link>) -> Result<(), String> {
        let Some(link) = link else { return std::future::pending().await };
        loop {
            let Some(&(oldest, _)) = link.unanswered.front() else { return std::future::pending().await };
            let probe_after = (link.answer_time * 3).clamp(PROBE_AFTER_MIN, PROBE_AFTER_MAX);
            let due = (link.last_sent + probe_after).min(oldest + link.dead_after);
            tokio::select! {
                biased; // the simulator's runs must repeat
                changed = link.answered.changed() => {
                    changed.map_err(|_| "the raft stream ended".to_owned())?;
                    link.settle()?;
                }
                () = tokio::time::sleep_until(due) => {
                    link.settle()?;
                    if link.unanswered.is_empty() {
                        continue;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Queues `batch` (`bytes` of messages) on the call once the window has
    /// room.
    async fn send(&mut self, batch: RaftBatch, bytes: usize) -> Result<(), String> {
        self.settle()?;
        while self.unanswered.len() >= LINK_WINDOW_BATCHES || self.unanswered_bytes >= LINK_WINDOW_BYTES {
            let Some(&(oldest, _)) = self.unanswered.front() else { break };
            match tokio::time::timeout(self.dead_after.saturating_sub(oldest.elapsed()), self.answered.changed()).await
            {
                Ok(Ok(())) => self.settle()?,
                Ok(Err(_)) => return Err("the raft stream ended".into()),
                Err(_) => return Err(self.overdue()),
            }
        }
        self.batches.try_send(batch).map_err(|_| "the raft stream closed".to_owned())?;
        self.sent += 1;
        self.last_sent = Instant::now();
        self.unanswered.push_back((self.last_sent, bytes));
        self.unanswered_bytes += bytes;
        Ok(())
    }

    /// Forgets the batches answered; fails if the call ended or the oldest
    /// unanswered batch is overdue.
    fn settle(&mut self) -> Result<(), String> {
        let ended = self.answered.has_changed().is_err();
        let answered = *self.answered.borrow_and_update();
        let pending = self.sent.saturating_sub(answered) as usize;
        while self.unanswered.len() > pending {
            let (sent_at, bytes) = self.unanswered.pop_front().expect("longer than pending");
            self.unanswered_bytes -= bytes;
            self.answer_time = self.answer_time.min(sent_at.elapsed());
        }
        if ended {
            return Err("the raft stream ended".into());
        }
        match self.unanswered.front() {
            Some(&(oldest, _)) if oldest.elapsed() >= self.dead_after => Err(self.overdue()),
            _ => Ok(()),
        }
    }

    fn overdue(&self) -> String {
        format!("the peer answered no batch for {:?}", self.dead_after)
    }
}

/// Where clients reach a node: its gRPC client listener and its HTTP API
/// (empty if it has none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advertised {
    pub client: String,
    pub http: String,
}

/// Where clients reach each node, as heard over the peer link: every batch
/// carries its sender's addresses, and those of the nodes the sender heard
/// from lately (relayed: a leader hears every member, so every node learns
/// every member's). Soft state, so it takes no replicated record; a node
/// knows its own from the start, the leader's from its first heartbeat.
#[derive(Clone, Debug, Default)]
pub struct ClientAddresses(Arc<Mutex<BTreeMap<u64, Heard>>>);

#[derive(Clone, Debug)]
struct Heard {
    advertised: Advertised,
    at: std::time::Instant,
    /// From the node itself (not relayed).
    first_hand: bool,
}

impl ClientAddresses {
    /// Node `id` says it is reached at `advertised` (an empty client
    /// address says nothing).
    pub fn note(&self, id: u64, advertised: Advertised) {
        self.insert(id, advertised, true);
    }

    /// Another node says `id` is reached at `advertised`: believed unless
    /// `id` itself said otherwise lately.
    fn note_relayed(&self, id: u64, advertised: Advertised) {
        self.insert(id, advertised, false);
    }

    fn insert(&self, id: u64, advertised: Advertised, first_hand: bool) {
        if advertised.client.is_empty() {
            return;
        }
        let mut known = self.0.lock().expect("client addresses lock");
        let fresh_first_hand = |heard: &Heard| heard.first_hand && heard.at.elapsed() < RELAYED_TRUSTED_AFTER;
        if !first_hand && known.get(&id).is_some_and(fresh_first_hand) {
            return;
        }
        if known.len() < CLIENT_ADDRESSES_MAX || known.contains_key(&id) {
            known.insert(id, Heard { advertised, at: std::time::Instant::now(), first_hand });
        }
    }

    /// Node `id`'s addresses, if heard.
    pub fn get(&self, id: u64) -> Option<Advertised> {
        self.0.lock().expect("client addresses lock").get(&id).map(|heard| heard.advertised.clone())
    }

    /// Whether node `id` itself was heard within `within`.
    pub fn heard_within(&self, id: u64, within: std::time::Duration) -> bool {
        let known = self.0.lock().expect("client addresses lock");
        known.get(&id).is_some_and(|heard| heard.first_hand && heard.at.elapsed() < within)
    }

    /// What `me` relays to `to`: the other nodes it heard from themselves
    /// lately (its own go in the batch's `from_*` fields).
    fn relayable(&self, me: u64, to: u64) -> Vec<RelayedAddresses> {
        let known = self.0.lock().expect("client addresses lock");
        let recent = |(id, heard): &(&u64, &Heard)| {
            ![me, to].contains(*id) && heard.first_hand && heard.at.elapsed() < RELAYED_TRUSTED_AFTER
        };
        known
            .iter()
            .filter(recent)
            .take(RELAYED_MAX)
            .map(|(id, heard)| RelayedAddresses {
                node_id: *id,
                client_address: heard.advertised.client.clone(),
                http_address: heard.advertised.http.clone(),
            })
            .collect()
    }
}

/// A relayed address gives way to what the node itself said this recently.
const RELAYED_TRUSTED_AFTER: std::time::Duration = std::time::Duration::from_secs(5);
/// Addresses relayed in one batch at most.
const RELAYED_MAX: usize = 64;

/// Bound on the nodes whose client addresses a node keeps.
const CLIENT_ADDRESSES_MAX: usize = 1024;

/// The `Peer` gRPC service: hands what peers send to the event loop.
#[derive(Clone, Debug)]
pub struct PeerService {
    inputs: mpsc::Sender<Input>,
    client_addresses: ClientAddresses,
    identities: PeerIdentities,
    cluster: ClusterId,
    security: Arc<Security>,
    metrics: Metrics,
}

impl PeerService {
    /// Admits one batch from a peer and hands its messages to the loop.
    async fn take(&self, conn: Option<&ConnInfo>, batch: RaftBatch) -> Result<(), Status> {
        self.security.admit_peer(conn, Some(&batch.from_address))?;
        self.cluster.admit(batch.from, batch.cluster_id).map_err(Status::permission_denied)?;
        self.identities.admit(batch.from, batch.from_identity).map_err(Status::permission_denied)?;
        let advertised = Advertised { client: batch.from_client_address, http: batch.from_http_address };
        self.client_addresses.note(batch.from, advertised);
        for relayed in batch.relayed.into_iter().take(RELAYED_MAX).filter(|relayed| relayed.node_id != batch.from) {
            let advertised = Advertised { client: relayed.client_address, http: relayed.http_address };
            self.client_addresses.note_relayed(relayed.node_id, advertised);
        }
        if batch.messages.is_empty() {
            return Ok(()); // a probe (see `Link`)
        }
        self.metrics.peer_received(batch.from, batch.messages.iter().map(Vec::len).sum());
        let input =
            Input::Peer { from: NodeId(batch.from), from_address: batch.from_address, messages: batch.messages };
        self.inputs.send(input).await.map_err(|_| to_status(ServerError::ShuttingDown))
    }

    pub(crate) fn new(
        inputs: mpsc::Sender<Input>,
        client_addresses: ClientAddresses,
        (identities, cluster): (PeerIdentities, ClusterId),
        (security, metrics): (Arc<Security>, Metrics),
    ) -> Self {
        Self { inputs, client_addresses, identities, cluster, security, metrics }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.take(conn.as_ref(), batch).await?;
        }
        Ok(Response::new(RaftAck {}))
    }

    type RaftStreamStream = ReceiverStream<Result<RaftAck, Status>>;

    async fn raft_stream(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<Self::RaftStreamStream>, Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let mut batches = request.into_inner();
        // Unread answers hold back reading further batches.
        let (acks, answers) = mpsc::channel(LINK_WINDOW_BATCHES);
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let taken = match batches.message().await {
                    Ok(Some(batch)) => service.take(conn.as_ref(), batch).await,
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let failed = taken.is_err();
                if acks.send(taken.map(|()| RaftAck {})).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(answers)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let admit = |from, identity, cluster| {
            self.cluster.admit(from, cluster)?;
            self.identities.admit(from, identity)
        };
        self.security.admit_peer(request.extensions().get::<ConnInfo>(), None)?;
        let ack = match snapshot::receive(&self.inputs, admit, request.into_inner()).await {
            Ok(()) => SnapshotAck { accepted: true, error: String::new() },
            Err(error) => {
                tracing::warn!(%error, "snapshot refused");
                SnapshotAck { accepted: false, error }
            }
        };
        Ok(Response::new(ack))
    }
}

/// Raft messages in one `RaftBatch` at most.
const BATCH_MESSAGES_MAX: usize = 256;
/// A batch stops taking further messages past this many bytes.
pub(crate) const PEER_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bound on connecting to and calling a peer.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Bounds on how long a batch goes unanswered before a [`Link`] probes
/// (three of its shortest answer times).
const PROBE_AFTER_MIN: Duration = Duration::from_millis(1);
const PROBE_AFTER_MAX: Duration = Duration::from_millis(200);
/// Batches sent on a [`Link`] and not yet answered, at most.
const LINK_WINDOW_BATCHES: usize = 64;
/// Bytes of messages sent on a [`Link`] and not yet answered, at most (a
/// batch starts if the window has less).
const LINK_WINDOW_BYTES: usize = 8 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    use deeb_proto::peer_server::PeerServer;
    use tokio::net::TcpListener;

    /// Serves `service` on a loopback port; returns its address.
    async fn serve<P: Peer>(service: P) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (accepted, connections) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if accepted.send(Ok::<_, std::io::Error>(stream)).await.is_err() {
                    return;
                }
            }
        });
        let router = tonic::transport::Server::builder().add_service(PeerServer::new(service));
        tokio::spawn(router.serve_with_incoming(ReceiverStream::new(connections)));
        address
    }

    fn batch(messages: Vec<Vec<u8>>) -> RaftBatch {
        RaftBatch { from: 2, messages, from_address: "127.0.0.1:1".into(), ..RaftBatch::default() }
    }

    /// A peer that takes raft streams and never answers a batch (a
    /// connection that carries nothing while it looks open).
    struct Silent;

    #[tonic::async_trait]
    impl Peer for Silent {
        async fn raft(&self, _: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
            std::future::pending().await
        }

        type RaftStreamStream = ReceiverStream<Result<RaftAck, Status>>;

        async fn raft_stream(
            &self,
            request: Request<Streaming<RaftBatch>>,
        ) -> Result<Response<Self::RaftStreamStream>, Status> {
            let (answers, stream) = mpsc::channel(1);
            let mut batches = request.into_inner();
            // Reads every batch, answers none.
            tokio::spawn(async move {
                let _answers = answers;
                while let Ok(Some(_)) = batches.message().await {}
            });
            Ok(Response::new(ReceiverStream::new(stream)))
        }

        async fn install_snapshot(
            &self,
            _: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<SnapshotAck>, Status> {
            Err(Status::unimplemented("silent"))
        }
    }

    #[tokio::test]
    async fn a_link_to_a_peer_that_answers_stays_up_and_its_batches_reach_the_loop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inputs, mut received) = mpsc::channel(64);
        let identities = PeerIdentities::load(dir.path()).expect("identities");
        let cluster = ClusterId::load(dir.path(), &[], "").expect("cluster id");
        let security = Arc::new(Security::open());
        let service = PeerService::new(
            inputs,
            ClientAddresses::default(),
            (identities, cluster),
            (security.clone(), Metrics::new()),
        );
        let address = serve(service).await;
        let dead_after = Duration::from_millis(300);
        let mut link = Link::open(&security, &address, dead_after).await.expect("open");
        // Three times dead_after of sending, with probes between.
        for round in 0..18u8 {
            link.send(batch(vec![vec![round]]), 1).await.expect("the link stays up");
            link.send(batch(Vec::new()), 0).await.expect("a probe");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while !link.unanswered.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                link.settle().expect("the link stays up");
            }
        })
        .await
        .expect("every batch answered");
        let mut delivered = Vec::new();
        while let Ok(Input::Peer { messages, .. }) = received.try_recv() {
            delivered.extend(messages);
        }
        let sent: Vec<Vec<u8>> = (0..18u8).map(|round| vec![round]).collect();
        assert_eq!(delivered, sent, "every batch in order, probes not handed on");
    }

    #[tokio::test]
    async fn a_link_to_a_peer_that_answers_nothing_fails_within_its_bound() {
        let address = serve(Silent).await;
        let security = Security::open();
        let dead_after = Duration::from_millis(300);
        let mut link = Link::open(&security, &address, dead_after).await.expect("open");
        let started = Instant::now();
        link.send(batch(vec![vec![1]]), 1).await.expect("sent: nothing is overdue yet");
        let mut probes = 0;
        let failed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match Link::wait(Some(&mut link)).await {
                    Ok(()) => {
                        probes += 1;
                        if let Err(error) = link.send(batch(Vec::new()), 0).await {
                            return error;
                        }
                    }
                    Err(error) => return error,
                }
            }
        })
        .await
        .expect("the link failed within 5 s");
        let took = started.elapsed();
        assert!(failed.contains("answered no batch"), "{failed}");
        assert!(took >= dead_after && took < dead_after * 3, "failed after {took:?}");
        assert!(probes > 0, "probed while the batch went unanswered");
        assert!(link.send(batch(vec![vec![2]]), 1).await.is_err(), "stays failed");
    }

    fn at(client: &str) -> Advertised {
        Advertised { client: client.into(), http: format!("http-{client}") }
    }

    #[test]
    fn relayed_addresses_fill_in_but_never_override_a_nodes_own_word() {
        let known = ClientAddresses::default();
        known.note(1, at("me"));
        known.note(2, at("leader"));
        known.note_relayed(3, at("third, relayed"));
        known.note_relayed(2, at("stale, relayed"));
        known.note_relayed(3, at(""));
        assert_eq!(known.get(2), Some(at("leader")), "the leader's own word stands");
        assert_eq!(known.get(3), Some(at("third, relayed")), "filled in; an empty one says nothing");
        assert!(known.heard_within(2, Duration::from_secs(5)));
        assert!(!known.heard_within(3, Duration::from_secs(5)), "relayed is not heard");
        known.note(3, at("third"));
        assert_eq!(known.get(3), Some(at("third")), "its own word replaces a relayed one");
        // Node 1 relays to 2 what it heard first-hand, but not 2's own or its own.
        let relayed: Vec<u64> = known.relayable(1, 2).iter().map(|relayed| relayed.node_id).collect();
        assert_eq!(relayed, vec![3]);
    }
}
