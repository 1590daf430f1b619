//! Running a query off the event loop, streaming its chunks through a
//! bounded channel so that a result larger than memory streams through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deeb_core::sql::QueryError;
use deeb_proto::{QueryChunk, Statement};
use tokio::sync::mpsc;
use tonic::Status;

use crate::backend::BackendReader as Reader;
use crate::errors::{to_status, ServerError};

/// Where a query's chunks go: the gRPC response stream.
pub type ChunkSender = mpsc::Sender<Result<QueryChunk, Status>>;

/// How to chunk a result.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLimits {
    pub rows_max: usize,
    pub bytes_max: usize,
    /// Stamped into every chunk's `served_by`.
    pub served_by: u64,
}

/// Set when the node shuts down: every running query stops at once.
pub type ShuttingDown = Arc<AtomicBool>;

/// Starts `statement` on `reader`, sending chunks (or one error) to `chunks`.
/// The query is stopped, and its thread and read transaction freed, when it
/// runs past `timeout`, when the receiver closes (the client went away),
/// or when the node shuts down.
///
/// This is the one place where real and simulated mode differ: for real, the
/// query first runs right here on the caller's task, for as long as SQLite
/// runs a thousand steps without asking for progress and while its result
/// fits one chunk (a point query: no hop to another thread); one that
/// outgrows that is dropped and runs afresh on tokio's blocking pool,
/// blocking on the bounded channel (back-pressure). Run afresh, it reads in
/// a read transaction of its own, at a state no older than the first's.
/// madsim has no threads, so there it runs inline in a task and its chunks
/// are buffered before sending (simulated results are small).
pub fn spawn(
    reader: Reader,
    statement: Statement,
    limits: ChunkLimits,
    timeout: Duration,
    shutting_down: ShuttingDown,
    chunks: ChunkSender,
) {
    let deadline = Instant::now() + timeout;
    let watched = chunks.clone();
    let stop = move || stop_reason(deadline, timeout, &watched, &shutting_down);
    #[cfg(not(madsim))]
    if let Some(answer) = run_inline(&reader, &statement, limits) {
        // The channel is new and holds more than one item: never full.
        let _ = chunks.try_send(answer);
        return;
    }
    #[cfg(not(madsim))]
    tokio::task::spawn_blocking(move || {
        let result = run(&reader, &statement, limits, stop, &mut |chunk| chunks.blocking_send(Ok(chunk)).is_ok());
        if let Err(error) = result {
            let _ = chunks.blocking_send(Err(error));
        }
    });
    #[cfg(madsim)]
    tokio::spawn(async move {
        let mut buffered = Vec::new();
        let result = run(&reader, &statement, limits, stop, &mut |chunk| {
            buffered.push(Ok(chunk));
            true
        });
        buffered.extend(result.err().map(Err));
        for item in buffered {
            if chunks.send(item).await.is_err() {
                return;
            }
        }
    });
}

/// Runs `statement` on the caller's thread if it is short: its one chunk
/// (or its error), or `None` if it asked for progress or made a second
/// chunk (then it must run where it may take its time).
#[cfg(not(madsim))]
fn run_inline(reader: &Reader, statement: &Statement, limits: ChunkLimits) -> Option<Result<QueryChunk, Status>> {
    if !reader.runs_inline() {
        return None;
    }
    const TOO_LONG: &str = "too long to run inline";
    let (mut long, mut answer, mut made) = (false, None, 0);
    let stop = || {
        long = true;
        Some(TOO_LONG.to_owned())
    };
    let result = run(reader, statement, limits, stop, &mut |chunk| {
        made += 1;
        answer.get_or_insert(chunk);
        made == 1 // a second chunk: stop here
    });
    match result {
        _ if long || made > 1 => None,
        Ok(()) => answer.map(Ok),
        Err(status) => Some(Err(status)),
    }
}

/// Why a running query must stop now, if it must.
fn stop_reason(
    deadline: Instant,
    timeout: Duration,
    chunks: &ChunkSender,
    shutting_down: &AtomicBool,
) -> Option<String> {
    if shutting_down.load(Ordering::Relaxed) {
        Some("query stopped: the node is shutting down".into())
    } else if chunks.is_closed() {
        Some("query stopped: the client went away".into())
    } else if Instant::now() >= deadline {
        Some(format!("statement timeout: the query ran longer than {timeout:?}"))
    } else {
        None
    }
}

fn run(
    reader: &Reader,
    statement: &Statement,
    limits: ChunkLimits,
    stop: impl FnMut() -> Option<String>,
    sink: &mut dyn FnMut(QueryChunk) -> bool,
) -> Result<(), Status> {
    let mut stamped = |mut chunk: QueryChunk| {
        chunk.served_by = limits.served_by;
        sink(chunk)
    };
    let result: Result<(), QueryError> =
        reader.query_until(statement, limits.rows_max, limits.bytes_max, Box::new(stop), &mut stamped);
    result.map_err(|error| to_status(ServerError::Query(error)))
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use deeb_core::sql::{Applied, SqliteStateMachine};

    fn sql(text: &str) -> Statement {
        Statement { sql: text.to_owned(), ..Statement::default() }
    }

    /// A database whose table `t` holds 1..=1000.
    fn reader() -> (tempfile::TempDir, Reader) {
        let dir = tempfile::tempdir().expect("dir");
        let mut sm = SqliteStateMachine::open(&dir.path().join("state.db"), 7).expect("open");
        sm.begin_batch(1).expect("begin");
        let fill = "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000) \
                    SELECT i FROM c";
        let statements = [sql("CREATE TABLE t (x INTEGER PRIMARY KEY)"), sql(fill)];
        sm.execute_request(&statements).expect("runs").expect("executes");
        sm.commit_batch(Applied { index: 1, term: 1 }).expect("commit");
        let reader = Reader::Sqlite(sm.reader().expect("reader"));
        (dir, reader)
    }

    const LIMITS: ChunkLimits = ChunkLimits { rows_max: 100, bytes_max: 1 << 20, served_by: 3 };

    #[test]
    fn a_point_query_runs_inline_and_a_long_or_large_one_does_not() {
        let (_dir, reader) = reader();
        let chunk = run_inline(&reader, &sql("SELECT x FROM t WHERE x = 7"), LIMITS).expect("inline").expect("ok");
        assert_eq!((chunk.rows.len(), chunk.served_by, chunk.columns.len()), (1, 3, 1));
        let long = "SELECT count(*) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c \
                    WHERE i < 100000) SELECT i FROM c)";
        assert!(run_inline(&reader, &sql(long), LIMITS).is_none(), "asked for progress: off to the pool");
        assert!(run_inline(&reader, &sql("SELECT x FROM t LIMIT 150"), LIMITS).is_none(), "two chunks");
        let exactly_one = run_inline(&reader, &sql("SELECT x FROM t LIMIT 99"), LIMITS).expect("inline");
        assert_eq!(exactly_one.expect("ok").rows.len(), 99);
    }

    #[test]
    fn errors_found_inline_are_the_answer() {
        let (_dir, reader) = reader();
        let missing = run_inline(&reader, &sql("SELECT nope FROM t"), LIMITS).expect("answered inline");
        assert!(missing.expect_err("no such column").message().contains("nope"));
        let write = run_inline(&reader, &sql("DELETE FROM t"), LIMITS).expect("answered inline");
        assert!(write.is_err(), "a write refused");
    }
}
