//! The one-shot commands as a user runs them: real `deeb` processes, output
//! into a pipe, formats, errors.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::{wait_with_peak_rss, Cluster};

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

/// `deeb passwd` prints an argon2 hash that the users file takes and that
/// checks the password given, and only it.
#[tokio::test]
async fn passwd_prints_a_hash_the_users_file_takes() {
    use deeb_server::security::{Credentials, Users};
    use std::io::Write as _;
    let mut child = deeb(&["passwd"]).stdin(Stdio::piped()).spawn().expect("start deeb passwd");
    child.stdin.take().expect("stdin").write_all(b"correct horse\n").expect("write");
    let output = child.wait_with_output().expect("output");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let hash = String::from_utf8(output.stdout).expect("utf-8").trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("correct horse"));
    let users = Users::parse(&format!(r#"[{{"username": "u", "password_hash": "{hash}", "perms": ["all"]}}]"#))
        .expect("the users file takes it");
    let login = |password: &str| Credentials::Password { user: "u".into(), password: password.into() };
    assert!(users.authenticate(&login("correct horse")).is_ok());
    assert!(users.authenticate(&login("correct horse battery")).is_err());
}

/// `deeb dev --secure` starts a cluster with client TLS, peer mutual TLS and
/// a users file, and the command it prints connects; without credentials
/// a query is refused.
#[tokio::test]
async fn dev_secure_runs_from_the_printed_commands() {
    let dir = tempfile::tempdir().expect("dir");
    let base = 20_000 + (std::process::id() % 4_000) as u16;
    let data = dir.path().join("dev");
    let base_text = base.to_string();
    let dev = deeb(&["dev", "--secure", "--dir", data.to_str().expect("path"), "--base-port", &base_text])
        .spawn()
        .expect("start deeb dev");
    let mut dev = Stopped(dev);
    let stdout = BufReader::new(dev.0.stdout.take().expect("stdout"));
    let (found, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end (deeb dev gives up on a leader within 20 s), so
        // deeb dev never writes into a closed pipe.
        for line in stdout.lines().map_while(Result::ok) {
            let _ = found.send(line);
        }
    });
    let connect_line =
        lines.iter().find(|line| line.starts_with("connect with:")).expect("deeb dev --secure printed no connect line");
    // connect with: DEEB_PASSWORD="$(cat FILE)" deeb shell --addr A --tls-ca CA --user admin
    let words: Vec<&str> = connect_line.split_whitespace().collect();
    let after = |flag: &str| words.iter().position(|word| *word == flag).map(|at| words[at + 1].to_owned());
    let (addr, ca, user) = (after("--addr"), after("--tls-ca"), after("--user"));
    let password_file = connect_line.split("$(cat ").nth(1).and_then(|rest| rest.split(')').next());
    let password = std::fs::read_to_string(password_file.expect("password file")).expect("password");
    let (addr, ca, user) = (addr.expect("--addr"), ca.expect("--tls-ca"), user.expect("--user"));
    let with_admin = |sql: &str| {
        let mut command = deeb(&["exec", "--addr", &addr, "--tls-ca", &ca, "--user", &user, sql]);
        command.env("DEEB_PASSWORD", &password);
        command.output().expect("deeb exec")
    };
    let created = with_admin("CREATE TABLE t (id INTEGER PRIMARY KEY)");
    let inserted = with_admin("INSERT INTO t VALUES (1)");
    let anonymous =
        deeb(&["query", "--addr", &addr, "--tls-ca", &ca, "SELECT count(*) FROM t"]).output().expect("query");
    let plaintext = deeb(&["status", "--addr", &addr]).output().expect("status");
    let logs: String =
        (1..=3).map(|id| std::fs::read_to_string(data.join(format!("node-{id}.log"))).unwrap_or_default()).collect();
    drop(dev);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(inserted.status.success(), "{}", String::from_utf8_lossy(&inserted.stderr));
    let refused = String::from_utf8_lossy(&anonymous.stderr);
    assert!(!anonymous.status.success() && refused.contains("PermissionDenied"), "{refused}");
    assert!(!plaintext.status.success(), "a plaintext client was served");
    assert!(common::lines_with_secrets(&logs, &[password.trim().to_owned()]).is_empty());
}

/// A child stopped with SIGTERM (then waited for) when dropped, also when
/// a test fails.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
