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
use tokio::sync::mpsc;
use tonic::transport::Channel;
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
        }
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
}

impl SenderTask {
    async fn run(self, mut queue: mpsc::Receiver<Vec<u8>>) {
        let mut client: Option<PeerClient<Channel>> = None;
        // Certificates read again (SIGHUP): connect afresh with them.
        let mut generation = self.security.generation();
        let mut backoff = BACKOFF_MIN;
        while let Some(first) = queue.recv().await {
            let mut bytes = first.len();
            let mut messages = vec![first];
            while messages.len() < BATCH_MESSAGES_MAX && bytes < PEER_BATCH_BYTES_MAX {
                let Ok(message) = queue.try_recv() else { break };
                bytes += message.len();
                messages.push(message);
            }
            let mine = self.addresses.get(self.me.0).unwrap_or_default();
            let batch = RaftBatch {
                from: self.me.0,
                messages,
                from_address: self.my_address.clone(),
                from_client_address: mine.client,
                from_http_address: mine.http,
                from_identity: self.my_identity,
                cluster_id: self.cluster.get(),
                relayed: self.addresses.relayable(self.me.0, self.to.0),
            };
            if self.detach_faulty(&batch) {
                continue;
            }
            if generation != self.security.generation() {
                generation = self.security.generation();
                client = None;
            }
            let bytes = batch.messages.iter().map(Vec::len).sum();
            match deliver(&self.security, &self.address, &mut client, batch).await {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    self.metrics.peer_sent(self.to.0, bytes);
                }
                Err(error) => {
                    tracing::debug!(to = self.to.0, address = %self.address, %error, "peer unreachable");
                    client = None;
                    let _ = self.loopback.try_send(Input::Unreachable { to: self.to });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    // What queued meanwhile is stale; raft resends what matters.
                    while queue.try_recv().is_ok() {}
                }
            }
        }
    }

    /// Injected faults only: sends copies of `batch` later, each on its own
    /// connection. True if the batch itself is held back (then it is one of
    /// those copies).
    fn detach_faulty(&self, batch: &RaftBatch) -> bool {
        let Some(faults) = &self.faults else { return false };
        let plan = faults.plan(self.me, self.to);
        let held_back = (!plan.delay.is_zero()).then_some(plan.delay);
        for delay in plan.copies.into_iter().chain(held_back) {
            let (address, batch, security) = (self.address.clone(), batch.clone(), self.security.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = deliver(&security, &address, &mut None, batch).await;
            });
        }
        held_back.is_some()
    }
}

/// Sends one batch to `address`, connecting first if `client` is `None`.
async fn deliver(
    security: &Security,
    address: &str,
    client: &mut Option<PeerClient<Channel>>,
    batch: RaftBatch,
) -> Result<(), String> {
    if client.is_none() {
        let channel = channel(security, address, PEER_CALL_TIMEOUT).await.map_err(|error| error.to_string())?;
        *client = Some(PeerClient::new(channel));
    }
    let Some(connected) = client.as_mut() else { return Err("not connected".into()) };
    let call = connected.raft(tokio_stream::iter(vec![batch]));
    match tokio::time::timeout(PEER_CALL_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("raft call timed out".into()),
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
            self.security.admit_peer(conn.as_ref(), Some(&batch.from_address))?;
            self.cluster.admit(batch.from, batch.cluster_id).map_err(Status::permission_denied)?;
            self.identities.admit(batch.from, batch.from_identity).map_err(Status::permission_denied)?;
            let advertised = Advertised { client: batch.from_client_address, http: batch.from_http_address };
            self.client_addresses.note(batch.from, advertised);
            for relayed in batch.relayed.into_iter().take(RELAYED_MAX).filter(|relayed| relayed.node_id != batch.from) {
                let advertised = Advertised { client: relayed.client_address, http: relayed.http_address };
                self.client_addresses.note_relayed(relayed.node_id, advertised);
            }
            self.metrics.peer_received(batch.from, batch.messages.iter().map(Vec::len).sum());
            let input =
                Input::Peer { from: NodeId(batch.from), from_address: batch.from_address, messages: batch.messages };
            self.inputs.send(input).await.map_err(|_| to_status(ServerError::ShuttingDown))?;
        }
        Ok(Response::new(RaftAck {}))
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
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

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
