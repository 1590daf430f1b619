//! Issue 9's defects against real `deeb serve` processes: each request
//! gets a clear error or the right answer, no node stops, the replicas stay
//! equal, and a runaway statement neither wedges a node nor outlives its
//! deadline, its client or the process.

mod common;

use std::time::{Duration, Instant};

use common::{cells, Cluster};
use deeb_proto::{QueryRequest, Statement};
use tonic::Code;

const RUNAWAY_WRITE: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT count(*) FROM c";
const RUNAWAY_QUERY: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

/// Every node answers status, and all report the same digest once they
/// have applied `index`.
async fn assert_all_up_and_equal(cluster: &Cluster, index: u64) {
    cluster.assert_equal_digests(&[1, 2, 3], index).await;
}

fn query_request(sql: &str, timeout_ms: u64) -> QueryRequest {
    let statement = Statement { sql: sql.into(), ..Default::default() };
    QueryRequest { statement: Some(statement), consistency: 0, max_staleness_ms: 0, timeout_ms }
}

#[tokio::test]
async fn cascades_and_rollbacks_are_the_clients_business() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    for sql in [
        "CREATE TABLE p(id INTEGER PRIMARY KEY)",
        "CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id) ON DELETE CASCADE)",
        "INSERT INTO p VALUES(1)",
        "INSERT INTO c VALUES(10,1)",
        "DELETE FROM p WHERE id=1",
        "CREATE TABLE t(id INTEGER PRIMARY KEY)",
        "INSERT INTO t VALUES(1)",
    ] {
        cluster.execute(leader, sql).await.unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    }
    for _ in 0..3 {
        let error = cluster.execute(leader, "INSERT OR ROLLBACK INTO t VALUES(1)").await.expect_err("duplicate");
        assert_eq!(error.code(), Code::Aborted, "a constraint: {error:?}");
        assert!(error.message().contains("UNIQUE constraint failed"), "{error:?}");
    }
    let last = cluster.execute(leader, "INSERT INTO t VALUES(2)").await.expect("leader still leads");
    assert_all_up_and_equal(&cluster, last.index).await;
    for id in 1..=3 {
        let result = cluster.query(id, "SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM t)").await;
        assert_eq!(cells(&result.expect("query")), vec![vec!["0", "2"]], "node {id}");
    }
}

#[tokio::test]
async fn runaway_and_oversized_writes_end_with_an_error_and_the_leader_stays() {
    // Write statements run off the event loop: one that runs past the
    // election timeout (1 s here) still costs no election.
    let cluster = Cluster::start(3, &["--statement-timeout", "1s"]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(leader, "CREATE TABLE t(x)").await.expect("create");
    cluster.execute(leader, "CREATE TABLE b(x)").await.expect("create");
    let term = cluster.status(leader).await.expect("status").term;
    for sql in [RUNAWAY_WRITE, RUNAWAY_WRITE] {
        let started = Instant::now();
        let error = cluster.execute(leader, sql).await.expect_err("stopped");
        assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
        assert!(error.message().contains("statement"), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }
    let zeroblobs = "INSERT INTO b SELECT zeroblob(500000000) FROM (VALUES(1),(2),(3),(4),(5))";
    let error = cluster.execute(leader, zeroblobs).await.expect_err("too big");
    assert!(error.message().contains("too big"), "{error:?}");
    let big = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 200000) \
               INSERT INTO b SELECT randomblob(1000) FROM c";
    let error = cluster.execute(leader, big).await.expect_err("over the row-changes limit");
    assert!(error.message().contains("request_row_changes_bytes_max"), "{error:?}");
    let last = cluster.execute(leader, "INSERT INTO t VALUES(1)").await.expect("healthy");
    let status = cluster.status(leader).await.expect("status");
    assert_eq!((status.role.as_str(), status.term), ("leader", term), "no election happened");
    assert_all_up_and_equal(&cluster, last.index).await;
}

#[tokio::test]
async fn runaway_queries_stop_at_their_deadline_when_the_client_leaves_and_at_shutdown() {
    let mut cluster = Cluster::start(3, &["--statement-timeout", "1s"]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let started = Instant::now();
    let error = cluster.query(leader, RUNAWAY_QUERY).await.expect_err("deadline");
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // Abandoned queries (asking for a minute each) free their threads.
    let node = 2;
    for _ in 0..3 {
        let mut client = cluster.client(node).await;
        let call = client.query(query_request(RUNAWAY_QUERY, 60_000));
        let _ = tokio::time::timeout(Duration::from_millis(300), call).await;
    }
    let pid = cluster.children[&node].id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = cpu_seconds_over(pid, Duration::from_secs(1)).await;
    assert!(busy < 0.5, "node {node} still burns {busy:.2} CPU-seconds per second after its clients left");

    // A query running at SIGTERM does not hold the process.
    let mut client = cluster.client(node).await;
    let running = tokio::spawn(async move { client.query(query_request(RUNAWAY_QUERY, 60_000)).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert!(cluster.terminate(node), "SIGTERM ends the process cleanly");
    assert!(started.elapsed() < Duration::from_secs(8), "exit took {:?}", started.elapsed());
    let _ = running.await;
}

/// CPU time (user + system) the process used during `window`.
async fn cpu_seconds_over(pid: u32, window: Duration) -> f64 {
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
        let fields: Vec<&str> = stat.rsplit(')').next().expect("after the name").split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    };
    let before = ticks();
    tokio::time::sleep(window).await;
    let hz = 100.0; // USER_HZ on Linux
    (ticks() - before) as f64 / hz / window.as_secs_f64()
}
