// TEMPORARY: lets the node compile until the log store branch lands.
use raft::eraftpb::{Entry, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};

use super::LogStore;
use crate::disk::Disk;

impl<D: Disk> Storage for LogStore<D> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        todo!()
    }
    fn entries(&self, _: u64, _: u64, _: impl Into<Option<u64>>, _: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        todo!()
    }
    fn term(&self, _: u64) -> raft::Result<u64> {
        todo!()
    }
    fn first_index(&self) -> raft::Result<u64> {
        todo!()
    }
    fn last_index(&self) -> raft::Result<u64> {
        todo!()
    }
    fn snapshot(&self, _: u64, _: u64) -> raft::Result<Snapshot> {
        todo!()
    }
}
