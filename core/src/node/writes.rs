//! The write pipeline on the leader: queue, group commit, and matching a
//! committed entry to the clients waiting for it (by index, term, proposer
//! and request ids: never by index alone).

use std::collections::VecDeque;
use std::time::Duration;

use deeb_proto::{op, Op, Statement, StatementResult, Write, WriteBatch};
use prost::Message as _;
use raft::StateRole;

use super::output::{ClientToken, Output, WriteError, WriteOutcome};
use super::{Fatal, Node};
use crate::disk::Disk;
use crate::ids::{LogIndex, NodeId};
use crate::sql::{requests, Applied};
use crate::state_machine::StateMachine;

/// Queued and in-flight writes.
#[derive(Default)]
pub(super) struct Writes {
    queue: VecDeque<QueuedWrite>,
    in_flight: Option<InFlight>,
    /// After a batch was rolled back for exceeding `batch_bytes_max`, the
    /// next batch takes at most this many requests.
    next_batch_requests_max: Option<usize>,
    next_request_id: u64,
    /// Mutation `match_index_only`.
    match_index_only: bool,
}

struct QueuedWrite {
    callers: Callers,
    statements: Vec<Statement>,
    /// The client's idempotency key, if any.
    key: Option<String>,
}

/// Who waits for one request: its client and the retries of its key that
/// arrived meanwhile, all answered alike.
#[derive(Clone)]
struct Callers {
    token: ClientToken,
    retries: Vec<ClientToken>,
}

impl Callers {
    fn tokens(&self) -> impl Iterator<Item = ClientToken> + '_ {
        std::iter::once(self.token).chain(self.retries.iter().copied())
    }
}

/// A batch proposed by this node and not yet applied.
struct InFlight {
    index: u64,
    term: u64,
    /// True while the SQLite transaction that executed it is still open.
    transaction_open: bool,
    requests: Vec<Waiter>,
}

struct Waiter {
    request_id: u64,
    callers: Callers,
    results: Vec<StatementResult>,
    key: Option<String>,
}

/// Answers every token with (a clone of) `result`.
fn answer_all(
    outputs: &mut VecDeque<Output>,
    tokens: impl Iterator<Item = ClientToken>,
    result: &Result<WriteOutcome, WriteError>,
) {
    for token in tokens {
        outputs.push_back(Output::WriteDone { token, result: result.clone() });
    }
}

impl<D: Disk, S: StateMachine> Node<D, S> {
    /// Queues a client write (statements applied atomically). The answer
    /// comes later as `Output::WriteDone`.
    ///
    /// # Errors
    /// Refused at once: not the leader (forward it), over a limit, empty.
    pub fn submit_write(
        &mut self,
        now: Duration,
        token: ClientToken,
        statements: Vec<Statement>,
    ) -> Result<(), WriteError> {
        self.submit_keyed_write(now, token, statements, None)
    }

    /// [`Self::submit_write`] with the client's idempotency key: a request
    /// whose key was applied is answered with the recorded results (once
    /// every earlier entry is applied here), one with the key of a request
    /// still queued or in flight waits for that request's answer.
    ///
    /// # Errors
    /// As [`Self::submit_write`]; also a key over the size limit.
    pub fn submit_keyed_write(
        &mut self,
        now: Duration,
        token: ClientToken,
        statements: Vec<Statement>,
        key: Option<String>,
    ) -> Result<(), WriteError> {
        self.advance_clock(now);
        if self.fatal.is_some() {
            return Err(WriteError::Stopped);
        }
        if self.role != StateRole::Leader {
            return Err(WriteError::NotLeader { leader: self.leader() });
        }
        self.check_write(&statements)?;
        let key = key.filter(|key| !key.is_empty() && !self.config.mutations.ignore_idempotency_keys());
        if let Some(key) = &key {
            if key.len() > requests::KEY_BYTES_MAX {
                return Err(WriteError::TooLarge {
                    what: "idempotency key",
                    size: key.len(),
                    max: requests::KEY_BYTES_MAX,
                });
            }
            if self.writes.join_same_key(key, token) {
                return Ok(());
            }
        }
        let callers = Callers { token, retries: Vec::new() };
        self.writes.queue.push_back(QueuedWrite { callers, statements, key });
        self.drive();
        Ok(())
    }

    fn check_write(&self, statements: &[Statement]) -> Result<(), WriteError> {
        let limits = &self.config.limits;
        if statements.is_empty() {
            return Err(WriteError::Invalid("a write needs at least one statement".to_owned()));
        }
        if statements.len() > limits.statements_per_request_max {
            return Err(WriteError::TooLarge {
                what: "statements in the request",
                size: statements.len(),
                max: limits.statements_per_request_max,
            });
        }
        let bytes: usize = statements.iter().map(Statement::encoded_len).sum();
        if bytes > limits.request_bytes_max {
            return Err(WriteError::TooLarge { what: "request size", size: bytes, max: limits.request_bytes_max });
        }
        if self.writes.queue.len() >= limits.write_queue_max {
            return Err(WriteError::QueueFull { max: limits.write_queue_max });
        }
        Ok(())
    }

    /// Starts the next group commit if this node leads, nothing of ours is in
    /// flight, and every earlier entry is applied. Returns true if it
    /// proposed.
    pub(super) fn maybe_start_batch(&mut self) -> Result<bool, Fatal> {
        let log = &self.raw.raft.raft_log;
        let ready_to_batch = self.role == StateRole::Leader
            && self.writes.in_flight.is_none()
            && !self.writes.queue.is_empty()
            && self.raw.raft.lead_transferee.is_none()
            && log.applied == log.last_index()
            && self.sm.applied().index == log.applied;
        if !ready_to_batch {
            return Ok(false);
        }
        let next_index = log.last_index() + 1;
        self.sm.begin_batch(next_index)?;
        let (batch, waiters) = self.execute_queue(next_index)?;
        if waiters.is_empty() {
            self.sm.rollback_batch()?;
            return Ok(false);
        }
        self.propose_batch(batch, waiters, next_index)
    }

    /// Runs queued requests inside the open batch transaction until a limit
    /// is reached. A request whose SQL fails is answered at once; if its SQL
    /// ended the whole batch transaction, the requests before it run again
    /// in a new one (each such failure takes one request off the queue, so
    /// this ends).
    fn execute_queue(&mut self, next_index: u64) -> Result<(WriteBatch, Vec<Waiter>), Fatal> {
        let limits = &self.config.limits;
        let requests_max = self.writes.next_batch_requests_max.take().unwrap_or(limits.batch_requests_max);
        let bytes_max = limits.batch_bytes_max;
        let mut batch = WriteBatch { proposer: self.id.0, writes: Vec::new() };
        let mut waiters: Vec<Waiter> = Vec::new();
        let mut executed: Vec<QueuedWrite> = Vec::new();
        let mut bytes = 0;
        // The batch runs on the event loop: once it has taken as long as one
        // statement may, the rest of the queue waits for the next batch.
        while executed.len() < requests_max && bytes < bytes_max && !self.sm.batch_time_spent() {
            let Some(queued) = self.writes.queue.pop_front() else { break };
            if let Some(key) = &queued.key {
                // Applied before (by this leader or another): the first answer.
                if let Some((index, results)) = self.sm.recorded_request(key)? {
                    let result = Ok(WriteOutcome { results, index: LogIndex(index) });
                    answer_all(&mut self.outputs, queued.callers.tokens(), &result);
                    continue;
                }
            }
            match self.sm.execute_request(&queued.statements)? {
                Err(error) => {
                    let result = Err(WriteError::Statement(error));
                    answer_all(&mut self.outputs, queued.callers.tokens(), &result);
                    if !self.sm.batch_open() {
                        self.sm.begin_batch(next_index)?;
                        for earlier in executed.drain(..).rev() {
                            self.writes.queue.push_front(earlier);
                        }
                        (batch.writes, waiters, bytes) = (Vec::new(), Vec::new(), 0);
                    }
                }
                Ok(result) => {
                    let request_id = self.writes.allocate_request_id(self.raw.raft.term);
                    let ops = match self.config.mutations.replicate_statements() {
                        true => statements_as_text(&queued.statements, result.ops),
                        false => result.ops,
                    };
                    let mut write = Write { request_id, ops, ..Write::default() };
                    if let Some(key) = &queued.key {
                        self.sm.record_request(key, &result.results)?;
                        write.idempotency_key.clone_from(key);
                        write.results.clone_from(&result.results);
                    }
                    bytes += write.encoded_len();
                    batch.writes.push(write);
                    waiters.push(Waiter {
                        request_id,
                        callers: queued.callers.clone(),
                        results: result.results,
                        key: queued.key.clone(),
                    });
                    executed.push(queued);
                }
            }
        }
        if bytes > bytes_max && executed.len() > 1 {
            return self.retry_smaller(executed);
        }
        if bytes > bytes_max {
            // One request alone is larger than a batch may be.
            self.sm.rollback_batch()?;
            let error = WriteError::TooLarge { what: "row changes of the request", size: bytes, max: bytes_max };
            answer_all(&mut self.outputs, executed[0].callers.tokens(), &Err(error));
            return Ok((batch, Vec::new()));
        }
        Ok((batch, waiters))
    }

    /// The batch outgrew `batch_bytes_max`: undo it, put its requests back
    /// in order, and let the next batch stop before the last one.
    fn retry_smaller(&mut self, executed: Vec<QueuedWrite>) -> Result<(WriteBatch, Vec<Waiter>), Fatal> {
        self.sm.rollback_batch()?;
        self.writes.next_batch_requests_max = Some(executed.len() - 1);
        for queued in executed.into_iter().rev() {
            self.writes.queue.push_front(queued);
        }
        Ok((WriteBatch::default(), Vec::new()))
    }

    fn propose_batch(&mut self, batch: WriteBatch, waiters: Vec<Waiter>, next_index: u64) -> Result<bool, Fatal> {
        let command = deeb_proto::Command { kind: Some(deeb_proto::command::Kind::WriteBatch(batch)) };
        if let Err(error) = self.raw.propose(Vec::new(), command.encode_to_vec()) {
            tracing::debug!(node = self.id.0, %error, "proposal refused");
            self.sm.rollback_batch()?;
            let result = Err(WriteError::NotLeader { leader: self.leader() });
            for waiter in &waiters {
                answer_all(&mut self.outputs, waiter.callers.tokens(), &result);
            }
            return Ok(false);
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, next_index, "a leader's proposal lands right after its last entry");
        let term = self.raw.raft.term;
        self.writes.in_flight = Some(InFlight { index, term, transaction_open: true, requests: waiters });
        Ok(true)
    }
}

impl Writes {
    pub(super) fn new(match_index_only: bool) -> Self {
        Self { match_index_only, ..Self::default() }
    }

    /// A retry of a request with `key` that is queued or in flight waits
    /// for that request's answer; true if there was one.
    fn join_same_key(&mut self, key: &str, token: ClientToken) -> bool {
        let same = |other: &Option<String>| other.as_deref() == Some(key);
        if let Some(queued) = self.queue.iter_mut().find(|queued| same(&queued.key)) {
            queued.callers.retries.push(token);
            return true;
        }
        let in_flight = self.in_flight.as_mut().and_then(|flight| flight.requests.iter_mut().find(|w| same(&w.key)));
        if let Some(waiter) = in_flight {
            waiter.callers.retries.push(token);
            return true;
        }
        false
    }

    fn allocate_request_id(&mut self, term: u64) -> u64 {
        // Unique per proposer: the term in the high bits, a counter below.
        self.next_request_id += 1;
        (term << 32) | (self.next_request_id & 0xffff_ffff)
    }

    /// Applies a committed batch: commits our open transaction if it is our
    /// entry, otherwise applies the changesets; answers our waiters.
    pub(super) fn apply(
        &mut self,
        sm: &mut impl StateMachine,
        me: NodeId,
        batch: &WriteBatch,
        applied: Applied,
        outputs: &mut VecDeque<Output>,
    ) -> Result<(), Fatal> {
        let in_flight = self.in_flight.take_if(|flight| flight.index == applied.index);
        let Some(flight) = in_flight else {
            assert!(!sm.batch_open(), "a batch transaction is open while applying entry {}", applied.index);
            sm.apply_batch(batch, applied)?;
            return Ok(());
        };
        if !flight.matches(applied.term, me, batch) && !self.match_index_only {
            assert!(!flight.transaction_open, "open batch at {} but the log holds another entry", applied.index);
            sm.apply_batch(batch, applied)?;
            flight.answer_unknown(outputs);
            return Ok(());
        }
        if flight.transaction_open {
            sm.commit_batch(applied)?;
        } else {
            sm.apply_batch(batch, applied)?;
        }
        flight.answer_applied(outputs);
        Ok(())
    }

    /// An entry that is not our write batch applied at `index` (or a
    /// snapshot jumped past it): if we were waiting there, we cannot know
    /// whether our batch applied.
    pub(super) fn settle_not_ours(&mut self, index: u64, outputs: &mut VecDeque<Output>) {
        if let Some(flight) = self.in_flight.take_if(|flight| flight.index <= index) {
            assert!(!flight.transaction_open, "open batch at {} but the log holds another entry", flight.index);
            if self.match_index_only && flight.index == index {
                flight.answer_applied(outputs);
            } else {
                flight.answer_unknown(outputs);
            }
        }
    }

    /// Leadership lost: roll back the open transaction (the entry may still
    /// commit; then it is applied from its changesets) and turn the queue
    /// away.
    pub(super) fn on_leadership_lost(
        &mut self,
        sm: &mut impl StateMachine,
        leader: Option<NodeId>,
        outputs: &mut VecDeque<Output>,
    ) -> Result<(), Fatal> {
        if let Some(flight) = self.in_flight.as_mut() {
            if flight.transaction_open {
                sm.rollback_batch()?;
                flight.transaction_open = false;
            }
        }
        for queued in self.queue.drain(..) {
            answer_all(outputs, queued.callers.tokens(), &Err(WriteError::NotLeader { leader }));
        }
        self.next_batch_requests_max = None;
        Ok(())
    }
}

/// Mutation `replicate_statements`: parameterless statements travel as SQL
/// text (re-executed by followers, so `random()` diverges), the rest as
/// their row changes.
fn statements_as_text(statements: &[Statement], ops: Vec<Op>) -> Vec<Op> {
    if statements.iter().any(|statement| !statement.params.is_empty() || !statement.named_params.is_empty()) {
        return ops;
    }
    statements.iter().map(|statement| Op { kind: Some(op::Kind::Ddl(statement.sql.clone())) }).collect()
}

impl InFlight {
    fn matches(&self, term: u64, me: NodeId, batch: &WriteBatch) -> bool {
        term == self.term
            && batch.proposer == me.0
            && batch.writes.len() == self.requests.len()
            && batch.writes.iter().zip(&self.requests).all(|(write, waiter)| write.request_id == waiter.request_id)
    }

    fn answer_applied(self, outputs: &mut VecDeque<Output>) {
        for waiter in self.requests {
            let result = Ok(WriteOutcome { results: waiter.results.clone(), index: LogIndex(self.index) });
            answer_all(outputs, waiter.callers.tokens(), &result);
        }
    }

    fn answer_unknown(self, outputs: &mut VecDeque<Output>) {
        for waiter in &self.requests {
            answer_all(outputs, waiter.callers.tokens(), &Err(WriteError::OutcomeUnknown));
        }
    }
}
