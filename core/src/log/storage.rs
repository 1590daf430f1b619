//! raft-rs's [`Storage`] over the in-memory part of the [`LogStore`],
//! with the same semantics as raft-rs's `MemStorage`.

use raft::eraftpb::{Entry, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::LogStore;
use crate::disk::Disk;

impl<D: Disk> Storage for LogStore<D> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.state.hard_state.clone(), self.state.conf_state.clone()))
    }

    /// # Panics
    /// If `high` is past `last_index + 1` or below `low` (raft never asks).
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.state.first_index();
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let last = self.state.last_index();
        assert!(low <= high && high <= last + 1, "entries [{low}, {high}) out of bounds (last index {last})");
        let max_size = max_size.into();
        if low > self.evicted_through {
            let mut entries = self.state.entries[(low - first) as usize..(high - first) as usize].to_vec();
            raft::util::limit_size(&mut entries, max_size);
            return Ok(entries);
        }
        // Some were evicted: read them back one by one, no further than
        // the size limit allows (at least one, as `limit_size` keeps).
        let mut entries = Vec::new();
        let mut size = 0;
        for index in low..high {
            let entry = self.entry(index).map_err(|error| raft::Error::Store(StorageError::Other(Box::new(error))))?;
            size += u64::from(protobuf::Message::compute_size(&entry));
            if !entries.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let snapshot = &self.state.snapshot;
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        let first = self.state.first_index();
        if index < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.state.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.state.entries[(index - first) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.last_index())
    }

    /// The snapshot the log was compacted to, with empty data: the node
    /// streams the database file itself. Temporarily unavailable until
    /// there is one at or after `request_index`.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let metadata = &self.state.snapshot;
        if metadata.index == 0 || metadata.index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata.clone());
        Ok(snapshot)
    }
}
