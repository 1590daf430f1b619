//! The durable raft log: a segmented append-only file format over a [`Disk`].
//!
//! Every record is framed as `[len: u32 LE][crc32c: u32 LE][payload]` (see
//! [`record`]). On recovery a bad record at the very end of the last segment
//! (nothing valid after it) is a torn tail and is cut; any other bad record
//! is corruption and `open` fails with [`LogError::Corrupt`] naming the file
//! and offset.
//!
//! Segments are named `log-<20-digit sequence>.seg`. Each starts with a
//! checkpoint (a compaction or restore record, the hard state and the conf
//! state), so deleting older segments loses nothing but covered entries.
//! Later records supersede earlier ones; an entry at index `i` replaces every
//! entry at or after `i`, exactly as raft's conflict rule does in memory.
//!
//! The store keeps the entries above the compaction point in memory, and
//! implements raft-rs's [`raft::Storage`]. Once the node has applied an
//! entry, [`LogStore::evict_applied`] drops its payload from memory: raft
//! then reads it back from its segment (a follower far behind), so what the
//! log holds in memory is bounded by what is not applied yet, not by the
//! snapshot interval times the entry size.

pub mod record;
mod state;
mod storage;

use std::collections::BTreeMap;

use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use thiserror::Error;

use crate::disk::{Disk, DiskError};
use state::{LogState, Replay};

pub use record::{decode_segment, decode_segment_skipping_checksums, DecodedSegment, Record};

/// Opening or writing the log failed. Every variant stops the node.
#[derive(Clone, Debug, Error)]
pub enum LogError {
    /// The disk failed; the store refuses further use.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Bytes on disk that a crash cannot explain.
    #[error("log corrupt in {file} at offset {offset}: {reason}")]
    Corrupt { file: String, offset: u64, reason: String },
    /// A record larger than [`record::PAYLOAD_BYTES_MAX`] was refused.
    #[error("log record of {bytes} bytes exceeds the limit of {} bytes", record::PAYLOAD_BYTES_MAX)]
    RecordTooLarge { bytes: usize },
}

/// What recovery found, for logging.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the tail of the last segment (a whole last segment
    /// whose checkpoint never completed counts too).
    pub torn_bytes_cut: u64,
    /// The first index after recovery (snapshot index + 1).
    pub first_index: u64,
    /// The last index after recovery.
    pub last_index: u64,
}

/// How [`LogStore::open_with`] reads the log back. The default is the
/// only correct setting; [`LogStore::open`] uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Mutant M17 (`Mutations::skip_record_checksums`): decode records
    /// without verifying their checksums (see
    /// [`decode_segment_skipping_checksums`]). Simulator only.
    pub skip_record_checksums: bool,
    /// The state machine's applied index: entries up to it are read back
    /// without their payload (as [`LogStore::evict_applied`] leaves them),
    /// so a restart does not hold the whole log in memory.
    pub evict_through: u64,
}

/// One segment file.
#[derive(Clone, Debug)]
struct Segment {
    sequence: u64,
    /// Current length of the file.
    bytes: u64,
    /// The highest entry index written to it (0 if none): the segment may
    /// be deleted once the log is compacted past it.
    max_entry_index: u64,
}

impl Segment {
    fn name(&self) -> String {
        segment_name(self.sequence)
    }
}

/// The file name of segment `sequence`.
pub fn segment_name(sequence: u64) -> String {
    format!("log-{sequence:020}.seg")
}

/// The sequence number of a segment file name, `None` for other files.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("log-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The raft log and its metadata on a [`Disk`].
pub struct LogStore<D: Disk> {
    disk: D,
    segment_bytes_max: u64,
    state: LogState,
    /// Oldest first; the last one is written to.
    segments: Vec<Segment>,
    /// The last segment has writes not yet synced.
    unsynced_writes: bool,
    /// The first error, returned again by every later write (fail-stop).
    failure: Option<LogError>,
    /// Where each entry in the log was last written.
    locations: BTreeMap<u64, Location>,
    /// Entries up to this index have their payload evicted from memory
    /// (never below the compaction point).
    evicted_through: u64,
}

/// Where an entry's record is: its segment, offset and framed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    sequence: u64,
    offset: u64,
    len: usize,
}

/// Records that entry `index` was written at `location`: a later write of
/// an index replaces it and every entry after it (raft's conflict rule).
fn locate(locations: &mut BTreeMap<u64, Location>, index: u64, location: Location) {
    locations.split_off(&index);
    locations.insert(index, location);
}

/// A segment read back from disk, before replay.
struct LoadedSegment {
    segment: Segment,
    decoded: DecodedSegment,
    /// Bytes to cut from its end (a torn tail).
    torn_bytes: u64,
}

/// The records a segment must start with.
fn checkpoint_problem(records: &[record::Located]) -> Option<String> {
    let kinds: Vec<&Record> = records.iter().take(3).map(|located| &located.record).collect();
    match kinds.as_slice() {
        [Record::Compact(_) | Record::Restore(_), Record::HardState(_), Record::ConfState(_)] => None,
        _ if kinds.len() < 3 => Some("segment ends inside its checkpoint".to_string()),
        _ => Some("segment does not start with a checkpoint".to_string()),
    }
}

/// Reads and decodes one segment, deciding whether its damage is a torn
/// tail (allowed only at the end of the last segment) or corruption.
fn load_segment<D: Disk>(
    disk: &D,
    sequence: u64,
    is_last: bool,
    options: OpenOptions,
) -> Result<LoadedSegment, LogError> {
    let name = segment_name(sequence);
    let bytes = disk.read(&name)?;
    let decoded =
        if options.skip_record_checksums { decode_segment_skipping_checksums(&bytes) } else { decode_segment(&bytes) };
    let corrupt = |offset, reason| LogError::Corrupt { file: name.clone(), offset, reason };
    if let Some(damage) = &decoded.damage {
        if !(is_last && damage.torn) {
            return Err(corrupt(damage.offset, damage.reason.clone()));
        }
    }
    if let Some(problem) = checkpoint_problem(&decoded.records) {
        // A last segment whose checkpoint never became durable was being
        // created when the node stopped; anything else is damage.
        let interrupted = is_last && decoded.records.len() < 3;
        if !interrupted {
            return Err(corrupt(0, problem));
        }
    }
    let torn_bytes = bytes.len() as u64 - decoded.valid_bytes;
    drop(bytes);
    let mut decoded = decoded;
    for located in &mut decoded.records {
        if let Record::Entry(entry) = &mut located.record {
            if entry.index <= options.evict_through {
                entry.data = Default::default();
                entry.context = Default::default();
            }
        }
    }
    let segment = Segment { sequence, bytes: decoded.valid_bytes, max_entry_index: 0 };
    Ok(LoadedSegment { segment, decoded, torn_bytes })
}

impl<D: Disk> LogStore<D> {
    /// Opens (or creates, on an empty disk) the log, recovering from a crash.
    ///
    /// # Errors
    /// [`LogError::Corrupt`] for damage a crash cannot explain,
    /// [`LogError::Disk`] if the disk fails.
    pub fn open(disk: D, segment_bytes_max: u64) -> Result<(Self, Recovery), LogError> {
        Self::open_with(disk, segment_bytes_max, OpenOptions::default())
    }

    /// [`LogStore::open`] with explicit [`OpenOptions`]; only the simulator's
    /// mutants need anything but the default.
    ///
    /// # Errors
    /// As [`LogStore::open`].
    pub fn open_with(disk: D, segment_bytes_max: u64, options: OpenOptions) -> Result<(Self, Recovery), LogError> {
        let mut sequences: Vec<u64> = disk.list()?.iter().filter_map(|name| parse_segment_name(name)).collect();
        sequences.sort_unstable();
        let mut loaded = Vec::with_capacity(sequences.len());
        for (position, &sequence) in sequences.iter().enumerate() {
            loaded.push(load_segment(&disk, sequence, position + 1 == sequences.len(), options)?);
        }
        let mut torn_bytes_cut = 0;
        let mut discarded = None;
        if loaded.last().is_some_and(|last| checkpoint_problem(&last.decoded.records).is_some()) {
            let last = loaded.pop().expect("checked above that there is a last segment");
            torn_bytes_cut += last.segment.bytes + last.torn_bytes;
            discarded = Some(last.segment.name());
        }
        let Replayed { state, segments, mut locations } = replay_segments(&mut loaded)?;
        let evicted_through = state.snapshot.index.max(options.evict_through.min(state.last_index()));
        locations = locations.split_off(&state.first_index());
        let mut store = Self {
            disk,
            segment_bytes_max,
            state,
            segments,
            unsynced_writes: false,
            failure: None,
            locations,
            evicted_through,
        };
        torn_bytes_cut += store.cut_damage(&loaded, discarded)?;
        store.state.check_invariants();
        let recovery = Recovery { torn_bytes_cut, first_index: store.first_index(), last_index: store.last_index() };
        tracing::info!(?recovery, segments = store.segments.len(), "log recovered");
        Ok((store, recovery))
    }

    /// Makes recovery's cuts durable: truncates the torn tail of the last
    /// segment and removes a last segment whose checkpoint never completed.
    fn cut_damage(&mut self, loaded: &[LoadedSegment], discarded: Option<String>) -> Result<u64, LogError> {
        let mut cut = 0;
        if let Some(name) = discarded {
            self.disk.remove(&name)?;
            self.disk.sync_dir()?;
        }
        if let Some(last) = loaded.last().filter(|last| last.torn_bytes > 0) {
            let name = last.segment.name();
            tracing::warn!(file = %name, offset = last.segment.bytes, bytes = last.torn_bytes, "cutting torn log tail");
            self.disk.truncate(&name, last.segment.bytes)?;
            self.disk.sync(&name)?;
            cut += last.torn_bytes;
        }
        Ok(cut)
    }

    /// True while the disk holds no log: a brand-new node, until the first
    /// write creates the first segment.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Appends entries, first discarding any existing entries at or after
    /// `entries[0].index` (raft's conflicting suffix). Not durable until
    /// [`LogStore::sync`].
    ///
    /// # Panics
    /// If the entries are not contiguous, start at or below the snapshot
    /// index, or leave a gap after the last index (a raft bug).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        self.check_usable()?;
        // Check before writing, so a bad call panics with nothing on disk.
        self.state.check_append(entries);
        let result = entries.iter().try_for_each(|entry| self.write(&Record::Entry(entry.clone())));
        self.fail_stop(result)?;
        self.state.append(entries);
        Ok(())
    }

    /// Records the hard state. Not durable until [`LogStore::sync`].
    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), LogError> {
        self.check_usable()?;
        let result = self.write(&Record::HardState(hard_state.clone()));
        self.fail_stop(result)?;
        self.state.hard_state = hard_state.clone();
        Ok(())
    }

    /// Records the configuration. Not durable until [`LogStore::sync`].
    pub fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), LogError> {
        self.check_usable()?;
        let result = self.write(&Record::ConfState(conf_state.clone()));
        self.fail_stop(result)?;
        self.state.conf_state = conf_state.clone();
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.check_usable()?;
        let result = self.sync_current();
        self.fail_stop(result)
    }

    /// Replaces the whole log with a snapshot point: every entry is dropped,
    /// the first index becomes `metadata.index + 1`, the conf state becomes
    /// the snapshot's, and the hard state's commit is raised to the index.
    /// Durable when it returns; a crash part way leaves the old log or this.
    pub fn apply_snapshot(&mut self, metadata: &SnapshotMetadata) -> Result<(), LogError> {
        self.check_usable()?;
        let restored = self.state.restored(metadata);
        let result = self.restore_on_disk(&restored);
        self.fail_stop(result)?;
        self.state = restored;
        self.locations.clear();
        self.evicted_through = self.state.snapshot.index;
        Ok(())
    }

    /// Drops entries up to and including `index` (which must be applied and
    /// covered by a snapshot whose metadata is given), deleting segment files
    /// that hold nothing newer. Durable when it returns. Compacting to an
    /// older point than the current one does nothing.
    ///
    /// # Panics
    /// If `metadata.index` is past the last index.
    pub fn compact(&mut self, metadata: &SnapshotMetadata) -> Result<(), LogError> {
        self.check_usable()?;
        if metadata.index <= self.state.snapshot.index {
            return Ok(());
        }
        self.state.check_compact(metadata);
        let result = self.compact_on_disk(metadata);
        self.fail_stop(result)?;
        self.state.compact(metadata);
        self.locations = self.locations.split_off(&self.state.first_index());
        self.evicted_through = self.evicted_through.max(metadata.index);
        Ok(())
    }

    /// Drops from memory the payload of the entries up to `applied` (the
    /// node applied them; raft reads them back from disk if it needs them
    /// again). Entries are on disk from the moment they are appended.
    pub fn evict_applied(&mut self, applied: u64) {
        let through = applied.min(self.state.last_index());
        let first = self.state.first_index();
        for index in self.evicted_through.max(first - 1) + 1..=through {
            let entry = &mut self.state.entries[(index - first) as usize];
            entry.data = Default::default();
            entry.context = Default::default();
        }
        self.evicted_through = self.evicted_through.max(through);
    }

    /// The entry at `index` (in the log), read back from its segment if
    /// its payload was evicted.
    fn entry(&self, index: u64) -> Result<Entry, LogError> {
        let in_memory = &self.state.entries[(index - self.state.first_index()) as usize];
        if index > self.evicted_through {
            return Ok(in_memory.clone());
        }
        let name_of = |location: &Location| segment_name(location.sequence);
        let corrupt = |file: String, offset: u64, reason: String| LogError::Corrupt { file, offset, reason };
        let location = self.locations.get(&index).ok_or_else(|| {
            corrupt("<no segment>".to_string(), 0, format!("no location recorded for evicted entry {index}"))
        })?;
        let bytes = self.disk.read_at(&name_of(location), location.offset, location.len)?;
        let decoded = decode_segment(&bytes);
        match decoded.records.into_iter().next().map(|located| located.record) {
            Some(Record::Entry(entry)) if entry.index == index && entry.term == in_memory.term => Ok(entry),
            other => Err(corrupt(
                name_of(location),
                location.offset,
                format!("expected entry {index} (term {}) there, found {other:?}", in_memory.term),
            )),
        }
    }

    /// The metadata of the snapshot the log was last compacted to.
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.state.snapshot
    }

    /// The last recorded hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.state.hard_state
    }

    /// The last recorded conf state.
    pub fn conf_state(&self) -> &ConfState {
        &self.state.conf_state
    }

    /// The index of the first entry held (snapshot index + 1).
    pub fn first_index(&self) -> u64 {
        self.state.first_index()
    }

    /// The index of the last entry, or the snapshot index when there is none.
    pub fn last_index(&self) -> u64 {
        self.state.last_index()
    }

    /// The entries held, from [`LogStore::first_index`].
    pub fn in_memory_entries(&self) -> &[Entry] {
        &self.state.entries
    }

    /// The names of the segment files, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.iter().map(Segment::name).collect()
    }

    /// Gives the disk back (for crash tests).
    pub fn into_disk(self) -> D {
        self.disk
    }

    fn check_usable(&self) -> Result<(), LogError> {
        match &self.failure {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Remembers the first failure so every later call returns it.
    fn fail_stop(&mut self, result: Result<(), LogError>) -> Result<(), LogError> {
        if let Err(error) = &result {
            tracing::error!(%error, "log store failed; refusing further use");
            self.failure = Some(error.clone());
        }
        result
    }

    /// Writes one record to the current segment, starting a new segment
    /// first if there is none or the current one is full.
    fn write(&mut self, record: &Record) -> Result<(), LogError> {
        let bytes = record.encode().map_err(|bytes| LogError::RecordTooLarge { bytes })?;
        let needs_segment = self.segments.last().is_none_or(|last| last.bytes >= self.segment_bytes_max);
        if needs_segment {
            let checkpoint = checkpoint(Record::Compact(self.state.snapshot.clone()), &self.state);
            self.start_segment(&checkpoint)?;
        }
        let current = self.segments.last_mut().expect("a segment was just ensured");
        self.disk.append(&segment_name(current.sequence), &bytes)?;
        let location = Location { sequence: current.sequence, offset: current.bytes, len: bytes.len() };
        current.bytes += bytes.len() as u64;
        if let Record::Entry(entry) = record {
            current.max_entry_index = current.max_entry_index.max(entry.index);
            locate(&mut self.locations, entry.index, location);
        }
        self.unsynced_writes = true;
        Ok(())
    }

    fn sync_current(&mut self) -> Result<(), LogError> {
        if let (true, Some(current)) = (self.unsynced_writes, self.segments.last()) {
            self.disk.sync(&current.name())?;
            self.unsynced_writes = false;
        }
        Ok(())
    }

    /// Starts a new segment holding `checkpoint`, durably. The current one is
    /// synced first, so only the last segment can ever have a torn tail.
    fn start_segment(&mut self, checkpoint: &[Record]) -> Result<(), LogError> {
        self.sync_current()?;
        let mut bytes = Vec::new();
        for record in checkpoint {
            bytes.extend(record.encode().map_err(|bytes| LogError::RecordTooLarge { bytes })?);
        }
        let sequence = self.segments.last().map_or(1, |last| last.sequence + 1);
        let name = segment_name(sequence);
        self.disk.create(&name)?;
        self.disk.append(&name, &bytes)?;
        self.disk.sync(&name)?;
        self.disk.sync_dir()?;
        self.segments.push(Segment { sequence, bytes: bytes.len() as u64, max_entry_index: 0 });
        Ok(())
    }

    fn compact_on_disk(&mut self, metadata: &SnapshotMetadata) -> Result<(), LogError> {
        self.write(&Record::Compact(metadata.clone()))?;
        self.sync_current()?;
        // Only a prefix may go: a later segment's entries can be superseded
        // by an earlier segment's only through the segments between them.
        let older = self.segments.len() - 1;
        let deletable =
            self.segments[..older].iter().take_while(|segment| segment.max_entry_index <= metadata.index).count();
        self.remove_oldest(deletable)
    }

    fn restore_on_disk(&mut self, restored: &LogState) -> Result<(), LogError> {
        self.start_segment(&checkpoint(Record::Restore(restored.snapshot.clone()), restored))?;
        self.remove_oldest(self.segments.len() - 1)
    }

    /// Deletes the `count` oldest segments, durably.
    fn remove_oldest(&mut self, count: usize) -> Result<(), LogError> {
        if count == 0 {
            return Ok(());
        }
        for segment in &self.segments[..count] {
            self.disk.remove(&segment.name())?;
        }
        self.disk.sync_dir()?;
        self.segments.drain(..count);
        Ok(())
    }
}

/// The records that start a segment: `point` (a compaction to the current
/// snapshot, or a restore), then the hard and conf state.
fn checkpoint(point: Record, state: &LogState) -> [Record; 3] {
    [point, Record::HardState(state.hard_state.clone()), Record::ConfState(state.conf_state.clone())]
}

/// Replays the loaded segments in order into the log state.
/// What replaying the segments rebuilt.
struct Replayed {
    state: LogState,
    segments: Vec<Segment>,
    /// Where each entry was last written.
    locations: BTreeMap<u64, Location>,
}

/// Replays the loaded segments.
fn replay_segments(loaded: &mut [LoadedSegment]) -> Result<Replayed, LogError> {
    let mut replay = Replay::new();
    let mut segments = Vec::with_capacity(loaded.len());
    let mut locations = BTreeMap::new();
    for segment in loaded.iter_mut() {
        let name = segment.segment.name();
        let records = std::mem::take(&mut segment.decoded.records);
        let ends: Vec<u64> =
            records.iter().skip(1).map(|located| located.offset).chain([segment.segment.bytes]).collect();
        for (located, end) in records.into_iter().zip(ends) {
            if let Record::Entry(entry) = &located.record {
                segment.segment.max_entry_index = segment.segment.max_entry_index.max(entry.index);
                let len = usize::try_from(end - located.offset).expect("a record fits in memory");
                locate(
                    &mut locations,
                    entry.index,
                    Location { sequence: segment.segment.sequence, offset: located.offset, len },
                );
            }
            if let Record::Restore(_) = &located.record {
                locations.clear();
            }
            replay.apply(located.record).map_err(|reason| LogError::Corrupt {
                file: name.clone(),
                offset: located.offset,
                reason,
            })?;
        }
        segments.push(segment.segment.clone());
    }
    let file = segments.first().map_or_else(|| "<no segment>".to_string(), Segment::name);
    let state = replay.finish().map_err(|reason| LogError::Corrupt { file, offset: 0, reason })?;
    Ok(Replayed { state, segments, locations })
}

#[cfg(test)]
mod tests;
