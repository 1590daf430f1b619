//! Scheduled backups (`--backup-interval`, `--backup-dir` or `--backup-url`,
//! `--backup-keep`): the leader takes a backup in every interval's slot
//! (slot `n` starts at Unix time `n × interval`) into a directory or an
//! object store prefix every node names (shared storage: the nodes take
//! turns as they lead), and keeps the last `--backup-keep` with a manifest
//! (`manifest.json`: each file's slot, applied index, size, CRC32C and
//! content digest).
//!
//! - Only the leader takes them, from a linearizable read (a deposed
//!   leader's read fails, so two nodes never both take one).
//! - A slot is taken once: the manifest names the last slot handled, and a
//!   node that comes to lead mid-slot takes that slot's backup unless the
//!   manifest already has it, so a leader change neither loses nor repeats
//!   one.
//! - A backup whose content (the state digest, which leaves out deeb's
//!   applied index) equals the last one's is skipped: no file, the slot
//!   recorded as handled.
//! - Failures are logged and counted (`deeb_scheduled_backups{outcome}`),
//!   never fatal: the next slot tries again.
//!
//! In a directory, files are written as `FILE.partial`, synced and renamed;
//! the manifest the same way, after the file and before old files are
//! removed. In an object store each object appears whole when its upload
//! completes (a large file goes up in parts), in the same order.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deeb_core::{Consistency, Role};
use serde::{Deserialize, Serialize};

use crate::errors::ServerError;
use crate::handle::NodeHandle;
use crate::metrics::Metrics;

/// `--backup-*`.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub interval: Duration,
    pub to: Store,
    pub keep: usize,
}

/// Where scheduled backups go.
#[derive(Clone)]
pub enum Store {
    /// A directory (`--backup-dir`).
    Dir(PathBuf),
    /// An object store prefix (`--backup-url`).
    #[cfg(not(madsim))]
    Objects { url: String, store: std::sync::Arc<dyn object_store::ObjectStore>, prefix: object_store::path::Path },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Dir(dir) => write!(f, "{}", dir.display()),
            #[cfg(not(madsim))]
            Store::Objects { url, .. } => f.write_str(url),
        }
    }
}

/// Bytes an object store upload holds in memory at most (its parts).
#[cfg(not(madsim))]
const UPLOAD_PART_BYTES: usize = 8 << 20;

impl Store {
    /// The object store at `url` (`s3://BUCKET/PREFIX`), configured from
    /// the `AWS_*` environment variables (credentials, region,
    /// `AWS_ENDPOINT_URL` for an S3-compatible server, `AWS_ALLOW_HTTP`).
    ///
    /// # Errors
    /// Not a URL, or not one the object store client takes.
    #[cfg(not(madsim))]
    pub fn objects(url: &str) -> Result<Store, String> {
        let parsed = url::Url::parse(url).map_err(|error| format!("{url}: {error}"))?;
        if parsed.scheme() != "s3" {
            return Err(format!("{url}: an object store URL is s3://BUCKET/PREFIX (a directory: --backup-dir)"));
        }
        let options = std::env::vars().filter(|(key, _)| key.starts_with("AWS_")).map(|(k, v)| (k.to_lowercase(), v));
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, options).map_err(|error| format!("{url}: {error}"))?;
        Ok(Store::Objects { url: url.to_owned(), store: store.into(), prefix })
    }

    /// The manifest here (empty if there is none yet).
    ///
    /// # Errors
    /// It cannot be read or parsed.
    pub async fn manifest(&self) -> Result<Manifest, String> {
        match self.get(MANIFEST).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|error| format!("{MANIFEST}: {error}")),
            None => Ok(Manifest::default()),
        }
    }

    /// `name`'s contents, None if there is no such file (a backup whole in
    /// memory: for checks and small files).
    ///
    /// # Errors
    /// The store failed.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Store::Dir(dir) => match std::fs::read(dir.join(name)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(format!("{name}: {error}")),
            },
            #[cfg(not(madsim))]
            Store::Objects { store, prefix, .. } => match store.get(&prefix.child(name)).await {
                Ok(got) => {
                    got.bytes().await.map(|bytes| Some(bytes.to_vec())).map_err(|error| format!("{name}: {error}"))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(format!("{name}: {error}")),
            },
        }
    }

    /// Writes `name` with `bytes`, whole or not at all.
    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Store::Dir(dir) => write_durably(dir, name, |path| std::fs::write(path, &bytes)),
            #[cfg(not(madsim))]
            Store::Objects { store, prefix, .. } => {
                store.put(&prefix.child(name), bytes.into()).await.map(drop).map_err(|error| format!("{name}: {error}"))
            }
        }
    }

    /// Writes `name` with the file `local`'s contents, whole or not at
    /// all, never whole in memory.
    async fn upload(&self, name: &str, local: &Path) -> Result<(), String> {
        match self {
            Store::Dir(dir) => {
                let (dir, name, local) = (dir.clone(), name.to_owned(), local.to_path_buf());
                #[cfg(not(madsim))]
                let written = tokio::task::spawn_blocking(move || {
                    write_durably(&dir, &name, |path| std::fs::copy(&local, path).map(drop))
                })
                .await
                .map_err(|error| error.to_string())?;
                #[cfg(madsim)]
                let written = write_durably(&dir, &name, |path| std::fs::copy(&local, path).map(drop));
                written
            }
            #[cfg(not(madsim))]
            Store::Objects { store, prefix, .. } => {
                use tokio::io::AsyncWriteExt as _;
                let failed = |error: std::io::Error| format!("{name}: {error}");
                let mut upload = object_store::buffered::BufWriter::with_capacity(
                    store.clone(),
                    prefix.child(name),
                    UPLOAD_PART_BYTES,
                )
                .with_max_concurrency(2);
                let mut file = tokio::fs::File::open(local).await.map_err(failed)?;
                if let Err(error) = tokio::io::copy(&mut file, &mut upload).await {
                    let _ = upload.abort().await;
                    return Err(failed(error));
                }
                upload.shutdown().await.map_err(failed)
            }
        }
    }

    /// Removes `name`.
    async fn remove(&self, name: &str) -> Result<(), String> {
        match self {
            Store::Dir(dir) => std::fs::remove_file(dir.join(name)).map_err(|error| format!("{name}: {error}")),
            #[cfg(not(madsim))]
            Store::Objects { store, prefix, .. } => {
                store.delete(&prefix.child(name)).await.map_err(|error| format!("{name}: {error}"))
            }
        }
    }

    /// `name`'s size and CRC32C, read back whole (a buffer at a time).
    ///
    /// # Errors
    /// It cannot be read.
    pub async fn size_and_crc(&self, name: &str) -> Result<(u64, u32), String> {
        match self {
            Store::Dir(dir) => size_and_crc(&dir.join(name)).map_err(|error| format!("{name}: {error}")),
            #[cfg(not(madsim))]
            Store::Objects { store, prefix, .. } => {
                use tokio_stream::StreamExt as _;
                let failed = |error: object_store::Error| format!("{name}: {error}");
                let mut chunks = store.get(&prefix.child(name)).await.map_err(failed)?.into_stream();
                let (mut bytes, mut crc32c) = (0_u64, 0_u32);
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk.map_err(failed)?;
                    bytes += chunk.len() as u64;
                    crc32c = crc32c::crc32c_append(crc32c, &chunk);
                }
                Ok((bytes, crc32c))
            }
        }
    }
}

/// `manifest.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The last slot handled (taken or skipped as unchanged).
    pub last_slot: u64,
    /// The backups kept, oldest first.
    pub backups: Vec<Entry>,
}

/// One backup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub file: String,
    pub slot: u64,
    pub applied_index: u64,
    pub bytes: u64,
    /// CRC32C of the file, hex.
    pub crc32c: String,
    /// The state digest (deeb's own applied index left out), hex.
    pub digest: String,
    pub taken_by: u64,
    /// Unix time, seconds.
    pub taken_at: u64,
}

/// What one slot came to on this node.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Taken(Entry),
    /// The content equals the last backup's.
    Unchanged,
    /// The manifest has the slot already.
    Handled,
    NotLeader,
}

const MANIFEST: &str = "manifest.json";

impl Manifest {
    async fn store(&self, to: &Store) -> Result<(), String> {
        to.put(MANIFEST, serde_json::to_vec_pretty(self).map_err(|error| error.to_string())?).await
    }

    /// Checks the manifest against the store: slots strictly rising and at
    /// most `last_slot`, at most `keep` entries, and each file there with
    /// the size and CRC32C recorded. `Err` names the first fault.
    ///
    /// # Errors
    /// What does not hold.
    pub async fn verify(&self, store: &Store, keep: usize) -> Result<(), String> {
        if self.backups.len() > keep {
            return Err(format!("{} backups kept, more than {keep}", self.backups.len()));
        }
        for pair in self.backups.windows(2) {
            if pair[1].slot <= pair[0].slot {
                return Err(format!("slot {} listed after slot {}", pair[1].slot, pair[0].slot));
            }
        }
        if let Some(last) = self.backups.last().filter(|last| last.slot > self.last_slot) {
            return Err(format!("slot {} is past the last slot handled, {}", last.slot, self.last_slot));
        }
        for entry in &self.backups {
            let (bytes, crc32c) = store.size_and_crc(&entry.file).await?;
            if bytes != entry.bytes || format!("{crc32c:08x}") != entry.crc32c {
                return Err(format!("{}: {bytes} bytes, CRC32C {crc32c:08x}, not as recorded", entry.file));
            }
        }
        Ok(())
    }
}

/// Takes scheduled backups until the process ends. Each node looks every
/// second (at most), so one that comes to lead mid-slot takes that slot's
/// backup if its predecessor did not; a slot that failed here is tried
/// again only at the next, and one this node saw handled is not looked at
/// again (the manifest is read once a slot, not once a second).
pub async fn run(schedule: Schedule, handle: NodeHandle, metrics: Metrics, scratch: PathBuf) {
    let interval = schedule.interval.max(Duration::from_secs(1));
    let mut settled_slot = None;
    loop {
        let slot = unix_now().as_secs() / interval.as_secs();
        if settled_slot != Some(slot) {
            match take(&schedule, slot, &handle, &scratch).await {
                Ok(Outcome::Taken(entry)) => {
                    let (file, index, bytes) = (&entry.file, entry.applied_index, entry.bytes);
                    tracing::info!(slot, %file, index, bytes, "scheduled backup");
                    metrics.scheduled_backup("taken");
                    settled_slot = Some(slot);
                }
                Ok(Outcome::Unchanged) => {
                    tracing::debug!(slot, "scheduled backup skipped: nothing changed since the last");
                    metrics.scheduled_backup("unchanged");
                    settled_slot = Some(slot);
                }
                Ok(Outcome::Handled) => settled_slot = Some(slot),
                Ok(Outcome::NotLeader) => {}
                Err(error) => {
                    tracing::warn!(slot, %error, "scheduled backup failed; the next slot tries again");
                    metrics.scheduled_backup("failed");
                    settled_slot = Some(slot);
                }
            }
        }
        let next = Duration::from_secs((slot + 1) * interval.as_secs());
        let until_next = next.saturating_sub(unix_now());
        tokio::time::sleep(until_next.clamp(Duration::from_millis(50), Duration::from_secs(1))).await;
    }
}

/// Handles `slot` on this node.
///
/// # Errors
/// The read, the copy or the store failed.
async fn take(schedule: &Schedule, slot: u64, handle: &NodeHandle, scratch: &Path) -> Result<Outcome, String> {
    let status = handle.status().await.map_err(|error| error.to_string())?;
    if status.role != Role::Leader {
        return Ok(Outcome::NotLeader);
    }
    let mut manifest = schedule.to.manifest().await?;
    if manifest.last_slot >= slot {
        return Ok(Outcome::Handled);
    }
    let reader = handle.read(Consistency::Linearizable).await.map_err(|error: ServerError| error.to_string())?;
    let copied = scratch.join(format!("scheduled-{slot}.db"));
    let _removed = Removed(copied.clone());
    #[cfg(not(madsim))]
    let copy = {
        let (scratch, copied) = (scratch.to_path_buf(), copied.clone());
        tokio::task::spawn_blocking(move || copy(&reader, &scratch, &copied))
            .await
            .map_err(|error| error.to_string())?
    };
    #[cfg(madsim)]
    let copy = {
        // The simulator has no threads to copy files on.
        let _ = reader;
        Err::<Copy, _>("scheduled backups are not simulated".to_owned())
    };
    let Copy { applied_index, digest, bytes, crc32c } = copy?;
    let read = manifest.clone();
    if manifest.backups.last().is_some_and(|last| last.digest == digest) {
        if moved_on(&schedule.to, &read).await? {
            return Ok(Outcome::Handled);
        }
        manifest.last_slot = slot;
        manifest.store(&schedule.to).await?;
        return Ok(Outcome::Unchanged);
    }
    let file = format!("backup-{slot}-{applied_index}.db");
    schedule.to.upload(&file, &copied).await?;
    if moved_on(&schedule.to, &read).await? {
        // A node that led after this one wrote the manifest meanwhile
        // (this one was deposed during a long copy): its record stands.
        let _ = schedule.to.remove(&file).await;
        return Ok(Outcome::Handled);
    }
    let (taken_by, taken_at, crc32c) = (status.id.0, unix_now().as_secs(), format!("{crc32c:08x}"));
    let entry = Entry { file, slot, applied_index, bytes, crc32c, digest, taken_by, taken_at };
    manifest.backups.push(entry.clone());
    manifest.last_slot = slot;
    let dropped: Vec<Entry> = match manifest.backups.len().checked_sub(schedule.keep) {
        Some(excess) if excess > 0 => manifest.backups.drain(..excess).collect(),
        _ => Vec::new(),
    };
    manifest.store(&schedule.to).await?;
    for old in dropped {
        if let Err(error) = schedule.to.remove(&old.file).await {
            tracing::warn!(file = %old.file, %error, "an old scheduled backup could not be removed");
        }
    }
    Ok(Outcome::Taken(entry))
}

/// True if the manifest is no longer the one `read` (another node wrote
/// it since). Checked just before writing it: a deposed leader that took
/// long to copy does not overwrite its successor's record. (Not atomic: the
/// window is one read and one write, not a whole copy.)
async fn moved_on(store: &Store, read: &Manifest) -> Result<bool, String> {
    Ok(store.manifest().await? != *read)
}

/// A consistent copy in the scratch directory, and what it holds.
struct Copy {
    applied_index: u64,
    /// The state digest, hex.
    digest: String,
    bytes: u64,
    crc32c: u32,
}

/// The blocking part: the copy into `copied`, its digest, size and CRC32C.
#[cfg_attr(madsim, allow(dead_code))]
fn copy(reader: &crate::backend::BackendReader, scratch: &Path, copied: &Path) -> Result<Copy, String> {
    let reader = reader.sqlite().ok_or("scheduled backups need the SQLite backend")?;
    std::fs::create_dir_all(scratch).map_err(|error| format!("scratch directory: {error}"))?;
    let applied_index = reader.copy_into(copied).map_err(|error| format!("copy: {error}"))?;
    let (_, digest) = deeb_core::sql::file_digest(copied).map_err(|error| format!("digest: {error}"))?;
    let (bytes, crc32c) = size_and_crc(copied).map_err(|error| format!("the copy: {error}"))?;
    Ok(Copy { applied_index, digest: format!("{digest:016x}"), bytes, crc32c })
}

/// Writes `name` in `dir` (made if missing) through `write` on
/// `name.partial`, synced, then renamed into place and the directory synced.
fn write_durably(dir: &Path, name: &str, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let partial = dir.join(format!("{name}.partial"));
    let failed = |error: std::io::Error| format!("{}: {error}", dir.join(name).display());
    write(&partial).map_err(failed)?;
    std::fs::File::open(&partial).and_then(|file| file.sync_all()).map_err(failed)?;
    std::fs::rename(&partial, dir.join(name)).map_err(failed)?;
    std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(failed)
}

fn size_and_crc(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut file = std::fs::File::open(path)?;
    let (mut buffer, mut bytes, mut crc32c) = (vec![0; 1 << 20], 0_u64, 0_u32);
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok((bytes, crc32c));
        }
        bytes += read as u64;
        crc32c = crc32c::crc32c_append(crc32c, &buffer[..read]);
    }
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
