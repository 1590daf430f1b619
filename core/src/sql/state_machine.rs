//! The state machine: writer connection, leader batches, meta tables,
//! digests and snapshots.

use std::fs::File;
use std::path::{Path, PathBuf};

use deeb_proto::{op, Op, Statement, StatementResult};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::digest::{self, Fnv64};
use super::random::BatchRandom;
use super::session::{self, Authorizer, Session};
use super::{classify, value, Applied, Executed, Reader, RequestError, SqlError};

/// Creates the internal tables (idempotent).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _deeb_meta(
    id INTEGER PRIMARY KEY CHECK (id = 0),
    applied_index INTEGER NOT NULL,
    applied_term INTEGER NOT NULL,
    conf_state BLOB
);
INSERT OR IGNORE INTO _deeb_meta(id, applied_index, applied_term) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS _deeb_members(id INTEGER PRIMARY KEY, address TEXT NOT NULL);
";

/// A membership change: new conf state bytes and member address updates.
type MembershipChange<'a> = (&'a [u8], &'a [(u64, Option<String>)]);

/// The savepoint each leader request runs in.
const SAVEPOINT: &str = "deeb_request";

/// The database of one node: a writer connection (WAL mode) plus read-only
/// connections handed out as [`Reader`]s.
pub struct StateMachine {
    path: PathBuf,
    writer: Connection,
    seed: u64,
    applied: Applied,
    batch_open: bool,
    /// Behind the writer's `random()` and `randomblob()`.
    random: BatchRandom,
}

/// A statement's outcome on the leader: its op (if it changed anything) and
/// result, or the client's error message.
type StatementOutcome = Result<(Option<Op>, StatementResult), String>;

/// True for errors that mean the database itself failed (not the client).
pub(crate) fn is_fatal(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::NotADatabase
                | ErrorCode::OutOfMemory
        )
    )
}

fn io_err(e: std::io::Error) -> SqlError {
    SqlError::Other(format!("i/o: {e}"))
}

/// Reads the applied index and term from `_deeb_meta`.
pub(crate) fn read_applied(conn: &Connection) -> Result<Applied, SqlError> {
    let (index, term): (i64, i64) =
        conn.query_row("SELECT applied_index, applied_term FROM _deeb_meta WHERE id = 0", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(Applied { index: index as u64, term: term as u64 })
}

/// Writes the applied index and term into `_deeb_meta`.
pub(crate) fn write_applied(conn: &Connection, applied: Applied) -> Result<(), SqlError> {
    conn.execute(
        "UPDATE _deeb_meta SET applied_index = ?1, applied_term = ?2 WHERE id = 0",
        params![applied.index as i64, applied.term as i64],
    )?;
    Ok(())
}

fn schema_version(conn: &Connection) -> Result<i64, SqlError> {
    Ok(conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?)
}

/// A PRNG seed derived from the node seed and the batch's index.
fn batch_seed(seed: u64, index: u64) -> u64 {
    let mut h = Fnv64::new();
    h.write(&seed.to_le_bytes());
    h.write(&index.to_le_bytes());
    h.finish()
}

impl StateMachine {
    /// Opens or creates the database at `path` (WAL, synchronous=FULL) and
    /// its internal tables. `seed` makes SQLite's PRNG reproducible.
    pub fn open(path: &Path, seed: u64) -> Result<Self, SqlError> {
        let writer = Connection::open(path)?;
        let mode: String = writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqlError::Other(format!("could not enable WAL (journal_mode={mode})")));
        }
        writer.execute_batch("PRAGMA synchronous=FULL")?;
        writer.execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}COMMIT;"))?;
        let applied = read_applied(&writer)?;
        let random = BatchRandom::install(&writer)?;
        Ok(StateMachine { path: path.to_path_buf(), writer, seed, applied, batch_open: false, random })
    }

    /// The last applied entry (cached; committed state).
    pub fn applied(&self) -> Applied {
        self.applied
    }

    /// The raft ConfState (rust-protobuf bytes) as of `applied`, if any.
    pub fn conf_state(&self) -> Result<Option<Vec<u8>>, SqlError> {
        let conf = self
            .writer
            .query_row("SELECT conf_state FROM _deeb_meta WHERE id = 0", [], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?;
        Ok(conf.flatten())
    }

    /// Node id -> address, as of `applied`, ordered by id.
    pub fn members(&self) -> Result<Vec<(u64, String)>, SqlError> {
        let mut stmt = self.writer.prepare("SELECT id, address FROM _deeb_members ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Leader: opens the batch transaction (`BEGIN IMMEDIATE`, triggers on).
    /// `next_index` seeds SQLite's PRNG.
    pub fn begin_batch(&mut self, next_index: u64) -> Result<(), SqlError> {
        if self.batch_open {
            return Err(SqlError::Other("a batch is already open".into()));
        }
        self.writer.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)?;
        let seed = batch_seed(self.seed, next_index);
        // Our own random()/randomblob() cover client SQL; SQLite's global PRNG
        // is seeded too for anything internal that draws from it.
        self.random.reseed(seed);
        session::seed_prng(((seed >> 32) ^ seed) as u32 as i32);
        self.writer.execute_batch("BEGIN IMMEDIATE")?;
        self.batch_open = true;
        Ok(())
    }

    /// Leader: runs one request inside a savepoint of the open batch. The
    /// inner `Err` is the client's error (rolled back to the savepoint). An
    /// outer `Err` means the batch is unusable: roll it back.
    pub fn execute_request(&mut self, statements: &[Statement]) -> Result<Result<Executed, RequestError>, SqlError> {
        if !self.batch_open {
            return Err(SqlError::Other("no batch is open".into()));
        }
        self.writer.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))?;
        let mut executed = Executed::default();
        for (statement_index, statement) in statements.iter().enumerate() {
            match self.run_statement(statement)? {
                Ok((op, result)) => {
                    executed.ops.extend(op);
                    executed.results.push(result);
                }
                Err(message) => {
                    self.undo_request()?;
                    return Ok(Err(RequestError { statement_index, message }));
                }
            }
        }
        self.writer.execute_batch(&format!("RELEASE {SAVEPOINT}"))?;
        Ok(Ok(executed))
    }

    /// Rolls the current request back to its savepoint.
    fn undo_request(&mut self) -> Result<(), SqlError> {
        if self.writer.is_autocommit() {
            // SQLite rolled the whole transaction back (e.g. on SQLITE_FULL).
            self.batch_open = false;
            return Err(SqlError::Other("SQLite rolled back the batch transaction".into()));
        }
        self.writer.execute_batch(&format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"))?;
        Ok(())
    }

    /// Runs one client statement with a session attached and turns its
    /// effect into an op.
    fn run_statement(&self, statement: &Statement) -> Result<StatementOutcome, SqlError> {
        if classify::keywords(&statement.sql, 1).is_empty() {
            return Ok(Err("empty statement".into()));
        }
        if let Some(reason) = classify::refuse_write(&statement.sql) {
            return Ok(Err(reason));
        }
        let before = schema_version(&self.writer)?;
        let session = Session::new(&self.writer)?;
        let run = run_client(&self.writer, statement)?;
        let changeset = session.changeset()?;
        drop(session);
        let (result, has_params) = match run {
            Ok(x) => x,
            Err(message) => return Ok(Err(message)),
        };
        let op = if schema_version(&self.writer)? != before {
            if has_params {
                return Ok(Err("schema statements (DDL) may not use parameters".into()));
            }
            if !changeset.is_empty() {
                return Ok(Err(classify::CTAS_MESSAGE.into()));
            }
            Some(op::Kind::Ddl(statement.sql.clone()))
        } else if changeset.is_empty() {
            None
        } else {
            Some(op::Kind::Changeset(changeset))
        };
        Ok(Ok((op.map(|k| Op { kind: Some(k) }), result)))
    }

    /// Leader: the batch's entry applied: record `applied` and COMMIT.
    pub fn commit_batch(&mut self, applied: Applied) -> Result<(), SqlError> {
        if !self.batch_open {
            return Err(SqlError::Other("no batch is open".into()));
        }
        write_applied(&self.writer, applied)?;
        self.writer.execute_batch("COMMIT")?;
        self.batch_open = false;
        self.applied = applied;
        Ok(())
    }

    /// Leader: drop the open batch (leadership lost, proposal refused).
    pub fn rollback_batch(&mut self) -> Result<(), SqlError> {
        self.batch_open = false;
        if !self.writer.is_autocommit() {
            self.writer.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    /// True while a batch transaction is open.
    pub fn batch_open(&self) -> bool {
        self.batch_open
    }

    /// Applies an entry with no SQL (leader no-op): records `applied`.
    pub fn apply_empty(&mut self, applied: Applied) -> Result<(), SqlError> {
        self.apply_membership_or_empty(applied, None)
    }

    /// Applies a membership change: records the new conf state and member
    /// addresses (`None` address removes the member) and `applied`.
    pub fn apply_membership(
        &mut self,
        applied: Applied,
        conf_state: &[u8],
        members: &[(u64, Option<String>)],
    ) -> Result<(), SqlError> {
        self.apply_membership_or_empty(applied, Some((conf_state, members)))
    }

    fn apply_membership_or_empty(
        &mut self,
        applied: Applied,
        change: Option<MembershipChange<'_>>,
    ) -> Result<(), SqlError> {
        self.ensure_no_batch()?;
        let tx = self.writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Some((conf_state, members)) = change {
            tx.execute("UPDATE _deeb_meta SET conf_state = ?1 WHERE id = 0", [conf_state])?;
            for (id, address) in members {
                match address {
                    Some(a) => tx.execute(
                        "INSERT OR REPLACE INTO _deeb_members(id, address) VALUES (?1, ?2)",
                        params![*id as i64, a],
                    )?,
                    None => tx.execute("DELETE FROM _deeb_members WHERE id = ?1", [*id as i64])?,
                };
            }
        }
        write_applied(&tx, applied)?;
        tx.commit()?;
        self.applied = applied;
        Ok(())
    }

    pub(crate) fn ensure_no_batch(&self) -> Result<(), SqlError> {
        if self.batch_open {
            return Err(SqlError::Other("a leader batch is open".into()));
        }
        Ok(())
    }

    pub(crate) fn writer_mut(&mut self) -> &mut Connection {
        &mut self.writer
    }

    pub(crate) fn set_applied(&mut self, applied: Applied) {
        self.applied = applied;
    }

    fn open_read(&self) -> Result<Connection, SqlError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Ok(Connection::open_with_flags(&self.path, flags)?)
    }

    /// Opens a read-only connection (sees committed state only).
    pub fn reader(&self) -> Result<Reader, SqlError> {
        Ok(Reader::new(self.open_read()?))
    }

    /// Ordered hash of the committed schema and every table's rows
    /// (`_deeb_meta` excluded, `sqlite_sequence` and `_deeb_members`
    /// included), read in one read transaction.
    pub fn digest(&self) -> Result<u64, SqlError> {
        let conn = self.open_read()?;
        conn.execute_batch("BEGIN")?;
        let d = digest::digest(&conn)?;
        conn.execute_batch("COMMIT")?;
        Ok(d)
    }

    /// Writes a consistent copy of the committed database to `dest` with
    /// `VACUUM INTO` on a read-only connection (writes go on), fsyncs it and
    /// returns the point it reflects (read from the copy). An existing file
    /// at `dest` is replaced.
    pub fn create_snapshot(&self, dest: &Path) -> Result<Applied, SqlError> {
        let dest_str =
            dest.to_str().ok_or_else(|| SqlError::Other(format!("snapshot path is not UTF-8: {}", dest.display())))?;
        if dest.exists() {
            std::fs::remove_file(dest).map_err(io_err)?;
        }
        self.open_read()?.execute("VACUUM INTO ?1", [dest_str])?;
        let applied = {
            let copy = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            read_applied(&copy)?
        };
        File::open(dest).and_then(|f| f.sync_all()).map_err(io_err)?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|f| f.sync_all()).map_err(io_err)?;
        }
        Ok(applied)
    }

    /// Replaces the whole database with the snapshot file at `src`,
    /// atomically: the file is checked (integrity, `_deeb_meta`), then
    /// copied with the backup API in one write transaction on the WAL
    /// database, so a crash halfway leaves the old state.
    pub fn install_snapshot(&mut self, src: &Path) -> Result<Applied, SqlError> {
        self.ensure_no_batch()?;
        let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let check: String = source.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(SqlError::Other(format!("snapshot fails integrity check: {check}")));
        }
        read_applied(&source)?;
        {
            let backup = Backup::new(&source, &mut self.writer)?;
            match backup.step(-1)? {
                StepResult::Done => {}
                other => return Err(SqlError::Other(format!("snapshot install incomplete: {other:?}"))),
            }
        }
        let mode: String = self.writer.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            self.writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))?;
        }
        self.applied = read_applied(&self.writer)?;
        Ok(self.applied)
    }
}

/// Prepares and runs a client statement under the write authorizer.
/// Returns its result and whether it had parameters, or the client message.
fn run_client(conn: &Connection, statement: &Statement) -> Result<Result<(StatementResult, bool), String>, SqlError> {
    let auth = Authorizer::new(conn, classify::write_policy)?;
    let total_before = conn.total_changes();
    let client_error = |e: rusqlite::Error| -> Result<Result<(StatementResult, bool), String>, SqlError> {
        if is_fatal(&e) {
            return Err(e.into());
        }
        Ok(Err(match (auth.denied(), e) {
            (Some(reason), _) => reason,
            (None, rusqlite::Error::MultipleStatement) => {
                "one statement per sql string: multiple statements provided".into()
            }
            (None, e) => e.to_string(),
        }))
    };
    let mut stmt = match conn.prepare(&statement.sql) {
        Ok(s) => s,
        Err(e) => return client_error(e),
    };
    if let Err(message) = value::bind(&mut stmt, statement) {
        return Ok(Err(message));
    }
    let has_params = stmt.parameter_count() > 0;
    let mut rows = stmt.raw_query();
    loop {
        match rows.next() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return client_error(e),
        }
    }
    drop(rows);
    drop(stmt);
    // SQLite keeps both counters per connection, so a statement that changed
    // nothing (DDL, a SELECT) would report the previous statement's values,
    // or those of deeb's own bookkeeping writes: report zeros instead.
    let changed = conn.total_changes() != total_before;
    let rows_affected = if changed { conn.changes() } else { 0 };
    let last_insert_id = if changed { conn.last_insert_rowid() } else { 0 };
    let result = StatementResult { rows_affected, last_insert_id };
    Ok(Ok((result, has_params)))
}
