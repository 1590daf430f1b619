//! Bad input and unhealthy clusters: each a clear error, the server stays up.

mod common;

use std::time::{Duration, Instant};

use common::{cells, Cluster};
use deeb_proto::{QueryRequest, Statement};
use tonic::Code;

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(1, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)").await.expect("create");

    let error = cluster.execute(2, "INSERT INTO t VALUES (").await.expect_err("invalid SQL");
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains("syntax error") || error.message().contains("incomplete"), "{error:?}");

    let error = cluster.query(3, "SELECT * FROM missing").await.expect_err("unknown table");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("no such table"), "{error:?}");

    for sql in ["INSERT INTO t (v) VALUES ('x')", "BEGIN", "DELETE FROM t"] {
        let error = cluster.query(1, sql).await.expect_err("a write through Query");
        assert_eq!(error.code(), Code::InvalidArgument, "{sql}: {error:?}");
    }

    let huge = format!("INSERT INTO t (v) VALUES ('{}')", "x".repeat(5 * 1024 * 1024));
    let error = cluster.execute(1, &huge).await.expect_err("oversized request");
    assert!(matches!(error.code(), Code::ResourceExhausted | Code::InvalidArgument | Code::OutOfRange), "{error:?}");

    let response = cluster.execute(1, "INSERT INTO t (v) VALUES ('still fine')").await.expect("healthy");
    cluster.wait_applied(3, response.index).await;
    let result = cluster.query(3, "SELECT v FROM t").await.expect("healthy");
    assert_eq!(cells(&result), vec![vec!["still fine"]]);
}

#[tokio::test]
async fn client_disconnecting_mid_stream_leaves_server_healthy() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(1, "CREATE TABLE big (i INTEGER PRIMARY KEY, pad TEXT)").await.expect("create");
    for part in 0..4 {
        let (low, high) = (part * 50_000 + 1, (part + 1) * 50_000);
        let fill = format!(
            "INSERT INTO big WITH RECURSIVE n(i) AS (SELECT {low} UNION ALL SELECT i + 1 FROM n WHERE i < {high}) \
             SELECT i, printf('%0100d', i) FROM n"
        );
        cluster.execute(1, &fill).await.expect("fill");
    }
    for _ in 0..3 {
        let mut client = cluster.client(2).await;
        let statement = Statement { sql: "SELECT * FROM big".into(), ..Default::default() };
        let request = QueryRequest { statement: Some(statement), consistency: 0, max_staleness_ms: 0, timeout_ms: 0 };
        let mut stream = client.query(request).await.expect("query starts").into_inner();
        let first = stream.message().await.expect("first chunk").expect("not empty");
        assert!(!first.rows.is_empty());
        drop(stream);
        drop(client);
    }
    let result = cluster.query(2, "SELECT count(*) FROM big").await.expect("healthy after disconnects");
    assert_eq!(cells(&result), vec![vec!["200000"]]);
}

#[tokio::test]
async fn no_quorum_is_a_bounded_error() {
    let mut cluster = Cluster::start(3, &["--request-timeout", "2s"]);
    cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(1, "CREATE TABLE t (v)").await.expect("create");
    cluster.kill(2);
    cluster.kill(3);
    let started = Instant::now();
    let error = cluster.execute(1, "INSERT INTO t VALUES (1)").await.expect_err("no quorum");
    assert!(started.elapsed() < Duration::from_secs(15), "bounded: {:?}", started.elapsed());
    assert!(matches!(error.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown), "{error:?}");
    let status = cluster.status(1).await.expect("status still answers");
    assert_eq!(status.node_id, 1);
}
