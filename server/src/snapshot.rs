//! Streaming snapshot files between nodes in bounded chunks.

use deeb_core::node::SnapshotFile;
use deeb_proto::peer_client::PeerClient;
use deeb_proto::{SnapshotChunk, SnapshotHeader};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::channel;
use crate::event_loop::Input;
use crate::security::Security;

/// Streams `file` to the node at `address` and waits for its verdict.
///
/// # Errors
/// Connection or stream failure, an unreadable file, or the receiver
/// refusing the snapshot (the text says why).
pub async fn send(
    security: &Security,
    file: SnapshotFile,
    header: SnapshotHeader,
    address: &str,
    chunk_bytes_max: usize,
) -> Result<(), String> {
    let channel = channel(security, address, SNAPSHOT_TIMEOUT).await.map_err(|error| error.to_string())?;
    let mut client = PeerClient::new(channel);
    let (chunks, stream) = mpsc::channel(CHUNKS_IN_FLIGHT_MAX);
    let produce = produce_chunks(file, header, chunk_bytes_max, chunks);
    let call = client.install_snapshot(ReceiverStream::new(stream));
    let (produced, answer) = tokio::join!(produce, call);
    let ack = answer.map_err(|status| status.to_string())?.into_inner();
    produced?;
    if ack.accepted {
        Ok(())
    } else {
        Err(format!("refused by receiver: {}", ack.error))
    }
}

/// Reads the file chunk by chunk into the stream; the first chunk carries
/// the header (and is sent even for an empty file).
async fn produce_chunks(
    file: SnapshotFile,
    header: SnapshotHeader,
    chunk_bytes_max: usize,
    chunks: mpsc::Sender<SnapshotChunk>,
) -> Result<(), String> {
    let mut offset = 0u64;
    let mut header = Some(header);
    let mut reader = file.open().map_err(|error| error.to_string())?;
    loop {
        let data = reader.next_chunk(chunk_bytes_max).map_err(|error| error.to_string())?;
        if data.is_empty() && header.is_none() {
            return Ok(());
        }
        let length = data.len() as u64;
        let chunk = SnapshotChunk { header: header.take(), offset, data };
        if chunks.send(chunk).await.is_err() {
            return Err("receiver closed the stream".into());
        }
        if length == 0 {
            return Ok(());
        }
        offset += length;
    }
}

/// Receives a snapshot stream into a file through the loop's receiver and
/// hands the finished file to the loop. The chunk writes happen here, in the
/// RPC's task, not on the event loop (they are plain file writes of at most
/// one chunk each).
///
/// # Errors
/// A stream without a header, out-of-order or corrupt chunks, or a node
/// that refuses the snapshot; the text says which.
pub(crate) async fn receive(
    inputs: &mpsc::Sender<Input>,
    admit: impl Fn(u64, u64, u64) -> Result<(), String>,
    mut stream: Streaming<SnapshotChunk>,
) -> Result<(), String> {
    let first = next_chunk(&mut stream).await?.ok_or("empty snapshot stream")?;
    let header = first.header.clone().ok_or("the first snapshot chunk has no header")?;
    admit(header.from, header.from_identity, header.cluster_id)?;
    let (reply, answer) = oneshot::channel();
    inputs.send(Input::SnapshotStart { header, reply }).await.map_err(|_| "node shutting down")?;
    let mut receiver = answer.await.map_err(|_| "node shutting down")?.map_err(|error| error.to_string())?;
    receiver.write_chunk(first.offset, &first.data).map_err(|error| error.to_string())?;
    while let Some(chunk) = next_chunk(&mut stream).await? {
        receiver.write_chunk(chunk.offset, &chunk.data).map_err(|error| error.to_string())?;
    }
    let received = receiver.finish().map_err(|error| error.to_string())?;
    inputs.send(Input::SnapshotReceived { received }).await.map_err(|_| "node shutting down".to_owned())
}

/// The stream's next chunk. A stream that stalls ends the transfer here
/// (and dropping its receiver deletes the partial file).
async fn next_chunk(stream: &mut Streaming<SnapshotChunk>) -> Result<Option<SnapshotChunk>, String> {
    match tokio::time::timeout(CHUNK_TIMEOUT, stream.message()).await {
        Ok(message) => message.map_err(|status| status.to_string()),
        Err(_) => Err(format!("no snapshot chunk for {CHUNK_TIMEOUT:?}: transfer abandoned")),
    }
}

/// Chunks buffered between the file reader and the network.
const CHUNKS_IN_FLIGHT_MAX: usize = 4;
/// Bound on waiting for the next chunk of an incoming snapshot.
const CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bound on connecting to the receiver.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
