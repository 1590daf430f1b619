//! Read consistency: linearizable (raft ReadIndex, retried because raft-rs
//! drops it silently when it cannot serve it), lease (leader-local while a
//! quorum was heard from recently) and stale (local, optionally bounded).

use crate::state_machine::StateMachine;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use raft::eraftpb::{Message, MessageType};
use raft::{RawNode, ReadState, StateRole, Storage};

use super::output::{ClientToken, Output, ReadError};
use super::Node;
use crate::disk::Disk;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the read started (default).
    Linearizable,
    /// Leader-local under a lease. Assumes message delay plus clock drift
    /// between nodes stays below half the election timeout; falls back to
    /// linearizable when the lease is not held.
    Lease,
    /// This node's data as is. With `Some(bound)`, refused if the node has
    /// not heard from a leader within `bound`.
    Stale { max_staleness: Option<Duration> },
}

/// Linearizable reads waiting for ReadIndex or for apply to catch up.
#[derive(Default)]
pub(super) struct Reads {
    pending: BTreeMap<ClientToken, PendingRead>,
    /// Leader only: when each peer last answered us in the current term.
    acks: HashMap<u64, Duration>,
}

struct PendingRead {
    issued_tick: u64,
    deadline_tick: u64,
    read_index: Option<u64>,
}

impl<D: Disk, S: StateMachine> Node<D, S> {
    /// Asks to read at `consistency`. The answer comes as
    /// `Output::ReadReady` (run the query on `reader()` then) or
    /// `Output::ReadFailed`.
    ///
    /// # Errors
    /// Refused at once: too stale, too many reads waiting, node stopped.
    pub fn submit_read(
        &mut self,
        now: Duration,
        token: ClientToken,
        consistency: Consistency,
    ) -> Result<(), ReadError> {
        self.advance_clock(now);
        if self.fatal.is_some() {
            return Err(ReadError::Stopped);
        }
        match consistency {
            _ if self.config.mutations.read_without_read_index() => {}
            Consistency::Stale { max_staleness } => self.check_staleness(max_staleness)?,
            Consistency::Lease if self.lease_held() => {}
            Consistency::Lease | Consistency::Linearizable => return self.submit_read_index(token),
        }
        self.outputs.push_back(Output::ReadReady { token });
        Ok(())
    }

    fn check_staleness(&self, max_staleness: Option<Duration>) -> Result<(), ReadError> {
        let Some(bound) = max_staleness else { return Ok(()) };
        let staleness = self.since_leader_contact().unwrap_or(Duration::MAX);
        if staleness > bound {
            let staleness_ms = u64::try_from(staleness.as_millis()).unwrap_or(u64::MAX);
            let max_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
            return Err(ReadError::TooStale { staleness_ms, max_ms });
        }
        Ok(())
    }

    fn submit_read_index(&mut self, token: ClientToken) -> Result<(), ReadError> {
        let max = self.config.limits.pending_reads_max;
        if self.reads.pending.len() >= max {
            return Err(ReadError::QueueFull { max });
        }
        let deadline_tick = self.ticks + self.config.limits.read_timeout_ticks;
        let read = PendingRead { issued_tick: self.ticks, deadline_tick, read_index: None };
        self.reads.pending.insert(token, read);
        self.raw.read_index(token.0.to_be_bytes().to_vec());
        self.drive();
        Ok(())
    }

    /// The leader's lease: a quorum of every voter set answered within half
    /// an election timeout.
    fn lease_held(&self) -> bool {
        if self.role != StateRole::Leader || !self.raw.raft.commit_to_current_term() {
            return false;
        }
        let lease = Duration::from_millis(self.config.tick_ms * self.config.election_ticks as u64 / 2);
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let incoming = self.reads.quorum_heard_within(&conf.voters, self.id.0, self.now, lease);
        let outgoing = conf.voters_outgoing.is_empty()
            || self.reads.quorum_heard_within(&conf.voters_outgoing, self.id.0, self.now, lease);
        incoming && outgoing
    }
}

impl Reads {
    /// Records a peer's answer to the leader, for the lease.
    pub(super) fn note_ack(&mut self, message: &Message, term: u64, now: Duration) {
        let is_answer =
            matches!(message.get_msg_type(), MessageType::MsgHeartbeatResponse | MessageType::MsgAppendResponse);
        if is_answer && message.term == term {
            self.acks.insert(message.from, now);
        }
    }

    fn quorum_heard_within(&self, voters: &[u64], me: u64, now: Duration, lease: Duration) -> bool {
        let heard = voters
            .iter()
            .filter(|&&voter| voter == me || self.acks.get(&voter).is_some_and(|&at| now.saturating_sub(at) < lease))
            .count();
        heard > voters.len() / 2
    }

    /// Records the indexes raft confirmed for our reads.
    pub(super) fn on_read_states(&mut self, states: Vec<ReadState>) {
        for state in states {
            let Ok(bytes) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else { continue };
            let token = ClientToken(u64::from_be_bytes(bytes));
            if let Some(read) = self.pending.get_mut(&token) {
                read.read_index.get_or_insert(state.index);
            }
        }
    }

    /// Lets every read whose index is applied run.
    pub(super) fn release(&mut self, applied: u64, outputs: &mut VecDeque<Output>) {
        let ready: Vec<ClientToken> = self
            .pending
            .iter()
            .filter(|(_, read)| read.read_index.is_some_and(|index| index <= applied))
            .map(|(token, _)| *token)
            .collect();
        for token in ready {
            self.pending.remove(&token);
            outputs.push_back(Output::ReadReady { token });
        }
    }

    /// Retries ReadIndex requests raft may have dropped; fails expired ones.
    pub(super) fn on_tick<S: Storage>(&mut self, raw: &mut RawNode<S>, ticks: u64, outputs: &mut VecDeque<Output>) {
        let retry_ticks = (raw.raft.heartbeat_timeout() as u64).max(1) * 2;
        let has_leader = raw.raft.leader_id != raft::INVALID_ID;
        let mut expired = Vec::new();
        for (token, read) in &mut self.pending {
            if ticks >= read.deadline_tick {
                expired.push(*token);
            } else if read.read_index.is_none() && ticks - read.issued_tick >= retry_ticks && has_leader {
                read.issued_tick = ticks;
                raw.read_index(token.0.to_be_bytes().to_vec());
            }
        }
        for token in expired {
            let read = self.pending.remove(&token).expect("collected from pending");
            let error = if read.read_index.is_some() || has_leader { ReadError::Timeout } else { ReadError::NoLeader };
            outputs.push_back(Output::ReadFailed { token, error });
        }
    }

    pub(super) fn on_leadership_lost(&mut self) {
        self.acks.clear();
    }
}
