use super::*;
use rusqlite::{Connection, OpenFlags};

/// A tracked directory and a connection to a WAL database in it, through
/// the shim.
fn open(directory: &Path, synchronous: &str) -> Connection {
    install(false);
    track(directory);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let connection = Connection::open_with_flags_and_vfs(directory.join("db.sqlite"), flags, VFS_NAME).expect("open");
    connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get::<_, String>(0)).expect("wal");
    connection.execute_batch(&format!("PRAGMA synchronous={synchronous}")).expect("synchronous");
    connection
}

fn values(directory: &Path) -> Vec<i64> {
    let connection = open(directory, "FULL");
    let check: String = connection.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("check");
    assert_eq!(check, "ok");
    let mut statement = connection.prepare("SELECT v FROM t ORDER BY v").expect("prepare");
    let rows = statement.query_map([], |row| row.get(0)).expect("query");
    rows.map(|row| row.expect("row")).collect()
}

/// What a crash that keeps `kept(n)` of a file's `n` unsynced changes
/// leaves, after the node's connection died with it.
fn crash_keeping(directory: &Path, connection: Connection, kept: fn(usize) -> usize) {
    kill(directory);
    drop(connection);
    crash_with(directory, kept);
}

#[test]
fn a_commit_never_synced_is_lost_and_a_synced_one_kept() {
    let directory = tempfile::tempdir().expect("tempdir");
    let connection = open(directory.path(), "FULL");
    connection.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);").expect("synced");
    assert_eq!(unsynced_changes(directory.path()), 0, "FULL syncs each commit");
    connection.execute_batch("PRAGMA synchronous=OFF; INSERT INTO t VALUES (2);").expect("unsynced");
    assert!(unsynced_changes(directory.path()) > 0, "the unsynced commit is recorded");
    crash_keeping(directory.path(), connection, |_| 0);
    assert_eq!(values(directory.path()), vec![1]);
}

#[test]
fn unsynced_changes_may_also_survive() {
    let directory = tempfile::tempdir().expect("tempdir");
    let connection = open(directory.path(), "OFF");
    connection
        .execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);")
        .expect("writes");
    crash_keeping(directory.path(), connection, |unsynced| unsynced);
    assert_eq!(values(directory.path()), vec![1, 2]);
}

/// Every prefix of the unsynced changes is a state SQLite recovers from
/// (the WAL is appended in order and checksummed).
#[test]
fn any_prefix_of_unsynced_changes_recovers() {
    for kept in 0..12 {
        let directory = tempfile::tempdir().expect("tempdir");
        let connection = open(directory.path(), "FULL");
        connection.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (0);").expect("synced");
        connection.execute_batch("PRAGMA synchronous=OFF").expect("off");
        for v in 1..=5 {
            connection.execute("INSERT INTO t VALUES (?1)", [v]).expect("insert");
        }
        KEPT.with(|cell| cell.set(kept));
        crash_keeping(directory.path(), connection, |unsynced| KEPT.with(|cell| cell.get()).min(unsynced));
        let survivors = values(directory.path());
        assert_eq!(survivors, (0..i64::try_from(survivors.len()).expect("few")).collect::<Vec<_>>(), "kept {kept}");
        match kept {
            0 => assert_eq!(survivors, vec![0], "nothing unsynced kept"),
            11 => assert_eq!(survivors.len(), 6, "everything kept"),
            _ => {}
        }
    }
}

thread_local! {
    static KEPT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[test]
fn a_dead_handle_cannot_write() {
    let directory = tempfile::tempdir().expect("tempdir");
    let connection = open(directory.path(), "FULL");
    connection.execute_batch("CREATE TABLE t (v INTEGER)").expect("create");
    kill(directory.path());
    let error = connection.execute_batch("INSERT INTO t VALUES (1)").expect_err("the node is dead");
    assert_eq!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::SystemIoFailure), "{error}");
}

#[test]
fn an_operation_budget_fails_the_call_that_exceeds_it_until_the_crash() {
    let directory = tempfile::tempdir().expect("tempdir");
    let connection = open(directory.path(), "FULL");
    connection.execute_batch("CREATE TABLE t (v INTEGER)").expect("create");
    fail_after_operations(directory.path(), 1);
    let error = connection.execute_batch("INSERT INTO t VALUES (1)").expect_err("budget");
    assert_eq!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::SystemIoFailure), "{error}");
    assert!(budget_spent(directory.path()) && !lift_operation_budget(directory.path()));
    crash_keeping(directory.path(), connection, |unsynced| unsynced);
    assert!(!budget_spent(directory.path()));
    assert_eq!(values(directory.path()), Vec::<i64>::new());
}

#[test]
fn files_outside_tracked_directories_pass_through() {
    install(false);
    let directory = tempfile::tempdir().expect("tempdir");
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let connection = Connection::open_with_flags_and_vfs(directory.path().join("db"), flags, VFS_NAME).expect("open");
    connection.execute_batch("PRAGMA synchronous=OFF; CREATE TABLE t (v INTEGER);").expect("write");
    assert_eq!(unsynced_changes(directory.path()), 0);
}

/// A snapshot copy SQLite writes (`VACUUM INTO`) is synced by SQLite
/// itself, so the crash model never takes back a snapshot the node
/// counted on.
#[test]
fn vacuum_into_leaves_nothing_unsynced() {
    let directory = tempfile::tempdir().expect("tempdir");
    let connection = open(directory.path(), "FULL");
    connection.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);").expect("write");
    let copy = directory.path().join("snapshot.db");
    connection.execute("VACUUM INTO ?1", [copy.to_str().expect("utf-8")]).expect("vacuum into");
    assert_eq!(unsynced_changes(&copy), 0);
}
