//! The fuzz targets' seed corpus and regressions, without a fuzzer.
//!
//! `replay_corpus_and_regressions` runs every file under `fuzz/corpus/*/`
//! and `fuzz/regressions/*/` through the same check the fuzz target of that
//! name runs (`fuzz/src/lib.rs`), so CI guards every fixed crash.
//!
//! `generate_seed_corpus` (ignored) rewrites the seed corpus from deeb's own
//! encoders: `cargo test -p deeb-core --test fuzz_corpus -- --ignored`.

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::fs;
use std::path::{Path, PathBuf};

use deeb_core::disk::{Disk, MemDisk};
use deeb_core::log::{segment_name, LogStore};
use deeb_proto::{
    op, value, Command, ExecuteRequest, NamedValue, Op, QueryRequest, RaftBatch, SnapshotChunk, SnapshotHeader,
    Statement, Value, Write, WriteBatch,
};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Message, MessageType, Snapshot, SnapshotMetadata};

/// The check each target runs, by target (directory) name.
/// A fuzz target's check: panics on a bug.
type Check = fn(&[u8]);

/// Named seed files of one target.
type Seeds = Vec<(&'static str, Vec<u8>)>;

const TARGETS: [(&str, Check); 7] = [
    ("log_segment", fuzz_checks::check_log_segment),
    ("log_roundtrip", fuzz_checks::check_log_roundtrip),
    ("command", fuzz_checks::check_command),
    ("peer_message", fuzz_checks::check_peer_message),
    ("snapshot_chunk", fuzz_checks::check_snapshot_chunk),
    ("client_request", fuzz_checks::check_client_request),
    ("changeset_apply", fuzz_checks::check_changeset_apply),
];

/// Seed files larger than this are not committed.
const SEED_BYTES_MAX: usize = 32 * 1024;

#[test]
fn replay_corpus_and_regressions() {
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        for (target, check) in TARGETS {
            for path in files(&fuzz_dir().join(kind).join(target)) {
                let data = fs::read(&path).expect("read a corpus file");
                eprintln!("replaying {}", path.display());
                check(&data);
                replayed += 1;
            }
        }
    }
    // Every target has a seed corpus, so an empty replay means a wrong path.
    assert!(replayed >= TARGETS.len(), "replayed only {replayed} files from {}", fuzz_dir().display());
}

#[test]
fn every_corpus_directory_is_a_target() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(kind)) else { continue };
        for entry in entries {
            let name = entry.expect("list a corpus directory").file_name();
            let name = name.to_string_lossy();
            assert!(TARGETS.iter().any(|(target, _)| *target == name), "{kind}/{name} is not a fuzz target");
        }
    }
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus; run by hand"]
fn generate_seed_corpus() {
    let seeds: [(&str, Seeds); 7] = [
        ("log_segment", log_segment_seeds()),
        ("log_roundtrip", log_roundtrip_seeds()),
        ("command", command_seeds()),
        ("peer_message", peer_message_seeds()),
        ("snapshot_chunk", snapshot_chunk_seeds()),
        ("client_request", client_request_seeds()),
        ("changeset_apply", changeset_seeds()),
    ];
    for (target, files) in seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("create a corpus directory");
        let check = TARGETS.iter().find(|(name, _)| *name == target).expect("a known target").1;
        for (name, bytes) in files {
            assert!(bytes.len() <= SEED_BYTES_MAX, "{target}/{name} is {} bytes", bytes.len());
            check(&bytes);
            fs::write(dir.join(name), &bytes).expect("write a seed file");
        }
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

/// The files directly in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        entries.map(|entry| entry.expect("list a corpus directory").path()).filter(|path| path.is_file()).collect();
    paths.sort();
    paths
}

// ---------------------------------------------------------------------------
// Seeds, each made by deeb's own encoders
// ---------------------------------------------------------------------------

fn log_segment_seeds() -> Seeds {
    let disk = MemDisk::new();
    let (mut store, _) = LogStore::open(disk.clone(), 1 << 20).expect("open a log on MemDisk");
    let entries: Vec<Entry> = (1..=3)
        .map(|index| Entry { index, term: 1, data: command_bytes(index).into(), ..Default::default() })
        .collect();
    store.append(&entries).expect("append");
    store.set_hard_state(&HardState { term: 1, vote: 1, commit: 2, ..Default::default() }).expect("hard state");
    store.set_conf_state(&ConfState { voters: vec![1, 2, 3], ..Default::default() }).expect("conf state");
    store.append(&[Entry { index: 3, term: 2, ..Default::default() }]).expect("overwrite a suffix");
    store.compact(&SnapshotMetadata { index: 1, term: 1, ..Default::default() }).expect("compact");
    store.sync().expect("sync");
    let segment = disk.read(&segment_name(1)).expect("the first segment");
    let mut torn = segment.clone();
    torn.truncate(segment.len() - 5);
    let mut flipped = segment.clone();
    flipped[20] ^= 0x04;
    vec![("written", segment), ("torn-tail", torn), ("bit-flip", flipped), ("empty", Vec::new())]
}

fn log_roundtrip_seeds() -> Seeds {
    vec![
        // Small segments; append 3 entries, hard state, conf state, sync.
        ("append-and-state", vec![0, 0, 0, 0, 2, 0, 1, 1, 4, b'a', b'b', b'c', b'd', 1, 1, 1, 1, 2, 2, 2, 3, 1, 5]),
        // Appends, a compaction, an overwrite, a snapshot restore.
        (
            "compact-restore",
            vec![
                1, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0, 0, 2, 0, 3, 1, 0, 2, 0, 1, 0, 5, 0, 2, 0, 1, 3, 0, 0, 4, 4, 0, 9, 2,
                1, 2, 5,
            ],
        ),
        ("many-appends", [0u8, 0, 0, 0, 1, 0, 1, 130, 8].repeat(12)),
    ]
}

/// A log entry's data: a write batch with one DDL op.
fn command_bytes(request_id: u64) -> Vec<u8> {
    let ddl = Op { kind: Some(op::Kind::Ddl("CREATE TABLE x (a)".into())) };
    let write = Write { request_id, ops: vec![ddl] };
    Command { kind: Some(deeb_proto::command::Kind::WriteBatch(WriteBatch { proposer: 1, writes: vec![write] })) }
        .encode_to_vec()
}

fn command_seeds() -> Seeds {
    let changesets: Vec<Op> =
        changeset_seeds().into_iter().map(|(_, changeset)| Op { kind: Some(op::Kind::Changeset(changeset)) }).collect();
    let writes = vec![
        Write { request_id: 7, ops: vec![Op { kind: Some(op::Kind::Ddl("CREATE TABLE v (a PRIMARY KEY)".into())) }] },
        Write { request_id: 8, ops: changesets },
    ];
    let batch = WriteBatch { proposer: 3, writes };
    let command = Command { kind: Some(deeb_proto::command::Kind::WriteBatch(batch)) };
    vec![("ddl", command_bytes(1)), ("changesets", command.encode_to_vec()), ("empty-command", Vec::new())]
}

fn raft_message(msg_type: MessageType, from: u64, term: u64) -> Message {
    let mut message = Message { from, to: 1, term, ..Default::default() };
    message.set_msg_type(msg_type);
    message
}

fn peer_message_seeds() -> Seeds {
    let mut append = raft_message(MessageType::MsgAppend, 2, 2);
    (append.index, append.log_term, append.commit) = (3, 1, 4);
    append.set_entries(
        (4..=5)
            .map(|index| Entry { index, term: 2, data: command_bytes(index).into(), ..Default::default() })
            .collect::<Vec<_>>()
            .into(),
    );
    let mut heartbeat = raft_message(MessageType::MsgHeartbeat, 2, 2);
    heartbeat.commit = 3;
    let mut vote = raft_message(MessageType::MsgRequestVote, 3, 5);
    (vote.index, vote.log_term) = (9, 4);
    let mut append_response = raft_message(MessageType::MsgAppendResponse, 2, 2);
    append_response.index = 3;
    let mut read_index = raft_message(MessageType::MsgReadIndex, 2, 2);
    read_index.set_entries(vec![Entry { data: b"ctx".to_vec().into(), ..Default::default() }].into());
    let mut seeds = Vec::new();
    for (name, mode, messages) in [
        ("follower-append", 1u8, vec![append.clone(), heartbeat.clone()]),
        ("follower-vote", 3, vec![vote.clone()]),
        (
            "leader-responses",
            0,
            vec![append_response, read_index, raft_message(MessageType::MsgHeartbeatResponse, 2, 2)],
        ),
        ("leader-higher-term", 2, vec![vote, append, heartbeat]),
    ] {
        let messages =
            messages.iter().map(|message| message.write_to_bytes().expect("encode a raft message")).collect();
        let batch = RaftBatch { from: 2, messages, from_address: "node-2:7000".into() };
        let mut bytes = vec![mode];
        bytes.extend(batch.encode_to_vec());
        seeds.push((name, bytes));
    }
    seeds
}

fn snapshot_chunk_seeds() -> Seeds {
    let (state_machine, dir) = fuzz_checks::scratch_state_machine();
    let path = dir.path().join("snapshot.db");
    state_machine.create_snapshot(&path).expect("create a snapshot");
    let file = fs::read(&path).expect("read the snapshot");
    vec![("real-snapshot", snapshot_stream(&file, 3)), ("tiny-file", snapshot_stream(b"not a database", 2))]
}

/// A length-delimited chunk stream of `file`, with its header on the first.
fn snapshot_stream(file: &[u8], chunks: usize) -> Vec<u8> {
    let (index, term) = (10, 5);
    let mut message = raft_message(MessageType::MsgSnapshot, 2, term);
    let mut snapshot = Snapshot::default();
    let metadata = snapshot.mut_metadata();
    (metadata.index, metadata.term) = (index, term);
    metadata.set_conf_state(ConfState { voters: vec![1, 2, 3], ..Default::default() });
    message.set_snapshot(snapshot);
    let header = SnapshotHeader {
        from: 2,
        index,
        term,
        total_bytes: file.len() as u64,
        raft_message: message.write_to_bytes().expect("encode MsgSnapshot"),
        crc32c: crc32c::crc32c(file),
    };
    let mut stream = Vec::new();
    let chunk_bytes = file.len().div_ceil(chunks);
    for (number, data) in file.chunks(chunk_bytes).enumerate() {
        let chunk = SnapshotChunk {
            header: (number == 0).then(|| header.clone()),
            offset: (number * chunk_bytes) as u64,
            data: data.to_vec(),
        };
        stream.extend(chunk.encode_length_delimited_to_vec());
    }
    stream
}

fn statement(sql: &str, params: Vec<Value>) -> Statement {
    Statement { sql: sql.into(), params, ..Default::default() }
}

fn value(kind: value::Kind) -> Value {
    Value { kind: Some(kind) }
}

fn client_request_seeds() -> Seeds {
    let insert = statement(
        "INSERT INTO t (a, b, c, d) VALUES (?, ?, ?, ?)",
        vec![
            value(value::Kind::Integer(10)),
            value(value::Kind::Text("ten".into())),
            value(value::Kind::Blob(vec![1, 2])),
            value(value::Kind::Real(0.5)),
        ],
    );
    let named = Statement {
        sql: "UPDATE t SET b = :b WHERE a = :a".into(),
        named_params: vec![
            NamedValue { name: ":b".into(), value: Some(value(value::Kind::Text("uno".into()))) },
            NamedValue { name: ":a".into(), value: Some(value(value::Kind::Integer(1))) },
        ],
        ..Default::default()
    };
    let execute = ExecuteRequest {
        statements: vec![
            insert,
            named,
            statement("DELETE FROM u WHERE x = 1", vec![]),
            statement("CREATE TABLE w (k INTEGER PRIMARY KEY, v)", vec![]),
            statement("INSERT INTO w (v) SELECT b FROM t", vec![]),
        ],
    };
    let failing = ExecuteRequest { statements: vec![statement("INSERT INTO missing VALUES (1)", vec![])] };
    let query = QueryRequest {
        statement: Some(statement("SELECT a, b, c, d FROM t WHERE a > ? ORDER BY a", vec![Value::default()])),
        consistency: 2,
        max_staleness_ms: 100,
        timeout_ms: 0,
    };
    let pragma = QueryRequest { statement: Some(statement("PRAGMA table_info(t)", vec![])), ..Default::default() };
    let with_mode = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    vec![
        ("execute", with_mode(0, execute.encode_to_vec())),
        ("execute-failing", with_mode(0, failing.encode_to_vec())),
        ("query", with_mode(1, query.encode_to_vec())),
        ("query-pragma", with_mode(1, pragma.encode_to_vec())),
    ]
}

/// Real changesets against the scratch schema, made by the leader path.
fn changeset_seeds() -> Seeds {
    let (mut state_machine, _dir) = fuzz_checks::scratch_state_machine();
    let mut seeds = Vec::new();
    for (name, sql) in [
        ("insert-t", "INSERT INTO t VALUES (5, 'five', x'0505', 5.5)"),
        ("update-t", "UPDATE t SET b = 'changed', d = 2 WHERE a <= 2"),
        ("delete-t", "DELETE FROM t WHERE a = 3"),
        ("insert-u", "INSERT INTO u VALUES (7, x'07'), (NULL, 'n')"),
        ("update-u", "UPDATE u SET y = 'z' WHERE x = 1"),
        ("delete-u", "DELETE FROM u"),
    ] {
        state_machine.begin_batch(2).expect("begin");
        let executed = state_machine.execute_request(&[statement(sql, vec![])]).expect("run").expect("valid SQL");
        state_machine.rollback_batch().expect("rollback");
        let Some(Op { kind: Some(op::Kind::Changeset(changeset)) }) = executed.ops.into_iter().next() else {
            panic!("{sql} produced no changeset");
        };
        seeds.push((name, changeset));
    }
    seeds
}
