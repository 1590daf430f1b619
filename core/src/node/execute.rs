//! A leader's batch, executed off the node: the state machine travels to
//! the host's worker with the queued requests, runs them inside one open
//! batch, and comes back with the entry to propose and the answers it
//! already has. Meanwhile the node goes on with raft (ticks, heartbeats,
//! votes, ReadIndex) and serves reads through its `Readers`.

use std::collections::VecDeque;

use deeb_proto::{op, Op, RestorePart, Statement, StatementResult, Write, WriteBatch};
use prost::Message as _;

use super::output::{WriteError, WriteOutcome};
use crate::ids::LogIndex;
use crate::sql::SqlError;
use crate::state_machine::StateMachine;

/// The leader's next batch, with the state machine it runs on. The host
/// takes it with `Node::batch_to_execute` after `Output::ExecuteBatch`,
/// runs [`BatchToExecute::execute`] on its worker and hands the result to
/// `Node::batch_executed`.
pub struct BatchToExecute<S> {
    pub(super) sm: S,
    pub(super) next_index: u64,
    pub(super) requests: Vec<Request>,
    pub(super) bytes_max: usize,
    /// It runs on top of batches kept in the open transaction (proposed,
    /// not yet committed).
    pub(super) on_top: bool,
    /// Mutation `replicate_statements`.
    pub(super) replicate_statements: bool,
    /// Mutation `pipeline_over_lost_transaction`.
    pub(super) over_lost_transaction: bool,
}

/// One queued client request, as the worker sees it.
pub(super) struct Request {
    pub(super) request_id: u64,
    pub(super) statements: Vec<Statement>,
    pub(super) key: Option<String>,
    /// A restore piece (the batch's only request).
    pub(super) restore: Option<RestorePart>,
}

/// A batch the worker ran, on its way back to the node.
pub struct ExecutedBatch<S> {
    pub(super) sm: S,
    pub(super) next_index: u64,
    pub(super) requests: Vec<Request>,
    pub(super) result: Result<Outcome, SqlError>,
}

/// What running a batch decided, by position in the requests.
#[derive(Default)]
pub(super) struct Outcome {
    /// Answered already: the recorded results of a key applied before, the
    /// request's own error, or a request too large for any batch.
    pub(super) answered: Vec<(usize, Result<WriteOutcome, WriteError>)>,
    /// The entry to propose; the open batch holds its effects. Empty (and
    /// the batch rolled back) if no request is in it.
    pub(super) batch: WriteBatch,
    /// The requests in `batch`, in order, with their results.
    pub(super) executed: Vec<(usize, Vec<StatementResult>)>,
    /// Requests a bound stopped before they ran: back to the queue's front,
    /// in order.
    pub(super) not_run: Vec<usize>,
    /// The batch outgrew its bytes bound and was undone: the next one takes
    /// at most this many requests.
    pub(super) next_batch_requests_max: Option<usize>,
    /// A request's SQL ended the whole transaction while the batch ran on
    /// top of kept ones: those are gone from it too (their entries must
    /// apply from the log), and the batch stopped (its other requests are
    /// in `not_run`: they must run on a state that holds the kept ones).
    pub(super) lost_kept: bool,
}

impl<S: StateMachine> BatchToExecute<S> {
    /// The client requests in the batch.
    pub fn requests(&self) -> usize {
        self.requests.len()
    }

    /// True if it runs on top of batches still in flight (the leader's
    /// pipeline), in their open transaction.
    pub fn on_top(&self) -> bool {
        self.on_top
    }

    /// Runs the requests in one open batch until a bound is reached (its
    /// row-change bytes, or as long as one statement may run). A request
    /// whose SQL fails is answered with its error; if its SQL ended the
    /// whole batch transaction, the requests before it run again in a new
    /// one (each such failure answers one request, so this ends), or, on
    /// top of kept batches that ended with it, in a later batch
    /// ([`Outcome::lost_kept`]).
    pub fn execute(mut self) -> ExecutedBatch<S> {
        let result = self.run();
        let Self { sm, next_index, requests, .. } = self;
        ExecutedBatch { sm, next_index, requests, result }
    }

    fn run(&mut self) -> Result<Outcome, SqlError> {
        let sm = &mut self.sm;
        sm.begin_batch(self.next_index)?;
        let mut outcome = Outcome::default();
        let mut to_run: VecDeque<usize> = (0..self.requests.len()).collect();
        let mut bytes = 0;
        while bytes < self.bytes_max && !sm.batch_time_spent() {
            let Some(at) = to_run.pop_front() else { break };
            let request = &self.requests[at];
            if request.restore.is_some() && !sm.takes_restores() {
                let refusal = "this cluster's backend does not restore SQLite files: load the data with SQL instead";
                outcome.answered.push((at, Err(WriteError::Invalid(refusal.into()))));
                continue;
            }
            if let Some(part) = &request.restore {
                // Nothing to run: every replica applies it from the entry.
                let write = Write { request_id: request.request_id, restore: Some(part.clone()), ..Write::default() };
                outcome.batch.writes.push(write);
                outcome.executed.push((at, Vec::new()));
                sm.rollback_batch()?;
                break;
            }
            if let Some(key) = &request.key {
                // Applied before (by this leader or another): the first answer.
                if let Some((index, results)) = sm.recorded_request(key)? {
                    outcome.answered.push((at, Ok(WriteOutcome { results, index: LogIndex(index) })));
                    continue;
                }
            }
            match sm.execute_request(&request.statements)? {
                Err(error) => {
                    outcome.answered.push((at, Err(WriteError::Statement(error))));
                    if !sm.batch_open() && self.on_top && !self.over_lost_transaction {
                        outcome.lost_kept = true;
                        (outcome.batch.writes, bytes) = (Vec::new(), 0);
                        for (earlier, _) in outcome.executed.drain(..).rev() {
                            to_run.push_front(earlier);
                        }
                        break;
                    }
                    if !sm.batch_open() {
                        sm.begin_batch(self.next_index)?;
                        for (earlier, _) in outcome.executed.drain(..).rev() {
                            to_run.push_front(earlier);
                        }
                        (outcome.batch.writes, bytes) = (Vec::new(), 0);
                    }
                }
                Ok(result) => {
                    let ops = match self.replicate_statements {
                        true => statements_as_text(&request.statements, result.ops),
                        false => result.ops,
                    };
                    let mut write = Write { request_id: request.request_id, ops, ..Write::default() };
                    if let Some(key) = &request.key {
                        sm.record_request(key, &result.results)?;
                        write.idempotency_key.clone_from(key);
                        write.results.clone_from(&result.results);
                    }
                    bytes += write.encoded_len();
                    outcome.batch.writes.push(write);
                    outcome.executed.push((at, result.results));
                }
            }
        }
        outcome.not_run = to_run.into();
        if bytes > self.bytes_max {
            sm.rollback_batch()?;
            outcome.batch.writes.clear();
            let executed: Vec<usize> = outcome.executed.drain(..).map(|(at, _)| at).collect();
            if let [alone] = executed[..] {
                let error =
                    WriteError::TooLarge { what: "row changes of the request", size: bytes, max: self.bytes_max };
                outcome.answered.push((alone, Err(error)));
            } else {
                // Undone: all back in order; the next batch stops before the last.
                outcome.next_batch_requests_max = Some(executed.len() - 1);
                outcome.not_run.splice(0..0, executed);
            }
        } else if outcome.executed.is_empty() && sm.batch_open() {
            sm.rollback_batch()?;
        }
        Ok(outcome)
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
