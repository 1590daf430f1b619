//! The one-shot commands as a user runs them: real `deeb` processes, output
//! into a pipe, formats, errors.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::Cluster;

fn deeb(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deeb"));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

async fn run(args: Vec<String>) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = deeb(&args).spawn().expect("start deeb");
    tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("output")
}

/// Fills `big` with `rows` rows, 50,000 per request (within the write limits).
async fn fill(cluster: &Cluster, leader: u64, rows: u64) {
    cluster.execute(leader, "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)").await.expect("create");
    for _ in 0..rows / 50_000 {
        let sql = "INSERT INTO big (v) SELECT 'row-' || x FROM \
                   (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000) SELECT x FROM c)";
        cluster.execute(leader, sql).await.expect("insert");
    }
}

/// `deeb query ... | head -1`: the reader closes the pipe after one line;
/// deeb ends quietly with 0, and a million-row result printed in full
/// stays in bounded memory (its peak RSS is measured and printed).
#[tokio::test]
async fn query_streams_into_a_pipe() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    fill(&cluster, leader, 1_000_000).await;
    let addr = cluster.addr(leader);
    let query = ["query", "SELECT * FROM big", "--addr", &addr, "--timeout", "60s"];
    // head -1
    let mut child = deeb(&query).spawn().expect("start deeb query");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    assert_eq!(first.split_whitespace().collect::<Vec<_>>(), ["id", "|", "v"]);
    drop(stdout);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}, stderr: {stderr}", output.status);
    assert!(stderr.is_empty(), "a closed pipe is not an error: {stderr}");
    // The whole result, read and dropped as it comes.
    for format in ["table", "csv", "ndjson"] {
        let mut args = query.to_vec();
        args.extend(["--format", format]);
        let child = deeb(&args).stdout(Stdio::null()).spawn().expect("start deeb query");
        let (status, peak_kib) = tokio::task::spawn_blocking(move || wait_with_peak_rss(child)).await.expect("join");
        assert_eq!(status, 0, "deeb query --format {format}");
        println!("deeb query --format {format} of 1,000,000 rows: peak RSS {} KiB", peak_kib);
        assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB over 64 MiB");
    }
}

/// Waits for `child` and returns its exit code and its own peak RSS in KiB.
fn wait_with_peak_rss(child: std::process::Child) -> (i32, i64) {
    let pid = i32::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unwaited child; the out pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child); // reaped above
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Each format prints exactly what it should, also through a follower, and
/// an error prints once, with its code, and exits 1.
#[tokio::test]
async fn formats_and_errors() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    cluster.execute(leader, "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)").await.expect("create");
    let addr = cluster.addr(follower);
    let exec = |sql: &str, format: &str| ["exec", sql, "--addr", &addr, "--format", format].map(str::to_owned).to_vec();
    let inserted = run(exec("INSERT INTO kv VALUES (1, 'a,b'), (2, NULL) RETURNING k, v", "json")).await;
    let json = String::from_utf8_lossy(&inserted.stdout);
    assert!(
        json.starts_with(r#"{"results":[{"rows_affected":2,"last_insert_id":2,"rows":[{"k":1,"v":"a,b"},{"k":2,"v":null}]}],"index":"#),
        "{json}"
    );
    let query = |format: &str| {
        ["query", "SELECT * FROM kv ORDER BY k", "--addr", &addr, "--format", format].map(str::to_owned).to_vec()
    };
    assert_eq!(String::from_utf8_lossy(&run(query("csv")).await.stdout), "k,v\n1,\"a,b\"\n2,\n");
    assert_eq!(
        String::from_utf8_lossy(&run(query("ndjson")).await.stdout),
        "{\"k\":1,\"v\":\"a,b\"}\n{\"k\":2,\"v\":null}\n"
    );
    let duplicate = run(exec("INSERT INTO kv VALUES (1, 'x')", "table")).await;
    let stderr = String::from_utf8_lossy(&duplicate.stderr);
    assert_eq!(duplicate.status.code(), Some(1));
    assert_eq!(stderr, "error: statement 0: UNIQUE constraint failed: kv.k [constraint, sqlite 1555]\n");
}

/// A 10 MB value written through a follower (forwarded to the leader) reads
/// back whole through `deeb query`; one over the value limit fails with the
/// limit named, on the write path and on the read path.
#[tokio::test]
async fn large_values_round_trip() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    let addr = cluster.addr(follower);
    let args =
        |words: &[&str]| words.iter().map(|word| (*word).to_owned()).chain(["--addr".into(), addr.clone()]).collect();
    let created = run(args(&["exec", "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)"])).await;
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let written = run(args(&["exec", "INSERT INTO blobs VALUES (1, randomblob(10000000)) RETURNING id"])).await;
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    let read = run(args(&["query", "SELECT id, b FROM blobs", "--format", "csv"])).await;
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let stdout = String::from_utf8_lossy(&read.stdout);
    let hex = stdout.lines().nth(1).expect("a row").trim_start_matches("1,x'").trim_end_matches('\'');
    assert_eq!(hex.len(), 20_000_000, "10 MB read back as hex");
    // Through the client crate too, from another node.
    let client = cluster.sql_client(leader, deeb_client::Options::default());
    let mut rows =
        client.query("SELECT b FROM blobs WHERE id = ?", &[deeb_client::Value::Integer(1)]).await.expect("query");
    match rows.next().await.expect("a row") {
        Some(row) => assert!(matches!(&row[0], deeb_client::Value::Blob(blob) if blob.len() == 10_000_000)),
        None => panic!("no row"),
    }
    let length = run(args(&["query", "SELECT length(b) FROM blobs", "--format", "csv"])).await;
    assert_eq!(String::from_utf8_lossy(&length.stdout), "length(b)\n10000000\n");
    let too_big = run(args(&["exec", "INSERT INTO blobs VALUES (2, randomblob(20000000))"])).await;
    let stderr = String::from_utf8_lossy(&too_big.stderr);
    assert_eq!(too_big.status.code(), Some(1));
    assert!(stderr.contains("over the limit of 16777216 bytes") && stderr.contains("[limit"), "{stderr}");
    let read_too_big = run(args(&["query", "SELECT randomblob(20000000)"])).await;
    let stderr = String::from_utf8_lossy(&read_too_big.stderr);
    assert!(stderr.contains("over the limit of 16777216 bytes") && stderr.contains("[limit]"), "{stderr}");
}
