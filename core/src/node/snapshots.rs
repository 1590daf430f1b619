//! Snapshots: a consistent copy of the database at an applied index, taken
//! every `snapshot_interval_entries`, after which the log is compacted to it.
//! Snapshots move as files in bounded chunks, outside raft's messages: the
//! leader's `MsgSnapshot` carries only metadata, and the receiver steps it
//! into raft once the whole file has arrived and checked out.

use crate::state_machine::{SnapshotTaker, StateMachine, TakenSnapshot};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use deeb_proto::SnapshotHeader;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Message, MessageType, SnapshotMetadata};
use raft::SnapshotStatus;
use thiserror::Error;

use super::{Fatal, Node, NodeEvent, Output};
use crate::disk::Disk;
use crate::ids::NodeId;
use crate::sql::{Applied, SqlError};

/// A snapshot stream could not be taken.
#[derive(Debug, Error)]
pub enum SnapshotReceiveError {
    #[error("bad snapshot header: {0}")]
    BadHeader(String),
    #[error("chunk at offset {got}, expected {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("snapshot is {got} bytes, header said {expected}")]
    WrongSize { expected: u64, got: u64 },
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
}

/// A snapshot file on disk, ready to be streamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub index: u64,
    pub term: u64,
    pub bytes: u64,
    pub crc32c: u32,
}

impl SnapshotFile {
    /// Opens the file for one transfer. The reader holds it open, so a
    /// newer snapshot replacing (and deleting) this one does not cut the
    /// transfer short.
    ///
    /// # Errors
    /// The file is already gone (replaced by a newer snapshot: report the
    /// transfer as failed and let raft retry).
    pub fn open(&self) -> std::io::Result<SnapshotReader> {
        Ok(SnapshotReader { file: File::open(&self.path)? })
    }

    fn load(path: PathBuf, index: u64, term: u64) -> std::io::Result<Self> {
        let summary = FileSummary::read(&path)?;
        Ok(Self { path, index, term, bytes: summary.bytes, crc32c: summary.crc32c })
    }
}

/// A file's size and CRC32C, what a snapshot's header announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileSummary {
    bytes: u64,
    crc32c: u32,
}

impl FileSummary {
    /// Reads the whole file (a worker's job for a large one).
    fn read(path: &Path) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let (mut crc32c, mut bytes) = (0u32, 0u64);
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            crc32c = crc32c::crc32c_append(crc32c, &buffer[..read]);
            bytes += read as u64;
        }
        Ok(Self { bytes, crc32c })
    }
}

/// The snapshot `Output::TakeSnapshot` asks for, to take off the node: the
/// host takes it with `Node::snapshot_to_take`, runs
/// [`SnapshotToTake::take`] on its worker and hands the result to
/// `Node::snapshot_taken`.
pub struct SnapshotToTake<T> {
    taker: T,
    dest: PathBuf,
}

/// A snapshot taken (or not) on the worker, with its file's size and
/// checksum read there too.
pub struct SnapshotTaken {
    result: Result<(TakenSnapshot, FileSummary), String>,
}

impl<T: SnapshotTaker> SnapshotToTake<T> {
    /// Writes the snapshot file and reads it back for its checksum (the
    /// header a transfer sends): both off the node.
    pub fn take(self) -> SnapshotTaken {
        let Self { taker, dest } = self;
        let taken = taker.take(&dest).map_err(|error| error.to_string());
        let result = taken.and_then(|taken| Ok((taken, FileSummary::read(&dest).map_err(|e| e.to_string())?)));
        SnapshotTaken { result }
    }
}

/// A received snapshot to install, with the state machine: the host takes
/// it with `Node::snapshot_to_install` after `Output::InstallSnapshot`,
/// runs [`SnapshotToInstall::install`] on its worker (copying gigabytes
/// takes seconds) and hands the result to `Node::snapshot_installed`.
pub struct SnapshotToInstall<S> {
    sm: S,
    path: PathBuf,
}

/// A snapshot installed (or not) on the worker, with the state machine.
pub struct InstalledSnapshot<S> {
    sm: S,
    result: Result<Applied, SqlError>,
}

impl<S: StateMachine> SnapshotToInstall<S> {
    /// Replaces the state machine's contents with the snapshot file.
    pub fn install(mut self) -> InstalledSnapshot<S> {
        let result = self.sm.install_snapshot(&self.path);
        InstalledSnapshot { sm: self.sm, result }
    }
}

/// A snapshot raft accepted, away being installed: the ready that holds it
/// waits for it (raft must not be told it is persisted before it is).
pub(super) struct Installing {
    /// What the state machine had applied when it left.
    pub(super) applied: Applied,
    pub(super) ready: raft::Ready,
    path: PathBuf,
    summary: FileSummary,
}

/// One transfer's view of a snapshot file, read front to back.
pub struct SnapshotReader {
    file: File,
}

impl SnapshotReader {
    /// The next up to `max` bytes (empty at the end).
    ///
    /// # Errors
    /// A read failure.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Vec<u8>> {
        let mut chunk = Vec::with_capacity(max.min(1 << 20));
        (&mut self.file).take(max as u64).read_to_end(&mut chunk)?;
        Ok(chunk)
    }
}

/// Receives one snapshot stream into a file. `Send`, so the host may write
/// chunks off its event loop; hand the result to `Node::install_received`.
/// Dropped before [`SnapshotReceiver::finish`] succeeds (a stream that
/// failed or stalled past the host's timeout), it deletes its file.
pub struct SnapshotReceiver {
    header: SnapshotHeader,
    message: Message,
    /// The file being written; None once handed on.
    path: Option<PathBuf>,
    file: File,
    written: u64,
    crc32c: u32,
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

impl SnapshotReceiver {
    /// Appends the chunk at `offset` (chunks must come in order).
    ///
    /// # Errors
    /// Out of order, past the announced size, or a write failure.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), SnapshotReceiveError> {
        if offset != self.written {
            return Err(SnapshotReceiveError::OutOfOrder { expected: self.written, got: offset });
        }
        let total = self.written + data.len() as u64;
        if total > self.header.total_bytes {
            return Err(SnapshotReceiveError::WrongSize { expected: self.header.total_bytes, got: total });
        }
        self.file.write_all(data)?;
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        self.written = total;
        Ok(())
    }

    /// Checks size and checksum and makes the file durable.
    ///
    /// # Errors
    /// The stream was short or corrupt, or the file could not be synced.
    pub fn finish(mut self) -> Result<ReceivedSnapshot, SnapshotReceiveError> {
        if self.written != self.header.total_bytes {
            return Err(SnapshotReceiveError::WrongSize { expected: self.header.total_bytes, got: self.written });
        }
        if self.crc32c != self.header.crc32c {
            return Err(SnapshotReceiveError::Checksum);
        }
        self.file.sync_all()?;
        let path = self.path.take().expect("a receiver hands its file on once");
        let message = std::mem::take(&mut self.message);
        let summary = FileSummary { bytes: self.written, crc32c: self.crc32c };
        Ok(ReceivedSnapshot { message, path, index: self.header.index, summary })
    }
}

/// A snapshot file this node keeps, with the raft configuration as of its
/// index (what the log's metadata must say once compacted to it).
struct Held {
    file: SnapshotFile,
    conf_state: ConfState,
}

/// A complete, checked snapshot file waiting to be handed to raft.
pub struct ReceivedSnapshot {
    message: Message,
    path: PathBuf,
    index: u64,
    summary: FileSummary,
}

/// The snapshot files of one node: the one the log is compacted to (raft
/// sends that one) and any newer ones taken since, waiting until the lag
/// lets the log be compacted to them.
pub(super) struct Snapshots {
    dir: PathBuf,
    /// By index: the compaction point's, the next candidate, the newest.
    files: BTreeMap<u64, Held>,
    /// Received files by index, waiting for raft to accept them.
    incoming: BTreeMap<u64, (PathBuf, FileSummary)>,
    next_incoming: u64,
    /// Files renamed for the host to remove (see `remove_off_node`).
    next_removed: u64,
    /// A peer needs a snapshot newer than the latest (see `send_snapshot`).
    refresh_requested: bool,
    /// The host is taking a snapshot (`Output::TakeSnapshot`); compact to
    /// it at once when it comes back if it was a refresh.
    taking: Option<Taking>,
    /// The state machine is durable through this entry (its commits are
    /// not synced one by one): the log is never compacted past it, or a
    /// crash could leave the database behind the log's first entry.
    pub(super) durable_through: u64,
}

#[derive(Clone, Copy, Debug)]
struct Taking {
    refresh: bool,
}

impl Snapshots {
    /// Keeps the snapshot matching the log's compaction point and removes
    /// every other file (older snapshots, half-received ones).
    /// `durable_through`: what the state machine holds durably at open.
    pub(super) fn open(dir: &Path, metadata: &SnapshotMetadata, durable_through: u64) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let keep = file_name(metadata.index, metadata.term);
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if metadata.index > 0 && entry.file_name().to_str() == Some(keep.as_str()) {
                let file = SnapshotFile::load(entry.path(), metadata.index, metadata.term)?;
                files.insert(metadata.index, Held { file, conf_state: metadata.get_conf_state().clone() });
            } else {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
            incoming: BTreeMap::new(),
            next_incoming: 0,
            next_removed: 0,
            refresh_requested: false,
            taking: None,
            durable_through,
        })
    }
}

impl<D: Disk, S: StateMachine> Node<D, S> {
    /// The snapshot file at `index`, if this node has it, for streaming.
    pub fn snapshot_file(&self, index: u64) -> Option<SnapshotFile> {
        self.snapshots.files.get(&index).map(|held| held.file.clone())
    }

    /// The host finished (or failed) streaming a snapshot to `to`.
    pub fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.raw.report_snapshot(to.0, status);
        self.drive();
    }

    /// Starts receiving a snapshot stream.
    ///
    /// # Errors
    /// The header's raft message is not a snapshot for this node, or the
    /// file cannot be created.
    pub fn snapshot_receiver(&mut self, header: SnapshotHeader) -> Result<SnapshotReceiver, SnapshotReceiveError> {
        let bad = |reason: String| SnapshotReceiveError::BadHeader(reason);
        let message = Message::parse_from_bytes(&header.raft_message).map_err(|e| bad(e.to_string()))?;
        let metadata = message.get_snapshot().get_metadata();
        if message.get_msg_type() != MessageType::MsgSnapshot || message.to != self.id.0 {
            return Err(bad("not a snapshot message for this node".to_owned()));
        }
        if metadata.index != header.index || metadata.term != header.term || message.from == self.id.0 {
            return Err(bad("metadata does not match the header".to_owned()));
        }
        self.snapshots.next_incoming += 1;
        let name = format!("incoming-{}-{}.tmp", header.index, self.snapshots.next_incoming);
        let path = self.snapshots.dir.join(name);
        let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok(SnapshotReceiver { header, message, path: Some(path), file, written: 0, crc32c: 0 })
    }

    /// Hands a complete snapshot file to raft, which installs it if it is
    /// still newer than this node's state.
    pub fn install_received(&mut self, now: Duration, received: ReceivedSnapshot) {
        self.advance_clock(now);
        if self.installing.is_some() {
            self.deferred.push(super::DeferredInput::Snapshot(Box::new(received)));
            return;
        }
        if let Some((stale, _)) = self.snapshots.incoming.insert(received.index, (received.path, received.summary)) {
            let _ = self.remove_off_node(&stale);
        }
        self.note_peer_contact(&received.message, self.now);
        if let Err(error) = self.raw.step(received.message) {
            tracing::warn!(node = self.id.0, %error, "snapshot message refused");
        }
        self.drive();
        self.discard_stale_incoming();
    }

    /// Raft accepted a snapshot (the `ready` holding it): hands the state
    /// machine and the received file to the host's worker
    /// (`Output::InstallSnapshot`), which replaces the database with it
    /// atomically. The ready waits meanwhile, and so do raft's inputs (see
    /// `Node::deferred`); the node serves status and reads meanwhile.
    pub(super) fn start_install(&mut self, ready: raft::Ready) -> Result<(), Fatal> {
        let index = ready.snapshot().get_metadata().index;
        let Some((path, summary)) = self.snapshots.incoming.remove(&index) else {
            return Err(Fatal::Snapshot(format!("raft installs snapshot {index} but no file arrived")));
        };
        let Some(sm) = self.sm.take() else {
            return Err(Fatal::Invariant(format!("installing snapshot {index} while the state machine is away")));
        };
        if sm.batch_open() {
            self.sm = Some(sm);
            return Err(Fatal::Invariant(format!("installing snapshot {index} over an open batch")));
        }
        self.installing = Some(Installing { applied: sm.applied(), ready, path: path.clone(), summary });
        self.snapshot_to_install = Some(SnapshotToInstall { sm, path });
        self.outputs.push_back(Output::InstallSnapshot);
        Ok(())
    }

    /// The snapshot `Output::InstallSnapshot` announced, with the state
    /// machine, to install off the node; `None` if it was handed out.
    pub fn snapshot_to_install(&mut self) -> Option<SnapshotToInstall<S>> {
        self.snapshot_to_install.take()
    }

    /// The worker installed the snapshot (or failed to: the node stops).
    /// The log is then compacted to it and the ready that held it goes on.
    pub fn snapshot_installed(&mut self, now: Duration, installed: InstalledSnapshot<S>) {
        self.advance_clock(now);
        let InstalledSnapshot { sm, result } = installed;
        let Some(installing) = self.installing.take() else {
            self.stop(Fatal::Invariant("an installed snapshot came back that was never sent".into()));
            return;
        };
        self.sm = Some(sm);
        if self.fatal.is_some() {
            return;
        }
        let settled = result.map_err(Fatal::from).and_then(|applied| self.finish_install(applied, installing));
        if let Err(error) = settled {
            self.stop(error);
        }
        self.drive();
        self.replay_deferred();
    }

    fn finish_install(&mut self, applied: Applied, installing: Installing) -> Result<(), Fatal> {
        let Installing { ready, path, summary, .. } = installing;
        let metadata = ready.snapshot().get_metadata().clone();
        if applied.index != metadata.index || applied.term != metadata.term {
            return Err(Fatal::Snapshot(format!(
                "snapshot file holds {}/{} but raft says {}/{}",
                applied.index, applied.term, metadata.index, metadata.term
            )));
        }
        self.snapshots.durable_through = metadata.index;
        self.raw.mut_store().apply_snapshot(&metadata)?;
        self.writes.settle_not_ours(metadata.index, &mut self.outputs)?;
        let conf_state = metadata.get_conf_state().clone();
        self.adopt_snapshot_file(&path, metadata.index, metadata.term, conf_state, Some(summary)).map_err(io_fatal)?;
        self.drop_files_below(metadata.index).map_err(io_fatal)?;
        self.reload_members()?;
        self.observe_log_reset();
        self.observe(NodeEvent::SnapshotInstalled { index: metadata.index });
        tracing::info!(node = self.id.0, index = metadata.index, "installed snapshot");
        self.finish_ready(ready)
    }

    /// Takes a snapshot when enough entries were applied since the last,
    /// and compacts the log once the lag allows.
    ///
    /// The snapshot itself is taken by the host, off the node
    /// (`Output::TakeSnapshot`, answered with [`Node::snapshot_taken`]):
    /// the node goes on meanwhile, one snapshot at a time.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), Fatal> {
        let Some(sm) = self.sm.as_ref() else { return Ok(()) }; // Away: nothing was applied.
        let since = self.snapshots.files.last_key_value().map_or(0, |(index, _)| *index);
        let applied = sm.applied().index;
        if self.snapshots.taking.is_none() {
            // A peer needs a snapshot newer than the one the log is
            // compacted to. If one was taken already (at the interval, and
            // kept behind the compaction lag), compact to it so raft sends
            // it: without, a learner added after the compacted snapshot was
            // offered that one forever while nothing new was applied (seed
            // 140004907). Otherwise take one and compact to it once taken.
            if self.snapshots.refresh_requested && since > self.raw.store().snapshot_metadata().index {
                self.snapshots.refresh_requested = false;
                self.compact_to(since)?;
            }
            let refresh = self.snapshots.refresh_requested && applied > since;
            if refresh || applied >= since + self.config.snapshot_interval_entries {
                self.snapshots.refresh_requested = false;
                self.request_snapshot(refresh)?;
            }
        }
        self.compact_to(applied.saturating_sub(self.config.compaction_lag_entries))
    }

    /// Asks the host to take a snapshot into a temporary file, with a taker
    /// made now (the state machine may be away when the host asks for it).
    fn request_snapshot(&mut self, refresh: bool) -> Result<(), Fatal> {
        let taker = self.sm_ref()?.snapshot_taker()?;
        let dest = self.snapshots.dir.join(TAKING_FILE);
        let _ = fs::remove_file(&dest);
        self.snapshots.taking = Some(Taking { refresh });
        self.snapshot_to_take = Some(SnapshotToTake { taker, dest });
        self.outputs.push_back(Output::TakeSnapshot);
        Ok(())
    }

    /// The snapshot `Output::TakeSnapshot` asked for, to take off the node
    /// ([`SnapshotToTake::take`]); `None` if it was handed out already.
    pub fn snapshot_to_take(&mut self) -> Option<SnapshotToTake<S::Snapshots>> {
        self.snapshot_to_take.take()
    }

    /// The host took the snapshot an `Output::TakeSnapshot` asked for (or
    /// failed to: a broken disk stops the node). The file becomes the
    /// newest snapshot unless the log has moved past it meanwhile.
    pub fn snapshot_taken(&mut self, now: Duration, taken: SnapshotTaken) {
        self.advance_clock(now);
        let Some(taking) = self.snapshots.taking.take() else { return };
        if self.fatal.is_some() {
            return;
        }
        if let Err(error) = self.adopt_taken(taking, taken) {
            self.stop(error);
        }
        self.drive();
    }

    fn adopt_taken(&mut self, taking: Taking, taken: SnapshotTaken) -> Result<(), Fatal> {
        let (taken, summary) = taken.result.map_err(|error| Fatal::Snapshot(format!("taking a snapshot: {error}")))?;
        let dest = self.snapshots.dir.join(TAKING_FILE);
        let TakenSnapshot { applied, conf_state, durable } = taken;
        if durable {
            self.snapshots.durable_through = self.snapshots.durable_through.max(applied.index);
        }
        let compacted = self.raw.store().snapshot_metadata().index;
        if applied.index <= compacted || self.snapshots.files.contains_key(&applied.index) {
            // A snapshot installed meanwhile (or an equal one) is newer.
            self.remove_off_node(&dest).map_err(io_fatal)?;
            return Ok(());
        }
        let conf_state = match conf_state {
            Some(bytes) => ConfState::parse_from_bytes(&bytes)
                .map_err(|error| Fatal::Snapshot(format!("snapshot's conf state does not decode: {error}")))?,
            None => self.conf_state(),
        };
        self.adopt_snapshot_file(&dest, applied.index, applied.term, conf_state, Some(summary)).map_err(io_fatal)?;
        tracing::debug!(node = self.id.0, index = applied.index, "took snapshot");
        let limit = match taking.refresh {
            true => applied.index,
            false => self.applied().index.saturating_sub(self.config.compaction_lag_entries),
        };
        self.compact_to(limit)
    }

    /// Compacts the log to the newest snapshot at or below `limit`, if
    /// newer than the current compaction point, and drops older files.
    fn compact_to(&mut self, limit: u64) -> Result<(), Fatal> {
        // Never past what this node has applied: a snapshot taken while
        // entries were away being applied can already hold them (its read
        // transaction saw the worker's commits), but raft and the node have
        // not applied them yet (simulator seed 40005690). Nor past what the
        // state machine holds durably.
        let durable = match self.config.mutations.compact_before_durable() {
            true => u64::MAX,
            false => self.snapshots.durable_through,
        };
        let limit = limit.min(self.applied().index).min(durable);
        let Some((_, held)) = self.snapshots.files.range(..=limit).next_back() else { return Ok(()) };
        let (index, term) = (held.file.index, held.file.term);
        if index <= self.raw.store().snapshot_metadata().index {
            return Ok(());
        }
        let mut metadata = SnapshotMetadata { index, term, ..Default::default() };
        metadata.set_conf_state(held.conf_state.clone());
        self.raw.mut_store().compact(&metadata)?;
        self.drop_files_below(index).map_err(io_fatal)?;
        self.observe(NodeEvent::Compacted { index });
        tracing::debug!(node = self.id.0, index, "compacted the log");
        Ok(())
    }

    /// Deletes the snapshot files older than `index`.
    fn drop_files_below(&mut self, index: u64) -> std::io::Result<()> {
        let newer = self.snapshots.files.split_off(&index);
        for (_, old) in std::mem::replace(&mut self.snapshots.files, newer) {
            self.remove_off_node(&old.file.path)?;
        }
        Ok(())
    }

    /// After a restart that lost the snapshot file, take a new one so that
    /// lagging followers can still be served.
    pub(super) fn snapshot_if_missing(&mut self) {
        let compacted = self.raw.store().snapshot_metadata().index > 0;
        if compacted && self.snapshots.files.is_empty() {
            let applied = self.applied().index;
            if let Err(error) = self.take_snapshot().and_then(|()| self.compact_to(applied)) {
                self.stop(error);
            }
        }
    }

    /// Takes a snapshot on the node itself (after a restart only).
    fn take_snapshot(&mut self) -> Result<(), Fatal> {
        let temporary = self.snapshots.dir.join(TAKING_FILE);
        let _ = fs::remove_file(&temporary);
        let applied = self.sm_ref()?.create_snapshot(&temporary)?;
        let conf_state = self.conf_state();
        self.adopt_snapshot_file(&temporary, applied.index, applied.term, conf_state, None).map_err(io_fatal)?;
        tracing::debug!(node = self.id.0, index = applied.index, "took snapshot");
        Ok(())
    }

    /// Moves `path` into place as the newest snapshot. Of the files newer
    /// than the compaction point, only the oldest (the next the log can be
    /// compacted to, once the lag allows) is kept beside it: at most three
    /// files, and the log keeps between the lag and about the lag plus two
    /// snapshot intervals of entries.
    fn adopt_snapshot_file(
        &mut self,
        path: &Path,
        index: u64,
        term: u64,
        conf_state: ConfState,
        summary: Option<FileSummary>,
    ) -> std::io::Result<()> {
        let final_path = self.snapshots.dir.join(file_name(index, term));
        fs::rename(path, &final_path)?;
        File::open(&self.snapshots.dir)?.sync_all()?;
        let file = match summary {
            // Read on the worker that wrote it, or while it was received.
            Some(FileSummary { bytes, crc32c }) => SnapshotFile { path: final_path, index, term, bytes, crc32c },
            None => SnapshotFile::load(final_path, index, term)?,
        };
        let compacted = self.raw.store().snapshot_metadata().index;
        let between: Vec<u64> = self.snapshots.files.range(compacted + 1..).map(|(i, _)| *i).skip(1).collect();
        for old in between {
            let held = self.snapshots.files.remove(&old).expect("listed");
            if held.file.path != file.path {
                self.remove_off_node(&held.file.path)?;
            }
        }
        if let Some(replaced) = self.snapshots.files.insert(index, Held { file, conf_state }) {
            if replaced.file.path != self.snapshots.files[&index].file.path {
                self.remove_off_node(&replaced.file.path)?;
            }
        }
        Ok(())
    }

    /// Raft sends a snapshot: announce the file to the host, or tell raft it
    /// failed if the file is not the one it describes.
    pub(super) fn send_snapshot(&mut self, message: Message) {
        let metadata = message.get_snapshot().get_metadata();
        let to = message.to;
        let conf = metadata.get_conf_state();
        let includes_recipient = [&conf.voters, &conf.learners, &conf.voters_outgoing, &conf.learners_next]
            .iter()
            .any(|ids| ids.contains(&to));
        if !includes_recipient {
            // The snapshot predates the change that added `to`, and raft-rs
            // on `to` refuses it: take a fresh one and let raft retry.
            tracing::info!(node = self.id.0, to, index = metadata.index, "snapshot predates the recipient");
            self.snapshots.refresh_requested = true;
            self.raw.report_snapshot(to, SnapshotStatus::Failure);
            return;
        }
        let Some(file) = self.snapshot_file(metadata.index).filter(|f| f.term == metadata.term) else {
            tracing::warn!(node = self.id.0, to, index = metadata.index, "no snapshot file to send");
            self.snapshots.refresh_requested = true;
            self.raw.report_snapshot(to, SnapshotStatus::Failure);
            return;
        };
        let header = SnapshotHeader {
            from: self.id.0,
            index: file.index,
            term: file.term,
            total_bytes: file.bytes,
            raft_message: message.write_to_bytes().expect("raft messages always encode"),
            crc32c: file.crc32c,
            from_identity: 0,
            cluster_id: 0,
        };
        self.outputs.push_back(super::Output::SendSnapshot { to: NodeId(to), header });
    }

    fn discard_stale_incoming(&mut self) {
        let applied = self.applied().index;
        let stale: Vec<u64> = self.snapshots.incoming.range(..=applied).map(|(index, _)| *index).collect();
        for index in stale {
            if let Some((path, _)) = self.snapshots.incoming.remove(&index) {
                let _ = self.remove_off_node(&path);
            }
        }
    }

    /// Deletes a snapshot file off the node: unlinking a file of gigabytes
    /// takes a while, so it is renamed out of the way now (its name may be
    /// used again at once) and the host unlinks it (`Output::RemoveFile`).
    /// One left by a crash goes at the next start, with every other file
    /// the node does not keep.
    fn remove_off_node(&mut self, path: &Path) -> std::io::Result<()> {
        self.snapshots.next_removed += 1;
        let doomed = self.snapshots.dir.join(format!("removing-{}.tmp", self.snapshots.next_removed));
        fs::rename(path, &doomed)?;
        self.outputs.push_back(Output::RemoveFile { path: doomed });
        Ok(())
    }
}

/// Where the host writes a snapshot being taken.
const TAKING_FILE: &str = "taking.tmp";

fn file_name(index: u64, term: u64) -> String {
    format!("snap-{index:020}-{term:020}.db")
}

fn io_fatal(error: std::io::Error) -> Fatal {
    Fatal::Snapshot(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(dir: &Path, name: &str, data: &[u8]) -> SnapshotReceiver {
        let path = dir.join(name);
        let file = OpenOptions::new().write(true).create_new(true).open(&path).expect("create");
        let header = SnapshotHeader {
            index: 5,
            total_bytes: data.len() as u64,
            crc32c: crc32c::crc32c(data),
            ..Default::default()
        };
        SnapshotReceiver { header, message: Message::default(), path: Some(path), file, written: 0, crc32c: 0 }
    }

    /// A transfer that stops half way (the host gave up on it) or arrives
    /// corrupt leaves no file behind; a complete one keeps its file.
    #[test]
    fn receivers_delete_unfinished_files() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let data = b"snapshot bytes";
        let mut abandoned = receiver(dir.path(), "abandoned", data);
        abandoned.write_chunk(0, &data[..4]).expect("chunk");
        drop(abandoned);
        assert!(!dir.path().join("abandoned").exists());
        let mut corrupt = receiver(dir.path(), "corrupt", data);
        corrupt.write_chunk(0, b"snapshot BYTES").expect("chunk");
        assert!(matches!(corrupt.finish(), Err(SnapshotReceiveError::Checksum)));
        assert!(!dir.path().join("corrupt").exists());
        let mut complete = receiver(dir.path(), "complete", data);
        complete.write_chunk(0, data).expect("chunk");
        let received = complete.finish().expect("complete");
        assert_eq!(received.path, dir.path().join("complete"));
        assert_eq!(fs::read(&received.path).expect("kept"), data);
    }

    /// A transfer reads the file it opened even after a newer snapshot
    /// replaced (deleted) it.
    #[test]
    fn readers_survive_the_file_being_replaced() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("snap");
        fs::write(&path, vec![7u8; 100_000]).expect("write");
        let file = SnapshotFile::load(path.clone(), 1, 1).expect("load");
        let mut reader = file.open().expect("open");
        let first = reader.next_chunk(60_000).expect("first");
        fs::remove_file(&path).expect("replaced");
        let second = reader.next_chunk(60_000).expect("second");
        assert_eq!((first.len(), second.len()), (60_000, 40_000));
        assert!(reader.next_chunk(60_000).expect("end").is_empty());
    }
}
