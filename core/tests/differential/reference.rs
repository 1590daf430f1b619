//! The reference: one plain SQLite database (the same bundled build deeb
//! uses), where each request runs inside `SAVEPOINT r` and is rolled back
//! if any statement fails, if SQLite already ended the transaction itself
//! (`OR ROLLBACK`, `RAISE(ROLLBACK)`), or if deferred foreign keys would
//! fail at commit.
//!
//! A program can also leave SQLite's defined behaviour: a BEFORE UPDATE or
//! BEFORE DELETE trigger that deletes the row its statement is changing
//! gives undefined results, and this build then writes a malformed b-tree
//! without an error (seed 1377292299). The reference notices (an integrity
//! check after each request while triggers exist, or SQLITE_CORRUPT) and
//! says so in [`Reference::undefined`]; its answers mean nothing after that.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{ffi, Connection};

use super::answer::{Answer, Cell, Rows, StatementResult};

pub struct Reference {
    conn: Connection,
    /// True while a request's savepoint is open (answered, not finished).
    open: bool,
    /// VM steps of the running statement, in progress-handler calls.
    steps: Arc<AtomicU64>,
    /// The database failed SQLite's integrity check (undefined behaviour).
    undefined: bool,
}

/// The reference's own bounds, so a long run's memory and time stay
/// bounded: the database's size (an in-memory file grows without limit
/// otherwise: one run was killed at 24 GB) and a statement's VM steps (a
/// cross join of grown tables ran for minutes). A program that reaches
/// either has outgrown the reference and ends there.
const DATABASE_BYTES_MAX: i64 = 256 << 20;
const STATEMENT_STEPS_MAX: u64 = 50_000_000;
/// VM steps between progress-handler calls.
const PROGRESS_STEPS: u64 = 1_000;

/// Counts a statement's steps; non-zero interrupts it.
unsafe extern "C" fn progress(ctx: *mut std::ffi::c_void) -> c_int {
    // SAFETY: `ctx` is the `AtomicU64` registered in `Reference::open`.
    let steps = unsafe { &*ctx.cast::<AtomicU64>() };
    c_int::from(steps.fetch_add(PROGRESS_STEPS, Ordering::Relaxed) + PROGRESS_STEPS > STATEMENT_STEPS_MAX)
}

impl Reference {
    /// A fresh in-memory database, configured like deeb's writer: the
    /// bundled build enforces foreign keys by default and deeb's leader
    /// does not change that, so neither does the reference.
    pub fn open() -> Reference {
        let conn = Connection::open_in_memory().expect("in-memory SQLite opens");
        let foreign_keys: i64 = conn.query_row("PRAGMA foreign_keys", [], |row| row.get(0)).expect("pragma");
        assert_eq!(foreign_keys, 1, "the bundled SQLite enforces foreign keys by default, as on deeb's leader");
        let steps = Arc::new(AtomicU64::new(0));
        // SAFETY: a valid handle; the counter outlives the connection (it is
        // dropped after `conn`, the field declared first).
        unsafe {
            ffi::sqlite3_progress_handler(
                conn.handle(),
                PROGRESS_STEPS as c_int,
                Some(progress),
                Arc::as_ptr(&steps).cast_mut().cast(),
            )
        };
        Reference { conn, open: false, steps, undefined: false }
    }

    /// True if the last statement run was stopped at the step bound.
    pub fn interrupted(&self) -> bool {
        self.steps.load(Ordering::Relaxed) > STATEMENT_STEPS_MAX
    }

    /// True once the database is larger than its bound.
    pub fn full(&self) -> bool {
        let bytes = "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size";
        self.conn.query_row(bytes, [], |row| row.get::<_, i64>(0)).expect("size readable") > DATABASE_BYTES_MAX
    }

    /// True once a request left the database malformed: SQLite's own
    /// behaviour is undefined from there, so its answers are no reference.
    pub fn undefined(&self) -> bool {
        self.undefined
    }

    /// Checks the database's b-trees while triggers exist (only they reach
    /// undefined behaviour here), once per request.
    fn check_defined(&mut self) {
        let triggers = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'";
        if self.undefined || self.conn.query_row(triggers, [], |row| row.get::<_, i64>(0)).unwrap_or(1) == 0 {
            return;
        }
        let check = self.conn.query_row("PRAGMA quick_check", [], |row| row.get::<_, String>(0));
        self.undefined = !check.is_ok_and(|verdict| verdict == "ok");
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs a request's statements inside a savepoint. On success the
    /// savepoint stays open: call [`Reference::finish`] to keep or drop it.
    /// On failure everything is already rolled back.
    pub fn run(&mut self, statements: &[String]) -> Answer {
        assert!(!self.open, "finish the previous request first");
        self.conn.execute_batch("SAVEPOINT r").expect("savepoint opens");
        let mut results = Vec::new();
        for (index, sql) in statements.iter().enumerate() {
            self.steps.store(0, Ordering::Relaxed);
            match run_statement(&self.conn, sql) {
                Ok(result) => results.push(result),
                Err(message) => {
                    self.roll_back();
                    self.check_defined();
                    return Answer::Failed { statement_index: Some(index), message };
                }
            }
        }
        if self.conn.is_autocommit() {
            // A statement ended the transaction and still reported success
            // (cannot happen in SQLite 3.x; kept as a guard).
            return Answer::Failed { statement_index: None, message: "transaction ended by SQLite".into() };
        }
        if deferred_foreign_key_violations(&self.conn) > 0 {
            self.roll_back();
            return Answer::Failed {
                statement_index: None,
                message: "FOREIGN KEY constraint failed (at commit)".into(),
            };
        }
        self.check_defined();
        self.open = true;
        Answer::Done(results)
    }

    /// Ends an answered request: `keep` releases (commits) it, otherwise it
    /// is rolled back (deeb refused it by design).
    pub fn finish(&mut self, keep: bool) {
        if !self.open {
            return;
        }
        self.open = false;
        if keep {
            self.conn.execute_batch("RELEASE r").expect("no deferred violations were pending, so RELEASE commits");
        } else {
            self.roll_back();
        }
    }

    /// Runs a request and keeps whatever succeeded (generation).
    pub fn run_and_commit(&mut self, statements: &[String]) -> Answer {
        let answer = self.run(statements);
        self.finish(true);
        answer
    }

    /// True if the database holds rows whose foreign keys are violated.
    pub fn has_foreign_key_violations(&self) -> bool {
        let check = self.conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get::<_, i64>(0));
        check.is_ok_and(|n| n > 0)
    }

    /// True if the last request left temporary objects (state a replicated
    /// database must not accept).
    pub fn has_temporary_objects(&self) -> bool {
        let count: i64 =
            self.conn.query_row("SELECT count(*) FROM temp.sqlite_master", [], |row| row.get(0)).unwrap_or(0);
        count > 0
    }

    /// Runs a query and collects its rows.
    pub fn query(&self, sql: &str) -> Rows {
        self.steps.store(0, Ordering::Relaxed);
        query_rows(&self.conn, sql)
    }

    fn roll_back(&mut self) {
        if self.conn.is_autocommit() {
            return;
        }
        if let Err(error) = self.conn.execute_batch("ROLLBACK TO r; RELEASE r") {
            // SQLITE_CORRUPT from a malformed b-tree: `r` opened the
            // transaction, so ROLLBACK undoes the same.
            assert_eq!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt), "{error}");
            self.conn.execute_batch("ROLLBACK").expect("rollback");
            self.undefined = true;
        }
    }
}

/// Runs one statement the way deeb's leader reports it: rows affected only
/// if the statement changed something, and the rowid of the last row the
/// statement itself inserted (0 if none); a schema change reports neither
/// (README, "SQL support").
fn run_statement(conn: &Connection, sql: &str) -> Result<StatementResult, String> {
    let schema_version = |conn: &Connection| conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0));
    let schema_before = schema_version(conn).map_err(|error| error.to_string())?;
    let total_before = conn.total_changes();
    // SAFETY: a valid handle of a connection this thread owns.
    unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(conn.handle(), 0) };
    let mut statement = conn.prepare(sql).map_err(|error| error.to_string())?;
    let width = statement.column_count();
    let mut rows = statement.raw_query();
    let mut returned = Vec::new();
    for _ in 0..ROWS_PER_STATEMENT_MAX {
        match rows.next() {
            Ok(Some(row)) => {
                let cells = (0..width).map(|i| row.get_ref(i).map(Cell::from_sql)).collect::<Result<Vec<Cell>, _>>();
                returned.push(cells.map_err(|error| error.to_string())?);
            }
            Ok(None) => break,
            Err(error) => return Err(error.to_string()),
        }
    }
    returned.sort();
    drop(rows);
    drop(statement);
    if schema_version(conn).map_err(|error| error.to_string())? != schema_before {
        return Ok(StatementResult { rows_affected: 0, last_insert_id: 0, returned });
    }
    let changed = conn.total_changes() != total_before;
    Ok(StatementResult {
        rows_affected: if changed { conn.changes() } else { 0 },
        last_insert_id: visible_insert_id(conn, sql),
        returned,
    })
}

/// Reads every row of a query as cells.
pub fn query_rows(conn: &Connection, sql: &str) -> Rows {
    let mut statement = conn.prepare(sql).map_err(|error| error.to_string())?;
    let width = statement.column_count();
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|error| error.to_string())? {
        let cells = (0..width).map(|i| row.get_ref(i).map(Cell::from_sql)).collect::<Result<Vec<Cell>, _>>();
        out.push(cells.map_err(|error| error.to_string())?);
        assert!(out.len() <= ROWS_PER_STATEMENT_MAX, "query {sql:?} returns too many rows");
    }
    Ok(out)
}

/// Deferred foreign key violations pending in the open transaction.
fn deferred_foreign_key_violations(conn: &Connection) -> c_int {
    let (mut current, mut highest): (c_int, c_int) = (0, 0);
    // SAFETY: the handle is valid while `conn` is borrowed; out pointers are
    // valid locals; DEFERRED_FKS is a documented db_status verb.
    let rc = unsafe {
        ffi::sqlite3_db_status(conn.handle(), ffi::SQLITE_DBSTATUS_DEFERRED_FKS, &mut current, &mut highest, 0)
    };
    assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_db_status");
    current
}

/// A bound on rows stepped through or read by one statement.
const ROWS_PER_STATEMENT_MAX: usize = 1_000_000;

/// The statement's last insert rowid as deeb reports it: 0 when the rows
/// went into a table whose rowid is not its key (not replicated there).
fn visible_insert_id(conn: &Connection, sql: &str) -> i64 {
    let rowid = conn.last_insert_rowid();
    let lower = sql.to_ascii_lowercase();
    let words: Vec<&str> =
        lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
    let Some(table) = words.iter().position(|w| *w == "into").and_then(|i| words.get(i + 1)) else { return rowid };
    let hidden = "SELECT 1 FROM pragma_table_list AS t WHERE t.schema = 'main' AND t.name = ?1 AND NOT t.wr \
                  AND EXISTS (SELECT 1 FROM pragma_index_list(?1) AS i WHERE i.origin = 'pk')";
    match conn.query_row(hidden, [table], |_| Ok(())) {
        Ok(()) => 0,
        Err(_) => rowid,
    }
}
