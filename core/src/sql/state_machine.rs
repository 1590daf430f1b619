//! The state machine: writer connection, leader batches, meta tables,
//! digests and snapshots.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deeb_proto::{op, Column, Op, Row, Sequence, Sequences, Statement, StatementResult};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::digest::{self, Fnv64};
use super::random::BatchRandom;
use super::rowids::{self, LeaderRowids};
use super::session::ApplyMode;
use super::session::{self, Authorizer, Progress, Session, StopCheck, WrittenRowids};
use super::{
    apply, classify, requests, value, Applied, ApplyError, Clock, ErrorClass, Executed, Reader, RequestError, SqlError,
    StatementError, WriteLimits,
};

/// Creates the internal tables (idempotent).
pub(super) const SCHEMA: &str = "
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

/// The savepoint each statement of a request runs in.
const STATEMENT_SAVEPOINT: &str = "deeb_statement";
/// The savepoint around one batch, so that it can be dropped while the
/// batches kept before it in the same transaction stay.
const BATCH_SAVEPOINT: &str = "deeb_batch";

/// Added to SQLite's "database disk image is malformed" when the statement
/// caused it ([`SqliteStateMachine::contain_corruption`]).
const UNDEFINED_SUFFIX: &str = " (while running this statement, which SQLite leaves undefined: seen when a BEFORE \
     trigger deletes or changes the row its statement is changing; the statement was undone and the database \
     checked well formed)";

/// Rows of hidden-rowid tables one statement may insert or update before the leader
/// stops listing their rowids and replays the statement instead (about
/// 16 bytes each while the statement runs).
const WRITTEN_ROWIDS_MAX: usize = 1 << 20;
/// The refusal of a schema change while a deferred foreign key is violated,
/// after a statement of the request was replayed (see `run_statement`).
const DEFERRED_SCHEMA_CHANGE_REFUSAL: &str = "FOREIGN KEY constraint failed (a deferred constraint is still \
     violated): a schema change while a deferred foreign key is violated is not supported after a statement \
     deeb replays; resolve the violation first";
/// Bytes of rows the statements of one write request may return together
/// (RETURNING, or a SELECT in the request); they travel in one response.
pub const RETURNED_ROWS_BYTES_MAX: usize = 1024 * 1024;

/// The database of one node: a writer connection (WAL mode) plus read-only
/// connections handed out as [`Reader`]s.
pub struct SqliteStateMachine {
    path: PathBuf,
    writer: Connection,
    seed: u64,
    applied: Applied,
    /// True while the batch transaction is open: a batch executing, or
    /// batches kept in it (proposed, waiting for their entries to commit).
    batch_open: bool,
    /// A batch is executing inside its savepoint (not yet kept).
    batch_executing: bool,
    /// Batches kept in the open transaction.
    kept_batches: usize,
    /// Behind the writer's `random()` and `randomblob()`.
    random: BatchRandom,
    limits: WriteLimits,
    /// The host's clock, for statement deadlines (none: steps bound only).
    clock: Option<Clock>,
    /// Apply with foreign keys on (mutation `follower_foreign_keys`).
    apply_foreign_keys: bool,
    /// The simulator's injected bugs (all off outside it).
    mutations: crate::config::Mutations,
    /// When the open batch began, on `clock`.
    batch_started: Option<Duration>,
    /// Tables whose rowid client SQL may not read.
    keyed_rowid_tables: classify::KeyedRowidCache,
    /// A statement of the current request was replayed (which forgets the
    /// deferred foreign-key violations SQLite was counting).
    replayed_in_request: std::cell::Cell<bool>,
    /// Tables the current request's ops already name the columns of (a
    /// `Columns` op), since its start or its last schema change.
    columns_named: RefCell<BTreeSet<String>>,
    /// Column names per table, as `Columns` ops carry them, for one schema
    /// version.
    column_names: RefCell<(i64, HashMap<String, Vec<String>>)>,
    /// The index the open batch will be proposed at.
    batch_index: u64,
    /// The executing batch recorded an idempotency key (old ones are
    /// pruned when it is kept, as replicas do when they apply it).
    batch_recorded_keys: bool,
}

/// A statement's outcome on the leader: its ops (none if it changed
/// nothing) and result, or the client's error message.
type StatementOutcome = Result<(Vec<Op>, StatementResult), StatementError>;

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

/// Opens read-only connections to the database file at `path`, with the
/// bounds every query gets; needs nothing of the state machine, so reads go
/// on while the writer runs a batch on the host's worker.
#[derive(Clone)]
pub struct SqliteReaders {
    path: PathBuf,
    steps_max: u64,
    row_bytes_max: usize,
    /// Shared by the clones: connections back from finished readers.
    idle: super::reader::IdleReaders,
}

impl std::fmt::Debug for SqliteReaders {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SqliteReaders").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteReaders {
    fn open_connection(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Connection::open_with_flags(&self.path, flags)
    }
}

impl crate::state_machine::Readers for SqliteReaders {
    type Reader = Reader;

    fn open(&self) -> Result<Reader, SqlError> {
        Ok(Reader::pooled(&self.idle, || self.open_connection(), self.steps_max, self.row_bytes_max)?)
    }

    fn digest(&self) -> Result<(Applied, u64), SqlError> {
        let conn = self.open_connection()?;
        conn.execute_batch("BEGIN")?;
        let applied = read_applied(&conn)?;
        let digest = digest::digest(&conn)?;
        conn.execute_batch("COMMIT")?;
        Ok((applied, digest))
    }
}

/// The applied index and state digest of the database file at `path` (a
/// backup, say): a node's `digest` at the same applied index is equal.
///
/// # Errors
/// The file is not a deeb database, or cannot be read.
pub fn file_digest(path: &Path) -> Result<(u64, u64), SqlError> {
    use crate::state_machine::Readers as _;
    let readers = SqliteReaders {
        path: path.to_owned(),
        steps_max: u64::MAX,
        row_bytes_max: usize::MAX,
        idle: Default::default(),
    };
    let (applied, digest) = readers.digest()?;
    Ok((applied.index, digest))
}

/// Takes snapshots of the database file at `path` from read-only
/// connections of its own (see [`SqliteStateMachine::create_snapshot`]).
#[derive(Debug)]
pub struct SqliteSnapshotTaker {
    path: PathBuf,
    /// Mutant `compact_before_durable` only: no checkpoint after the copy.
    skip_checkpoint: bool,
}

impl crate::state_machine::SnapshotTaker for SqliteSnapshotTaker {
    fn take(self, dest: &Path) -> Result<crate::state_machine::TakenSnapshot, SqlError> {
        take_snapshot(&self.path, dest, !self.skip_checkpoint)
    }
}

/// Copies the WAL's committed pages into the database file on `conn`,
/// syncing the WAL before and the database after (`synchronous=FULL` for
/// this connection). True if every page was copied: everything committed
/// before the call is then durable. `mode` is `PASSIVE` (never waits; a
/// reader can hold pages back) or `TRUNCATE` (waits for readers).
fn checkpoint(conn: &Connection, mode: &str) -> Result<bool, SqlError> {
    conn.execute_batch("PRAGMA synchronous=FULL")?;
    let (busy, frames, copied): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(busy == 0 && frames == copied)
}

/// `VACUUM INTO dest` from one read transaction on the database at
/// `path` (writes go on meanwhile), fsynced; what the copy holds. Then a
/// checkpoint of the database itself, which says whether the database is
/// durable through the copy's entry (the log may be compacted to it).
fn take_snapshot(
    path: &Path,
    dest: &Path,
    checkpoint_after: bool,
) -> Result<crate::state_machine::TakenSnapshot, SqlError> {
    let dest_str =
        dest.to_str().ok_or_else(|| SqlError::Other(format!("snapshot path is not UTF-8: {}", dest.display())))?;
    if dest.exists() {
        std::fs::remove_file(dest).map_err(io_err)?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags)?.execute("VACUUM INTO ?1", [dest_str])?;
    let (applied, conf_state) = {
        let copy = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let conf_state: Option<Vec<u8>> =
            copy.query_row("SELECT conf_state FROM _deeb_meta WHERE id = 0", [], |r| r.get(0))?;
        (read_applied(&copy)?, conf_state)
    };
    File::open(dest).and_then(|f| f.sync_all()).map_err(io_err)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|f| f.sync_all()).map_err(io_err)?;
    }
    let durable = checkpoint_after && checkpoint(&Connection::open(path)?, "PASSIVE")?;
    Ok(crate::state_machine::TakenSnapshot { applied, conf_state, durable })
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

impl SqliteStateMachine {
    /// Opens or creates the database at `path` and its internal tables.
    /// `seed` makes SQLite's PRNG reproducible.
    ///
    /// Commits are not synced (WAL, `synchronous=NORMAL`): the raft log is
    /// the durable record and the applied index commits with each entry, so
    /// a crash replays what the database lost. What was applied before
    /// `open` is made durable here (a full checkpoint, synced), and later
    /// by [`checkpoint`] before the log is compacted past it.
    pub fn open(path: &Path, seed: u64) -> Result<Self, SqlError> {
        let writer = Connection::open(path)?;
        let mode: String = writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqlError::Other(format!("could not enable WAL (journal_mode={mode})")));
        }
        writer.execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}{}COMMIT;", requests::SCHEMA))?;
        if !checkpoint(&writer, "TRUNCATE")? {
            return Err(SqlError::Other("could not checkpoint the database at open".to_owned()));
        }
        writer.execute_batch("PRAGMA synchronous=NORMAL")?;
        let applied = read_applied(&writer)?;
        let random = BatchRandom::install(&writer)?;
        Ok(SqliteStateMachine {
            path: path.to_path_buf(),
            writer,
            seed,
            applied,
            batch_open: false,
            batch_executing: false,
            kept_batches: 0,
            random,
            limits: WriteLimits::default(),
            clock: None,
            apply_foreign_keys: false,
            mutations: crate::config::Mutations::default(),
            batch_started: None,
            batch_index: 0,
            batch_recorded_keys: false,
            replayed_in_request: std::cell::Cell::new(false),
            columns_named: RefCell::default(),
            column_names: RefCell::default(),
            keyed_rowid_tables: classify::KeyedRowidCache::default(),
        })
    }

    /// Sets the bounds on client write statements.
    pub fn set_limits(&mut self, limits: WriteLimits) {
        self.limits = limits;
    }

    /// Gives write statements a wall-clock deadline read from `clock`.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = Some(clock);
    }

    /// Mutation `follower_foreign_keys`: apply changesets with foreign keys
    /// on, so followers run cascades the changesets already carry.
    pub fn set_apply_foreign_keys(&mut self, on: bool) {
        self.apply_foreign_keys = on;
    }

    /// The simulator's injected bugs this state machine carries out
    /// (`follower_foreign_keys`, `applied_index_outside_batch`,
    /// `snapshot_install_unsynced`).
    pub fn set_mutations(&mut self, mutations: crate::config::Mutations) {
        self.apply_foreign_keys = mutations.follower_foreign_keys();
        self.mutations = mutations;
    }

    /// Mutation `applied_index_outside_batch`.
    pub(crate) fn applied_index_outside_batch(&self) -> bool {
        self.mutations.applied_index_outside_batch()
    }

    /// True if committed entries are applied with foreign keys on.
    pub(crate) fn apply_foreign_keys(&self) -> bool {
        self.apply_foreign_keys
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

    /// Leader: opens the batch that will be proposed at `next_index`, in
    /// its own savepoint: on top of the batches kept in the open
    /// transaction, or in a new one (`BEGIN IMMEDIATE`, triggers on).
    /// `next_index` seeds SQLite's PRNG.
    pub fn begin_batch(&mut self, next_index: u64) -> Result<(), SqlError> {
        if self.batch_executing {
            return Err(SqlError::Other("a batch is already executing".into()));
        }
        if !self.batch_open {
            self.writer.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)?;
            // Client SQL runs with foreign keys enforced and their actions on;
            // the changesets carry the cascades (followers apply with them off).
            self.writer.execute_batch("PRAGMA foreign_keys=ON")?;
        }
        // No value or row may outgrow what a request may replicate.
        session::set_length_limit(&self.writer, self.limits.row_changes_bytes_max);
        let seed = batch_seed(self.seed, next_index);
        // Our own random()/randomblob() cover client SQL; SQLite's global PRNG
        // is seeded too for anything internal that draws from it.
        self.random.reseed(seed);
        session::seed_prng(((seed >> 32) ^ seed) as u32 as i32);
        if !self.batch_open {
            self.writer.execute_batch("BEGIN IMMEDIATE")?;
        }
        self.writer.execute_batch(&format!("SAVEPOINT {BATCH_SAVEPOINT}"))?;
        self.batch_open = true;
        self.batch_executing = true;
        self.batch_index = next_index;
        self.batch_recorded_keys = false;
        self.batch_started = self.clock.as_ref().map(|clock| clock());
        Ok(())
    }

    /// Leader: the executing batch was proposed; it stays in the open
    /// transaction (committed with the last batch kept, by
    /// [`Self::commit_batch`]) and the next batch may begin on top of it.
    /// Old idempotency keys are pruned as of its index now, as replicas
    /// do when they apply its entry.
    pub fn keep_batch(&mut self) -> Result<(), SqlError> {
        if !self.batch_executing {
            return Err(SqlError::Other("no batch is executing".into()));
        }
        if self.batch_recorded_keys {
            requests::prune(&self.writer, self.batch_index)?;
        }
        self.writer.execute_batch(&format!("RELEASE {BATCH_SAVEPOINT}"))?;
        self.batch_executing = false;
        self.kept_batches += 1;
        Ok(())
    }

    /// Batches kept in the open transaction.
    pub fn kept_batches(&self) -> usize {
        self.kept_batches
    }

    /// True once the open batch has run as long as one statement may: take
    /// no more requests into it (with no clock, never).
    pub fn batch_time_spent(&self) -> bool {
        match (self.batch_started, self.clock.as_ref()) {
            (Some(started), Some(clock)) => clock().saturating_sub(started) >= self.limits.statement_timeout,
            _ => false,
        }
    }

    /// Leader: runs one request inside a savepoint of the open batch. The
    /// inner `Err` is the client's error: the request is undone, and if its
    /// SQL ended the whole batch transaction (`OR ROLLBACK`,
    /// `RAISE(ROLLBACK)`, an interrupted write), [`Self::batch_open`] is
    /// false afterwards and the earlier requests must run again in a new
    /// batch. An outer `Err` means the database failed.
    pub fn execute_request(&mut self, statements: &[Statement]) -> Result<Result<Executed, RequestError>, SqlError> {
        if !self.batch_executing {
            return Err(SqlError::Other("no batch is executing".into()));
        }
        self.writer.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))?;
        self.replayed_in_request.set(false);
        self.columns_named.borrow_mut().clear();
        let mut executed = Executed::default();
        let mut changes_bytes = 0u64;
        let mut returned_bytes = 0usize;
        for (statement_index, statement) in statements.iter().enumerate() {
            match self.run_statement(statement, &mut changes_bytes)? {
                Ok((ops, result)) => {
                    returned_bytes +=
                        result.rows.iter().flat_map(|row| &row.values).map(value::approx_size).sum::<usize>();
                    if returned_bytes > RETURNED_ROWS_BYTES_MAX {
                        let error = StatementError::limit(returned_rows_message());
                        return self.fail_request(RequestError::new(statement_index, error));
                    }
                    executed.ops.extend(ops);
                    executed.results.push(result);
                }
                Err(error) => return self.fail_request(RequestError::new(statement_index, error)),
            }
        }
        let violations = self.replayed_in_request.get() && foreign_key_violations(&self.writer)?;
        let violated = if session::deferred_foreign_key_violations(&self.writer) {
            Some("FOREIGN KEY constraint failed (a deferred constraint is still violated at the end of the request)")
        } else if violations {
            // SQLite's own count can miss a violation (a trigger deleting
            // the parent row of the row being inserted); the full check
            // does not, so this can refuse what SQLite would commit.
            Some(
                "FOREIGN KEY constraint failed (the request leaves a foreign key violated: checked in full \
                 because a statement was replayed)",
            )
        } else {
            None
        };
        if let Some(message) = violated {
            let statement_index = statements.len().saturating_sub(1);
            return self.fail_request(RequestError::new(statement_index, StatementError::constraint(message)));
        }
        self.writer.execute_batch(&format!("RELEASE {SAVEPOINT}"))?;
        Ok(Ok(executed))
    }

    /// Undoes the current request and returns its error.
    fn fail_request(&mut self, error: RequestError) -> Result<Result<Executed, RequestError>, SqlError> {
        if self.writer.is_autocommit() {
            // The request's SQL rolled back the whole batch transaction,
            // with any batches kept in it.
            self.forget_transaction();
        } else {
            self.writer.execute_batch(&format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"))?;
        }
        Ok(Err(error))
    }

    /// Runs one client statement with a session attached and turns its
    /// effect into ops: its changeset or DDL text, then the AUTOINCREMENT
    /// counters it left. `changes_bytes` counts the request's row changes
    /// so far, against `row_changes_bytes_max`.
    fn run_statement(&self, statement: &Statement, changes_bytes: &mut u64) -> Result<StatementOutcome, SqlError> {
        if classify::keywords(&statement.sql, 1).is_empty() {
            return Ok(Err(StatementError::refused("empty statement")));
        }
        if let Some(reason) = classify::refuse_write(&statement.sql) {
            return Ok(Err(reason.into()));
        }
        let first_keyword = classify::keywords(&statement.sql, 1);
        let schema_change = first_keyword.first().is_some_and(|k| matches!(k.as_str(), "CREATE" | "DROP" | "ALTER"));
        if schema_change && self.replayed_in_request.get() && foreign_key_violations(&self.writer)? {
            // SQLite counts deferred violations as they are made and
            // undone; a replayed statement loses that count, so deeb checks
            // the rows instead, and a schema change could drop a violated
            // foreign key that SQLite would still count at COMMIT.
            return Ok(Err(StatementError::refused(DEFERRED_SCHEMA_CHANGE_REFUSAL)));
        }
        let before = schema_version(&self.writer)?;
        let creates = first_keyword.first().is_some_and(|k| k == "CREATE");
        let tables_before = if creates { table_names(&self.writer)? } else { Default::default() };
        let sequences_before = sequences(&self.writer)?;
        // Undone, and on failure with the request's own savepoint.
        self.writer.execute_batch(&format!("SAVEPOINT {STATEMENT_SAVEPOINT}"))?;
        let session = Session::new(&self.writer)?;
        let keyed = self.keyed_rowid_tables.get(&self.writer)?;
        let written_rowids = WrittenRowids::new(&self.writer, keyed.hidden_rowid.iter().cloned(), WRITTEN_ROWIDS_MAX);
        let run = run_client(&self.writer, statement, &keyed.hidden_rowid, self.stop_check(&session, *changes_bytes))?;
        let written_rowids = written_rowids.finish();
        let changeset = session.changeset();
        drop(session);
        let Ran { mut result, has_params, written } = match run {
            Ok(ran) => ran,
            // SQLite's "string or blob too big" does not say how big is too big.
            Err(mut error) if error.sqlite_code == Some(rusqlite::ffi::SQLITE_TOOBIG) => {
                error.message = format!("{} ({})", error.message, value_limit_text(self.limits.row_changes_bytes_max));
                return Ok(Err(error));
            }
            Err(error) if error.sqlite_code.is_some_and(|code| code & 0xff == rusqlite::ffi::SQLITE_CORRUPT) => {
                return self.contain_corruption(error);
            }
            Err(error) => return Ok(Err(error)),
        };
        let mut ops = Vec::new();
        let mut renumbered_unseen = false;
        if schema_version(&self.writer)? != before {
            if has_params {
                return Ok(Err(StatementError::refused("schema statements (DDL) may not use parameters")));
            }
            if !changeset.is_ok_and(|changeset| changeset.is_empty()) {
                return Ok(Err(classify::ddl_changes_refusal(&statement.sql).into()));
            }
            if creates {
                for table in table_names(&self.writer)?.difference(&tables_before) {
                    if let Some(reason) = unsupported_primary_key(&self.writer, table)? {
                        return Ok(Err(format!("table {table:?}: {reason}").into()));
                    }
                }
            }
            ops.push(op::Kind::Ddl(statement.sql.clone()));
            self.columns_named.borrow_mut().clear();
            // A schema change reports no rows: SQLite counts the rows a
            // DROP TABLE of a child table deletes to settle deferred
            // foreign-key violations, a count a replayed statement earlier
            // in the request can leave deeb unable to reproduce.
            result = StatementResult { rows_affected: 0, last_insert_id: 0, ..result };
        } else {
            if let Some(message) = null_key_written(&self.writer, &keyed, &written)? {
                return Ok(Err(message.into()));
            }
            let changeset = match changeset {
                Ok(changeset) => changeset,
                Err(e) => return Ok(Err(format!("the statement's row changes could not be recorded: {e}").into())),
            };
            *changes_bytes += changeset.len() as u64;
            if *changes_bytes > self.limits.row_changes_bytes_max as u64 {
                return Ok(Err(StatementError::limit(self.too_many_changes_message())));
            }
            let parts = match changeset.is_empty() {
                true => Vec::new(),
                false => match session::split_by_operation(&changeset) {
                    Ok(parts) => parts,
                    Err(e) => return Ok(Err(format!("the statement's row changes could not be recorded: {e}").into())),
                },
            };
            let parts_ref: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let rowids = match &written_rowids {
                Some(written) => rowids::leader_rowids(&self.writer, &keyed.hidden_rowid, &parts_ref, written)?,
                None => LeaderRowids::Unrepresentable,
            };
            // No schema change: the version is still `before`.
            ops.extend(self.columns_ops(before, &parts_ref)?);
            ops.extend(parts.into_iter().map(op::Kind::Changeset));
            match rowids {
                LeaderRowids::Op(rowids) => ops.extend(rowids.map(op::Kind::Rowids)),
                LeaderRowids::Unrepresentable => renumbered_unseen = true,
            }
        }
        let sequences_after = sequences(&self.writer)?;
        if (!ops.is_empty() && !sequences_after.is_empty()) || sequences_after != sequences_before {
            ops.push(op::Kind::Sequences(sequence_op(&sequences_before, &sequences_after)));
        }
        // (The authorizer's context names views and CTEs too, not only
        // triggers: ask the schema which written tables have triggers.)
        let has_triggers = written.iter().any(|table| keyed.with_triggers.contains(table));
        // Rows deleted and inserted again with the same values (REPLACE, a
        // trigger) are numbered anew, which no changeset shows; the Rowids op
        // carries them by key. Where it could not (too many, or a key it
        // cannot carry), replicas keep the old numbers, so the leader must
        // too: undo the statement and apply its ops.
        if renumbered_unseen || self.needs_replay(has_triggers, &ops)? {
            if let Err(reason) = self.replay_statement(&ops)? {
                return Ok(Err(reason.into()));
            }
        }
        self.writer.execute_batch(&format!("RELEASE {STATEMENT_SAVEPOINT}"))?;
        Ok(Ok((ops.into_iter().map(|k| Op { kind: Some(k) }).collect(), result)))
    }

    /// A `Columns` op for each table `changesets` change whose columns the
    /// request's ops do not name yet: the change stream's column names, as
    /// this schema has them.
    /// `version` is the schema version they were made under.
    fn columns_ops(&self, version: i64, changesets: &[&[u8]]) -> Result<Vec<op::Kind>, SqlError> {
        let mut cache = self.column_names.borrow_mut();
        if cache.0 != version {
            *cache = (version, HashMap::new());
        }
        let mut named = self.columns_named.borrow_mut();
        let mut ops = Vec::new();
        for changeset in changesets {
            for change in session::changeset_changes(changeset)? {
                if named.contains(&change.table) {
                    continue;
                }
                let names = match cache.1.get(&change.table) {
                    Some(names) => names.clone(),
                    None => {
                        let names = changeset_column_names(&self.writer, &change.table)?;
                        cache.1.insert(change.table.clone(), names.clone());
                        names
                    }
                };
                named.insert(change.table.clone());
                ops.push(op::Kind::Columns(deeb_proto::Columns { table: change.table, names }));
            }
        }
        Ok(ops)
    }

    /// A client statement answered SQLITE_CORRUPT. SQLite's undefined
    /// behaviour does that: a BEFORE trigger deleting the row its statement
    /// is updating can leave the statement's cursor on a b-tree it then
    /// finds malformed (differential seed 1377292299). Every later write of
    /// the same transaction then fails the same way, even once the
    /// statement is undone, so the whole batch is rolled back (as `OR
    /// ROLLBACK` does: the earlier requests run again in a new batch). If
    /// the database as last committed passes SQLite's `quick_check` (a pass
    /// over the whole file, paid only on this path), the statement failed
    /// and the node goes on; if not, the file itself is damaged and the
    /// node stops.
    fn contain_corruption(&self, error: StatementError) -> Result<StatementOutcome, SqlError> {
        self.writer.execute_batch("ROLLBACK")?;
        let verdict: String = self.writer.query_row("PRAGMA quick_check(1)", [], |row| row.get(0))?;
        if verdict != "ok" {
            return Err(SqlError::Other(format!(
                "database: SQLite reported corruption ({}) and the database fails quick_check: {verdict}",
                error.message
            )));
        }
        Ok(Err(StatementError { message: format!("{}{UNDEFINED_SUFFIX}", error.message), ..error }))
    }

    /// True if a statement's row changes must be replayed on the leader
    /// ([`Self::replay_statement`]) before they are replicated: it had
    /// triggers, or changed a table without a declared key (keyed by rowid).
    ///
    /// SQLite leaves undefined what happens when a trigger changes a row its
    /// statement is changing, and a session may then record old values no
    /// replica has; the differential tester also found sessions recording
    /// rowid-keyed changes no replica can apply. Statements on keyed tables
    /// without triggers are not replayed: they cost nothing extra.
    fn needs_replay(&self, has_triggers: bool, ops: &[op::Kind]) -> Result<bool, SqlError> {
        for op in ops {
            let op::Kind::Changeset(changeset) = op else { continue };
            if has_triggers {
                return Ok(true);
            }
            let changes = session::changeset_changes(changeset)?;
            let tables: std::collections::BTreeSet<&str> = changes.iter().map(|c| c.table.as_str()).collect();
            for table in tables {
                if super::digest::primary_key(&self.writer, table)?.is_empty() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Undoes the statement just run and applies its ops instead, as every
    /// replica will, so that the leader keeps exactly what it replicates. A
    /// statement whose row changes do not apply fails here, as the client's
    /// error, instead of stopping the followers.
    fn replay_statement(&self, ops: &[op::Kind]) -> Result<Result<(), String>, SqlError> {
        self.writer.execute_batch(&format!("ROLLBACK TO {STATEMENT_SAVEPOINT}"))?;
        self.replayed_in_request.set(true);
        self.writer.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
        debug_assert!(!ops.iter().any(|op| matches!(op, op::Kind::Ddl(_))), "schema changes are not replayed");
        let replayed =
            apply::apply_ops(&self.writer, ops.iter().map(Some), self.applied.index, ApplyMode::LeaderReplay);
        self.writer.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)?;
        match replayed {
            Ok(()) => Ok(Ok(())),
            // SQLite refusing the replay (e.g. "foreign key mismatch" from a
            // schema whose foreign keys name a non-unique parent column) is
            // the statement's failure; a broken database is not.
            Err(ApplyError::Sql(SqlError::Sqlite(error))) if !is_fatal(&error) => Ok(Err(format!(
                "the statement's row changes cannot be replicated faithfully: replaying them failed: {error}"
            ))),
            Err(ApplyError::Sql(error)) => Err(error),
            Err(ApplyError::Divergence { reason, .. }) => Ok(Err(format!(
                "the statement's row changes cannot be replicated faithfully: as SQLite's session recorded \
                 them they do not apply to the rows before the statement (seen when triggers change rows their \
                 statement is changing, which SQLite leaves undefined): {reason}"
            ))),
        }
    }

    /// The check that stops a running client statement: its deadline (with
    /// a clock), its VM steps, and the request's row changes so far.
    fn stop_check<'f>(&'f self, session: &'f Session<'_>, changes_bytes: u64) -> Box<StopCheck<'f>> {
        let timeout = self.limits.statement_timeout;
        let deadline = self.clock.as_ref().map(|clock| clock() + timeout);
        let steps_max = self.limits.statement_steps_max;
        let changes_max = self.limits.row_changes_bytes_max as u64;
        let mut steps = 0u64;
        Box::new(move || {
            steps += session::PROGRESS_STEPS;
            if let (Some(deadline), Some(clock)) = (deadline, self.clock.as_ref()) {
                if clock() >= deadline {
                    return Some(StatementError::timeout(format!(
                        "statement timeout: it ran longer than {} ms",
                        timeout.as_millis()
                    )));
                }
            }
            if steps > steps_max {
                return Some(StatementError::timeout(format!(
                    "statement stopped: it ran more than {steps_max} SQLite steps"
                )));
            }
            if changes_bytes + session.changeset_size() > changes_max {
                return Some(StatementError::limit(self.too_many_changes_message()));
            }
            None
        })
    }

    fn too_many_changes_message(&self) -> String {
        format!(
            "the request's row changes exceed {} bytes (request_row_changes_bytes_max)",
            self.limits.row_changes_bytes_max
        )
    }

    /// Leader: the entry of the last batch kept (or of the one executing,
    /// kept first) applied: record `applied` and COMMIT every batch kept.
    pub fn commit_batch(&mut self, applied: Applied) -> Result<(), SqlError> {
        if self.batch_executing {
            self.keep_batch()?;
        }
        if !self.batch_open {
            return Err(SqlError::Other("no batch is open".into()));
        }
        let outside = self.applied_index_outside_batch();
        if !outside {
            write_applied(&self.writer, applied)?;
        }
        self.writer.execute_batch("COMMIT")?;
        if outside {
            write_applied(&self.writer, applied)?;
        }
        self.forget_transaction();
        self.applied = applied;
        Ok(())
    }

    /// Leader: records a request's idempotency key and results in the open
    /// batch (after the request ran).
    pub fn record_request(&mut self, key: &str, results: &[StatementResult]) -> Result<(), SqlError> {
        if !self.batch_executing {
            return Err(SqlError::Other("no batch is executing".into()));
        }
        requests::record(&self.writer, key, self.batch_index, results)?;
        self.batch_recorded_keys = true;
        Ok(())
    }

    /// The applied index and results recorded for an idempotency key (in
    /// the open batch too, on the leader).
    pub fn recorded_request(&self, key: &str) -> Result<Option<(u64, Vec<StatementResult>)>, SqlError> {
        requests::lookup(&self.writer, key)
    }

    /// Leader: drops the executing batch (undone, or its proposal refused);
    /// the batches kept before it stay. With none kept, the transaction
    /// ends.
    pub fn rollback_batch(&mut self) -> Result<(), SqlError> {
        if self.batch_executing && !self.writer.is_autocommit() {
            self.writer.execute_batch(&format!("ROLLBACK TO {BATCH_SAVEPOINT}; RELEASE {BATCH_SAVEPOINT}"))?;
        }
        self.batch_executing = false;
        if self.kept_batches == 0 {
            self.rollback_all()?;
        }
        Ok(())
    }

    /// Leader: drops the open transaction with every batch in it
    /// (leadership lost: their entries, if they commit, apply from the log).
    pub fn rollback_all(&mut self) -> Result<(), SqlError> {
        self.forget_transaction();
        if !self.writer.is_autocommit() {
            self.writer.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    /// The batch transaction ended (committed, rolled back, or ended by
    /// a request's own SQL).
    fn forget_transaction(&mut self) {
        self.batch_open = false;
        self.batch_executing = false;
        self.kept_batches = 0;
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
        } else {
            // A new leader's first entry: a restore left unfinished by the
            // leader before it never completes.
            Self::drop_unfinished_restore(&tx)?;
        }
        write_applied(&tx, applied)?;
        tx.commit()?;
        self.applied = applied;
        Ok(())
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
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

    /// Opens readers of this database without it (see [`SqliteReaders`]).
    pub fn readers(&self) -> SqliteReaders {
        SqliteReaders {
            path: self.path.clone(),
            steps_max: self.limits.statement_steps_max,
            row_bytes_max: self.limits.row_changes_bytes_max,
            idle: Default::default(),
        }
    }

    /// Opens a read-only connection (sees committed state only).
    pub fn reader(&self) -> Result<Reader, SqlError> {
        crate::state_machine::Readers::open(&self.readers())
    }

    /// Ordered hash of the committed schema and every table's rows
    /// (`_deeb_meta` excluded, `sqlite_sequence` and `_deeb_members`
    /// included), read in one read transaction.
    pub fn digest(&self) -> Result<u64, SqlError> {
        Ok(crate::state_machine::Readers::digest(&self.readers())?.1)
    }

    /// Writes a consistent copy of the committed database to `dest` with
    /// `VACUUM INTO` on a read-only connection (writes go on), fsyncs it and
    /// returns the point it reflects (read from the copy). An existing file
    /// at `dest` is replaced.
    pub fn create_snapshot(&self, dest: &Path) -> Result<Applied, SqlError> {
        Ok(take_snapshot(&self.path, dest, true)?.applied)
    }

    /// A taker of snapshots of this database that needs nothing of `self`.
    pub fn snapshot_taker(&self) -> SqliteSnapshotTaker {
        SqliteSnapshotTaker { path: self.path.clone(), skip_checkpoint: self.mutations.compact_before_durable() }
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
        // Synced as it commits: the log is compacted to it at once.
        let unsynced = self.mutations.snapshot_install_unsynced();
        self.writer.execute_batch(if unsynced { "PRAGMA synchronous=OFF" } else { "PRAGMA synchronous=FULL" })?;
        {
            let backup = Backup::new(&source, &mut self.writer)?;
            match backup.step(-1)? {
                StepResult::Done => {}
                other => return Err(SqlError::Other(format!("snapshot install incomplete: {other:?}"))),
            }
        }
        self.writer.execute_batch("PRAGMA synchronous=NORMAL")?;
        let mode: String = self.writer.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            self.writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))?;
        }
        self.applied = read_applied(&self.writer)?;
        // Another file's schema: nothing cached from this one holds.
        self.keyed_rowid_tables = classify::KeyedRowidCache::default();
        self.column_names = RefCell::default();
        Ok(self.applied)
    }
}

/// What the value-size limit is, for errors that hit it.
pub(crate) fn value_limit_text(bytes_max: usize) -> String {
    format!("no value or row may be over the limit of {bytes_max} bytes (request_row_changes_bytes_max)")
}

fn returned_rows_message() -> String {
    format!(
        "the rows the request's statements return are over the limit of {RETURNED_ROWS_BYTES_MAX} bytes for \
         a write request's results: read them with a query"
    )
}

/// Prepares and runs a client statement under the write authorizer and
/// `stop`, with strings, blobs and rows bounded by the row-changes limit;
/// it may not read the rowid of the tables in `hidden_rowid`.
/// Returns its result and whether it had parameters, or the client message.
fn run_client(
    conn: &Connection,
    statement: &Statement,
    hidden_rowid: &std::collections::BTreeSet<String>,
    stop: Box<StopCheck<'_>>,
) -> Result<Result<Ran, StatementError>, SqlError> {
    let insert_target = std::cell::RefCell::new(None::<String>);
    let written = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let auth = Authorizer::new(conn, |action, a, b, db, trigger| {
        let writes = matches!(
            action,
            rusqlite::ffi::SQLITE_INSERT | rusqlite::ffi::SQLITE_UPDATE | rusqlite::ffi::SQLITE_DELETE
        );
        if let (true, Some(table)) = (writes, a) {
            written.borrow_mut().insert(table.to_ascii_lowercase());
        }
        if action == rusqlite::ffi::SQLITE_INSERT && trigger.is_none() && insert_target.borrow().is_none() {
            *insert_target.borrow_mut() = a.map(str::to_owned);
        }
        classify::write_policy(action, a, b, db, trigger)
            .or_else(|| classify::hidden_rowid_read(action, a, b, hidden_rowid))
    })?;
    let progress = Progress::new(conn, stop);
    let total_before = conn.total_changes();
    // Only this statement's own inserts count: the connection's earlier
    // history differs between leaders.
    session::set_last_insert_rowid(conn, 0);
    let client_error = |e: rusqlite::Error| -> Result<Result<Ran, StatementError>, SqlError> {
        // SQLITE_FULL here is also what an exhausted AUTOINCREMENT counter
        // answers: the request's error. A disk that is really full fails
        // deeb's own writes next (commit, apply), and those stop the node.
        // SQLITE_CORRUPT is also what SQLite's undefined behaviour can
        // answer: `contain_corruption` tells the two apart.
        let code = e.sqlite_error_code();
        if is_fatal(&e) && !matches!(code, Some(ErrorCode::DiskFull | ErrorCode::DatabaseCorrupt)) {
            return Err(e.into());
        }
        Ok(Err(match (auth.denied(), progress.stopped(), e) {
            (Some(reason), _, _) => StatementError::refused(reason),
            (None, Some(stopped), _) => stopped,
            (None, None, rusqlite::Error::MultipleStatement) => {
                StatementError::refused("one statement per sql string: multiple statements provided")
            }
            (None, None, e) => StatementError::sqlite(&e),
        }))
    };
    let mut stmt = match conn.prepare(&statement.sql) {
        Ok(s) => s,
        Err(e) => return client_error(e),
    };
    if let Err(message) = value::bind(&mut stmt, statement) {
        return Ok(Err(StatementError { class: ErrorClass::Sql, sqlite_code: None, message }));
    }
    let has_params = stmt.parameter_count() > 0;
    let columns: Vec<Column> = stmt
        .columns()
        .map(|c| Column { name: c.name().to_string(), declared_type: c.decl_type().unwrap_or("").to_string() })
        .collect();
    let width = columns.len();
    let mut returned = Vec::new();
    let mut returned_bytes = 0usize;
    let mut rows = stmt.raw_query();
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let values = (0..width).map(|i| row.get_ref(i).map(value::from_sql)).collect::<Result<Vec<_>, _>>();
                let values = match values {
                    Ok(values) => values,
                    Err(e) => return client_error(e),
                };
                returned_bytes += values.iter().map(value::approx_size).sum::<usize>();
                if returned_bytes > RETURNED_ROWS_BYTES_MAX {
                    return Ok(Err(StatementError::limit(returned_rows_message())));
                }
                returned.push(Row { values });
            }
            Ok(None) => break,
            Err(e) => return client_error(e),
        }
    }
    drop(rows);
    drop(stmt);
    let columns = if returned.is_empty() { Vec::new() } else { columns };
    // SQLite keeps `changes()` per connection, so a statement that changed
    // nothing (DDL, a SELECT) would report the previous statement's count,
    // or that of deeb's own bookkeeping writes: report zero instead.
    let changed = conn.total_changes() != total_before;
    let rows_affected = if changed { conn.changes() } else { 0 };
    let mut last_insert_id = conn.last_insert_rowid();
    // A rowid each replica picks itself means nothing to the client.
    if insert_target.borrow().as_deref().is_some_and(|table| hidden_rowid.contains(&table.to_ascii_lowercase())) {
        last_insert_id = 0;
    }
    let result = StatementResult { rows_affected, last_insert_id, columns, rows: returned };
    drop(auth);
    Ok(Ok(Ran { result, has_params, written: written.into_inner() }))
}

/// The refusal for a statement that left NULL in the one-column key of a
/// table it wrote (an index seek per such table), if it did.
fn null_key_written(
    conn: &Connection,
    keyed: &classify::KeyedRowidTables,
    written: &std::collections::BTreeSet<String>,
) -> Result<Option<String>, SqlError> {
    for table in written {
        let Some(column) = keyed.nullable_key.get(table) else { continue };
        let sql = format!(
            "SELECT 1 FROM {} WHERE {} IS NULL LIMIT 1",
            digest::quote_ident(table),
            digest::quote_ident(column)
        );
        if conn.query_row(&sql, [], |_| Ok(())).optional()?.is_some() {
            return Ok(Some(format!("{} (table {table:?}, column {column:?})", classify::NULL_KEY_MESSAGE)));
        }
    }
    Ok(None)
}

/// What a client statement that ran reports.
struct Ran {
    result: StatementResult,
    has_params: bool,
    /// The tables it may have inserted into, updated or deleted from, its
    /// triggers and foreign-key actions included (lower-cased).
    written: std::collections::BTreeSet<String>,
}

/// True if some row violates a foreign key (a full check: only after a
/// replay, and only in a database that declares deferred foreign keys;
/// immediate ones were checked when the statement first ran).
fn foreign_key_violations(conn: &Connection) -> Result<bool, SqlError> {
    let declared = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND sql LIKE '%REFERENCES%' \
                    AND sql LIKE '%DEFERRABLE%'";
    if conn.query_row(declared, [], |_| Ok(())).optional()?.is_none() {
        return Ok(false);
    }
    match conn.query_row("SELECT 1 FROM pragma_foreign_key_check", [], |_| Ok(())).optional() {
        Ok(found) => return Ok(found.is_some()),
        Err(e) if is_fatal(&e) => return Err(e.into()),
        // "foreign key mismatch": some foreign key names a parent column
        // that is not unique and can never be checked (by SQLite either);
        // check the other tables one by one.
        Err(_) => {}
    }
    let children: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%REFERENCES%'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for child in children {
        match conn.query_row("SELECT 1 FROM pragma_foreign_key_check(?1)", [&child], |_| Ok(())).optional() {
            Ok(Some(())) => return Ok(true),
            Ok(None) => {}
            Err(e) if is_fatal(&e) => return Err(e.into()),
            Err(_) => {}
        }
    }
    Ok(false)
}

/// The names of the tables in `main`.
/// A table's columns as its changesets number them: a table without a
/// declared primary key starts with its rowid (`_rowid_`).
fn changeset_column_names(conn: &Connection, table: &str) -> Result<Vec<String>, SqlError> {
    let mut stmt = conn.prepare_cached("SELECT name, pk FROM main.pragma_table_info(?1)")?;
    let columns: Vec<(String, i64)> =
        stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    let keyed = columns.iter().any(|(_, pk)| *pk != 0);
    let rowid = (!keyed).then(|| "_rowid_".to_string());
    Ok(rowid.into_iter().chain(columns.into_iter().map(|(name, _)| name)).collect())
}

fn table_names(conn: &Connection) -> Result<std::collections::BTreeSet<String>, SqlError> {
    let mut stmt = conn.prepare_cached("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// Why a new table's primary key cannot be replicated, if it cannot: a
/// column compared with a collation other than BINARY, or (in a rowid table
/// that is not STRICT) a key of several columns that may hold NULL. (A
/// one-column key that may hold NULL is checked after each write instead:
/// an index seek.)
pub(super) fn unsupported_primary_key(conn: &Connection, table: &str) -> Result<Option<&'static str>, SqlError> {
    let collated = "SELECT 1 FROM pragma_index_list(?1) AS i, pragma_index_xinfo(i.name) AS x \
                    WHERE i.origin = 'pk' AND x.key AND x.coll <> 'BINARY'";
    if conn.query_row(collated, [table], |_| Ok(())).optional()?.is_some() {
        return Ok(Some(classify::COLLATED_KEY_MESSAGE));
    }
    let nullable = "SELECT 1 FROM pragma_table_list AS t WHERE t.schema = 'main' AND t.name = ?1 \
                    AND NOT t.wr AND NOT t.strict \
                    AND (SELECT count(*) FROM pragma_table_info(?1) WHERE pk > 0) > 1 \
                    AND EXISTS (SELECT 1 FROM pragma_index_list(?1) AS i WHERE i.origin = 'pk') \
                    AND EXISTS (SELECT 1 FROM pragma_table_info(?1) AS c WHERE c.pk > 0 AND NOT c.\"notnull\")";
    if conn.query_row(nullable, [table], |_| Ok(())).optional()?.is_some() {
        return Ok(Some(classify::NULLABLE_KEY_MESSAGE));
    }
    Ok(None)
}

/// The AUTOINCREMENT counters: `sqlite_sequence` as table -> (rowid, seq)
/// (empty if no table uses AUTOINCREMENT).
pub(crate) fn sequences(conn: &Connection) -> Result<BTreeMap<String, (i64, i64)>, SqlError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(BTreeMap::new());
    }
    let mut stmt = conn.prepare_cached("SELECT name, rowid, seq FROM sqlite_sequence")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every counter after a statement, with its row's rowid, plus an explicit
/// "no row" for tables whose counter it removed.
fn sequence_op(before: &BTreeMap<String, (i64, i64)>, after: &BTreeMap<String, (i64, i64)>) -> Sequences {
    let removed = before.keys().filter(|table| !after.contains_key(*table));
    let values = after
        .iter()
        .map(|(table, &(rowid, seq))| Sequence { table: table.clone(), seq: Some(seq), rowid })
        .chain(removed.map(|table| Sequence { table: table.clone(), seq: None, rowid: 0 }))
        .collect();
    Sequences { values }
}

/// The node's view of this backend; each method is the inherent one of the
/// same name (documented there), so tests and tools can call them without
/// the trait in scope.
impl crate::state_machine::StateMachine for SqliteStateMachine {
    type Readers = SqliteReaders;
    type Snapshots = SqliteSnapshotTaker;

    fn set_limits(&mut self, limits: WriteLimits) {
        SqliteStateMachine::set_limits(self, limits);
    }

    fn set_clock(&mut self, clock: Clock) {
        SqliteStateMachine::set_clock(self, clock);
    }

    fn applied(&self) -> Applied {
        SqliteStateMachine::applied(self)
    }

    fn conf_state(&self) -> Result<Option<Vec<u8>>, SqlError> {
        SqliteStateMachine::conf_state(self)
    }

    fn members(&self) -> Result<Vec<(u64, String)>, SqlError> {
        SqliteStateMachine::members(self)
    }

    fn begin_batch(&mut self, next_index: u64) -> Result<(), SqlError> {
        SqliteStateMachine::begin_batch(self, next_index)
    }

    fn execute_request(&mut self, statements: &[Statement]) -> Result<Result<Executed, RequestError>, SqlError> {
        SqliteStateMachine::execute_request(self, statements)
    }

    fn record_request(&mut self, key: &str, results: &[StatementResult]) -> Result<(), SqlError> {
        SqliteStateMachine::record_request(self, key, results)
    }

    fn recorded_request(&self, key: &str) -> Result<Option<(u64, Vec<StatementResult>)>, SqlError> {
        SqliteStateMachine::recorded_request(self, key)
    }

    fn batch_open(&self) -> bool {
        SqliteStateMachine::batch_open(self)
    }

    fn batch_time_spent(&self) -> bool {
        SqliteStateMachine::batch_time_spent(self)
    }

    fn commit_batch(&mut self, applied: Applied) -> Result<(), SqlError> {
        SqliteStateMachine::commit_batch(self, applied)
    }

    fn rollback_batch(&mut self) -> Result<(), SqlError> {
        SqliteStateMachine::rollback_batch(self)
    }

    fn pipelines_batches(&self) -> bool {
        true
    }

    fn keep_batch(&mut self) -> Result<(), SqlError> {
        SqliteStateMachine::keep_batch(self)
    }

    fn rollback_all(&mut self) -> Result<(), SqlError> {
        SqliteStateMachine::rollback_all(self)
    }

    fn apply_batch(&mut self, batch: &deeb_proto::WriteBatch, applied: Applied) -> Result<(), ApplyError> {
        SqliteStateMachine::apply_batch(self, batch, applied)
    }

    fn apply_empty(&mut self, applied: Applied) -> Result<(), SqlError> {
        SqliteStateMachine::apply_empty(self, applied)
    }

    fn apply_membership(
        &mut self,
        applied: Applied,
        conf_state: &[u8],
        members: &[(u64, Option<String>)],
    ) -> Result<(), SqlError> {
        SqliteStateMachine::apply_membership(self, applied, conf_state, members)
    }

    fn readers(&self) -> SqliteReaders {
        SqliteStateMachine::readers(self)
    }

    fn create_snapshot(&self, dest: &Path) -> Result<Applied, SqlError> {
        SqliteStateMachine::create_snapshot(self, dest)
    }

    fn snapshot_taker(&self) -> Result<Self::Snapshots, SqlError> {
        Ok(SqliteStateMachine::snapshot_taker(self))
    }

    fn install_snapshot(&mut self, src: &Path) -> Result<Applied, SqlError> {
        SqliteStateMachine::install_snapshot(self, src)
    }
}
