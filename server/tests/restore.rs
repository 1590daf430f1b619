//! Restores as an operator runs them: a backup online with `deeb restore
//! --addr` and rqlite's `POST /db/load` (a SQLite file replaces the whole
//! database, atomically; SQL text loads as statements), and a new cluster
//! seeded offline with `deeb restore --bootstrap` on every node; each ends
//! with the source's rows (its SQL dump, byte for byte) on every node.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Cluster;

/// Runs `deeb ARGS`: its exit code, stdout and stderr.
async fn deeb(args: Vec<String>) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deeb"));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run deeb");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

/// `deeb backup` of node `node` into `out` (`--format sql` if `sql`).
async fn backup(cluster: &Cluster, node: u64, out: &Path, sql: bool) {
    let mut words = args(&["backup", "--addr", &cluster.addr(node), "--out", out.to_str().expect("UTF-8")]);
    if sql {
        words.extend(args(&["--format", "sql"]));
    }
    let (code, _, stderr) = deeb(words).await;
    assert_eq!(code, 0, "backup: {stderr}");
}

/// The source: a schema with what a load must keep in order (foreign keys,
/// AUTOINCREMENT, a trigger that must not fire on the loaded rows, an index,
/// a view) and 3,000 rows. Returns its SQLite and SQL backups.
async fn source(dir: &Path) -> (PathBuf, PathBuf) {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    for sql in [
        "CREATE TABLE parent (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL)",
        "CREATE TABLE child (k TEXT PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent(id), v BLOB)",
        "CREATE TRIGGER counted AFTER INSERT ON child BEGIN UPDATE parent SET name = name || '+' WHERE id = NEW.parent; END",
        "CREATE INDEX child_parent ON child (parent)",
        "CREATE VIEW sizes AS SELECT parent, count(*) AS n FROM child GROUP BY parent",
        "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 1000) \
         INSERT INTO parent (name) SELECT 'p;' || x || ' it''s' FROM s",
        "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 2000) \
         INSERT INTO child SELECT 'k' || x, 1 + x % 1000, randomblob(40) FROM s",
    ] {
        cluster.execute(leader, sql).await.expect(sql);
    }
    let (sqlite, sql) = (dir.join("source.db"), dir.join("source.sql"));
    backup(&cluster, leader, &sqlite, false).await;
    backup(&cluster, leader, &sql, true).await;
    (sqlite, sql)
}

/// Every node's SQL dump equals `expected` (the source's).
async fn assert_holds(cluster: &Cluster, expected: &Path, dir: &Path, what: &str) {
    let expected = std::fs::read_to_string(expected).expect("source dump");
    for node in 1..=3 {
        let out = dir.join(format!("{what}-{node}.sql"));
        let mut words = args(&["backup", "--addr", &cluster.addr(node), "--out", out.to_str().expect("UTF-8")]);
        words.extend(args(&["--format", "sql", "--consistency", "linearizable"]));
        let (code, _, stderr) = deeb(words).await;
        assert_eq!(code, 0, "{what}: backup of node {node}: {stderr}");
        let dumped = std::fs::read_to_string(&out).expect("dump");
        assert!(dumped == expected, "{what}: node {node} differs from the source");
    }
}

/// `POST /db/load` with `body`: the status and the answer's body.
async fn http_load(address: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut request =
        format!("POST /db/load HTTP/1.0\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    request.extend_from_slice(body);
    let answer = common::http(address, &request, Duration::from_secs(120)).await;
    assert!(!answer.open, "answered within 120 s");
    (answer.status, String::from_utf8_lossy(&answer.body).into_owned())
}

/// `deeb backup --compress` and `GET /db/backup?compress` give gzip whose
/// contents are the database (the CRC32C the node sent); `deeb restore`
/// takes the compressed file as it is; `POST /db/load` refuses gzip with a
/// clear 400.
async fn compressed_backups_restore_as_they_are(cluster: &Cluster, sql: &Path, dir: &Path) {
    use std::io::Read as _;
    let gz = dir.join("cluster.db.gz");
    let mut words = args(&["backup", "--compress", "--addr", &cluster.addr(2), "--out", gz.to_str().expect("UTF-8")]);
    words.extend(args(&["--consistency", "linearizable"]));
    let (code, stdout, stderr) = deeb(words).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("gzip-compressed to"), "{stdout}");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).expect("open")).read_to_end(&mut plain).expect("gunzip");
    assert!(plain.starts_with(b"SQLite format 3\0"), "a SQLite file inside");
    assert!(std::fs::metadata(&gz).expect("size").len() < plain.len() as u64, "smaller compressed");

    let answer =
        common::http(&cluster.http_addr(3), b"GET /db/backup?compress HTTP/1.0\r\n\r\n", Duration::from_secs(60)).await;
    let head = answer.head;
    assert!(answer.status == 200 && !answer.open, "{head}");
    assert!(head.contains("content-type: application/gzip"), "{head}");
    let crc = head.lines().find_map(|line| line.strip_prefix("x-deeb-crc32c: ")).expect("crc header");
    let mut body = Vec::new();
    flate2::read::GzDecoder::new(answer.body.as_slice()).read_to_end(&mut body).expect("gunzip the body");
    assert_eq!(format!("{:08x}", crc32c::crc32c(&body)), crc, "the contents are what the node sent");

    cluster.execute(1, "CREATE TABLE later (v)").await.expect("a change the restore undoes");
    let (code, stdout, stderr) = deeb(args(&["restore", "--addr", &cluster.addr(1), gz.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("installed: 2 tables, 3000 rows"), "{stdout}");
    assert_holds(cluster, sql, dir, "cli-gzip").await;
    let (status, body) =
        http_load(&cluster.http_addr(1), "application/octet-stream", &std::fs::read(&gz).expect("gz")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("gzip"), "{body}");
}

#[tokio::test]
async fn backups_load_online_through_the_cli_and_http() {
    let dir = tempfile::tempdir().expect("dir");
    let (sqlite, sql) = source(dir.path()).await;

    // SQL text through the CLI, then the SQLite file over HTTP.
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[1, 2, 3]).await;
    let (code, stdout, stderr) = deeb(args(&["restore", "--addr", &cluster.addr(2), sql.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("loaded 3005 statements"), "{stdout}");
    assert_holds(&cluster, &sql, dir.path(), "cli-sql").await;
    // Its rows loaded again as statements into a cluster that has the
    // tables: refused at once, saying how far it got.
    let words = args(&["restore", "--as-sql", "--addr", &cluster.addr(3), sqlite.to_str().unwrap()]);
    let (code, _, stderr) = deeb(words).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("request 1 of the load failed") && stderr.contains("already exists"), "{stderr}");
    // The SQLite file itself replaces the whole database, whatever it holds.
    cluster.execute(1, "CREATE TABLE extra (v)").await.expect("create");
    let (code, stdout, stderr) = deeb(args(&["restore", "--addr", &cluster.addr(3), sqlite.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("as the whole database: installed: 2 tables, 3000 rows"), "{stdout}");
    assert_holds(&cluster, &sql, dir.path(), "cli-sqlite").await;
    // A file the nodes cannot take leaves it as it was.
    let fake = dir.path().join("fake.db");
    std::fs::write(&fake, b"SQLite format 3\0 and then nothing of a database").expect("write");
    let (code, _, stderr) = deeb(args(&["restore", "--addr", &cluster.addr(1), fake.to_str().unwrap()])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("refused") && stderr.contains("keeps its old state"), "{stderr}");
    assert_holds(&cluster, &sql, dir.path(), "after-refusal").await;
    compressed_backups_restore_as_they_are(&cluster, &sql, dir.path()).await;
    drop(cluster);

    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[1, 2, 3]).await;
    let file = std::fs::read(&sqlite).expect("read");
    let (status, body) = http_load(&cluster.http_addr(3), "application/octet-stream", &file).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("installed: 2 tables, 3000 rows") && !body.contains("error"), "{body}");
    assert_holds(&cluster, &sql, dir.path(), "http-sqlite").await;
    let scratch = cluster.data_dir(3).join("backup-scratch");
    let left: Vec<_> = std::fs::read_dir(&scratch).map(|entries| entries.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "the load's files are removed: {left:?}");
    // SQL text over HTTP, into what the database holds.
    let text = b"CREATE TABLE more (v); INSERT INTO more VALUES (1), (2);";
    let (status, body) = http_load(&cluster.http_addr(2), "text/plain", text).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"statements\":2"), "{body}");
    let (status, body) = http_load(&cluster.http_addr(1), "text/plain", b"INSERT INTO nowhere VALUES (1);").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("no such table: nowhere") && body.contains("request 1 of the load failed"), "{body}");
    let (status, body) = http_load(&cluster.http_addr(1), "text/plain", b"SELECT 1;\xff").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http_load(&cluster.http_addr(1), "text/plain", b"").await;
    assert_eq!(status, 400, "an empty load is a mistake: {body}");
}

#[tokio::test]
async fn a_cluster_bootstrapped_from_a_backup_starts_with_its_rows() {
    let dir = tempfile::tempdir().expect("dir");
    let (sqlite, sql) = source(dir.path()).await;
    let mut cluster = Cluster::unstarted(&[], 3, &[]);
    let peers = cluster.peers();
    for id in 1..=3_u64 {
        let data_dir = cluster.data_dir(id);
        let words = vec![
            "restore".to_owned(),
            "--bootstrap".to_owned(),
            data_dir.to_str().expect("UTF-8").to_owned(),
            "--id".to_owned(),
            id.to_string(),
            "--peers".to_owned(),
            peers.clone(),
            sqlite.to_str().expect("UTF-8").to_owned(),
        ];
        let (code, stdout, stderr) = deeb(words.clone()).await;
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("2 tables, 3000 rows"), "{stdout}");
        let (code, _, stderr) = deeb(words).await;
        assert_eq!(code, 1, "a second seeding of the same directory is refused");
        assert!(stderr.contains("is not empty"), "{stderr}");
    }
    // SQL text is not a whole state: --bootstrap takes SQLite files only.
    let other = dir.path().join("other");
    let sql_words = args(&["restore", "--bootstrap", other.to_str().unwrap(), "--id", "1", "--peers", &peers]);
    let (code, _, stderr) = deeb([sql_words, vec![sql.to_str().unwrap().to_owned()]].concat()).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("takes a SQLite file"), "{stderr}");
    for id in 1..=3 {
        cluster.spawn(id);
    }
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    assert_holds(&cluster, &sql, dir.path(), "bootstrapped").await;
    let written = cluster.execute(leader, "INSERT INTO parent (name) VALUES ('after') RETURNING id").await;
    assert_eq!(written.expect("a write").results[0].last_insert_id, 1001);
}

/// The leader killed (`kill -9`) while a restore's pieces stream: the
/// restore does not complete, every node keeps the old state (never part of
/// the new one), and the same restore run again completes.
#[tokio::test]
async fn a_restore_cut_by_a_leader_kill_leaves_the_old_state() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("big.db");
    {
        let conn = rusqlite::Connection::open(&file).expect("open");
        conn.execute_batch(
            "CREATE TABLE big (k INTEGER PRIMARY KEY, v BLOB); \
             WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 40000) \
             INSERT INTO big SELECT x, randomblob(1000) FROM n;",
        )
        .expect("fill");
    }
    let new_dump = dir.path().join("new.sql");
    {
        let conn = rusqlite::Connection::open(&file).expect("open");
        let mut out = std::fs::File::create(&new_dump).expect("create");
        deeb_core::sql::dump::dump(&conn, &mut out).expect("dump");
    }
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(leader, "CREATE TABLE old (v)").await.expect("create");
    cluster.execute(leader, "INSERT INTO old VALUES ('kept')").await.expect("insert");
    let old_dump = dir.path().join("old.sql");
    backup(&cluster, leader, &old_dump, true).await;
    let via = [1, 2, 3].into_iter().find(|id| *id != leader).expect("a follower");
    let mut restore = Command::new(env!("CARGO_BIN_EXE_deeb"))
        .args(["restore", "--addr", &cluster.addr(via)])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deeb restore");
    // Kill the leader once some pieces are stored, well before the last.
    let pieces = |cluster: &Cluster| {
        let client = cluster.sql_client(via, deeb_client::Options::default());
        async move {
            let read = common::query_with(&client, "SELECT count(*) FROM _deeb_restore").await.ok()?;
            match read.rows.first()?.first()? {
                deeb_client::Value::Integer(count) if *count >= 10 => Some(*count),
                _ => None,
            }
        }
    };
    common::wait_for(Duration::from_secs(60), "pieces stored", || pieces(&cluster)).await;
    cluster.kill(leader);
    let output = tokio::task::spawn_blocking(move || {
        for _ in 0..600 {
            if restore.try_wait().expect("wait").is_some() {
                return restore.wait_with_output().expect("output");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = restore.kill();
        panic!("deeb restore did not end within 60 s of the kill");
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("keeps its old state"), "{stderr}");
    cluster.spawn(leader);
    cluster.wait_leader(&[1, 2, 3]).await;
    cluster.wait_applied(leader, 1).await;
    assert_holds(&cluster, &old_dump, dir.path(), "after-kill").await;
    let (code, stdout, stderr) = deeb(args(&["restore", "--addr", &cluster.addr(via), file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("installed: 1 tables, 40000 rows"), "{stdout}");
    assert_holds(&cluster, &new_dump, dir.path(), "restored").await;
}
