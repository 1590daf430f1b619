//! Running a query off the event loop, streaming its chunks through a
//! bounded channel so that a result larger than memory streams through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deeb_core::sql::{QueryError, Reader};
use deeb_proto::{QueryChunk, Statement};
use tokio::sync::mpsc;
use tonic::Status;

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
/// query runs on tokio's blocking pool and blocks on the bounded channel
/// (back-pressure); madsim has no threads, so there it runs inline in a task
/// and its chunks are buffered before sending (simulated results are small).
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
