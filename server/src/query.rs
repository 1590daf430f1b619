//! Running a query off the event loop, streaming its chunks through a
//! bounded channel so that a result larger than memory streams through.

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

/// Starts `statement` on `reader`, sending chunks (or one error) to `chunks`.
/// A closed receiver (the client went away) stops the query.
///
/// This is the one place where real and simulated mode differ: for real, the
/// query runs on tokio's blocking pool and blocks on the bounded channel
/// (back-pressure); madsim has no threads, so there it runs inline in a task
/// and its chunks are buffered before sending (simulated results are small).
pub fn spawn(reader: Reader, statement: Statement, limits: ChunkLimits, chunks: ChunkSender) {
    #[cfg(not(madsim))]
    tokio::task::spawn_blocking(move || {
        let result = run(&reader, &statement, limits, &mut |chunk| chunks.blocking_send(Ok(chunk)).is_ok());
        if let Err(error) = result {
            let _ = chunks.blocking_send(Err(error));
        }
    });
    #[cfg(madsim)]
    tokio::spawn(async move {
        let mut buffered = Vec::new();
        let result = run(&reader, &statement, limits, &mut |chunk| {
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

fn run(
    reader: &Reader,
    statement: &Statement,
    limits: ChunkLimits,
    sink: &mut dyn FnMut(QueryChunk) -> bool,
) -> Result<(), Status> {
    let mut stamped = |mut chunk: QueryChunk| {
        chunk.served_by = limits.served_by;
        sink(chunk)
    };
    let result: Result<(), QueryError> = reader.query(statement, limits.rows_max, limits.bytes_max, &mut stamped);
    result.map_err(|error| to_status(ServerError::Query(error)))
}
