//! `deeb shell` with piped stdin.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::Cluster;

#[tokio::test]
async fn piped_session_prints_a_table() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[1, 2, 3]).await;
    let session = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);\n\
                   INSERT INTO people (name) VALUES ('alice'),\n  ('bob; the builder');\n\
                   SELECT id, name FROM people ORDER BY id;\n\
                   .tables\n\
                   SELECT * FROM nowhere;\n\
                   .quit\n";
    let mut child = Command::new(env!("CARGO_BIN_EXE_deeb"))
        .args(["shell", "--addr", &cluster.addr(2)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shell");
    child.stdin.take().expect("stdin").write_all(session.as_bytes()).expect("write session");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let table = " id | name\n----+------------------\n 1  | alice\n 2  | bob; the builder\n(2 rows)\n";
    assert!(stdout.contains(table), "stdout:\n{stdout}");
    assert!(stdout.contains(" people\n"), "stdout:\n{stdout}");
    assert!(stderr.contains("no such table: nowhere"), "stderr:\n{stderr}");
}
