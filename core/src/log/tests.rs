//! Unit tests of the log store on a `MemDisk`.

use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use raft::{GetEntriesContext, Storage, StorageError};

use super::*;
use crate::disk::{FsDisk, MemDisk};

const SEGMENT_BYTES: u64 = 1 << 20;

pub fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, data: format!("data {index}/{term}").into_bytes().into(), ..Default::default() }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit, ..Default::default() }
}

fn conf_state(voters: &[u64]) -> ConfState {
    ConfState { voters: voters.to_vec(), ..Default::default() }
}

fn metadata(index: u64, term: u64, voters: &[u64]) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: protobuf::SingularPtrField::some(conf_state(voters)),
        ..Default::default()
    }
}

fn open(disk: &MemDisk, segment_bytes: u64) -> (LogStore<MemDisk>, Recovery) {
    LogStore::open(disk.clone(), segment_bytes).expect("open")
}

fn context() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// A store with entries 1..=9 (term 1, then 2 from 6) and some metadata.
fn populated(disk: &MemDisk, segment_bytes: u64) -> LogStore<MemDisk> {
    let (mut store, _) = open(disk, segment_bytes);
    store.append(&entries(1..=7, 1)).expect("append");
    store.set_conf_state(&conf_state(&[1, 2, 3])).expect("conf state");
    store.append(&entries(6..=9, 2)).expect("append with conflict");
    store.set_hard_state(&hard_state(2, 1, 5)).expect("hard state");
    store.sync().expect("sync");
    store
}

fn assert_same_state(left: &LogStore<MemDisk>, right: &LogStore<MemDisk>) {
    assert_eq!(left.state, right.state);
}

#[test]
fn empty_disk_gives_an_empty_store() {
    let (store, recovery) = open(&MemDisk::new(), SEGMENT_BYTES);
    assert!(store.is_empty());
    assert_eq!((store.first_index(), store.last_index()), (1, 0));
    assert_eq!(recovery, Recovery { torn_bytes_cut: 0, first_index: 1, last_index: 0 });
    assert_eq!(store.term(0).expect("term 0"), 0);
}

#[test]
fn state_round_trips_through_reopen() {
    let disk = MemDisk::new();
    let store = populated(&disk, SEGMENT_BYTES);
    assert!(!store.is_empty());
    assert_eq!(store.in_memory_entries(), [entries(1..=5, 1), entries(6..=9, 2)].concat());
    let (reopened, recovery) = open(&disk, SEGMENT_BYTES);
    assert_same_state(&store, &reopened);
    assert_eq!(recovery, Recovery { torn_bytes_cut: 0, first_index: 1, last_index: 9 });
    let initial = reopened.initial_state().expect("initial state");
    assert_eq!(initial.hard_state, hard_state(2, 1, 5));
    assert_eq!(initial.conf_state, conf_state(&[1, 2, 3]));
}

#[test]
fn round_trips_through_many_small_segments() {
    let disk = MemDisk::new();
    let store = populated(&disk, 64);
    assert!(store.segment_names().len() > 3, "{:?}", store.segment_names());
    let (reopened, _) = open(&disk, 64);
    assert_same_state(&store, &reopened);
}

#[test]
fn storage_follows_raft_semantics() {
    let disk = MemDisk::new();
    let mut store = populated(&disk, SEGMENT_BYTES);
    store.compact(&metadata(3, 1, &[1, 2, 3])).expect("compact");
    assert_eq!(store.first_index(), 4);
    assert_eq!(Storage::first_index(&store).expect("first"), 4);
    assert_eq!(Storage::last_index(&store).expect("last"), 9);
    assert_eq!(store.term(3).expect("snapshot term"), 1);
    assert_eq!(store.term(7).expect("term"), 2);
    assert!(matches!(store.term(2), Err(raft::Error::Store(StorageError::Compacted))));
    assert!(matches!(store.term(10), Err(raft::Error::Store(StorageError::Unavailable))));
    assert!(matches!(store.entries(3, 5, None, context()), Err(raft::Error::Store(StorageError::Compacted))));
    assert_eq!(store.entries(4, 10, None, context()).expect("entries"), store.in_memory_entries());
    assert_eq!(store.entries(5, 7, None, context()).expect("entries"), [entry(5, 1), entry(6, 2)]);
    assert_eq!(store.entries(4, 10, Some(0), context()).expect("at least one").len(), 1);
    assert!(store.entries(6, 6, None, context()).expect("empty range").is_empty());
    let snapshot = store.snapshot(0, 2).expect("snapshot");
    assert_eq!(snapshot.get_metadata(), &metadata(3, 1, &[1, 2, 3]));
    assert!(snapshot.data.is_empty());
    assert!(matches!(store.snapshot(4, 2), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))));
}

#[test]
#[should_panic(expected = "out of bounds")]
fn entries_past_the_end_panic() {
    let store = populated(&MemDisk::new(), SEGMENT_BYTES);
    let _ = store.entries(5, 11, None, context());
}

#[test]
fn no_snapshot_is_temporarily_unavailable() {
    let store = populated(&MemDisk::new(), SEGMENT_BYTES);
    assert!(matches!(store.snapshot(0, 2), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))));
}

#[test]
#[should_panic(expected = "raft bug")]
fn appending_with_a_gap_panics() {
    let mut store = populated(&MemDisk::new(), SEGMENT_BYTES);
    let _ = store.append(&[entry(11, 2)]);
}

#[test]
fn compaction_deletes_covered_segments_and_survives_reopen() {
    let disk = MemDisk::new();
    let mut store = populated(&disk, 64);
    let before = store.segment_names().len();
    store.compact(&metadata(8, 2, &[1, 2, 3])).expect("compact");
    assert!(store.segment_names().len() < before);
    assert_eq!(disk.list().expect("list"), store.segment_names());
    assert_eq!(store.in_memory_entries(), [entry(9, 2)]);
    let (reopened, _) = open(&disk, 64);
    assert_same_state(&store, &reopened);
}

#[test]
fn apply_snapshot_replaces_the_log() {
    let disk = MemDisk::new();
    let mut store = populated(&disk, 64);
    store.apply_snapshot(&metadata(20, 3, &[1, 2])).expect("apply snapshot");
    assert_eq!((store.first_index(), store.last_index()), (21, 20));
    assert_eq!(store.hard_state(), &hard_state(3, 1, 20));
    assert_eq!(store.conf_state(), &conf_state(&[1, 2]));
    assert_eq!(store.segment_names().len(), 1);
    store.append(&[entry(21, 3)]).expect("append after snapshot");
    store.sync().expect("sync");
    let (reopened, _) = open(&disk, 64);
    assert_same_state(&store, &reopened);
}

#[test]
fn apply_snapshot_is_atomic_across_crashes() {
    for operations in 0..8 {
        let disk = MemDisk::new();
        let mut store = populated(&disk, SEGMENT_BYTES);
        let old_state = store.state.clone();
        disk.fail_after_operations(operations);
        let result = store.apply_snapshot(&metadata(20, 3, &[1, 2]));
        let new_state = store.state.clone();
        disk.crash(operations);
        let (reopened, _) = open(&disk, SEGMENT_BYTES);
        if result.is_ok() {
            assert_eq!(reopened.state, new_state);
        } else {
            let recovered = &reopened.state;
            assert!(recovered == &old_state || recovered == &old_state.restored(&metadata(20, 3, &[1, 2])));
        }
    }
}

#[test]
fn torn_tail_is_cut() {
    let disk = MemDisk::new();
    let store = populated(&disk, SEGMENT_BYTES);
    let last = store.segment_names().pop().expect("a segment");
    let mut writer = disk.clone();
    let partial = Record::Entry(entry(10, 2)).encode().expect("encode");
    writer.append(&last, &partial[..partial.len() - 3]).expect("append partial record");
    writer.append(&last, &[0xAB; 5]).expect("append garbage");
    let (reopened, recovery) = open(&disk, SEGMENT_BYTES);
    assert_eq!(recovery.torn_bytes_cut, partial.len() as u64 + 2);
    assert_same_state(&store, &reopened);
    let (_, again) = open(&disk, SEGMENT_BYTES);
    assert_eq!(again.torn_bytes_cut, 0, "the cut was made durable");
}

/// Flips one bit of `name` at `offset`.
fn flip_bit(disk: &MemDisk, name: &str, offset: usize) {
    let mut writer = disk.clone();
    let mut bytes = writer.read(name).expect("read");
    bytes[offset] ^= 0x04;
    writer.truncate(name, 0).expect("truncate");
    writer.append(name, &bytes).expect("rewrite");
}

#[test]
fn flipped_bit_in_the_middle_of_the_last_segment_is_corruption() {
    let disk = MemDisk::new();
    let store = populated(&disk, SEGMENT_BYTES);
    let last = store.segment_names().pop().expect("a segment");
    let offset = Record::Compact(SnapshotMetadata::default()).encode().expect("encode").len() + 2;
    flip_bit(&disk, &last, offset);
    let error = LogStore::open(disk.clone(), SEGMENT_BYTES).err().expect("corruption detected");
    let message = error.to_string();
    assert!(matches!(error, LogError::Corrupt { .. }));
    assert!(message.contains(&last) && message.contains("offset"), "{message}");
}

#[test]
fn flipped_bit_in_an_older_segment_is_corruption() {
    let disk = MemDisk::new();
    let store = populated(&disk, 64);
    let names = store.segment_names();
    let bytes = disk.read(&names[1]).expect("read");
    flip_bit(&disk, &names[1], bytes.len() - 1);
    match LogStore::open(disk.clone(), 64) {
        Err(LogError::Corrupt { file, offset, reason }) => {
            assert_eq!(file, names[1]);
            assert!(offset > 0, "offset of the last record, got {offset}");
            assert!(reason.contains("checksum"), "{reason}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("expected corruption, opened fine"),
    }
}

/// A store with entries 1..=10, whose last record (entry 10) then has one
/// byte of its data garbled on disk: its checksum fails, its protobuf still
/// decodes. Returns the garbled record's length.
fn garbled_last_entry(disk: &MemDisk) -> usize {
    let mut store = populated(disk, SEGMENT_BYTES);
    store.append(&[entry(10, 2)]).expect("append");
    store.sync().expect("sync");
    let last = store.segment_names().pop().expect("a segment");
    let record_bytes = Record::Entry(entry(10, 2)).encode().expect("encode").len();
    let bytes = disk.read(&last).expect("read");
    let data_offset = bytes.len() - record_bytes
        + bytes[bytes.len() - record_bytes..].windows(4).position(|window| window == b"data").expect("entry data");
    flip_bit(disk, &last, data_offset);
    record_bytes
}

fn open_skipping_checksums(disk: &MemDisk) -> (LogStore<MemDisk>, Recovery) {
    let options = OpenOptions { skip_record_checksums: true, ..OpenOptions::default() };
    LogStore::open_with(disk.clone(), SEGMENT_BYTES, options).expect("open skipping checksums")
}

#[test]
fn skipping_checksums_accepts_a_garbled_last_record() {
    let disk = MemDisk::new();
    garbled_last_entry(&disk);
    let (store, recovery) = open_skipping_checksums(&disk);
    assert_eq!(recovery.torn_bytes_cut, 0);
    assert_eq!(store.last_index(), 10);
    let garbled = store.in_memory_entries().last().expect("entry 10");
    assert_eq!(garbled.data.as_ref(), b"`ata 10/2", "'d' with bit 0x04 flipped");
}

#[test]
fn garbled_last_record_is_cut_as_a_torn_tail() {
    let disk = MemDisk::new();
    let record_bytes = garbled_last_entry(&disk);
    let (store, recovery) = open(&disk, SEGMENT_BYTES);
    assert_eq!(recovery.torn_bytes_cut, record_bytes as u64);
    assert_eq!(store.last_index(), 9, "entry 10 failed its checksum");
    assert_eq!(store.in_memory_entries(), [entries(1..=5, 1), entries(6..=9, 2)].concat());
}

#[test]
fn skipping_checksums_cuts_at_an_undecodable_middle_record() {
    let disk = MemDisk::new();
    let store = populated(&disk, SEGMENT_BYTES);
    let last = store.segment_names().pop().expect("a segment");
    let kind_offset = Record::Compact(SnapshotMetadata::default()).encode().expect("encode").len() + 8;
    flip_bit(&disk, &last, kind_offset);
    assert!(matches!(LogStore::open(disk.clone(), SEGMENT_BYTES), Err(LogError::Corrupt { .. })));
    let (reopened, recovery) = open_skipping_checksums(&disk);
    assert!(reopened.is_empty(), "the checkpoint was cut, and the segment with it");
    assert!(recovery.torn_bytes_cut > 0);
}

#[test]
fn failed_sync_stops_the_store() {
    let disk = MemDisk::new();
    let mut store = populated(&disk, SEGMENT_BYTES);
    store.append(&[entry(10, 2)]).expect("append");
    disk.fail_next_sync();
    assert!(store.sync().is_err());
    assert!(store.sync().is_err(), "a failed sync is not retried");
    assert!(store.append(&[entry(11, 2)]).is_err());
    assert!(store.set_hard_state(&hard_state(3, 0, 5)).is_err());
    assert!(store.compact(&metadata(5, 1, &[1])).is_err());
}

#[test]
fn failed_append_stops_the_store() {
    let disk = MemDisk::new();
    let mut store = populated(&disk, SEGMENT_BYTES);
    disk.fail_after_bytes(10);
    assert!(store.append(&entries(10..=12, 2)).is_err());
    assert_eq!(store.last_index(), 9, "memory is unchanged by a failed write");
    assert!(store.sync().is_err());
}

#[test]
fn fs_disk_round_trip() {
    let temporary = tempfile::tempdir().expect("tempdir");
    let directory = temporary.path().join("log");
    let (mut store, _) = LogStore::open(FsDisk::open(&directory).expect("disk"), 128).expect("open");
    store.append(&entries(1..=20, 1)).expect("append");
    store.set_hard_state(&hard_state(1, 1, 15)).expect("hard state");
    store.compact(&metadata(10, 1, &[1])).expect("compact");
    store.sync().expect("sync");
    let (reopened, recovery) = LogStore::open(FsDisk::open(&directory).expect("disk"), 128).expect("reopen");
    assert_eq!(reopened.state, store.state);
    assert_eq!(recovery.first_index, 11);
    assert_eq!(recovery.last_index, 20);
}

/// Applied entries leave memory and come back from their segments, the
/// same as written (across segments, a conflict, a reopen and a
/// compaction), within the size limit raft asks for.
#[test]
fn evicted_entries_are_read_back_from_disk() {
    for segment_bytes in [SEGMENT_BYTES, 64] {
        let disk = MemDisk::new();
        let mut store = populated(&disk, segment_bytes);
        let all = [entries(1..=5, 1), entries(6..=9, 2)].concat();
        store.evict_applied(7);
        assert!(store.in_memory_entries()[..7].iter().all(|entry| entry.data.is_empty()), "evicted");
        assert_eq!(store.in_memory_entries()[7..], all[7..], "not applied yet: in memory");
        assert_eq!(store.entries(1, 10, None, context()).expect("entries"), all);
        assert_eq!(store.entries(2, 4, None, context()).expect("entries"), all[1..3]);
        assert_eq!(store.entries(1, 10, Some(0), context()).expect("at least one"), all[..1]);
        let two = u64::from(protobuf::Message::compute_size(&all[0]) * 2);
        assert_eq!(store.entries(1, 10, Some(two), context()).expect("two fit").len(), 2);
        assert_eq!(store.term(3).expect("term"), 1);
        let options = OpenOptions { evict_through: 6, ..OpenOptions::default() };
        let (mut reopened, _) = LogStore::open_with(disk.clone(), segment_bytes, options).expect("reopen");
        assert!(reopened.in_memory_entries()[..6].iter().all(|entry| entry.data.is_empty()), "read back evicted");
        assert_eq!(reopened.in_memory_entries()[6..], all[6..]);
        assert_eq!(reopened.entries(1, 10, None, context()).expect("after reopen"), all);
        reopened.evict_applied(9);
        assert_eq!(reopened.entries(1, 10, None, context()).expect("all evicted"), all);
        reopened.compact(&metadata(4, 1, &[1, 2, 3])).expect("compact");
        reopened.append(&entries(10..=11, 3)).expect("append");
        reopened.evict_applied(10);
        let expected = [all[4..].to_vec(), entries(10..=11, 3)].concat();
        assert_eq!(reopened.entries(5, 12, None, context()).expect("after compaction"), expected);
    }
}

/// A record that is not the entry the log expects there is corruption, not
/// a wrong entry handed to raft.
#[test]
fn an_evicted_entry_whose_bytes_changed_is_an_error() {
    let disk = MemDisk::new();
    let mut store = populated(&disk, SEGMENT_BYTES);
    store.evict_applied(9);
    let location = store.locations[&4];
    let name = segment_name(location.sequence);
    let mut bytes = disk.read(&name).expect("segment");
    let other = store.locations[&5];
    bytes.copy_within(other.offset as usize..other.offset as usize + other.len, location.offset as usize);
    let mut damaged = disk.clone();
    damaged.truncate(&name, 0).expect("truncate");
    damaged.append(&name, &bytes).expect("rewrite");
    let error = store.entries(4, 5, None, context()).expect_err("entry 5's record where 4's was");
    assert!(error.to_string().contains("expected entry 4"), "{error}");
}
