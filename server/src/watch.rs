//! The change stream (`Watch`): every committed row change from an index
//! on, read back from this node's log (`deeb_core::sql::changes`) and sent
//! through a small bounded channel, so a consumer that reads slowly holds
//! the reader back rather than growing the server's memory. It follows the
//! applied index until the consumer goes away, the node stops, or the log
//! is compacted past where the consumer is (a `compacted` error).

use std::sync::Arc;
use std::time::Duration;

use deeb_core::sql::changes::{entry_changes, Filter};
use deeb_proto::{Change, WatchRequest};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::errors::{to_status, ServerError};
use crate::handle::NodeHandle;

/// Change streams one node serves at once.
pub const WATCHES_MAX: usize = 64;
/// Changes buffered per stream before the reader waits for the consumer.
const CHANGES_BUFFERED: usize = 64;
/// Log bytes read back per call into the event loop.
const READ_BYTES: u64 = 1024 * 1024;
/// How often a stream that has caught up looks for new entries.
const CAUGHT_UP_POLL: Duration = Duration::from_millis(50);

/// The changes a stream sends, or the error that ends it.
pub type Changes = mpsc::Receiver<Result<Change, Status>>;

/// Starts a change stream for `request` on the node behind `handle`.
///
/// # Errors
/// As many streams as may run are running, or the first entry asked for
/// was compacted, or the node cannot be asked.
pub async fn start(handle: NodeHandle, request: &WatchRequest, running: &Arc<Semaphore>) -> Result<Changes, Status> {
    let Ok(permit) = running.clone().try_acquire_owned() else {
        return Err(Status::resource_exhausted(format!(
            "{WATCHES_MAX} change streams are open on this node already; retry later or on another node"
        )));
    };
    let filter = Filter::new(&request.tables, request.include_before_images);
    // The first read answers now, so a start below the compaction point
    // fails the call itself. From 0: what comes after the applied index.
    let first = match request.from_index {
        0 => {
            let log = handle.applied_entries(u64::MAX, 0).await.map_err(to_status)?;
            Read { next: log.applied + 1, entries: Vec::new() }
        }
        from => {
            let log = handle.applied_entries(from, READ_BYTES).await.map_err(to_status)?;
            Read { next: from, entries: log.entries }
        }
    };
    let (changes, receiver) = mpsc::channel(CHANGES_BUFFERED);
    tokio::spawn(follow(handle, filter, first, changes, permit));
    Ok(receiver)
}

/// Entries read and where the stream goes on from after them.
struct Read {
    next: u64,
    entries: Vec<deeb_core::node::LogEntry>,
}

/// Sends the changes of `read` and of every entry applied after it, until
/// the consumer goes away or an error ends the stream.
async fn follow(
    handle: NodeHandle,
    filter: Filter,
    mut read: Read,
    changes: mpsc::Sender<Result<Change, Status>>,
    _permit: OwnedSemaphorePermit,
) {
    loop {
        if read.entries.is_empty() {
            tokio::select! {
                () = changes.closed() => return,
                () = tokio::time::sleep(CAUGHT_UP_POLL) => {}
            }
        }
        for entry in std::mem::take(&mut read.entries) {
            read.next = entry.index + 1;
            if !entry.normal {
                continue;
            }
            let entry_changes = match entry_changes(entry.index, entry.term, &entry.data, &filter) {
                Ok(entry_changes) => entry_changes,
                Err(error) => {
                    let _ = changes.send(Err(to_status(ServerError::Internal(error)))).await;
                    return;
                }
            };
            for change in entry_changes {
                if changes.send(Ok(change)).await.is_err() {
                    return;
                }
            }
        }
        match handle.applied_entries(read.next, READ_BYTES).await {
            Ok(log) => read.entries = log.entries,
            // A busy node: look again.
            Err(ServerError::Overloaded | ServerError::Timeout(_)) => {}
            Err(error) => {
                let _ = changes.send(Err(to_status(error))).await;
                return;
            }
        }
    }
}
