//! Read consistency: linearizable (raft ReadIndex, retried because raft-rs
//! drops it silently when it cannot serve it), lease (leader-local while a
//! quorum was heard from recently) and stale (local, optionally bounded).

use crate::state_machine::StateMachine;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
    /// This node's data as is, or with `Some(bound)`, data that holds
    /// every write acknowledged more than `bound` before the read arrived
    /// (measured on this node's clock): served at once if this node has
    /// applied the read index of a ReadIndex it asked for within `bound`,
    /// otherwise after a ReadIndex of its own, or refused at once when no
    /// leader was heard from within `bound` either.
    Stale { max_staleness: Option<Duration> },
}

/// Linearizable reads waiting for ReadIndex or for apply to catch up, and
/// the leader's lease.
///
/// ReadIndex is asked in rounds: one request (one heartbeat round at the
/// leader) for every read waiting when it is asked, at most
/// `ROUNDS_IN_FLIGHT_MAX` rounds in flight. A read never joins a round
/// already asked: the index it gets must be confirmed after it arrived.
#[derive(Default)]
pub(super) struct Reads {
    pending: BTreeMap<ClientToken, PendingRead>,
    /// The ReadIndex rounds in flight, oldest first.
    rounds: VecDeque<Round>,
    /// Reads waiting for the next round, in arrival order.
    waiting: Vec<ClientToken>,
    /// The number of the last round asked (per run: contexts also carry
    /// the incarnation).
    last_round: u64,
    /// Mutation `read_joins_round_in_flight`.
    join_round_in_flight: bool,
    /// Leader only: per peer, when we sent the latest heartbeat it has
    /// answered in the current term (not when the answer arrived: an answer
    /// that waited in a queue while this node was paused promises nothing
    /// about now).
    acks: HashMap<u64, Duration>,
    /// Leader only: the heartbeat contexts sent within a lease, each with
    /// when it was first sent. A follower echoes the context in its answer.
    heartbeats_sent: HashMap<Vec<u8>, Duration>,
    /// Leader only: the number of the next lease tag, the context of a
    /// heartbeat that carries no ReadIndex context of raft's own.
    next_lease_tag: u64,
    /// What makes this node's ReadIndex contexts its own in the cluster's
    /// whole life: its id and this run's incarnation (see
    /// [`read_context`]).
    context_prefix: [u8; 16],
    /// When this node last asked for a read index that it has since
    /// applied: every write acknowledged before then is in its data (what
    /// bounded-stale reads count from).
    confirmed_at: Option<Duration>,
    /// ReadIndex contexts this node answered as leader (its own reads' and
    /// followers'), the latest `COMPLETED_CONTEXTS_MAX`: see
    /// [`Reads::is_answered`].
    answered: HashSet<Vec<u8>>,
    answered_order: VecDeque<Vec<u8>>,
}

/// ReadIndex rounds in flight at once: reads that arrive while one is in
/// flight go out in the next without waiting for it to end.
const ROUNDS_IN_FLIGHT_MAX: usize = 2;

/// Answered ReadIndex contexts remembered (see [`Reads::is_answered`]).
const COMPLETED_CONTEXTS_MAX: usize = 4096;

/// A ReadIndex context no other request in the cluster's life shares: the
/// node's id, the incarnation (a number that grows at every start of the
/// node, kept in its data directory), the round's number and the attempt
/// (each retry asks afresh). A bare number would repeat after a restart
/// (rounds count from 1), and an answer to a round from before the
/// restart, delivered late, would complete a new one with an old index;
/// two nodes' equal numbers would collide at the leader. A retry under the
/// same context would let heartbeat answers sent for the first attempt,
/// delivered late, count for the retry (raft-rs counts a heartbeat's
/// answer for every request carrying its context).
fn read_context(prefix: &[u8; 16], round: u64, attempt: u64) -> Vec<u8> {
    let mut context = prefix.to_vec();
    context.extend_from_slice(&round.to_be_bytes());
    context.extend_from_slice(&attempt.to_be_bytes());
    context
}

/// The first byte of a lease tag: ReadIndex contexts are 32 bytes (see
/// [`read_context`]), a lease tag is this byte and eight more.
const LEASE_TAG: u8 = 0xff;

struct PendingRead {
    /// When the read first asked for a read index (this node's clock).
    asked_at: Duration,
    deadline_tick: u64,
    read_index: Option<u64>,
    /// Once released, this node's data holds every write acknowledged
    /// before `asked_at` (a ReadIndex or the lease confirmed it; not so a
    /// stale read that waits only for the leader's own writes).
    confirms: bool,
}

/// One ReadIndex request for every read that was waiting when it was
/// asked.
struct Round {
    number: u64,
    /// The reads it asks for (some may have expired since).
    readers: Vec<ClientToken>,
    issued_tick: u64,
    /// How many times it was asked for again (raft-rs drops a request it
    /// cannot serve, silently).
    attempt: u64,
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
        if !self.in_configuration() {
            return Err(ReadError::NotMember { node: self.id });
        }
        match consistency {
            _ if self.config.mutations.read_without_read_index() => {}
            Consistency::Stale { max_staleness: None } => return self.submit_local_read(token, false),
            Consistency::Stale { max_staleness: Some(bound) } => match self.staleness_within(bound)? {
                true => return self.submit_local_read(token, false),
                false => return self.submit_read_index(token),
            },
            Consistency::Lease if self.lease_held() => return self.submit_local_read(token, true),
            Consistency::Lease | Consistency::Linearizable => return self.submit_read_index(token),
        }
        self.outputs.push_back(Output::ReadReady { token });
        Ok(())
    }

    /// A read of this node's data as it is (a stale read, or a lease read,
    /// which `confirms`), except that on the leader it waits until
    /// everything committed has applied: the leader answers a write when
    /// its entry commits, before the entry applies here, and its clients
    /// read their own writes.
    fn submit_local_read(&mut self, token: ClientToken, confirms: bool) -> Result<(), ReadError> {
        let committed = self.raw.raft.raft_log.committed;
        let applied = self.applied().index;
        if self.role != StateRole::Leader || applied >= committed || self.config.mutations.lease_read_before_apply() {
            self.outputs.push_back(Output::ReadReady { token });
            return Ok(());
        }
        self.pend_read(token, Some(committed), confirms)
    }

    /// Holds `token`'s read until it has a read index (if `read_index` is
    /// none) and this node applied it; at most `pending_reads_max` wait.
    fn pend_read(&mut self, token: ClientToken, read_index: Option<u64>, confirms: bool) -> Result<(), ReadError> {
        let max = self.config.limits.pending_reads_max;
        if self.reads.pending.len() >= max {
            return Err(ReadError::QueueFull { max });
        }
        let deadline_tick = self.ticks + self.config.limits.read_timeout_ticks;
        let read = PendingRead { asked_at: self.now, deadline_tick, read_index, confirms };
        self.reads.pending.insert(token, read);
        Ok(())
    }

    /// Whether this node's data holds every write acknowledged more than
    /// `bound` ago (true), or a ReadIndex must confirm it (false: a leader
    /// was heard from within `bound`, so one may answer).
    ///
    /// # Errors
    /// `TooStale` when neither holds.
    fn staleness_within(&self, bound: Duration) -> Result<bool, ReadError> {
        let staleness = match self.config.mutations.stale_bound_on_leader_contact() {
            true => self.since_leader_contact(),
            false => self.reads.confirmed_at.map(|at| self.now.saturating_sub(at)),
        };
        let staleness = staleness.unwrap_or(Duration::MAX);
        if staleness <= bound {
            return Ok(true);
        }
        if self.since_leader_contact().is_some_and(|since| since <= bound) {
            return Ok(false);
        }
        let staleness_ms = u64::try_from(staleness.as_millis()).unwrap_or(u64::MAX);
        let max_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
        Err(ReadError::TooStale { staleness_ms, max_ms })
    }

    fn submit_read_index(&mut self, token: ClientToken) -> Result<(), ReadError> {
        self.pend_read(token, None, true)?;
        match self.reads.rounds.back_mut().filter(|_| self.reads.join_round_in_flight) {
            Some(in_flight) => in_flight.readers.push(token),
            None => self.reads.waiting.push(token),
        }
        self.observe(super::NodeEvent::ReadIndexAsked { token: token.0 });
        // While a snapshot installs, raft must not queue messages under the
        // ready it handed out: the round starts on a later tick.
        if self.installing.is_none() {
            self.reads.start_round(&mut self.raw, self.ticks);
        }
        self.drive();
        Ok(())
    }

    /// How long a quorum's answers to a heartbeat let the leader serve
    /// reads alone, from when it sent the heartbeat: half an election
    /// timeout, since a follower that heard from us votes for no one else
    /// for a whole one (check_quorum), and clocks may drift.
    pub(super) fn lease_duration(&self) -> Duration {
        Duration::from_millis(self.config.tick_ms * self.config.election_ticks as u64 / 2)
    }

    /// The leader's lease: a quorum of every voter set answered heartbeats
    /// sent within the lease duration, and no leadership transfer is under
    /// way (its target may campaign at once).
    fn lease_held(&self) -> bool {
        let raft = &self.raw.raft;
        if self.role != StateRole::Leader || !raft.commit_to_current_term() || raft.lead_transferee.is_some() {
            return false;
        }
        let lease = self.lease_duration();
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let incoming = self.reads.quorum_heard_within(&conf.voters, self.id.0, self.now, lease);
        let outgoing = conf.voters_outgoing.is_empty()
            || self.reads.quorum_heard_within(&conf.voters_outgoing, self.id.0, self.now, lease);
        incoming && outgoing
    }
}

impl Reads {
    /// The reads of node `id` in its run number `incarnation`.
    pub(super) fn new(id: u64, incarnation: u64, join_round_in_flight: bool) -> Self {
        let mut context_prefix = [0u8; 16];
        context_prefix[..8].copy_from_slice(&id.to_be_bytes());
        context_prefix[8..].copy_from_slice(&incarnation.to_be_bytes());
        Reads { context_prefix, join_round_in_flight, ..Reads::default() }
    }

    /// Asks for one read index for every read waiting for a round, unless
    /// `ROUNDS_IN_FLIGHT_MAX` are in flight (they wait for one to end).
    /// True if it asked.
    pub(super) fn start_round<S: Storage>(&mut self, raw: &mut RawNode<S>, ticks: u64) -> bool {
        if self.rounds.len() >= ROUNDS_IN_FLIGHT_MAX || self.waiting.is_empty() {
            return false;
        }
        let pending = &self.pending;
        let readers: Vec<ClientToken> = self.waiting.drain(..).filter(|token| pending.contains_key(token)).collect();
        if readers.is_empty() {
            return false;
        }
        let number = self.last_round + 1;
        self.last_round = number;
        self.rounds.push_back(Round { number, readers, issued_tick: ticks, attempt: 0 });
        raw.read_index(read_context(&self.context_prefix, number, 0));
        true
    }

    /// Leader: remembers when each outgoing heartbeat was sent, tagging
    /// those raft sent without a context so their answers can be told
    /// apart. Tags older than a lease are forgotten (their answers could
    /// not renew it anyway).
    pub(super) fn tag_heartbeats(&mut self, messages: &mut [Message], now: Duration, lease: Duration) {
        let mut tag = None;
        let mut any = false;
        for message in messages.iter_mut().filter(|m| m.get_msg_type() == MessageType::MsgHeartbeat) {
            any = true;
            if message.get_context().is_empty() {
                let tag = tag.get_or_insert_with(|| {
                    self.next_lease_tag += 1;
                    let mut tag = vec![LEASE_TAG];
                    tag.extend_from_slice(&self.next_lease_tag.to_be_bytes());
                    tag
                });
                message.set_context(tag.clone().into());
            }
            self.heartbeats_sent.entry(message.get_context().to_vec()).or_insert(now);
        }
        if any {
            self.heartbeats_sent.retain(|_, sent| now.saturating_sub(*sent) < lease);
        }
    }

    /// Records a peer's answer to one of our heartbeats of this term, for
    /// the lease: it counts from when that heartbeat was sent.
    pub(super) fn note_ack(&mut self, message: &Message, term: u64) {
        if message.get_msg_type() != MessageType::MsgHeartbeatResponse || message.term != term {
            return;
        }
        if let Some(&sent) = self.heartbeats_sent.get(message.get_context()) {
            let ack = self.acks.entry(message.from).or_insert(sent);
            *ack = (*ack).max(sent);
        }
    }

    fn quorum_heard_within(&self, voters: &[u64], me: u64, now: Duration, lease: Duration) -> bool {
        let heard = voters
            .iter()
            .filter(|&&voter| voter == me || self.acks.get(&voter).is_some_and(|&at| now.saturating_sub(at) < lease))
            .count();
        heard > voters.len() / 2
    }

    /// Records the index raft confirmed for our round in flight (at any
    /// attempt) for every read in it, and ends the round; returns the reads
    /// that got theirs now.
    pub(super) fn on_read_states(&mut self, states: Vec<ReadState>) -> Vec<(ClientToken, u64)> {
        let mut confirmed = Vec::new();
        for state in states {
            self.note_answered(&state.request_ctx);
            let context = state.request_ctx.as_slice();
            let Some(rest) = context.strip_prefix(&self.context_prefix[..]) else { continue };
            let Some(Ok(bytes)) = rest.get(..8).filter(|_| rest.len() == 16).map(<[u8; 8]>::try_from) else { continue };
            let number = u64::from_be_bytes(bytes);
            let Some(at) = self.rounds.iter().position(|round| round.number == number) else { continue };
            let Some(round) = self.rounds.remove(at) else { continue };
            for token in round.readers {
                if let Some(read) = self.pending.get_mut(&token).filter(|read| read.read_index.is_none()) {
                    read.read_index = Some(state.index);
                    confirmed.push((token, state.index));
                }
            }
        }
        confirmed
    }

    /// Lets every read whose index is applied run; the data is then
    /// confirmed as of when each asked.
    pub(super) fn release(&mut self, applied: u64, outputs: &mut VecDeque<Output>) {
        let ready: Vec<ClientToken> = self
            .pending
            .iter()
            .filter(|(_, read)| read.read_index.is_some_and(|index| index <= applied))
            .map(|(token, _)| *token)
            .collect();
        for token in ready {
            let read = self.pending.remove(&token).expect("collected from pending");
            if read.confirms {
                self.confirmed_at = self.confirmed_at.max(Some(read.asked_at));
            }
            outputs.push_back(Output::ReadReady { token });
        }
    }

    /// Fails expired reads; asks again for the round in flight if raft may
    /// have dropped it, or starts one for reads still waiting (unless raft
    /// must not be asked now: a snapshot installs).
    pub(super) fn on_tick<S: Storage>(
        &mut self,
        raw: &mut RawNode<S>,
        ticks: u64,
        may_ask: bool,
        outputs: &mut VecDeque<Output>,
    ) {
        let has_leader = raw.raft.leader_id != raft::INVALID_ID;
        let expired: Vec<ClientToken> =
            self.pending.iter().filter(|(_, read)| ticks >= read.deadline_tick).map(|(token, _)| *token).collect();
        for token in expired {
            let read = self.pending.remove(&token).expect("collected from pending");
            let error = if read.read_index.is_some() || has_leader { ReadError::Timeout } else { ReadError::NoLeader };
            outputs.push_back(Output::ReadFailed { token, error });
        }
        // A round whose reads all expired is over.
        let pending = &self.pending;
        self.rounds.retain(|round| round.readers.iter().any(|token| pending.contains_key(token)));
        self.waiting.retain(|token| pending.contains_key(token));
        if !may_ask {
            return;
        }
        let retry_ticks = (raw.raft.heartbeat_timeout() as u64).max(1) * 2;
        for round in &mut self.rounds {
            if ticks - round.issued_tick >= retry_ticks && has_leader {
                round.issued_tick = ticks;
                round.attempt += 1;
                raw.read_index(read_context(&self.context_prefix, round.number, round.attempt));
            }
        }
        self.start_round(raw, ticks);
    }

    /// Remembers that this node answered the ReadIndex request `context`
    /// (as leader: its own read, or a follower's in an outgoing answer).
    pub(super) fn note_answered(&mut self, context: &[u8]) {
        if context.is_empty() || !self.answered.insert(context.to_vec()) {
            return;
        }
        self.answered_order.push_back(context.to_vec());
        if self.answered_order.len() > COMPLETED_CONTEXTS_MAX {
            if let Some(oldest) = self.answered_order.pop_front() {
                self.answered.remove(&oldest);
            }
        }
    }

    /// True for a follower's ReadIndex request this node already answered,
    /// arriving again (a duplicate, or a retry overtaken by its answer):
    /// raft-rs would queue it afresh, and a late answer to a heartbeat sent
    /// for it the first time would then confirm it, and with it every read
    /// queued before it, with no quorum heard since those asked.
    pub(super) fn is_answered(&self, message: &Message) -> bool {
        message.get_msg_type() == MessageType::MsgReadIndex
            && message.get_entries().first().is_some_and(|entry| self.answered.contains(entry.get_data()))
    }

    pub(super) fn on_leadership_lost(&mut self) {
        self.acks.clear();
        self.heartbeats_sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_index_request(context: &[u8]) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgReadIndex);
        let entry = raft::eraftpb::Entry { data: context.to_vec().into(), ..Default::default() };
        message.mut_entries().push(entry);
        message
    }

    /// A request answered once is recognized when it comes again; others
    /// are not; the memory is bounded.
    #[test]
    fn answered_read_requests_are_recognized_when_they_come_again() {
        let mut reads = Reads::new(2, 1, false);
        let first = read_context(&[1; 16], 24, 0);
        let retry = read_context(&[1; 16], 24, 1);
        reads.note_answered(&first);
        assert!(reads.is_answered(&read_index_request(&first)));
        assert!(!reads.is_answered(&read_index_request(&retry)), "a retry asks under a fresh context");
        for token in 0..COMPLETED_CONTEXTS_MAX as u64 {
            reads.note_answered(&read_context(&[3; 16], token, 0));
        }
        assert!(!reads.is_answered(&read_index_request(&first)), "the oldest are forgotten");
        assert_eq!(reads.answered.len(), COMPLETED_CONTEXTS_MAX);
    }

    fn pending() -> PendingRead {
        PendingRead { asked_at: Duration::ZERO, deadline_tick: 9, read_index: None, confirms: true }
    }

    /// A confirmed index reaches every read of the round the context
    /// names, at any attempt, and ends the round; reads waiting for the
    /// next round, and another node's contexts, are left alone.
    #[test]
    fn read_states_confirm_the_whole_round_at_any_attempt() {
        let mut reads = Reads::new(2, 1, false);
        for token in [7, 8, 9] {
            reads.pending.insert(ClientToken(token), pending());
        }
        let readers = vec![ClientToken(7), ClientToken(8)];
        reads.rounds.push_back(Round { number: 4, readers, issued_tick: 0, attempt: 1 });
        reads.waiting.push(ClientToken(9));
        let prefix = reads.context_prefix;
        let other = read_context(&[9; 16], 4, 1);
        let ours = read_context(&prefix, 4, 1);
        let states =
            vec![ReadState { index: 3, request_ctx: other }, ReadState { index: 5, request_ctx: ours.clone() }];
        assert_eq!(reads.on_read_states(states), vec![(ClientToken(7), 5), (ClientToken(8), 5)]);
        assert!(reads.rounds.is_empty(), "the round is over");
        assert_eq!(reads.pending[&ClientToken(9)].read_index, None, "arrived during the round: waits for the next");
        assert!(reads.is_answered(&read_index_request(&ours)));
        let late = ReadState { index: 6, request_ctx: read_context(&prefix, 4, 0) };
        assert!(reads.on_read_states(vec![late]).is_empty(), "a late answer to an ended round changes nothing");
    }
}
