//! State machine tests: determinism across replicas, divergence, refusals,
//! reader behaviour and snapshots.

use deeb_proto::value::Kind;
use deeb_proto::{op, NamedValue, QueryChunk, Statement, Value, Write, WriteBatch};
use tempfile::TempDir;

use super::*;

fn st(sql: &str) -> Statement {
    Statement { sql: sql.to_string(), ..Statement::default() }
}

fn stp(sql: &str, params: Vec<Value>) -> Statement {
    Statement { sql: sql.to_string(), params, ..Statement::default() }
}

fn int(i: i64) -> Value {
    Value { kind: Some(Kind::Integer(i)) }
}

fn open(dir: &TempDir, name: &str) -> SqliteStateMachine {
    SqliteStateMachine::open(&dir.path().join(name), 7).expect("open")
}

/// Runs requests as one leader batch and commits it; returns the batch.
fn leader_batch(
    sm: &mut SqliteStateMachine,
    index: u64,
    requests: &[Vec<Statement>],
) -> (WriteBatch, Vec<Result<Executed, RequestError>>) {
    sm.begin_batch(index).expect("begin");
    let mut batch = WriteBatch { proposer: 1, writes: vec![], ..Default::default() };
    let mut results = vec![];
    for (i, req) in requests.iter().enumerate() {
        let r = sm.execute_request(req).expect("execute");
        if let Ok(ex) = &r {
            batch.writes.push(Write { request_id: i as u64, ops: ex.ops.clone(), ..Write::default() });
        }
        results.push(r);
    }
    sm.commit_batch(Applied { index, term: 1 }).expect("commit");
    (batch, results)
}

fn query_all(sm: &SqliteStateMachine, statement: &Statement) -> Result<Vec<QueryChunk>, QueryError> {
    let reader = sm.reader().expect("reader");
    let mut chunks = vec![];
    reader.query(statement, 1000, 1 << 20, &mut |c| {
        chunks.push(c);
        true
    })?;
    Ok(chunks)
}

fn scalar(sm: &SqliteStateMachine, sql: &str) -> Value {
    let chunks = query_all(sm, &st(sql)).expect("query");
    chunks[0].rows[0].values[0].clone()
}

fn workload() -> Vec<Vec<Statement>> {
    vec![
        vec![
            st("CREATE TABLE auto(id INTEGER PRIMARY KEY AUTOINCREMENT, r INTEGER, b BLOB, t TEXT)"),
            st("CREATE TABLE nopk(a, b)"),
            st("CREATE TABLE log(msg TEXT)"),
            st("CREATE TABLE kv(k TEXT PRIMARY KEY, v REAL) WITHOUT ROWID"),
            st("CREATE TRIGGER auto_log AFTER INSERT ON auto BEGIN INSERT INTO log(msg) VALUES ('inserted ' || new.id); END"),
            st("CREATE INDEX auto_r ON auto(r)"),
        ],
        vec![
            st("INSERT INTO auto(r, b, t) VALUES (random(), randomblob(8), datetime('now'))"),
            st("INSERT INTO auto(r, b, t) SELECT random(), randomblob(8), datetime('now') FROM auto"),
            st("INSERT INTO auto(r, b, t) SELECT random(), randomblob(8), datetime('now') FROM auto"),
            st("DELETE FROM auto WHERE id = (SELECT max(id) FROM auto)"),
        ],
        vec![
            st("INSERT INTO nopk VALUES (1, 'a'), (2, 'b'), (3, 'c'), (2, 'b')"),
            st("UPDATE nopk SET b = 'z' WHERE a = 2"),
            st("DELETE FROM nopk WHERE a = 1"),
            stp("INSERT INTO kv VALUES (?, ?)", vec![Value { kind: Some(Kind::Text("x".into())) }, Value { kind: Some(Kind::Real(1.5)) }]),
        ],
        vec![
            st("ALTER TABLE nopk ADD COLUMN c INTEGER DEFAULT 42"),
            st("UPDATE nopk SET c = random() WHERE a = 3"),
            st("INSERT INTO auto(r) VALUES (abs(random()) % 10)"),
        ],
    ]
}

#[test]
fn replicas_converge_on_workload() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    let (batch, results) = leader_batch(&mut leader, 1, &workload());
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    follower.apply_batch(&batch, Applied { index: 1, term: 1 }).expect("apply");
    assert_eq!(leader.digest().expect("digest"), follower.digest().expect("digest"));
    assert_eq!(follower.applied(), Applied { index: 1, term: 1 });
    assert_eq!(leader.applied(), follower.applied());
    // Triggers ran once on the follower (changes applied, trigger off).
    assert_eq!(scalar(&follower, "SELECT count(*) FROM log"), int(5));
    assert_eq!(
        scalar(&follower, "SELECT seq FROM sqlite_sequence WHERE name = 'auto'"),
        scalar(&leader, "SELECT seq FROM sqlite_sequence WHERE name = 'auto'")
    );
    // The leader's DDL went as text, DML as changesets.
    let ops: Vec<_> = batch.writes[0].ops.iter().filter(|o| matches!(o.kind, Some(op::Kind::Ddl(_)))).collect();
    assert_eq!(ops.len(), 6);
}

#[test]
fn failing_request_in_batch_is_rolled_back_alone() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    let requests = vec![
        vec![st("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE)"), st("INSERT INTO t(v) VALUES ('a')")],
        vec![st("INSERT INTO t(v) VALUES ('b')"), st("CREATE TABLE u(x)"), st("INSERT INTO t(v) VALUES ('a')")],
        vec![st("INSERT INTO t(v) VALUES ('c')")],
    ];
    let (batch, results) = leader_batch(&mut leader, 1, &requests);
    assert!(results[0].is_ok());
    let err = results[1].clone().expect_err("second request fails");
    assert_eq!(err.statement_index, 2);
    assert!(err.message.contains("UNIQUE"), "{err}");
    assert!(results[2].is_ok());
    follower.apply_batch(&batch, Applied { index: 1, term: 1 }).expect("apply");
    assert_eq!(leader.digest().expect("d"), follower.digest().expect("d"));
    assert_eq!(
        scalar(&leader, "SELECT group_concat(v) FROM (SELECT v FROM t ORDER BY v)"),
        Value { kind: Some(Kind::Text("a,c".into())) }
    );
    assert_eq!(scalar(&leader, "SELECT count(*) FROM sqlite_master WHERE name = 'u'"), int(0));
}

#[test]
fn results_report_rows_and_last_insert_id() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = open(&dir, "a.db");
    let (_, results) = leader_batch(
        &mut sm,
        1,
        &[vec![
            st("CREATE TABLE t(id INTEGER PRIMARY KEY, v)"),
            st("INSERT INTO t(v) VALUES (1), (2)"),
            st("UPDATE t SET v = 3"),
            st("SELECT * FROM t"),
        ]],
    );
    let ex = results[0].clone().expect("ok");
    let rows: Vec<u64> = ex.results.iter().map(|r| r.rows_affected).collect();
    assert_eq!(rows, vec![0, 2, 2, 0]);
    let ids: Vec<i64> = ex.results.iter().map(|r| r.last_insert_id).collect();
    // Only a statement's own inserts count: no stale id from earlier (or
    // internal) writes, which would differ from leader to leader.
    assert_eq!(ids, vec![0, 2, 0, 0]);
}

fn changeset_of(sm: &mut SqliteStateMachine, index: u64, sql: &str) -> WriteBatch {
    leader_batch(sm, index, &[vec![st(sql)]]).0
}

#[test]
fn missing_table_is_divergence() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    leader_batch(&mut leader, 1, &[vec![st("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")]]);
    let batch = changeset_of(&mut leader, 2, "INSERT INTO t VALUES (1, 'x')");
    let err = follower.apply_batch(&batch, Applied { index: 2, term: 1 }).expect_err("diverges");
    match err {
        ApplyError::Divergence { index, reason } => {
            assert_eq!(index, 2);
            assert!(reason.contains("\"t\""), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(follower.applied(), Applied::default());
}

#[test]
fn column_mismatch_and_old_row_mismatch_are_divergence() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    let (b1, _) = leader_batch(
        &mut leader,
        1,
        &[vec![st("CREATE TABLE t(id INTEGER PRIMARY KEY, v)"), st("INSERT INTO t VALUES (1, 'x')")]],
    );
    follower.apply_batch(&b1, Applied { index: 1, term: 1 }).expect("apply");
    // The follower's row differs (written behind deeb's back).
    follower.writer_mut().execute_batch("UPDATE t SET v = 'other'").expect("tamper");
    let b2 = changeset_of(&mut leader, 2, "UPDATE t SET v = 'y' WHERE id = 1");
    let err = follower.apply_batch(&b2, Applied { index: 2, term: 1 }).expect_err("diverges");
    assert!(matches!(&err, ApplyError::Divergence { reason, .. } if reason.contains("\"t\"")), "{err}");
    // Rolled back: the follower still works and still has its row.
    assert_eq!(follower.applied(), Applied { index: 1, term: 1 });
    assert_eq!(scalar(&follower, "SELECT v FROM t"), Value { kind: Some(Kind::Text("other".into())) });
    follower.apply_empty(Applied { index: 2, term: 1 }).expect("still works");
    // Column count mismatch.
    follower.writer_mut().execute_batch("ALTER TABLE t ADD COLUMN extra").expect("tamper");
    let b3 = changeset_of(&mut leader, 3, "INSERT INTO t VALUES (5, 'z')");
    let err = follower.apply_batch(&b3, Applied { index: 3, term: 1 }).expect_err("diverges");
    assert!(matches!(&err, ApplyError::Divergence { reason, .. } if reason.contains("column")), "{err}");
}

fn refused(sm: &mut SqliteStateMachine, sql: &str) -> String {
    sm.begin_batch(9).expect("begin");
    let r = sm.execute_request(&[st(sql)]).expect("execute");
    sm.rollback_batch().expect("rollback");
    r.expect_err(sql).message
}

#[test]
fn refused_statements_on_write_path() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = open(&dir, "a.db");
    leader_batch(&mut sm, 1, &[vec![st("CREATE TABLE t(a)"), st("INSERT INTO t VALUES (1)")]]);
    for (sql, needle) in [
        ("BEGIN", "BEGIN"),
        ("  commit", "COMMIT"),
        ("ATTACH 'x.db' AS x", "ATTACH"),
        ("PRAGMA user_version = 3", "PRAGMA"),
        ("VACUUM", "VACUUM"),
        ("INSERT INTO _deeb_meta VALUES (1, 1, 1, NULL)", "_deeb_"),
        ("UPDATE _deeb_members SET address = 'x'", "_deeb_"),
        ("INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)", "one statement"),
        ("CREATE TABLE c AS SELECT * FROM t", "INSERT INTO"),
        ("CREATE TEMP TABLE tt(a)", "temporary"),
        ("UPDATE sqlite_sequence SET seq = 5", "sqlite_sequence"),
        ("DELETE FROM sqlite_sequence", "sqlite_sequence"),
        ("CREATE TABLE p(a DEFAULT (?))", "not constant"),
    ] {
        let message = refused(&mut sm, sql);
        assert!(message.contains(needle), "{sql}: {message}");
    }
    assert_eq!(scalar(&sm, "SELECT count(*) FROM t"), int(1));
}

#[test]
fn refused_statements_on_read_path() {
    let dir = TempDir::new().expect("tempdir");
    let sm = open(&dir, "a.db");
    for sql in [
        "BEGIN",
        "COMMIT",
        "ATTACH 'x.db' AS x",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA user_version",
        "PRAGMA read_uncommitted = 1",
        "PRAGMA read_uncommitted(1)",
        "CREATE TABLE x(a)",
        "CREATE TEMP TABLE x(a)",
        "INSERT INTO _deeb_members VALUES (1, 'a')",
    ] {
        let err = query_all(&sm, &st(sql)).expect_err(sql);
        assert!(matches!(err, QueryError::NotReadOnly(_)), "{sql}: {err:?}");
    }
    let err = query_all(&sm, &st("SELECT * FROM nope")).expect_err("sql error");
    assert!(matches!(&err, QueryError::Sql(m) if m.contains("no such table")), "{err:?}");
    assert!(query_all(&sm, &st("PRAGMA table_info(_deeb_members)")).is_ok());
    // Reading the flag is allowed (SQLAlchemy asks for it); setting it is not.
    assert!(query_all(&sm, &st("PRAGMA read_uncommitted")).is_ok());
}

#[test]
fn reader_chunks_and_types() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = open(&dir, "a.db");
    leader_batch(
        &mut sm,
        1,
        &[vec![
            st("CREATE TABLE n(i INTEGER PRIMARY KEY, label VARCHAR(10))"),
            st("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2500) INSERT INTO n SELECT x, 'row' || x FROM c"),
        ]],
    );
    let chunks = query_all(&sm, &st("SELECT i, label, i * 2 AS dbl FROM n ORDER BY i")).expect("query");
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks.iter().map(|c| c.rows.len()).collect::<Vec<_>>(), vec![1000, 1000, 500]);
    let types: Vec<(&str, &str)> =
        chunks[0].columns.iter().map(|c| (c.name.as_str(), c.declared_type.as_str())).collect();
    assert_eq!(types, vec![("i", "INTEGER"), ("label", "VARCHAR(10)"), ("dbl", "")]);
    assert!(chunks[1].columns.is_empty() && chunks[2].columns.is_empty());
    // Byte bound.
    let reader = sm.reader().expect("reader");
    let mut count = 0;
    reader
        .query(&st("SELECT label FROM n"), 1000, 100, &mut |c| {
            assert!(c.rows.len() < 20);
            count += 1;
            true
        })
        .expect("query");
    assert!(count > 100);
    // Early stop.
    let mut seen = 0;
    reader
        .query(&st("SELECT * FROM n"), 10, 1 << 20, &mut |_| {
            seen += 1;
            seen < 2
        })
        .expect("query");
    assert_eq!(seen, 2);
    // Empty result still sends the columns.
    let chunks = query_all(&sm, &st("SELECT i FROM n WHERE i < 0")).expect("query");
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].columns.len(), 1);
    assert!(chunks[0].rows.is_empty());
}

#[test]
fn params_and_value_round_trip() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = open(&dir, "a.db");
    let values = vec![
        Value { kind: None },
        int(-7),
        Value { kind: Some(Kind::Real(2.5)) },
        Value { kind: Some(Kind::Text("héllo".into())) },
        Value { kind: Some(Kind::Blob(vec![0, 1, 255])) },
    ];
    let (_, results) = leader_batch(
        &mut sm,
        1,
        &[vec![
            st("CREATE TABLE v(id INTEGER PRIMARY KEY, x)"),
            stp("INSERT INTO v(x) VALUES (?), (?), (?2), (?4), (?5)", values.clone()),
        ]],
    );
    assert!(results[0].is_ok(), "{:?}", results[0]);
    leader_batch(
        &mut sm,
        2,
        &[vec![st("DELETE FROM v"), stp("INSERT INTO v(x) VALUES (?), (?), (?), (?), (?)", values.clone())]],
    );
    let chunks = query_all(&sm, &stp("SELECT x FROM v WHERE id >= ? ORDER BY id", vec![int(0)])).expect("query");
    let got: Vec<Value> = chunks[0].rows.iter().map(|r| r.values[0].clone()).collect();
    assert_eq!(got, values);
    let named = Statement {
        sql: "SELECT x FROM v WHERE x = :a OR x = @b".into(),
        named_params: vec![
            NamedValue { name: ":a".into(), value: Some(int(-7)) },
            NamedValue { name: "@b".into(), value: Some(Value { kind: Some(Kind::Real(2.5)) }) },
        ],
        ..Statement::default()
    };
    let chunks = query_all(&sm, &named).expect("named");
    assert_eq!(chunks[0].rows.len(), 2);
    let both = Statement { params: vec![int(1)], ..named };
    assert!(matches!(query_all(&sm, &both), Err(QueryError::Sql(m)) if m.contains("not both")));
    let wrong = stp("SELECT ?", vec![]);
    assert!(matches!(query_all(&sm, &wrong), Err(QueryError::Sql(_))));
}

#[test]
fn reader_sees_only_committed_batches() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = open(&dir, "a.db");
    leader_batch(&mut sm, 1, &[vec![st("CREATE TABLE t(a)")]]);
    let reader = sm.reader().expect("reader");
    let count = |r: &Reader| {
        let mut v = Value::default();
        r.query(&st("SELECT count(*) FROM t"), 10, 1000, &mut |c| {
            v = c.rows[0].values[0].clone();
            true
        })
        .expect("q");
        v
    };
    sm.begin_batch(2).expect("begin");
    sm.execute_request(&[st("INSERT INTO t VALUES (1)")]).expect("exec").expect("ok");
    assert_eq!(count(&reader), int(0));
    sm.commit_batch(Applied { index: 2, term: 1 }).expect("commit");
    assert_eq!(count(&reader), int(1));
}

#[test]
fn membership_and_empty_entries() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = open(&dir, "a.db");
    assert_eq!(sm.conf_state().expect("cs"), None);
    sm.apply_membership(Applied { index: 1, term: 1 }, b"cs1", &[(1, Some("a:1".into())), (2, Some("b:2".into()))])
        .expect("m");
    sm.apply_membership(Applied { index: 2, term: 1 }, b"cs2", &[(1, None)]).expect("m");
    sm.apply_empty(Applied { index: 3, term: 2 }).expect("e");
    assert_eq!(sm.conf_state().expect("cs"), Some(b"cs2".to_vec()));
    assert_eq!(sm.members().expect("m"), vec![(2, "b:2".to_string())]);
    drop(sm);
    let sm = open(&dir, "a.db");
    assert_eq!(sm.applied(), Applied { index: 3, term: 2 });
}

#[test]
fn snapshot_create_and_install() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut other = open(&dir, "other.db");
    leader_batch(&mut leader, 1, &workload());
    leader.apply_membership(Applied { index: 2, term: 1 }, b"cs", &[(1, Some("a".into()))]).expect("m");
    let committed = leader.digest().expect("d");
    // A batch is open while the snapshot is taken: not included.
    leader.begin_batch(3).expect("begin");
    leader.execute_request(&[st("INSERT INTO log VALUES ('uncommitted')")]).expect("exec").expect("ok");
    let snap = dir.path().join("snap.db");
    let applied = leader.create_snapshot(&snap).expect("snapshot");
    assert_eq!(applied, Applied { index: 2, term: 1 });
    leader.commit_batch(Applied { index: 3, term: 1 }).expect("commit");
    let reader_before = other.reader().expect("reader");
    let installed = other.install_snapshot(&snap).expect("install");
    assert_eq!(installed, applied);
    assert_eq!(other.applied(), applied);
    assert_eq!(other.digest().expect("d"), committed);
    assert_eq!(other.members().expect("m"), vec![(1, "a".to_string())]);
    let mut rows = 0;
    reader_before
        .query(&st("SELECT * FROM log"), 100, 1 << 20, &mut |c| {
            rows += c.rows.len();
            true
        })
        .expect("reader still works");
    assert_eq!(rows, 5);
    // Still WAL and writable.
    leader_batch(&mut other, 3, &[vec![st("INSERT INTO log VALUES ('after')")]]);
    drop(other);
    let reopened = open(&dir, "other.db");
    assert_eq!(reopened.applied(), Applied { index: 3, term: 1 });
}

#[test]
fn garbage_snapshot_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = open(&dir, "a.db");
    leader_batch(&mut sm, 1, &[vec![st("CREATE TABLE t(a)"), st("INSERT INTO t VALUES (1)")]]);
    let before = sm.digest().expect("d");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).expect("write");
    assert!(sm.install_snapshot(&garbage).is_err());
    // A valid SQLite file that is not a deeb snapshot.
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign).and_then(|c| c.execute_batch("CREATE TABLE z(a)")).expect("foreign");
    assert!(sm.install_snapshot(&foreign).is_err());
    // A truncated snapshot.
    let snap = dir.path().join("snap.db");
    sm.create_snapshot(&snap).expect("snap");
    let bytes = std::fs::read(&snap).expect("read");
    let truncated = dir.path().join("trunc.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    assert!(sm.install_snapshot(&truncated).is_err());
    assert_eq!(sm.digest().expect("d"), before);
    assert_eq!(sm.applied(), Applied { index: 1, term: 1 });
}

#[test]
fn leader_runs_are_reproducible() {
    let dir = TempDir::new().expect("tempdir");
    let mut a = open(&dir, "a.db");
    let mut b = open(&dir, "b.db");
    let req = [vec![st("CREATE TABLE r(x)")], vec![st("INSERT INTO r VALUES (random())")]];
    leader_batch(&mut a, 1, &req);
    leader_batch(&mut b, 1, &req);
    assert_eq!(scalar(&a, "SELECT x FROM r"), scalar(&b, "SELECT x FROM r"));
}

#[test]
fn triggers_cannot_write_internal_tables() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = open(&dir, "a.db");
    leader_batch(&mut sm, 1, &[vec![st("CREATE TABLE t(a)")]]);
    for (body, needle) in
        [("UPDATE _deeb_meta SET applied_index = 99", "_deeb_"), ("DELETE FROM sqlite_sequence", "sqlite_sequence")]
    {
        sm.begin_batch(2).expect("begin");
        let r = sm
            .execute_request(&[
                st(&format!("CREATE TRIGGER evil AFTER INSERT ON t BEGIN {body}; END")),
                st("INSERT INTO t VALUES (1)"),
            ])
            .expect("execute");
        sm.rollback_batch().expect("rollback");
        let err = r.expect_err("refused");
        assert_eq!(err.statement_index, 1);
        assert!(err.message.contains(needle), "{err}");
    }
    assert_eq!(sm.applied(), Applied { index: 1, term: 1 });
}

#[test]
fn dropping_autoincrement_table_replicates() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    let requests = [
        vec![
            st("CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, v)"),
            st("CREATE TABLE b(id INTEGER PRIMARY KEY AUTOINCREMENT, v)"),
        ],
        vec![st("INSERT INTO a(v) VALUES (1), (2)"), st("INSERT INTO b(v) VALUES (1)"), st("DELETE FROM a")],
        vec![st("DROP TABLE b")],
    ];
    let (batch, results) = leader_batch(&mut leader, 1, &requests);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    follower.apply_batch(&batch, Applied { index: 1, term: 1 }).expect("apply");
    assert_eq!(leader.digest().expect("d"), follower.digest().expect("d"));
    assert_eq!(scalar(&follower, "SELECT seq FROM sqlite_sequence WHERE name = 'a'"), int(2));
}

#[test]
fn reader_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Reader>();
}

/// Runs each request (statements separated by "; ") as its own leader batch
/// and applies it on the follower; panics if the follower diverges.
fn replicate(leader: &mut SqliteStateMachine, follower: &mut SqliteStateMachine, first: u64, requests: &[&str]) {
    for (i, request) in requests.iter().enumerate() {
        let index = first + i as u64;
        let statements: Vec<Statement> = request.split("; ").map(st).collect();
        let (batch, results) = leader_batch(leader, index, &[statements]);
        assert!(results[0].is_ok(), "{request}: {:?}", results[0]);
        follower.apply_batch(&batch, Applied { index, term: 1 }).unwrap_or_else(|e| panic!("{request}: {e}"));
    }
}

/// Rows that swap the values of a UNIQUE column between them: applied one
/// UPDATE at a time either order fails the constraint, and SQLite's own
/// remedy (random values in between) fails the CHECK. Differential seed
/// 11011463 (an upsert with OR REPLACE did this) stopped the followers.
#[test]
fn updates_swapping_unique_values_apply_on_followers() {
    let tables = [
        "CREATE TABLE t(k TEXT PRIMARY KEY, u TEXT NOT NULL UNIQUE CHECK(u IN ('A', 'B', 'C', 'X')), v) WITHOUT ROWID",
        "CREATE TABLE t(k INTEGER PRIMARY KEY, u TEXT NOT NULL UNIQUE CHECK(u IN ('A', 'B', 'C', 'X')), v)",
        "CREATE TABLE t(k TEXT PRIMARY KEY, u TEXT NOT NULL UNIQUE CHECK(u IN ('A', 'B', 'C', 'X')), v)",
        // No declared key: the leader replays its own changeset, so the
        // swap must apply there too.
        "CREATE TABLE t(k, u TEXT NOT NULL UNIQUE CHECK(u IN ('A', 'B', 'C', 'X')), v)",
    ];
    for create in tables {
        let dir = TempDir::new().expect("tempdir");
        let mut leader = open(&dir, "leader.db");
        let mut follower = open(&dir, "follower.db");
        replicate(
            &mut leader,
            &mut follower,
            1,
            &[
                create,
                // Not UTF-8, kept byte for byte by the rewritten changes.
                "INSERT INTO t VALUES (1, 'A', CAST(x'ff00fe' AS TEXT)), (2, 'B', 2.5), (3, 'X', x'00')",
                "UPDATE t SET u = 'C' WHERE k = 1; UPDATE t SET u = 'A', v = 'moved' WHERE k = 2; \
                 UPDATE t SET u = 'B' WHERE k = 1",
                // One statement that swaps them back: each changeset is the
                // net change of one statement, and this one nets two UPDATEs
                // (REPLACE deletes both rows, then each key is inserted again).
                "INSERT OR REPLACE INTO t VALUES (2, 'B', 'again'), (1, 'A', 1)",
            ],
        );
        assert_eq!(leader.digest().expect("d"), follower.digest().expect("d"), "{create}");
        let rows = query_all(&follower, &st("SELECT group_concat(k || u, ',' ORDER BY k) FROM t")).expect("q");
        assert_eq!(rows[0].rows[0].values[0], Value { kind: Some(Kind::Text("1A,2B,3X".into())) }, "{create}");
    }
}

/// The other order of applying UPDATEs does not hide a real divergence:
/// a follower with a UNIQUE index the leader lacks is stopped when the
/// leader's rows break it, and nothing of the batch is left applied.
#[test]
fn updates_that_break_a_follower_only_index_are_divergence() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    replicate(
        &mut leader,
        &mut follower,
        1,
        &["CREATE TABLE t(k INTEGER PRIMARY KEY, u)", "INSERT INTO t VALUES (1, 'A'), (2, 'B')"],
    );
    follower.writer_mut().execute_batch("CREATE UNIQUE INDEX behind_deebs_back ON t(u)").expect("tamper");
    let (batch, _) = leader_batch(&mut leader, 3, &[vec![st("UPDATE t SET u = 'A'")]]);
    let before = follower.digest().expect("d");
    let err = follower.apply_batch(&batch, Applied { index: 3, term: 1 }).expect_err("diverges");
    assert!(matches!(&err, ApplyError::Divergence { reason, .. } if reason.contains("INSERT on table \"t\"")), "{err}");
    assert_eq!(follower.digest().expect("d"), before);
    assert_eq!(follower.applied(), Applied { index: 2, term: 1 });
}

/// The rows of `t` in scan order (no ORDER BY), as text.
fn scan_order(sm: &SqliteStateMachine) -> String {
    // (Not k alone: the key's index covers it and is scanned in key order.)
    let chunks = query_all(sm, &st("SELECT group_concat(k || v, ',') FROM t")).expect("q");
    format!("{:?}", chunks[0].rows[0].values[0])
}

/// A table keyed by something other than INTEGER PRIMARY KEY numbers its
/// rows by a hidden rowid, and scans follow it. Followers keep the leader's
/// numbering, so a query without ORDER BY answers the same on every node
/// (differential seeds 9007735, 11002189 answered differently per node).
#[test]
fn hidden_rowids_are_replicated() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    let mut plain = open(&dir, "plain.db");
    let requests = [
        "CREATE TABLE t(k TEXT PRIMARY KEY, v)",
        "CREATE TABLE log(k TEXT PRIMARY KEY, n)",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT OR REPLACE INTO log VALUES (new.k, 1);END",
        "INSERT INTO t VALUES ('m', 1), ('c', 2), ('x', 3), ('a', 4), ('q', 5), ('b', 6), ('z', 7)",
        // REPLACE gives an existing key a new rowid on the leader; the
        // replica's changeset says UPDATE, which would keep the old one.
        "INSERT OR REPLACE INTO t VALUES ('c', 20), ('m', 10)",
        "DELETE FROM t WHERE k IN ('x', 'q'); INSERT INTO t VALUES ('y', 8), ('d', 9)",
    ];
    replicate(&mut leader, &mut follower, 1, &requests);
    for request in requests {
        plain.writer_mut().execute_batch(request).expect("plain SQLite");
    }
    let expected = "Value { kind: Some(Text(\"a4,b6,z7,c20,m10,y8,d9\")) }";
    assert_eq!(scan_order(&leader), expected);
    assert_eq!(scan_order(&follower), expected);
    assert_eq!(scan_order(&plain), expected, "the leader numbers rows as SQLite does");
    let log =
        |sm: &SqliteStateMachine| format!("{:?}", query_all(sm, &st("SELECT group_concat(k) FROM log")).expect("q"));
    assert_eq!(log(&leader), log(&follower));
    assert_eq!(log(&leader), log(&plain));
    // The digest covers hidden rowids: equal here, and a renumbered row shows.
    assert_eq!(leader.digest().expect("d"), follower.digest().expect("d"));
    let before = follower.digest().expect("d");
    follower.writer_mut().execute_batch("UPDATE t SET _rowid_ = 100 WHERE k = 'a'").expect("tamper");
    assert_ne!(follower.digest().expect("d"), before);
    follower.writer_mut().execute_batch("UPDATE t SET _rowid_ = 4 WHERE k = 'a'").expect("untamper");
    // A snapshot keeps them too.
    let snapshot = dir.path().join("snap.db");
    follower.create_snapshot(&snapshot).expect("snapshot");
    let mut installed = open(&dir, "installed.db");
    installed.install_snapshot(&snapshot).expect("install");
    assert_eq!(scan_order(&installed), expected);
}

/// A replica whose rows are numbered differently from the leader's, where
/// renumbering would need a rowid another row holds, is divergence.
#[test]
fn hidden_rowid_held_by_another_row_is_divergence() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    replicate(&mut leader, &mut follower, 1, &["CREATE TABLE t(k TEXT PRIMARY KEY)", "INSERT INTO t VALUES ('a')"]);
    // Behind deeb's back: the follower's row 'a' sits at rowid 2, and a
    // row the leader lacks holds rowid 1... then 'b' is the leader's 2nd.
    follower.writer_mut().execute_batch("UPDATE t SET _rowid_ = 5 WHERE k = 'a'").expect("tamper");
    let (batch, _) = leader_batch(&mut leader, 3, &[vec![st("INSERT INTO t VALUES ('b'), ('c')")]]);
    follower.writer_mut().execute_batch("INSERT INTO t(_rowid_, k) VALUES (2, 'zz')").expect("tamper");
    let before = follower.digest().expect("d");
    let err = follower.apply_batch(&batch, Applied { index: 3, term: 1 }).expect_err("diverges");
    assert!(matches!(&err, ApplyError::Divergence { reason, .. } if reason.contains("rowid")), "{err}");
    assert_eq!(follower.digest().expect("d"), before);
}

/// REPLACE of a row with the values it already has changes nothing a
/// changeset shows, but SQLite numbers the row anew: the leader keeps
/// SQLite's numbers and the replicas follow (differential seeds 1131,
/// 15006131; a key that is not UTF-8 makes the leader replay instead, and
/// nodes still agree).
#[test]
fn replace_with_same_values_keeps_rowids_equal() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut follower = open(&dir, "follower.db");
    let mut plain = open(&dir, "plain.db");
    let requests = [
        "CREATE TABLE t(k TEXT PRIMARY KEY, v)",
        "CREATE TABLE r(k TEXT PRIMARY KEY ON CONFLICT REPLACE, v)",
        "CREATE TABLE x(k TEXT PRIMARY KEY, v)",
        "INSERT INTO t VALUES ('a', 1), ('b', 2), ('c', 3)",
        "INSERT INTO r VALUES ('a', 1), ('b', 2), ('c', 3)",
        "INSERT INTO x VALUES (CAST(x'ff' AS TEXT), 1), ('b', 2)",
        "INSERT OR REPLACE INTO t SELECT k, v FROM t WHERE k <> 'b'",
        "INSERT INTO r SELECT k, v FROM r WHERE k <> 'b'",
        "UPDATE OR REPLACE t SET v = v",
        "REPLACE INTO x SELECT k, v FROM x",
    ];
    replicate(&mut leader, &mut follower, 1, &requests);
    for request in requests {
        plain.writer_mut().execute_batch(request).expect("plain SQLite");
    }
    assert_eq!(leader.digest().expect("d"), follower.digest().expect("d"));
    assert_eq!(scan_order(&leader), scan_order(&follower));
    assert_eq!(scan_order(&leader), scan_order(&plain), "the leader numbers rows as SQLite does");
    let order = |sm: &SqliteStateMachine, table: &str| {
        format!("{:?}", query_all(sm, &st(&format!("SELECT group_concat(k || v) FROM {table}"))).expect("q"))
    };
    assert_eq!(order(&leader, "r"), order(&plain, "r"));
    assert_eq!(order(&leader, "r"), order(&follower, "r"));
    assert_eq!(order(&leader, "x"), order(&follower, "x"));
}

/// A write statement's returned rows (RETURNING, a SELECT in a write
/// request) come back in its result; rows past the bound are the
/// statement's error.
#[test]
fn write_statements_return_their_rows() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    leader_batch(&mut leader, 1, &[vec![st("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")]]);
    let (_, results) = leader_batch(
        &mut leader,
        2,
        &[vec![
            st("INSERT INTO t(v) VALUES ('a'), ('b') RETURNING id, upper(v) AS big"),
            st("UPDATE t SET v = 'c' WHERE id = 2"),
            st("SELECT count(*) AS n FROM t"),
        ]],
    );
    let executed = results[0].as_ref().expect("ok");
    let inserted = &executed.results[0];
    assert_eq!(inserted.rows_affected, 2);
    let names: Vec<&str> = inserted.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "big"]);
    let text = |s: &str| Value { kind: Some(Kind::Text(s.into())) };
    assert_eq!(inserted.rows[0].values, vec![int(1), text("A")]);
    assert_eq!(inserted.rows[1].values, vec![int(2), text("B")]);
    assert!(executed.results[1].rows.is_empty() && executed.results[1].columns.is_empty());
    assert_eq!(executed.results[2].rows[0].values, vec![int(2)]);
    let (_, results) = leader_batch(
        &mut leader,
        3,
        &[vec![st("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000) \
                   SELECT x, zeroblob(100) FROM c")]],
    );
    let error = results[0].as_ref().expect_err("too many returned rows");
    assert!(error.message.contains("over the limit of"), "{error}");
}

/// SQLITE_CORRUPT from a client statement is that statement's error only if
/// the database, with the statement undone, passes `quick_check`: SQLite's
/// undefined behaviour answers it from a sound file (a BEFORE UPDATE
/// trigger deleting the row its upsert updates), and the node goes on; on
/// a file that is really damaged the leader must stop (an outer error).
#[test]
fn corruption_is_the_client_error_only_in_a_sound_database() {
    let dir = TempDir::new().expect("temp dir");
    let mut sm = open(&dir, "a.db");
    let setup = [
        st("CREATE TABLE t(k TEXT PRIMARY KEY, v BLOB)"),
        st("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 200) \
            INSERT INTO t SELECT 'k' || x, zeroblob(500) FROM s"),
        st("CREATE TABLE u(k TEXT PRIMARY KEY, c0, c1 NUMERIC NOT NULL UNIQUE)"),
        st("CREATE TRIGGER g BEFORE UPDATE ON u BEGIN DELETE FROM u WHERE k = OLD.k; END"),
        st("INSERT INTO u VALUES ('q', 'q', -2), ('a ', 'a ', 4)"),
    ];
    leader_batch(&mut sm, 1, &[setup.to_vec()]);
    let undefined = st("INSERT INTO u(k, c0, c1) VALUES (2, 2, 1), ('a ', 2, 6), ('B', 1, 11), (2, 'B', 16) \
                        ON CONFLICT(k) DO UPDATE SET c0 = excluded.c0");
    // Every later write of the transaction would fail too: the batch ends.
    sm.begin_batch(2).expect("begin");
    sm.execute_request(&[st("UPDATE t SET v = x'02' WHERE k = 'k3'")]).expect("runs").expect("updates");
    let outcome = sm.execute_request(&[undefined]).expect("the client's error, not the database's");
    let error = outcome.expect_err("SQLite answers SQLITE_CORRUPT");
    assert!(error.message.contains("malformed") && error.message.contains("checked well formed"), "{error}");
    assert!(!sm.batch_open(), "the batch is rolled back, its earlier requests to run again");
    let (_, results) = leader_batch(&mut sm, 2, &[vec![st("INSERT INTO u VALUES ('z', 0, 50)")]]);
    assert!(results[0].is_ok(), "the next batch writes: {:?}", results[0]);
    assert_eq!(scalar(&sm, "SELECT count(*) FROM u"), int(3));

    // Damage table t's root page on disk (its page-type byte).
    drop(sm);
    let path = dir.path().join("a.db");
    let conn = rusqlite::Connection::open(&path).expect("open");
    let (root, page_size): (i64, i64) = conn
        .query_row(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master WHERE name = 't'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("root page");
    drop(conn);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[((root - 1) * page_size) as usize] = 0;
    std::fs::write(&path, bytes).expect("write");
    let mut sm = open(&dir, "a.db");
    sm.begin_batch(3).expect("begin");
    let outcome = sm.execute_request(&[st("UPDATE t SET v = x'01' WHERE k = 'k7'")]);
    let error = outcome.expect_err("a damaged file stops the leader");
    assert!(error.to_string().contains("quick_check"), "{error}");
}

/// One change as text: kind, table, key, before and after, for asserts.
fn change_text(change: &deeb_proto::Change) -> String {
    let values = |values: &[NamedValue]| {
        let shown: Vec<String> = values
            .iter()
            .map(|named| match named.value.as_ref().and_then(|value| value.kind.as_ref()) {
                Some(Kind::Integer(i)) => format!("{}={i}", named.name),
                Some(Kind::Text(t)) => format!("{}='{t}'", named.name),
                Some(other) => format!("{}={other:?}", named.name),
                None => format!("{}=NULL", named.name),
            })
            .collect();
        shown.join(",")
    };
    let kind = change.kind().as_str_name().trim_start_matches("CHANGE_KIND_");
    match kind {
        "DDL" | "RESTORE" => format!("{kind} {}", change.sql),
        _ => format!(
            "{kind} {} key({}) before({}) after({})",
            change.table,
            values(&change.key),
            values(&change.before),
            values(&change.after)
        ),
    }
}

fn batch_bytes(batch: &WriteBatch) -> Vec<u8> {
    use prost::Message as _;
    deeb_proto::Command { kind: Some(deeb_proto::command::Kind::WriteBatch(batch.clone())) }.encode_to_vec()
}

#[test]
fn the_change_stream_shows_each_change_with_the_names_its_schema_had() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let requests = vec![
        vec![
            st("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INT, g INT GENERATED ALWAYS AS (n * 2) STORED)"),
            st("INSERT INTO t (id, v, n) VALUES (1, 'a', 10), (2, 'b', 20)"),
            st("CREATE TABLE plain (a, b)"),
            st("INSERT INTO plain VALUES ('x', NULL)"),
        ],
        vec![
            st("UPDATE t SET v = 'A' WHERE id = 1"),
            st("DELETE FROM t WHERE id = 2"),
            st("ALTER TABLE t RENAME COLUMN v TO label"),
            st("UPDATE t SET label = 'AA', n = 11 WHERE id = 1"),
        ],
    ];
    let (mut batch, results) = leader_batch(&mut leader, 2, &requests);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    batch.proposed_unix_ms = 1234;
    let data = batch_bytes(&batch);

    let all = changes::entry_changes(2, 1, &data, &changes::Filter::new(&[], true)).expect("changes");
    let shown: Vec<String> = all.iter().map(change_text).collect();
    assert_eq!(
        shown,
        [
            "DDL CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INT, g INT GENERATED ALWAYS AS (n * 2) STORED)",
            // A generated column is computed, not recorded.
            "INSERT t key(id=1) before() after(id=1,v='a',n=10)",
            "INSERT t key(id=2) before() after(id=2,v='b',n=20)",
            "DDL CREATE TABLE plain (a, b)",
            "INSERT plain key(_rowid_=1) before() after(_rowid_=1,a='x',b=NULL)",
            // An UPDATE's images: its key and the columns it changed.
            "UPDATE t key(id=1) before(id=1,v='a') after(id=1,v='A')",
            "DELETE t key(id=2) before(id=2,v='b',n=20) after()",
            "DDL ALTER TABLE t RENAME COLUMN v TO label",
            "UPDATE t key(id=1) before(id=1,label='A',n=10) after(id=1,label='AA',n=11)",
        ],
    );
    let places: Vec<(u32, u32, bool)> = all.iter().map(|c| (c.request, c.position, c.last_in_request)).collect();
    assert_eq!(
        places,
        [(0, 0, false), (0, 1, false), (0, 2, false), (0, 3, false), (0, 4, true)]
            .into_iter()
            .chain([(1, 0, false), (1, 1, false), (1, 2, false), (1, 3, true)])
            .collect::<Vec<_>>()
    );
    assert!(all.iter().all(|c| c.index == 2 && c.term == 1 && c.timestamp_unix_ms == 1234));

    // A table filter (any case) keeps schema changes; no before images
    // unless asked.
    let only_t = changes::entry_changes(2, 1, &data, &changes::Filter::new(&["T".into()], false)).expect("changes");
    let shown: Vec<String> = only_t.iter().map(change_text).collect();
    assert_eq!(shown.len(), 8, "{shown:?}");
    assert!(!shown.iter().any(|line| line.contains("plain key")), "{shown:?}");
    assert!(only_t.iter().all(|change| change.before.is_empty()));

    // Replicas ignore the names: the batch applies to the same state.
    let mut follower = open(&dir, "follower.db");
    follower.apply_batch(&batch, Applied { index: 2, term: 1 }).expect("apply");
    assert_eq!(leader.digest().expect("digest"), follower.digest().expect("digest"));
}

#[test]
fn the_change_stream_refuses_an_entry_it_cannot_decode() {
    let filter = changes::Filter::new(&[], true);
    assert_eq!(changes::entry_changes(3, 1, &[], &filter).expect("empty entry"), Vec::new());
    assert!(changes::entry_changes(3, 1, &[0xff, 0xff, 0xff], &filter).is_err());
    let write =
        Write { ops: vec![deeb_proto::Op { kind: Some(op::Kind::Changeset(vec![1, 2, 3])) }], ..Write::default() };
    let batch = WriteBatch { proposer: 1, writes: vec![write], ..Default::default() };
    assert!(changes::entry_changes(3, 1, &batch_bytes(&batch), &filter).is_err());
}

/// A snapshot of another database with the same schema version but
/// another schema: after it is installed the names are its own (SQLite's
/// backup moves the installed schema version on, and the state machine
/// drops its cached names besides).
#[test]
fn the_change_stream_names_columns_from_an_installed_snapshot() {
    let dir = TempDir::new().expect("tempdir");
    let mut leader = open(&dir, "leader.db");
    let mut other = open(&dir, "other.db");
    let (batch, _) =
        leader_batch(&mut leader, 2, &[vec![st("CREATE TABLE t (a, b)"), st("INSERT INTO t VALUES (1, 2)")]]);
    let names = |batch: &WriteBatch| -> Vec<String> {
        let changes =
            changes::entry_changes(2, 1, &batch_bytes(batch), &changes::Filter::new(&[], false)).expect("changes");
        changes.iter().flat_map(|change| change.after.iter().map(|named| named.name.clone())).collect()
    };
    assert_eq!(names(&batch), ["_rowid_", "a", "b"]);
    leader_batch(&mut other, 2, &[vec![st("CREATE TABLE t (x, y)")]]);
    let version = |name: &str| -> i64 {
        let conn = rusqlite::Connection::open(dir.path().join(name)).expect("open");
        conn.query_row("PRAGMA schema_version", [], |row| row.get(0)).expect("version")
    };
    assert_eq!(version("leader.db"), version("other.db"), "the same schema version, another schema");
    let snap = dir.path().join("snap.db");
    other.create_snapshot(&snap).expect("snapshot");
    leader.install_snapshot(&snap).expect("install");
    let (batch, _) = leader_batch(&mut leader, 3, &[vec![st("INSERT INTO t VALUES (3, 4)")]]);
    assert_eq!(names(&batch), ["_rowid_", "x", "y"]);
}

/// The leader's pipeline in the state machine: a batch kept in the open
/// transaction stays when the batch on top of it is dropped, readers see
/// neither until the commit, which keeps both and records the last index;
/// dropping everything (leadership lost) leaves the state as it was.
#[test]
fn batches_kept_in_one_transaction_commit_together() {
    let dir = TempDir::new().expect("temp dir");
    let mut sm = open(&dir, "a.db");
    leader_batch(&mut sm, 1, &[vec![st("CREATE TABLE t(x)")]]);
    let insert = |sm: &mut SqliteStateMachine, x: i64| {
        sm.execute_request(&[stp("INSERT INTO t VALUES (?1)", vec![int(x)])]).expect("runs").expect("inserts");
    };
    sm.begin_batch(2).expect("begin");
    insert(&mut sm, 2);
    sm.keep_batch().expect("keep");
    sm.begin_batch(3).expect("on top");
    insert(&mut sm, 3);
    sm.rollback_batch().expect("drop the top one");
    assert!(sm.batch_open(), "the kept batch is still open");
    sm.begin_batch(3).expect("on top again");
    insert(&mut sm, 4);
    sm.keep_batch().expect("keep");
    assert_eq!(scalar(&sm, "SELECT count(*) FROM t"), int(0), "readers see only committed batches");
    sm.commit_batch(Applied { index: 3, term: 1 }).expect("commit");
    assert_eq!(scalar(&sm, "SELECT group_concat(x) FROM t"), Value { kind: Some(Kind::Text("2,4".into())) });
    assert_eq!(sm.applied(), Applied { index: 3, term: 1 });

    sm.begin_batch(4).expect("begin");
    insert(&mut sm, 5);
    sm.keep_batch().expect("keep");
    sm.begin_batch(5).expect("on top");
    insert(&mut sm, 6);
    sm.rollback_all().expect("drop all");
    assert!(!sm.batch_open());
    assert_eq!(scalar(&sm, "SELECT count(*) FROM t"), int(2));
    leader_batch(&mut sm, 4, &[vec![st("INSERT INTO t VALUES (7)")]]);
    assert_eq!(scalar(&sm, "SELECT count(*) FROM t"), int(3));
}
