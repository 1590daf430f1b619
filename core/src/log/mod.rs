//! The durable raft log: a segmented append-only file format over a [`Disk`].
//!
//! INTERFACE SKETCH: bodies are to be written; signatures may be refined.
//!
//! Every record is framed as `[len: u32 LE][crc32c: u32 LE][payload]`. On
//! recovery a bad record at the very end of the last segment (nothing valid
//! after it) is a torn tail and is cut; any other bad record is corruption
//! and `open` fails with [`LogError::Corrupt`] naming the file and offset.
//!
//! The store keeps the entries above the compaction point in memory (the log
//! is compacted below each snapshot, so this is bounded by the snapshot
//! interval), and implements raft-rs's [`raft::Storage`].

use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use thiserror::Error;

use crate::disk::{Disk, DiskError};

/// Opening or writing the log failed. Every variant stops the node.
#[derive(Debug, Error)]
pub enum LogError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("log corrupt in {file} at offset {offset}: {reason}")]
    Corrupt { file: String, offset: u64, reason: String },
}

/// What recovery found, for logging.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the tail of the last segment.
    pub torn_bytes_cut: u64,
    pub first_index: u64,
    pub last_index: u64,
}

/// The raft log and its metadata on a [`Disk`].
pub struct LogStore<D: Disk> {
    disk: D,
}

impl<D: Disk> LogStore<D> {
    /// Opens (or creates, on an empty disk) the log, recovering from a crash.
    pub fn open(disk: D, segment_bytes_max: u64) -> Result<(Self, Recovery), LogError> {
        let _ = (disk, segment_bytes_max);
        todo!()
    }

    /// True when the disk held no log (a brand-new node).
    pub fn is_empty(&self) -> bool {
        todo!()
    }

    /// Appends entries, first discarding any existing entries at or after
    /// `entries[0].index` (raft's conflicting suffix). Not durable until
    /// [`LogStore::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        let _ = entries;
        todo!()
    }

    /// Records the hard state. Not durable until [`LogStore::sync`].
    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), LogError> {
        let _ = hard_state;
        todo!()
    }

    /// Records the configuration. Not durable until [`LogStore::sync`].
    pub fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), LogError> {
        let _ = conf_state;
        todo!()
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        todo!()
    }

    /// Replaces the whole log with a snapshot point: every entry is dropped,
    /// the first index becomes `metadata.index + 1`, the conf state becomes
    /// the snapshot's, and the hard state's commit is raised to the index.
    /// Durable when it returns.
    pub fn apply_snapshot(&mut self, metadata: &SnapshotMetadata) -> Result<(), LogError> {
        let _ = metadata;
        todo!()
    }

    /// Drops entries up to and including `index` (which must be applied and
    /// covered by a snapshot whose metadata is given), deleting segment files
    /// that hold nothing newer. Durable when it returns.
    pub fn compact(&mut self, metadata: &SnapshotMetadata) -> Result<(), LogError> {
        let _ = metadata;
        todo!()
    }

    /// The metadata of the snapshot the log was last compacted to.
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        todo!()
    }

    pub fn hard_state(&self) -> &HardState {
        todo!()
    }

    pub fn conf_state(&self) -> &ConfState {
        todo!()
    }

    pub fn first_index(&self) -> u64 {
        todo!()
    }

    pub fn last_index(&self) -> u64 {
        todo!()
    }

    /// Gives the disk back (for crash tests).
    pub fn into_disk(self) -> D {
        self.disk
    }
}
