//! Whole-database restores through the log (`RestorePart`): a SQLite file
//! in pieces, each an entry, installed on every replica at the last one;
//! the old state stays whole when the restore does not finish or its file
//! does not check out.

mod harness;

use std::path::Path;
use std::time::Duration;

use deeb_core::Config;
use harness::{integer_of, query, restore_part, Cluster, Reply};

const SECOND: Duration = Duration::from_secs(1);

/// A SQLite file (as `deeb backup` or any SQLite would give) with `rows`
/// rows in table `r`, and its bytes.
fn file(dir: &Path, name: &str, rows: u64) -> Vec<u8> {
    let path = dir.join(name);
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(&format!(
        "CREATE TABLE r(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID; CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT); \
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows}) \
         INSERT INTO r SELECT 'k' || x, randomblob(100) FROM n; INSERT INTO s DEFAULT VALUES;"
    ))
    .expect("fill");
    drop(conn);
    std::fs::read(path).expect("read")
}

fn count(cluster: &Cluster, id: u64, table: &str) -> Option<i64> {
    let node = cluster.node(id);
    let reader = node.reader().expect("reader");
    let mut rows = Vec::new();
    let statement = harness::statement(&format!("SELECT count(*) FROM {table}"));
    reader
        .query(&statement, 10, 1 << 20, &mut |chunk| {
            rows.extend(chunk.rows);
            true
        })
        .ok()?;
    rows.first().map(|row| integer_of(row, 0))
}

fn pieces_stored(cluster: &Cluster, id: u64) -> i64 {
    count(cluster, id, "_deeb_restore").unwrap_or(0)
}

#[test]
fn a_file_restored_through_the_log_is_the_state_on_every_node() {
    let dir = tempfile::tempdir().expect("dir");
    let bytes = file(dir.path(), "r.db", 2000);
    let mut cluster = Cluster::new(3, 21);
    cluster.execute("CREATE TABLE old (v)");
    cluster.execute("INSERT INTO old VALUES (1)");
    let index = cluster.restore("first", &bytes, 16 * 1024).expect("restored");
    let digest = cluster.assert_converged();
    let outcome = query(cluster.node(2), "SELECT id, outcome FROM _deeb_restores");
    assert_eq!(outcome.len(), 1);
    assert_eq!(
        format!("{:?}", outcome[0].values),
        format!("{:?}", [harness::text("first"), harness::text("installed: 2 tables, 2001 rows")])
    );
    for id in 1..=3 {
        assert_eq!(count(&cluster, id, "r"), Some(2000), "node {id}");
        assert_eq!(count(&cluster, id, "old"), None, "node {id}: the old tables are gone");
        assert_eq!(pieces_stored(&cluster, id), 0, "node {id}: no pieces left");
        assert!(cluster.node(id).status().applied_index.0 >= index);
    }
    // It takes writes, keeps its members, and a restarted node comes back
    // with it (the install was synced; the entries replay to the same).
    cluster.execute("INSERT INTO r VALUES ('new', x'00')");
    assert_eq!(cluster.node(1).status().members.len(), 3);
    cluster.restart(2);
    let after = cluster.assert_converged();
    assert_ne!(digest, after);
    assert_eq!(count(&cluster, 2, "r"), Some(2001));
    assert_eq!(integer_of(&query(cluster.node(3), "SELECT seq FROM sqlite_sequence")[0], 0), 1);
}

#[test]
fn a_restore_whose_leader_is_gone_leaves_the_old_state() {
    let dir = tempfile::tempdir().expect("dir");
    let bytes = file(dir.path(), "r.db", 2000);
    let mut cluster = Cluster::new(3, 22);
    cluster.execute("CREATE TABLE old (v)");
    cluster.execute("INSERT INTO old VALUES (1)");
    let piece = 16 * 1024;
    let leader = cluster.wait_leader();
    for at in 0..3 {
        let token = cluster.submit_restore_part(leader, restore_part("half", &bytes, piece, at)).expect("submit");
        assert!(matches!(cluster.wait_reply(token, 30 * SECOND), Reply::Write(Ok(_))));
    }
    cluster.assert_converged();
    assert!((1..=3).all(|id| pieces_stored(&cluster, id) == 3), "the pieces are stored everywhere");
    // The leader dies; the new one's first entry drops the pieces, and the
    // rest of the file, were it sent now, changes nothing.
    cluster.crash(leader);
    let next = cluster.wait_leader();
    let count_of_pieces = bytes.len().div_ceil(piece);
    for at in 3..count_of_pieces {
        let token = cluster.submit_restore_part(next, restore_part("half", &bytes, piece, at)).expect("submit");
        assert!(matches!(cluster.wait_reply(token, 30 * SECOND), Reply::Write(Ok(_))));
    }
    cluster.start(leader);
    cluster.assert_converged();
    assert_eq!(count(&cluster, 1, "_deeb_restores"), None, "no restore completed");
    for id in 1..=3 {
        assert_eq!(count(&cluster, id, "old"), Some(1), "node {id}: the old state");
        assert_eq!(count(&cluster, id, "r"), None, "node {id}: nothing of the file");
        assert_eq!(pieces_stored(&cluster, id), 0, "node {id}");
    }
    // A whole restore afterwards completes.
    cluster.restore("again", &bytes, piece).expect("restored");
    cluster.assert_converged();
    assert_eq!(count(&cluster, 1, "r"), Some(2000));
}

#[test]
fn a_damaged_or_unusable_file_leaves_the_old_state() {
    let dir = tempfile::tempdir().expect("dir");
    let bytes = file(dir.path(), "r.db", 300);
    let mut cluster = Cluster::new(3, 23);
    cluster.execute("CREATE TABLE old (v)");
    let piece = 8 * 1024;
    // A piece damaged on the way: the CRC32C does not match.
    let leader = cluster.wait_leader();
    let last = bytes.len().div_ceil(piece) - 1;
    for at in 0..=last {
        let mut part = restore_part("bad", &bytes, piece, at);
        if at == 1 {
            part.data[10] ^= 1;
        }
        let token = cluster.submit_restore_part(leader, part).expect("submit");
        assert!(matches!(cluster.wait_reply(token, 30 * SECOND), Reply::Write(Ok(_))));
    }
    // Not a database at all, with a right checksum.
    let text = b"hello, this is not SQLite".repeat(100);
    cluster.restore("text", &text, piece).expect("applied");
    // A database deeb cannot replicate (NULL in a key).
    let path = dir.path().join("null.db");
    rusqlite::Connection::open(&path)
        .and_then(|conn| conn.execute_batch("CREATE TABLE n(k TEXT PRIMARY KEY); INSERT INTO n VALUES (NULL);"))
        .expect("null key file");
    cluster.restore("null", &std::fs::read(&path).expect("read"), piece).expect("applied");
    cluster.assert_converged();
    let outcomes = query(cluster.node(1), "SELECT outcome FROM _deeb_restores");
    assert!(format!("{outcomes:?}").contains("refused: table \\\"n\\\" has a row with NULL"), "{outcomes:?}");
    for id in 1..=3 {
        assert_eq!(count(&cluster, id, "old"), Some(0), "node {id}: the old state");
        assert_eq!(pieces_stored(&cluster, id), 0, "node {id}");
    }
}

fn small_snapshots(config: &mut Config) {
    config.snapshot_interval_entries = 5;
    config.compaction_lag_entries = 0;
}

/// A node down while most pieces apply catches up from a snapshot that
/// holds the pieces stored so far (they are a table like any other), then
/// applies the rest and installs the same file.
#[test]
fn a_node_that_misses_pieces_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("dir");
    let bytes = file(dir.path(), "r.db", 3000);
    let mut cluster = Cluster::with_config(3, 24, small_snapshots);
    cluster.execute("CREATE TABLE old (v)");
    let leader = cluster.wait_leader();
    let down = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.crash(down);
    let piece = 16 * 1024;
    let count_of_pieces = bytes.len().div_ceil(piece);
    for at in 0..count_of_pieces - 1 {
        let token = cluster.submit_restore_part(leader, restore_part("r", &bytes, piece, at)).expect("submit");
        assert!(matches!(cluster.wait_reply(token, 30 * SECOND), Reply::Write(Ok(_))));
    }
    cluster.start(down);
    cluster.run_until(60 * SECOND, "the node catches up", |c| {
        c.node(down).status().applied_index >= c.node(leader).status().applied_index
    });
    assert!(cluster.node(down).status().snapshot_index.0 > 1, "it took a snapshot");
    let last = restore_part("r", &bytes, piece, count_of_pieces - 1);
    let token = cluster.submit_restore_part(leader, last).expect("submit");
    assert!(matches!(cluster.wait_reply(token, 30 * SECOND), Reply::Write(Ok(_))));
    cluster.assert_converged();
    assert_eq!(count(&cluster, down, "r"), Some(3000));
}

/// A client that does not learn a piece's outcome sends it again: the
/// second copy changes nothing, whether the first piece again after the
/// second was stored, or a one-piece restore's only piece after it was
/// installed and written to since.
#[test]
fn a_piece_sent_again_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let bytes = file(dir.path(), "r.db", 500);
    let mut cluster = Cluster::new(3, 25);
    let piece = 8 * 1024;
    let leader = cluster.wait_leader();
    for at in [0, 1, 0, 1, 2] {
        let token = cluster.submit_restore_part(leader, restore_part("twice", &bytes, piece, at)).expect("submit");
        assert!(matches!(cluster.wait_reply(token, 30 * SECOND), Reply::Write(Ok(_))));
    }
    cluster.assert_converged();
    assert!((1..=3).all(|id| pieces_stored(&cluster, id) == 3), "pieces 0, 1, 2 stored once each");
    let last = bytes.len().div_ceil(piece) - 1;
    for at in 3..=last {
        let token = cluster.submit_restore_part(leader, restore_part("twice", &bytes, piece, at)).expect("submit");
        assert!(matches!(cluster.wait_reply(token, 30 * SECOND), Reply::Write(Ok(_))));
    }
    cluster.assert_converged();
    assert_eq!(count(&cluster, 1, "r"), Some(500));
    // The whole file in one piece, installed, written to, then sent again.
    let single = bytes.len();
    cluster.restore("once", &bytes, single).expect("restored");
    cluster.execute("INSERT INTO r VALUES ('after', x'00')");
    let leader = cluster.wait_leader();
    let token = cluster.submit_restore_part(leader, restore_part("once", &bytes, single, 0)).expect("submit");
    assert!(matches!(cluster.wait_reply(token, 30 * SECOND), Reply::Write(Ok(_))));
    cluster.assert_converged();
    assert_eq!(count(&cluster, 2, "r"), Some(501), "the write after the restore stays");
}
