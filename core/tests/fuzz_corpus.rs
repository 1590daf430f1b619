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
use fuzz_checks::sql_program::{decode_program, encode_program, Sql, FIXED};
use fuzz_checks::{run_batch, Mutations};
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

/// The structured seeds decode to what they were written from.
#[test]
fn sql_programs_round_trip() {
    for (name, program) in sql_programs() {
        assert_eq!(decode_program(&encode_program(&program), 8), program, "{name}");
    }
}

/// The check of `client_request` catches the foreign-key mutant: a follower
/// that applies with foreign keys on runs the cascade the changeset already
/// carries, and the check reports divergence.
#[test]
fn client_request_check_catches_followers_with_foreign_keys_on() {
    for name in ["sql-cascade", "sql-set-null", "sql-update-cascade"] {
        let program = program(name);
        let report = run_batch(&program, Mutations::default()).unwrap_or_else(|finding| panic!("{name}: {finding}"));
        assert!(report.outcomes.iter().all(Result::is_ok), "{name}: {report:?}");
        let mutant = Mutations { follower_foreign_keys: true, ..Mutations::default() };
        let finding = run_batch(&program, mutant).expect_err("the mutant is caught");
        assert!(finding.contains("divergence"), "{name}: {finding}");
    }
}

/// A request that rolls the batch transaction back fails alone: the
/// others are committed on leader and follower, and the check would see it
/// if the leader dropped them (mutant `skip_rerun`).
#[test]
fn client_request_check_requires_the_other_requests_of_a_rolled_back_batch() {
    let program = program("sql-or-rollback");
    let report = run_batch(&program, Mutations::default()).unwrap_or_else(|finding| panic!("{finding}"));
    let failed: Vec<usize> = (0..program.len()).filter(|&i| report.outcomes[i].is_err()).collect();
    assert_eq!(failed, vec![2], "{report:?}");
    assert!(report.outcomes[2].as_ref().unwrap_err().contains("UNIQUE constraint failed"), "{report:?}");
    assert_eq!(report.rollbacks, 1);
    assert!(report.rerun_alone, "the successful requests were compared with a run of their own");
    let mutant = Mutations { skip_rerun: true, ..Mutations::default() };
    let finding = run_batch(&program, mutant).expect_err("the mutant is caught");
    assert!(finding.contains("lost its effects"), "{finding}");
}

/// Each kind of failure the schema offers is a request error, never a
/// finding, and the requests around it commit.
#[test]
fn client_request_failures_are_the_requests_own() {
    let report = run_batch(&program("sql-raise"), Mutations::default()).unwrap_or_else(|finding| panic!("{finding}"));
    let errors: Vec<String> = report.outcomes.iter().map(|o| o.clone().err().unwrap_or_default()).collect();
    assert!(errors[0].is_empty() && errors[4].is_empty(), "{errors:?}");
    for (number, expected) in [(1, "a: rollback"), (2, "a: abort"), (3, "a: fail"), (5, "p: rollback")] {
        assert!(errors[number].contains(expected), "request {number}: {errors:?}");
    }
    assert_eq!(report.rollbacks, 2);
    let report =
        run_batch(&program("sql-deferred"), Mutations::default()).unwrap_or_else(|finding| panic!("{finding}"));
    assert!(report.outcomes[0].is_ok() && report.outcomes[2].is_ok(), "{report:?}");
    assert!(report.outcomes[1].as_ref().unwrap_err().contains("deferred"), "{report:?}");
}

/// The statements of the structured seed `name`.
fn program(name: &str) -> Vec<Vec<Statement>> {
    let (_, program) = sql_programs().into_iter().find(|(seed, _)| *seed == name).expect("a seed of that name");
    program.iter().map(|request| request.iter().map(Sql::statement).collect()).collect()
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
    let write = Write { request_id, ops: vec![ddl], ..Default::default() };
    Command {
        kind: Some(deeb_proto::command::Kind::WriteBatch(WriteBatch {
            proposer: 1,
            writes: vec![write],
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

fn command_seeds() -> Seeds {
    let changesets: Vec<Op> =
        changeset_seeds().into_iter().map(|(_, changeset)| Op { kind: Some(op::Kind::Changeset(changeset)) }).collect();
    let writes = vec![
        Write {
            request_id: 7,
            ops: vec![Op { kind: Some(op::Kind::Ddl("CREATE TABLE v (a PRIMARY KEY)".into())) }],
            ..Default::default()
        },
        Write { request_id: 8, ops: changesets, ..Default::default() },
    ];
    let batch = WriteBatch { proposer: 3, writes, ..Default::default() };
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
        let batch = RaftBatch {
            from: 2,
            messages,
            from_address: "node-2:7000".into(),
            from_client_address: "node-2:7001".into(),
            from_http_address: String::new(),
            relayed: Vec::new(),
            from_identity: 0x7e57,
            cluster_id: 0xc1,
        };
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
        from_identity: 0,
        cluster_id: 0,
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
        ..Default::default()
    };
    let failing =
        ExecuteRequest { statements: vec![statement("INSERT INTO missing VALUES (1)", vec![])], ..Default::default() };
    let query = QueryRequest {
        statement: Some(statement("SELECT a, b, c, d FROM t WHERE a > ? ORDER BY a", vec![Value::default()])),
        consistency: 2,
        max_staleness_ms: 100,
        timeout_ms: 0,
    };
    let pragma = QueryRequest { statement: Some(statement("PRAGMA table_info(t)", vec![])), ..Default::default() };
    let rollback_batch = [
        ExecuteRequest {
            statements: vec![statement("INSERT INTO p (id, name, n) VALUES (5, 'n5', 5)", vec![])],
            ..Default::default()
        },
        ExecuteRequest {
            statements: vec![statement("INSERT INTO a (k, v) VALUES ('k5', 5)", vec![])],
            ..Default::default()
        },
        ExecuteRequest {
            statements: vec![statement("INSERT OR ROLLBACK INTO p (id, name, n) VALUES (1, 'x', 0)", vec![])],
            ..Default::default()
        },
        ExecuteRequest {
            statements: vec![statement(
                "INSERT INTO c (id, pid, v) VALUES (?, ?, 'after')",
                vec![value(value::Kind::Integer(5)), value(value::Kind::Integer(5))],
            )],
            ..Default::default()
        },
    ];
    let query_fk = QueryRequest {
        statement: Some(statement("SELECT p.id, count(c.id) FROM p LEFT JOIN c ON c.pid = p.id GROUP BY p.id", vec![])),
        ..Default::default()
    };
    let with_mode = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    let mut seeds = vec![
        ("execute", with_mode(0, execute.encode_to_vec())),
        ("execute-failing", with_mode(0, failing.encode_to_vec())),
        ("query", with_mode(1, query.encode_to_vec())),
        ("query-pragma", with_mode(1, pragma.encode_to_vec())),
        ("query-join", with_mode(1, query_fk.encode_to_vec())),
        (
            "batch-or-rollback",
            with_mode(4, rollback_batch.iter().flat_map(|request| request.encode_length_delimited_to_vec()).collect()),
        ),
    ];
    for (name, program) in sql_programs() {
        seeds.push((name, with_mode(2, encode_program(&program))));
    }
    seeds
}

/// Structured `client_request` programs (requests of statements) over the
/// target's schema, one per surface of issue 9.
fn sql_programs() -> Vec<(&'static str, Vec<Vec<Sql>>)> {
    use fuzz_checks::sql_program::{Child, Conflict, KvWrite, ParentColumn, Upsert};
    let fixed = |sql: &str| Sql::Fixed(FIXED.iter().position(|fixed| *fixed == sql).expect("a FIXED statement") as u8);
    let parent = |conflict, id, name, n, upsert| Sql::InsertParent { conflict, id, name, n, upsert };
    let child = |child, conflict, id, pid| Sql::InsertChild { child, conflict, id, pid, params: false };
    let auto = |conflict, key, v, rows, upsert| Sql::InsertAuto { conflict, key, v, rows, upsert };
    vec![
        // Parent 1 has children in c (cascade), grandchildren in cc (two levels).
        ("sql-cascade", vec![vec![Sql::DeleteParent { id: 1, from: false }]]),
        ("sql-set-null", vec![vec![Sql::DeleteParent { id: 2, from: false }]]),
        // r references 3 (RESTRICT): the request fails, the others commit.
        (
            "sql-restrict",
            vec![
                vec![Sql::DeleteParent { id: 3, from: false }],
                vec![Sql::DeleteChild { child: Child::Restrict, id: 1 }, Sql::DeleteParent { id: 3, from: false }],
            ],
        ),
        (
            "sql-update-cascade",
            vec![vec![Sql::UpdateParent { conflict: Conflict::Default, column: ParentColumn::Id, value: 7, id: 2, from: false }]],
        ),
        // Deferred: repaired within the request (ok), then left violated (fails).
        (
            "sql-deferred",
            vec![
                vec![child(Child::Deferred, Conflict::Default, 2, 7), parent(Conflict::Default, 7, 7, 0, Upsert::None)],
                vec![child(Child::Deferred, Conflict::Default, 3, 6)],
                vec![Sql::InsertChild { child: Child::Deferred, conflict: Conflict::Default, id: 4, pid: 7, params: true }],
            ],
        ),
        // OR ROLLBACK ends the batch transaction: the requests before it run again.
        (
            "sql-or-rollback",
            vec![
                vec![parent(Conflict::Default, 5, 5, 5, Upsert::None)],
                vec![auto(Conflict::Default, 5, 5, 1, Upsert::None)],
                vec![parent(Conflict::Rollback, 1, 0, 0, Upsert::None)],
                vec![child(Child::Cascade, Conflict::Default, 5, 5)],
            ],
        ),
        // a_guard raises ROLLBACK (v = -4), ABORT (-1), FAIL (-2), IGNORE (-3).
        (
            "sql-raise",
            vec![
                vec![auto(Conflict::Default, 4, 6, 1, Upsert::None)],
                vec![auto(Conflict::Default, 5, -4, 1, Upsert::None)],
                vec![auto(Conflict::Default, 5, -1, 1, Upsert::None)],
                vec![auto(Conflict::Default, 5, -2, 1, Upsert::None)],
                vec![auto(Conflict::Default, 6, -3, 1, Upsert::None), auto(Conflict::Default, 6, 2, 3, Upsert::Nothing)],
                vec![Sql::UpdateParent { conflict: Conflict::Default, column: ParentColumn::N, value: 52, id: 1, from: true }],
            ],
        ),
        (
            "sql-conflicts",
            vec![
                vec![parent(Conflict::Ignore, 1, 0, 0, Upsert::None), parent(Conflict::Replace, 6, 2, 1, Upsert::None)],
                vec![parent(Conflict::Fail, 6, 6, 0, Upsert::None)],
                vec![parent(Conflict::Abort, 1, 1, 1, Upsert::None)],
                vec![Sql::UpdateParent { conflict: Conflict::Replace, column: ParentColumn::Name, value: 3, id: 4, from: false }],
                vec![Sql::Generated { conflict: Conflict::Ignore, id: 3, x: 1 }, Sql::Generated { conflict: Conflict::Replace, id: 4, x: 2 }],
            ],
        ),
        (
            "sql-upsert",
            vec![
                vec![parent(Conflict::Default, 1, 1, 3, Upsert::Update), parent(Conflict::Default, 5, 2, 0, Upsert::UpdateKey)],
                vec![auto(Conflict::Default, 1, 3, 2, Upsert::Update), auto(Conflict::Default, 2, 1, 1, Upsert::UpdateKey)],
                vec![Sql::Kv { write: KvWrite::Upsert, key: 1, v: 1 }, Sql::Kv { write: KvWrite::Upsert, key: 1, v: 2 }],
                vec![Sql::Kv { write: KvWrite::Replace, key: 1, v: 3 }, Sql::Kv { write: KvWrite::Delete, key: 1, v: 0 }],
            ],
        ),
        (
            "sql-autoincrement",
            vec![
                vec![Sql::UpdateAuto { conflict: Conflict::Default, shift: 100 }],
                vec![auto(Conflict::Default, 5, 1, 2, Upsert::None), Sql::DeleteAuto { id: 0 }],
                vec![fixed("INSERT INTO a DEFAULT VALUES"), fixed("UPDATE a SET id = id + 1000")],
                vec![fixed("INSERT OR REPLACE INTO a (k, v) VALUES ('k1', 5)")],
            ],
        ),
        (
            "sql-ddl",
            vec![
                vec![fixed("CREATE TRIGGER p_keep BEFORE DELETE ON p WHEN OLD.id = 3 BEGIN SELECT RAISE(ROLLBACK, 'keep 3'); END")],
                vec![Sql::DeleteChild { child: Child::Restrict, id: 1 }, Sql::DeleteParent { id: 2, from: true }],
                vec![fixed("ALTER TABLE p ADD COLUMN extra TEXT DEFAULT 'e'"), fixed("CREATE UNIQUE INDEX p_n ON p (n)")],
                vec![fixed("DROP TABLE c")],
                vec![fixed("DROP TABLE cc"), fixed("DROP TRIGGER a_guard"), auto(Conflict::Default, 6, -4, 1, Upsert::None)],
            ],
        ),
        (
            "sql-limits",
            vec![
                vec![fixed("INSERT INTO p (id, name, n) VALUES (99, 'n99', 0)")],
                vec![fixed(FIXED[0])],
                vec![fixed("INSERT INTO kv VALUES ('big', zeroblob(2000000))")],
                vec![fixed("INSERT INTO kv VALUES ('b1', zeroblob(400000)), ('b2', zeroblob(400000)), ('b3', zeroblob(400000))")],
                vec![fixed("CREATE TABLE temp.tt (x)")],
                vec![fixed("DELETE FROM sqlite_sequence WHERE name = 'a'")],
            ],
        ),
        (
            "sql-raw",
            vec![
                vec![Sql::Raw("INSERT INTO pv (id, name, n) VALUES (2, 'viewed', 9)".into())],
                vec![Sql::Raw("REPLACE INTO p (id, name, n) SELECT id, name, n + 1 FROM p".into())],
            ],
        ),
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
