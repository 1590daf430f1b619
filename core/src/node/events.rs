//! What a node reports to an observer, if its host installs one: the facts
//! the simulator's safety checkers need and the points where it crashes
//! nodes on purpose. Production hosts install none; reporting costs nothing
//! then.

use raft::eraftpb::{Message, MessageType};

use crate::ids::NodeId;

/// One fact about a node, reported as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// This node became leader of `term`.
    BecameLeader { term: u64 },
    /// The entry at `index` (written in `term`, `checksum` = crc32c of its
    /// data) was applied to the state machine.
    Applied { index: u64, term: u64, checksum: u32 },
    /// This node just handed the host a granted vote (for `voted_for` in
    /// `term`) or append acknowledgements (`voted_for` is `None`) for
    /// sending: what they promise must already be durable. A named crash
    /// point.
    Promised { term: u64, voted_for: Option<u64> },
    /// This node's log now holds exactly `entries` (index, term, crc32c of
    /// the data) from `first_index` on: sent when an observer is installed
    /// and after a snapshot replaced the log.
    LogReset { first_index: u64, entries: Vec<(u64, u64, u32)> },
    /// This node wrote `entries` to its log, which now ends at `last_index`
    /// (past the last of them only if it kept older entries beyond: raft
    /// never asks for that).
    LogAppended { entries: Vec<(u64, u64, u32)>, last_index: u64 },
    /// This node installed a received snapshot at `index` into its state
    /// machine and compacted its log to it. A named crash point: what the
    /// install wrote must already be durable.
    SnapshotInstalled { index: u64 },
    /// This node compacted its log to its snapshot at `index` (and deleted
    /// older snapshot files). A named crash point.
    Compacted { index: u64 },
    /// A client read (`token`, counted on this run of the node) asked raft
    /// for a read index.
    ReadIndexAsked { token: u64 },
    /// Raft confirmed `index` as the read index of the read `token`: the
    /// read runs once this node has applied it.
    ReadIndexConfirmed { token: u64, index: u64 },
}

/// An entry as the log events describe it.
pub(super) fn entry_summary(entry: &raft::eraftpb::Entry) -> (u64, u64, u32) {
    (entry.index, entry.term, crc32c::crc32c(&entry.data))
}

/// Receives a node's events, in order.
pub type Observer = Box<dyn FnMut(NodeId, &NodeEvent) + Send>;

/// The promise carried by messages that raft-rs sends only once what they
/// report is persisted, if any.
pub(super) fn promise_in(messages: &[Message]) -> Option<NodeEvent> {
    let granted = |kind| messages.iter().find(|m| m.get_msg_type() == kind && !m.reject);
    if let Some(vote) = granted(MessageType::MsgRequestVoteResponse) {
        Some(NodeEvent::Promised { term: vote.term, voted_for: Some(vote.to) })
    } else {
        granted(MessageType::MsgAppendResponse).map(|ack| NodeEvent::Promised { term: ack.term, voted_for: None })
    }
}
