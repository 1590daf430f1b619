//! The MySQL/MariaDB sidecar backend against real servers: three MariaDB
//! servers the test starts on loopback (`mariadbd --no-defaults`), one per
//! `deeb serve --backend mysql`. Needs MariaDB installed: ignored in the
//! plain suite, run by `.ci/mysql` (which installs it). Every server and
//! node is stopped when the test ends.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Cluster};
use deeb_client::Options;
use deeb_proto::ErrorCode;
use deeb_server::backend::mysql::local::LocalServer;
use deeb_server::backend::mysql::MysqlStateMachine;
use mysql::prelude::Queryable;

/// Three MariaDB servers and the deeb cluster over them (dropped first).
struct MysqlCluster {
    cluster: Cluster,
    servers: Vec<LocalServer>,
}

impl MysqlCluster {
    fn start(extra_args: &[&str]) -> Self {
        let mut cluster = Cluster::unstarted(&[], 3, extra_args);
        let mut servers = Vec::new();
        for id in 1..=3u64 {
            let dir = cluster.dir.path().join(format!("mariadb-{id}"));
            let server = LocalServer::start(&dir, common::free_port()).expect("start MariaDB (is it installed?)");
            cluster.secrets.push(server.password().to_owned());
            let args = ["--backend", "mysql", "--mysql-url", &server.url()].map(String::from).to_vec();
            cluster.node_args.insert(id, args);
            servers.push(server);
        }
        for id in 1..=3 {
            cluster.spawn(id);
        }
        MysqlCluster { cluster, servers }
    }

    fn server(&self, id: u64) -> &LocalServer {
        &self.servers[usize::try_from(id - 1).expect("small")]
    }

    /// Every row of `table` on node `id`'s server, in primary key order,
    /// read directly (not through deeb).
    fn rows(&self, id: u64, table: &str) -> Vec<Vec<mysql::Value>> {
        let mut conn = self.server(id).connect_root().expect("root connection");
        let rows: Vec<mysql::Row> = conn.query(format!("SELECT * FROM {table} ORDER BY 1")).expect("select");
        rows.into_iter().map(mysql::Row::unwrap).collect()
    }
}

async fn execute(cluster: &Cluster, id: u64, sql: &str) -> deeb_proto::ExecuteResponse {
    cluster.execute(id, sql).await.unwrap_or_else(|error| panic!("{sql}: {error:?}"))
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE parent (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) NOT NULL, \
     at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), r DOUBLE, touched INT NOT NULL DEFAULT 0) ENGINE=InnoDB",
    "CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, parent INT NOT NULL, note VARCHAR(60), \
     FOREIGN KEY (parent) REFERENCES parent(id) ON DELETE CASCADE)",
    "CREATE TABLE audit (parent_id INT PRIMARY KEY, what VARCHAR(80), at DATETIME(6), r DOUBLE)",
    "CREATE TABLE counters (name VARCHAR(20) PRIMARY KEY, n INT NOT NULL)",
    "CREATE TRIGGER parent_audit AFTER INSERT ON parent FOR EACH ROW BEGIN \
     INSERT INTO audit (parent_id, what, at, r) VALUES (NEW.id, CONCAT('new ', NEW.name), NOW(6), RAND()); END",
    "CREATE TRIGGER parent_touch BEFORE UPDATE ON parent FOR EACH ROW BEGIN SET NEW.touched = OLD.touched + 1; END",
    // A one-statement body (no BEGIN ... END).
    "CREATE TRIGGER child_mark BEFORE INSERT ON child FOR EACH ROW SET NEW.note = CONCAT(NEW.note, '!')",
];

/// One round of the workload: every kind of statement the determinism
/// check covers.
fn workload(round: u64) -> Vec<String> {
    vec![
        format!("INSERT INTO parent (name, r) VALUES ('p{round}', RAND())"),
        format!(
            "INSERT INTO parent (name, r) VALUES ('a{round}', RAND()), ('b{round}', RAND() * 2), ('c{round}', NULL)"
        ),
        format!(
            "INSERT INTO child (parent, note) SELECT id, CONCAT('of ', name, ' at ', NOW(6)) FROM parent \
             WHERE name IN ('p{round}', 'b{round}')"
        ),
        format!("INSERT INTO counters VALUES ('c{}', 1) ON DUPLICATE KEY UPDATE n = n + 1", round % 5),
        format!("UPDATE parent SET r = RAND() WHERE id % 7 = {}", round % 7),
        format!("DELETE FROM parent WHERE id % 11 = {} ORDER BY id LIMIT 2", round % 11),
    ]
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn statements_replicate_deterministically_through_a_leader_kill() {
    // Every 50 entries the replicas compare digests of every table too.
    let mut mysql = MysqlCluster::start(&["--snapshot-interval", "50"]);
    let leader = mysql.cluster.wait_leader(&[1, 2, 3]).await;
    for sql in SCHEMA {
        execute(&mysql.cluster, leader, sql).await;
    }
    // Two clients write through every node until told to stop; the leader
    // is killed and restarted while they write.
    let addresses: Vec<String> = (1..=3).map(|id| mysql.cluster.addr(id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = |first: u64| {
        let (addresses, stop) = (addresses.clone(), stop.clone());
        async move {
            let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
            let client = deeb_client::Client::new(&refs, Options::default());
            let (mut acknowledged, mut failed) = (0, 0);
            // Bounded: 5,000 rounds is far more than the test's seconds take.
            for round in (first..first + 10_000).step_by(2) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for sql in workload(round) {
                    match client.execute_sql(&sql).await {
                        Ok(_) => acknowledged += 1,
                        Err(error) => {
                            assert_ne!(error.error_code, Some(ErrorCode::Refused), "{sql}: {error:?}");
                            failed += 1;
                        }
                    }
                }
            }
            (acknowledged, failed)
        }
    };
    let (one, two) = (tokio::spawn(writer(0)), tokio::spawn(writer(1)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = mysql.cluster.wait_leader(&[1, 2, 3]).await;
    mysql.cluster.kill(leader);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    mysql.cluster.spawn(leader);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!one.is_finished() && !two.is_finished(), "the writers wrote all along");
    stop.store(true, Ordering::Relaxed);
    let (one, two) = (one.await.expect("writer"), two.await.expect("writer"));
    println!("writes acknowledged {} / failed {} (leader {leader} killed and restarted)", one.0 + two.0, one.1 + two.1);
    assert!(one.0 + two.0 > 100, "the cluster kept taking writes: {one:?} {two:?}");
    let last = execute(&mysql.cluster, 1, "INSERT INTO counters VALUES ('end', 1)").await.index;
    mysql.cluster.assert_equal_digests(&[1, 2, 3], last).await;
    for table in ["parent", "child", "audit", "counters"] {
        let first = mysql.rows(1, table);
        assert!(!first.is_empty(), "{table} has rows");
        for id in [2, 3] {
            assert_eq!(mysql.rows(id, table), first, "{table} on node {id}'s server differs from node 1's");
        }
    }
    let audit = mysql.rows(1, "audit");
    let distinct: std::collections::BTreeSet<String> = audit.iter().map(|row| format!("{:?}", row[3])).collect();
    assert!(distinct.len() > audit.len() / 2, "RAND() drew different numbers per row");
}

/// Every refusal the README lists, each with the words its error must hold
/// (written out here, not taken from the code that refuses).
const UNSAFE: &[(&str, &str)] = &[
    ("INSERT INTO t (v) VALUES (UUID())", "UUID()"),
    ("INSERT INTO t (n) VALUES (UUID_SHORT())", "UUID_SHORT()"),
    ("INSERT INTO t (v) VALUES (SYS_GUID())", "SYS_GUID()"),
    ("INSERT INTO t (v) VALUES (SYSDATE())", "SYSDATE()"),
    ("INSERT INTO t (v) VALUES (USER())", "USER()"),
    ("INSERT INTO t (v) VALUES (CURRENT_USER())", "CURRENT_USER()"),
    ("INSERT INTO t (v) VALUES (SESSION_USER())", "SESSION_USER()"),
    ("INSERT INTO t (v) VALUES (SYSTEM_USER())", "SYSTEM_USER()"),
    ("INSERT INTO t (v) VALUES (CURRENT_ROLE())", "CURRENT_ROLE()"),
    ("INSERT INTO t (n) VALUES (CONNECTION_ID())", "CONNECTION_ID()"),
    ("INSERT INTO t (n) VALUES (FOUND_ROWS())", "FOUND_ROWS()"),
    ("INSERT INTO t (n) VALUES (ROW_COUNT())", "ROW_COUNT()"),
    ("INSERT INTO t (n) VALUES (GET_LOCK('x', 0))", "GET_LOCK()"),
    ("INSERT INTO t (n) VALUES (RELEASE_LOCK('x'))", "RELEASE_LOCK()"),
    ("INSERT INTO t (n) VALUES (RELEASE_ALL_LOCKS())", "RELEASE_ALL_LOCKS()"),
    ("INSERT INTO t (n) VALUES (IS_FREE_LOCK('x'))", "IS_FREE_LOCK()"),
    ("INSERT INTO t (n) VALUES (IS_USED_LOCK('x'))", "IS_USED_LOCK()"),
    ("INSERT INTO t (v) VALUES (LOAD_FILE('/etc/hostname'))", "LOAD_FILE()"),
    ("INSERT INTO t (n) VALUES (SLEEP(1))", "SLEEP()"),
    ("INSERT INTO t (n) VALUES (BENCHMARK(10, 1))", "BENCHMARK()"),
    ("INSERT INTO t (n) VALUES (MASTER_POS_WAIT('f', 4))", "MASTER_POS_WAIT()"),
    ("INSERT INTO t (n) VALUES (MASTER_GTID_WAIT('0-1-1'))", "MASTER_GTID_WAIT()"),
    ("INSERT INTO t (n) VALUES (SOURCE_POS_WAIT('f', 4))", "SOURCE_POS_WAIT()"),
    ("INSERT INTO t (v) VALUES (VERSION())", "VERSION()"),
    ("INSERT INTO t (v) VALUES (DATABASE())", "DATABASE()"),
    ("INSERT INTO t (v) VALUES (SCHEMA())", "SCHEMA()"),
    ("INSERT INTO t (n) VALUES (NEXTVAL(s))", "NEXTVAL()"),
    ("INSERT INTO t (n) VALUES (LASTVAL(s))", "LASTVAL()"),
    ("INSERT INTO t (n) VALUES (SETVAL(s, 1))", "SETVAL()"),
    ("INSERT INTO t (v) VALUES (RANDOM_BYTES(8))", "RANDOM_BYTES()"),
    ("INSERT INTO t (n) VALUES (UNCOMPRESSED_LENGTH('x'))", "UNCOMPRESSED_LENGTH()"),
    ("INSERT INTO t (n) VALUES (f(1))", "stored or loadable function"),
    ("INSERT INTO t (v) VALUES (@@hostname)", "system variable"),
    ("INSERT INTO t (n) VALUES (@x)", "user variable"),
    ("UPDATE t SET n = 1 LIMIT 1", "ORDER BY"),
    ("DELETE FROM t ORDER BY v LIMIT 1", "primary key's columns"),
    ("UPDATE t JOIN two ON two.a = t.id SET t.n = 1 LIMIT 1", "multi-table"),
    ("INSERT INTO two (a, b) VALUES (1, 1) ON DUPLICATE KEY UPDATE b = 2", "more than one unique key"),
    ("INSERT INTO t (id, v) SELECT id, v FROM t ON DUPLICATE KEY UPDATE n = 1", "ON DUPLICATE KEY UPDATE"),
    ("INSERT IGNORE INTO t (id, v) SELECT id, v FROM t", "IGNORE"),
    ("REPLACE INTO t (id, v) SELECT id, v FROM t", "REPLACE ... SELECT"),
    ("INSERT INTO t (id, v) SELECT id, v FROM t LIMIT 1", "LIMIT without ORDER BY"),
    ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", "parse"),
    ("XA START 'x'", "parse"),
    ("LOCK TABLES t WRITE", "LOCK TABLES"),
    ("UNLOCK TABLES", "LOCK TABLES"),
    ("CALL p()", "stored procedures"),
    ("CREATE PROCEDURE q() BEGIN SELECT 1; END", "parse"),
    ("CREATE FUNCTION g() RETURNS INT RETURN 1", "parse"),
    ("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO DELETE FROM t", "parse"),
    ("PREPARE s FROM 'SELECT 1'", "parse"),
    ("EXECUTE s", "prepared statements"),
    ("SET @x = 1", "SET"),
    ("BEGIN", "already one transaction"),
    ("COMMIT", "already one transaction"),
    ("ROLLBACK", "already one transaction"),
    ("SAVEPOINT a", "already one transaction"),
    ("USE mysql", "one database"),
    ("CREATE DATABASE other", "one database"),
    ("DROP DATABASE other", "DROP DATABASE"),
    ("GRANT ALL ON *.* TO 'x'@'%'", "privileges"),
    ("REVOKE ALL ON *.* FROM 'x'@'%'", "privileges"),
    ("KILL 1", "one server"),
    ("FLUSH TABLES", "one server"),
    ("CREATE TRIGGER numbered AFTER INSERT ON two FOR EACH ROW INSERT INTO t (v) VALUES ('x')", "AUTO_INCREMENT"),
    ("CREATE TABLE s AS SELECT * FROM t", "CREATE TABLE ... SELECT"),
    ("CREATE TABLE s LIKE t", "LIKE"),
    ("CREATE TEMPORARY TABLE tmp (id INT PRIMARY KEY)", "temporary"),
    ("CREATE TABLE nokey (a INT)", "PRIMARY KEY"),
    ("INSERT INTO keyless (a) VALUES (1)", "no PRIMARY KEY"),
    ("ALTER TABLE t DROP PRIMARY KEY", "PRIMARY KEY"),
    ("CREATE TABLE m (id INT PRIMARY KEY) ENGINE=MyISAM", "InnoDB"),
    ("ALTER TABLE t ENGINE=MyISAM", "parse"),
    ("INSERT INTO mysql.user (Host) VALUES ('x')", "another database"),
    ("INSERT INTO other.t (id) VALUES (1)", "another database"),
    ("INSERT INTO _deeb_members (id, address) VALUES (9, 'x')", "deeb's own"),
    ("INSERT INTO t (id) VALUES (1); INSERT INTO t (id) VALUES (2)", "one SQL statement"),
];

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn unsafe_statements_are_refused_before_they_are_proposed() {
    let mysql = MysqlCluster::start(&[]);
    let cluster = &mysql.cluster;
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    execute(cluster, leader, "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100), n BIGINT)").await;
    execute(cluster, leader, "CREATE TABLE two (a INT PRIMARY KEY, b INT UNIQUE)").await;
    // Tables and functions made behind deeb's back (deeb would refuse them).
    let mut root = mysql.server(leader).connect_root().expect("root");
    root.query_drop("CREATE TABLE keyless (a INT)").expect("keyless table");
    root.query_drop("CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x + 1").expect("stored function");
    let before = cluster.status(leader).await.expect("status");
    for (sql, reason) in UNSAFE {
        let error = cluster.execute(leader, sql).await.expect_err(sql);
        assert_eq!(error.error_code, Some(ErrorCode::Refused), "{sql}: {error:?}");
        assert!(error.message.contains(reason), "{sql}: {:?} does not name {reason:?}", error.message);
    }
    let after = cluster.status(leader).await.expect("status");
    assert_eq!(
        (after.term, after.commit_index),
        (before.term, before.commit_index),
        "nothing was proposed for {} refused statements",
        UNSAFE.len()
    );
    // The read path takes reads only, unlocked; MySQL takes `?` only.
    for (sql, reason) in [
        ("SELECT * FROM t FOR UPDATE", "locking read"),
        ("SELECT * FROM t LOCK IN SHARE MODE", "parse"),
        ("INSERT INTO t (id) VALUES (9)", "not a read"),
    ] {
        let error = cluster.query(leader, sql).await.expect_err(sql);
        assert_eq!(error.error_code, Some(ErrorCode::Refused), "{sql}: {error:?}");
        assert!(error.message.contains(reason), "{sql}: {:?} does not name {reason:?}", error.message);
    }
    let named = deeb_proto::Statement {
        sql: "INSERT INTO t (n) VALUES (:n)".into(),
        named_params: vec![deeb_proto::NamedValue { name: ":n".into(), value: None }],
        ..Default::default()
    };
    let error =
        cluster.sql_client(leader, Options::default()).execute_statements(vec![named]).await.expect_err("named");
    assert!(error.message.contains("positional parameters"), "{error:?}");
    // And the node keeps serving.
    let inserted = execute(cluster, leader, "INSERT INTO t (v, n) VALUES ('ok', 1), ('ok too', 2)").await;
    assert_eq!((inserted.results[0].rows_affected, inserted.results[0].last_insert_id), (2, 1));
    let error = cluster.execute(leader, "INSERT INTO t (id, v) VALUES (1, 'again')").await.expect_err("duplicate");
    assert_eq!(error.error_code, Some(ErrorCode::Constraint), "{error:?}");
    assert!(error.message.contains("1062"), "MySQL's code: {}", error.message);
    // The digests cover every table: the one made behind deeb's back goes.
    root.query_drop("DROP TABLE keyless").expect("drop");
    cluster.assert_equal_digests(&[1, 2, 3], inserted.index).await;
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn a_follower_whose_data_was_changed_stops_with_a_divergence_error() {
    let mut mysql = MysqlCluster::start(&[]);
    let leader = mysql.cluster.wait_leader(&[1, 2, 3]).await;
    execute(&mysql.cluster, leader, "CREATE TABLE t (id INT PRIMARY KEY, n INT NOT NULL)").await;
    let filled = execute(&mysql.cluster, leader, "INSERT INTO t VALUES (1, 0), (2, 0), (3, 0), (4, 0)").await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    mysql.cluster.wait_applied(victim, filled.index).await;
    let mut root = mysql.server(victim).connect_root().expect("root");
    root.query_drop("DELETE FROM t WHERE id = 3").expect("a change behind deeb's back");
    let changed = execute(&mysql.cluster, leader, "UPDATE t SET n = n + 1").await;
    assert_eq!(changed.results[0].rows_affected, 4);
    let child = mysql.cluster.children.get_mut(&victim).expect("running");
    let exited = wait_for(Duration::from_secs(20), "the changed follower to stop", || {
        let status = child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    assert!(!exited.success(), "stopped with an error");
    let log = std::fs::read_to_string(mysql.cluster.dir.path().join(format!("node-{victim}.log"))).expect("log");
    assert!(
        log.contains(&format!("replica divergence at index {}", changed.index)) && log.contains("affected 3 rows"),
        "the log names the entry and what differed"
    );
    mysql.cluster.children.remove(&victim);
    let others: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    let later = execute(&mysql.cluster, leader, "INSERT INTO t VALUES (5, 0)").await;
    mysql.cluster.assert_equal_digests(&others, later.index).await;
}

#[test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
fn the_state_machine_conformance_suite_passes() {
    let dir = tempfile::tempdir().expect("dir");
    let server = LocalServer::start(&dir.path().join("mariadb"), common::free_port()).expect("start MariaDB");
    let mut root = server.connect_root().expect("root");
    // Each scenario's state machine gets a new database, named after the
    // path the suite gives it.
    let mut open = |path: &std::path::Path| {
        let name = path.file_name().expect("name").to_string_lossy().replace('-', "_");
        root.query_drop(format!("DROP DATABASE IF EXISTS {name}")).expect("drop");
        root.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4")).expect("create");
        MysqlStateMachine::open(&server.url_of(&name)).expect("open the MySQL state machine")
    };
    deeb_core::conformance::run_all(dir.path(), &mut open);
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn a_node_whose_mysql_stops_is_not_ready_and_catches_up_when_it_returns() {
    let mut mysql = MysqlCluster::start(&[]);
    let leader = mysql.cluster.wait_leader(&[1, 2, 3]).await;
    execute(&mysql.cluster, leader, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))").await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    mysql.servers[usize::try_from(victim - 1).expect("small")].stop(true);
    let mut last = 0;
    for n in 0..50 {
        last = execute(&mysql.cluster, leader, &format!("INSERT INTO t VALUES ({n}, 'while away')")).await.index;
    }
    let http = mysql.cluster.http_addr(victim);
    let answer = wait_for(Duration::from_secs(20), "readyz to say the store is not ready", || async {
        let answer = common::http(&http, b"GET /readyz HTTP/1.0\r\n\r\n", Duration::from_secs(5)).await;
        (answer.status == 503).then_some(answer)
    })
    .await;
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(body.contains("[-]store not ready") && body.contains("mysql"), "a clear reason: {body}");
    let child = mysql.cluster.children.get_mut(&victim).expect("started");
    assert!(child.try_wait().expect("wait").is_none(), "the node waits for its MySQL; it does not exit");
    mysql.servers[usize::try_from(victim - 1).expect("small")].restart().expect("MariaDB starts again");
    mysql.cluster.assert_equal_digests(&[1, 2, 3], last).await;
    let answer = wait_for(Duration::from_secs(20), "readyz to be ready again", || async {
        let answer = common::http(&http, b"GET /readyz HTTP/1.0\r\n\r\n", Duration::from_secs(5)).await;
        (answer.status == 200).then_some(answer)
    })
    .await;
    assert!(String::from_utf8_lossy(&answer.body).contains("[+]store ok"));
    assert_eq!(mysql.rows(victim, "t"), mysql.rows(leader, "t"));
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn a_node_behind_the_compaction_point_catches_up_by_snapshot() {
    let mut mysql = MysqlCluster::start(&["--snapshot-interval", "30", "--compaction-lag", "5"]);
    let leader = mysql.cluster.wait_leader(&[1, 2, 3]).await;
    for sql in SCHEMA {
        execute(&mysql.cluster, leader, sql).await;
    }
    execute(&mysql.cluster, leader, "CREATE VIEW recent AS SELECT id, name FROM parent WHERE id > 10").await;
    let behind = (1..=3).find(|id| *id != leader).expect("a follower");
    mysql.cluster.kill(behind);
    let mut last = 0;
    for round in 0..40 {
        for sql in workload(round) {
            last = execute(&mysql.cluster, leader, &sql).await.index;
        }
    }
    let status = mysql.cluster.status(leader).await.expect("status");
    assert!(status.snapshot_index > 20, "the leader compacted its log: {status:?}");
    mysql.cluster.spawn(behind);
    mysql.cluster.assert_equal_digests(&[1, 2, 3], last).await;
    let log = std::fs::read_to_string(mysql.cluster.dir.path().join(format!("node-{behind}.log"))).expect("log");
    assert!(log.contains("installed snapshot"), "node {behind} caught up by snapshot");
    for table in ["parent", "child", "audit", "counters", "recent"] {
        assert_eq!(mysql.rows(behind, table), mysql.rows(leader, table), "{table} after the install");
    }
    // Its triggers came with the snapshot: a new write does the same there.
    let after = execute(&mysql.cluster, leader, "INSERT INTO parent (name, r) VALUES ('after', RAND())").await;
    mysql.cluster.assert_equal_digests(&[1, 2, 3], after.index).await;
    assert_eq!(mysql.rows(behind, "audit"), mysql.rows(leader, "audit"));
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn a_change_no_statement_touches_is_found_by_the_table_digests() {
    let mut mysql = MysqlCluster::start(&["--snapshot-interval", "20"]);
    let leader = mysql.cluster.wait_leader(&[1, 2, 3]).await;
    execute(&mysql.cluster, leader, "CREATE TABLE quiet (id INT PRIMARY KEY, v INT)").await;
    execute(&mysql.cluster, leader, "CREATE TABLE busy (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await;
    let filled = execute(&mysql.cluster, leader, "INSERT INTO quiet VALUES (1, 1), (2, 2)").await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    mysql.cluster.wait_applied(victim, filled.index).await;
    let mut root = mysql.server(victim).connect_root().expect("root");
    root.query_drop("UPDATE quiet SET v = 7 WHERE id = 2").expect("a change behind deeb's back");
    // No statement touches `quiet` again: only the digests can see it.
    let mut stopped = None;
    for n in 0..200 {
        execute(&mysql.cluster, leader, &format!("INSERT INTO busy (v) VALUES ({n})")).await;
        let child = mysql.cluster.children.get_mut(&victim).expect("running");
        if let Some(status) = child.try_wait().expect("wait") {
            stopped = Some((n, status));
            break;
        }
    }
    let (writes, status) = stopped.expect("the changed follower stopped within 200 writes (10 digest intervals)");
    assert!(!status.success());
    println!("the changed follower stopped after {writes} more writes");
    let log = std::fs::read_to_string(mysql.cluster.dir.path().join(format!("node-{victim}.log"))).expect("log");
    assert!(log.contains("the digest of every table as of entry"), "the log says what differed");
    mysql.cluster.children.remove(&victim);
    let others: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    let later = execute(&mysql.cluster, leader, "INSERT INTO busy (v) VALUES (-1)").await;
    mysql.cluster.assert_equal_digests(&others, later.index).await;
}

/// A node far behind catches up by a snapshot of a large database in
/// bounded memory: `DEEB_MYSQL_SNAPSHOT_MB` of rows (16 in CI;
/// `scripts/mysql-snapshot-large` runs 200), the catching-up node's and the
/// leader's peak RSS printed and bounded.
#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn a_large_snapshot_installs_in_bounded_memory() {
    let megabytes: u64 = std::env::var("DEEB_MYSQL_SNAPSHOT_MB").ok().and_then(|mb| mb.parse().ok()).unwrap_or(16);
    let mut mysql = MysqlCluster::start(&["--snapshot-interval", "20", "--compaction-lag", "2"]);
    let leader = mysql.cluster.wait_leader(&[1, 2, 3]).await;
    execute(&mysql.cluster, leader, "CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, pad LONGTEXT)").await;
    let behind = (1..=3).find(|id| *id != leader).expect("a follower");
    mysql.cluster.kill(behind);
    let started = std::time::Instant::now();
    let mut last = 0;
    for n in 0..megabytes {
        // One MiB a row, made by MySQL from a short statement.
        let sql = format!("INSERT INTO big (pad) VALUES (CONCAT({n}, REPEAT('x', 1048570)))");
        last = execute(&mysql.cluster, leader, &sql).await.index;
    }
    for _ in 0..25 {
        last = execute(&mysql.cluster, leader, "UPDATE big SET pad = CONCAT('y', SUBSTRING(pad, 2)) WHERE id = 1")
            .await
            .index;
    }
    let leader_pid = mysql.cluster.children[&leader].id();
    println!(
        "wrote {megabytes} MiB in {:.1} s; leader's peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        common::peak_rss_kib(leader_pid).unwrap_or(0)
    );
    mysql.cluster.spawn(behind);
    let pid = mysql.cluster.children[&behind].id();
    let catching_up = std::time::Instant::now();
    let mut peak = 0;
    wait_for(Duration::from_secs(600), "the node behind to catch up", || {
        peak = peak.max(common::peak_rss_kib(pid).unwrap_or(0));
        let status = mysql.cluster.status(behind);
        async move { status.await.ok().filter(|status| status.applied_index >= last).map(drop) }
    })
    .await;
    let leader_peak = common::peak_rss_kib(leader_pid).unwrap_or(0);
    let log = std::fs::read_to_string(mysql.cluster.dir.path().join(format!("node-{behind}.log"))).expect("log");
    assert!(log.contains("installed snapshot"), "node {behind} caught up by snapshot");
    println!(
        "{megabytes} MiB snapshot: caught up in {:.1} s; peak RSS {} KiB on the node that installed it, {} KiB on the \
         leader",
        catching_up.elapsed().as_secs_f64(),
        peak,
        leader_peak
    );
    assert!(peak < 128 * 1024 && leader_peak < 128 * 1024, "bounded memory: {peak} / {leader_peak} KiB");
    mysql.cluster.assert_equal_digests(&[1, 2, 3], last).await;
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn reads_at_every_consistency_stream_typed_values_in_chunks() {
    let mysql = MysqlCluster::start(&[]);
    let cluster = &mysql.cluster;
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    execute(
        cluster,
        leader,
        "CREATE TABLE r (id INT PRIMARY KEY, v VARCHAR(20), d DECIMAL(10,2), at DATETIME(3), b VARBINARY(4), \
         f DOUBLE, n INT)",
    )
    .await;
    let mut last = 0;
    for block in 0..5 {
        let rows: Vec<String> = (block * 1000..(block + 1) * 1000)
            .map(|id| format!("({id}, 'v{id}', {id}.25, '2026-11-30 12:00:00.125', X'00ff', {id}.5, NULL)"))
            .collect();
        last = execute(cluster, leader, &format!("INSERT INTO r VALUES {}", rows.join(", "))).await.index;
    }
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.wait_applied(follower, last).await;
    for (node, consistency) in [
        (follower, deeb_proto::Consistency::Linearizable),
        (leader, deeb_proto::Consistency::Lease),
        (follower, deeb_proto::Consistency::Stale),
    ] {
        let mut client = cluster.client(node).await;
        let statement = deeb_proto::Statement { sql: "SELECT * FROM r ORDER BY id".into(), ..Default::default() };
        let request = deeb_proto::QueryRequest {
            statement: Some(statement),
            consistency: consistency as i32,
            max_staleness_ms: 0,
            timeout_ms: 0,
        };
        let mut stream = client.query(request).await.expect("query").into_inner();
        let (mut chunks, mut rows, mut columns) = (0, Vec::new(), Vec::new());
        while let Some(chunk) = stream.message().await.expect("chunk") {
            chunks += 1;
            if chunks == 1 {
                columns = chunk.columns.clone();
            }
            rows.extend(chunk.rows);
        }
        assert_eq!(rows.len(), 5000, "{consistency:?}: every row");
        assert!(chunks >= 5, "{consistency:?}: streamed in chunks, not whole: {chunks}");
        let types: Vec<&str> = columns.iter().map(|column| column.declared_type.as_str()).collect();
        assert_eq!(types, ["int", "varchar", "decimal", "datetime", "varbinary", "double", "int"]);
        use deeb_proto::value::Kind;
        let kinds: Vec<Option<Kind>> = rows[7].values.iter().map(|value| value.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                Some(Kind::Integer(7)),
                Some(Kind::Text("v7".into())),
                Some(Kind::Text("7.25".into())),
                Some(Kind::Text("2026-11-30 12:00:00.125".into())),
                Some(Kind::Blob(vec![0, 255])),
                Some(Kind::Real(7.5)),
                None,
            ],
            "{consistency:?}: typed values"
        );
    }
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn a_runaway_write_is_cut_short_on_the_leader_and_the_node_serves_on() {
    let mysql = MysqlCluster::start(&["--statement-timeout", "1s"]);
    let cluster = &mysql.cluster;
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    execute(cluster, leader, "CREATE TABLE big (id INT PRIMARY KEY)").await;
    let rows: Vec<String> = (0..2000).map(|id| format!("({id})")).collect();
    execute(cluster, leader, &format!("INSERT INTO big VALUES {}", rows.join(", "))).await;
    execute(cluster, leader, "CREATE TABLE t (id INT PRIMARY KEY, n BIGINT)").await;
    let started = std::time::Instant::now();
    let runaway = "INSERT INTO t SELECT 1, COUNT(*) FROM big a, big b, big c";
    let error = cluster.execute(leader, runaway).await.expect_err("cut short");
    assert_eq!(error.error_code, Some(ErrorCode::Timeout), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "cut at the deadline: {:?}", started.elapsed());
    let done = execute(cluster, leader, "INSERT INTO t VALUES (2, 2)").await;
    cluster.assert_equal_digests(&[1, 2, 3], done.index).await;
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn sqlite_only_features_are_refused_clearly_and_stop_no_node() {
    let mysql = MysqlCluster::start(&[]);
    let cluster = &mysql.cluster;
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    execute(cluster, leader, "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let client = cluster.sql_client(leader, Options::default());
    let mut backup = client.backup(deeb_proto::BackupRequest::default()).await.expect("the call is taken");
    let status = backup.message().await.expect_err("no backup through deeb");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("mariadb-dump"), "says what to do instead: {}", status.message());
    let error = client.watch(deeb_proto::WatchRequest::default()).await.expect_err("no change stream");
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    // A SQLite file sent to be restored: refused before any piece is
    // proposed (applying one would stop every node).
    let file = cluster.dir.path().join("restore.db");
    let sqlite = rusqlite::Connection::open(&file).expect("sqlite");
    sqlite.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);").expect("fill");
    drop(sqlite);
    let body = std::fs::read(&file).expect("read");
    let head = format!(
        "POST /db/load HTTP/1.0\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let request = [head.as_bytes(), &body].concat();
    let answer = common::http(&cluster.http_addr(leader), &request, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        text.contains("does not restore SQLite files") && text.contains("keeps its old state"),
        "{}: {text}",
        answer.status
    );
    let done = execute(cluster, leader, "INSERT INTO t VALUES (1)").await;
    cluster.assert_equal_digests(&[1, 2, 3], done.index).await;
}

#[tokio::test]
#[ignore = "needs MariaDB: .ci/mysql installs it and runs these"]
async fn a_node_started_while_its_mysql_is_down_waits_for_it_and_stops_when_told() {
    let mut mysql = MysqlCluster::start(&[]);
    let leader = mysql.cluster.wait_leader(&[1, 2, 3]).await;
    execute(&mysql.cluster, leader, "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let server = usize::try_from(victim - 1).expect("small");
    mysql.cluster.kill(victim);
    mysql.servers[server].stop(true);
    mysql.cluster.spawn(victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let child = mysql.cluster.children.get_mut(&victim).expect("started");
    assert!(child.try_wait().expect("wait").is_none(), "it waits for its MySQL instead of exiting");
    assert!(mysql.cluster.terminate(victim), "SIGTERM stops a node waiting for its MySQL, cleanly");
    let last = execute(&mysql.cluster, leader, "INSERT INTO t VALUES (1)").await.index;
    mysql.cluster.spawn(victim);
    tokio::time::sleep(Duration::from_secs(1)).await;
    mysql.servers[server].restart().expect("MariaDB starts again");
    mysql.cluster.assert_equal_digests(&[1, 2, 3], last).await;
    let log = std::fs::read_to_string(mysql.cluster.dir.path().join(format!("node-{victim}.log"))).expect("log");
    assert!(log.contains("MySQL server cannot be reached"), "the log says why it waits");
}
