//! The whole cluster killed with SIGKILL in the middle of a 64-client write
//! run (group commit full, batches pipelined on the leader, the state
//! machine's commits not synced one by one): after a restart every acknowledged write is there, none applied
//! twice, and every replica holds the same data.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{cells, wait_for, Cluster};
use deeb_proto::{ExecuteRequest, Statement};
use deeb_server::api::statement;

const CLIENTS: u64 = 64;

/// One write: a row of its own, and one more on its client's counter, in
/// one request. Applied twice, the counter would run ahead of the rows.
fn write(client: u64, sequence: u64) -> ExecuteRequest {
    let id = client * 1_000_000 + sequence;
    let statements: Vec<Statement> = [
        format!("INSERT INTO written (id, client) VALUES ({id}, {client})"),
        format!("UPDATE counts SET n = n + 1 WHERE client = {client}"),
    ]
    .iter()
    .map(|sql| statement(sql))
    .collect();
    ExecuteRequest { statements, ..Default::default() }
}

/// Writes until `stop`, each client on a node of its own choosing; returns
/// the ids of the acknowledged writes.
async fn writer(cluster_addr: String, client: u64, stop: Arc<AtomicBool>) -> Vec<u64> {
    let security = deeb_server::security::Security::open();
    let mut acknowledged = Vec::new();
    let Ok(mut grpc) = deeb_server::client::connect(&security, &cluster_addr).await else { return acknowledged };
    // Bounded: the run is stopped within seconds; this is a backstop.
    for sequence in 1..=100_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match grpc.execute(write(client, sequence)).await {
            Ok(_) => acknowledged.push(client * 1_000_000 + sequence),
            // The nodes are gone: nothing more will be acknowledged.
            Err(_) => break,
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_mid_write_run_loses_nothing_acknowledged_and_applies_nothing_twice() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(1, "CREATE TABLE written (id INTEGER PRIMARY KEY, client INTEGER)").await.expect("create");
    cluster.execute(1, "CREATE TABLE counts (client INTEGER PRIMARY KEY, n INTEGER)").await.expect("create");
    let seed = format!(
        "INSERT INTO counts (client, n) WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c \
         WHERE i < {}) SELECT i, 0 FROM c",
        CLIENTS - 1
    );
    cluster.execute(1, &seed).await.expect("counters");

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> =
        (0..CLIENTS).map(|client| tokio::spawn(writer(cluster.addr(client % 3 + 1), client, stop.clone()))).collect();
    // Let the run reach full speed, then kill every node within moments.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pipelined = pipelined_batches(&cluster).await;
    for id in 1..=3 {
        cluster.kill(id);
    }
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = BTreeSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(acknowledged.len() > 100, "the run wrote too little to test anything: {}", acknowledged.len());
    assert!(pipelined > 0.0, "no batch ran on top of another in flight: the run tested no pipeline");

    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_leader(&[1, 2, 3]).await;
    // A write after the restart, so every node must apply everything.
    let last = cluster.execute(1, "UPDATE counts SET n = n WHERE client = 0").await.expect("write after restart");
    cluster.assert_equal_digests(&[1, 2, 3], last.index).await;

    let rows = wait_for(Duration::from_secs(20), "query after restart", || async {
        cluster.query(2, "SELECT id FROM written").await.ok()
    })
    .await;
    let present: BTreeSet<u64> = cells(&rows).iter().map(|row| row[0].parse().expect("an id")).collect();
    let lost: Vec<&u64> = acknowledged.difference(&present).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);

    let per_client = cluster
        .query(3, "SELECT c.client, c.n, (SELECT count(*) FROM written w WHERE w.client = c.client) FROM counts c")
        .await
        .expect("counts");
    for row in cells(&per_client) {
        assert_eq!(row[1], row[2], "client {}: counter {} but {} rows: a write applied twice", row[0], row[1], row[2]);
    }
    println!(
        "{} writes acknowledged before the kill ({pipelined} batches executed on top of batches in flight), {} \
         present after the restart (the rest were in flight)",
        acknowledged.len(),
        present.len()
    );
}

/// Batches the nodes executed on top of batches in flight so far (their
/// leaders' pipelines), from their metrics.
async fn pipelined_batches(cluster: &Cluster) -> f64 {
    let mut total = 0.0;
    for id in 1..=3 {
        let request = b"GET /metrics HTTP/1.0\r\n\r\n";
        let answer = common::http(&cluster.http_addr(id), request, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let sample = text.lines().find_map(|line| line.strip_prefix("deeb_server_batches_pipelined_total "));
        total += sample.and_then(|value| value.trim().parse::<f64>().ok()).unwrap_or(0.0);
    }
    total
}
