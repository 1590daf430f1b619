//! The write pipeline on the leader: queue, group commit, and matching a
//! committed entry to the clients waiting for it (by index, term, proposer
//! and request ids: never by index alone).

use std::collections::VecDeque;
use std::time::Duration;

use deeb_proto::{RestorePart, Statement, StatementResult, WriteBatch};
use prost::Message as _;
use raft::StateRole;

use super::apply::Step;
use super::execute::{BatchToExecute, ExecutedBatch, Outcome, Request};
use super::output::{ClientToken, Output, WriteError, WriteOutcome};
use super::{Fatal, Node};
use crate::disk::Disk;
use crate::ids::{LogIndex, NodeId};
use crate::sql::{requests, Applied, RequestError};
use crate::state_machine::StateMachine;

/// What applying a batch did, request by request (see
/// [`StateMachine::take_outcomes`]).
pub(super) type Outcomes = Vec<Result<Vec<StatementResult>, RequestError>>;

/// Queued, executing and in-flight writes.
#[derive(Default)]
pub(super) struct Writes {
    queue: VecDeque<QueuedWrite>,
    /// A batch away on the host's worker (with the state machine).
    executing: Option<ExecutingBatch>,
    /// Our batches proposed and not yet applied, in log order. Those whose
    /// transaction is open are kept in one open transaction, committed
    /// when the last of them applies.
    in_flight: VecDeque<InFlight>,
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
    /// A piece of a restore instead of statements (always a batch of its own).
    restore: Option<RestorePart>,
}

/// What a request asks: its statements, or a restore piece.
type Body = (Vec<Statement>, Option<RestorePart>);

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

/// A batch away on the host's worker.
pub(super) struct ExecutingBatch {
    next_index: u64,
    term: u64,
    /// What the state machine had applied when it left.
    pub(super) applied: Applied,
    /// Who waits for each request, in the order the batch holds them.
    requests: Vec<Executing>,
}

/// One request of the executing batch, as the node keeps it.
struct Executing {
    request_id: u64,
    callers: Callers,
    key: Option<String>,
}

/// A batch proposed by this node and not yet applied.
pub(super) struct InFlight {
    index: u64,
    term: u64,
    /// True while the transaction that executed it is still open.
    transaction_open: bool,
    /// Its clients have their answers (given when the entry committed).
    answered: bool,
    requests: Vec<Waiter>,
    /// Failed requests whose errors wait for this entry.
    deferred: Vec<Deferred>,
}

/// A request that failed on the leader, answered with its error only once
/// the entries whose writes it may have seen (earlier requests of its
/// batch, our batches in flight under it) commit: an error such as a
/// UNIQUE violation can reveal a write, which must not be one that never
/// commits. If they never do, it is told "not the leader" (it was never
/// proposed, so it may be sent again).
struct Deferred {
    callers: Callers,
    result: Result<WriteOutcome, WriteError>,
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
        self.may_write()?;
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
        self.writes.queue.push_back(QueuedWrite { callers, statements, key, restore: None });
        self.drive();
        Ok(())
    }

    /// Queues a piece of a whole-database restore ([`RestorePart`]): a
    /// batch and an entry of its own, applied on every replica (this one
    /// too) from the entry. The answer comes as `Output::WriteDone`.
    ///
    /// # Errors
    /// As [`Self::submit_write`].
    pub fn submit_restore_part(
        &mut self,
        now: Duration,
        token: ClientToken,
        part: RestorePart,
    ) -> Result<(), WriteError> {
        self.advance_clock(now);
        self.may_write()?;
        let limits = &self.config.limits;
        if part.data.len() > limits.request_bytes_max {
            let (size, max) = (part.data.len(), limits.request_bytes_max);
            return Err(WriteError::TooLarge { what: "restore piece", size, max });
        }
        if self.writes.queue.len() >= limits.write_queue_max {
            return Err(WriteError::QueueFull { max: limits.write_queue_max });
        }
        let callers = Callers { token, retries: Vec::new() };
        self.writes.queue.push_back(QueuedWrite { callers, statements: Vec::new(), key: None, restore: Some(part) });
        self.drive();
        Ok(())
    }

    /// This node takes writes: running, a member, the leader.
    fn may_write(&self) -> Result<(), WriteError> {
        if self.fatal.is_some() {
            return Err(WriteError::Stopped);
        }
        if !self.in_configuration() {
            return Err(WriteError::NotMember { node: self.id });
        }
        if self.role != StateRole::Leader {
            return Err(WriteError::NotLeader { leader: self.leader() });
        }
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

    /// Starts the next group commit if this node leads and the state
    /// machine is home: the queue's head (up to the batch bound) and the
    /// state machine leave for the host's worker (`Output::ExecuteBatch`).
    /// Either nothing of ours is in flight and every earlier entry is
    /// applied, or the batch goes on top of ours in flight, in their open
    /// transaction (the pipeline: see [`Writes::may_pile_on`]). Returns
    /// true if it started one.
    pub(super) fn maybe_start_batch(&mut self) -> bool {
        let log = &self.raw.raft.raft_log;
        let leading = self.role == StateRole::Leader
            && self.writes.executing.is_none()
            && !self.writes.queue.is_empty()
            && self.raw.raft.lead_transferee.is_none();
        let Some(sm) = self.sm.as_ref().filter(|_| leading) else { return false };
        // A restore piece (or a request the state machine runs alone) goes
        // alone; other requests up to the next one.
        let alone = |queued: &QueuedWrite| queued.restore.is_some() || sm.runs_alone(&queued.statements);
        let fresh =
            self.writes.in_flight.is_empty() && log.applied == log.last_index() && sm.applied().index == log.applied;
        let on_top = !fresh
            && sm.pipelines_batches()
            && self.writes.may_pile_on(
                self.raw.raft.term,
                log.last_index(),
                log.committed,
                self.config.limits.batches_in_flight_max,
            )
            && self.writes.queue.front().is_some_and(|queued| !alone(queued));
        if !fresh && !on_top {
            return false;
        }
        let Some(sm) = self.sm.take() else { return false };
        let (next_index, term) = (log.last_index() + 1, self.raw.raft.term);
        let limits = &self.config.limits;
        let requests_max = self.writes.next_batch_requests_max.take().unwrap_or(limits.batch_requests_max);
        let alone = |queued: &QueuedWrite| queued.restore.is_some() || sm.runs_alone(&queued.statements);
        let taken = match self.writes.queue.iter().take(requests_max).position(alone) {
            Some(0) => 1,
            Some(restore) => restore.min(requests_max),
            None => self.writes.queue.len().min(requests_max),
        };
        let (mut requests, mut callers) = (Vec::with_capacity(taken), Vec::with_capacity(taken));
        for queued in self.writes.queue.drain(..taken).collect::<Vec<_>>() {
            let request_id = self.writes.allocate_request_id(term);
            requests.push(Request {
                request_id,
                statements: queued.statements,
                key: queued.key.clone(),
                restore: queued.restore,
            });
            callers.push(Executing { request_id, callers: queued.callers, key: queued.key });
        }
        let applied = sm.applied();
        self.writes.executing = Some(ExecutingBatch { next_index, term, applied, requests: callers });
        self.batch_to_execute = Some(BatchToExecute {
            sm,
            next_index,
            requests,
            bytes_max: limits.batch_bytes_max,
            on_top,
            replicate_statements: self.config.mutations.replicate_statements(),
            over_lost_transaction: self.config.mutations.pipeline_over_lost_transaction(),
        });
        self.outputs.push_back(Output::ExecuteBatch);
        true
    }

    /// The batch `Output::ExecuteBatch` announced, with the state machine,
    /// for the host to run on its worker ([`BatchToExecute::execute`]).
    /// Until it comes back through [`Self::batch_executed`], committed
    /// entries wait to be applied; reads and raft go on.
    pub fn batch_to_execute(&mut self) -> Option<BatchToExecute<S>> {
        self.batch_to_execute.take()
    }

    /// The worker ran the batch: the state machine is back. The batch is
    /// proposed if this node still leads in the term it began in and no
    /// entry was appended meanwhile; otherwise it is undone and its
    /// requests go back to the queue (still leading) or are answered "not
    /// the leader" (they were never proposed).
    pub fn batch_executed(&mut self, now: Duration, executed: ExecutedBatch<S>) {
        self.advance_clock(now);
        let ExecutedBatch { sm, next_index, requests, result } = executed;
        let Some(executing) = self.writes.executing.take_if(|batch| batch.next_index == next_index) else {
            let error = Fatal::Invariant(format!("a batch for index {next_index} came back that was never sent"));
            self.stop(error);
            return;
        };
        self.sm = Some(sm);
        if self.fatal.is_some() {
            return;
        }
        let settled = result
            .map_err(Fatal::from)
            .and_then(|outcome| self.settle_batch(executing, requests, outcome))
            .and_then(|()| self.apply_unapplied())
            .and_then(|()| self.after_apply());
        if let Err(error) = settled {
            self.stop(error);
        }
        self.drive();
    }

    fn settle_batch(
        &mut self,
        executing: ExecutingBatch,
        requests: Vec<Request>,
        outcome: Outcome,
    ) -> Result<(), Fatal> {
        let ExecutingBatch { next_index, term, requests: callers, .. } = executing;
        let mut slots: Vec<Option<(Executing, Body)>> = callers
            .into_iter()
            .zip(requests)
            .map(|(waiting, request)| Some((waiting, (request.statements, request.restore))))
            .collect();
        let mut take = |at: usize| {
            slots.get_mut(at).and_then(Option::take).ok_or_else(|| {
                Fatal::Invariant(format!("the batch for index {next_index} answered request {at} twice or not at all"))
            })
        };
        // A request's SQL error may reflect what the requests before it in
        // this batch, or our batches in flight under it, wrote: it waits
        // for their entries to commit (`Deferred`).
        let mut deferred: Vec<Deferred> = Vec::new();
        for (at, result) in outcome.answered {
            let callers = take(at)?.0.callers;
            match result {
                Err(WriteError::Statement(_)) => deferred.push(Deferred { callers, result }),
                _ => answer_all(&mut self.outputs, callers.tokens(), &result),
            }
        }
        let mut executed: Vec<(Executing, Vec<StatementResult>, Body)> = (outcome.executed.into_iter())
            .map(|(at, results)| take(at).map(|(waiting, body)| (waiting, results, body)))
            .collect::<Result<_, _>>()?;
        let not_run: Vec<(Executing, Body)> = outcome.not_run.into_iter().map(&mut take).collect::<Result<_, _>>()?;
        if slots.iter().any(Option::is_some) {
            return Err(Fatal::Invariant(format!("the batch for index {next_index} left a request unanswered")));
        }
        if outcome.lost_kept {
            // Those batches' entries apply from the log when they commit.
            self.writes.in_flight.iter_mut().for_each(|flight| flight.transaction_open = false);
        }
        let raft = &self.raw.raft;
        let still_ours = self.role == StateRole::Leader
            && raft.term == term
            && raft.raft_log.last_index() + 1 == next_index
            && raft.lead_transferee.is_none();
        if !executed.is_empty() && !still_ours && self.sm_mut()?.batch_open() {
            tracing::debug!(node = self.id.0, next_index, term, "batch came back too late to propose: undone");
            self.sm_mut()?.rollback_batch()?;
        }
        if self.role != StateRole::Leader {
            let result = Err(WriteError::NotLeader { leader: self.leader() });
            let unproposed = executed.iter().map(|(waiting, ..)| waiting).chain(not_run.iter().map(|(w, _)| w));
            for waiting in unproposed {
                answer_all(&mut self.outputs, waiting.callers.tokens(), &result);
            }
            self.writes.defer_to_last(deferred, &mut self.outputs);
            return Ok(());
        }
        let requeue = |(waiting, (statements, restore)): (Executing, Body)| QueuedWrite {
            callers: waiting.callers,
            statements,
            key: waiting.key,
            restore,
        };
        let mut back: Vec<QueuedWrite> = Vec::new();
        if still_ours {
            self.writes.next_batch_requests_max = outcome.next_batch_requests_max;
        } else {
            // Run again in a later batch, at the index it will really have.
            back.extend(executed.drain(..).map(|(waiting, _, body)| requeue((waiting, body))));
        }
        back.extend(not_run.into_iter().map(requeue));
        for queued in back.into_iter().rev() {
            self.writes.queue.push_front(queued);
        }
        if executed.is_empty() {
            self.writes.defer_to_last(deferred, &mut self.outputs);
            return Ok(());
        }
        let waiters = executed
            .into_iter()
            .map(|(waiting, results, _)| Waiter {
                request_id: waiting.request_id,
                callers: waiting.callers,
                results,
                key: waiting.key,
            })
            .collect();
        self.propose_batch(outcome.batch, waiters, deferred, next_index)
    }

    fn propose_batch(
        &mut self,
        mut batch: WriteBatch,
        waiters: Vec<Waiter>,
        deferred: Vec<Deferred>,
        next_index: u64,
    ) -> Result<(), Fatal> {
        batch.proposer = self.id.0;
        batch.proposed_unix_ms = self.config.clock_epoch_unix_ms.saturating_add(self.now.as_millis() as u64);
        let command = deeb_proto::Command { kind: Some(deeb_proto::command::Kind::WriteBatch(batch)) };
        // A restore piece's batch holds no transaction: every replica, this
        // one too, applies it from the entry.
        let transaction_open = self.sm_mut()?.batch_open();
        if let Err(error) = self.raw.propose(Vec::new(), command.encode_to_vec()) {
            tracing::debug!(node = self.id.0, %error, "proposal refused");
            if transaction_open {
                self.sm_mut()?.rollback_batch()?;
            }
            let result = Err(WriteError::NotLeader { leader: self.leader() });
            for waiter in &waiters {
                answer_all(&mut self.outputs, waiter.callers.tokens(), &result);
            }
            self.writes.defer_to_last(deferred, &mut self.outputs);
            return Ok(());
        }
        let index = self.raw.raft.raft_log.last_index();
        if index != next_index {
            return Err(Fatal::Invariant(format!("a batch executed for index {next_index} was proposed at {index}")));
        }
        if transaction_open {
            self.sm_mut()?.keep_batch()?;
        }
        let term = self.raw.raft.term;
        let flight = InFlight { index, term, transaction_open, answered: false, requests: waiters, deferred };
        self.writes.in_flight.push_back(flight);
        Ok(())
    }
}

impl Writes {
    pub(super) fn new(match_index_only: bool) -> Self {
        Self { match_index_only, ..Self::default() }
    }

    /// The batch away on the worker, if any.
    pub(super) fn executing(&self) -> Option<&ExecutingBatch> {
        self.executing.as_ref()
    }

    /// True while a batch of ours is proposed and not yet applied with
    /// its transaction no longer open (it applies from the log): nothing
    /// may execute until it has.
    pub(super) fn has_in_flight_without_transaction(&self) -> bool {
        self.in_flight.iter().any(|flight| !flight.transaction_open)
    }

    /// True if one of our batches of a term before `term` is in flight
    /// with its transaction open.
    pub(super) fn has_open_batch_before(&self, term: u64) -> bool {
        self.in_flight.iter().any(|flight| flight.transaction_open && flight.term < term)
    }

    /// True if the next batch may execute on top of ours in flight, in
    /// their open transaction: fewer than `max` of them, all still in it
    /// and of this `term`, the last of them the log's last entry (nothing
    /// else appended since, so the new batch's entry follows them), not
    /// all committed (then they are about to apply, and the next batch
    /// waits for that), and at least as many requests queued as the last
    /// of them holds. That last
    /// rule keeps batches large where the CPU, not the round trip, is the
    /// limit: on two cores, 64 writers over three nodes made 0.066 entries
    /// per write and 10-20% fewer writes/s without it (issue 15's note);
    /// where requests queue faster than entries commit, batches overlap.
    fn may_pile_on(&self, term: u64, last_index: u64, committed: u64, max: usize) -> bool {
        self.in_flight.len() < max
            && self.in_flight.iter().all(|flight| flight.transaction_open && flight.term == term)
            && self.in_flight.back().is_some_and(|last| {
                last.index == last_index && committed < last_index && self.queue.len() >= last.requests.len()
            })
    }

    /// Answers the clients of our batches whose entries are among the newly
    /// committed `entries`, while their transaction is open: the results
    /// are known from executing them and each entry is durable on a
    /// quorum, so they need not wait for the commit on the worker (nor,
    /// pipelined, for the later batches of the same transaction). The
    /// index and term identify the entry: only this leader wrote entries
    /// of its term. Every read that must see them waits until they applied
    /// (ReadIndex reads for their index; lease and stale reads on the
    /// leader for the committed one).
    pub(super) fn answer_committed(&mut self, entries: &[raft::eraftpb::Entry], outputs: &mut VecDeque<Output>) {
        let Some((first, last)) = entries.first().zip(entries.last()) else { return };
        let index_only = self.match_index_only;
        let committed = self.in_flight.iter_mut().filter(|flight| {
            flight.transaction_open && !flight.answered && (first.index..=last.index).contains(&flight.index)
        });
        for flight in committed {
            let entry = &entries[(flight.index - first.index) as usize];
            if entry.index == flight.index && (entry.term == flight.term || index_only) {
                flight.answer_applied(outputs);
            }
        }
    }

    /// Where applying must pause, given the last committed entry: at the
    /// first of our batches in the open transaction while the last of them
    /// is not committed yet (they apply together, with one commit).
    pub(super) fn hold_from(&self, committed: u64) -> Option<u64> {
        let mut open = self.in_flight.iter().filter(|flight| flight.transaction_open);
        let first = open.next()?.index;
        let last = open.next_back().map_or(first, |flight| flight.index);
        (last > committed).then_some(first)
    }

    /// A retry of a request with `key` that is queued, executing or in
    /// flight waits
    /// for that request's answer; true if there was one.
    fn join_same_key(&mut self, key: &str, token: ClientToken) -> bool {
        let same = |other: &Option<String>| other.as_deref() == Some(key);
        if let Some(queued) = self.queue.iter_mut().find(|queued| same(&queued.key)) {
            queued.callers.retries.push(token);
            return true;
        }
        let executing = self.executing.as_mut().and_then(|batch| batch.requests.iter_mut().find(|w| same(&w.key)));
        if let Some(waiting) = executing {
            waiting.callers.retries.push(token);
            return true;
        }
        let mut in_flight = self.in_flight.iter_mut().filter(|flight| !flight.answered);
        if let Some(waiter) = in_flight.find_map(|flight| flight.requests.iter_mut().find(|w| same(&w.key))) {
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

    /// Plans applying a committed batch: commit our open transaction if it
    /// is the last of our batches in it (the earlier ones are in it too:
    /// nothing to do for them), otherwise apply its changesets; `answers`
    /// get our waiters' answers, to be given once it is applied, or, for
    /// our entry applied from the log (no transaction was open), `own` gets
    /// our waiters, answered with what applying it did.
    pub(super) fn plan_apply(
        &mut self,
        me: NodeId,
        batch: Box<WriteBatch>,
        applied: Applied,
        answers: &mut VecDeque<Output>,
        own: &mut Option<InFlight>,
    ) -> Result<Step, Fatal> {
        let Some(mut flight) = self.in_flight.pop_front_if(|flight| flight.index == applied.index) else {
            return Ok(Step::Apply(batch, applied));
        };
        if !flight.matches(applied.term, me, &batch) && !self.match_index_only {
            if flight.transaction_open {
                return Err(Fatal::Invariant(format!(
                    "open batch at {} but the log holds another entry",
                    applied.index
                )));
            }
            flight.answer_unknown(answers);
            return Ok(Step::Apply(batch, applied));
        }
        if !flight.transaction_open {
            *own = Some(flight);
            return Ok(Step::Apply(batch, applied));
        }
        flight.answer_applied(answers);
        match self.in_flight.front().is_some_and(|next| next.transaction_open) {
            true => Ok(Step::Kept(applied)),
            false => Ok(Step::Commit(applied)),
        }
    }

    /// An entry that is not our write batch applied at `index` (or a
    /// snapshot jumped past it): if we were waiting there, we cannot know
    /// whether our batch applied.
    pub(super) fn settle_not_ours(&mut self, index: u64, outputs: &mut VecDeque<Output>) -> Result<(), Fatal> {
        while let Some(mut flight) = self.in_flight.pop_front_if(|flight| flight.index <= index) {
            if flight.transaction_open {
                let open = flight.index;
                return Err(Fatal::Invariant(format!("open batch at {open} but the log holds another entry")));
            }
            if self.match_index_only && flight.index == index {
                flight.answer_applied(outputs);
            } else {
                flight.answer_unknown(outputs);
            }
        }
        Ok(())
    }

    /// Our batches in flight whose entries the log no longer holds (a
    /// later leader overwrote or cut them: they can never commit) get
    /// "outcome unknown", as [`Self::settle_not_ours`] answers when
    /// another entry applies at their index; pipelined, a later leader's
    /// log may end before the last of them and nothing may ever apply
    /// there. `term_at` gives the log's term at an index (0 past its end).
    /// Batches whose transaction is still open wait for it to be rolled
    /// back.
    pub(super) fn settle_overwritten(&mut self, term_at: impl Fn(u64) -> u64, outputs: &mut VecDeque<Output>) {
        let index_only = self.match_index_only;
        self.in_flight.retain_mut(|flight| {
            let gone = !flight.transaction_open && !index_only && term_at(flight.index) != flight.term;
            if gone {
                flight.answer_unknown(outputs);
            }
            !gone
        });
    }

    /// Failed requests of a batch that was not proposed: their errors wait
    /// for the last of our batches in flight (they ran on top of it), or go
    /// now if there is none or it is answered (committed).
    fn defer_to_last(&mut self, deferred: Vec<Deferred>, outputs: &mut VecDeque<Output>) {
        match self.in_flight.back_mut().filter(|flight| !flight.answered) {
            Some(last) => last.deferred.extend(deferred),
            None => deferred.iter().for_each(|failed| answer_all(outputs, failed.callers.tokens(), &failed.result)),
        }
    }

    /// Leadership lost: turn the queue away. (A batch still executing is
    /// answered when it comes back; the open transaction of one in flight
    /// is rolled back with [`Self::roll_back_in_flight`].)
    pub(super) fn on_leadership_lost(&mut self, leader: Option<NodeId>, outputs: &mut VecDeque<Output>) {
        for queued in self.queue.drain(..) {
            answer_all(outputs, queued.callers.tokens(), &Err(WriteError::NotLeader { leader }));
        }
        self.next_batch_requests_max = None;
    }

    /// Rolls back the open transaction of our batches in flight, if any (a
    /// leader that lost leadership: their entries may still commit; then
    /// they are applied from their changesets).
    pub(super) fn roll_back_in_flight(&mut self, sm: &mut impl StateMachine) -> Result<(), Fatal> {
        if self.in_flight.iter().any(|flight| flight.transaction_open) {
            sm.rollback_all()?;
            self.in_flight.iter_mut().for_each(|flight| flight.transaction_open = false);
        }
        Ok(())
    }
}

impl InFlight {
    fn matches(&self, term: u64, me: NodeId, batch: &WriteBatch) -> bool {
        term == self.term
            && batch.proposer == me.0
            && batch.writes.len() == self.requests.len()
            && batch.writes.iter().zip(&self.requests).all(|(write, waiter)| write.request_id == waiter.request_id)
    }

    fn answer_applied(&mut self, outputs: &mut VecDeque<Output>) {
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        for waiter in &self.requests {
            let result = Ok(WriteOutcome { results: waiter.results.clone(), index: LogIndex(self.index) });
            answer_all(outputs, waiter.callers.tokens(), &result);
        }
        self.answer_deferred(true, outputs);
    }

    /// The failed requests that waited for this entry: their errors if it
    /// `committed`, otherwise "not the leader".
    fn answer_deferred(&mut self, committed: bool, outputs: &mut VecDeque<Output>) {
        for failed in self.deferred.drain(..) {
            let result = match committed {
                true => failed.result,
                false => Err(WriteError::NotLeader { leader: None }),
            };
            answer_all(outputs, failed.callers.tokens(), &result);
        }
    }

    /// Answers with what applying the entry did, request by request, if the
    /// state machine told ([`StateMachine::take_outcomes`]); otherwise with
    /// the results the batch's execution gave (unless they were given at
    /// its commit).
    pub(super) fn answer_outcomes(mut self, outcomes: Option<Outcomes>, outputs: &mut VecDeque<Output>) {
        let Some(outcomes) = outcomes.filter(|outcomes| outcomes.len() == self.requests.len()) else {
            return self.answer_applied(outputs);
        };
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        let index = LogIndex(self.index);
        for (waiter, outcome) in self.requests.iter().zip(outcomes) {
            let result = outcome.map(|results| WriteOutcome { results, index }).map_err(WriteError::Statement);
            answer_all(outputs, waiter.callers.tokens(), &result);
        }
        self.answer_deferred(true, outputs);
    }

    fn answer_unknown(&mut self, outputs: &mut VecDeque<Output>) {
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        for waiter in &self.requests {
            answer_all(outputs, waiter.callers.tokens(), &Err(WriteError::OutcomeUnknown));
        }
        self.answer_deferred(false, outputs);
    }
}
