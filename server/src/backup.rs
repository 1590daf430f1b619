//! Online backups: a consistent copy of the whole database, taken on the
//! node called while writes go on, streamed in bounded chunks with its
//! applied index and checksum. The copy is written to a file beside the
//! node's data (never held in memory), checksummed, streamed through a
//! bounded channel (a slow client holds back the reading, not memory), and
//! removed when the stream ends, however it ends.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use deeb_core::sql::Reader;

use crate::backend::BackendReader;
use deeb_proto::{BackupChunk, BackupFormat, BackupHeader};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::Status;

#[cfg(not(madsim))]
use crate::errors::to_status;
use crate::errors::ServerError;

/// Where a backup's chunks go: the gRPC response stream.
pub type BackupSender = mpsc::Sender<Result<BackupChunk, Status>>;

/// The directory, under a node's data directory, its backups are copied
/// into before they are streamed.
pub fn scratch_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("backup-scratch")
}

/// Removes copies a crash left behind (called as the node starts).
pub fn clear_scratch(data_dir: &Path) {
    let dir = scratch_dir(data_dir);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Copies the database from `reader` into `dir` (as SQL text too, for
/// `BackupFormat::Sql`) and streams it to `chunks` in pieces of at most
/// `chunk_bytes`, the first with the header. `running` is held until the
/// stream ends.
pub fn spawn(
    reader: BackendReader,
    (dir, running): (PathBuf, OwnedSemaphorePermit),
    (served_by, format): (u64, BackupFormat),
    chunk_bytes: usize,
    chunks: BackupSender,
) {
    #[cfg(not(madsim))]
    tokio::task::spawn_blocking(move || {
        let _running = running;
        let Some(reader) = reader.sqlite() else {
            let refusal = "the MySQL backend takes no backups through deeb: back up the node's MySQL server with \
                           mariadb-dump --single-transaction or mariadb-backup";
            let _ = chunks.blocking_send(Err(Status::failed_precondition(refusal)));
            return;
        };
        if let Err(error) = run(reader, &dir, (served_by, format), chunk_bytes, &chunks) {
            let _ = chunks.blocking_send(Err(to_status(error)));
        }
    });
    #[cfg(madsim)]
    {
        // The simulator has no threads and no backups to take.
        let _ = (reader, dir, running, served_by, format, chunk_bytes);
        let _ = chunks.try_send(Err(Status::unimplemented("backups are not simulated")));
    }
}

/// The copy, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg_attr(madsim, allow(dead_code))]
fn run(
    reader: &Reader,
    dir: &Path,
    (served_by, format): (u64, BackupFormat),
    chunk_bytes: usize,
    chunks: &BackupSender,
) -> Result<(), ServerError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let io = |what: &str, error: std::io::Error| ServerError::Internal(format!("backup {what}: {error}"));
    std::fs::create_dir_all(dir).map_err(|error| io("scratch directory", error))?;
    let number = NEXT.fetch_add(1, Ordering::Relaxed);
    let copy = Scratch(dir.join(format!("backup-{number}.db")));
    let applied_index = reader.copy_into(&copy.0).map_err(|error| ServerError::Internal(format!("backup: {error}")))?;
    let sent = match format {
        BackupFormat::Sqlite => copy,
        BackupFormat::Sql => {
            let text = Scratch(dir.join(format!("backup-{number}.sql")));
            dump_to(&copy.0, &text.0)?;
            text
        }
    };
    let total_bytes = std::fs::metadata(&sent.0).map_err(|error| io("size", error))?.len();
    let mut buffer = vec![0; chunk_bytes.max(1)];
    let mut crc32c = 0;
    let mut file = File::open(&sent.0).map_err(|error| io("read", error))?;
    loop {
        let read = file.read(&mut buffer).map_err(|error| io("read", error))?;
        if read == 0 {
            break;
        }
        crc32c = crc32c::crc32c_append(crc32c, &buffer[..read]);
    }
    let mut header = Some(BackupHeader { applied_index, total_bytes, crc32c, served_by });
    let mut file = File::open(&sent.0).map_err(|error| io("read", error))?;
    loop {
        let read = file.read(&mut buffer).map_err(|error| io("read", error))?;
        if read == 0 && header.is_none() {
            return Ok(());
        }
        let chunk = BackupChunk { header: header.take(), data: buffer[..read].to_vec() };
        // The client went away: stop reading, drop the copy.
        if chunks.blocking_send(Ok(chunk)).is_err() {
            return Ok(());
        }
    }
}

/// The copy at `copy` as SQL text in a file at `text` (written through a
/// buffer, row by row).
pub fn dump_to(copy: &Path, text: &Path) -> Result<(), ServerError> {
    let failed = |error: String| ServerError::Internal(format!("backup as SQL: {error}"));
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(copy, flags).map_err(|error| failed(error.to_string()))?;
    let file = File::create(text).map_err(|error| failed(error.to_string()))?;
    let mut out = std::io::BufWriter::new(file);
    deeb_core::sql::dump::dump(&conn, &mut out).map_err(|error| failed(error.to_string()))?;
    std::io::Write::flush(&mut out).map_err(|error| failed(error.to_string()))
}
