//! Client SQL never stops a node or splits the replicas: the defects of
//! issue 9, each as the exact requests that once stopped a node or made
//! replicas differ, on a 3-node in-process cluster. Every test checks the
//! client's answer, that every node is still up (the harness panics on a
//! stop) and that all replicas' digests are equal.

mod harness;

use std::time::Duration;

use deeb_core::{Config, Consistency, WriteError, WriteOutcome};
use deeb_proto::Statement;
use harness::{integer_of, query, statement, Cluster, Reply};

/// Small bounds, so runaway and oversized statements end quickly here.
fn small_limits(config: &mut Config) {
    config.limits.statement_steps_max = 2_000_000;
    config.limits.request_row_changes_bytes_max = 1024 * 1024;
}

fn cluster() -> Cluster {
    let mut cluster = Cluster::with_config(3, 9, small_limits);
    cluster.wait_leader();
    cluster
}

/// Sends one request to the leader and returns its answer.
fn try_write(cluster: &mut Cluster, sqls: &[&str]) -> Result<WriteOutcome, WriteError> {
    let leader = cluster.wait_leader();
    let token = cluster.submit_write(leader, sqls.iter().map(|sql| statement(sql)).collect())?;
    match cluster.wait_reply(token, Duration::from_secs(30)) {
        Reply::Write(result) => result,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// The request fails with a statement error containing `expected`.
fn assert_refused(cluster: &mut Cluster, sqls: &[&str], expected: &str) {
    match try_write(cluster, sqls) {
        Err(WriteError::Statement(error)) => {
            assert!(error.message.contains(expected), "{sqls:?}: {:?} lacks {expected:?}", error.message)
        }
        other => panic!("{sqls:?}: expected a statement error containing {expected:?}, got {other:?}"),
    }
}

fn count(cluster: &Cluster, id: u64, sql: &str) -> i64 {
    integer_of(&query(cluster.node(id), sql)[0], 0)
}

/// Every node answers `sql` with the same single integer.
fn assert_everywhere(cluster: &mut Cluster, sql: &str, expected: i64) {
    cluster.assert_converged();
    for id in cluster.running() {
        assert_eq!(count(cluster, id, sql), expected, "node {id}: {sql}");
    }
}

fn parent_and_child(cluster: &mut Cluster, action: &str) {
    cluster.execute("CREATE TABLE p(id INTEGER PRIMARY KEY)");
    cluster.execute(&format!("CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id) {action})"));
    cluster.execute("INSERT INTO p VALUES(1)");
    cluster.execute("INSERT INTO c VALUES(10,1)");
}

#[test]
fn foreign_key_cascade_applies_once_on_every_replica() {
    let mut cluster = cluster();
    parent_and_child(&mut cluster, "ON DELETE CASCADE");
    let outcome = cluster.execute("DELETE FROM p WHERE id=1");
    assert_eq!(outcome.results[0].rows_affected, 1);
    assert_everywhere(&mut cluster, "SELECT count(*) FROM c", 0);
}

#[test]
fn foreign_key_set_null_applies_once_on_every_replica() {
    let mut cluster = cluster();
    parent_and_child(&mut cluster, "ON DELETE SET NULL");
    cluster.execute("DELETE FROM p WHERE id=1");
    assert_everywhere(&mut cluster, "SELECT count(*) FROM c WHERE pid IS NULL", 1);
}

/// SQLite's session cannot describe the rows DROP TABLE deletes (and
/// cascades) before the table is gone: refused, with the way round it.
#[test]
fn drop_of_a_referenced_table_with_rows_is_refused_with_a_way_round() {
    let mut cluster = cluster();
    parent_and_child(&mut cluster, "ON DELETE CASCADE");
    assert_refused(&mut cluster, &["DROP TABLE p"], "DELETE FROM the table first");
    cluster.write(vec![statement("DELETE FROM p"), statement("DROP TABLE p")]);
    assert_everywhere(&mut cluster, "SELECT count(*) FROM c", 0);
    assert_everywhere(&mut cluster, "SELECT count(*) FROM sqlite_master WHERE name = 'p'", 0);
}

#[test]
fn foreign_key_violations_are_the_clients_error() {
    let mut cluster = cluster();
    parent_and_child(&mut cluster, "ON DELETE RESTRICT");
    assert_refused(&mut cluster, &["DELETE FROM p WHERE id=1"], "FOREIGN KEY constraint failed");
    assert_refused(&mut cluster, &["INSERT INTO c VALUES(11, 99)"], "FOREIGN KEY constraint failed");
    assert_everywhere(&mut cluster, "SELECT count(*) FROM c", 1);
}

#[test]
fn deferred_foreign_keys_are_checked_at_the_end_of_each_request() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE p(id INTEGER PRIMARY KEY)");
    cluster.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, pid REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)");
    // Violated, then repaired within the request: fine.
    cluster.write(vec![statement("INSERT INTO c VALUES(1, 5)"), statement("INSERT INTO p VALUES(5)")]);
    // Still violated at the end: the request fails, the batch commits.
    assert_refused(&mut cluster, &["INSERT INTO c VALUES(2, 6)"], "deferred");
    cluster.execute("INSERT INTO c VALUES(3, 5)");
    assert_everywhere(&mut cluster, "SELECT count(*) FROM c", 2);
}

#[test]
fn insert_or_rollback_is_the_clients_error() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)");
    cluster.execute("INSERT INTO t VALUES(1)");
    assert_refused(&mut cluster, &["INSERT OR ROLLBACK INTO t VALUES(1)"], "UNIQUE constraint failed");
    cluster.execute("INSERT INTO t VALUES(2)");
    assert_everywhere(&mut cluster, "SELECT count(*) FROM t", 2);
}

#[test]
fn raise_rollback_in_a_trigger_is_the_clients_error() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)");
    cluster.execute(
        "CREATE TRIGGER no_big BEFORE INSERT ON t WHEN new.id > 100 BEGIN SELECT RAISE(ROLLBACK, 'too big'); END",
    );
    assert_refused(&mut cluster, &["INSERT INTO t VALUES(1)", "INSERT INTO t VALUES(101)"], "too big");
    assert_everywhere(&mut cluster, "SELECT count(*) FROM t", 0);
}

/// A request that rolls back the batch transaction does not take the other
/// requests of its batch with it: they run again and are answered.
#[test]
fn a_batch_rollback_reruns_the_other_requests() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)");
    cluster.execute("INSERT INTO t VALUES(1)");
    let leader = cluster.wait_leader();
    // Submitted back to back: the first goes out alone, the next four wait
    // and share one batch, where the third fails and rolls it back.
    let requests: Vec<Vec<Statement>> = vec![
        vec![statement("INSERT INTO t VALUES(2)")],
        vec![statement("INSERT INTO t VALUES(3)")],
        vec![statement("INSERT OR ROLLBACK INTO t VALUES(1)")],
        vec![statement("INSERT INTO t VALUES(4)")],
        vec![statement("INSERT INTO t SELECT max(id) + 1 FROM t")],
    ];
    let tokens: Vec<_> = requests
        .into_iter()
        .map(|request| cluster.submit_write(leader, request).expect("leader takes writes"))
        .collect();
    let answers: Vec<Reply> =
        tokens.into_iter().map(|token| cluster.wait_reply(token, Duration::from_secs(30))).collect();
    for (i, answer) in answers.iter().enumerate() {
        match i {
            2 => assert!(matches!(answer, Reply::Write(Err(WriteError::Statement(_)))), "{answer:?}"),
            _ => assert!(matches!(answer, Reply::Write(Ok(_))), "request {i}: {answer:?}"),
        }
    }
    assert_everywhere(&mut cluster, "SELECT count(*) FROM t", 5);
    assert_everywhere(&mut cluster, "SELECT max(id) FROM t", 5);
}

#[test]
fn a_runaway_write_is_stopped_and_the_leader_stays() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE t(x)");
    let leader = cluster.wait_leader();
    let term = cluster.node(leader).status().term;
    // The request: stopped by whichever bound it meets first (here
    // the row changes), every time, with the node up.
    let runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c";
    assert_refused(&mut cluster, &[runaway], "request_row_changes_bytes_max");
    assert_refused(&mut cluster, &[runaway], "request_row_changes_bytes_max");
    // Endless work that writes nothing meets the statement's steps bound.
    let counting = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT count(*) FROM c";
    assert_refused(&mut cluster, &[counting], "statement stopped");
    cluster.execute("INSERT INTO t VALUES(1)");
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.node(leader).status().term, term);
    assert_everywhere(&mut cluster, "SELECT count(*) FROM t", 1);
}

#[test]
fn a_runaway_query_is_stopped() {
    let mut cluster = cluster();
    let leader = cluster.wait_leader();
    let reader = cluster.node(leader).reader().expect("reader");
    let runaway = statement("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c");
    let error = reader.query(&runaway, 100, 1 << 20, &mut |_| true).expect_err("stopped");
    assert!(error.to_string().contains("query stopped"), "{error}");
    // And by the host's check, e.g. its deadline or a client gone away.
    let mut asked = 0;
    let stop = Box::new(move || {
        asked += 1;
        (asked > 3).then(|| "client went away".to_string())
    });
    let error = reader.query_until(&runaway, 100, 1 << 20, stop, &mut |_| true).expect_err("stopped");
    assert_eq!(error.to_string(), "client went away");
}

#[test]
fn row_changes_are_bounded_while_the_request_runs() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE b(x)");
    // Each value alone is larger than a request may replicate.
    let zeroblobs = "INSERT INTO b SELECT zeroblob(500000000) FROM (VALUES(1),(2),(3),(4),(5))";
    assert_refused(&mut cluster, &[zeroblobs], "too big");
    // Many small rows: stopped once the changes pass the limit.
    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000) \
                INSERT INTO b SELECT randomblob(100) FROM c";
    assert_refused(&mut cluster, &[many], "request_row_changes_bytes_max");
    // Across statements of one request, too.
    let half = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 4000) \
                INSERT INTO b SELECT randomblob(100) FROM c";
    assert_refused(&mut cluster, &[half, half, half], "request_row_changes_bytes_max");
    cluster.execute(half);
    assert_everywhere(&mut cluster, "SELECT count(*) FROM b", 4000);
}

#[test]
fn temporary_objects_are_refused_in_every_spelling() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE t(x)");
    for sql in [
        "CREATE TEMP TABLE tt(x)",
        "CREATE TABLE temp.tt2(x)",
        "CREATE TABLE \"temp\".tt3(x)",
        "CREATE VIEW temp.v AS SELECT 1",
        "CREATE INDEX temp.i ON t(x)",
        "CREATE TRIGGER temp.tr AFTER INSERT ON t BEGIN SELECT 1; END",
    ] {
        let result = try_write(&mut cluster, &[sql]);
        assert!(matches!(result, Err(WriteError::Statement(_))), "{sql}: {result:?}");
    }
    assert_everywhere(&mut cluster, "SELECT count(*) FROM sqlite_temp_master", 0);
}

#[test]
fn a_leading_semicolon_does_not_slip_past_the_read_checks() {
    let mut cluster = cluster();
    let leader = cluster.wait_leader();
    let reader = cluster.node(leader).reader().expect("reader");
    for sql in [";ATTACH 'x' AS y", " ; ;ATTACH 'x' AS y", ";BEGIN", ";PRAGMA journal_mode=DELETE", ";COMMIT"] {
        let result = reader.query(&statement(sql), 100, 1 << 20, &mut |_| true);
        assert!(result.is_err(), "{sql} was accepted");
    }
}

#[test]
fn autoincrement_counters_are_equal_on_every_replica() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, v)");
    cluster.execute("INSERT INTO a(v) VALUES('x'), ('y')");
    cluster.execute("UPDATE a SET id = id + 1000");
    cluster.assert_converged();
    // An insert and a delete of the same row in one statement (a trigger).
    cluster.execute("CREATE TABLE log(x)");
    cluster.execute("CREATE TRIGGER tr AFTER INSERT ON log BEGIN INSERT INTO a(v) VALUES(new.x); DELETE FROM a WHERE v = new.x; END");
    cluster.execute("INSERT INTO log VALUES('z')");
    cluster.assert_converged();
    let seq = "SELECT seq FROM sqlite_sequence WHERE name = 'a'";
    let expected = count(&cluster, cluster.leader().expect("leader"), seq);
    assert_everywhere(&mut cluster, seq, expected);
    // After a failover the next id is not reused.
    let leader = cluster.wait_leader();
    let other = cluster.running().into_iter().find(|&id| id != leader).expect("a follower");
    cluster.transfer_leader(leader, other).expect("transfer");
    let outcome = cluster.execute("INSERT INTO a(v) VALUES('w')");
    assert_eq!(outcome.results[0].last_insert_id, expected + 1);
    assert_everywhere(&mut cluster, seq, expected + 1);
}

#[test]
fn reads_of_the_results_agree_on_every_node() {
    let mut cluster = cluster();
    parent_and_child(&mut cluster, "ON UPDATE CASCADE");
    cluster.execute("UPDATE p SET id = 2");
    for id in cluster.running() {
        let rows = cluster.read(id, Consistency::Linearizable, "SELECT pid FROM c").expect("read");
        assert_eq!(integer_of(&rows[0], 0), 2, "node {id}");
    }
}

/// The rest of the surface the rule names: each runs with identical
/// effects on every replica.
#[test]
fn generated_columns_without_rowid_strict_upsert_and_alter_replicate() {
    let mut cluster = cluster();
    for sql in [
        "CREATE TABLE g(a INTEGER PRIMARY KEY, b, c AS (b * 2) VIRTUAL, d AS (b + 1) STORED)",
        "INSERT INTO g(a, b) VALUES (1, 10), (2, 20)",
        "UPDATE g SET b = b + 1",
        "DELETE FROM g WHERE a = 2",
        "CREATE TABLE w(k TEXT PRIMARY KEY, u TEXT COLLATE NOCASE UNIQUE, v INTEGER) WITHOUT ROWID",
        "INSERT INTO w VALUES ('a', 'a', 1), ('B', 'B', 2)",
        "INSERT INTO w VALUES ('a', 'x', 5) ON CONFLICT(k) DO UPDATE SET v = v + excluded.v",
        "REPLACE INTO w VALUES ('b', 'b', 9)",
        "CREATE TABLE s(id INTEGER PRIMARY KEY, n INTEGER NOT NULL) STRICT",
        "INSERT INTO s VALUES (1, 1)",
        "ALTER TABLE s ADD COLUMN m TEXT DEFAULT 'x'",
        "ALTER TABLE s RENAME COLUMN n TO count",
        "ALTER TABLE s RENAME TO s2",
        "UPDATE s2 SET m = json_object('k', count)",
        "ALTER TABLE s2 DROP COLUMN m",
        "CREATE INDEX gi ON g(d) WHERE b > 0",
        "CREATE UNIQUE INDEX wi ON w(v)",
        "INSERT INTO g(a, b) SELECT 10 + value, value FROM json_each('[1,2,3]')",
        "UPDATE g SET b = (SELECT count(*) FROM g AS h WHERE h.a <= g.a)",
        "INSERT INTO s2(id, count) SELECT a, row_number() OVER (ORDER BY a) FROM g WHERE a > 5",
    ] {
        try_write(&mut cluster, &[sql]).unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
    let digest = cluster.assert_converged();
    assert_ne!(digest, 0);
    // Rows a = 1, 11, 12, 13 with b = 1..4, so d = b + 1 sums to 14.
    assert_everywhere(&mut cluster, "SELECT sum(d) FROM g", 14);
    assert_everywhere(&mut cluster, "SELECT v FROM w WHERE k = 'a'", 6);
    assert_everywhere(&mut cluster, "SELECT count(*) FROM w", 2);
}

#[test]
fn collated_primary_keys_are_refused() {
    let mut cluster = cluster();
    for sql in [
        "CREATE TABLE w(k TEXT PRIMARY KEY COLLATE NOCASE, v) WITHOUT ROWID",
        "CREATE TABLE w(k TEXT COLLATE RTRIM PRIMARY KEY, v)",
        "CREATE TABLE w(a, k TEXT, v, PRIMARY KEY (a, k COLLATE NOCASE))",
    ] {
        assert_refused(&mut cluster, &[sql], "collation other than BINARY");
    }
    cluster.execute("CREATE TABLE w(k TEXT NOT NULL PRIMARY KEY, v TEXT COLLATE NOCASE)");
    cluster.assert_converged();
}

#[test]
fn primary_keys_that_cannot_be_replicated_are_refused() {
    let mut cluster = cluster();
    for sql in ["CREATE TABLE n(a INTEGER, b TEXT, v, PRIMARY KEY (a, b))", "CREATE TABLE n(a, b, PRIMARY KEY (b, a))"]
    {
        assert_refused(&mut cluster, &[sql], "may hold NULL");
    }
    // A one-column key that may hold NULL: checked where rows are written.
    cluster.execute("CREATE TABLE k1(k TEXT PRIMARY KEY, v)");
    cluster.execute("CREATE TABLE k2(a INT PRIMARY KEY, v)");
    cluster.execute("INSERT INTO k1 VALUES ('a', 1)");
    assert_refused(&mut cluster, &["INSERT INTO k1 VALUES (NULL, 2)"], "NULL in a PRIMARY KEY column");
    assert_refused(&mut cluster, &["INSERT INTO k1(v) VALUES (3)"], "NULL in a PRIMARY KEY column");
    assert_refused(&mut cluster, &["UPDATE k1 SET k = NULL"], "NULL in a PRIMARY KEY column");
    cluster.execute("CREATE TRIGGER k1_copy AFTER INSERT ON k1 BEGIN INSERT INTO k2 VALUES (NULL, new.v); END");
    assert_refused(&mut cluster, &["INSERT INTO k1 VALUES ('b', 4)"], "NULL in a PRIMARY KEY column");
    assert_everywhere(&mut cluster, "SELECT count(*) FROM k1", 1);
    for sql in [
        "CREATE TABLE n1(k TEXT NOT NULL PRIMARY KEY, v)",
        "CREATE TABLE n2(k TEXT PRIMARY KEY, v ANY) STRICT",
        "CREATE TABLE n3(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
        "CREATE TABLE n4(k INTEGER PRIMARY KEY, v)",
        "CREATE TABLE n5(v)",
    ] {
        try_write(&mut cluster, &[sql]).unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
    assert_refused(&mut cluster, &["INSERT INTO n2(v) VALUES (1)"], "NOT NULL constraint failed");
    cluster.assert_converged();
}

#[test]
fn unreplicated_rowids_cannot_be_read() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE k(a INTEGER NOT NULL, b TEXT NOT NULL, PRIMARY KEY (a, b))");
    cluster.execute("CREATE TABLE r(v)");
    cluster.execute("INSERT INTO k VALUES (3, 'c'), (1, 'a'), (2, 'b')");
    cluster.execute("INSERT INTO r VALUES (10), (20)");
    cluster.assert_converged();
    let reader = cluster.node(2).reader().expect("reader");
    for sql in
        ["SELECT rowid FROM k", "SELECT _rowid_, a FROM k WHERE oid > 0", "SELECT count(*) FROM k WHERE rowid = 1"]
    {
        let error = reader.query(&statement(sql), 100, 1 << 20, &mut |_| true).expect_err(sql);
        assert!(error.to_string().contains("is not replicated"), "{sql}: {error}");
    }
    // Nor may writes: they would change rows picked by whichever node leads.
    assert_refused(&mut cluster, &["DELETE FROM k WHERE rowid % 2 = 0"], "is not replicated");
    // Its rowid means nothing to the client either.
    let outcome = cluster.execute("INSERT INTO k VALUES (4, 'd')");
    assert_eq!(outcome.results[0].last_insert_id, 0);
    // Tables without a declared key are replicated by rowid: readable.
    let rows = query(cluster.node(2), "SELECT rowid FROM r ORDER BY rowid");
    assert_eq!(rows.len(), 2);
    assert_eq!(count(&cluster, 2, "SELECT count(*) FROM k"), 3);
}

#[test]
fn an_exhausted_autoincrement_counter_is_the_clients_error() {
    let mut cluster = cluster();
    cluster.execute("CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, v)");
    cluster.execute("INSERT INTO a VALUES (9223372036854775807, 'last')");
    assert_refused(&mut cluster, &["INSERT INTO a(v) VALUES ('one more')"], "full");
    cluster.execute("INSERT INTO a VALUES (5, 'explicit')");
    assert_everywhere(&mut cluster, "SELECT count(*) FROM a", 2);
}
