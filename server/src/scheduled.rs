//! Scheduled backups (`--backup-interval`, `--backup-dir`, `--backup-keep`):
//! the leader takes a backup in every interval's slot (slot `n` starts at
//! Unix time `n × interval`) into a directory every node names (shared
//! storage: the nodes take turns as they lead), and keeps the last
//! `--backup-keep` with a manifest (`manifest.json`: each file's slot,
//! applied index, size, CRC32C and content digest).
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
//! Files are written as `FILE.partial`, synced and renamed; the manifest
//! the same way, after the file and before old files are removed.

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
    pub dir: PathBuf,
    pub keep: usize,
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
    /// The manifest in `dir` (empty if there is none yet).
    ///
    /// # Errors
    /// It cannot be read or parsed.
    pub fn load(dir: &Path) -> Result<Manifest, String> {
        match std::fs::read(dir.join(MANIFEST)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| format!("{MANIFEST}: {error}")),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(error) => Err(format!("{MANIFEST}: {error}")),
        }
    }

    fn store(&self, dir: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|error| error.to_string())?;
        write_durably(dir, MANIFEST, |path| std::fs::write(path, &text))
    }

    /// Checks the manifest against the directory: slots strictly rising
    /// and at most `last_slot`, at most `keep` entries, and each file there
    /// with the size and CRC32C recorded. `Err` names the first fault.
    ///
    /// # Errors
    /// What does not hold.
    pub fn verify(&self, dir: &Path, keep: usize) -> Result<(), String> {
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
            let (bytes, crc32c) =
                size_and_crc(&dir.join(&entry.file)).map_err(|error| format!("{}: {error}", entry.file))?;
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
/// again only at the next.
pub async fn run(schedule: Schedule, handle: NodeHandle, metrics: Metrics, scratch: PathBuf) {
    let interval = schedule.interval.max(Duration::from_secs(1));
    let mut failed_slot = None;
    loop {
        let slot = unix_now().as_secs() / interval.as_secs();
        if failed_slot != Some(slot) {
            match take(&schedule, slot, &handle, &scratch).await {
                Ok(Outcome::Taken(entry)) => {
                    let (file, index, bytes) = (&entry.file, entry.applied_index, entry.bytes);
                    tracing::info!(slot, %file, index, bytes, "scheduled backup");
                    metrics.scheduled_backup("taken");
                }
                Ok(Outcome::Unchanged) => {
                    tracing::debug!(slot, "scheduled backup skipped: nothing changed since the last");
                    metrics.scheduled_backup("unchanged");
                }
                Ok(Outcome::Handled | Outcome::NotLeader) => {}
                Err(error) => {
                    tracing::warn!(slot, %error, "scheduled backup failed; the next slot tries again");
                    metrics.scheduled_backup("failed");
                    failed_slot = Some(slot);
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
/// The read, the copy or the directory failed.
async fn take(schedule: &Schedule, slot: u64, handle: &NodeHandle, scratch: &Path) -> Result<Outcome, String> {
    let status = handle.status().await.map_err(|error| error.to_string())?;
    if status.role != Role::Leader {
        return Ok(Outcome::NotLeader);
    }
    let manifest = Manifest::load(&schedule.dir)?;
    if manifest.last_slot >= slot {
        return Ok(Outcome::Handled);
    }
    let reader = handle.read(Consistency::Linearizable).await.map_err(|error: ServerError| error.to_string())?;
    let (schedule, scratch, node) = (schedule.clone(), scratch.to_path_buf(), status.id.0);
    #[cfg(not(madsim))]
    let outcome = tokio::task::spawn_blocking(move || copy(&schedule, slot, &reader, &scratch, manifest, node))
        .await
        .map_err(|error| error.to_string())?;
    #[cfg(madsim)]
    let outcome = {
        // The simulator has no threads to copy files on.
        let _ = (schedule, scratch, node, reader, manifest);
        Err("scheduled backups are not simulated".to_owned())
    };
    outcome
}

/// The blocking part: copy, compare, write, record, prune.
#[cfg_attr(madsim, allow(dead_code))]
fn copy(
    schedule: &Schedule,
    slot: u64,
    reader: &deeb_core::sql::Reader,
    scratch: &Path,
    mut manifest: Manifest,
    node: u64,
) -> Result<Outcome, String> {
    std::fs::create_dir_all(scratch).map_err(|error| format!("scratch directory: {error}"))?;
    std::fs::create_dir_all(&schedule.dir).map_err(|error| format!("{}: {error}", schedule.dir.display()))?;
    let copied = scratch.join(format!("scheduled-{slot}.db"));
    let _removed = Removed(copied.clone());
    let applied_index = reader.copy_into(&copied).map_err(|error| format!("copy: {error}"))?;
    let (_, digest) = deeb_core::sql::file_digest(&copied).map_err(|error| format!("digest: {error}"))?;
    let digest = format!("{digest:016x}");
    if manifest.backups.last().is_some_and(|last| last.digest == digest) {
        manifest.last_slot = slot;
        manifest.store(&schedule.dir)?;
        return Ok(Outcome::Unchanged);
    }
    let file = format!("backup-{slot}-{applied_index}.db");
    write_durably(&schedule.dir, &file, |path| std::fs::copy(&copied, path).map(drop))?;
    let (bytes, crc32c) = size_and_crc(&schedule.dir.join(&file)).map_err(|error| format!("{file}: {error}"))?;
    let taken_at = unix_now().as_secs();
    let entry =
        Entry { file, slot, applied_index, bytes, crc32c: format!("{crc32c:08x}"), digest, taken_by: node, taken_at };
    manifest.backups.push(entry.clone());
    manifest.last_slot = slot;
    let dropped: Vec<Entry> = match manifest.backups.len().checked_sub(schedule.keep) {
        Some(excess) if excess > 0 => manifest.backups.drain(..excess).collect(),
        _ => Vec::new(),
    };
    manifest.store(&schedule.dir)?;
    for old in dropped {
        if let Err(error) = std::fs::remove_file(schedule.dir.join(&old.file)) {
            tracing::warn!(file = %old.file, %error, "an old scheduled backup could not be removed");
        }
    }
    Ok(Outcome::Taken(entry))
}

/// Writes `name` in `dir` through `write` on `name.partial`, synced, then
/// renamed into place and the directory synced.
fn write_durably(dir: &Path, name: &str, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), String> {
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
