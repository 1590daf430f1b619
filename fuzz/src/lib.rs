//! The checks behind deeb's fuzz targets, one `check_*` per target.
//!
//! Each takes arbitrary bytes and panics only when it finds a bug: a decoder
//! that panics, a round trip that does not hold, or a component that accepts
//! bad input and is then left unusable. The fuzz targets in `fuzz_targets/`
//! call these, and `core/tests/fuzz_corpus.rs` includes this file to replay
//! the seed corpus and every fixed crash as a normal test. So this file uses
//! only crates that deeb-core's tests can see (no libfuzzer-sys, no
//! arbitrary): structured inputs are read with the small [`Input`] cursor.

#![allow(dead_code)] // The replay test uses every check; a target uses one.

use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::fs;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use deeb_core::disk::{Disk, MemDisk};
use deeb_core::log::{decode_segment, segment_name, LogError, LogStore};
use deeb_core::sql::{Applied, ApplyError, Executed, SqliteStateMachine, WriteLimits};
use deeb_core::{Config, Node, NodeId, Output, Role};
use deeb_proto::{
    op, Command, ExecuteRequest, Op, QueryChunk, QueryRequest, RaftBatch, SnapshotChunk, SnapshotHeader, Statement,
    Write, WriteBatch,
};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, SnapshotMetadata};

#[path = "sql_program.rs"]
pub mod sql_program;

/// Segment size for logs opened from fuzzed bytes.
const SEGMENT_BYTES_MAX: u64 = 1 << 20;
/// Operations read from one `log_roundtrip` input.
const LOG_OPERATIONS_MAX: usize = 256;
/// Raft messages stepped from one input.
const MESSAGES_MAX: usize = 64;
/// Snapshot chunks read from one input.
const CHUNKS_MAX: usize = 64;
/// Statements executed from one client request.
const STATEMENTS_MAX: usize = 8;
/// SQL text of one fuzzed statement.
const SQL_BYTES_MAX: usize = 1024;
/// Query result chunks taken before the sink stops the query.
const QUERY_CHUNKS_MAX: usize = 8;
/// SQLite's heap, process-wide: an expression like `zeroblob(1e9)` fails
/// with SQLITE_NOMEM instead of exhausting the fuzzer's memory.
const SQLITE_HEAP_BYTES_MAX: i64 = 256 << 20;
/// SQLite VM steps one fuzzed write statement may run.
const STATEMENT_STEPS_MAX: u64 = 200_000;
/// Bytes of row changes one fuzzed request may make (and the largest value).
const ROW_CHANGES_BYTES_MAX: usize = 1 << 20;
/// Ticks given to a node to elect itself or settle after an input.
const TICKS_MAX: usize = 100;

/// The schema of every scratch state machine.
const SCRATCH_SCHEMA: [&str; 2] =
    ["CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c BLOB, d REAL)", "CREATE TABLE u (x, y)"];
/// Rows in the scratch tables before any fuzzed input.
const SCRATCH_ROWS: [&str; 2] = [
    "INSERT INTO t VALUES (1, 'one', x'01', 1.5), (2, 'two', NULL, NULL), (3, NULL, x'', -0.0)",
    "INSERT INTO u VALUES (1, 'x'), ('y', 2.5)",
];

// ---------------------------------------------------------------------------
// log_segment
// ---------------------------------------------------------------------------

/// Arbitrary bytes as one log segment: the decoder is total and consistent,
/// every record it returns round-trips, and recovery over the bytes as a
/// segment file gives a consistent log or `LogError::Corrupt`.
pub fn check_log_segment(data: &[u8]) {
    let decoded = decode_segment(data);
    assert!(decoded.valid_bytes <= data.len() as u64);
    match &decoded.damage {
        None => assert_eq!(decoded.valid_bytes, data.len() as u64, "no damage, so every byte is valid"),
        Some(damage) => assert_eq!(damage.offset, decoded.valid_bytes, "damage starts where valid bytes end"),
    }
    let mut previous_offset = None;
    for located in &decoded.records {
        assert!(located.offset < decoded.valid_bytes);
        assert!(previous_offset < Some(located.offset), "records are in file order");
        previous_offset = Some(located.offset);
        let bytes = located.record.encode().expect("a decoded record is under the limit again");
        let again = decode_segment(&bytes);
        assert_eq!(again.damage, None);
        assert_eq!(again.records.len(), 1);
        assert_eq!(again.records[0].record, located.record, "decode(encode(record)) == record");
    }
    open_as_segment(data);
}

/// Writes `data` as segment 1 of a fresh disk and opens the log on it.
fn open_as_segment(data: &[u8]) {
    let mut disk = MemDisk::new();
    let name = segment_name(1);
    disk.create(&name).expect("create on a fresh MemDisk");
    disk.append(&name, data).expect("append on MemDisk");
    disk.sync(&name).expect("sync on MemDisk");
    disk.sync_dir().expect("sync_dir on MemDisk");
    let (mut store, recovery) = match LogStore::open(disk, SEGMENT_BYTES_MAX) {
        Ok(opened) => opened,
        Err(LogError::Corrupt { .. }) => return,
        Err(other) => panic!("bad bytes must give LogError::Corrupt, got {other}"),
    };
    assert_eq!(recovery.first_index, store.first_index());
    assert_eq!(recovery.last_index, store.last_index());
    assert!(recovery.torn_bytes_cut <= data.len() as u64);
    check_store(&store);
    // The recovered log must be writable, and the write must survive a reopen.
    let next = Entry { index: store.last_index() + 1, term: store.hard_state().term, ..Default::default() };
    store.append(std::slice::from_ref(&next)).expect("append to a recovered log");
    store.sync().expect("sync a recovered log");
    let expected = LogSnapshot::of(&store);
    let (reopened, recovery) = LogStore::open(store.into_disk(), SEGMENT_BYTES_MAX).expect("reopen after a write");
    assert_eq!(recovery.torn_bytes_cut, 0, "nothing torn after a clean sync");
    assert_eq!(LogSnapshot::of(&reopened), expected);
}

/// Asserts the index bookkeeping of an opened log.
fn check_store<D: Disk>(store: &LogStore<D>) {
    let (first, last) = (store.first_index(), store.last_index());
    assert_eq!(first, store.snapshot_metadata().index + 1);
    assert!(last + 1 >= first, "last index {last} below first index {first} - 1");
    let entries = store.in_memory_entries();
    assert_eq!(entries.len() as u64, last + 1 - first);
    for (offset, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, first + offset as u64);
    }
}

/// Everything a log store shows, for comparing two stores.
#[derive(Debug, PartialEq)]
struct LogSnapshot {
    first_index: u64,
    last_index: u64,
    snapshot: SnapshotMetadata,
    hard_state: HardState,
    conf_state: ConfState,
    entries: Vec<Entry>,
}

impl LogSnapshot {
    fn of<D: Disk>(store: &LogStore<D>) -> Self {
        Self {
            first_index: store.first_index(),
            last_index: store.last_index(),
            snapshot: store.snapshot_metadata().clone(),
            hard_state: store.hard_state().clone(),
            conf_state: store.conf_state().clone(),
            entries: store.in_memory_entries().to_vec(),
        }
    }
}

// ---------------------------------------------------------------------------
// log_roundtrip
// ---------------------------------------------------------------------------

/// A sequence of log operations (read from the bytes) through the store's
/// own writing path, then a reopen: the recovered log equals the written one.
pub fn check_log_roundtrip(data: &[u8]) {
    let mut input = Input::new(data);
    let segment_bytes_max = 64 + u64::from(input.byte()) * 16;
    let disk = MemDisk::new();
    let (mut store, _) = LogStore::open(disk.clone(), segment_bytes_max).expect("an empty disk opens");
    for _ in 0..LOG_OPERATIONS_MAX {
        if input.is_empty() {
            break;
        }
        log_operation(&mut store, &mut input);
        check_store(&store);
    }
    store.sync().expect("sync on MemDisk");
    for name in disk.list().expect("list on MemDisk") {
        let bytes = disk.read(&name).expect("read on MemDisk");
        assert_eq!(decode_segment(&bytes).damage, None, "{name} as written decodes cleanly");
    }
    let expected = LogSnapshot::of(&store);
    let (reopened, recovery) = LogStore::open(store.into_disk(), segment_bytes_max).expect("reopen what was written");
    assert_eq!(recovery.torn_bytes_cut, 0);
    assert_eq!(LogSnapshot::of(&reopened), expected, "decode(encode(log)) == log");
}

/// One operation a raft host may legally ask of the store.
fn log_operation(store: &mut LogStore<MemDisk>, input: &mut Input) {
    let (first, last) = (store.first_index(), store.last_index());
    match input.byte() % 6 {
        0 => {
            // Any start from the first index to just past the last: raft
            // overwrites a conflicting suffix.
            let start = last + 1 - input.below(last + 2 - first);
            let count = 1 + input.below(4);
            let entries: Vec<Entry> = (start..start + count).map(|index| input_entry(input, index)).collect();
            store.append(&entries).expect("append on MemDisk");
        }
        1 => {
            let hard_state =
                HardState { term: input.small(), vote: input.small(), commit: input.small(), ..Default::default() };
            store.set_hard_state(&hard_state).expect("set_hard_state on MemDisk");
        }
        2 => store.set_conf_state(&input_conf_state(input)).expect("set_conf_state on MemDisk"),
        3 if last >= first => {
            let index = first + input.below(last + 1 - first);
            let metadata = SnapshotMetadata { index, term: input.small(), ..Default::default() };
            store.compact(&metadata).expect("compact on MemDisk");
        }
        4 => {
            let index = store.snapshot_metadata().index + input.below(16);
            let mut metadata = SnapshotMetadata { index, term: input.small(), ..Default::default() };
            metadata.set_conf_state(input_conf_state(input));
            store.apply_snapshot(&metadata).expect("apply_snapshot on MemDisk");
        }
        _ => store.sync().expect("sync on MemDisk"),
    }
}

fn input_entry(input: &mut Input, index: u64) -> Entry {
    let kind = input.byte();
    let mut entry = Entry { index, term: input.small(), ..Default::default() };
    entry.set_entry_type(match kind % 3 {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        _ => EntryType::EntryConfChangeV2,
    });
    let data_bytes = input.below(48) as usize;
    entry.data = input.bytes(data_bytes).to_vec().into();
    if kind & 0x80 != 0 {
        entry.context = input.bytes(8).to_vec().into();
    }
    entry
}

fn input_conf_state(input: &mut Input) -> ConfState {
    let voters = (0..input.below(4)).map(|_| input.small()).collect();
    let learners = (0..input.below(3)).map(|_| input.small()).collect();
    ConfState { voters, learners, auto_leave: input.byte() & 1 == 1, ..Default::default() }
}

// ---------------------------------------------------------------------------
// command
// ---------------------------------------------------------------------------

/// A log entry's data: `Command` decodes or errs, and what decodes
/// re-encodes to bytes that decode to the same command.
pub fn check_command(data: &[u8]) {
    if let Some(command) = round_trip::<Command>(data) {
        let again = Command::decode(command.encode_to_vec().as_slice()).expect("re-encoded command decodes");
        assert_eq!(again, command);
    }
    round_trip::<WriteBatch>(data);
}

/// Decodes `data` as `M`; if it decodes, checks that encoding is stable:
/// encode(decode(encode(m))) == encode(m). (Bytes, not values, are compared
/// so that a NaN in a `Value` does not count as a difference.)
fn round_trip<M: prost::Message + Default>(data: &[u8]) -> Option<M> {
    let message = M::decode(data).ok()?;
    let bytes = message.encode_to_vec();
    assert_eq!(bytes.len(), message.encoded_len());
    let again = M::decode(bytes.as_slice()).expect("an encoded message decodes");
    assert_eq!(again.encode_to_vec(), bytes, "encode(decode(encode(m))) == encode(m)");
    Some(message)
}

// ---------------------------------------------------------------------------
// peer_message
// ---------------------------------------------------------------------------

/// A peer's `RaftBatch` (or, if it does not decode, the bytes as one raft
/// message) stepped into a node: the first byte picks a one-node leader or
/// a follower of three. Garbage is an `Err`, never a panic.
pub fn check_peer_message(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut messages = match round_trip::<RaftBatch>(rest) {
        Some(batch) => batch.messages,
        None => vec![rest.to_vec()],
    };
    messages.truncate(MESSAGES_MAX);
    for bytes in &messages {
        raft_round_trip(bytes);
    }
    let (mut node, _dir) = if mode & 1 == 0 { one_node_leader() } else { follower_of_three() };
    let mut now = node.poll_timeout();
    let _ = node.step(now, &messages);
    drain(&mut node);
    if mode & 2 != 0 {
        for bytes in &messages {
            let _ = node.step(now, std::slice::from_ref(bytes));
            drain(&mut node);
        }
    }
    for _ in 0..TICKS_MAX / 10 {
        now = node.poll_timeout();
        node.handle_timeout(now);
        drain(&mut node);
    }
    let _ = node.status();
}

/// A raft message that decodes re-encodes stably: encode(decode(encode(m)))
/// == encode(m). (Not decode(encode(m)) == m: rust-protobuf 2.28 accepts a
/// truncated nested message and then loses unknown fields inside it on
/// re-encoding; see `regressions/peer_message/rust-protobuf-*`.)
fn raft_round_trip(bytes: &[u8]) {
    let Ok(message) = raft::eraftpb::Message::parse_from_bytes(bytes) else { return };
    let encoded = message.write_to_bytes().expect("a decoded raft message encodes");
    let again = raft::eraftpb::Message::parse_from_bytes(&encoded).expect("an encoded raft message decodes");
    assert_eq!(again.write_to_bytes().expect("a decoded raft message encodes"), encoded);
}

/// Node 1 of the cluster `{1}`, elected.
fn one_node_leader() -> (Node<MemDisk>, tempfile::TempDir) {
    let (mut node, dir) = open_node(&[1]);
    for _ in 0..TICKS_MAX {
        let now = node.poll_timeout();
        node.handle_timeout(now);
        drain(&mut node);
        if node.status().role == Role::Leader {
            return (node, dir);
        }
    }
    panic!("a one-node cluster elects itself within {TICKS_MAX} ticks");
}

/// Node 1 of the cluster `{1, 2, 3}`, just started.
fn follower_of_three() -> (Node<MemDisk>, tempfile::TempDir) {
    open_node(&[1, 2, 3])
}

fn open_node(members: &[u64]) -> (Node<MemDisk>, tempfile::TempDir) {
    let dir = scratch_dir();
    let members: Vec<(NodeId, String)> = members.iter().map(|&id| (NodeId(id), format!("node-{id}:7000"))).collect();
    let node = Node::open(Config::new(NodeId(1)), MemDisk::new(), dir.path(), &members, Duration::ZERO)
        .expect("a fresh node opens");
    (node, dir)
}

/// Takes every output (as a host must); runs the leader's batches, the
/// applying of entries and snapshot installs inline and carries out
/// nothing else.
fn drain(node: &mut Node<MemDisk>) {
    // (`Output::Stopped` too: a peer can make a node stop, e.g. with a
    // committed entry that does not apply; that is a clean stop, not a crash.)
    while let Some(output) = node.poll_output() {
        match output {
            Output::ExecuteBatch => {
                if let Some(batch) = node.batch_to_execute() {
                    node.batch_executed(Duration::ZERO, batch.execute());
                }
            }
            Output::ApplyEntries => {
                if let Some(entries) = node.entries_to_apply() {
                    node.entries_applied(Duration::ZERO, entries.apply());
                }
            }
            Output::InstallSnapshot => {
                if let Some(snapshot) = node.snapshot_to_install() {
                    node.snapshot_installed(Duration::ZERO, snapshot.install());
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// snapshot_chunk
// ---------------------------------------------------------------------------

/// A stream of length-delimited `SnapshotChunk`s received by a follower:
/// the first chunk's header opens a receiver, every chunk is written, the
/// stream is finished and, if it checks out, installed. Never a panic.
pub fn check_snapshot_chunk(data: &[u8]) {
    round_trip::<SnapshotChunk>(data);
    round_trip::<SnapshotHeader>(data);
    let mut remaining = data;
    let mut chunks = Vec::new();
    while !remaining.is_empty() && chunks.len() < CHUNKS_MAX {
        match SnapshotChunk::decode_length_delimited(&mut remaining) {
            Ok(chunk) => chunks.push(chunk),
            Err(_) => break,
        }
    }
    let Some(header) = chunks.first().and_then(|chunk| chunk.header.clone()) else { return };
    let (mut node, _dir) = follower_of_three();
    let Ok(mut receiver) = node.snapshot_receiver(header.clone()) else { return };
    for chunk in &chunks {
        if receiver.write_chunk(chunk.offset, &chunk.data).is_err() {
            break;
        }
    }
    let Ok(received) = receiver.finish() else { return };
    let now = node.poll_timeout();
    node.install_received(now, received);
    drain(&mut node);
    for _ in 0..TICKS_MAX / 10 {
        let now = node.poll_timeout();
        node.handle_timeout(now);
        drain(&mut node);
    }
    let _ = node.status();
}

// ---------------------------------------------------------------------------
// client_request
// ---------------------------------------------------------------------------

/// A client's requests, by the first byte:
///
/// - odd: a `QueryRequest`, run through a shared reader;
/// - `..00` (mod 4), bit 2 clear: one `ExecuteRequest` (protobuf);
/// - `..00` (mod 4), bit 2 set: a batch of length-delimited `ExecuteRequest`s;
/// - `..10` (mod 4): a batch of structured requests ([`sql_program`]).
///
/// A batch runs on a fresh leader state machine as the node runs a batch
/// (see [`run_batch`]); what commits is applied to an identical follower,
/// which must accept it and reach the same digest, and the requests that
/// succeeded, run alone, must give the same digest too. SQL errors are fine;
/// panics, fatal errors, divergence and lost effects are not.
pub fn check_client_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let requests: Vec<Vec<Statement>> = if mode & 1 == 1 {
        let Some(request) = round_trip::<QueryRequest>(rest) else { return };
        let statement = request.statement.unwrap_or_default();
        if runnable(&statement) {
            with_scratch(|scratch| scratch.query(&statement));
        }
        return;
    } else if mode & 2 == 2 {
        sql_program::decode_program(rest, STATEMENTS_MAX)
            .iter()
            .map(|request| request.iter().map(sql_program::Sql::statement).collect())
            .collect()
    } else if mode & 4 == 0 {
        let Some(request) = round_trip::<ExecuteRequest>(rest) else { return };
        vec![request.statements]
    } else {
        let mut remaining = rest;
        let mut requests = Vec::new();
        while !remaining.is_empty() && requests.len() < sql_program::REQUESTS_MAX {
            match ExecuteRequest::decode_length_delimited(&mut remaining) {
                Ok(request) => requests.push(request.statements),
                Err(_) => break,
            }
        }
        requests
    };
    if requests.is_empty()
        || requests.iter().any(|request| request.len() > STATEMENTS_MAX || !request.iter().all(runnable))
    {
        return;
    }
    if let Err(finding) = run_batch(&requests, Mutations::default()) {
        panic!("{finding}\nrequests: {requests:#?}");
    }
}

/// Deliberate bugs, to show that [`run_batch`] catches them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mutations {
    /// The follower applies with foreign keys on (its cascades run twice).
    pub follower_foreign_keys: bool,
    /// After a request rolls the batch transaction back, the leader opens a
    /// new one but does not run the earlier requests again.
    pub skip_rerun: bool,
}

/// What happened to a batch that checked out.
#[derive(Debug)]
pub struct BatchReport {
    /// Per request: its error, or `Ok` if it was committed.
    pub outcomes: Vec<Result<(), String>>,
    /// The leader opened a new batch transaction this many times after a
    /// request rolled one back.
    pub rollbacks: usize,
    /// The successful requests were run again alone and gave the same digest.
    pub rerun_alone: bool,
}

/// Runs `requests` as a leader runs one batch and replicates it.
///
/// The leader executes them one by one in one batch transaction
/// (`begin_batch`, `execute_request`); a failed request is answered and,
/// if its SQL rolled back the whole transaction (`batch_open()` false), a
/// new batch begins and the requests before it run again, as
/// `Node::execute_queue` does. What succeeded is committed, its ops go
/// through a `Command` and `apply_batch` on a follower that started
/// identical. `Err` is a finding: a fatal error from client SQL, a
/// follower that refuses the batch or ends with another digest, or (when
/// a request failed and no statement reads randomness or connection state)
/// a leader whose digest differs from running only the successful requests
/// on a fresh database, i.e. a failed request left a trace or a successful
/// one lost its effects.
pub fn run_batch(requests: &[Vec<Statement>], mutations: Mutations) -> Result<BatchReport, String> {
    let fatal = |what: &str, error: &dyn std::fmt::Display| format!("fatal error on client SQL ({what}): {error}");
    let (mut leader, _leader_dir) = sql_state_machine();
    let index = leader.applied().index + 1;
    let applied = Applied { index, term: 1 };
    leader.begin_batch(index).map_err(|e| fatal("begin_batch", &e))?;
    let mut outcomes: Vec<Option<Result<Executed, String>>> = vec![None; requests.len()];
    let mut queue: VecDeque<usize> = (0..requests.len()).collect();
    let mut executed: Vec<usize> = Vec::new();
    let mut rollbacks = 0;
    while let Some(number) = queue.pop_front() {
        let statements = &requests[number];
        match leader.execute_request(statements).map_err(|e| fatal("execute_request", &e))? {
            Ok(result) => {
                if result.results.len() != statements.len() {
                    return Err(format!(
                        "request {number}: {} results for {} statements",
                        result.results.len(),
                        statements.len()
                    ));
                }
                if !result.ops.iter().all(|op| op.kind.is_some()) {
                    return Err(format!("request {number}: an op without a kind"));
                }
                outcomes[number] = Some(Ok(result));
                executed.push(number);
            }
            Err(error) => {
                outcomes[number] = Some(Err(error.to_string()));
                if !leader.batch_open() {
                    rollbacks += 1;
                    leader.begin_batch(index).map_err(|e| fatal("begin_batch after a rollback", &e))?;
                    if mutations.skip_rerun {
                        // The mutant forgets the earlier requests but
                        // answers them as committed.
                        executed.clear();
                    } else {
                        for earlier in executed.drain(..).rev() {
                            queue.push_front(earlier);
                        }
                    }
                }
            }
        }
    }
    let outcomes: Vec<Result<Executed, String>> =
        outcomes.into_iter().map(|outcome| outcome.expect("every request ran")).collect();
    if executed.is_empty() {
        leader.rollback_batch().map_err(|e| fatal("rollback_batch", &e))?;
    } else {
        leader.commit_batch(applied).map_err(|e| fatal("commit_batch", &e))?;
    }
    if leader.batch_open() {
        return Err("the leader's batch is still open after commit or rollback".into());
    }
    // The batch travels through the log as a Command.
    let writes = executed
        .iter()
        .map(|&number| {
            let ops = outcomes[number].as_ref().expect("an executed request succeeded").ops.clone();
            Write { request_id: number as u64 + 1, ops, ..Write::default() }
        })
        .collect();
    let command = Command {
        kind: Some(deeb_proto::command::Kind::WriteBatch(WriteBatch { proposer: 1, writes, ..Default::default() })),
    };
    let Some(deeb_proto::command::Kind::WriteBatch(batch)) =
        Command::decode(command.encode_to_vec().as_slice()).expect("a command decodes").kind
    else {
        panic!("a write batch command decodes as a write batch");
    };
    let leader_digest = leader.digest().expect("leader digest");
    if batch.writes.is_empty() && leader_digest != initial_digest() {
        return Err(format!("every request failed, yet the leader's digest moved to {leader_digest:#x}"));
    }
    if !batch.writes.is_empty() {
        let (mut follower, _follower_dir) = sql_state_machine();
        follower.set_apply_foreign_keys(mutations.follower_foreign_keys);
        if let Err(error) = follower.apply_batch(&batch, applied) {
            return Err(format!("the follower refuses the leader's batch: {error}"));
        }
        if follower.applied() != leader.applied() {
            return Err(format!(
                "applied {:?} on the follower, {:?} on the leader",
                follower.applied(),
                leader.applied()
            ));
        }
        let follower_digest = follower.digest().expect("follower digest");
        if follower_digest != leader_digest {
            return Err(format!("replica divergence: follower digest {follower_digest:#x}, leader {leader_digest:#x}"));
        }
    }
    let failed = outcomes.iter().any(Result::is_err);
    let rerun_alone = failed && requests.iter().flatten().all(deterministic);
    if rerun_alone {
        // The effects of exactly the successful requests, in order.
        let succeeded: Vec<&Vec<Statement>> =
            requests.iter().zip(&outcomes).filter(|(_, outcome)| outcome.is_ok()).map(|(request, _)| request).collect();
        let (mut alone, _alone_dir) = sql_state_machine();
        alone.begin_batch(index).map_err(|e| fatal("begin_batch alone", &e))?;
        for (position, request) in succeeded.iter().enumerate() {
            if let Err(error) = alone.execute_request(request).map_err(|e| fatal("execute_request alone", &e))? {
                return Err(format!("successful request #{position} fails when run without the failed ones: {error}"));
            }
        }
        alone.commit_batch(applied).map_err(|e| fatal("commit_batch alone", &e))?;
        let alone_digest = alone.digest().expect("digest of the successful requests alone");
        if alone_digest != leader_digest {
            return Err(format!(
                "the batch's digest {leader_digest:#x} is not that of its successful requests run alone \
                 ({alone_digest:#x}): a failed request left a trace or a successful one lost its effects"
            ));
        }
    }
    Ok(BatchReport {
        outcomes: outcomes.into_iter().map(|outcome| outcome.map(|_| ())).collect(),
        rollbacks,
        rerun_alone,
    })
}

/// False for SQL whose effect may depend on what ran before it in the same
/// connection (a failed request's draws from the PRNG, its rowid, the
/// clock): such batches skip the run-alone comparison.
fn deterministic(statement: &Statement) -> bool {
    let sql = statement.sql.to_ascii_lowercase();
    !["random", "last_insert_rowid", "changes", "now", "current_"].iter().any(|word| sql.contains(word))
}

/// False for statements the fuzzer does not run. Runaway statements are
/// fine (the steps bound of [`FUZZ_LIMITS`] stops them), so only the
/// length is bounded.
fn runnable(statement: &Statement) -> bool {
    statement.sql.len() <= SQL_BYTES_MAX
}

/// A state machine with the `client_request` schema and rows
/// ([`sql_program::SQL_SCHEMA`]) at applied index 1, under
/// [`fuzz_limits`]. Copied from a template made once per thread.
pub fn sql_state_machine() -> (SqliteStateMachine, tempfile::TempDir) {
    let dir = scratch_dir();
    let path = dir.path().join("state.db");
    SQL_TEMPLATE.with(|template| {
        let template = template.get_or_init(make_sql_template);
        fs::copy(template.path().join("template.db"), &path).expect("copy the template database");
    });
    let mut state_machine = SqliteStateMachine::open(&path, 7).expect("open a copy of the template");
    state_machine.set_limits(fuzz_limits());
    (state_machine, dir)
}

thread_local! {
    static SQL_TEMPLATE: OnceCell<tempfile::TempDir> = const { OnceCell::new() };
    static INITIAL_DIGEST: OnceCell<u64> = const { OnceCell::new() };
}

/// The digest of [`sql_state_machine`] before any request.
fn initial_digest() -> u64 {
    INITIAL_DIGEST.with(|digest| *digest.get_or_init(|| sql_state_machine().0.digest().expect("initial digest")))
}

fn make_sql_template() -> tempfile::TempDir {
    limit_sqlite_heap();
    let dir = scratch_dir();
    let mut state_machine = SqliteStateMachine::open(&dir.path().join("build.db"), 7).expect("open the template");
    state_machine.begin_batch(1).expect("begin the schema batch");
    let statements: Vec<Statement> = sql_program::SQL_SCHEMA
        .iter()
        .chain(sql_program::SQL_ROWS)
        .map(|sql| Statement { sql: (*sql).into(), ..Default::default() })
        .collect();
    let executed = state_machine.execute_request(&statements).expect("the schema runs");
    executed.expect("the schema is valid SQL");
    state_machine.commit_batch(Applied { index: 1, term: 1 }).expect("commit the schema");
    state_machine.create_snapshot(&dir.path().join("template.db")).expect("copy the schema into the template");
    dir
}

/// Bounds on fuzzed write statements: smaller than the defaults so that a
/// runaway or oversized statement is stopped quickly.
pub fn fuzz_limits() -> WriteLimits {
    WriteLimits {
        statement_steps_max: STATEMENT_STEPS_MAX,
        row_changes_bytes_max: ROW_CHANGES_BYTES_MAX,
        ..Default::default()
    }
}

/// A state machine with the `client_request` schema and rows and a reader
/// on it, shared by every query input (queries cannot change it).
struct Scratch {
    _state_machine: SqliteStateMachine,
    reader: deeb_core::sql::Reader,
    _dir: tempfile::TempDir,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fn with_scratch(run: impl FnOnce(&mut Scratch)) {
    SCRATCH.with(|cell| {
        let mut slot = cell.borrow_mut();
        let scratch = slot.get_or_insert_with(Scratch::new);
        run(scratch);
    });
}

impl Scratch {
    fn new() -> Self {
        let (state_machine, dir) = sql_state_machine();
        let reader = state_machine.reader().expect("a reader on the scratch database");
        Self { _state_machine: state_machine, reader, _dir: dir }
    }

    fn query(&self, statement: &Statement) {
        let mut chunks = 0;
        let mut width = None;
        let mut sink = |chunk: QueryChunk| {
            if chunks == 0 {
                width = Some(chunk.columns.len());
            } else {
                assert!(chunk.columns.is_empty(), "only the first chunk carries the columns");
            }
            assert!(
                chunk.rows.iter().all(|row| Some(row.values.len()) == width),
                "every row is as wide as the columns"
            );
            chunks += 1;
            chunks < QUERY_CHUNKS_MAX
        };
        let _ = self.reader.query(statement, 16, 64 << 10, &mut sink);
    }
}

/// Row counts of the scratch tables, read through `reader`.
fn table_counts(reader: &deeb_core::sql::Reader) -> Vec<String> {
    let mut counts = Vec::new();
    let statement = Statement {
        sql: "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u), \
              (SELECT count(*) FROM sqlite_schema)"
            .into(),
        ..Default::default()
    };
    reader
        .query(&statement, 16, 1 << 16, &mut |chunk| {
            counts.extend(chunk.rows.iter().map(|row| format!("{:?}", row.values)));
            true
        })
        .expect("count the scratch tables");
    counts
}

// ---------------------------------------------------------------------------
// changeset_apply
// ---------------------------------------------------------------------------

/// Arbitrary bytes as a changeset in a committed batch, applied to a fresh
/// scratch state machine: `Ok` or `Divergence`/`Sql`, never a panic; after
/// `Ok` the database is intact and still usable.
pub fn check_changeset_apply(data: &[u8]) {
    let (mut state_machine, _dir) = scratch_state_machine();
    let before = state_machine.applied();
    let applied = Applied { index: before.index + 1, term: before.term };
    let batch = WriteBatch {
        proposer: 2,
        writes: vec![Write {
            request_id: 1,
            ops: vec![Op { kind: Some(op::Kind::Changeset(data.to_vec())) }],
            ..Write::default()
        }],
        ..WriteBatch::default()
    };
    match state_machine.apply_batch(&batch, applied) {
        Ok(()) => assert_eq!(state_machine.applied(), applied),
        Err(ApplyError::Divergence { index, .. }) => {
            assert_eq!(index, applied.index);
            assert_eq!(state_machine.applied(), before, "a divergent batch is not recorded as applied");
        }
        Err(ApplyError::Sql(_)) => return,
    }
    // Whatever happened, the database is intact and the next batch works.
    let reader = state_machine.reader().expect("a reader after apply");
    let mut integrity = Vec::new();
    let check = Statement { sql: "PRAGMA integrity_check".into(), ..Default::default() };
    let _ = reader.query(&check, 16, 1 << 16, &mut |chunk| {
        integrity.extend(chunk.rows.into_iter().flat_map(|row| row.values));
        true
    });
    table_counts(&reader);
    state_machine.digest().expect("digest after apply");
    let next_index = state_machine.applied().index + 1;
    state_machine.begin_batch(next_index).expect("begin a batch after apply");
    let insert = Statement { sql: "INSERT INTO u VALUES (42, 42)".into(), ..Default::default() };
    let executed = state_machine.execute_request(&[insert]).expect("database usable after apply");
    assert!(executed.is_ok(), "an insert into u works after apply: {executed:?}");
    state_machine.rollback_batch().expect("rollback after apply");
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// A state machine at applied index 1 holding the scratch schema and rows.
pub fn scratch_state_machine() -> (SqliteStateMachine, tempfile::TempDir) {
    limit_sqlite_heap();
    let dir = scratch_dir();
    let mut state_machine = SqliteStateMachine::open(&dir.path().join("state.db"), 7).expect("open a scratch database");
    state_machine.begin_batch(1).expect("begin the scratch schema batch");
    let statements: Vec<Statement> = SCRATCH_SCHEMA
        .iter()
        .chain(&SCRATCH_ROWS)
        .map(|sql| Statement { sql: (*sql).into(), ..Default::default() })
        .collect();
    let executed = state_machine.execute_request(&statements).expect("scratch schema runs");
    executed.expect("scratch schema is valid SQL");
    state_machine.commit_batch(Applied { index: 1, term: 1 }).expect("commit the scratch schema");
    (state_machine, dir)
}

/// A temporary directory, in memory where the machine has `/dev/shm`.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    dir.expect("a temporary directory")
}

fn limit_sqlite_heap() {
    static LIMIT: Once = Once::new();
    // SAFETY: sets a process-wide SQLite setting; safe to call at any time.
    LIMIT.call_once(|| unsafe {
        rusqlite::ffi::sqlite3_hard_heap_limit64(SQLITE_HEAP_BYTES_MAX);
    });
}

/// Reads structured values from fuzzer bytes; zeros once they run out.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.data.split_first() else { return 0 };
        self.data = rest;
        first
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        let raw = u64::from(self.byte()) | (u64::from(self.byte()) << 8);
        raw % bound
    }

    /// A small number (0 to 255), for terms, ids and the like.
    pub fn small(&mut self) -> u64 {
        u64::from(self.byte())
    }

    pub fn bytes(&mut self, count: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(count.min(self.data.len()));
        self.data = rest;
        taken
    }
}
